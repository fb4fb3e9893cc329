"""Shape ops: reshape (view, flatten) and identity (dropout in eval, clone, contiguous).

A shape op moves elements without changing them, so the interval is the op applied to both
ends and the backward rule moves coefficients back to the input layout.
"""
from __future__ import annotations

from .base import Interval, Op


class Reshape(Op):
    """Reshape the per-sample part to ``shape`` (the batch dimension is kept)."""

    kind = "reshape"

    def __init__(self, shape):
        super().__init__(shape=tuple(int(s) for s in shape))

    def forward(self, x):
        return x.reshape(x.shape[0], *self.attrs["shape"])

    def interval(self, x):
        return Interval(self.forward(x.lower), self.forward(x.upper))

    def backward(self, lA, uA, x, opts=None):
        shape = self.in_shapes[0]
        f = lambda A: None if A is None else A.reshape(*A.shape[:2], *shape)  # noqa: E731
        return [(f(lA), f(uA))], 0.0, 0.0


class Identity(Op):
    """``y = x``."""

    kind = "identity"

    def forward(self, x):
        return x

    def interval(self, x):
        return x

    def backward(self, lA, uA, x, opts=None):
        return [(lA, uA)], 0.0, 0.0
