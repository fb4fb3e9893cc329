"""Elementwise activations, each defined by its forward and its linear relaxation.

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

Smooth ops are relaxed in float64 and the lines are widened by a rounding margin when cast back
(:func:`_finish`), so they stay valid on very narrow (``u - l ~ 1e-7``) and very wide intervals:

- Sigmoid, Tanh (S-shaped, convex for ``x <= 0``, concave for ``x >= 0``): the case split of CROWN
  (Zhang et al. 2018). On the convex side the chord is above and the tangent at the midpoint
  below; mirrored on the concave side; across 0 the upper line is the tangent at the point
  ``t >= 0`` whose tangent passes through ``(l, f(l))`` (found by bisection, keeping the end whose
  tangent is provably above) when ``t <= u``, else the chord; mirrored for the lower line.
- Softplus: convex, chord above and tangent at the midpoint below (torch's linear tail above
  ``threshold`` lies below the true softplus by at most ``log1p(exp(-threshold))/beta``, which the
  lower line subtracts).
- GELU (both approximations), SiLU, ELU: both lines have the chord's slope ``a`` and are shifted to
  the exact extremes of ``g(x) = f(x) - a*x`` on ``[l, u]``. ``f'`` is monotone between known
  break points (inflection points, kinks), so ``g`` has at most one critical point per piece;
  it is located by bisection of ``g'`` and the extremes are taken over the ends, the break points
  and the critical points, plus the bisection error ``M2 * delta**2 / 8`` (``M2 >= sup|f''|``).
  For a convex (concave) stretch this is the chord and the parallel tangent.
- Very narrow intervals (``u - l <= 1e-6``) use the Taylor lines at the midpoint
  ``f(m) + f'(m)(x - m) -/+ M2 r^2 / 2``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Elementwise, Interval, pair_buffer

RELU_LOWER = ("adaptive", "zero", "one", "parallel")

_NARROW = 1e-6  # intervals narrower than this (float64) use the Taylor lines
_BISECT = 30  # bisection steps (error (u - l) * 2**-30)


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


def _finish(l, u, aL, bL, aU, bU, dtype):
    """Cast float64 lines to ``dtype``, moving the biases outward by a rounding margin.

    The margin ``c * (1 + |b| + |a| max(|l|, |u|))`` (``c`` four units of ``dtype``'s rounding,
    at least 1e-12) covers the float64 evaluation errors of the relaxation and the rounding of
    slope and bias to ``dtype``, so each line is a true bound for every point of ``[l, u]``.
    """
    c = max(4 * torch.finfo(dtype).eps, 1e-12)
    xmax = torch.maximum(l.abs(), u.abs()).detach()
    sL = (c * (1 + bL.abs() + aL.abs() * xmax)).detach()
    sU = (c * (1 + bU.abs() + aU.abs() * xmax)).detach()
    return aL.to(dtype), (bL - sL).to(dtype), aU.to(dtype), (bU + sU).to(dtype)


def _range_with_kink(f, x: Interval, c: float) -> Interval:
    """Exact range of ``f`` on ``[l, u]`` when ``f`` is monotone on each side of ``c``."""
    l, u = x.lower, x.upper
    vals = torch.stack([f(l), f(u), f(torch.clamp(torch.full_like(l, c), l, u))])
    return Interval(vals.amin(0), vals.amax(0))


def _extremes(f, df, a, l, u, breaks, m2):
    """Lower and upper bounds of ``min`` / ``max`` of ``g = f - a*x`` on ``[l, u]`` (float64).

    ``f'`` must be monotone between consecutive ``breaks`` (and ``f`` continuous), so that ``g``
    has at most one critical point per piece; ``m2 >= sup|f''|`` bounds the error of evaluating
    ``g`` at a bisection estimate of that point. All pieces are bisected at once.
    """
    edges = torch.stack([l] + [torch.clamp(torch.full_like(l, b), l, u) for b in breaks] + [u])
    with torch.no_grad():
        ad = a.detach()
        lo, hi = edges[:-1].detach(), edges[1:].detach()  # (pieces, *shape)
        s_lo = (df(lo) - ad) > 0
        for _ in range(_BISECT):
            mid = (lo + hi) / 2
            same = ((df(mid) - ad) > 0) == s_lo
            lo = torch.where(same, mid, lo)
            hi = torch.where(same, hi, mid)
        crit = (lo + hi) / 2
    pts = torch.cat([edges, crit])
    g = f(pts) - a * pts
    err = m2 * ((u - l).detach() * 2.0 ** -_BISECT) ** 2 / 8
    return g.amin(0) - err, g.amax(0) + err


def _bisect(x0, x1, ok, steps=_BISECT):
    """Bisect between ``x0`` (``ok`` holds there) and ``x1``; returns the ``ok`` end."""
    good, bad = x0, x1
    for _ in range(steps):
        mid = (good + bad) / 2
        m = ok(mid)
        good = torch.where(m, mid, good)
        bad = torch.where(m, bad, mid)
    return good


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


# --------------------------------------------------------------------------- smooth ops
class _Smooth(Elementwise):
    """A smooth (or piecewise smooth) activation with float64 math for its relaxation.

    Subclasses give ``f(x)`` and ``df(x)`` on float64 tensors and ``m2 >= sup |f''|``.
    """

    m2 = 1.0

    def f(self, x):
        raise NotImplementedError

    def df(self, x):
        raise NotImplementedError

    def _taylor(self, l, u):
        """Lines ``f(m) + f'(m)(x - m) -/+ m2 r^2 / 2`` (valid on ``[l, u]`` by Taylor)."""
        m, r = (l + u) / 2, (u - l) / 2
        a = self.df(m)
        b = self.f(m) - a * m
        gap = self.m2 * r * r / 2
        return a, b - gap, a, b + gap


