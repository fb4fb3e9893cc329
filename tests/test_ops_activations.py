"""Activations: relaxation lines are true bounds on every interval (dense grid, float32 and
float64, narrow and wide), intervals are exact ranges, every method is sound through a network,
the torch spellings trace to the right op, and the relaxations are worth having (CROWN beats
IBP at small eps)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from boundgraph.ops import (ELU, GELU, Abs, Clamp, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus,
                            Tanh)
from boundgraph.ops.base import Interval
from op_checks import (METHODS, check_sound, grid, line_violation, one_thread,  # noqa: F401
                       op_kinds, sample_intervals, traced)

SELU = (1.6732632423543772, 1.0507009873554805)

# op, its kinks / inflection points (extra interval ends)
SMOOTH = {
    "sigmoid": (Sigmoid(), (0.0,)),
    "tanh": (Tanh(), (0.0,)),
    "gelu": (GELU(), (-math.sqrt(2), math.sqrt(2))),
    "gelu_tanh": (GELU("tanh"), (-1.4185, 1.4185)),
    "silu": (SiLU(), (-2.3994, 2.3994)),
    "softplus": (Softplus(), (20.0,)),
    "softplus_low_threshold": (Softplus(2.0, 1.0), (0.5,)),
    "elu": (ELU(), (0.0,)),
    "elu_small_alpha": (ELU(0.5), (0.0,)),
    "elu_large_alpha": (ELU(2.0), (0.0,)),
    "elu_negative_alpha": (ELU(-0.5), (0.0,)),
    "selu": (ELU(*SELU), (0.0,)),
}
PIECEWISE = {
    "relu": (ReLU(), (0.0,)),
    "leaky_relu": (LeakyReLU(0.1), (0.0,)),
    "leaky_relu_steep": (LeakyReLU(2.0), (0.0,)),
    "leaky_relu_negative": (LeakyReLU(-0.3), (0.0,)),
    "abs": (Abs(), (0.0,)),
    "hardtanh": (Clamp(-0.5, 2.0), (-0.5, 2.0)),
    "clamp_min": (Clamp(0.1, None), (0.1,)),
    "clamp_max": (Clamp(None, 0.3), (0.3,)),
    "clamp_point": (Clamp(1.0, 1.0), (1.0,)),
    "clamp_crossed": (Clamp(2.0, 1.0), (1.0, 2.0)),
}
ALL = {**SMOOTH, **PIECEWISE}
DTYPES = [torch.float32, torch.float64]


# ------------------------------------------------------------------------ the lines themselves
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_relaxation_lines_are_true_bounds_on_dense_grids(name, dtype):
    op, kinks = SMOOTH[name]
    l, u = sample_intervals(kinks, dtype)
    vl, vu = line_violation(op, l, u)
    # against the float64 function, with no tolerance: the rounding margin is built in
    assert vl.max() <= 0 and vu.max() <= 0, (vl.max().item(), vu.max().item())


@pytest.mark.parametrize("mode", ["adaptive", "zero", "one", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(PIECEWISE))
def test_piecewise_linear_relaxation_lines_are_true_bounds_on_dense_grids(name, dtype, mode):
    op, kinks = PIECEWISE[name]
    l, u = sample_intervals(kinks, dtype)
    vl, vu = line_violation(op, l, u, {"relu_lower": mode})
    # lines computed in the working precision: allowed a few units of rounding of the scale
    tol = 4 * torch.finfo(dtype).eps * (1 + torch.maximum(l.abs(), u.abs()).double())
    assert (vl <= tol).all() and (vu <= tol).all()


@pytest.mark.parametrize("name", sorted(ALL))
def test_relaxation_is_exact_where_the_op_is_linear_or_the_interval_a_point(name):
    op, _ = ALL[name]
    x = torch.tensor([-3.0, -0.2, 0.0, 0.05, 0.7, 2.5, 40.0])
    aL, bL, aU, bU = op.relax(x, x.clone())
    # degenerate intervals: both lines pass through f(x) (up to the rounding margin)
    torch.testing.assert_close(aL * x + bL, op.forward(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aU * x + bU, op.forward(x), atol=1e-5, rtol=1e-5)


def test_piecewise_linear_ops_are_exact_away_from_their_kinks():
    l = torch.tensor([-5.0, 0.5, 3.0])
    u = torch.tensor([-1.0, 1.5, 4.0])
    for op in (ReLU(), LeakyReLU(0.1), Abs(), Clamp(0.0, 2.0), Clamp(-1.0, None)):
        aL, bL, aU, bU = op.relax(l, u, {})
        bL, bU = (torch.zeros_like(l) if not torch.is_tensor(b) else b for b in (bL, bU))
        assert torch.equal(aL, aU) and torch.equal(bL, bU), op


def test_sigmoid_lines_follow_the_crown_case_split():
    op = Sigmoid()
    s = torch.sigmoid
    # convex side: chord above, tangent at the midpoint below
    l, u = torch.tensor([-4.0]), torch.tensor([-1.0])
    aL, bL, aU, bU = op.relax(l, u)
    k = (s(u) - s(l)) / (u - l)
    torch.testing.assert_close(aU, k)
    m = torch.tensor([-2.5])
    torch.testing.assert_close(aL, s(m) * (1 - s(m)))
    # crossing 0 with a long right side: the upper line is a tangent passing through (l, f(l))
    l, u = torch.tensor([-1.0]), torch.tensor([6.0])
    aL, bL, aU, bU = op.relax(l, u)
    assert (aU * l + bU - s(l)).abs() < 1e-5
    assert aU > (s(u) - s(l)) / (u - l)  # steeper than the chord, which would cut f
    # crossing 0 with a short right side: the chord
    l, u = torch.tensor([-1.0]), torch.tensor([0.5])
    aL, bL, aU, bU = op.relax(l, u)
    torch.testing.assert_close(aU, (s(u) - s(l)) / (u - l), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("name", sorted(ALL))
def test_interval_contains_and_tightly_matches_the_range(name):
    op, kinks = ALL[name]
    l, u = sample_intervals(kinks, torch.float64)
    iv = op.interval(Interval(l, u))
    x = grid(l, u, 2001)
    f = op.forward(x)
    fmin, fmax = f.amin(0), f.amax(0)
    assert (iv.lower <= fmin + 1e-12).all() and (iv.upper >= fmax - 1e-12).all()
    # exact: no looser than the grid's resolution (a step of f over one grid spacing)
    h = (u - l) / 2000
    assert (iv.lower >= fmin - 2 * h - 1e-9).all() and (iv.upper <= fmax + 2 * h + 1e-9).all()


def test_non_monotone_ops_report_their_interior_minimum():
    l, u = torch.tensor([-3.0]), torch.tensor([3.0])
    cases = [(GELU(), -0.16997), (GELU("tanh"), -0.17004), (SiLU(), -0.27846), (Abs(), 0.0),
             (LeakyReLU(-0.3), 0.0), (ELU(-0.5), 0.0)]
    for op, minimum in cases:
        lo = op.interval(Interval(l, u)).lower
        assert abs(lo.item() - minimum) < 1e-4, op


def test_softplus_interval_covers_torchs_step_at_the_threshold():
    op = Softplus(2.0, 1.0)  # linear tail above x = 0.5, starting below softplus(0.5)
    l, u = torch.tensor([0.4]), torch.tensor([0.6])
    iv = op.interval(Interval(l, u))
    x = torch.linspace(0.4, 0.6, 10001)
    f = F.softplus(x, 2.0, 1.0)
    assert iv.lower <= f.min() and iv.upper >= f.max()
    assert iv.lower < F.softplus(l, 2.0, 1.0)  # the tail dips below f(l)


# ------------------------------------------------------------------------ end-to-end soundness
def _net(act, width=6, seed=0, scale=1.0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, width), act, nn.Linear(width, width), act,
                        nn.Linear(width, 3))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return net.eval()


MODULES = {
    "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU("tanh"),
    "silu": nn.SiLU(), "softplus": nn.Softplus(), "softplus_threshold": nn.Softplus(2.0, 1.0),
    "elu": nn.ELU(), "elu_alpha2": nn.ELU(2.0), "selu": nn.SELU(), "leaky_relu": nn.LeakyReLU(0.1),
    "hardtanh": nn.Hardtanh(-0.5, 1.0), "relu6": nn.ReLU6(), "abs": None, "clamp_min": None,
}


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _module(name):
    if name == "abs":
        return Lambda(torch.abs)
    if name == "clamp_min":
        return Lambda(lambda x: torch.clamp(x, min=-0.2))
    return MODULES[name]


# regime: (input eps, weight scale): kinks crossed, very narrow, very wide (+-100 pre-activations)
REGIMES = {"crossing": (0.3, 2.0), "narrow": (1e-6, 2.0), "wide": (30.0, 2.0)}


@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_method_is_sound_through_a_two_layer_network(name, regime):
    eps, scale = REGIMES[regime]
    net = _net(_module(name), scale=scale)
    x = torch.randn(3, 4)
    check_sound(net, x, eps, n=16)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "silu", "softplus", "elu",
                                  "leaky_relu", "hardtanh"])
def test_crown_is_tighter_than_ibp_at_small_eps(name):
    net = _net(_module(name), width=16, scale=1.5)
    x = torch.randn(4, 4)
    bm = traced(net, x)
    ptb = bg.LinfBall(0.05)
    widths = {}
    for m in METHODS:
        lb, ub = bm.compute_bounds(x, ptb, method=m)
        widths[m] = (ub - lb).mean().item()
    assert widths["crown"] < widths["ibp"]
    assert widths["crown-ibp"] <= widths["ibp"] + 1e-6


def test_bounds_are_differentiable_with_finite_gradients():
    for act in (nn.Sigmoid(), nn.GELU(), nn.Softplus(), nn.ELU(), nn.Hardtanh()):
        net = _net(act, scale=2.0).train()
        x = torch.randn(3, 4)
        bm = bg.BoundedModule(net, x)
        for m in METHODS:
            net.zero_grad()
            lb, ub = bm.compute_bounds(x, bg.LinfBall(0.2), method=m)
            (ub - lb).sum().backward()
            g = net[0].weight.grad
            assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, (act, m)


def test_refine_masks_select_elements_crossing_a_kink():
    b = Interval(torch.tensor([[-1.0, 0.5, -2.0, 1.5]]), torch.tensor([[1.0, 0.8, -1.0, 3.0]]))
    assert LeakyReLU(0.1).refine_mask(0, b).tolist() == [[True, False, False, False]]
    assert Abs().refine_mask(0, b).tolist() == [[True, False, False, False]]
    assert Clamp(0.0, 2.0).refine_mask(0, b).tolist() == [[True, False, False, True]]
    assert Clamp(None, 0.6).refine_mask(0, b).tolist() == [[True, True, False, False]]
    assert Sigmoid().refine_mask(0, b) is None  # smooth: every element is relaxed


# ------------------------------------------------------------------------------ front end
FORMS = [
    (nn.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
    (nn.Sigmoid(), "sigmoid", {}),
    (nn.Tanh(), "tanh", {}),
    (nn.GELU(), "gelu", {"approximate": "none"}),
    (nn.GELU("tanh"), "gelu", {"approximate": "tanh"}),
    (Lambda(lambda x: F.gelu(x, approximate="tanh")), "gelu", {"approximate": "tanh"}),
    (Lambda(F.gelu), "gelu", {"approximate": "none"}),
    (nn.SiLU(), "silu", {}),
    (nn.Softplus(2.0, 5.0), "softplus", {"beta": 2.0, "threshold": 5.0}),
    (nn.ELU(0.5), "elu", {"alpha": 0.5}),
    (nn.SELU(), "elu", {"alpha": SELU[0], "scale": SELU[1]}),
    (nn.Hardtanh(-1.0, 2.0), "clamp", {"min": -1.0, "max": 2.0}),
    (nn.ReLU6(), "clamp", {"min": 0.0, "max": 6.0}),
    (Lambda(F.relu6), "clamp", {"min": 0.0, "max": 6.0}),
    (Lambda(lambda x: torch.clamp(x, min=0.2)), "clamp", {"min": 0.2, "max": None}),
    (Lambda(lambda x: x.clamp(max=0.5)), "clamp", {"min": None, "max": 0.5}),
    (Lambda(lambda x: x.clip(-1, 1)), "clamp", {"min": -1.0, "max": 1.0}),
    (Lambda(lambda x: torch.clamp_min(x, 0.1)), "clamp", {"min": 0.1, "max": None}),
    (Lambda(torch.abs), "abs", {}),
    (Lambda(lambda x: x.abs()), "abs", {}),
]


@pytest.mark.parametrize("module,kind,attrs", FORMS, ids=[f"{k}{i}" for i, (_, k, _) in
                                                          enumerate(FORMS)])
def test_torch_spellings_trace_to_the_activation_op(module, kind, attrs):
    x = torch.randn(2, 3, 4) * 3
    bm = traced(Lambda(lambda z: module(z * 2)), x)
    ops = [n.op for n in bm.graph.op_nodes() if n.batched and n.op.kind == kind]
    assert len(ops) == 1, op_kinds(bm)
    for k, v in attrs.items():
        assert ops[0].attrs[k] == pytest.approx(v) if v is not None else ops[0].attrs[k] is None


def test_clamp_with_tensor_bounds_is_reported_unsupported():
    class TensorClamp(nn.Module):
        def forward(self, x):
            return torch.clamp(x, min=torch.tensor(0.1))

    with pytest.raises(bg.UnsupportedOpError, match="clamp with tensor bounds"):
        bg.BoundedModule(TensorClamp(), torch.rand(2, 3))
