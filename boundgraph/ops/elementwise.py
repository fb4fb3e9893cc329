"""Smooth elementwise math functions: exp, log, reciprocal, sqrt, rsqrt, pow, sin, cos, erf.

As for the smooth activations (:mod:`boundgraph.ops.smooth_activations`), every ``relax``
returns lines ``aL*x + bL <= f(x) <= aU*x + bU`` valid for *all* ``x`` in ``[l, u]``, computed
in float64 and widened by a rounding margin when cast back (``_finish``), and ``interval`` is
the exact range.

Convex or concave pieces (exp, log, reciprocal, sqrt, rsqrt, pow away from an inflection) use
the tangent/chord relaxation of CROWN (Zhang et al. 2018): on a convex stretch the chord is
above and the tangent at the midpoint ``m = (l + u) / 2`` below; mirrored on a concave one. The
midpoint is the tangent point of least area: ``int_l^u (f - T_t)`` is smallest where
``d/dt [f(t) + f'(t)(m - t)] = f''(t)(m - t) = 0``, i.e. ``t = m``, for *any* convex ``f``. (The
tangent parallel to the chord, for exp at ``log((e^u - e^l) / (u - l))``, has the smallest
*largest* gap to the chord instead, but on wide intervals it plunges far below ``f`` at the low
end: on ``[-100, 100]`` exp's midpoint tangent ``1 + x`` is ``-99`` at ``x = -100``, the parallel
one about ``-e^100``; so the midpoint it is.) On intervals narrower than ``1e-6`` of their
magnitude (``max(|l|, |u|)``, plus ``1e-30``; relative, as the chord's float64 rounding is, and
for ops like ``1/x`` that look the same at every scale) the chord adds nothing and would divide
by a vanishing width; the second line is then the midpoint tangent shifted to the
larger (convex) or smaller (concave) of the gaps ``f - T_m`` at the two ends, which bounds
``f - T_m`` on the whole interval by convexity, needs no bound on ``f''`` (``sqrt``'s is
infinite at 0), and is exact on a point interval.

- Exp: convex. Overflow: when ``exp(u)`` exceeds the largest number of the input's dtype, both
  ``interval`` and ``relax`` raise :class:`~boundgraph.errors.DomainError` (float32 overflows
  above ``u = 88.72``, float64 above ``709.78``); below that, e.g. ``exp(60) ~ 1e26`` in float32,
  lines and interval are finite (a line whose coefficients alone overflow: see below).
- Log: concave, needs ``l > 0``. Sqrt: concave, needs ``l >= 0`` (the tangent is never taken at
  0: the midpoint of a point interval at 0 gets the slope 0). Rsqrt: convex, needs ``l > 0``.
- Reciprocal: convex for ``l > 0``, concave for ``u < 0``; an interval containing 0 is an error.
- Pow ``x^p`` (constant real ``p``): ``p = 0`` and ``p = 1`` exact; even ``p > 0`` convex (range
  from 0 when ``l <= 0 <= u``); odd ``p >= 3`` convex for ``l >= 0``, concave for ``u <= 0``, and
  across 0 both lines have the chord's slope and are shifted to the exact extremes of
  ``f - a x`` (``_extremes``, break at 0: ``f'`` is monotone on each side); negative integers
  convex (even) or like the reciprocal (odd), 0 excluded; non-integer ``p`` needs ``l >= 0``
  (``l > 0`` for ``p < 0``): concave for ``0 < p < 1``, convex otherwise.
- Sin, Cos: both lines have the chord's slope ``a`` (``f'(m)`` on narrow intervals) and are
  shifted to the exact extremes of ``f - a x`` on ``[l, u]`` (``_extremes`` with ``f'`` monotone
  between multiples of ``pi`` for sin, of ``pi/2 + k pi`` for cos; ``|f''| <= 1``); wider than
  ``2 pi``: the constant lines ``-1`` and ``1``. Interval: the exact range (``+-1`` when a
  maximum ``pi/2 + 2k pi`` (sin) / ``2k pi`` (cos), or a minimum, lies in ``[l, u]``).
- Erf: S-shaped like tanh; the CROWN case split of ``_SShaped`` (``|erf''| <= 0.968``).

Any line whose coefficients would overflow the input's dtype (e.g. the chord of ``1/x`` on
``[1e-20, 1e-19]`` in float32, or exp's chord on ``[80, 88]``, whose intercept is ``-2e39``) is
replaced by the constant line at the end of the range, so no returned slope, intercept or
interval is ever infinite or NaN for inputs inside the domain.
"""
from __future__ import annotations