class _SShaped(_Smooth):
    """Convex on ``x <= 0``, concave on ``x >= 0`` (sigmoid, tanh); the CROWN case split."""

    def relax(self, l, u, opts=None):
        dtype = l.dtype
        l, u = l.double(), u.double()
        f, df = self.f, self.df
        w = u - l
        narrow = w <= _NARROW
        m = (l + u) / 2
        fl, fu, fm, dm = f(l), f(u), f(m), df(m)
        k = (fu - fl) / torch.where(narrow, torch.ones_like(w), w)
        chord_b = fl - k * l
        tan_b = fm - dm * m
        convex, concave = u <= 0, l >= 0
        aL = torch.where(concave, k, dm)
        bL = torch.where(concave, chord_b, tan_b)
        aU = torch.where(convex, k, dm)
        bU = torch.where(convex, chord_b, tan_b)
        mixed = ~(convex | concave | narrow)
        if bool(mixed.any()):
            # upper: the tangent at t in [0, u] through (l, f(l)) if it exists, else the chord
            with torch.no_grad():
                ld, ud, fld, fud = l.detach(), u.detach(), fl.detach(), fu.detach()
                up_ok = fud + df(ud) * (ld - ud) >= fld
                t = _bisect(ud.clamp(min=0), torch.zeros_like(ud),
                            lambda s: f(s) + df(s) * (ld - s) >= fld)
                lo_ok = fld + df(ld) * (ud - ld) <= fud
                s = _bisect(ld.clamp(max=0), torch.zeros_like(ld),
                            lambda s: f(s) + df(s) * (ud - s) <= fud)
            dt, ds = df(t), df(s)
            aU = torch.where(mixed, torch.where(up_ok, dt, k), aU)
            bU = torch.where(mixed, torch.where(up_ok, f(t) - dt * t, chord_b), bU)
            aL = torch.where(mixed, torch.where(lo_ok, ds, k), aL)
            bL = torch.where(mixed, torch.where(lo_ok, f(s) - ds * s, chord_b), bL)
        if bool(narrow.any()):
            ta = self._taylor(l, u)
            aL, bL, aU, bU = (torch.where(narrow, t, v) for t, v in zip(ta, (aL, bL, aU, bU)))
        return _finish(l, u, aL, bL, aU, bU, dtype)


class Sigmoid(_SShaped):
    """``1 / (1 + exp(-x))``; relaxation: see the module docstring (S-shaped case split)."""

    exact_interval = True

    kind = "sigmoid"
    m2 = 0.1  # sup |sigmoid''| = 0.0962

    def forward(self, x):
        return torch.sigmoid(x)

    def f(self, x):
        return torch.sigmoid(x)

    def df(self, x):
        s = torch.sigmoid(x)
        return s * (1 - s)


class Tanh(_SShaped):
    """``tanh(x)``; relaxation: see the module docstring (S-shaped case split)."""

    exact_interval = True

    kind = "tanh"
    m2 = 0.77  # sup |tanh''| = 4 / (3 sqrt(3)) = 0.7698

    def forward(self, x):
        return torch.tanh(x)

    def f(self, x):
        return torch.tanh(x)

    def df(self, x):
        return 1 - torch.tanh(x) ** 2


