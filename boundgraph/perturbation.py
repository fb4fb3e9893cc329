"""Input sets: what a bound holds over.

``LpBall(eps, p, lower, upper)``
    ``{x' : ||x' - x||_p <= eps}`` for ``p`` in ``{1, 2, inf}``, intersected with the data domain
    ``[lower, upper]`` (e.g. ``[0, 1]`` for images). ``eps`` is a number or a tensor
    broadcasting against the batch ``(B, *shape)``: per example ``(B, 1, ...)``, per channel
    ``(C, 1, 1)``, or both. A tensor ``eps`` scales each coordinate:
    ``{x' : ||(x' - x) / eps||_p <= 1}``.
``LinfBall(eps, lower, upper)``
    the ``p = inf`` ball (a box), the set certified training and VNN-LIB use.
``Box(lower, upper)``
    an explicit box, per example ``(B, *shape)`` or broadcasting against one example.

Engines see each perturbed input as an :class:`InputSet`: the tightest box around the set (what
interval propagation starts from) and, for an l1 or l2 ball, the ball itself, over which linear
bounds are concretised with the dual norm (``A x - eps ||A||_q`` with ``1/p + 1/q = 1``).
"""
from __future__ import annotations

import math

import torch

from .errors import InputError
from .ops.base import Interval, concretize, crop_window


