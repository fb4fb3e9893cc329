"""Ops on two bounded operands, at the op level (float64): the matrix product's McCormick
planes hold at sampled points and corners of the box for every shape (heads, broadcasting),
coefficient batch and choice of planes, and its interval contains every product; both are
exact when an operand has zero width, and a constant operand gives the exact range; with the
fixed planes the step equals ``Mul``'s planes summed over the inner dimension, and the adaptive
choice is no looser on average. Maximum / minimum and amax / amin: intervals are the exact
ranges, the lines hold at samples and corners and are exact where an operand dominates."""
import pytest
import torch

from boundgraph.ops import Mul
from boundgraph.ops.base import Interval, concretize
from boundgraph.ops.bilinear import (BILINEAR_OPS, MATMUL_PLANES, Amax, Amin, MatMul, Maximum,
                                     Minimum)
from op_checks import one_thread  # noqa: F401

DT = torch.float64
B, S = 2, 4
KINDS = ("narrow", "wide", "crossing", "positive", "negative")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _box(shape, kind, g, batch=B):
    """An interval of full shape ``(batch, *shape)`` of the given kind."""
    kw = dict(generator=g, dtype=DT)
    c, r = torch.randn(batch, *shape, **kw), torch.rand(batch, *shape, **kw)
    if kind == "narrow":
        return Interval(c - 1e-3 * r, c + 1e-3 * r)
    if kind == "wide":
        return Interval(3 * c - 5 * r, 3 * c + 5 * r)
    if kind == "crossing":
        c = 0.3 * c
        return Interval(c - c.abs() - r - 0.01, c + c.abs() + r + 0.01)
    lo = 0.1 + 2 * torch.rand(batch, *shape, **kw)
    up = lo + 3 * r
    return Interval(lo, up) if kind == "positive" else Interval(-up, -lo)


def _points(iv, n, g):
    """``(2n + 2, *full shape)``: uniform samples, random corners, the two extreme corners."""
    l, u = iv.lower, iv.upper
    t = torch.rand(n, *l.shape, generator=g, dtype=DT)
    inside = torch.minimum(torch.maximum(l + t * (u - l), l), u)  # no rounding past the ends
    corner = torch.where(torch.rand(n, *l.shape, generator=g) < 0.5, u, l)
    return torch.cat([inside, corner, l[None], u[None]])


def _dot(C, x):
    """``sum(C * x)`` per row: coefficients ``(B or 1, S, *shape)``, points ``(N, B, *shape)``
    -> ``(N, B, S)``."""
    p = C.unsqueeze(0) * x.unsqueeze(2)
    return p.reshape(*p.shape[:3], -1).sum(-1)


def _assert_planes(lA, uA, per_input, lb, ub, points, out, tol=1e-8):
    """Both bounds hold at every point: ``points`` lists each input's points (``None`` for a
    constant input), ``out`` the op's output at them."""
    low, up = lb, ub
    for pair, x in zip(per_input, points):
        if x is None:
            assert pair is None
            continue
        low = low + _dot(pair[0], x)
        up = up + _dot(pair[1], x)
    val_l, val_u = _dot(lA, out), _dot(uA, out)
    scale = 1 + val_l.abs().amax()
    assert (low <= val_l + tol * scale).all(), (low - val_l).max()
    scale = 1 + val_u.abs().amax()
    assert (val_u <= up + tol * scale).all(), (val_u - up).max()


def _op(cls, in_shapes, out_shape, *args):
    op = cls(*args)
    op.in_shapes, op.out_shape = tuple(in_shapes), tuple(out_shape)
    return op


# ------------------------------------------------------------------------------ matmul
MATMUL_SHAPES = {
    "plain": ((4, 3), (3, 5), (4, 5)),
    "heads": ((2, 4, 3), (2, 3, 5), (2, 4, 5)),
    "broadcast": ((2, 4, 3), (1, 3, 5), (2, 4, 5)),
}