class Softplus(_Smooth):
    """``log(1 + exp(beta x)) / beta``, and ``x`` where ``beta x > threshold`` (as torch).

    Upper line: the chord of the true softplus ``sp`` (``f <= sp``, ``sp`` convex). Lower line:
    the tangent of ``sp`` at the midpoint, minus ``log1p(exp(-threshold)) / beta`` when the
    interval reaches the linear tail (``f >= sp - that`` everywhere). Exact on the tail. The
    interval accounts for the small downward step of torch's function at the threshold.
    """

    kind = "softplus"

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__(beta=float(beta), threshold=float(threshold))
        b, t = self.attrs["beta"], self.attrs["threshold"]
        if b <= 0:
            raise ValueError("softplus needs beta > 0")
        self.m2 = b / 4
        self.x0 = t / b  # start of the linear tail
        self.step = math.log1p(math.exp(-t)) / b  # sp(x) - x at the threshold

    def forward(self, x):
        return F.softplus(x, self.attrs["beta"], self.attrs["threshold"])

    def f(self, x):  # the true softplus, stable for any x
        bx = self.attrs["beta"] * x
        return (F.relu(bx) + torch.log1p(torch.exp(-bx.abs()))) / self.attrs["beta"]

    def df(self, x):
        return torch.sigmoid(self.attrs["beta"] * x)

    def interval(self, x: Interval) -> Interval:
        lo, hi = self.forward(x.lower), self.forward(x.upper)
        cross = (x.lower <= self.x0) & (x.upper > self.x0)
        lo = torch.where(cross, lo.clamp(max=self.x0), lo)
        hi = torch.where(cross, hi.clamp(min=self.x0 + self.step), hi)
        return Interval(lo, hi)

    def relax(self, l, u, opts=None):
        dtype = l.dtype
        l, u = l.double(), u.double()
        w = u - l
        narrow = w <= _NARROW
        m = (l + u) / 2
        fl, fu, fm, dm = self.f(l), self.f(u), self.f(m), self.df(m)
        k = (fu - fl) / torch.where(narrow, torch.ones_like(w), w)
        aU, bU = k, fl - k * l
        aL, bL = dm, fm - dm * m
        if bool(narrow.any()):
            ta = self._taylor(l, u)
            aL, bL, aU, bU = (torch.where(narrow, t, v) for t, v in zip(ta, (aL, bL, aU, bU)))
        bL = bL - torch.where(u > self.x0, torch.full_like(u, self.step), torch.zeros_like(u))
        tail = l > self.x0
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        aL, aU = torch.where(tail, one, aL), torch.where(tail, one, aU)
        bL, bU = torch.where(tail, zero, bL), torch.where(tail, zero, bU)
        return _finish(l, u, aL, bL, aU, bU, dtype)


class _Parallel(_Smooth):
    """Relaxation by two lines of the chord's slope shifted to the extremes of ``f - a x``.

    Subclasses give ``breaks``: points between which ``f'`` is monotone (inflection points and
    kinks).
    """

    breaks: tuple = ()

    def relax(self, l, u, opts=None):
        dtype = l.dtype
        l, u = l.double(), u.double()
        w = u - l
        narrow = w <= _NARROW
        m = (l + u) / 2
        chord = (self.f(u) - self.f(l)) / torch.where(narrow, torch.ones_like(w), w)
        a = torch.where(narrow, self.df(m), chord)
        gmin, gmax = _extremes(self.f, self.df, a, l, u, self.breaks, self.m2)
        return _finish(l, u, a, gmin, a, gmax, dtype)


class _Unimodal(_Parallel):
    """Decreasing up to ``x_min``, increasing after: the exact range on ``[l, u]`` is
    ``[f(clamp(x_min, l, u)), max(f(l), f(u))]``."""

    x_min = 0.0

    def interval(self, x: Interval) -> Interval:
        l, u = x.lower, x.upper
        lo = self.forward(torch.clamp(torch.full_like(l, self.x_min), l, u))
        return Interval(lo, torch.maximum(self.forward(l), self.forward(u)))


def _root(g, a, b, steps=200):
    """Root of the continuous scalar ``g`` on ``[a, b]`` (signs differ at the ends)."""
    ga = g(a) > 0
    for _ in range(steps):
        m = (a + b) / 2
        if (g(m) > 0) == ga:
            a = m
        else:
            b = m
    return (a + b) / 2


_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2 * math.pi)
_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _gelu_tanh_parts(x):
    v = _K * (x + _C * x ** 3)
    return math.tanh(v), _K * (1 + 3 * _C * x * x)


