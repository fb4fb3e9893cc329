"""Normalisation ops: centring (LayerNorm's first step), softmax and log-softmax.

``center``
    ``y = x - mean(x, dims)``, one :class:`~boundgraph.ops.base.Affine` map ``W = I - J / n``
    per group of ``n`` averaged elements, so its IBP is exact (written as ``x - mean(x)``, two
    ops, IBP loses the correlation between ``x`` and its mean). ``W`` is symmetric:
    ``A W = A - mean(A)`` over the same dims, and ``|W| r = r (1 - 2/n) + mean(r)``
    (``|W|`` has ``1 - 1/n`` on the diagonal and ``1/n`` elsewhere; ``n = 1`` gives ``y = 0``
    and ``|W| r = 0``).

``softmax`` and ``log_softmax`` along a per-sample ``dim`` are written, per output element
``i`` of a row of ``n``, as ``y_i = g(s_i)`` with ``s_i = sum_j exp(d_ij)``, ``d_ij = x_j - x_i``
and ``g(s) = 1 / s`` (softmax) or ``g(s) = -log(s)`` (log-softmax). ``d_ii = 0`` exactly, so
``s_i >= 1``. The decomposition of softmax into exponentials, a sum and a reciprocal follows
Shi et al. 2020 (Robustness verification for Transformers) and Bonaert et al. 2021 (DeepT);
the form ``1 / sum_j exp(x_j - x_i)`` keeps the diagonal term exact.

IBP
    the exact range of each entry: ``y_i`` increases with ``x_i`` and decreases with every
    other ``x_j``, so ``y_i`` lies between ``G(l_i - lse_{j!=i} u_j)`` and
    ``G(u_i - lse_{j!=i} l_j)`` with ``G`` the logistic sigmoid (softmax) or its log
    (log-softmax). The log-sum-exp over the other entries comes from prefix and suffix
    ``logcumsumexp`` (``O(n)`` memory, no overflow for any finite interval); everything is
    evaluated in float64 and widened by a margin covering that evaluation and the cast back,
    then clipped to ``[0, 1]`` (resp. ``(-inf, 0]``).

backward
    the chain ``x -> d -> e = exp(d) -> s -> y`` in one step, every relaxation in float64:
    ``d_ij`` lies in ``[l_j - u_i, u_j - l_i]`` (0 on the diagonal), ``e_ij`` in the exp of that,
    ``s_i`` in ``[sum_j exp(l_j - u_i), sum_j exp(u_j - l_i)]`` (exactly the reciprocals of
    the IBP bounds of softmax). Both ``exp`` and ``g`` are convex, so each has its chord above
    and a tangent below. For the lower bound with coefficients ``L`` on ``y``: ``L_i >= 0``
    takes ``g``'s tangent, ``L_i < 0`` its chord, giving ``mu_i`` on ``s_i`` (``g`` decreases,
    so ``mu_i`` has the sign opposite to ``L_i``); each ``e_ij`` then takes the exp tangent if
    ``mu_i >= 0`` else the chord, giving ``nu_ij`` on ``d_ij``; ``x_k`` receives
    ``sum_i nu_ik - sum_j nu_kj``. The upper bound mirrors this. The ``(n, n)`` line tensors
    are per example and row, never per coefficient row: ``sum_i nu_ik`` is one batched matrix
    product.

    Tangent points: at the ends where the chain attains the extremes, ``s = su`` for ``g``
    (where ``y_i`` is smallest) and ``d = dl`` for ``exp`` (where ``e_ij`` is smallest). By area
    the midpoint tangent is best for any convex ``f`` (the integral of a tangent line over
    ``[a, b]`` is ``(b - a)`` times its value at the midpoint ``m``, at most ``f(m)``, equal only
    for the tangent at ``m``), and the tangent parallel to the chord (``s = sqrt(sl su)``) is
    worse; but the bound after concretisation is what counts, and there the ends win: a single
    entry's bounds (an identity specification) come out equal to its exact IBP range (the
    tangent at ``su`` is at least ``1 / su`` on ``[sl, su]``, the tangent at ``dl`` at least
    ``exp(dl)``), where the midpoint tangents give up to 23% wider bounds; on random
    specifications over 2 to 17 entries and widths 0.1 to 20 the ends gave 0 to 15% narrower
    bounds than the midpoints, and the tangents parallel to the chords were worst (up to 2.8
    times the ends' width).

    Not exploited: log-softmax differences ``y_i - y_j = x_i - x_j`` are affine, but the chain
    relaxes each entry on its own, so their bounds are not exact.

    Soundness in floating point: line intercepts are moved outward by a margin covering their
    float64 evaluation, the intervals of ``d`` and ``s`` are widened by their rounding, and the
    float64 coefficients are cast to the input's dtype with the bias corrected by the exact
    extreme of the rounding difference over the box (then the bias is rounded outward), so the
    returned bound holds for every point of the box when evaluated exactly.

    Overflow: an entry ``i`` whose row has ``u_j - l_i > 200`` for some ``j`` (``exp`` beyond
    ``e^200``, where its products would leave float64's range), or whose lines come out
    non-finite, is relaxed by the constant lines of its IBP interval instead (``y_i`` has a
    lower bound below ``e^-200`` there, i.e. the row is far too wide for a linear relaxation to
    matter). No output is ever inf or NaN for finite input bounds.

    Memory: ``(B, rows, n, n)`` float64 tensors for the lines (fine for ``n`` up to a few hundred).
"""
from __future__ import annotations

