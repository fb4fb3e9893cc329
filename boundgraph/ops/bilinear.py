"""Ops on two bounded operands: matrix products and elementwise / reduced maxima and minima.

``matmul``
    ``torch.matmul`` of two tensors of per-sample rank >= 2 (batched matrix products ``bmm``
    included: ``torch.bmm`` of batch-first 3-d tensors is the product of per-sample 2-d
    matrices, the same op). With one constant operand it is an exact affine map; with two
    bounded operands each product ``a_ij * b_jk`` is relaxed by McCormick (1976) planes, summed
    over ``j`` by matrix products (no ``(I, J, K)`` tensor is formed).
``maximum``, ``minimum``
    elementwise ``torch.maximum`` / ``torch.minimum`` of two tensors (either may be constant):
    ``max(a, b) = b + relu(a - b)`` relaxed like a ReLU.
``amax``, ``amin``
    ``torch.amax`` / ``torch.amin`` over per-sample dims (and the values of ``torch.max(x,
    dim)``): the relaxation of :class:`~boundgraph.ops.pooling.MaxPool2d` over one group of
    elements instead of a window.

McCormick, G. P. (1976). Computability of global solutions to factorable nonconvex programs:
Part I -- Convex underestimating problems. Mathematical Programming 10, 147-175.
"""
from __future__ import annotations

import math

import torch

from .activations import RELU_LOWER
from .base import (Interval, Op, _both, _rowdot, bias_term, by_side, is_bounded, sample_view,
                   unbroadcast)


def _mT(t):
    return t.transpose(-1, -2)


def _lift(t, rank):
    """A batch-first tensor ``(B, *s)`` with per-sample rank raised to ``rank`` by inserting
    dims of size 1 after the batch dimension (per-sample broadcasting from the right)."""
    extra = rank - (t.dim() - 1)
    if extra <= 0:
        return t
    return t.reshape(t.shape[0], *([1] * extra), *t.shape[1:])


def _each(fn, lA, uA):
    """``(fn(lA), fn(uA))``, once when they are one tensor (``fn`` may depend on the batch,
    unlike the maps of :func:`~boundgraph.ops.base._both`)."""
    nl = None if lA is None else fn(lA)
    nu = None if uA is None else (nl if uA is lA else fn(uA))
    return nl, nu


def _rowsum(t):
    """``(B, S, ...) -> (B, S)``."""
    return t.reshape(*t.shape[:2], -1).sum(-1)


def _const(v, ndim, like):
    """A constant operand as a tensor broadcasting against a per-sample tensor of ``ndim``
    dims, in the dtype and on the device of ``like``."""
    if not torch.is_tensor(v):
        return torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return sample_view(v, ndim).to(dtype=like.dtype, device=like.device)


# ------------------------------------------------------------------------------- matmul
#: ``opts["matmul_planes"]``: which McCormick planes the product of two bounded operands uses.
MATMUL_PLANES = ("adaptive", "fixed")