# inflection points (zeros of f'') and minimisers (zeros of f'), computed once in float64
_GELU_MIN = _root(lambda x: 0.5 * (1 + math.erf(x / _SQRT2))
                  + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi), -_SQRT2, 0.0)
_GELU_T_INFL = _root(lambda x: (lambda t, vp: vp + 3 * _K * _C * x * x - x * t * vp * vp)(
    *_gelu_tanh_parts(x)), 1.0, 2.0)
_GELU_T_MIN = _root(lambda x: (lambda t, vp: 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * vp)(
    *_gelu_tanh_parts(x)), -_GELU_T_INFL, 0.0)
_sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
_SILU_INFL = _root(lambda x: 2 + x * (1 - 2 * _sig(x)), 2.0, 3.0)
_SILU_MIN = _root(lambda x: 1 + x * (1 - _sig(x)), -2.0, -1.0)


class GELU(_Unimodal):
    """``x Phi(x)`` (``approximate="none"``) or ``x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) / 2``
    (``"tanh"``). Convex between its inflection points (``+-sqrt(2)``, resp. ``+-1.4185``),
    concave outside; both lines have the chord's slope and touch the extremes of ``f - a x``
    (module docstring). Interval: exact range, minimum at ``x = -0.7518`` (``-0.7525``)."""

    kind = "gelu"
    m2 = 0.8  # sup |f''| = f''(0) = sqrt(2/pi) = 0.7979 for both forms

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(approximate=approximate)
        tanh = approximate == "tanh"
        self.breaks = (-_GELU_T_INFL, _GELU_T_INFL) if tanh else (-_SQRT2, _SQRT2)
        self.x_min = _GELU_T_MIN if tanh else _GELU_MIN

    def forward(self, x):
        return F.gelu(x, approximate=self.attrs["approximate"])

    def f(self, x):
        if self.attrs["approximate"] == "tanh":
            return 0.5 * x * (1 + torch.tanh(_K * (x + _C * x ** 3)))
        return 0.5 * x * (1 + torch.erf(x / _SQRT2))

    def df(self, x):
        if self.attrs["approximate"] == "tanh":
            t = torch.tanh(_K * (x + _C * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K * (1 + 3 * _C * x * x)
        return 0.5 * (1 + torch.erf(x / _SQRT2)) + x * torch.exp(-x * x / 2) / _SQRT2PI


class SiLU(_Unimodal):
    """``x sigmoid(x)`` (swish). Convex on ``[-2.3994, 2.3994]``, concave outside; relaxation as
    GELU. Interval: exact range, minimum at ``x = -1.2785``."""

    kind = "silu"
    m2 = 0.5 + 1e-9  # sup |f''| = f''(0) = 1/2
    breaks = (-_SILU_INFL, _SILU_INFL)
    x_min = _SILU_MIN

    def forward(self, x):
        return F.silu(x)

    def f(self, x):
        return x * torch.sigmoid(x)

    def df(self, x):
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))


class ELU(_Parallel):
    """``scale * x`` for ``x > 0``, ``scale * alpha * (exp(input_scale * x) - 1)`` otherwise
    (ELU, and SELU with its constants). Each side is convex or concave, with a kink at 0 unless
    ``alpha * input_scale = 1``; relaxation as GELU with the kink as a break point. Interval:
    monotone for the usual non-negative parameters, else the exact range (extremes at ``l``,
    ``u`` or 0)."""

    kind = "elu"

    def __init__(self, alpha=1.0, scale=1.0, input_scale=1.0):
        super().__init__(alpha=float(alpha), scale=float(scale), input_scale=float(input_scale))
        a, s, i = self.attrs["alpha"], self.attrs["scale"], self.attrs["input_scale"]
        self.m2 = abs(s * a) * i * i + 1e-12
        self.breaks = (0.0,)
        self.monotone = s >= 0 and s * a * i >= 0

    def forward(self, x):
        a = self.attrs
        return torch.ops.aten.elu(x, a["alpha"], a["scale"], a["input_scale"])

    def interval(self, x: Interval) -> Interval:
        if self.monotone:
            return super().interval(x)
        return _range_with_kink(self.forward, x, 0.0)

    def f(self, x):
        a = self.attrs
        neg = a["scale"] * a["alpha"] * torch.expm1(a["input_scale"] * x.clamp(max=0))
        return torch.where(x > 0, a["scale"] * x, neg)

    def df(self, x):
        a = self.attrs
        slope = a["scale"] * a["alpha"] * a["input_scale"]
        neg = slope * torch.exp(a["input_scale"] * x.clamp(max=0))
        return torch.where(x > 0, a["scale"] * torch.ones_like(x), neg)