@pytest.mark.parametrize("mode", MATMUL_PLANES)
@pytest.mark.parametrize("coef_batch", [B, 1], ids=["coef_B", "coef_1"])
@pytest.mark.parametrize("name", sorted(MATMUL_SHAPES))
def test_matmul_planes_hold_and_interval_contains_every_product(name, coef_batch, mode):
    sa, sb, so = MATMUL_SHAPES[name]
    g = _gen(0)
    op = _op(MatMul, (sa, sb), so)
    for ka in KINDS:
        for kb in KINDS:
            a, b = _box(sa, ka, g), _box(sb, kb, g)
            lA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
            uA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
            per_input, lb, ub = op.backward(lA, uA, a, b, opts={"matmul_planes": mode})
            (la_, ua_), (lb_, ub_) = per_input
            # per-input coefficients have the inputs' shapes, and the batch of the intervals
            assert la_.shape == ua_.shape == (B, S, *sa)
            assert lb_.shape == ub_.shape == (B, S, *sb)
            assert lb.shape == ub.shape == (B, S)
            pa, pb = _points(a, 150, g), _points(b, 150, g)
            out = op.forward(pa, pb)
            _assert_planes(lA, uA, per_input, lb, ub, (pa, pb), out)
            iv = op.interval(a, b)
            assert iv.lower.shape == (B, *so)
            tol = 1e-9 * (1 + out.abs().amax())
            assert (iv.lower <= out + tol).all() and (out <= iv.upper + tol).all()


def test_matmul_with_the_same_coefficients_on_both_sides_matches_separate_ones():
    sa, sb, so = MATMUL_SHAPES["heads"]
    g = _gen(1)
    op = _op(MatMul, (sa, sb), so)
    a, b = _box(sa, "crossing", g), _box(sb, "wide", g)
    A = torch.randn(1, S, *so, generator=g, dtype=DT)
    one = op.backward(A, A, a, b)
    two = op.backward(A, A.clone(), a, b)
    low = op.backward(A, None, a, b)
    for (p1, p2), (q1, q2), (r1, r2) in zip(one[0], two[0], low[0]):
        torch.testing.assert_close(p1, q1)
        torch.testing.assert_close(p2, q2)
        torch.testing.assert_close(p1, r1)
        assert r2 is None
    torch.testing.assert_close(one[1], two[1])
    torch.testing.assert_close(one[2], two[2])


def _zero_width(iv):
    return Interval(iv.center, iv.center)


