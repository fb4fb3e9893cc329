"""Structure ops (cat, stack, slicing, select, indexing, chunk/split/unbind,
permute/transpose, flip, pad, unsqueeze/squeeze, expand, sum/mean): each rule's backward is the
exact adjoint of its forward (constants going to the bias), every torch spelling traces,
reproduces the model, gives exact bounds where the model is affine and sound ones where it is
not, and anything that mixes examples of a batch is refused with the reason."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from boundgraph.ops import (Cat, Expand, Flip, IndexSelect, Mean, Pad, Permute, Reshape,
                            Select, Slice, Stack, Sum)
from boundgraph.ops.base import Interval
from op_checks import assert_exact, check_sound, one_thread, op_kinds, traced  # noqa: F401


# ------------------------------------------------------------------ rules, without tracing
def _adjoint_gap(op, in_shapes, consts=None, B=2, S=3, seed=0):
    """``sum(A * op(x, consts))`` minus what ``backward`` says it is, for random A and x."""
    g = torch.Generator().manual_seed(seed)
    consts = consts or {}
    xs, vals = [], []
    for i, shape in enumerate(in_shapes):
        if i in consts:
            xs.append(consts[i])
            vals.append(consts[i])
        else:
            t = torch.randn(B, *shape, generator=g, dtype=torch.float64)
            xs.append(t)
            vals.append(Interval(t, t))
    op.in_shapes = tuple(tuple(x.shape[1:]) if i not in consts else tuple(x.shape)
                         for i, x in enumerate(xs))
    y = op.forward(*xs)
    op.out_shape = tuple(y.shape[1:])
    A = torch.randn(B, S, *op.out_shape, generator=g, dtype=torch.float64)
    per_input, lb, ub = op.backward(A, A, *vals)
    lhs = torch.einsum("bs...,b...->bs", A, y)
    rhs = lb + sum(torch.einsum("bs...,b...->bs", p[0], x)
                   for p, x in zip(per_input, xs) if p is not None)
    rhs_u = ub + sum(torch.einsum("bs...,b...->bs", p[1], x)
                     for p, x in zip(per_input, xs) if p is not None)
    iv = op.interval(*vals)
    assert torch.allclose(iv.lower, y) and torch.allclose(iv.upper, y)
    return max((lhs - rhs).abs().max().item(), (lhs - rhs_u).abs().max().item())


ONE = (3, 4, 5)
RULES = {
    "permute": (Permute([2, 0, 1]), [ONE], None),
    "flip": (Flip([0, 2]), [ONE], None),
    "slice": (Slice(1, 1, 4, 2), [ONE], None),
    "slice_last": (Slice(2, 0, 5, 3), [ONE], None),
    "select": (Select(0, 2), [ONE], None),
    "index_select_repeats": (IndexSelect(2), [ONE, None], {1: torch.tensor([4, 0, 4, -1])}),
    "expand": (Expand((3, 4, 5)), [(1, 4, 1)], None),
    "expand_new_dims": (Expand((2, 3, 4, 5)), [(1, 3, 4, 5)], None),
    "pad_value": (Pad((1, 2, 0, 1), 0.5), [ONE], None),
    "pad_crop": (Pad((-1, 2, 1, -2), 0.0), [ONE], None),
    "reshape": (Reshape((12, 5)), [ONE], None),
    "sum": (Sum([0, 2]), [ONE], None),
    "sum_keepdim": (Sum([1], keepdim=True), [ONE], None),
    "mean": (Mean([1, 2]), [ONE], None),
    "cat_bounded": (Cat(1), [ONE, (3, 2, 5)], None),
    "cat_constant": (Cat(0), [ONE, None], {1: torch.randn(1, 2, 4, 5, dtype=torch.float64)}),
    "stack_constant": (Stack(2), [None, ONE],
                       {0: torch.randn(1, 3, 4, 5, dtype=torch.float64)}),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_backward_is_the_adjoint_of_forward_and_interval_is_exact(name):
    op, shapes, consts = RULES[name]
    assert _adjoint_gap(op, shapes, consts) < 1e-10


# ------------------------------------------------------------------- traced spellings
class Net(nn.Module):
    """conv -> relu -> fn -> flatten -> linear; with a large conv bias the relu is stably
    active and the whole model is affine on the input box."""

    def __init__(self, fn, in_ch=2):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv2d(in_ch, 3, 3, padding=1)
        self.register_buffer("token", torch.randn(1, 2, 4, 5))
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        return self.fc(self.fn(self, torch.relu(self.conv(x))).flatten(1))


FORMS = {
    "cat_channels": (lambda m, h: torch.cat([h, 2 * h], 1), "cat"),
    "cat_constant_rows": (lambda m, h: torch.cat([h, torch.ones(h.shape[0], 3, 2, 5)], 2), "cat"),
    "cat_buffer_token": (lambda m, h: torch.cat([m.token.expand(h.shape[0], -1, -1, -1), h], 1),
                         "cat"),
    "cat_last_dim_negative": (lambda m, h: torch.cat([h, h.flip(3)], -1), "cat"),
    "stack": (lambda m, h: torch.stack([h, -h], 2), "stack"),
    "slice": (lambda m, h: h[:, 1:3], "slice"),
    "slice_step": (lambda m, h: h[:, :, ::2], "slice"),
    "slice_ellipsis": (lambda m, h: h[..., 1:4:2], "slice"),
    "slice_negative": (lambda m, h: h[:, -2:], "slice"),
    "select": (lambda m, h: h.select(1, 0), "select"),
    "integer_index": (lambda m, h: h[:, 1], "select"),
    "integer_index_negative": (lambda m, h: h[..., -1], "select"),
    "index_list": (lambda m, h: h[:, [0, 2, 0]], "index_select"),
    "index_select": (lambda m, h: h.index_select(2, torch.tensor([3, 1])), "index_select"),
    "permute": (lambda m, h: h.permute(0, 2, 3, 1), "permute"),
    "transpose": (lambda m, h: h.transpose(1, 3), "permute"),
    "transpose_negative": (lambda m, h: h.transpose(-1, -2), "permute"),
    "pad_value": (lambda m, h: F.pad(h, (1, 2, 0, 1), value=0.5), "pad"),
    "pad_negative": (lambda m, h: F.pad(h, (-1, 2)), "pad"),
    "unsqueeze": (lambda m, h: h.unsqueeze(1), "reshape"),
    "squeeze": (lambda m, h: h[:, :1].squeeze(1), "reshape"),
    "none_index": (lambda m, h: h[:, None], "reshape"),
    "sum": (lambda m, h: h.sum(1), "sum"),
    "sum_keepdim": (lambda m, h: h.sum(dim=(2, 3), keepdim=True), "sum"),
    "mean_last": (lambda m, h: h.mean(-1), "mean"),
    "expand": (lambda m, h: h[:, :1].expand(-1, 3, -1, -1), "expand"),
    "flip": (lambda m, h: h.flip(2), "flip"),
    "chunk": (lambda m, h: torch.chunk(h, 3, 1)[1] - torch.chunk(h, 3, 1)[2], "slice"),
    "chunk_uneven_reversed": (lambda m, h: torch.cat(list(reversed(h.chunk(2, dim=-1))), -1),
                              "slice"),
    "split_sizes": (lambda m, h: h.split([1, 3], dim=2)[1], "slice"),
    "unbind": (lambda m, h: h.unbind(1)[2] + h.unbind(1)[0], "select"),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_structure_spelling_traces_and_is_exact_when_affine_and_sound_otherwise(name):
    fn, kind = FORMS[name]
    torch.manual_seed(0)
    model = Net(fn)
    x = torch.rand(2, 2, 4, 5)
    model(x)
    model.eval()
    bm = traced(model, x)
    assert kind in op_kinds(bm)
    with torch.no_grad():
        model.conv.bias.fill_(10.0)  # parameters are live: the relu is now stably active
    assert_exact(bm, model, x, 0.1)
    with torch.no_grad():
        model.conv.bias.fill_(0.0)  # unstable relus
    for eps in (1e-6, 0.3):
        check_sound(model, x, eps, n=16, bm=bm)


def test_cat_of_a_constant_is_exact_in_its_bias():
    class CatConst(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("c", torch.tensor([[1.0, -2.0]]))

        def forward(self, x):
            return torch.cat([x, self.c.expand(x.shape[0], 2), x * 3], 1)

    x = torch.rand(3, 2)
    bm = traced(CatConst(), x)
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.1), method="crown-ibp")
    assert torch.equal(lb[:, 2:4], torch.tensor([[1.0, -2.0]] * 3))
    assert torch.equal(ub[:, 2:4], lb[:, 2:4])
    torch.testing.assert_close(ub[:, 4:] - lb[:, 4:], torch.full((3, 2), 0.6))


def test_constant_computations_follow_the_live_parameters():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_scale = nn.Parameter(torch.zeros(3))
            self.register_buffer("mean", torch.tensor([0.1, 0.2, 0.3]))

        def forward(self, x):
            return (x - self.mean.view(1, 3, 1, 1)) * self.log_scale.exp().view(1, 3, 1, 1)

    model = Scaled()
    x = torch.rand(2, 3, 2, 2)
    bm = traced(model, x)
    with torch.no_grad():
        model.log_scale.fill_(1.0)
        model.mean.fill_(0.5)
    torch.testing.assert_close(bm(x), model(x))
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.1), method="crown")
    torch.testing.assert_close(ub - lb, torch.full_like(lb, 0.2 * math.e))


BATCH_MIXING = {
    "cat_batch": lambda x: torch.cat([x, x], 0),
    "mean_batch": lambda x: x.mean(0, keepdim=True),
    "sum_all": lambda x: x.sum(),
    "permute_batch": lambda x: x.permute(1, 0, 2, 3),
    "transpose_batch": lambda x: x.transpose(0, 2),
    "flip_batch": lambda x: x.flip(0),
    "select_batch": lambda x: x[0],
    "index_batch": lambda x: x.index_select(0, torch.tensor([0])),
    "pad_batch": lambda x: F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0)),
    "stack_batch": lambda x: torch.stack([x, x], 0),
}


@pytest.mark.parametrize("name", sorted(BATCH_MIXING))
def test_ops_along_the_batch_dimension_are_refused_with_a_reason(name):
    fn = BATCH_MIXING[name]

    class Mix(nn.Module):
        def forward(self, x):
            return fn(x * 2)

    with pytest.raises(bg.UnsupportedOpError, match="batch") as e:
        bg.BoundedModule(Mix(), torch.rand(3, 2, 4, 4))
    assert "test_ops_structure.py" in str(e.value)


def test_reflect_padding_is_refused_with_a_reason():
    class Reflect(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 1, 1, 1), mode="reflect")

    with pytest.raises(bg.UnsupportedOpError, match="reflect padding"):
        bg.BoundedModule(Reflect(), torch.rand(2, 2, 4, 4))
