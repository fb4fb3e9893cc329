"""Elementwise activations, each defined by its forward and its linear relaxation.

ReLU (Zhang et al. 2018, CROWN): stable neurons are exact; for an unstable neuron
(``l < 0 < u``) the upper line is the chord through ``(l, 0)`` and ``(u, u)`` and the lower line
is ``alpha * x`` with ``alpha`` chosen by ``opts["relu_lower"]``:

``"adaptive"`` (default)
    ``alpha = 1`` if ``u >= -l`` else ``0`` (CROWN's choice, minimising the relaxation area);
``"zero"`` / ``"one"``
    fixed slopes 0 or 1;
``"parallel"``
    ``alpha = u / (u - l)``, parallel to the upper line (Fast-Lin / DeepPoly style).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Elementwise, Interval

RELU_LOWER = ("adaptive", "zero", "one", "parallel")


class ReLU(Elementwise):
    """``max(x, 0)``; relaxation: ``aL x <= relu(x) <= u (x - l) / (u - l)`` when unstable."""

    kind = "relu"

    def forward(self, x):
        return F.relu(x)

    def refine_mask(self, index, bound: Interval):
        return (bound.lower < 0) & (bound.upper > 0)

    def relax(self, l, u, opts=None):
        mode = (opts or {}).get("relu_lower", "adaptive")
        active = l >= 0
        unstable = (l < 0) & (u > 0)
        width = torch.where(unstable, u - l, torch.ones_like(u))
        up_slope = torch.where(unstable, u / width, active.to(u.dtype))
        up_bias = torch.where(unstable, -l * u / width, torch.zeros_like(u))
        if mode == "adaptive":
            lo = (u >= -l).to(u.dtype)
        elif mode == "zero":
            lo = torch.zeros_like(u)
        elif mode == "one":
            lo = torch.ones_like(u)
        elif mode == "parallel":
            lo = up_slope
        else:
            raise ValueError(f"relu_lower must be one of {RELU_LOWER}, got {mode!r}")
        lo_slope = torch.where(unstable, lo.detach(), active.to(u.dtype))
        return lo_slope, torch.zeros_like(u), up_slope, up_bias