@pytest.mark.parametrize("mode", MATMUL_PLANES)
@pytest.mark.parametrize("fixed", ["a", "b"])
@pytest.mark.parametrize("name", sorted(MATMUL_SHAPES))
def test_matmul_is_exact_when_one_operand_has_zero_width(name, fixed, mode):
    """IBP is the exact range (the one-constant rule's), and the backward bound is the one of
    the one-constant affine rule: the same coefficient on the other operand, and the zero-width
    operand's share folded into the bias."""
    sa, sb, so = MATMUL_SHAPES[name]
    g = _gen(2)
    for kind in KINDS:
        a, b = _box(sa, kind, g, batch=1), _box(sb, "wide", g, batch=1)
        if fixed == "a":
            a = _zero_width(a)
            const_args, k = (a.lower, b), 1
        else:
            a, b = _box(sa, "wide", g, batch=1), _zero_width(_box(sb, kind, g, batch=1))
            const_args, k = (a, b.lower), 0
        op = _op(MatMul, (sa, sb), so)
        iv, ref = op.interval(a, b), op.interval(*const_args)
        torch.testing.assert_close(iv.lower, ref.lower, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(iv.upper, ref.upper, rtol=1e-12, atol=1e-12)
        lA = torch.randn(1, S, *so, generator=g, dtype=DT)
        uA = torch.randn(1, S, *so, generator=g, dtype=DT)
        per_input, lb, ub = op.backward(lA, uA, a, b, opts={"matmul_planes": mode})
        ref_in, rlb, rub = op.backward(lA, uA, *const_args)
        assert ref_in[1 - k] is None and rlb == 0.0 and rub == 0.0
        for side, bias in ((0, lb), (1, ub)):
            torch.testing.assert_close(per_input[k][side], ref_in[k][side])
            folded = bias + _dot(per_input[1 - k][side], (a, b)[1 - k].lower[None])[0]
            torch.testing.assert_close(folded, torch.zeros_like(folded), atol=1e-10, rtol=0)


CONST_CASES = {  # bounded per-sample shape, constant shape, constant's position, output shape
    "x@W": ((4, 3), (3, 5), 1, (4, 5)),
    "x@W_leading_1": ((4, 3), (1, 3, 5), 1, (4, 5)),
    "heads_x@W": ((2, 4, 3), (3, 5), 1, (2, 4, 5)),
    "heads_x@heads_W": ((2, 4, 3), (2, 3, 5), 1, (2, 4, 5)),
    "W@x": ((3, 5), (4, 3), 0, (4, 5)),
    "W@heads_x": ((2, 3, 5), (4, 3), 0, (2, 4, 5)),
    "W_leading_1@x": ((3, 5), (1, 4, 3), 0, (4, 5)),
}


@pytest.mark.parametrize("coef_batch", [B, 1], ids=["coef_B", "coef_1"])
@pytest.mark.parametrize("case", sorted(CONST_CASES))
def test_matmul_with_a_constant_operand_gives_the_exact_range(case, coef_batch):
    xs, ws, side, so = CONST_CASES[case]
    g = _gen(3)
    x = _box(xs, "crossing", g)
    W = torch.randn(*ws, generator=g, dtype=DT)
    args = (x, W) if side == 1 else (W, x)
    op = _op(MatMul, (xs, ws) if side == 1 else (ws, xs), so)
    # interval: the exact range of each output, sum_j min/max(l_ij W_jk, u_ij W_jk)
    Wv = W.squeeze(0) if W.dim() > len(xs) else W
    if side == 1:  # out_ik = sum_j x_ij W_jk
        lo_t, up_t = (e.unsqueeze(-1) * Wv.unsqueeze(-3) for e in (x.lower, x.upper))
    else:  # out_ik = sum_j W_ij x_jk
        lo_t, up_t = (Wv.unsqueeze(-1) * e.unsqueeze(-3) for e in (x.lower, x.upper))
    exact_lo = torch.minimum(lo_t, up_t).sum(-2)
    exact_hi = torch.maximum(lo_t, up_t).sum(-2)
    iv = op.interval(*args)
    torch.testing.assert_close(iv.lower, exact_lo, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(iv.upper, exact_hi, rtol=1e-12, atol=1e-12)
    # backward: the coefficient is the gradient of sum(A * out) (the map is linear), no bias,
    # and the batch of the coefficients is kept
    A = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
    per_input, lb, ub = op.backward(A, A, *args)
    assert per_input[side] is None and lb == 0.0 and ub == 0.0
    coef = per_input[1 - side][0]
    assert coef.shape == (coef_batch, S, *xs) and per_input[1 - side][1] is coef
    xc = x.center.detach().clone().requires_grad_(True)
    out = op.forward(xc, W) if side == 1 else op.forward(W, xc)
    for s in range(S):
        grad, = torch.autograd.grad((A[:, s] * out).sum(), xc, retain_graph=True)
        ref = grad if coef_batch == B else grad.sum(0, keepdim=True) / B
        torch.testing.assert_close(coef[:, s], ref.expand_as(coef[:, s]))
    # so the concretised bounds are the exact range of sum(A * out) over the box
    lo, hi = concretize(coef, coef, x)
    pts = _points(x, 100, g)
    vals = _dot(A, op.forward(pts, W) if side == 1 else op.forward(W, pts))
    assert (lo <= vals + 1e-9).all() and (vals <= hi + 1e-9).all()


def _mul_reference(lA, uA, a, b):
    """The matrix product as elementwise products ``a_ij * b_jk`` bounded with ``Mul``'s
    planes and summed over ``j``: coefficients on ``a``, ``b`` and the biases."""
    I, J = a.lower.shape[-2:]
    K = b.lower.shape[-1]
    mul = _op(Mul, ((I, J, 1), (1, J, K)), (I, J, K))
    ae = Interval(a.lower.unsqueeze(-1), a.upper.unsqueeze(-1))
    be = Interval(b.lower.unsqueeze(-3), b.upper.unsqueeze(-3))
    expand = lambda A: A.unsqueeze(-2).expand(*A.shape[:-1], J, A.shape[-1])  # noqa: E731
    (pa, pb), lb, ub = mul.backward(expand(lA), expand(uA), ae, be)
    return ((pa[0].squeeze(-1), pa[1].squeeze(-1)), (pb[0].squeeze(-3), pb[1].squeeze(-3))), lb, ub


def _concretised(per_input, lb, ub, a, b):
    (pa, pb) = per_input
    lo = concretize(pa[0], None, a)[0] + concretize(pb[0], None, b)[0] + lb
    hi = concretize(None, pa[1], a)[1] + concretize(None, pb[1], b)[1] + ub
    return lo, hi


@pytest.mark.parametrize("ka,kb", [("crossing", "wide"), ("positive", "crossing"),
                                   ("negative", "crossing"), ("wide", "negative")])
def test_matmul_backward_is_no_looser_than_mul_planes_summed(ka, kb):
    """Fixed planes: the step is exactly ``Mul``'s planes on each product, summed (without the
    ``(S, I, J, K)`` tensor). Adaptive planes: the same where ``a``'s centers are >= 0, the
    fixed planes of ``(-a) @ (-b)`` where they are < 0, and on this example no looser on
    average (bounded over the box of the operands)."""
    sa, sb, so = MATMUL_SHAPES["plain"]
    g = _gen(4)
    op = _op(MatMul, (sa, sb), so)
    a, b = _box(sa, ka, g), _box(sb, kb, g)
    lA = torch.randn(B, 3 * S, *so, generator=g, dtype=DT)
    uA = torch.randn(B, 3 * S, *so, generator=g, dtype=DT)
    ref = _mul_reference(lA, uA, a, b)
    fixed = op.backward(lA, uA, a, b, opts={"matmul_planes": "fixed"})
    for (p, q) in zip(fixed[0], ref[0]):
        torch.testing.assert_close(p[0], q[0])
        torch.testing.assert_close(p[1], q[1])
    torch.testing.assert_close(fixed[1], ref[1])
    torch.testing.assert_close(fixed[2], ref[2])

    adaptive = op.backward(lA, uA, a, b)  # the default
    rlo, rhi = _concretised(*ref, a, b)
    alo, ahi = _concretised(*adaptive, a, b)
    if ka == "positive":
        torch.testing.assert_close(alo, rlo)
        torch.testing.assert_close(ahi, rhi)
    if ka == "negative":  # mirrored: a @ b = (-a) @ (-b)
        na, nb = Interval(-a.upper, -a.lower), Interval(-b.upper, -b.lower)
        mirror = op.backward(lA, uA, na, nb, opts={"matmul_planes": "fixed"})
        for (p, q) in zip(adaptive[0], mirror[0]):
            torch.testing.assert_close(p[0], -q[0])
            torch.testing.assert_close(p[1], -q[1])
        torch.testing.assert_close(adaptive[1], mirror[1])
        torch.testing.assert_close(adaptive[2], mirror[2])
    assert (ahi - alo).mean() <= (rhi - rlo).mean() + 1e-9
    if ka in ("negative", "crossing"):  # strictly tighter here
        assert (ahi - alo).mean() < 0.95 * (rhi - rlo).mean()


def test_matmul_refuses_an_unknown_choice_of_planes():
    sa, sb, so = MATMUL_SHAPES["plain"]
    g = _gen(5)
    op = _op(MatMul, (sa, sb), so)
    A = torch.randn(1, S, *so, generator=g, dtype=DT)
    with pytest.raises(ValueError, match="matmul_planes"):
        op.backward(A, A, _box(sa, "wide", g), _box(sb, "wide", g), opts={"matmul_planes": "x"})


# --------------------------------------------------------------------- maximum / minimum
def _mixed_box(shape, g, batch=B):
    """Intervals of every kind side by side (so that some elements dominate others)."""
    parts = [_box(shape, k, g, batch) for k in KINDS]
    pick = torch.randint(len(KINDS), (batch, *shape), generator=g)
    lo = torch.stack([p.lower for p in parts]).gather(0, pick[None])[0]
    up = torch.stack([p.upper for p in parts]).gather(0, pick[None])[0]
    return Interval(lo, up)


MAX_CASES = {  # a's per-sample shape, b's, whether b (or a) is constant
    "both": ((3, 4), (3, 4), None),
    "b_broadcasts": ((3, 4), (3, 1), None),
    "a_broadcasts": ((1, 4), (3, 4), None),
    "b_const": ((3, 4), (3, 4), 1),
    "b_const_row": ((3, 4), (4,), 1),
    "a_const_leading_1": ((1, 3, 4), (3, 4), 0),
}


@pytest.mark.parametrize("mode", ["adaptive", "zero", "one", "parallel"])
@pytest.mark.parametrize("coef_batch", [B, 1], ids=["coef_B", "coef_1"])
@pytest.mark.parametrize("case", sorted(MAX_CASES))
@pytest.mark.parametrize("cls", [Maximum, Minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_lines_hold_and_interval_is_the_exact_range(cls, case, coef_batch,
                                                                     mode):
    sa, sb, const = MAX_CASES[case]
    g = _gen(6)
    so = (3, 4)
    for rep in range(3):
        ops = [_mixed_box(sa, g), _mixed_box(sb, g)]
        if const is not None:
            ops[const] = torch.randn(*((sa, sb)[const]), generator=g, dtype=DT) * 2
        a, b = ops
        in_shapes = [sa, sb]
        if const == 0:
            in_shapes[0] = sa[1:]
        op = _op(cls, in_shapes, so)
        lA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
        uA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
        per_input, lb, ub = op.backward(lA, uA, a, b, opts={"relu_lower": mode})
        pts = [None if const == i else _points(v, 150, g) for i, v in enumerate(ops)]
        for i, p in enumerate(per_input):
            if p is not None:
                assert p[0].shape == (B, S, *in_shapes[i])
        out = op.forward(*(v if p is None else p for v, p in zip(ops, pts)))
        _assert_planes(lA, uA, per_input, lb, ub, pts, out)
        # the interval is attained at the all-lower and all-upper corners
        iv = op.interval(a, b)
        lo_arg = [v if const == i else v.lower for i, v in enumerate(ops)]
        up_arg = [v if const == i else v.upper for i, v in enumerate(ops)]
        assert torch.equal(iv.lower, op.forward(*lo_arg).expand_as(iv.lower))
        assert torch.equal(iv.upper, op.forward(*up_arg).expand_as(iv.upper))
        assert (iv.lower <= out).all() and (out <= iv.upper).all()


@pytest.mark.parametrize("mode", ["adaptive", "zero", "one", "parallel"])
@pytest.mark.parametrize("cls", [Maximum, Minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_are_exact_where_one_operand_dominates(cls, mode):
    g = _gen(7)
    so = (3, 4)
    op = _op(cls, (so, so), so)
    a = _box(so, "wide", g)
    gap = 0.5 + torch.rand(B, *so, generator=g, dtype=DT)
    above = torch.rand(B, *so, generator=g) < 0.5  # where b lies above a
    lo = torch.where(above, a.upper + gap, a.lower - gap - 3)
    b = Interval(lo, lo + torch.where(above, 3.0, 2.0))
    chosen_b = above if cls is Maximum else ~above  # the operand that is the output
    A = torch.randn(1, S, *so, generator=g, dtype=DT)
    opts = {"relu_lower": mode}
    (pa, pb), lb, ub = op.backward(A, A, a, b, opts=opts)
    for side in (0, 1):
        torch.testing.assert_close(pa[side], A * (~chosen_b).unsqueeze(1))
        torch.testing.assert_close(pb[side], A * chosen_b.unsqueeze(1))
    assert torch.equal(lb, torch.zeros(B, S, dtype=DT)) and torch.equal(ub, lb)
    # one constant operand: max(x, c) with x above c is x, below c it is c
    c = torch.where(above[0], a.upper[0] + 1, a.lower[0] - 1)
    (px, none), lb, ub = op.backward(A, A, a, c, opts=opts)
    assert none is None
    x_out = (~above[0]) if cls is Maximum else above[0]
    for side, bias in ((0, lb), (1, ub)):
        torch.testing.assert_close(px[side][0], (A * x_out)[0])
        torch.testing.assert_close(bias[0], (A * ~x_out * c)[0].flatten(1).sum(-1))


# ---------------------------------------------------------------------------- amax / amin
AMAX_CASES = [([1], False), ([1], True), ([0, 2], False), ([2, 0], True), ([-1], False),
              ([0], False)]


@pytest.mark.parametrize("coef_batch", [B, 1], ids=["coef_B", "coef_1"])
@pytest.mark.parametrize("dims,keepdim", AMAX_CASES,
                         ids=[f"{d}-{'keep' if k else 'drop'}" for d, k in AMAX_CASES])
@pytest.mark.parametrize("cls", [Amax, Amin], ids=["amax", "amin"])
def test_amax_amin_interval_is_exact_and_lines_hold(cls, dims, keepdim, coef_batch):
    shape = (3, 4, 5) if dims != [0] else (1, 4, 5)
    g = _gen(8)
    red = torch.amax if cls is Amax else torch.amin
    for rep in range(4):
        x = _mixed_box(shape, g)
        if rep % 2:  # some groups with a dominating element
            lift = (torch.rand(B, *shape, generator=g) < 0.15).to(DT) * 30
            lift = lift if cls is Amax else -lift
            x = Interval(x.lower + lift, x.upper + lift)
        op = cls(dims, keepdim)
        sample_out = op.forward(x.lower)
        assert torch.equal(sample_out, red(x.lower, dim=[d % 3 + 1 for d in dims],
                                           keepdim=keepdim))
        so = tuple(sample_out.shape[1:])
        op.in_shapes, op.out_shape = (shape,), so
        iv = op.interval(x)
        # exact: attained at the all-lower and all-upper corners
        assert torch.equal(iv.lower, op.forward(x.lower))
        assert torch.equal(iv.upper, op.forward(x.upper))
        pts = _points(x, 150, g)
        out = op.forward(pts.flatten(0, 1)).reshape(pts.shape[0], B, *so)
        assert (iv.lower <= out).all() and (out <= iv.upper).all()
        lA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
        uA = torch.randn(coef_batch, S, *so, generator=g, dtype=DT)
        per_input, lb, ub = op.backward(lA, uA, x)
        assert per_input[0][0].shape == per_input[0][1].shape == (B, S, *shape)
        _assert_planes(lA, uA, per_input, lb, ub, (pts,), out)


@pytest.mark.parametrize("cls", [Amax, Amin], ids=["amax", "amin"])
def test_amax_amin_are_exact_when_one_element_dominates_its_group(cls):
    g = _gen(9)
    shape = (3, 4, 5)
    x = _box(shape, "wide", g)
    winner = torch.randint(4, (B, 3, 5), generator=g)  # per group of dim 1
    hot = torch.nn.functional.one_hot(winner, 4).permute(0, 1, 3, 2).to(DT)  # (B, 3, 4, 5)
    shift = hot * 100 if cls is Amax else -hot * 100
    x = Interval(x.lower + shift, x.upper + shift)
    op = _op(cls, (shape,), (3, 5), [1], False)
    A = torch.randn(1, S, 3, 5, generator=g, dtype=DT)
    (pair,), lb, ub = op.backward(A, A, x)
    expect = A.unsqueeze(3) * hot.unsqueeze(1)  # the coefficient on the dominating element
    torch.testing.assert_close(pair[0], expect)
    torch.testing.assert_close(pair[1], expect)
    assert torch.equal(lb, torch.zeros(B, S, dtype=DT)) and torch.equal(ub, lb)
    assert not op.refine_mask(0, x).any()
    # a group of one element is the element itself
    one = _op(cls, ((1, 4),), (4,), [0], False)
    y = _box((1, 4), "crossing", g)
    A1 = torch.randn(B, S, 4, generator=g, dtype=DT)
    (pair,), lb, ub = one.backward(A1, A1, y)
    for side in (0, 1):
        torch.testing.assert_close(pair[side], A1.unsqueeze(2))
    assert torch.equal(lb, torch.zeros(B, S, dtype=DT)) and torch.equal(ub, lb)


@pytest.mark.parametrize("cls", [Amax, Amin], ids=["amax", "amin"])
def test_amax_amin_exact_side_concretises_to_the_interval_bound(cls):
    """The line through one element (amax: lower, amin: upper) uses the element of largest
    lower (smallest upper) bound, so bounded on the box it is the interval's bound."""
    g = _gen(10)
    shape = (3, 4, 5)
    op = _op(cls, (shape,), (3, 5), [1], False)
    x = _mixed_box(shape, g)
    A = torch.eye(15, dtype=DT).view(1, 15, 3, 5)  # one row per output element
    iv = op.interval(x)
    if cls is Amax:
        (pair,), lb, _ = op.backward(A, None, x)
        lo = concretize(pair[0], None, x)[0] + lb
        torch.testing.assert_close(lo, iv.lower.flatten(1), rtol=0, atol=1e-12)
    else:
        (pair,), _, ub = op.backward(None, A, x)
        hi = concretize(None, pair[1], x)[1] + ub
        torch.testing.assert_close(hi, iv.upper.flatten(1), rtol=0, atol=1e-12)


def test_amax_refines_exactly_the_groups_without_a_dominating_element():
    x = Interval(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], dtype=DT),
                 torch.tensor([[[2.0, 3.0], [0.5, 4.0]]], dtype=DT))
    op = _op(Amax, ((2, 2),), (2,), [1], False)  # rows: [0, 2] vs [1, 3]; [0, .5] vs [1, 4]
    mask = op.refine_mask(0, x)
    assert mask.tolist() == [[[True, True], [False, False]]]


def test_bilinear_ops_are_exported_with_their_kinds():
    assert [c.kind for c in BILINEAR_OPS] == ["matmul", "maximum", "minimum", "amax", "amin"]
