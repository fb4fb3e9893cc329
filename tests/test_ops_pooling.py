"""Pooling: max pooling's linear bounds hold for every point of the box and are exact when one
input dominates each window; every method is sound for all max-pool options; adaptive and
global average pooling are exact affine maps; pooling over the batch is refused."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from boundgraph.ops import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from boundgraph.ops import pooling
from boundgraph.ops.base import Interval
from op_checks import assert_exact, check_sound, one_thread, op_kinds, traced  # noqa: F401

MAXPOOL_CONFIGS = {
    "k2": dict(kernel_size=2),
    "k3_s2_p1": dict(kernel_size=3, stride=2, padding=1),
    "k3_dilation2": dict(kernel_size=3, stride=1, dilation=2),
    "k3_s2_ceil": dict(kernel_size=3, stride=2, ceil_mode=True),
    "k2x3_s1x2_p1": dict(kernel_size=(2, 3), stride=(1, 2), padding=1),
    "k1": dict(kernel_size=1),
}


def _pool_op(cfg, in_shape):
    """A MaxPool2d op with its shapes set as the graph would."""
    op = MaxPool2d(cfg["kernel_size"], cfg.get("stride"), cfg.get("padding", 0),
                   cfg.get("dilation", 1), cfg.get("ceil_mode", False))
    op.in_shapes = (tuple(in_shape),)
    op.out_shape = tuple(op.forward(torch.zeros(1, *in_shape)).shape[1:])
    return op


@pytest.mark.parametrize("name", sorted(MAXPOOL_CONFIGS))
def test_maxpool_linear_bounds_hold_for_every_point_of_the_box(name):
    g = torch.Generator().manual_seed(0)
    op = _pool_op(MAXPOOL_CONFIGS[name], (2, 7, 7))
    B = 3
    kw = dict(generator=g, dtype=torch.float64)  # float64: the check itself is exact
    c = torch.randn(B, 2, 7, 7, **kw)
    r = torch.rand(B, 2, 7, 7, **kw) * torch.tensor([0.0, 0.05, 1.0], dtype=torch.float64)[
        torch.randint(0, 3, (B, 2, 7, 7), generator=g)]  # point, narrow and wide inputs
    box = Interval(c - r, c + r)
    S = 6
    A = torch.randn(1, S, *op.out_shape, **kw)  # signed coefficients
    per_input, lb, ub = op.backward(A, A, box)
    nl, nu = per_input[0]
    x = box.lower + torch.rand(256, *box.lower.shape, **kw) * (box.upper - box.lower)
    x = torch.cat([x, torch.where(torch.rand(256, *box.lower.shape, **kw) < 0.5,
                                  box.lower, box.upper)])  # corners as well
    y = op.forward(x.flatten(0, 1)).view(x.shape[0], B, *op.out_shape)
    val = torch.einsum("nb...,s...->nbs", y, A[0])
    low = torch.einsum("nb...,bs...->nbs", x, nl) + lb
    up = torch.einsum("nb...,bs...->nbs", x, nu) + ub
    assert (low <= val + 1e-9).all() and (val <= up + 1e-9).all()


def test_maxpool_bounds_are_exact_when_one_input_dominates_each_window():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 6, 6, generator=g)
    x[:, :, ::2, ::2] += 2.0  # the top-left input of every 2x2 window dominates its window
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)).eval()
    bm = traced(model, x)
    eps = 0.1
    # with dominance, maxpool is the selection x[:, :, ::2, ::2]: affine, exact range known
    sel = nn.Sequential(nn.Flatten(), nn.Linear(27, 4))
    sel[1].load_state_dict(model[2].state_dict())
    lo, hi = bg.LinfBall(eps).box(x)
    c, r = ((lo + hi) / 2)[:, :, ::2, ::2], ((hi - lo) / 2)[:, :, ::2, ::2]
    W = model[2].weight
    elo = sel(c) - r.flatten(1) @ W.abs().T
    ehi = sel(c) + r.flatten(1) @ W.abs().T
    for m in ("crown-ibp", "crown"):
        lb, ub = bm.compute_bounds(x, bg.LinfBall(eps), method=m)
        torch.testing.assert_close(lb, elo, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ub, ehi, atol=1e-5, rtol=1e-5)
    op = _pool_op(dict(kernel_size=2), (3, 6, 6))
    assert not op.refine_mask(0, Interval(lo, hi)).any()  # nothing to refine


@pytest.mark.parametrize("name", sorted(MAXPOOL_CONFIGS))
def test_maxpool_is_sound_for_every_method(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(**MAXPOOL_CONFIGS[name]),
                          nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    x = torch.rand(2, 2, 7, 7)
    model(x)
    model.eval()
    bm = traced(model, x)
    assert "maxpool2d" in op_kinds(bm)
    for eps in (1e-6, 0.1, 3.0):
        check_sound(model, x, eps, n=16, bm=bm)


def test_maxpool_crown_is_tighter_than_ibp_and_functional_form_traces():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(F.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))

    model = Net().eval()
    x = torch.rand(3, 1, 8, 8)
    out = check_sound(model, x, 0.02, n=16)
    w = {m: (ub - lb).mean().item() for m, (lb, ub) in out.items()}
    assert w["crown"] < w["ibp"] and w["crown-ibp"] < w["ibp"]


def test_maxpool_refine_mask_marks_inputs_of_undecided_windows():
    op = _pool_op(dict(kernel_size=2), (1, 2, 4))
    lo = torch.tensor([[[[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    hi = torch.tensor([[[[6.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]])
    mask = op.refine_mask(0, Interval(lo, hi))
    # left window: the 5..6 input dominates; right window: undecided
    assert mask.tolist() == [[[[False, False, True, True], [False, False, True, True]]]]


# ------------------------------------------------------------------------ average pooling
@pytest.mark.parametrize("in_hw,out_hw", [((7, 7), (3, 3)), ((5, 6), (2, 4)), ((6, 6), (1, 1)),
                                          ((4, 5), (4, 5)), ((5, 5), (None, 2))])
def test_adaptive_avgpool_is_exact_and_matches_torch(in_hw, out_hw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AdaptiveAvgPool2d(out_hw),
                          nn.Flatten(), nn.LazyLinear(4))
    x = torch.rand(2, 2, *in_hw)
    model(x)
    model.eval()
    bm = traced(model, x)
    assert "adaptive_avgpool2d" in op_kinds(bm)
    assert_exact(bm, model, x, 0.1, methods=("crown-ibp", "crown"))
    check_sound(nn.Sequential(model, nn.ReLU()), x, 0.2, n=8)


def test_adaptive_avgpool_transpose_is_the_adjoint_of_the_forward():
    op = AdaptiveAvgPool2d((3, 2))
    op.in_shapes, op.out_shape = ((2, 7, 5),), (2, 3, 2)
    x = torch.randn(1, 2, 7, 5)
    A = torch.randn(1, 4, 2, 3, 2)
    lhs = torch.einsum("bs...,b...->bs", A, op.forward(x))
    rhs = torch.einsum("bs...,b...->bs", op.transpose(A), x)
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("form", ["mean23", "mean23_keepdim", "mean_neg", "adaptive1"])
def test_global_average_pooling_is_exact_in_every_spelling(form):
    fns = {"mean23": lambda h: h.mean(dim=(2, 3)),
           "mean23_keepdim": lambda h: h.mean(dim=(2, 3), keepdim=True).flatten(1),
           "mean_neg": lambda h: h.mean(dim=(-1, -2)),
           "adaptive1": lambda h: F.adaptive_avg_pool2d(h, 1).flatten(1)}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 5, 3)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(fns[form](self.conv(x)))

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(3, 2, 6, 6)
    bm = traced(model, x)
    assert_exact(bm, model, x, 0.2)


def test_global_average_pooling_after_relu_is_sound():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 5, 3)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    check_sound(Net().eval(), torch.rand(2, 2, 6, 6), 0.3, n=16)


def test_avgpool_is_still_exported_and_pooling_modules_agree():
    assert pooling.AvgPool2d is AvgPool2d
    assert bg.ops.OPS["maxpool2d"] is MaxPool2d
    assert bg.ops.OPS["adaptive_avgpool2d"] is AdaptiveAvgPool2d


@pytest.mark.parametrize("fn", [lambda x: x.mean(0), lambda x: x.mean(),
                                lambda x: x.sum(dim=0)], ids=["mean0", "mean_all", "sum0"])
def test_reductions_over_the_batch_are_refused_with_a_reason(fn):
    class Net(nn.Module):
        def forward(self, x):
            return fn(x)

    with pytest.raises(bg.UnsupportedOpError, match="batch"):
        bg.BoundedModule(Net(), torch.rand(3, 2, 4, 4))
