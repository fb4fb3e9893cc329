"""Input sets. Every perturbation set here is a box, which is what the engines concretise over.

``LinfBall(eps, lower, upper)``
    ``{x' : ||x' - x||_inf <= eps}`` intersected with the data domain ``[lower, upper]`` (e.g.
    ``[0, 1]`` for images); ``eps`` is a number or a tensor broadcasting against one example
    (per-channel eps for normalised inputs, shape ``(C, 1, 1)``).
``Box(lower, upper)``
    an explicit box, per example ``(B, *shape)`` or broadcasting against one example.
"""
from __future__ import annotations

import math

import torch

from .errors import InputError
from .ops.base import Interval


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


class Perturbation:
    """A set of inputs around (or independent of) the clean input ``x``."""

    def box(self, x: torch.Tensor) -> Interval:  # (B, *shape) bounds
        raise NotImplementedError


class LinfBall(Perturbation):
    """The l-infinity ball of radius ``eps`` around ``x``, clipped to ``[lower, upper]``."""

    def __init__(self, eps, lower=None, upper=None):
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
        return f"LinfBall(eps={eps}, lower={self.lower}, upper={self.upper})"

    def box(self, x):
        eps = _as(self.eps, x)
        lo, hi = x - eps, x + eps
        if self.lower is not None:
            lower = _as(self.lower, x)
            if (x < lower - 1e-6).any():
                raise InputError("input lies below the domain's lower bound "
                                 f"(min {x.min().item():.4g} < {self.lower})")
            lo = torch.maximum(lo, lower)
        if self.upper is not None:
            upper = _as(self.upper, x)
            if (x > upper + 1e-6).any():
                raise InputError("input lies above the domain's upper bound "
                                 f"(max {x.max().item():.4g} > {self.upper})")
            hi = torch.minimum(hi, upper)
        return Interval(torch.minimum(lo, x), torch.maximum(hi, x))


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