import math

import torch

from .base import Affine, Interval, Op

_EPS64 = torch.finfo(torch.float64).eps
_TINY64 = torch.finfo(torch.float64).tiny
#: exp arguments above which an entry falls back to its IBP lines (see the module docstring)
_EXP_MAX = 200.0
#: relative margin of a line's intercept (in units of ``|b| + |a| * max|x|``): float64 lines
_LINE_MARGIN = 64 * _EPS64


def _per_sample_dim(dim: int, nd: int) -> int:
    if not -nd <= dim < nd:
        raise ValueError(f"dim {dim} out of range for a per-sample shape of {nd} dims")
    return dim % nd


# ------------------------------------------------------------------------------- center
class Center(Affine):
    """``y = x - x.mean(dims, keepdim=True)`` over per-sample ``dims``: one affine map, exact
    IBP (module docstring)."""

    kind = "center"

    def __init__(self, dims):
        dims = tuple(int(d) for d in (dims if isinstance(dims, (list, tuple)) else (dims,)))
        if not dims:
            raise ValueError("center needs at least one dim to average over")
        super().__init__(dims=dims)

    def _dims(self, t, lead):
        """The averaged dims as dims of ``t`` (``lead`` leading dims before the sample's)."""
        nd = t.dim() - lead
        return sorted({lead + _per_sample_dim(d, nd) for d in self.attrs["dims"]})

    def apply(self, x, absolute=False):
        dims = self._dims(x, 1)
        if not absolute:
            return x - x.mean(dims, keepdim=True)
        n = math.prod(x.shape[d] for d in dims)
        return x * (1.0 - 2.0 / n) + x.mean(dims, keepdim=True)

    def transpose(self, A):
        return A - A.mean(self._dims(A, 2), keepdim=True)


# -------------------------------------------------------------------------- softmax chain
def _lse_others(v):
    """``lse_{j != i} v_j`` along the last dim (``-inf`` for rows of one), ``O(n)`` memory."""
    ninf = torch.full_like(v[..., :1], -math.inf)
    if v.shape[-1] == 1:
        return ninf
    pre = torch.logcumsumexp(v, -1)[..., :-1]
    suf = torch.logcumsumexp(v.flip(-1), -1).flip(-1)[..., 1:]
    return torch.logaddexp(torch.cat([ninf, pre], -1), torch.cat([suf, ninf], -1))


def _outward(aL, bL, aU, bU, xmax):
    """Move the intercepts of float64 lines outward by their evaluation error."""
    mL = _LINE_MARGIN * (_TINY64 + bL.abs() + aL.abs() * xmax)
    mU = _LINE_MARGIN * (_TINY64 + bU.abs() + aU.abs() * xmax)
    return aL, bL - mL.detach(), aU, bU + mU.detach()


