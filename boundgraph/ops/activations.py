"""Piecewise-linear activations, each defined by its forward and its linear relaxation.

Every rule here returns lines ``aL*x + bL <= f(x) <= aU*x + bU`` that hold for *all* ``x`` in
``[l, u]`` (the shared :class:`~boundgraph.ops.base.Elementwise` step turns them into ``backward``);
non-monotone ops also give their exact range on ``[l, u]`` as ``interval``.

Piecewise-linear ops (ReLU, LeakyReLU, Abs, Clamp/Hardtanh) are relaxed exactly where an
element does not cross a kink; across one convex kink the upper line is the chord and the lower
line passes through the kink with a slope chosen by ``opts["relu_lower"]``:

``"adaptive"`` (default)
    the slope of the longer side (ReLU: ``alpha = 1`` if ``u >= -l`` else ``0``; CROWN's choice,
    minimising the relaxation area);
``"zero"`` / ``"one"``
    the left / right slope (ReLU: 0 or 1);
``"parallel"``
    the chord's slope (Fast-Lin / DeepPoly style).

The smooth activations (Sigmoid, Tanh, Softplus, GELU, SiLU, ELU) are in
:mod:`boundgraph.ops.smooth_activations`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Elementwise, Interval, pair_buffer

RELU_LOWER = ("adaptive", "zero", "one", "parallel")


# --------------------------------------------------------------------------- shared numerics
def _mode(opts) -> str:
    mode = (opts or {}).get("relu_lower", "adaptive")
    if mode not in RELU_LOWER:
        raise ValueError(f"relu_lower must be one of {RELU_LOWER}, got {mode!r}")
    return mode


def _kink_slope(mode, l, u, c, left, right, chord):
    """Slope of the line through a kink at ``c`` (between slopes ``left`` and ``right``)."""
    if mode == "adaptive":
        return torch.where(u - c >= c - l, right, left)
    if mode == "zero":
        return left
    if mode == "one":
        return right
    return chord


def _range_with_kink(f, x: Interval, c: float) -> Interval:
    """Exact range of ``f`` on ``[l, u]`` when ``f`` is monotone on each side of ``c``."""
    l, u = x.lower, x.upper
    vals = torch.stack([f(l), f(u), f(torch.clamp(torch.full_like(l, c), l, u))])
    return Interval(vals.amin(0), vals.amax(0))


def _two_piece(l, u, c, fc, left, right, mode):
    """Lines for ``f(x) = fc + left*(x-c)`` (``x < c``), ``fc + right*(x-c)`` (``x >= c``)."""
    one = torch.ones_like(l)
    sl, sr = left * one, right * one
    f = lambda x: fc + torch.where(x < c, sl, sr) * (x - c)  # noqa: E731
    unstable = (l < c) & (u > c)
    width = torch.where(unstable, u - l, one)
    chord = (f(u) - f(l)) / width
    chord_b = f(l) - chord * l
    kink = _kink_slope(mode, l, u, c, sl, sr, chord)
    kink_b = fc - kink * c
    stable_a = torch.where(u <= c, sl, sr)
    stable_b = fc - stable_a * c
    if left <= right:  # convex kink: lower through the kink, upper chord
        lo_a, lo_b, up_a, up_b = kink, kink_b, chord, chord_b
    else:
        lo_a, lo_b, up_a, up_b = chord, chord_b, kink, kink_b
    pick = lambda a, b: torch.where(unstable, a, b)  # noqa: E731
    return pick(lo_a, stable_a), pick(lo_b, stable_b), pick(up_a, stable_a), pick(up_b, stable_b)


# --------------------------------------------------------------------------- piecewise linear
class ReLU(Elementwise):
    """``max(x, 0)``; relaxation: ``aL x <= relu(x) <= u (x - l) / (u - l)`` when unstable."""

    split_points = (0.0,)

    exact_interval = True

    kind = "relu"

    def forward(self, x):
        return F.relu(x)

    def refine_mask(self, index, bound: Interval):
        return (bound.lower < 0) & (bound.upper > 0)

    def flat_below(self, index, upper):
        return upper <= 0

    kink_slope = True

    def kink_slope_init(self, l, u, opts=None):
        mode = _mode(opts)
        if mode == "adaptive":
            return (u >= -l).to(u.dtype)
        if mode in ("zero", "one"):
            return torch.full_like(u, float(mode == "one"))
        return (u / torch.where(u > l, u - l, torch.ones_like(u))).clamp(0, 1)

    #: largest fraction of unstable elements for which :meth:`backward` takes its sparse path
    sparse_fraction = 0.25

    def backward(self, lA, uA, x: Interval, opts=None):
        """The shared step of :class:`Elementwise`, computed densely only where that is cheap.

        Stable elements have one exact line (the identity or zero, no intercept), so their
        coefficients are multiplied by a 0/1 mask, one pass; only the coefficients of unstable
        elements need the sign split between the two lines, and when these are few (after
        CROWN's intermediate bounds, a few percent) they are gathered, relaxed and put back.
        Same lines and values as the shared step, fewer passes over the coefficients."""
        opts = opts or {}
        l, u = x.lower, x.upper
        unstable = (l < 0) & (u > 0)
        n_unstable = int(unstable.sum())
        if opts.get("kink_slope") is not None or \
                n_unstable > self.sparse_fraction * unstable.numel():
            return super().backward(lA, uA, x, opts)
        bi, *pos = unstable.nonzero(as_tuple=True)  # example and position of each unstable
        aL, _, aU, bU = (t[(bi, *pos)] if torch.is_tensor(t) else t
                         for t in self.relax(l, u, opts))
        B = l.shape[0]
        active = (l >= 0).to(l.dtype).unsqueeze(1)
        outs = pair_buffer(lA, uA, active) or (None, None)

        def side(A, lower, out):
            S = A.shape[1]
            new = A * active if out is None else torch.mul(A, active, out=out)
            if n_unstable == 0:
                return new, 0.0
            c = A[(bi if A.shape[0] > 1 else torch.zeros_like(bi), slice(None), *pos)]  # (K, S)
            a_pos, a_neg = (aL, aU) if lower else (aU, aL)  # the lines of c >= 0 and of c < 0
            new[(bi, slice(None), *pos)] = c * torch.where(c >= 0, a_pos[:, None],
                                                           a_neg[:, None])
            upper_line = (c < 0) if lower else (c > 0)  # the only line with an intercept
            per = torch.where(upper_line, c, torch.zeros_like(c)) * bU[:, None]
            bias = per.new_zeros(B, S).index_add(0, bi, per)
            return new, bias

        nl, lb = side(lA, True, outs[0]) if lA is not None else (None, 0.0)
        nu, ub = side(uA, False, outs[1]) if uA is not None else (None, 0.0)
        return [(nl, nu)], lb, ub

    def relax(self, l, u, opts=None):
        # One formula for the three cases, in few passes (this runs on every ReLU of every
        # backward pass): with u+ = max(u, 0) and l- = min(l, 0) the upper line is the chord
        # u+ (x - l-) / (u+ - l-): the identity when active (l- = 0), zero when inactive
        # (u+ = 0), the usual chord when unstable; on the point interval l = u = 0 (u+ = l- = 0)
        # the zero line. The slopes u / u of the active case are exactly 1.
        opts = opts or {}
        mode = opts.get("relu_lower", "adaptive")
        up, lo = u.clamp(min=0), l.clamp(max=0)
        den = up - lo
        up_slope = up / (den + (den == 0))
        up_bias = -(up_slope * lo)
        alpha = opts.get("kink_slope")
        if alpha is not None:  # optimised lower slopes (alpha-CROWN); per row with a row axis
            active, unstable = l >= 0, (l < 0) & (u > 0)
            if alpha.dim() > l.dim():
                unstable, active = unstable.unsqueeze(1), active.unsqueeze(1)
            return torch.where(unstable, alpha.clamp(0, 1), active.to(u.dtype)), 0.0, \
                up_slope, up_bias
        # the lower line passes through 0; its slope is 1 when active, 0 when inactive and
        # the mode's choice when unstable, each written as one comparison
        if mode == "adaptive":  # the longer side: u >= -l (also 1 when active, 0 inactive)
            lo_slope = (u >= -l).to(u.dtype)
        elif mode == "zero":
            lo_slope = (l >= 0).to(u.dtype)
        elif mode == "one":
            lo_slope = (u > 0).to(u.dtype)
        elif mode == "parallel":
            lo_slope = up_slope.detach()
        else:
            raise ValueError(f"relu_lower must be one of {RELU_LOWER}, got {mode!r}")
        return lo_slope, 0.0, up_slope, up_bias


class LeakyReLU(Elementwise):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Exact when ``l >= 0`` or ``u <= 0``. Across 0 with ``negative_slope <= 1`` (convex):
    ``s x <= f(x) <= chord`` with ``s`` between ``negative_slope`` and 1 (``relu_lower``); for
    ``negative_slope > 1`` (concave) the roles swap. Negative slopes make ``f`` V-shaped; the
    interval is then the exact range (minimum at 0).
    """

    split_points = (0.0,)

    kind = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__(negative_slope=float(negative_slope))

    @property
    def slope(self) -> float:
        return self.attrs["negative_slope"]

    def forward(self, x):
        return F.leaky_relu(x, self.slope)

    def interval(self, x: Interval) -> Interval:
        if self.slope >= 0:
            return super().interval(x)
        return _range_with_kink(self.forward, x, 0.0)

    def refine_mask(self, index, bound: Interval):
        return (bound.lower < 0) & (bound.upper > 0)

    def relax(self, l, u, opts=None):
        return _two_piece(l, u, 0.0, 0.0, self.slope, 1.0, _mode(opts))


class Abs(LeakyReLU):
    """``|x|``: a LeakyReLU with slope -1. Interval: exact range (``0`` inside when ``l < 0 < u``);
    across 0: ``s x <= |x| <= chord`` with ``s = +-1`` by ``relu_lower`` (adaptive: the sign of
    ``u + l``; parallel: the chord's slope ``(u + l) / (u - l)``)."""

    kind = "abs"

    def __init__(self):
        Elementwise.__init__(self)

    @property
    def slope(self) -> float:
        return -1.0

    def forward(self, x):
        return x.abs()


class Clamp(Elementwise):
    """``min(max(x, min), max)`` (torch.clamp / clip / Hardtanh / ReLU6); ``min`` or ``max`` may
    be ``None``. A ``min`` above ``max`` gives the constant ``max``, as in torch.

    Per element: outside or inside the flat/identity pieces the lines are exact. Crossing only
    ``min`` (a convex kink): chord above, a line through ``(min, min)`` below with the
    ``relu_lower`` slope. Crossing only ``max`` (concave): chord below, a line through
    ``(max, max)`` above. Crossing both: above, the smaller (by its mean over ``[l, u]``) of the
    constant ``max`` and the line through ``(l, min)`` and ``(max, max)``; below, the larger of
    the constant ``min`` and the line through ``(min, min)`` and ``(u, max)``.
    """

    kind = "clamp"

    def __init__(self, min=None, max=None):  # noqa: A002 - torch's names
        lo = None if min is None else float(min)
        hi = None if max is None else float(max)
        if lo is not None and hi is not None and lo > hi:
            lo = hi
        super().__init__(min=lo, max=hi)

    def forward(self, x):
        return torch.clamp(x, self.attrs["min"], self.attrs["max"])

    def refine_mask(self, index, bound: Interval):
        lo, hi = self.attrs["min"], self.attrs["max"]
        l, u = bound.lower, bound.upper
        m = torch.zeros_like(l, dtype=torch.bool)
        if lo is not None:
            m = m | ((l < lo) & (u > lo))
        if hi is not None:
            m = m | ((l < hi) & (u > hi))
        return m

    def relax(self, l, u, opts=None):
        mode = _mode(opts)
        lo, hi = self.attrs["min"], self.attrs["max"]
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        aL, bL, aU, bU = one, zero, one, zero  # identity
        m = (l + u) / 2

        def put(mask, la, lb, ua, ub):
            nonlocal aL, bL, aU, bU
            aL, bL = torch.where(mask, la, aL), torch.where(mask, lb, bL)
            aU, bU = torch.where(mask, ua, aU), torch.where(mask, ub, bU)

        below = (u <= lo) if lo is not None else torch.zeros_like(l, dtype=torch.bool)
        above = (l >= hi) if hi is not None else torch.zeros_like(l, dtype=torch.bool)
        inner = ~below & ~above
        cross_lo = inner & (l < lo) if lo is not None else below
        cross_hi = inner & (u > hi) if hi is not None else above
        if lo is not None:
            only = cross_lo & ~cross_hi
            k = (u - lo) / torch.where(only, u - l, one)
            s = _kink_slope(mode, l, u, lo, zero, one, k)
            put(only, s, lo - s * lo, k, lo - k * l)
        if hi is not None:
            only = cross_hi & ~cross_lo
            k = (hi - l) / torch.where(only, u - l, one)
            s = _kink_slope(mode, l, u, hi, one, zero, k)
            # concave kink: the slope of the longer side, mirrored (left = 1, right = 0)
            put(only, k, l - k * l, s, hi - s * hi)
        if lo is not None and hi is not None:
            both = cross_lo & cross_hi
            k1 = (hi - lo) / torch.where(both, hi - l, one)
            up_line = both & (m < hi)
            k2 = (hi - lo) / torch.where(both, u - lo, one)
            lo_line = both & (m > lo)
            put(both, torch.where(lo_line, k2, zero), torch.where(lo_line, lo - k2 * lo, lo * one),
                torch.where(up_line, k1, zero), torch.where(up_line, lo - k1 * l, hi * one))
        if lo is not None:
            put(below, zero, lo * one, zero, lo * one)
        if hi is not None:
            put(above, zero, hi * one, zero, hi * one)
        return aL, bL, aU, bU
