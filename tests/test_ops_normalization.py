"""Normalisation ops at the op level: centring is an exact affine map (IBP and backward equal
those of its explicit matrix, over one or two dims, and ``y = 0`` when one element is
averaged); softmax and log-softmax have the exact per-entry range as IBP and sound linear
bounds (containing sampled points and box corners, for widths from 0 to 1e4, shifted by
+-500, rows of 1 to 17, along any dim), equal to the forward pass at zero width, never inf or
NaN."""
import math

import pytest
import torch

from boundgraph.ops.base import Interval, concretize
from boundgraph.ops.normalization import NORMALIZATION_OPS, Center, LogSoftmax, Softmax
from op_checks import one_thread  # noqa: F401

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64],
                                 ids=["float32", "float64"])
EPS64 = torch.finfo(torch.float64).eps


def _op(cls, shape, **attrs):
    op = cls(**attrs)
    op.in_shapes, op.out_shape = (tuple(shape),), tuple(shape)
    return op


def _box(shape, width, shift, dtype, seed, B=2):
    """``B`` random intervals of ``shape``: centres ``N(shift, 2^2)``, widths between half of
    ``width`` and ``width`` (some exactly ``width``), rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, *shape, generator=g, dtype=torch.float64) * 2 + shift
    w = width * (0.5 + 0.5 * torch.rand(B, *shape, generator=g, dtype=torch.float64))
    w = torch.where(torch.rand(B, *shape, generator=g) < 0.3, torch.full_like(w, width), w)
    a, b = (c - w / 2).to(dtype), (c + w / 2).to(dtype)
    return torch.minimum(a, b), torch.maximum(a, b)


def _points(l, u, n=150, seed=0):
    """Float64 points of the box ``[l, u]``: uniform samples and random corners,
    ``(2n, B, ...)``."""
    g = torch.Generator().manual_seed(seed)
    ld, ud = l.double(), u.double()
    shape = (n, *l.shape)
    inner = ld + torch.rand(shape, generator=g, dtype=torch.float64) * (ud - ld)
    corner = torch.where(torch.rand(shape, generator=g) < 0.5, ld, ud)
    return torch.cat([inner, corner])


def _batched(op, p):
    """``op.forward`` in float64 on points ``(N, B, *shape)``."""
    N, B = p.shape[:2]
    return op.forward(p.reshape(N * B, *p.shape[2:])).reshape(p.shape)


def _extreme_corners(l, u, dim):
    """Per entry ``i`` of the rows along per-sample ``dim``: the corner ``x_i = l_i, x_j = u_j``
    (where ``y_i`` is smallest) and its mirror; ``(n, B, *shape)`` each, entry ``i`` first."""
    d = dim % (l.dim() - 1) + 1
    n = l.shape[d]
    lows, highs = [], []
    for i in range(n):
        own = torch.zeros(n, dtype=torch.bool)
        own[i] = True
        own = own.reshape([n if k == d else 1 for k in range(l.dim())])
        lows.append(torch.where(own, l, u))
        highs.append(torch.where(own, u, l))
    return torch.stack(lows).double(), torch.stack(highs).double(), d


# ------------------------------------------------------------------------------- center
def _matrix(op, shape):
    """The explicit matrix ``W`` of ``y = W x`` (flattened), in float64."""
    N = math.prod(shape)
    cols = op.forward(torch.eye(N, dtype=torch.float64).reshape(N, *shape))
    return cols.reshape(N, N).T


CENTER_CASES = [((3, 4), (1,)), ((3, 4), (0,)), ((3, 4), (-1,)), ((3, 4), (0, 1)),
                ((2, 3, 4), (0, 2)), ((3, 1), (1,)), ((1,), (0,))]


@DTYPES
@pytest.mark.parametrize("shape,dims", CENTER_CASES,
                         ids=["last", "first", "negative", "both", "two_of_three", "n1_row",
                              "n1_single"])
def test_center_ibp_and_backward_equal_those_of_its_explicit_matrix(shape, dims, dtype):
    op = _op(Center, shape, dims=dims)
    W = _matrix(op, shape)
    B, S = 3, 4
    g = torch.Generator().manual_seed(0)
    c = torch.randn(B, *shape, generator=g, dtype=torch.float64) * 3
    r = torch.rand(B, *shape, generator=g, dtype=torch.float64)
    lo, hi = (c - r).to(dtype), (c + r).to(dtype)
    cd, rd = (lo.double() + hi.double()) / 2, (hi.double() - lo.double()) / 2
    mid, rad = cd.flatten(1) @ W.T, rd.flatten(1) @ W.abs().T
    tol = dict(rtol=8 * torch.finfo(dtype).eps, atol=16 * torch.finfo(dtype).eps)
    for iv_in in (Interval(lo, hi), Interval.from_center((lo + hi) / 2, (hi - lo) / 2)):
        iv = op.interval(iv_in)
        assert iv.lower.dtype == dtype and iv.lower.shape == (B, *shape)
        torch.testing.assert_close(iv.lower.double().flatten(1), mid - rad, **tol)
        torch.testing.assert_close(iv.upper.double().flatten(1), mid + rad, **tol)
    for Ab in (B, 1):
        A = torch.randn(Ab, S, *shape, generator=g, dtype=torch.float64).to(dtype)
        ((nl, nu),), lb, ub = op.backward(A, A, Interval(lo, hi))
        expect = (A.double().flatten(2) @ W).reshape(Ab, S, *shape)
        torch.testing.assert_close(nl.double(), expect, **tol)
        torch.testing.assert_close(nu.double(), expect, **tol)
        assert (not torch.is_tensor(lb) and lb == 0) and (not torch.is_tensor(ub) and ub == 0)
        # concretised over the box: the exact range of sum(A * y)
        blo, bhi = concretize(nl, nu, Interval(lo, hi))
        flatA = A.double().flatten(2) @ W  # (Ab, S, N)
        emid = torch.einsum("bsn,bn->bs", flatA.expand(B, S, -1), cd.flatten(1))
        erad = torch.einsum("bsn,bn->bs", flatA.abs().expand(B, S, -1), rd.flatten(1))
        torch.testing.assert_close(blo.double(), emid - erad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bhi.double(), emid + erad, rtol=1e-5, atol=1e-5)


@DTYPES
def test_center_of_one_element_is_exactly_zero(dtype):
    op = _op(Center, (3, 1), dims=(1,))
    x = torch.randn(2, 3, 1, dtype=dtype) * 100
    assert torch.equal(op.forward(x), torch.zeros_like(x))
    iv = op.interval(Interval(x - 5, x + 5))
    assert torch.equal(iv.lower, torch.zeros_like(x)) and torch.equal(iv.upper, torch.zeros_like(x))
    A = torch.randn(1, 4, 3, 1, dtype=dtype)
    (nl, nu), = op.backward(A, None, Interval(x - 5, x + 5))[0]
    assert nu is None and torch.equal(nl, torch.zeros_like(nl))


def test_center_ibp_is_tighter_than_the_two_op_form():
    """The point of the dedicated op: x - mean(x) as two ops adds the two radii."""
    op = _op(Center, (6,), dims=(0,))
    lo, hi = -torch.ones(1, 6, dtype=torch.float64), torch.ones(1, 6, dtype=torch.float64)
    iv = op.interval(Interval(lo, hi))
    torch.testing.assert_close(iv.upper, torch.full((1, 6), 2 - 2 / 6, dtype=torch.float64))
    assert (iv.upper < 2).all()  # the two-op form: 1 + 1


def test_center_refuses_no_dims():
    with pytest.raises(ValueError):
        Center(dims=())


# ---------------------------------------------------------------------- softmax family
SOFTMAX_OPS = pytest.mark.parametrize("cls", [Softmax, LogSoftmax], ids=["softmax", "log_softmax"])
# (per-sample shape, dim): rows of 5 (last dim), 1, 2, 17, and 5 along a dim that is not last
CASES = [((5,), -1), ((1,), 0), ((2,), 0), ((17,), 0), ((5, 3), 0), ((2, 5, 3), 1)]
WIDTHS = [0.0, 1e-7, 1.0, 20.0, 1e4]
SHIFTS = [0.0, 500.0, -500.0]


def _cases():
    seed = 0
    for shape, dim in CASES:
        for shift in SHIFTS:
            seed += 1
            yield shape, dim, shift, seed


def _ref_tol(cls, dtype, l, u, n):
    """Tolerance of a comparison with the float64 reference: the IBP's margins (relative
    ``eps`` of ``dtype`` and the float64 evaluation error of ``x_i - lse``)."""
    xmax = torch.maximum(l.abs(), u.abs()).max().item()
    return 4 * torch.finfo(dtype).eps + 64 * EPS64 * (n + 2) * (1 + xmax)


@DTYPES
@SOFTMAX_OPS
@pytest.mark.parametrize("width", WIDTHS, ids=[f"w{w:g}" for w in WIDTHS])
def test_softmax_ibp_contains_samples_and_corners_and_is_the_exact_entry_range(cls, width, dtype):
    for shape, dim, shift, seed in _cases():
        op = _op(cls, shape, dim=dim)
        l, u = _box(shape, width, shift, dtype, seed)
        iv = op.interval(Interval(l, u))
        assert iv.lower.dtype == dtype and iv.lower.shape == l.shape
        lo, hi = iv.lower.double(), iv.upper.double()
        assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
        assert (lo <= hi).all()
        if cls is Softmax:
            assert (lo >= 0).all() and (hi <= 1).all()
        else:
            assert (hi <= 0).all()
        xmax = torch.maximum(l.abs(), u.abs()).max().item()
        ref_err = 64 * EPS64 * (1 + xmax)  # of the float64 reference itself
        f = _batched(op, _points(l, u, seed=seed))
        scale = f.abs() if cls is LogSoftmax else f
        assert (lo <= f + ref_err * (1 + scale)).all(), (shape, dim, shift)
        assert (f <= hi + ref_err * (1 + scale)).all(), (shape, dim, shift)
        # exact: attained at x_i = l_i, x_j = u_j (lower) and x_i = u_i, x_j = l_j (upper)
        low_c, high_c, d = _extreme_corners(l, u, dim)
        n = l.shape[d]
        ref_lo = _batched(op, low_c).movedim(d + 1, 0).diagonal(0, 0, 1).movedim(-1, d)
        ref_hi = _batched(op, high_c).movedim(d + 1, 0).diagonal(0, 0, 1).movedim(-1, d)
        rtol = _ref_tol(cls, dtype, l, u, n)
        atol = 4 * torch.finfo(dtype).tiny + ref_err
        assert (lo <= ref_lo + atol).all() and (ref_hi <= hi + atol).all()
        assert ((ref_lo - lo) <= rtol * ref_lo.abs() + atol).all(), (shape, dim, shift)
        assert ((hi - ref_hi) <= rtol * ref_hi.abs() + atol).all(), (shape, dim, shift)


def _check_backward(op, l, u, A, same, seed):
    """Run ``op.backward`` with coefficients ``A`` (for both sides, the same object when
    ``same``) and check soundness at sampled points and corners; returns the results."""
    B = l.shape[0]
    x = Interval(l, u)
    uA = A if same else A.clone()
    ((nl, nu),), lb, ub = op.backward(A, uA, x)
    S = A.shape[1]
    for C, b in ((nl, lb), (nu, ub)):
        assert C.shape == (B, S, *l.shape[1:]) and C.dtype == l.dtype
        assert b.shape == (B, S) and b.dtype == l.dtype
        assert torch.isfinite(C).all() and torch.isfinite(b).all()
    p = _points(l, u, seed=seed)
    f = _batched(op, p)
    Ad = A.double().expand(B, *A.shape[1:])
    val = torch.einsum("bs...,nb...->nbs", Ad, f)
    low = torch.einsum("bs...,nb...->nbs", nl.double(), p) + lb.double()
    up = torch.einsum("bs...,nb...->nbs", nu.double(), p) + ub.double()
    # float64 evaluation noise of the check itself (reference and sums)
    xmax = p.abs().amax().item()
    scale = torch.einsum("bs...,nb...->nbs", nl.double().abs() + nu.double().abs(), p.abs()) \
        + Ad.abs().flatten(2).sum(-1) * (1 + xmax) * (1 + f.abs().amax().item())
    tol = 64 * EPS64 * (1 + scale)
    assert (low <= val + tol).all() and (val <= up + tol).all()
    return nl, nu, lb, ub, p, f, val, low, up


@DTYPES
@SOFTMAX_OPS
@pytest.mark.parametrize("width", WIDTHS, ids=[f"w{w:g}" for w in WIDTHS])
def test_softmax_backward_bounds_contain_samples_and_corners(cls, width, dtype):
    for shape, dim, shift, seed in _cases():
        op = _op(cls, shape, dim=dim)
        l, u = _box(shape, width, shift, dtype, seed)
        g = torch.Generator().manual_seed(seed)
        for Ab, same in ((2, True), (1, False)):  # per-example and batch-1 coefficients
            A = torch.randn(Ab, 3, *shape, generator=g, dtype=torch.float64).to(dtype)
            _check_backward(op, l, u, A, same, seed)


@DTYPES
@SOFTMAX_OPS
def test_softmax_bounds_equal_the_forward_pass_at_zero_width(cls, dtype):
    """Within 1e-6 (relative for log-softmax values beyond 1), plus the float32 rounding of a
    bias of the size of ``sum |C x|`` (shifted inputs give large, cancelling terms)."""
    for shape, dim, shift, seed in _cases():
        op = _op(cls, shape, dim=dim)
        l, _ = _box(shape, 0.0, shift, dtype, seed)
        iv = op.interval(Interval(l, l))
        f = op.forward(l.double())
        assert ((iv.lower.double() - f).abs() <= 1e-6 * (1 + f.abs())).all()
        assert ((iv.upper.double() - f).abs() <= 1e-6 * (1 + f.abs())).all()
        A = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(seed),
                        dtype=dtype)
        nl, nu, lb, ub, p, _, val, low, up = _check_backward(op, l, l, A, True, seed)
        pt = l.double().unsqueeze(1)
        size = ((nl.double().abs() + nu.double().abs()) * pt.abs()).flatten(2).sum(-1)
        tol = 1e-6 * (1 + (A.double().abs() * f.abs().unsqueeze(1)).flatten(2).sum(-1)) \
            + 2 * torch.finfo(dtype).eps * size
        assert ((val[0] - low[0]) <= tol).all() and ((up[0] - val[0]) <= tol).all()


@DTYPES
@SOFTMAX_OPS
@pytest.mark.parametrize("shift", [0.0, 500.0, -500.0, 1e5])
def test_softmax_rules_never_return_inf_or_nan_for_huge_widths(cls, shift, dtype):
    big = [1e4, 1e6] + ([1e30] if dtype == torch.float32 else [1e300])
    for width in big:
        for shape, dim in ((5,), 0), ((17,), 0), ((2, 5, 3), 1):
            op = _op(cls, shape, dim=dim)
            l, u = _box(shape, width, shift, dtype, 7)
            iv = op.interval(Interval(l, u))
            assert torch.isfinite(iv.lower).all() and torch.isfinite(iv.upper).all()
            A = torch.randn(2, 3, *shape, dtype=dtype)
            ((nl, nu),), lb, ub = op.backward(A, A, Interval(l, u))
            for t in (nl, nu, lb, ub):
                assert torch.isfinite(t).all()
            if width <= 1e6:
                _check_backward(op, l, u, A, True, 7)


@DTYPES
@SOFTMAX_OPS
def test_softmax_backward_mixes_wide_and_narrow_entries_soundly(cls, dtype):
    """Entries that overflow exp fall back to their IBP lines; the others keep the chain."""
    l = torch.tensor([[0.0, 0.5, -1.0, 300.0, 0.2]], dtype=dtype)
    u = torch.tensor([[0.5, 1.0, -0.5, 600.0, 0.3]], dtype=dtype)
    op = _op(cls, (5,), dim=0)
    A = torch.randn(1, 6, 5, dtype=dtype)
    _check_backward(op, l, u, A, False, 3)


@SOFTMAX_OPS
def test_softmax_backward_takes_either_side_alone(cls):
    op = _op(cls, (4,), dim=0)
    l, u = _box((4,), 1.0, 0.0, torch.float64, 1)
    A = torch.randn(2, 3, 4, dtype=torch.float64)
    ((nl, nu),), lb, ub = op.backward(A, None, Interval(l, u))
    assert nu is None and not torch.is_tensor(ub)
    ((nl2, nu2),), lb2, ub2 = op.backward(None, A, Interval(l, u))
    assert nl2 is None and not torch.is_tensor(lb2)
    ((fl, fu),), flb, fub = op.backward(A, A, Interval(l, u))
    torch.testing.assert_close(nl, fl)
    torch.testing.assert_close(nu2, fu)
    torch.testing.assert_close(lb, flb)
    torch.testing.assert_close(ub2, fub)


@SOFTMAX_OPS
def test_softmax_forward_dims_and_rule_hooks(cls):
    x = torch.randn(2, 4, 3)
    ref = torch.softmax if cls is Softmax else torch.log_softmax
    for dim in (0, 1, -1, -2):
        torch.testing.assert_close(cls(dim=dim).forward(x), ref(x, dim % 2 + 1))
    assert cls(dim=0).needs_bounds(0)
    assert not Center(dims=(0,)).needs_bounds(0)
    assert [c.kind for c in NORMALIZATION_OPS] == ["center", "softmax", "log_softmax"]


@SOFTMAX_OPS
def test_softmax_single_entry_bounds_equal_the_exact_range(cls):
    """With the tangents at the ends (``s = su``, ``d = dl``), the backward bound of one entry
    (identity coefficients), concretised over the box, is its exact range: the IBP interval."""
    torch.manual_seed(0)
    n, B = 5, 8
    for width in (0.1, 1.0, 4.0):
        l, u = _box((n,), width, 0.0, torch.float64, 11, B=B)
        x = Interval(l, u)
        op = _op(cls, (n,), dim=0)
        iv = op.interval(x)
        eye = torch.eye(n, dtype=torch.float64).unsqueeze(0)
        ((nl, nu),), lb, ub = op.backward(eye, eye, x)
        lo, hi = concretize(nl, nu, x)
        lo, hi = lo + lb, hi + ub
        torch.testing.assert_close(lo, iv.lower, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(hi, iv.upper, rtol=1e-9, atol=1e-12)


@SOFTMAX_OPS
@pytest.mark.parametrize("width", [0.1, 1.0, 4.0])
def test_softmax_backward_on_mixed_specifications_is_sound_and_comparable_to_ibp(cls, width):
    """Random coefficient rows (differences of entries and the like): the concretised backward
    bound is sound and within a reasonable factor of IBP's (sum of per-entry intervals)."""
    n, B = 5, 16
    l, u = _box((n,), width, 0.0, torch.float64, 21, B=B)
    x = Interval(l, u)
    op = _op(cls, (n,), dim=0)
    A = torch.randn(1, 6, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    nl, nu, lb, ub, p, f, val, _, _ = _check_backward(op, l, u, A, True, 5)
    lo, hi = concretize(nl, nu, x)
    lo, hi = lo + lb, hi + ub
    assert (lo <= val.amin(0) + 1e-12).all() and (val.amax(0) <= hi + 1e-12).all()
    iv = op.interval(x)
    lo_y, hi_y = iv.lower.unsqueeze(1), iv.upper.unsqueeze(1)
    ibp_lo = (A.clamp(min=0) * lo_y + A.clamp(max=0) * hi_y).sum(-1)
    ibp_hi = (A.clamp(min=0) * hi_y + A.clamp(max=0) * lo_y).sum(-1)
    assert (hi - lo).mean() <= 1.5 * (ibp_hi - ibp_lo).mean()


@SOFTMAX_OPS
def test_softmax_bounds_are_differentiable_in_the_input_bounds(cls):
    """Training through bounds (CROWN-IBP) needs gradients of the rules."""
    l0, u0 = _box((4,), 1.0, 0.0, torch.float32, 4)
    l, u = l0.clone().requires_grad_(), u0.clone().requires_grad_()
    op = _op(cls, (4,), dim=0)
    iv = op.interval(Interval(l, u))
    A = torch.randn(1, 2, 4)
    ((nl, nu),), lb, ub = op.backward(A, A, Interval(l, u))
    x = Interval(l, u)
    lo, hi = concretize(nl, nu, x)
    loss = (hi + ub - lo - lb).sum() + (iv.upper - iv.lower).sum()
    loss.backward()
    assert torch.isfinite(l.grad).all() and torch.isfinite(u.grad).all()
    assert l.grad.abs().sum() > 0


@SOFTMAX_OPS
@pytest.mark.parametrize("gap", [150.0, 400.0, 800.0])
def test_softmax_single_entry_bounds_hold_relative_to_tiny_values(cls, gap):
    """Entries far below the others (softmax values near ``e^-gap``): each entry's concretised
    bounds still contain its exact range, compared relatively (no absolute slack), also where
    ``exp`` of the gap leaves float64's range."""
    l = torch.tensor([[0.0, 0.0, gap, 1.0]], dtype=torch.float64)
    u = torch.tensor([[0.5, 1.0, gap + 1.0, 1.5]], dtype=torch.float64)
    x = Interval(l, u)
    op = _op(cls, (4,), dim=0)
    eye = torch.eye(4, dtype=torch.float64).unsqueeze(0)
    ((nl, nu),), lb, ub = op.backward(eye, eye, x)
    lo, hi = concretize(nl, nu, x)
    lo, hi = lo + lb, hi + ub
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    low_c, high_c, d = _extreme_corners(l, u, 0)
    ref_lo = _batched(op, low_c).diagonal(0, 0, 2)  # (B, n)
    ref_hi = _batched(op, high_c).diagonal(0, 0, 2)
    slack = 1e-12
    assert (lo <= ref_lo + slack * ref_lo.abs()).all()
    assert (ref_hi <= hi + slack * ref_hi.abs()).all()