def _round_down(b, dtype):
    """``b`` (float64) in ``dtype``, never above ``b``."""
    if dtype == torch.float64:
        return b
    f = torch.finfo(dtype)
    return (b - (b.abs() * f.eps + f.tiny).detach()).to(dtype)


def _round_up(b, dtype):
    if dtype == torch.float64:
        return b
    f = torch.finfo(dtype)
    return (b + (b.abs() * f.eps + f.tiny).detach()).to(dtype)


class _SoftmaxChain(Op):
    """Shared rules of softmax and log-softmax: ``y_i = g(s_i)``, ``s_i = sum_j exp(x_j - x_i)``
    (module docstring). Subclasses give ``G`` (``y_i`` as a function of
    ``x_i - lse_{j!=i} x_j``), the IBP margins and ``g``'s lines."""

    #: tangent points of ``g`` and of ``exp``: "end" (the default: ``s = su``, ``d = dl``),
    #: "mid" (the midpoint, least area) or "parallel" (parallel to the chord); class attributes
    #: for experiments (module docstring)
    g_tangent = "end"
    exp_tangent = "end"

    def __init__(self, dim=-1):
        super().__init__(dim=int(dim))

    def needs_bounds(self, index: int) -> bool:
        return True

    def _dim(self, nd: int) -> int:
        return _per_sample_dim(self.attrs["dim"], nd)

    # subclass hooks ---------------------------------------------------------------------
    def G(self, z):
        raise NotImplementedError

    def _widen(self, lo, hi, dtype):
        """Float64 values of ``G`` (each within a few float64 rounding units of the truth)
        widened so that after the cast to ``dtype`` they still bound the truth."""
        raise NotImplementedError

    def g_lines(self, sl, su):
        """Float64 lines ``aL s + bL <= g(s) <= aU s + bU`` on ``[sl, su]`` (before margins)."""
        raise NotImplementedError

    # rows ---------------------------------------------------------------------------------
    def _rows(self, t, lead):
        """``t`` (``lead`` leading dims, then the sample) as ``(*lead, rows, n)`` and the
        information to undo it."""
        nd = t.dim() - lead
        d = lead + self._dim(nd)
        t = t.movedim(d, -1)
        moved = t.shape
        return t.reshape(*t.shape[:lead], -1, t.shape[-1]), (d, moved)

    @staticmethod
    def _unrows(t, info):
        d, moved = info
        return t.reshape(*t.shape[:-2], *moved[len(t.shape) - 2:]).movedim(-1, d)

    def _range64(self, l, u, dtype):
        """IBP in float64 on ``(B, rows, n)`` bounds: contains the exact range of each entry
        even after a cast to ``dtype``."""
        n = l.shape[-1]
        xmax = torch.maximum(l.abs(), u.abs()).amax(-1, keepdim=True)
        err = (16 * _EPS64 * (n + 2) * (1 + xmax)).detach()  # of x_i - lse, evaluated
        zl = l - _lse_others(u) - err
        zu = u - _lse_others(l) + err
        return self._widen(self.G(zl), self.G(zu), dtype)

    # rules --------------------------------------------------------------------------------
    def interval(self, x: Interval) -> Interval:
        dtype = x.lower.dtype
        l, info = self._rows(x.lower.double(), 1)
        u, _ = self._rows(x.upper.double(), 1)
        lo, hi = self._range64(l, u, dtype)
        return Interval(self._unrows(lo.to(dtype), info), self._unrows(hi.to(dtype), info))

    def _lines(self, l, u):
        """All float64 lines on ``(B, R, n)`` bounds: ``g``'s ``(B, R, n)`` and exp's
        ``(B, R, n, n)`` (``[..., i, j]`` for ``d_ij``), each ``(aL, bL, aU, bU)``."""
        n = l.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=l.device)
        # d_ij = x_j - x_i in [l_j - u_i, u_j - l_i], widened by the rounding of the difference
        dl = l.unsqueeze(-2) - u.unsqueeze(-1)
        du = u.unsqueeze(-2) - l.unsqueeze(-1)
        dl = (dl - _EPS64 * dl.abs()).masked_fill(eye, 0.0)
        du = (du + _EPS64 * du.abs()).masked_fill(eye, 0.0)
        fb = (du > _EXP_MAX).any(-1)  # entries relaxed by their IBP lines
        zero = torch.zeros((), dtype=l.dtype, device=l.device)
        dl = torch.where(fb.unsqueeze(-1), zero, dl)  # harmless values, multiplied by 0 below
        du = torch.where(fb.unsqueeze(-1), zero, du)
        xmax = torch.maximum(dl.abs(), du.abs())
        w = du - dl
        edl, edu = torch.exp(dl), torch.exp(du)
        pos = w > 0
        ratio = torch.where(pos, -torch.expm1(-w) / torch.where(pos, w, 1.0), 1.0)
        k = edu * ratio  # chord slope (e^du - e^dl) / w, stable for every width
        ebU = edu - k * du
        if self.exp_tangent == "end":
            t = dl
        elif self.exp_tangent == "parallel":
            t = du + torch.log(ratio)
        else:
            t = (dl + du) / 2
        et = torch.exp(t)
        eaL, ebL, eaU, ebU = _outward(et, et * (1 - t), k, ebU, xmax)
        # the diagonal is exactly e_ii = 1
        one = torch.ones((), dtype=l.dtype, device=l.device)
        eaL, eaU = eaL.masked_fill(eye, 0.0), eaU.masked_fill(eye, 0.0)
        ebL, ebU = torch.where(eye, one, ebL), torch.where(eye, one, ebU)
        # the range of s_i, widened by the rounding of exp and of the sum
        c = 4 * (n + 2) * _EPS64
        sl = edl.sum(-1) * (1 - c)
        su = edu.sum(-1) * (1 + c)
        aL, bL, aU, bU = _outward(*self.g_lines(sl, su), su)
        # fallback: the constant lines of the IBP interval
        bad = fb | ~torch.stack([torch.isfinite(v).all(-1) for v in (eaL, ebL, eaU, ebU)]
                                + [torch.isfinite(v) for v in (aL, bL, aU, bU)]).all(0)
        lo, hi = self._range64(l, u, torch.float64)
        aL, aU = torch.where(bad, zero, aL), torch.where(bad, zero, aU)
        bL, bU = torch.where(bad, lo, bL), torch.where(bad, hi, bU)
        badj = bad.unsqueeze(-1)
        eaL, ebL, eaU, ebU = (torch.where(badj, zero, v) for v in (eaL, ebL, eaU, ebU))
        return (aL, bL, aU, bU), (eaL, ebL, eaU, ebU)

    @staticmethod
    def _compose(A, glines, elines, lower):
        """Coefficients ``A`` (``(Ab, S, R, n)``, float64) through the chain: ``(C, bias)``
        with ``C`` ``(B, S, R, n)`` on ``x`` and ``bias`` ``(B, S)``."""
        aL, bL, aU, bU = (v.unsqueeze(1) for v in glines)
        eaL, ebL, eaU, ebU = elines
        if lower:  # positive coefficients take the lower line of g, negative the upper
            (ga_p, gb_p, ga_n, gb_n) = aL, bL, aU, bU
            (ea_p, eb_p, ea_n, eb_n) = eaL, ebL, eaU, ebU
        else:
            (ga_p, gb_p, ga_n, gb_n) = aU, bU, aL, bL
            (ea_p, eb_p, ea_n, eb_n) = eaU, ebU, eaL, ebL
        Ap, An = A.clamp(min=0), A.clamp(max=0)
        mu = Ap * ga_p + An * ga_n  # (B, S, R, n): coefficients of s
        bias = (Ap * gb_p + An * gb_n).sum((2, 3))
        mp, mn = mu.clamp(min=0), mu.clamp(max=0)
        # nu_ij = mp_i ea_p_ij + mn_i ea_n_ij on d_ij = x_j - x_i
        col = torch.einsum("bsri,brij->bsrj", mp, ea_p) + torch.einsum("bsri,brij->bsrj", mn,
                                                                        ea_n)
        row = mp * ea_p.sum(-1).unsqueeze(1) + mn * ea_n.sum(-1).unsqueeze(1)
        bias = bias + (mp * eb_p.sum(-1).unsqueeze(1) + mn * eb_n.sum(-1).unsqueeze(1)).sum((2, 3))
        return col - row, bias

    def backward(self, lA, uA, x: Interval, opts=None):
        dtype = x.lower.dtype
        l0, u0 = x.lower.double(), x.upper.double()
        l, info = self._rows(l0, 1)
        u, _ = self._rows(u0, 1)
        glines, elines = self._lines(l, u)

        def side(A, lower):
            out_dtype = A.dtype
            A64, ainfo = self._rows(A.double(), 2)
            C64, b64 = self._compose(A64, glines, elines, lower)
            C64 = self._unrows(C64, ainfo)
            if out_dtype == torch.float64:
                return C64, b64
            C = C64.to(out_dtype)
            # sum(C64 x) = sum(C x) + sum(diff x): put the extreme of sum(diff x) over the box
            # into the bias, so the cast costs no soundness
            diff = (C64 - C.double()).detach()
            lo, hi = l0.unsqueeze(1), u0.unsqueeze(1)
            if lower:
                corr = (diff.clamp(min=0) * lo + diff.clamp(max=0) * hi).flatten(2).sum(-1)
                return C, _round_down(b64 + corr, out_dtype)
            corr = (diff.clamp(min=0) * hi + diff.clamp(max=0) * lo).flatten(2).sum(-1)
            return C, _round_up(b64 + corr, out_dtype)

        nl, lb = side(lA, True) if lA is not None else (None, 0.0)
        nu, ub = side(uA, False) if uA is not None else (None, 0.0)
        return [(nl, nu)], lb, ub