class MatMul(Op):
    """``torch.matmul(a, b)``: ``(B, *La, I, J) @ (B, *Lb, J, K) -> (B, *L, I, K)`` with the
    leading per-sample dims ``La``, ``Lb`` broadcasting (heads of attention: ``(H, L, d) @
    (H, d, L)``). A constant operand has no batch dimension, or one of size 1, and broadcasts
    from the right as in torch. ``torch.bmm`` is this op on per-sample matrices.

    One constant operand ``W`` (exact, an affine map):

    - IBP in center/radius form: ``x @ W`` is ``(c @ W, r @ |W|)``, ``W @ x`` is
      ``(W @ c, |W| @ r)``: the exact range of each output over the box;
    - backward: ``A -> A @ W^T`` for ``x @ W`` and ``A -> W^T @ A`` for ``W @ x``, summed over
      the dims along which ``x`` was broadcast.

    Two bounded operands ``a in [la, ua]``, ``b in [lb, ub]`` (centers ``ac, bc``, radii
    ``ar, br``):

    - IBP, the interval matrix product in center/radius form: ``ac @ bc +/- (|ac| @ br +
      ar @ (|bc| + br))``. Sound (``|a b - ac bc| <= |ac| |b - bc| + |a - ac| |bc| +
      |a - ac| |b - bc|`` per term), exact when either operand has zero width, but it may be
      wider than the exact range of the product when both are wide (each term's range is
      attained at a corner of the box, the bound adds the widest deviations).
    - backward, McCormick (1976) planes for each product ``a_ij b_jk``. The pair of planes
      exact on the face ``a_ij = la_ij`` (``(a - la)(b - lb) >= 0``, ``(a - la)(ub - b) >= 0``)::

          a b >= lb a + la b - la lb          a b <= ub a + la b - la ub

      or the pair exact on ``a_ij = ua_ij`` (``(ua - a)(ub - b) >= 0``,
      ``(ua - a)(b - lb) >= 0``)::

          a b >= ub a + ua b - ua ub          a b <= lb a + ua b - ua lb

      Each pair gives ``b`` the slope ``t_ij`` (``la_ij`` or ``ua_ij``) in both planes, so with
      one choice per element of ``a`` (shared by all ``k`` and all rows) the step is three
      matrix products. For coefficients ``Lam`` (``(..., I, K)``) of the lower bound, with
      ``s_ij = +1`` for the first pair and ``-1`` for the second::

          coefficient on a:  Lam @ bc^T - s * (|Lam| @ br^T)
          coefficient on b:  t^T @ Lam
          bias:              -sum(Lam * (t @ bc)) + sum(|Lam| * ((s t) @ br))

      (positive entries of ``Lam`` take the lower plane, negative ones the upper plane; for
      the upper bound the signs of the ``s`` terms flip). Which pair: ``opts["matmul_planes"]``

      ``"adaptive"`` (default)
          the pair whose slope for ``b`` is the end of ``a_ij``'s interval nearer to 0
          (the second pair where ``ac_ij < 0``), at no extra cost. Neither pair is better
          everywhere: both lower planes equal ``ac bc - ar br`` at the center (both upper
          ones ``ac bc + ar br``), so they have the same mean over the box, and which is tighter
          depends on where the final bound is attained. But the gap between the two planes of
          a pair is ``|a - t| (ub - lb)`` and ``b``'s coefficients ``t^T @ Lam`` carry ``b``'s
          width into the bound, so a small ``|t|`` tends to help: bounded on the box directly
          (``a``, ``b`` independent) the bound is ``sum_ij [p ac - (|p - s q| + q) ar] -
          sum_jk |(t^T Lam)_jk| br_jk`` with ``p = Lam @ bc^T``, ``q = |Lam| @ br^T``, whose
          ``b`` part only depends on ``t``. On random operands (independent, or both affine in
          one input box) it gave narrower bounds than ``"fixed"`` on average in every sign
          pattern tried, by up to a third where ``a`` is mostly negative; through a small
          random attention block (CROWN) 3-18 % narrower at small and medium radii, within
          +-5 % either way at large ones. It is the fixed
          choice wherever ``ac >= 0`` (attention probabilities or ReLU outputs as ``a``), and
          for ``ac < 0`` everywhere it is the fixed choice for ``(-a) @ (-b)``.
      ``"fixed"``
          always the first pair, the planes of :class:`~boundgraph.ops.arithmetic.Mul`.

      Either choice is exact when ``a`` or ``b`` has zero width (the planes then coincide
      with the product). A choice per ``(i, j, k)`` would need an ``(S, I, J, K)`` tensor.
    """

    kind = "matmul"

    def __init__(self, stochastic_rows: bool = False):
        """``stochastic_rows``: the rows of ``a`` are probability vectors (``a`` is a softmax
        over its last dim, as attention weights are), so each output ``sum_j a_ij b_jk`` is a
        convex combination of ``b``'s column and lies between ``min_j b_jk`` and
        ``max_j b_jk``; the interval rule intersects with that hull, which is far tighter than
        the interval product when ``a`` is wide (IBP through attention)."""
        super().__init__(**({"stochastic_rows": True} if stochastic_rows else {}))
        self.stochastic_rows = stochastic_rows

    def forward(self, a, b):
        return torch.matmul(a, b)

    def interval(self, a, b):
        iv = self._interval(a, b)
        if not self.stochastic_rows:
            return iv
        if is_bounded(b):
            lo, hi = b.lower.amin(-2, keepdim=True), b.upper.amax(-2, keepdim=True)
        else:
            W = _const(b, a.lower.dim() - 1, a.center)
            lo, hi = W.amin(-2, keepdim=True), W.amax(-2, keepdim=True)
        return Interval(torch.maximum(iv.lower, lo), torch.minimum(iv.upper, hi))

    def needs_bounds(self, index):
        return all(self.bounded_inputs)  # only the product of two bounded operands uses them

    # shapes ---------------------------------------------------------------------------
    def _rank(self, *bounded):
        if self.out_shape is not None:
            return len(self.out_shape)
        return max(v.lower.dim() - 1 for v in bounded)

    # IBP -------------------------------------------------------------------------------
    def _interval(self, a, b):
        if is_bounded(a) and is_bounded(b):
            r = self._rank(a, b)
            ac, ar = _lift(a.center, r), _lift(a.radius, r)
            bc, br = _lift(b.center, r), _lift(b.radius, r)
            mid = torch.matmul(ac, bc)
            rad = torch.matmul(ac.abs(), br) + torch.matmul(ar, bc.abs() + br)
            return Interval.from_center(mid, rad)
        if is_bounded(a):
            W = _const(b, a.lower.dim() - 1, a.center)
            return Interval.from_center(torch.matmul(a.center, W), torch.matmul(a.radius, W.abs()))
        if is_bounded(b):
            W = _const(a, b.lower.dim() - 1, b.center)
            return Interval.from_center(torch.matmul(W, b.center), torch.matmul(W.abs(), b.radius))
        raise ValueError("matmul of two constants has no bound rule")

    # backward ------------------------------------------------------------------------------
    def backward(self, lA, uA, a, b, opts=None):
        if is_bounded(a) and is_bounded(b):
            return self._mccormick(lA, uA, a, b, opts or {})
        if is_bounded(a):  # x @ W: A -> A @ W^T
            WT = _mT(_const(b, a.lower.dim() - 1, a.lower))
            shape = self.in_shapes[0]
            nl, nu = _both(lambda A: unbroadcast(torch.matmul(A, WT), shape), lA, uA)
            return [(nl, nu), None], 0.0, 0.0
        WT = _mT(_const(a, b.lower.dim() - 1, b.lower))  # W @ x: A -> W^T @ A
        shape = self.in_shapes[1]
        nl, nu = _both(lambda A: unbroadcast(torch.matmul(WT, A), shape), lA, uA)
        return [None, (nl, nu)], 0.0, 0.0

    def _mccormick(self, lA, uA, a, b, opts):
        mode = opts.get("matmul_planes", "adaptive")
        if mode not in MATMUL_PLANES:
            raise ValueError(f"matmul_planes must be one of {MATMUL_PLANES}, got {mode!r}")
        r = self._rank(a, b)
        la, ua = _lift(a.lower, r), _lift(a.upper, r)
        bc, br = _lift(b.center, r), _lift(b.radius, r)
        if mode == "fixed":
            t, st = la, la  # slope of b, and s * t
            s = None  # s = +1 everywhere
        else:
            second = (la + ua) < 0  # the pair exact on a = ua
            t = torch.where(second, ua, la)
            st = torch.where(second, -ua, la)
            s = 1.0 - 2.0 * second.to(la.dtype)
        # per-sample leading dims may broadcast; put a row axis after the batch axis
        t1, bcT, brT = t.unsqueeze(1), _mT(bc).unsqueeze(1), _mT(br).unsqueeze(1)
        s1 = None if s is None else s.unsqueeze(1)
        P = torch.matmul(t, bc)  # (B, *L, I, K) bias parts
        Q = torch.matmul(st, br)
        shape_a, shape_b = self.in_shapes[0], self.in_shapes[1]

        # coefficient on b: t^T @ A, the same map for both sides
        nl_b, nu_b = _each(lambda A: unbroadcast(torch.matmul(_mT(t1), A), shape_b), lA, uA)

        def parts(A):  # the shares of the two sides: A @ bc^T, s * (|A| @ br^T), biases
            absA = A.abs()
            rad = torch.matmul(absA, brT)
            return (torch.matmul(A, bcT), rad if s1 is None else rad * s1,
                    -_rowdot(A, P), _rowdot(absA, Q))

        nl_a = nu_a = None
        lb = ub = 0.0
        if lA is not None:  # positive coefficients take the lower plane
            mid, rad, bias, dq = parts(lA)
            nl_a, lb = unbroadcast(mid - rad, shape_a), bias + dq
        if uA is not None:  # positive coefficients take the upper plane
            if uA is not lA:
                mid, rad, bias, dq = parts(uA)
            nu_a, ub = unbroadcast(mid + rad, shape_a), bias - dq
        return [(nl_a, nu_a), (nl_b, nu_b)], lb, ub


