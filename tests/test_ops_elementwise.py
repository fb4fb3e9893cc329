"""Smooth elementwise math ops (exp, log, reciprocal, sqrt, rsqrt, pow, sin, cos, erf): the
relaxation lines are true bounds on dense grids of many intervals inside each op's domain
(float32 and float64, widths 0 to 200), intervals are exact ranges, the shared backward step is
sound, narrow intervals give tight finite lines, and intervals leaving the domain (or
overflowing) raise DomainError naming the function."""
import math

import pytest
import torch

from boundgraph.errors import DomainError
from boundgraph.ops.base import Interval
from boundgraph.ops.elementwise import (ELEMENTWISE_OPS, Cos, Erf, Exp, Log, Pow, Reciprocal,
                                        Rsqrt, Sin, Sqrt, _chord_tangent)
from op_checks import grid, line_violation, one_thread, sample_intervals  # noqa: F401

DTYPES = [torch.float32, torch.float64]
PI = math.pi


# ------------------------------------------------------------------------ intervals per domain
def _cat(*pairs):
    return (torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))


def _positive(dtype, zero=False):
    """Intervals in ``x > 0`` (``x >= 0`` with ``zero``): starts from exactly 0 / 1e-6 up to 150,
    widths 0 and 1e-7 up to 200, plus the positive ones of ``sample_intervals``."""
    starts = [1e-6, 1e-3, 0.1, 1.0, 7.0, 60.0, 150.0] + ([0.0] if zero else [])
    widths = [0.0, 1e-7, 1e-4, 0.1, 1.0, 4.0, 30.0, 200.0]
    s = torch.tensor(starts, dtype=torch.float64).repeat_interleave(len(widths))
    w = torch.tensor(widths, dtype=torch.float64).repeat(len(starts))
    l, u = s.to(dtype), (s + w).to(dtype)
    sl, su = sample_intervals((), dtype)
    keep = sl > 0
    return torch.cat([l, sl[keep]]), torch.cat([u, su[keep]])


def _negative(dtype):
    l, u = _positive(dtype)
    return -u, -l


def _nonzero(dtype):
    return _cat(_positive(dtype), _negative(dtype))


def _everywhere(dtype):
    """``sample_intervals`` plus widths between pi and 2 pi (several extrema of sin and cos)."""
    l, u = sample_intervals((0.0, PI / 2, PI, 2 * PI, -PI), dtype)
    c = torch.linspace(-7.0, 7.0, 15, dtype=torch.float64).repeat_interleave(5)
    w = torch.tensor([2.5, 3.5, 5.0, 6.0, 6.28], dtype=torch.float64).repeat(15)
    return torch.cat([l, (c - w / 2).to(dtype)]), torch.cat([u, (c + w / 2).to(dtype)])


def _exp_range(dtype):
    """``sample_intervals`` below the float32 overflow, plus ends up to it (and float64's)."""
    l, u = sample_intervals((0.0,), dtype)
    keep = u <= 85
    top = [(80.0, 88.0), (88.0, 88.5), (-100.0, 88.0), (87.9, 87.9)]
    if dtype == torch.float64:
        # narrow relative to their size (< 1e-6 of 600: the narrow lines), where exp'' = exp
        # makes the lines' end gap (f (w/2)^2 / 2 ~ 3e-8 f) exceed the float64 rounding margin
        # (1e-12 (|b| + |a| x) ~ 1.2e-9 f), so only a correct shift keeps them valid
        top += [(700.0, 709.0), (-10.0, 705.0), (708.0, 708.0 + 1e-7), (600.0, 600.0 + 5e-4)]
    t = torch.tensor(top, dtype=dtype)
    return torch.cat([l[keep], t[:, 0]]), torch.cat([u[keep], t[:, 1]])