import math

import torch

from ..errors import DomainError
from .base import Elementwise, Interval
from .smooth_activations import _NARROW, _SShaped, _extremes, _finish


# --------------------------------------------------------------------------- shared numerics
_TINY = 1e-30  # chords are taken on intervals wider than this and 1e-6 of their magnitude


def _fmt(v) -> str:
    return f"{float(v):.6g}"


def _first(mask, *ts):
    """The values of ``ts`` at the first element where ``mask`` holds, formatted."""
    i = int(mask.flatten().nonzero()[0])
    return [_fmt(t.flatten()[i]) for t in ts]


def _dtype(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _below(op_text, l, strict):
    """Raise if some ``l`` is below 0 (``strict``: at or below 0)."""
    bad = (l <= 0) if strict else (l < 0)
    if bool(bad.any()):
        where = "reaching 0 or below" if strict else "reaching below 0"
        raise DomainError(f"{op_text} of an interval {where} (lowest input bound "
                          f"{_fmt(l[bad].min())})")


def _across_zero(op_text, l, u):
    bad = (l <= 0) & (u >= 0)
    if bool(bad.any()):
        lo, hi = _first(bad, l, u)
        raise DomainError(f"{op_text} of an interval containing 0 (input bounds [{lo}, {hi}])")


def _no_overflow(op, l, u, lo, hi, dtype):
    """Raise :class:`DomainError` where the range ``[lo, hi]`` leaves ``dtype``'s numbers."""
    big = torch.finfo(dtype).max
    known = ~(l.isnan() | u.isnan())
    bad = known & ~((lo.abs() <= big) & (hi.abs() <= big))
    if bool(bad.any()):
        raise DomainError(op.overflow_message(l, u, bad, dtype))


def _finite_lines(l, u, aL, bL, aU, bU, lo, hi, dtype, op):
    """``_finish``, then the constant lines ``lo`` / ``hi`` (float64 range ends, with margin) in
    place of any line whose slope or intercept is not finite in ``dtype``."""
    aL, bL, aU, bU = _finish(l, u, aL, bL, aU, bU, dtype)
    okL = torch.isfinite(aL) & torch.isfinite(bL)
    okU = torch.isfinite(aU) & torch.isfinite(bU)
    if bool(okL.all()) and bool(okU.all()):
        return aL, bL, aU, bU
    z = torch.zeros_like(l)
    _, cL, _, cU = _finish(l, u, z, lo, z, hi, dtype)
    zd = z.to(dtype)
    aL, bL = torch.where(okL, aL, zd), torch.where(okL, bL, cL)
    aU, bU = torch.where(okU, aU, zd), torch.where(okU, bU, cU)
    bad = ~(torch.isfinite(bL) & torch.isfinite(bU))
    if bool(bad.any()):  # the range itself sits within the margin of dtype's largest number
        raise DomainError(op.overflow_message(l, u, bad, dtype))
    return aL, bL, aU, bU


def _chord_tangent(f, df, l, u, convex):
    """Float64 lines for ``f`` convex (where ``convex``) or concave on ``[l, u]``: chord and the
    tangent at the midpoint; narrow intervals: the midpoint tangent and its copy shifted to the
    larger / smaller end gap (module docstring)."""
    w = u - l
    narrow = w <= _NARROW * torch.maximum(l.abs(), u.abs()) + _TINY
    m = (l + u) / 2
    fl, fu, fm, dm = f(l), f(u), f(m), df(m)
    dm = torch.where(torch.isfinite(dm), dm, torch.zeros_like(dm))  # point interval at 0 only
    tb = fm - dm * m
    k = (fu - fl) / torch.where(narrow, torch.ones_like(w), w)
    kb = fl - k * l
    gl, gu = fl - (dm * l + tb), fu - (dm * u + tb)
    shift = torch.where(convex, torch.maximum(gl, gu), torch.minimum(gl, gu))
    k, kb = torch.where(narrow, dm, k), torch.where(narrow, tb + shift, kb)
    aL, bL = torch.where(convex, dm, k), torch.where(convex, tb, kb)
    aU, bU = torch.where(convex, k, dm), torch.where(convex, kb, tb)
    return aL, bL, aU, bU


def _parallel(f, df, l, u, breaks, m2):
    """Float64 lines of the chord's slope (``f'(m)`` when narrow) through the exact extremes of
    ``f - a x`` on ``[l, u]`` (``f'`` monotone between ``breaks``)."""
    w = u - l
    narrow = w <= _NARROW
    chord = (f(u) - f(l)) / torch.where(narrow, torch.ones_like(w), w)
    a = torch.where(narrow, df((l + u) / 2), chord)
    gmin, gmax = _extremes(f, df, a, l, u, breaks, m2)
    return a, gmin, a, gmax


class _Curved(Elementwise):
    """An op convex or concave on every interval of its domain (per element), relaxed by
    :func:`_chord_tangent`. Subclasses give float64 ``f``, ``df``, ``convex(l, u)`` and a
    domain ``check(l, u)``; the interval is ``f`` at the ends (monotone pieces) unless
    ``_range`` is overridden."""

    exact_interval = True  # ``_range`` is the exact range of ``f`` on ``[l, u]``

    def f(self, x):
        return self.forward(x)

    def df(self, x):
        raise NotImplementedError

    def check(self, l, u):
        """Raise :class:`DomainError` if some ``[l, u]`` leaves the domain."""

    def convex(self, l, u):
        return torch.ones_like(l, dtype=torch.bool)

    def overflow_message(self, l, u, bad, dtype):
        lo, hi = _first(bad, l, u)
        return f"{self.kind} overflows {_dtype(dtype)} on the input interval [{lo}, {hi}]"

    def _range(self, f, l, u):
        fl, fu = f(l), f(u)
        return torch.minimum(fl, fu), torch.maximum(fl, fu)

    def interval(self, x: Interval) -> Interval:
        l, u = x.lower, x.upper
        self.check(l, u)
        lo, hi = self._range(self.forward, l, u)
        _no_overflow(self, l, u, lo, hi, l.dtype)
        return Interval(lo, hi)

    def lines(self, l, u):
        return _chord_tangent(self.f, self.df, l, u, self.convex(l, u))

    #: whether the domain includes 0 where ``f'`` or ``f''`` is infinite (sqrt, ``x^p`` for
    #: non-integer ``p > 0``): bounds at exactly 0 pass no gradient to it (a subgradient
    #: choice; the true derivative of the lines there is infinite or undefined)
    zero_edge = False

    def relax(self, l, u, opts=None):
        self.check(l, u)
        dtype = l.dtype
        l, u = l.double(), u.double()
        if self.zero_edge:
            l = torch.where(l != 0, l, l.detach())
            u = torch.where(u != 0, u, u.detach())
        lo, hi = self._range(self.f, l, u)
        _no_overflow(self, l, u, lo, hi, dtype)
        return _finite_lines(l, u, *self.lines(l, u), lo, hi, dtype, self)


# --------------------------------------------------------------------------- convex / concave
class Exp(_Curved):
    """``exp(x)``: convex increasing; chord above, midpoint tangent below (CROWN, Zhang et al.
    2018; the midpoint is the tangent of least area, module docstring). Raises
    :class:`DomainError` when ``exp(u)`` overflows the input's dtype."""

    kind = "exp"

    def forward(self, x):
        return torch.exp(x)

    def df(self, x):
        return torch.exp(x)

    def overflow_message(self, l, u, bad, dtype):
        top = math.log(torch.finfo(dtype).max)
        return (f"exp overflows: input upper bound {_fmt(u[bad].max())} (exp is finite in "
                f"{_dtype(dtype)} only up to {top:.2f})")


class Log(_Curved):
    """``log(x)`` for ``x > 0``: concave increasing; chord below, midpoint tangent above
    (CROWN). ``l <= 0`` raises :class:`DomainError`."""

    kind = "log"

    def forward(self, x):
        return torch.log(x)

    def df(self, x):
        return 1 / x

    def check(self, l, u):
        _below("log", l, strict=True)

    def convex(self, l, u):
        return torch.zeros_like(l, dtype=torch.bool)


class Reciprocal(_Curved):
    """``1 / x``: decreasing; convex for ``x > 0`` (chord above, midpoint tangent below),
    concave for ``x < 0`` (mirrored). Interval ``(1/u, 1/l)``; an interval containing 0 raises
    :class:`DomainError`."""

    kind = "reciprocal"

    def forward(self, x):
        return torch.reciprocal(x)

    def df(self, x):
        return -1 / (x * x)

    def check(self, l, u):
        _across_zero("reciprocal", l, u)

    def convex(self, l, u):
        return l > 0


class Sqrt(_Curved):
    """``sqrt(x)`` for ``x >= 0``: concave increasing; chord below, midpoint tangent above
    (CROWN). ``l = 0`` is allowed (the tangent is never taken at 0); ``l < 0`` raises
    :class:`DomainError`."""

    kind = "sqrt"
    zero_edge = True

    def forward(self, x):
        return torch.sqrt(x)

    def df(self, x):
        return 0.5 / torch.sqrt(x)

    def check(self, l, u):
        _below("sqrt", l, strict=False)

    def convex(self, l, u):
        return torch.zeros_like(l, dtype=torch.bool)


class Rsqrt(_Curved):
    """``1 / sqrt(x)`` for ``x > 0``: convex decreasing; chord above, midpoint tangent below
    (CROWN). ``l <= 0`` raises :class:`DomainError`."""

    kind = "rsqrt"

    def forward(self, x):
        return torch.rsqrt(x)

    def df(self, x):
        return -0.5 * torch.rsqrt(x) / x

    def check(self, l, u):
        _below("rsqrt", l, strict=True)


class Pow(_Curved):
    """``x ** exponent`` for a constant real exponent ``p``.

    ``p = 0``: the constant 1; ``p = 1``: the identity (both exact). Otherwise chord and
    midpoint tangent (CROWN) on every convex or concave piece: even ``p > 0`` and even ``p < 0``
    convex; odd ``p >= 3`` convex for ``l >= 0`` and concave for ``u <= 0``, and across 0 two
    lines of the chord's slope through the exact extremes of ``x^p - a x``; odd ``p < 0`` like
    the reciprocal; non-integer ``p`` concave for ``0 < p < 1``, convex otherwise. Domain:
    negative integers exclude intervals containing 0; non-integer ``p`` needs ``l >= 0``
    (``l > 0`` when ``p < 0``); else :class:`DomainError`. Interval: the exact range.
    """

    kind = "pow"

    def __init__(self, exponent=2.0):
        super().__init__(exponent=float(exponent))
        p = self.exponent
        self.integer = p.is_integer()
        self.odd = self.integer and int(p) % 2 == 1
        self.zero_edge = not self.integer and p > 0

    @property
    def exponent(self) -> float:
        return self.attrs["exponent"]

    def _text(self):
        p = self.exponent
        return f"pow with exponent {int(p) if self.integer else p}"

    def forward(self, x):
        return torch.pow(x, self.exponent)

    def df(self, x):
        return self.exponent * torch.pow(x, self.exponent - 1)

    def check(self, l, u):
        p = self.exponent
        if self.integer and p < 0:
            _across_zero(self._text(), l, u)
        elif not self.integer:
            _below(self._text(), l, strict=p < 0)

    def convex(self, l, u):
        p = self.exponent
        if self.odd:
            return l >= 0 if p > 0 else l > 0
        if self.integer or p > 1 or p < 0:
            return torch.ones_like(l, dtype=torch.bool)
        return torch.zeros_like(l, dtype=torch.bool)  # 0 < p < 1

    def _range(self, f, l, u):
        lo, hi = super()._range(f, l, u)
        p = self.exponent
        if self.integer and p > 0 and not self.odd:  # even: the minimum 0 inside
            lo = torch.where((l <= 0) & (u >= 0), torch.zeros_like(lo), lo)
        return lo, hi

    def interval(self, x: Interval) -> Interval:
        if self.exponent == 0:
            return Interval(torch.ones_like(x.lower), torch.ones_like(x.upper))
        return super().interval(x)

    def lines(self, l, u):
        aL, bL, aU, bU = super().lines(l, u)
        p = self.exponent
        mixed = (l < 0) & (u > 0)
        if self.odd and p > 0 and bool(mixed.any()):
            m2 = p * (p - 1) * torch.maximum(l.abs(), u.abs()) ** (p - 2)  # sup |f''|
            par = _parallel(self.f, self.df, l, u, (0.0,), m2)
            aL, bL, aU, bU = (torch.where(mixed, q, v) for q, v in zip(par, (aL, bL, aU, bU)))
        return aL, bL, aU, bU

    def relax(self, l, u, opts=None):
        p = self.exponent
        if p in (0.0, 1.0):  # exact lines
            a, b = (torch.ones_like(l), torch.zeros_like(l)) if p == 1 else \
                (torch.zeros_like(l), torch.ones_like(l))
            return a, b, a, b
        return super().relax(l, u, opts)


# --------------------------------------------------------------------------- periodic
class _Trig(Elementwise):
    """Sin and cos: parallel lines through the exact extremes (module docstring)."""

    c0 = 0.0  # f' is monotone between the points c0 + k pi
    peak = 0.0  # maxima at peak + 2k pi, minima at peak + pi + 2k pi

    def f(self, x):
        return self.forward(x)

    def interval(self, x: Interval) -> Interval:
        l, u = x.lower, x.upper
        fl, fu = self.forward(l), self.forward(u)
        lo, hi = torch.minimum(fl, fu), torch.maximum(fl, fu)
        ld, ud = l.double(), u.double()
        hi = torch.where(_hits(ld, ud, self.peak), torch.ones_like(hi), hi)
        lo = torch.where(_hits(ld, ud, self.peak + math.pi), -torch.ones_like(lo), lo)
        return Interval(lo, hi)

    def relax(self, l, u, opts=None):
        dtype = l.dtype
        l, u = l.double(), u.double()
        wide = (u - l) > 2 * math.pi
        # shift each interval by s (a break point c0 + k pi) so that it starts in [0, pi);
        # f' is then monotone between the fixed breaks 0, pi, 2 pi, 3 pi of the shifted axis
        s = torch.floor((l - self.c0) / math.pi) * math.pi + self.c0
        ls = l - s
        us = torch.where(wide, ls, u - s)  # wide ones are replaced below
        a, gmin, _, gmax = _parallel(lambda x: self.f(x + s), lambda x: self.df(x + s), ls, us,
                                     (0.0, math.pi, 2 * math.pi, 3 * math.pi), 1.0)
        # g(x) = f(x) - a x = (f(x' + s) - a x') - a s with x' = x - s. The ends come back
        # exactly (l - s and u - s are exact by Sterbenz's lemma once |l| > 2 pi, and so is
        # adding s back); other points only sample g, and near its critical points
        # (g' = 0) a rounding of x moves g quadratically little
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        a = torch.where(wide, zero, a)
        bL = torch.where(wide, -one, gmin - a * s)
        bU = torch.where(wide, one, gmax - a * s)
        return _finish(l, u, a, bL, a, bU, dtype)


def _hits(l, u, p):
    """Whether some ``p + 2k pi`` lies in ``[l, u]`` (float64)."""
    k = torch.ceil((l - p) / (2 * math.pi))
    return (p + 2 * math.pi * k <= u) | (u - l >= 2 * math.pi)


class Sin(_Trig):
    """``sin(x)``: two lines of the chord's slope through the exact extremes of
    ``sin(x) - a x`` (``f' = cos`` monotone between multiples of ``pi``; ``|f''| <= 1``);
    constant ``-1`` / ``1`` lines when ``u - l > 2 pi``. Interval: the exact range."""

    kind = "sin"
    c0, peak = 0.0, math.pi / 2

    def forward(self, x):
        return torch.sin(x)

    def df(self, x):
        return torch.cos(x)


class Cos(_Trig):
    """``cos(x)``: as :class:`Sin` (``f' = -sin`` monotone between the points
    ``pi/2 + k pi``). Interval: the exact range."""

    kind = "cos"
    c0, peak = math.pi / 2, 0.0

    def forward(self, x):
        return torch.cos(x)

    def df(self, x):
        return -torch.sin(x)


# --------------------------------------------------------------------------- S-shaped
_2_SQRTPI = 2 / math.sqrt(math.pi)


class Erf(_SShaped):
    """``erf(x)``: increasing, convex for ``x <= 0`` and concave for ``x >= 0`` like tanh; the
    CROWN case split (Zhang et al. 2018) of the S-shaped activations (chord / midpoint tangent
    on one side of 0, tangents through an end across it)."""

    kind = "erf"
    m2 = 0.97  # sup |erf''| = 2 sqrt(2/pi) exp(-1/2) = 0.9679, at x = 1/sqrt(2)

    def forward(self, x):
        return torch.erf(x)

    def f(self, x):
        return torch.erf(x)

    def df(self, x):
        return _2_SQRTPI * torch.exp(-x * x)


ELEMENTWISE_OPS = (Exp, Log, Reciprocal, Sqrt, Rsqrt, Pow, Sin, Cos, Erf)