# ------------------------------------------------------------------- maximum / minimum
def _lower_mix(mode, la, ua, lb, ub, chord):
    """Weight ``w`` of ``a`` in the lower line ``w a + (1 - w) b`` of ``max(a, b)`` where
    neither operand dominates (any ``w`` in ``[0, 1]`` is valid: ``max(a, b) >= a, b``)."""
    if mode not in RELU_LOWER:
        raise ValueError(f"relu_lower must be one of {RELU_LOWER}, got {mode!r}")
    if mode == "adaptive":  # the operand of larger midpoint (CROWN's ReLU choice for a - b)
        return ((la + ua) >= (lb + ub)).to(la.dtype)
    if mode == "one":
        return torch.ones_like(chord)
    if mode == "zero":
        return torch.zeros_like(chord)
    return chord


def _max_lines(la, ua, lb, ub, opts):
    """Lines ``wa a + wb b + c`` below and above ``max(a, b)`` on the box (tensors of the
    broadcast shape): ``(lower, upper)``, each ``(wa, wb, c)``."""
    la, ua, lb, ub = torch.broadcast_tensors(la, ua, lb, ub)
    ld, ud = la - ub, ua - lb  # range of d = a - b
    a_dom, b_dom = ld >= 0, ud <= 0
    cross = ~(a_dom | b_dom)
    den = torch.where(cross, ud - ld, torch.ones_like(ud))
    k = torch.where(cross, ud / den, a_dom.to(ud.dtype))  # chord slope of relu(d), 1 or 0
    # upper: b + relu(d) <= b + k (d - ld) on the crossing elements; exact elsewhere
    up = (k, 1 - k, torch.where(cross, -k * ld, torch.zeros_like(ld)))
    w = _lower_mix((opts or {}).get("relu_lower", "adaptive"), la, ua, lb, ub, k)
    w = torch.where(cross, w, a_dom.to(w.dtype))
    lo = (w, 1 - w, torch.zeros_like(w))
    return lo, up