# name: (op, intervals)
CASES = {
    "exp": (Exp(), _exp_range),
    "log": (Log(), _positive),
    "reciprocal": (Reciprocal(), _nonzero),
    "sqrt": (Sqrt(), lambda d: _positive(d, zero=True)),
    "rsqrt": (Rsqrt(), _positive),
    "sin": (Sin(), _everywhere),
    "cos": (Cos(), _everywhere),
    "erf": (Erf(), _everywhere),
    "pow2": (Pow(2), _everywhere),
    "pow3": (Pow(3), _everywhere),
    "pow4": (Pow(4), _everywhere),
    "pow5": (Pow(5), lambda d: sample_intervals((0.0, -1.0), d)),
    "pow-1": (Pow(-1), _nonzero),
    "pow-2": (Pow(-2), _nonzero),
    "pow-3": (Pow(-3), _nonzero),
    "pow0.5": (Pow(0.5), lambda d: _positive(d, zero=True)),
    "pow1.5": (Pow(1.5), lambda d: _positive(d, zero=True)),
    "pow-0.5": (Pow(-0.5), _positive),
    "pow0.3": (Pow(0.3), lambda d: _positive(d, zero=True)),
    "pow0": (Pow(0), _everywhere),
    "pow1": (Pow(1), _everywhere),
}


def _case(name, dtype):
    """The op and its intervals in ``dtype`` (inside the domain, with a finite range)."""
    op, make = CASES[name]
    return (op, *make(dtype))


# ------------------------------------------------------------------------ the lines themselves
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_relaxation_lines_are_true_bounds_on_dense_grids(name, dtype):
    op, l, u = _case(name, dtype)
    assert len(l) > 50
    vl, vu = line_violation(op, l, u)
    # against the float64 function, with no tolerance: the rounding margin is built in
    assert vl.max() <= 0 and vu.max() <= 0, (vl.max().item(), vu.max().item())


@pytest.mark.parametrize("name", sorted(CASES))
def test_interval_contains_the_range_and_is_exact(name):
    op, l, u = _case(name, torch.float64)
    iv = op.interval(Interval(l, u))
    assert torch.isfinite(iv.lower).all() and torch.isfinite(iv.upper).all()
    x = grid(l, u, 2001)
    f = op.forward(x)
    fmin, fmax = f.amin(0), f.amax(0)
    scale = 1e-12 * (1 + fmin.abs() + fmax.abs())
    assert (iv.lower <= fmin + scale).all() and (iv.upper >= fmax - scale).all()
    # exact: the range's ends are attained within one grid step, so the interval is no looser
    # than the largest change of f between neighbouring grid points
    step = (f[1:] - f[:-1]).abs().amax(0)
    assert (iv.lower >= fmin - step - scale).all() and (iv.upper <= fmax + step + scale).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_interval_contains_the_float32_function(name):
    op, l, u = _case(name, torch.float32)
    iv = op.interval(Interval(l, u))
    assert iv.lower.dtype == torch.float32
    f = op.forward(grid(l, u, 501).float())
    # the interval is f at the ends in float32, like every op's; torch's float32 functions are
    # within ~1 ulp of the truth but not monotone to the last bit (float32 pow even gives two
    # results for one input, by its place in the tensor: vectorised or not), so allow 2.5 eps
    tol = 2.5 * torch.finfo(torch.float32).eps * f.abs().amax(0)
    assert (iv.lower <= f.amin(0) + tol).all() and (iv.upper >= f.amax(0) - tol).all()


