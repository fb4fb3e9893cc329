"""Elementwise arithmetic: add, sub, mul, div, neg, square.

Each op takes two inputs ``(a, b)`` (``neg`` and ``square`` one), any of which may be bounded or
constant (Python numbers included), and broadcasts like torch. With at most one bounded input
every op here is affine in it; ``mul`` of two bounded tensors uses the McCormick planes;
``square`` (``x * x``, ``x ** 2``) is a convex elementwise op.
"""
from __future__ import annotations

import torch

from .base import Elementwise, Interval, Op, bias_term, is_bounded, unbroadcast


def _scaled(A, scale, in_shape):
    """Backward through ``y = scale * x`` (scale a constant broadcasting against x)."""
    if A is None:
        return None
    if torch.is_tensor(scale) or scale != 1:
        A = A * _sample(scale, A.dim() - 2)
    return unbroadcast(A, in_shape)


def _sample(v, ndim):
    from .base import sample_view
    return sample_view(v, ndim)


def _scale_interval(x: Interval, s) -> Interval:
    c, r = x.center * s, x.radius * (s.abs() if torch.is_tensor(s) else abs(s))
    return Interval(c - r, c + r)


class _Linear2(Op):
    """``y = sa * a + sb * b`` with constant scalars sa, sb (add and sub)."""

    pointwise = True

    sa = 1.0
    sb = 1.0

    def __init__(self, alpha=1):
        super().__init__(**({} if alpha == 1 else {"alpha": alpha}))
        self.alpha = alpha

    def _scales(self):
        return self.sa, self.sb * self.alpha

    def forward(self, a, b):
        sb = self._scales()[1]
        if sb == 1:
            return a + b
        return a - b if sb == -1 else a + sb * b

    def interval(self, a, b):
        sa, sb = self._scales()
        parts = []
        const = 0
        for v, s in ((a, sa), (b, sb)):
            if is_bounded(v):
                parts.append(_scale_interval(v, s))
            else:
                const = const + s * v
        lo = sum(p.lower for p in parts) + const
        hi = sum(p.upper for p in parts) + const
        return Interval(lo, hi)

    def backward(self, lA, uA, a, b, opts=None):
        out = []
        lb = ub = 0.0
        for idx, (v, s) in enumerate(zip((a, b), self._scales())):
            if is_bounded(v):
                shape = self.in_shapes[idx]
                out.append((_scaled(lA, s, shape), _scaled(uA, s, shape)))
            else:
                out.append(None)
                if lA is not None:
                    lb = lb + bias_term(lA, _full(v, s, self.out_shape))
                if uA is not None:
                    ub = ub + bias_term(uA, _full(v, s, self.out_shape))
        return out, lb, ub


def _full(v, s, out_shape):
    """Constant ``s * v`` viewed per sample (broadcast over the output shape)."""
    v = _sample(v, len(out_shape)) if torch.is_tensor(v) else v
    return s * v


class Add(_Linear2):
    """``a + alpha * b``."""

    kind = "add"


class Sub(_Linear2):
    """``a - alpha * b``."""

    kind = "sub"
    sb = -1.0


class Neg(Op):
    """``-x``."""

    pointwise = True

    kind = "neg"

    def forward(self, x):
        return -x

    def interval(self, x):
        return Interval(-x.upper, -x.lower)

    def backward(self, lA, uA, x, opts=None):
        return [(None if lA is None else -lA, None if uA is None else -uA)], 0.0, 0.0


class Mul(Op):
    """``a * b``. One constant factor: a diagonal affine map. Two bounded factors: McCormick
    planes, ``y >= lb*a + la*b - la*lb`` (lower) and ``y <= ub*a + la*b - la*ub`` (upper), valid
    on the box ``[la, ua] x [lb, ub]``."""

    pointwise = True

    kind = "mul"

    def forward(self, a, b):
        return a * b

    def needs_bounds(self, index):
        return all(self.bounded_inputs)  # only the product of two bounded factors uses them

    def interval(self, a, b):
        if is_bounded(a) and is_bounded(b):
            cands = torch.stack([a.lower * b.lower, a.lower * b.upper,
                                 a.upper * b.lower, a.upper * b.upper])
            return Interval(cands.amin(0), cands.amax(0))
        x, c = (a, b) if is_bounded(a) else (b, a)
        return _scale_interval(x, c)

    def backward(self, lA, uA, a, b, opts=None):
        if is_bounded(a) and is_bounded(b):
            return self._mccormick(lA, uA, a, b)
        i, x, c = (0, a, b) if is_bounded(a) else (1, b, a)
        shape = self.in_shapes[i]
        out = [None, None]
        out[i] = (_scaled(lA, c, shape), _scaled(uA, c, shape))
        return out, 0.0, 0.0

    def _mccormick(self, lA, uA, a, b):
        la, ua, lb_, ub_ = a.lower, a.upper, b.lower, b.upper
        # lower plane: y >= lb*a + la*b - la*lb ; upper plane: y <= ub*a + la*b - la*ub
        L = (lb_.unsqueeze(1), la.unsqueeze(1), (-la * lb_).unsqueeze(1))
        U = (ub_.unsqueeze(1), la.unsqueeze(1), (-la * ub_).unsqueeze(1))
        res_a, res_b = [None, None], [None, None]
        biases = [0.0, 0.0]
        for side, A in enumerate((lA, uA)):
            if A is None:
                continue
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            first, second = (L, U) if side == 0 else (U, L)
            res_a[side] = unbroadcast(pos * first[0] + neg * second[0], self.in_shapes[0])
            res_b[side] = unbroadcast(pos * first[1] + neg * second[1], self.in_shapes[1])
            biases[side] = (pos * first[2] + neg * second[2]).flatten(2).sum(-1)
        return [tuple(res_a), tuple(res_b)], biases[0], biases[1]


class Div(Op):
    """``a / c`` with a constant divisor ``c`` (a diagonal affine map)."""

    pointwise = True

    kind = "div"

    def forward(self, a, b):
        return a / b

    def interval(self, a, b):
        if is_bounded(b):
            raise NotImplementedError("division by a bounded tensor has no rule")
        return _scale_interval(a, 1 / b)

    def backward(self, lA, uA, a, b, opts=None):
        s = 1 / b
        shape = self.in_shapes[0]
        return [(_scaled(lA, s, shape), _scaled(uA, s, shape)), None], 0.0, 0.0


class Square(Elementwise):
    """``x * x``. Interval: the exact range (``0`` when ``l <= 0 <= u``). Relaxation (convex):
    ``2 m x - m^2 <= x^2 <= (l + u) x - l u`` with ``m = (l + u) / 2`` (the tangent at the
    midpoint, the best tangent by area, and the chord)."""

    exact_interval = True

    kind = "square"

    def forward(self, x):
        return x * x

    def interval(self, x: Interval) -> Interval:
        l, u = x.lower, x.upper
        hi = torch.maximum(l * l, u * u)
        lo = torch.where((l <= 0) & (u >= 0), torch.zeros_like(l), torch.minimum(l * l, u * u))
        return Interval(lo, hi)

    def relax(self, l, u, opts=None):
        m = (l + u) / 2
        return 2 * m, -m * m, l + u, -l * u