class Softmax(_SoftmaxChain):
    """``softmax(x, dim)``; ``g(s) = 1 / s``: chord ``(sl + su - s) / (sl su)`` above, the
    tangent ``2 / t - s / t^2`` below. Rules: module docstring."""

    kind = "softmax"

    def forward(self, x):
        return torch.softmax(x, 1 + self._dim(x.dim() - 1))

    def G(self, z):
        return torch.sigmoid(z)

    def _widen(self, lo, hi, dtype):
        # sigmoid: a few float64 units of relative error; the cast: half a unit of dtype
        c = max(torch.finfo(dtype).eps, 4 * _EPS64)
        tiny = torch.finfo(dtype).tiny
        lo = (lo * (1 - c) - tiny).clamp(min=0.0)
        hi = (hi * (1 + c) + tiny).clamp(max=1.0)
        return lo, hi

    def g_lines(self, sl, su):
        aU = -1.0 / (sl * su)
        bU = 1.0 / sl + 1.0 / su
        if self.g_tangent == "end":
            t = su
        elif self.g_tangent == "parallel":
            t = torch.sqrt(sl) * torch.sqrt(su)
        else:
            t = (sl + su) / 2
        return -1.0 / (t * t), 2.0 / t, aU, bU


class LogSoftmax(_SoftmaxChain):
    """``log_softmax(x, dim)``; ``g(s) = -log(s)`` (convex, decreasing): chord above, the
    tangent ``1 - log(t) - s / t`` below. Rules: module docstring."""

    kind = "log_softmax"

    def forward(self, x):
        return torch.log_softmax(x, 1 + self._dim(x.dim() - 1))

    def G(self, z):
        return torch.nn.functional.logsigmoid(z)

    def _widen(self, lo, hi, dtype):
        # logsigmoid is evaluated to a few float64 units relative; values are <= 0
        c = max(torch.finfo(dtype).eps, 4 * _EPS64)
        tiny = torch.finfo(dtype).tiny
        lo = lo * (1 + c) - tiny
        hi = (hi * (1 - c) + tiny).clamp(max=0.0)
        return lo, hi

    def g_lines(self, sl, su):
        w = su - sl
        pos = w > 0
        # chord slope -(log su - log sl) / (su - sl), stable for narrow intervals
        aU = -torch.where(pos, torch.log1p(w / sl) / torch.where(pos, w, 1.0), 1.0 / sl)
        bU = -torch.log(sl) - aU * sl
        if self.g_tangent == "end":
            t = su
        elif self.g_tangent == "parallel":
            t = -1.0 / aU
        else:
            t = (sl + su) / 2
        return -1.0 / t, 1.0 - torch.log(t), aU, bU


NORMALIZATION_OPS = (Center, Softmax, LogSoftmax)
