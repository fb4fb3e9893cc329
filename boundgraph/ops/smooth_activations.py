"""Smooth activations, each defined by its forward and its linear relaxation.

Every rule here returns lines ``aL*x + bL <= f(x) <= aU*x + bU`` that hold for *all* ``x`` in
``[l, u]`` (the shared :class:`~boundgraph.ops.base.Elementwise` step turns them into ``backward``);
non-monotone ops also give their exact range on ``[l, u]`` as ``interval``. The piecewise-linear
activations (ReLU, LeakyReLU, Abs, Clamp/Hardtanh) are in :mod:`boundgraph.ops.activations`.

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

from .activations import _range_with_kink
from .base import Elementwise, Interval

_NARROW = 1e-6  # intervals narrower than this (float64) use the Taylor lines
_BISECT = 30  # bisection steps (error (u - l) * 2**-30)


# --------------------------------------------------------------------------- shared numerics
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
