"""Affine ops: the fast transposed convolution used by backward passes equals torch's, values
and gradients, on every path it takes (sub-pixel, channels-last, fallback)."""
import pytest
import torch
import torch.nn.functional as F

from boundgraph.ops import affine


@pytest.mark.parametrize("ci,co,k,s,p,op,groups,dil", [
    (16, 1, 4, 2, 1, 0, 1, 1),   # a first layer: matrix product and fold
    (8, 1, 3, 2, 1, 1, 1, 1),    # fold with output padding
    (4, 1, 5, 2, 0, 1, 1, 1),    # fold, a kernel wider than the stride
    (6, 3, 3, 1, 1, 0, 1, 1),    # fold, stride 1 (an RGB first layer)
    (6, 2, 3, 3, 1, 2, 1, 2),    # fold, stride 3 and dilation 2
    (16, 4, 4, 2, 1, 0, 1, 1),   # sub-pixel form
    (8, 2, 5, 2, 1, 1, 1, 1),    # sub-pixel with output padding, a kernel not a multiple of s
    (8, 2, 5, 2, 0, 1, 1, 1),    # sub-pixel that needs extra zero rows at the end
    (36, 4, 3, 3, 1, 2, 1, 1),   # sub-pixel, stride 3
    (8, 6, 4, 2, 1, 0, 1, 1),    # channels-last transposed convolution
    (4, 3, 3, 2, 1, 1, 2, 1),    # groups
    (4, 3, 3, 2, 2, 0, 1, 2),    # dilation
    (4, 5, 3, 1, 1, 0, 1, 1),    # stride 1: torch's own kernel
])
def test_fast_conv_transpose_matches_torch_in_values_and_gradients(monkeypatch, ci, co, k, s, p,
                                                                   op, groups, dil):
    monkeypatch.setattr(affine, "_FAST_MIN_ROWS", 1)
    torch.manual_seed(0)
    x = torch.randn(3, ci, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(ci, co // groups if co % groups == 0 else co, k, k, dtype=torch.float64,
                    requires_grad=True)
    want = F.conv_transpose2d(x, w, None, s, p, op, groups, dil)
    got = affine.conv_transpose(x, w, s, p, op, groups, dil)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(
        lambda a, b: affine.conv_transpose(a, b, s, p, op, groups, dil), (x, w))