def _apply_lines(A, first, second):
    """``A``'s positive entries through line ``first``, negative ones through ``second``
    (``(wa, wb, c)`` each, shaped ``(B, *out)``): ``(coef_a, coef_b, bias)``."""
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    fa, fb, fc = (v.unsqueeze(1) for v in first)
    sa, sb, sc = (v.unsqueeze(1) for v in second)
    coef_a = pos * fa + neg * sa
    coef_b = pos * fb + neg * sb
    bias = _rowsum(pos * fc + neg * sc)
    return coef_a, coef_b, bias


class Maximum(Op):
    """``torch.maximum(a, b)`` (broadcasting as torch; either operand may be constant).

    IBP: ``(max(la, lb), max(ua, ub))``, the exact range.

    Linear bounds per element, with ``d = a - b`` in ``[ld, ud] = [la - ub, ua - lb]``:

    - one operand dominates (``ld >= 0``: the output is ``a``; ``ud <= 0``: it is ``b``):
      both lines are that operand, exact;
    - otherwise ``max(a, b) = b + relu(d)``, relaxed like a ReLU: the upper line is ``b`` plus
      the chord of ``relu`` over ``[ld, ud]``, ``b + ud (d - ld) / (ud - ld)``; the lower line is
      ``w a + (1 - w) b`` (``b + w d``, valid for any ``w`` in ``[0, 1]``), ``w`` by
      ``opts["relu_lower"]``: ``"adaptive"`` (default) the operand of larger midpoint (CROWN's
      choice for ``relu(d)``: ``ud >= -ld``), ``"one"`` ``a``, ``"zero"`` ``b``, ``"parallel"``
      the chord's slope.

    A constant operand is an interval of zero width (``max(x, c)`` is a clamp from below);
    its share of the lines goes into the bias.
    """

    kind = "maximum"
    pointwise = True
    _sign = 1.0  # minimum: min(a, b) = -max(-a, -b)

    def forward(self, a, b):
        return torch.maximum(a, b)

    def needs_bounds(self, index):
        return True

    def _rank(self, like):
        return len(self.out_shape) if self.out_shape is not None else like.dim() - 1

    def _bounds(self, v, like):
        r = self._rank(like)
        if is_bounded(v):  # per-sample broadcasting from the right, behind the batch axis
            return _lift(v.lower, r), _lift(v.upper, r)
        c = _const(v, r, like)
        return c, c

    def _like(self, a, b):
        return (a if is_bounded(a) else b).lower

    def interval(self, a, b):
        like = self._like(a, b)
        (la, ua), (lb, ub) = self._bounds(a, like), self._bounds(b, like)
        f = torch.maximum if self._sign > 0 else torch.minimum
        return Interval(f(la, lb), f(ua, ub))

    def lines(self, a, b, opts=None):
        """Lines below and above the output on the box: ``(lower, upper)``, each
        ``(wa, wb, c)`` with ``wa a + wb b + c`` (tensors of the output's full shape)."""
        like = self._like(a, b)
        (la, ua), (lb, ub) = self._bounds(a, like), self._bounds(b, like)
        if self._sign > 0:
            return _max_lines(la, ua, lb, ub, opts)
        # min(a, b) = -max(-a, -b): max's upper line gives min's lower line and vice versa
        (wa, wb, c), (ka, kb, e) = _max_lines(-ua, -la, -ub, -lb, opts)
        return (ka, kb, -e), (wa, wb, -c)

    def backward(self, lA, uA, a, b, opts=None):
        lo, up = self.lines(a, b, opts)
        like = self._like(a, b)
        consts = [None if is_bounded(v) else _const(v, self._rank(like), like) for v in (a, b)]
        res = [[None, None], [None, None]]
        biases = [0.0, 0.0]
        for side, A in enumerate((lA, uA)):
            if A is None:
                continue
            first, second = (lo, up) if side == 0 else (up, lo)
            ca, cb, bias = _apply_lines(A, first, second)
            for i, coef in enumerate((ca, cb)):
                if consts[i] is None:
                    res[i][side] = unbroadcast(coef, self.in_shapes[i])
                else:
                    bias = bias + bias_term(coef, consts[i])
            biases[side] = bias
        per_input = [tuple(r) if is_bounded(v) else None for r, v in zip(res, (a, b))]
        return per_input, biases[0], biases[1]