@pytest.mark.parametrize("op,l,u,lo,hi", [
    (Sin(), 0.0, 4.0, math.sin(4.0), 1.0),
    (Sin(), 2.0, 4.0, math.sin(4.0), math.sin(2.0)),  # no extremum inside: the ends
    (Sin(), 4.0, 5.0, -1.0, math.sin(4.0)),  # 3 pi / 2 = 4.712 inside
    (Sin(), -10.0, -3.0, -1.0, 1.0),
    (Sin(), 100.0, 107.0, -1.0, 1.0),  # wider than 2 pi
    (Cos(), -1.0, 2.0, math.cos(2.0), 1.0),
    (Cos(), 3.0, 3.5, -1.0, math.cos(3.5)),
    (Cos(), 7.0, 8.0, math.cos(8.0), math.cos(7.0)),
    (Pow(2), -1.0, 2.0, 0.0, 4.0),
    (Pow(4), -3.0, -2.0, 16.0, 81.0),
    (Pow(3), -2.0, 1.0, -8.0, 1.0),
    (Pow(-2), -3.0, -1.0, 1 / 9, 1.0),
    (Pow(-1), -4.0, -2.0, -0.5, -0.25),
    (Pow(-0.5), 4.0, 16.0, 0.25, 0.5),
    (Pow(0), -3.0, 5.0, 1.0, 1.0),
    (Reciprocal(), 2.0, 4.0, 0.25, 0.5),
    (Rsqrt(), 4.0, 16.0, 0.25, 0.5),
])
def test_non_monotone_and_decreasing_ops_report_their_exact_range(op, l, u, lo, hi):
    iv = op.interval(Interval(torch.tensor([l], dtype=torch.float64),
                              torch.tensor([u], dtype=torch.float64)))
    assert iv.lower.item() == pytest.approx(lo, abs=1e-12)
    assert iv.upper.item() == pytest.approx(hi, abs=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_step_bounds_contain_the_weighted_sum(name):
    op, l, u = _case(name, torch.float64)
    g = torch.Generator().manual_seed(1)
    # rows of 7 intervals from the op's family, in a batch of 4
    n = 7
    idx = torch.randint(0, len(l), (4, n), generator=g)
    lo, hi = l[idx], u[idx]
    op.in_shapes, op.out_shape = ((n,),), (n,)
    A = torch.randn(4, 5, n, dtype=torch.float64, generator=g)
    [(nl, nu)], lb, ub = op.backward(A, A, Interval(lo, hi))
    t = torch.rand(64, 4, n, dtype=torch.float64, generator=g)
    t[:2] = torch.stack([torch.zeros(4, n), torch.ones(4, n)])  # the corners too
    x = lo + t * (hi - lo)
    val = (A.unsqueeze(0) * op.forward(x).unsqueeze(2)).sum(-1)  # (64, 4, 5)
    # the bounds hold at every x: compare with the lines evaluated at that x
    lower = (nl.unsqueeze(0) * x.unsqueeze(2)).sum(-1) + lb
    upper = (nu.unsqueeze(0) * x.unsqueeze(2)).sum(-1) + ub
    # float64 rounding, relative to the size of the terms summed (lines far from f on wide
    # intervals, e.g. exp's chord on [-100, 88], cancel to ~1e26 from terms of ~1e38)
    aL, bL, aU, bU = op.relax(lo, hi)
    size = torch.maximum(aL.abs(), aU.abs()) * torch.maximum(lo.abs(), hi.abs()) + \
        torch.maximum(torch.as_tensor(bL).abs(), torch.as_tensor(bU).abs())
    scale = 1e-9 * (1 + val.abs()) + 1e-12 * (A.abs() * size.unsqueeze(1)).sum(-1)
    assert torch.isfinite(lower).all() and torch.isfinite(upper).all()
    assert (lower <= val + scale).all() and (upper >= val - scale).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_lines_have_finite_gradients_inside_the_domain(name):
    # including intervals starting exactly at 0 for sqrt / x^0.5, whose derivative is infinite
    # there (those bounds pass no gradient), and float64 lines that fall back to constants
    op, l, u = _case(name, torch.float64)
    l, u = l.clone().requires_grad_(True), u.clone().requires_grad_(True)
    lines = [t for t in op.relax(l, u) if torch.is_tensor(t) and t.requires_grad]
    if not lines:  # x^0, x^1: exact constant lines
        return
    gl, gu = torch.autograd.grad(sum(t.sum() for t in lines), (l, u), allow_unused=True)
    for g in (gl, gu):
        assert g is None or torch.isfinite(g).all()


# ------------------------------------------------------------------------------- narrow / tight
NARROW_CENTRES = {
    "exp": [-30.0, -1.0, 0.0, 2.0, 60.0], "log": [1e-6, 0.5, 3.0, 100.0],
    "reciprocal": [-50.0, -0.01, 1e-3, 2.0], "sqrt": [0.0, 1e-6, 0.7, 90.0],
    "rsqrt": [1e-6, 0.2, 40.0], "sin": [-7.0, 0.0, 1.5708, 3.0, 100.0],
    "cos": [-3.1416, 0.0, 1.0, 60.0], "erf": [-2.0, 0.0, 0.3, 5.0],
    "pow2": [-4.0, 0.0, 3.0], "pow3": [-2.0, 0.0, 1e-8, 5.0], "pow4": [-1.0, 0.0, 2.0],
    "pow5": [-1.0, 0.0, 1.5], "pow-1": [-3.0, 0.5], "pow-2": [-2.0, 1e-3, 4.0],
    "pow-3": [-0.5, 2.0], "pow0.5": [0.0, 1e-6, 9.0], "pow1.5": [0.0, 1e-6, 9.0],
    "pow-0.5": [1e-6, 9.0], "pow0.3": [0.0, 2.0], "pow0": [-1.0, 0.0, 3.0],
    "pow1": [-1.0, 0.0, 3.0],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_narrow_intervals_give_finite_lines_touching_the_function(name, dtype):
    op, _ = CASES[name]
    c = torch.tensor(NARROW_CENTRES[name], dtype=torch.float64)
    # width 0, and 1e-7 starting at the centre (so intervals starting at 0 stay in the domain)
    l = torch.cat([c, c]).to(dtype)
    u = torch.cat([c, c + 1e-7]).to(dtype)
    aL, bL, aU, bU = (torch.as_tensor(t, dtype=dtype).expand_as(l) for t in op.relax(l, u))
    for t in (aL, bL, aU, bU):
        assert torch.isfinite(t).all()
    vl, vu = line_violation(op, l, u)
    assert vl.max() <= 0 and vu.max() <= 0
    ld, ud = l.double(), u.double()
    m = (ld + ud) / 2
    gap = (aU.double() - aL.double()) * m + (bU.double() - bL.double())
    # the curvature part: the ideal lines (midpoint tangent and its copy through the farther
    # end, or Taylor lines) are apart by at most twice the second difference
    # |f(l) + f(u) - 2 f(m)| (~ |f''| r^2; large only for sqrt-like ops next to 0); the rest is
    # the rounding margin c (1 + |b| + |a| |x|) per line, c = 4 eps (float32: 4.8e-7) or 1e-12,
    # with |b| <= |f(m)| + |a| |m|: allow three times that per line
    f = op.forward
    fm, a = f(m).abs(), torch.maximum(aL.double().abs(), aU.double().abs())
    c = max(4 * torch.finfo(dtype).eps, 1e-12)
    curv = (f(ld) + f(ud) - 2 * f(m)).abs()
    tol = 6 * c * (1 + fm + 2 * a * m.abs()) + 2 * curv + 1e-14
    assert (gap >= 0).all() and (gap <= tol).all(), (gap, tol)


def test_narrow_lines_shift_the_tangent_to_the_farther_end():
    # the built-in ops' narrow intervals curve too little for the choice of end to show through
    # the rounding margin, so check the helper on steep functions: exp(1e5 x) (convex) and
    # -exp(-1e5 x) (concave) on intervals of relative width 1e-6, whose end gaps differ by ~3%
    l = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    u = l + 1e-6 * l.abs()
    x = grid(l, u)
    for sign in (1.0, -1.0):
        def f(t):
            return sign * torch.exp(sign * 1e5 * (t - l))

        def df(t):
            return 1e5 * torch.exp(sign * 1e5 * (t - l))
        aL, bL, aU, bU = _chord_tangent(f, df, l, u, torch.full_like(l, sign > 0, dtype=bool))
        assert torch.equal(aL, aU)  # narrow: the tangent and its shifted copy
        fx = f(x)
        # (float64 rounding of lines of slope 1e5 near x ~ 1: 1e-10; the wrong end misses by 4e-5)
        assert ((aL * x + bL - fx) <= 1e-9).all() and ((fx - aU * x - bU) <= 1e-9).all()


def test_exp_on_0_1_is_the_chord_above_and_midpoint_tangent_below():
    aL, bL, aU, bU = Exp().relax(torch.tensor([0.0], dtype=torch.float64),
                                 torch.tensor([1.0], dtype=torch.float64))
    # by hand: chord (e - 1) x + 1, tangent at 1/2: e^(1/2) (x + 1/2); at x = 1/2 the chord is
    # (e + 1) / 2 = 1.859141 and the tangent e^(1/2) = 1.648721, a gap of 0.210420
    assert aU.item() == pytest.approx(math.e - 1, rel=1e-12)
    assert aL.item() == pytest.approx(math.exp(0.5), rel=1e-12)
    gap = (aU - aL).item() * 0.5 + (bU - bL).item()
    assert 0.2104 < gap < 0.21043


def test_midpoint_tangent_has_less_area_than_the_tangent_parallel_to_the_chord():
    # the choice documented in the module: for exp, the tangent at log((e^u - e^l) / (u - l))
    # is parallel to the chord; the midpoint tangent encloses less area with exp
    for lo, hi in [(0.0, 1.0), (-3.0, 4.0), (-100.0, 20.0)]:
        l, u = torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64)
        aL, bL, _, _ = Exp().relax(l, u)
        t = math.log((math.exp(hi) - math.exp(lo)) / (hi - lo))

        def area(a, b):  # integral of the line over [l, u]
            return a * (hi * hi - lo * lo) / 2 + b * (hi - lo)
        assert area(aL.item(), bL.item()) >= area(math.exp(t), math.exp(t) * (1 - t)) - 1e-9


@pytest.mark.parametrize("op,l,u,gap", [
    # log on [1, 2]: chord log(2) (x - 1), tangent at 3/2; at 3/2 the gap is
    # log(3/2) - log(2)/2 = 0.405465 - 0.346574 = 0.058892
    (Log(), 1.0, 2.0, 0.058892),
    # sqrt on [0, 4]: chord x / 2, tangent at 2: x / (2 sqrt 2) + 1 / sqrt 2; at 2: sqrt 2 - 1
    (Sqrt(), 0.0, 4.0, math.sqrt(2) - 1),
    # 1/x on [1, 3]: chord (4 - x) / 3, tangent at 2: 1 - x / 4; at 2: 2/3 - 1/2 = 1/6
    (Reciprocal(), 1.0, 3.0, 1 / 6),
    # x^2 on [-1, 3]: chord 2 x + 3, tangent at 1: 2 x - 1; gap 4
    (Pow(2), -1.0, 3.0, 4.0),
    # sin on [0, pi/2]: chord slope 2/pi; sin(x) - 2x/pi is 0 at both ends and largest where
    # cos x = 2/pi: x = 0.880689, value 0.771178 - 0.560664 = 0.210513 (the lines' gap)
    (Sin(), 0.0, PI / 2, 0.210513),
    # cos on [-pi/2, pi/2]: chord slope 0, so the lines are the range ends 0 and 1
    (Cos(), -PI / 2, PI / 2, 1.0),
    # x^3 on [-1, 1]: chord slope 1; x^3 - x has extremes -+2/(3 sqrt 3) = -+0.384900
    (Pow(3), -1.0, 1.0, 0.769800),
])
def test_lines_have_the_hand_computed_gap_at_the_midpoint(op, l, u, gap):
    aL, bL, aU, bU = op.relax(torch.tensor([l], dtype=torch.float64),
                              torch.tensor([u], dtype=torch.float64))
    m = (l + u) / 2
    assert (aU - aL).item() * m + (bU - bL).item() == pytest.approx(gap, abs=2e-6)


def test_erf_follows_the_s_shaped_case_split():
    op, e = Erf(), torch.erf
    l, u = torch.tensor([0.5], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    aL, bL, aU, bU = op.relax(l, u)  # concave side: chord below, midpoint tangent above
    assert aL.item() == pytest.approx(((e(u) - e(l)) / (u - l)).item(), rel=1e-12)
    assert aU.item() == pytest.approx(2 / math.sqrt(PI) * math.exp(-1.25 ** 2), rel=1e-12)
    l, u = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([6.0], dtype=torch.float64)
    aL, bL, aU, bU = op.relax(l, u)  # across 0: the upper tangent passes through (l, erf(l))
    assert abs((aU * l + bU - e(l)).item()) < 1e-6


# ------------------------------------------------------------------------------- wide / large
def test_wide_trig_intervals_give_the_constant_lines_minus_one_and_one():
    l, u = torch.tensor([-100.0, 3.0]), torch.tensor([100.0, 3.0 + 2 * PI + 0.01])
    for op in (Sin(), Cos()):
        aL, bL, aU, bU = op.relax(l, u)
        assert (aL == 0).all() and (aU == 0).all()
        assert torch.allclose(bL, -torch.ones(2)) and torch.allclose(bU, torch.ones(2))


def test_lines_whose_coefficients_overflow_fall_back_to_the_range_ends():
    # exp on [80, 88]: the chord's intercept is about -2e39, beyond float32; 1/x on
    # [1e-20, 1e-19]: slope -1e39 (likewise rsqrt, x^-2). The range itself is finite, so
    # constant lines replace them.
    for op, lo, hi in [(Exp(), 80.0, 88.0), (Reciprocal(), 1e-20, 1e-19), (Rsqrt(), 1e-40, 1e-39),
                       (Pow(-2), -1e-18, -1e-19)]:
        l, u = torch.tensor([lo]), torch.tensor([hi])
        aL, bL, aU, bU = op.relax(l, u)
        assert all(torch.isfinite(t).all() for t in (aL, bL, aU, bU)), op
        assert (aL == 0).any() or (aU == 0).any(), op  # a constant line took over
        vl, vu = line_violation(op, l, u)
        assert vl.max() <= 0 and vu.max() <= 0, op


def test_exp_overflow_threshold_follows_the_dtype():
    ok = {torch.float32: 88.5, torch.float64: 709.0}
    over = {torch.float32: 89.0, torch.float64: 710.0}
    for dtype in DTYPES:
        l = torch.tensor([0.0], dtype=dtype)
        iv = Exp().interval(Interval(l, torch.tensor([ok[dtype]], dtype=dtype)))
        assert torch.isfinite(iv.upper).all()
        with pytest.raises(DomainError, match="exp overflows"):
            Exp().relax(l, torch.tensor([over[dtype]], dtype=dtype))


# ------------------------------------------------------------------------------- domain errors
DOMAIN = [
    (Log(), -1.0, 1.0, "log"),
    (Log(), 0.0, 1.0, "log"),
    (Log(), -0.3, -0.1, r"log .*lowest input bound -0\.3"),
    (Reciprocal(), -1.0, 1.0, "reciprocal of an interval containing 0"),
    (Reciprocal(), 0.0, 2.0, "reciprocal"),
    (Sqrt(), -0.5, 1.0, "sqrt"),
    (Rsqrt(), 0.0, 1.0, "rsqrt"),
    (Pow(0.5), -1.0, 1.0, "pow with exponent 0.5"),
    (Pow(-0.5), 0.0, 1.0, "pow with exponent -0.5"),
    (Pow(-1), -2.0, 0.0, "pow with exponent -1"),
    (Pow(-2), -1.0, 1.0, "pow with exponent -2"),
    (Exp(), 0.0, 1000.0, r"exp overflows: input upper bound 1000"),
    (Reciprocal(), 1e-40, 1.0, "reciprocal overflows float32"),
    (Pow(3), 0.0, 1e13, "pow overflows float32"),
]


@pytest.mark.parametrize("op,l,u,match", DOMAIN, ids=[f"{o.kind}{i}" for i, (o, *_) in
                                                      enumerate(DOMAIN)])
def test_intervals_outside_the_domain_raise_a_domain_error_naming_the_function(op, l, u, match):
    # one bad element among good ones is enough
    lo = torch.tensor([2.0, l, 3.0], dtype=torch.float32)
    hi = torch.tensor([2.5, u, 4.0], dtype=torch.float32)
    with pytest.raises(DomainError, match=match):
        op.interval(Interval(lo, hi))
    with pytest.raises(DomainError, match=match):
        op.relax(lo, hi, {})
    with pytest.raises(DomainError, match=match):
        op.backward(torch.ones(1, 1, 3), torch.ones(1, 1, 3), Interval(lo, hi))


def test_sqrt_and_fractional_pow_accept_intervals_starting_at_zero():
    l, u = torch.zeros(3), torch.tensor([0.0, 1e-7, 4.0])
    for op in (Sqrt(), Pow(0.5), Pow(1.5), Pow(0.3)):
        lines = op.relax(l, u)
        assert all(torch.isfinite(t).all() for t in lines), op
        iv = op.interval(Interval(l, u))
        assert (iv.lower == 0).all() and torch.isfinite(iv.upper).all()


def test_op_kinds_are_distinct_and_named():
    kinds = [cls.kind for cls in ELEMENTWISE_OPS]
    assert kinds == ["exp", "log", "reciprocal", "sqrt", "rsqrt", "pow", "sin", "cos", "erf"]
    assert repr(Pow(3)) == "pow[exponent=3.0]" and Pow(-0.5).exponent == -0.5