def all_finite(t: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or infinity: one min/max pass, which NaN propagates into
    (several times cheaper than ``torch.isfinite(t).all()``; inputs are checked every call)."""
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return True
    if t.is_complex():
        return all_finite(torch.view_as_real(t))
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _check_finite(name, v):
    if torch.is_tensor(v):
        if not all_finite(v):
            raise InputError(f"{name} contains NaN or infinite values")
    elif v is not None and not math.isfinite(float(v)):
        raise InputError(f"{name} must be finite, got {v}")


def _as(v, like):
    if v is None:
        return None
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


INF = math.inf


def parse_p(p) -> float:
    """``p`` of an l-p ball as ``1.0``, ``2.0`` or ``math.inf`` (from a number or ``"inf"``)."""
    try:
        v = float(p)
    except (TypeError, ValueError):
        v = None
    if v not in (1.0, 2.0, INF):
        raise InputError(f"p must be 1, 2 or inf, got {p!r}")
    return v


def norm_name(p: float) -> str:
    """``"1"``, ``"2"`` or ``"inf"``: how reports and configurations name the norm ``p``."""
    p = parse_p(p)
    return "inf" if p == INF else str(int(p))


class InputSet:
    """One input's set as the engines see it.

    ``box``: the tightest box around the set, ``(B, *shape)``; interval propagation starts from
    it. For an l1 or l2 ball also ``center`` ``(B, *shape)``, ``eps`` (a float, or a tensor
    ``(1 or B, *shape)``) and the dual exponent ``q``; ``clipped`` says whether the domain cuts
    the ball's box, in which case bounds over the box are computed too and the tighter one is
    kept (both hold on the intersection of ball and domain).
    """

    __slots__ = ("box", "center", "eps", "q", "clipped")

    def __init__(self, box: Interval, center=None, eps=None, q=None, clipped=False):
        self.box, self.center, self.eps, self.q, self.clipped = box, center, eps, q, clipped

    @property
    def is_ball(self) -> bool:
        return self.center is not None

    @property
    def batch(self) -> int:
        return self.box.lower.shape[0]

    def concretize(self, lA, uA, origin=None):
        """Bounds ``(B, S)`` of ``sum(A * x')`` over the set, each side ``None`` if its
        coefficients are. ``origin`` (row, column) places coefficients that cover only a
        spatial window of the input (their last two dims)."""
        A0 = lA if lA is not None else uA
        box = self.box
        if origin is not None:
            size = tuple(A0.shape[-2:])
            box = Interval(crop_window(box.lower, origin, size), crop_window(box.upper, origin, size))
        if not self.is_ball:
            return concretize(lA, uA, box)
        c, e = self.center, self.eps
        if origin is not None:
            c = crop_window(c, origin, size)
            e = e if not torch.is_tensor(e) else crop_window(e, origin, size)
        c = c.flatten(1).unsqueeze(-1)  # (B, n, 1)
        e = e if not torch.is_tensor(e) else e.flatten(1).unsqueeze(1)  # (1 or B, 1, n)

        def side(A, sign):
            A = A.flatten(2)
            mid = torch.matmul(A, c).squeeze(-1)
            if torch.is_tensor(e):
                rad = torch.linalg.vector_norm(A * e, self.q, dim=-1)
            else:
                rad = e * torch.linalg.vector_norm(A, self.q, dim=-1)
            return mid - sign * rad

        lb = None if lA is None else side(lA, 1.0)
        ub = None if uA is None else side(uA, -1.0)
        if self.clipped:  # the box of ball and domain may do better somewhere
            bl, bu = concretize(lA, uA, box)
            lb = None if lb is None else torch.maximum(lb, bl)
            ub = None if ub is None else torch.minimum(ub, bu)
        return lb, ub

    def example(self, b: int) -> "InputSet":
        """Example ``b``'s set alone (batch of one)."""
        box = Interval(self.box.lower[b:b + 1], self.box.upper[b:b + 1])
        if not self.is_ball:
            return InputSet(box)
        e = self.eps
        if torch.is_tensor(e) and e.shape[0] > 1:
            e = e[b:b + 1]
        return InputSet(box, self.center[b:b + 1], e, self.q, self.clipped)

    def fresh(self) -> "InputSet":
        """The same set with a new box object (whose cached centre and radius are its own)."""
        return InputSet(Interval(self.box.lower, self.box.upper), self.center, self.eps,
                        self.q, self.clipped)


def exact_set(x: torch.Tensor) -> InputSet:
    """The set holding ``x`` alone (an input that is not perturbed)."""
    return InputSet(Interval(x, x))


class Perturbation:
    """A set of inputs around (or independent of) the clean input ``x``."""

    def box(self, x: torch.Tensor) -> Interval:  # (B, *shape) bounds
        """The tightest box containing the set (``(B, *shape)`` bounds)."""
        raise NotImplementedError

    def input_set(self, x: torch.Tensor) -> InputSet:
        """The set as the engines see it (by default, its box)."""
        return InputSet(self.box(x))


class LpBall(Perturbation):
    """The l-p ball (``p`` in 1, 2, inf) of radius ``eps`` around ``x``, clipped to
    ``[lower, upper]``."""

    def __init__(self, eps, p=INF, lower=None, upper=None):
        self.p = parse_p(p)
        _check_finite("eps", eps)
        if (torch.is_tensor(eps) and (eps < 0).any()) or (not torch.is_tensor(eps) and eps < 0):
            raise InputError(f"eps must be >= 0, got {eps if not torch.is_tensor(eps) else eps.min().item()}")
        _check_finite("lower", lower)
        _check_finite("upper", upper)
        if lower is not None and upper is not None:
            if torch.as_tensor(torch.as_tensor(lower) > torch.as_tensor(upper)).any():
                raise InputError("the domain's lower bound exceeds its upper bound")
        self.eps, self.lower, self.upper = eps, lower, upper

    def __repr__(self):
        eps = self.eps if not torch.is_tensor(self.eps) else f"tensor{tuple(self.eps.shape)}"
        p = "" if type(self) is LinfBall else f", p={norm_name(self.p)}"
        return f"{type(self).__name__}(eps={eps}{p}, lower={self.lower}, upper={self.upper})"

    def box(self, x):
        return self._box(x)[0]

    def _box(self, x):
        eps = _as(self.eps, x)
        try:
            lo, hi = x - eps, x + eps
        except RuntimeError:
            raise InputError(f"eps of shape {tuple(eps.shape)} does not broadcast against the "
                             f"input of shape {tuple(x.shape)}") from None
        clipped = False
        if self.lower is not None:
            lower = _as(self.lower, x)
            if (x < lower - 1e-6).any():
                raise InputError("input lies below the domain's lower bound "
                                 f"(min {x.min().item():.4g} < {self.lower})")
            clipped = clipped or bool((lower > lo).any())
            lo = torch.maximum(lo, lower)
        if self.upper is not None:
            upper = _as(self.upper, x)
            if (x > upper + 1e-6).any():
                raise InputError("input lies above the domain's upper bound "
                                 f"(max {x.max().item():.4g} > {self.upper})")
            clipped = clipped or bool((upper < hi).any())
            hi = torch.minimum(hi, upper)
        return Interval(torch.minimum(lo, x), torch.maximum(hi, x)), clipped

    def input_set(self, x):
        box, clipped = self._box(x)
        if self.p == INF:
            return InputSet(box)
        eps = self.eps
        if torch.is_tensor(eps) and eps.numel() > 1:
            eps = _as(eps, x)
            lead = eps.shape[0] if eps.dim() == x.dim() else 1
            eps = torch.broadcast_to(eps, (lead, *x.shape[1:]))
        else:
            eps = float(eps)
        return InputSet(box, x, eps, 2.0 if self.p == 2.0 else INF, clipped)


class LinfBall(LpBall):
    """The l-infinity ball of radius ``eps`` around ``x``, clipped to ``[lower, upper]``."""

    def __init__(self, eps, lower=None, upper=None):
        super().__init__(eps, INF, lower, upper)


class Box(Perturbation):
    """An explicit box ``[lower, upper]`` (the clean input only fixes batch size and dtype)."""

    def __init__(self, lower, upper):
        lower, upper = torch.as_tensor(lower), torch.as_tensor(upper)
        _check_finite("lower", lower)
        _check_finite("upper", upper)
        if (lower > upper).any():
            raise InputError("Box: lower bound exceeds upper bound somewhere")
        self.lower, self.upper = lower, upper

    def __repr__(self):
        return f"Box(shape={tuple(self.lower.shape)})"

    def box(self, x):
        lo, hi = _as(self.lower, x), _as(self.upper, x)
        try:
            lo = lo.expand_as(x) if lo.dim() < x.dim() or lo.shape[0] == 1 else lo
            hi = hi.expand_as(x) if hi.dim() < x.dim() or hi.shape[0] == 1 else hi
            if lo.shape != x.shape or hi.shape != x.shape:
                raise RuntimeError
        except RuntimeError:
            raise InputError(f"Box bounds of shape {tuple(self.lower.shape)} do not match the "
                             f"input shape {tuple(x.shape)}") from None
        return Interval(lo, hi)