class Minimum(Maximum):
    """``torch.minimum(a, b)``: :class:`Maximum` mirrored (``min(a, b) = -max(-a, -b)``).

    IBP ``(min(la, lb), min(ua, ub))``; exact where one operand lies below the other
    (``ua <= lb``: ``a``); otherwise the lower line is ``a`` minus the chord of
    ``relu(a - b)`` over ``[la - ub, ua - lb]`` and the upper line ``w a + (1 - w) b`` with
    ``w`` chosen as for :class:`Maximum` (adaptive: the operand of smaller midpoint).
    """

    kind = "minimum"
    _sign = -1.0

    def forward(self, a, b):
        return torch.minimum(a, b)


# ------------------------------------------------------------------------- amax / amin
class Amax(Op):
    """``torch.amax(x, dims, keepdim)`` over per-sample ``dims`` (also the values of
    ``torch.max(x, dim)``).

    IBP: ``(amax(l), amax(u))``, the exact range.

    Linear bounds, per group of reduced elements ``x_i`` in ``[l_i, u_i]`` (the relaxation of
    :class:`~boundgraph.ops.pooling.MaxPool2d` applied to one group):

    - lower: ``y >= x_j`` with ``j`` the element of largest lower bound (exact at ``x_j``;
      concretised on the box it is the IBP lower bound);
    - upper: with ``k`` the element of largest upper bound and ``u2`` the largest upper bound of
      the others, ``y <= x_k + max(0, u2 - l_k)`` (if the max is ``x_i != x_k`` then
      ``x_i <= u2 <= x_k + (u2 - l_k)``), or the constant ``y <= u_k``, whichever has the
      smaller mean over the box (``c_k + max(0, u2 - l_k)`` against ``u_k``).

    When one element dominates its group (``l_k >= u_i`` for every other ``i``) both lines are
    ``y = x_k``: exact.
    """

    kind = "amax"
    _sign = 1.0

    def __init__(self, dims=None, keepdim=False):
        if dims is None or isinstance(dims, int):
            dims = () if dims is None else (dims,)
        super().__init__(dims=tuple(int(d) for d in dims), keepdim=bool(keepdim))

    def _dims(self, ndim):
        """Reduced per-sample dims, non-negative and sorted (all dims if none are given)."""
        dims = self.attrs["dims"]
        if not dims:
            return tuple(range(ndim))
        return tuple(sorted({d % ndim for d in dims}))

    def forward(self, x):
        dims = [d + 1 for d in self._dims(x.dim() - 1)]
        f = torch.amax if self._sign > 0 else torch.amin
        return f(x, dim=dims, keepdim=self.attrs["keepdim"])

    def needs_bounds(self, index):
        return True

    def interval(self, x: Interval) -> Interval:
        return Interval(self.forward(x.lower), self.forward(x.upper))

    # groups ----------------------------------------------------------------------------
    def _layout(self, shape):
        """``(dims, kept, perm)`` for a per-sample shape: the reduced dims, the kept dims and
        the permutation of ``(B, *shape)`` putting the reduced dims last."""
        dims = self._dims(len(shape))
        kept = tuple(d for d in range(len(shape)) if d not in dims)
        perm = (0, *(d + 1 for d in kept), *(d + 1 for d in dims))
        return dims, kept, perm

    def _groups(self, t):
        """``(B, *shape) -> (B, *kept_sizes, N)``: the reduced elements of each group last."""
        shape = tuple(t.shape[1:])
        dims, kept, perm = self._layout(shape)
        return t.permute(perm).reshape(t.shape[0], *(shape[d] for d in kept), -1)

    def _lines(self, x: Interval):
        """Per group (in max form, i.e. on ``-x`` for amin): lower index ``j``; upper index
        ``k``, whether the upper bound is the line through ``x_k``, its constant term (``gap``
        for the line, ``u_k`` else) and ``gap`` (0 where ``x_k`` dominates). Shapes
        ``(B, *kept)``."""
        if self._sign > 0:
            l, u = self._groups(x.lower), self._groups(x.upper)
        else:
            l, u = self._groups(-x.upper), self._groups(-x.lower)
        j = l.argmax(-1)
        if u.shape[-1] >= 2:
            top = u.topk(2, dim=-1)
            k, u1, u2 = top.indices[..., 0], top.values[..., 0], top.values[..., 1]
        else:
            k, u1 = u.argmax(-1), u[..., 0]
            u2 = None
        lk = l.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        gap = torch.zeros_like(lk) if u2 is None else (u2 - lk).clamp(min=0)
        use_line = (lk + u1) / 2 + gap < u1
        j = torch.where(gap == 0, k, j)  # a dominating element: both lines use it
        return j, k, use_line, torch.where(use_line, gap, u1), gap

    def backward(self, lA, uA, x: Interval, opts=None):
        shape = tuple(self.in_shapes[0])
        dims, kept, perm = self._layout(shape)
        n = math.prod(shape[d] for d in dims)
        kept_sizes = tuple(shape[d] for d in kept)
        j, k, use_line, up_bias, _ = self._lines(x)
        s = self._sign
        oh_j = torch.nn.functional.one_hot(j, n).to(x.lower.dtype).unsqueeze(1)
        oh_k = (torch.nn.functional.one_hot(k, n).to(x.lower.dtype)
                * use_line.to(x.lower.dtype).unsqueeze(-1)).unsqueeze(1)
        up_bias = up_bias.unsqueeze(1)
        inv = [0] * len(perm)
        for pos, p in enumerate(perm):
            inv[p] = pos
        inv = (0, 1, *(p + 1 for p in inv[1:]))

        def ungroup(C):  # (B, S, *kept, n) -> (B, S, *shape)
            C = C.reshape(*C.shape[:2], *kept_sizes, *(shape[d] for d in dims))
            return C.permute(inv)

        def side(A, lower):
            A = A.reshape(*A.shape[:2], *kept_sizes)  # drop keepdim's dims of size 1
            # max form: positive coefficients of a lower bound take y >= x_j, negative ones
            # y <= line; for amin (y = -max(-x)) the roles swap
            take_j, take_k = A.clamp(min=0), A.clamp(max=0)
            if (lower and s < 0) or (not lower and s > 0):
                take_j, take_k = take_k, take_j
            coef = take_j.unsqueeze(-1) * oh_j + take_k.unsqueeze(-1) * oh_k
            bias = s * _rowsum(take_k * up_bias)
            return ungroup(coef), bias

        return by_side(side, lA, uA)

    def refine_mask(self, index, bound: Interval):
        """Elements of groups without a dominating element (where the relaxation is loose)."""
        loose = self._lines(bound)[4] > 0
        shape = tuple(bound.lower.shape[1:])
        dims, kept, perm = self._layout(shape)
        n = math.prod(shape[d] for d in dims)
        full = loose.unsqueeze(-1).expand(*loose.shape, n)
        full = full.reshape(loose.shape[0], *loose.shape[1:], *(shape[d] for d in dims))
        inv = [0] * len(perm)
        for pos, p in enumerate(perm):
            inv[p] = pos
        return full.permute(inv)


class Amin(Amax):
    """``torch.amin(x, dims, keepdim)``: :class:`Amax` mirrored (``min(x) = -max(-x)``):
    upper ``y <= x_j`` with ``j`` the element of smallest upper bound; lower
    ``y >= x_k - max(0, u_k - l2)`` (``k`` of smallest lower bound, ``l2`` the smallest lower
    bound of the others) or the constant ``l_k``, whichever has the larger mean."""

    kind = "amin"
    _sign = -1.0


BILINEAR_OPS = (MatMul, Maximum, Minimum, Amax, Amin)

__all__ = ["MatMul", "Maximum", "Minimum", "Amax", "Amin", "BILINEAR_OPS", "MATMUL_PLANES"]
