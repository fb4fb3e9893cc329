"""Shape and structure ops: ops that move, copy, pad or sum elements.

All dimensions in attributes are *per-sample* dimensions (the batch dimension left out): the
front end refuses anything that mixes examples of a batch (concatenating or slicing along the
batch, reducing over it).

Moving ops (reshape, identity, permute, flip, slice, select, index_select, expand, cat, stack,
pad) have as interval the op applied to both ends, and move coefficients back to the input
layout in ``backward`` (zeros where an input element does not reach the output; sums where it
reaches it several times). Constant pieces (a constant in ``cat``, the fill value of ``pad``)
contribute ``sum(A * constant)`` to the bias. ``sum`` and ``mean`` are affine.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Affine, Interval, Op, _both, bias_term, is_bounded, unbroadcast


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
    pointwise = True

    def forward(self, x):
        return x

    def interval(self, x):
        return x

    def backward(self, lA, uA, x, opts=None):
        return [(lA, uA)], 0.0, 0.0


class _Move(Op):
    """A linear op that only moves elements of its one bounded input (first input; the others
    are constants). Subclasses give ``forward`` and ``transpose(A, *consts)``: coefficients
    ``(B, S, *out)`` back to ``(B, S, *in)``."""

    def transpose(self, A, *consts):
        raise NotImplementedError

    def interval(self, x, *consts):
        return Interval(self.forward(x.lower, *consts), self.forward(x.upper, *consts))

    def backward(self, lA, uA, x, *consts, opts=None):
        nl, nu = _both(lambda A: self.transpose(A, *consts), lA, uA)
        return [(nl, nu)] + [None] * len(consts), 0.0, 0.0


class Permute(_Move):
    """``y = x.permute(0, *[p + 1 for p in perm])``; backward applies the inverse permutation."""

    kind = "permute"

    def __init__(self, perm):
        super().__init__(perm=tuple(int(p) for p in perm))

    def forward(self, x):
        return x.permute(0, *(p + 1 for p in self.attrs["perm"]))

    def transpose(self, A):
        perm = self.attrs["perm"]
        inv = sorted(range(len(perm)), key=lambda i: perm[i])
        return A.permute(0, 1, *(i + 2 for i in inv))


class Flip(_Move):
    """Reverse the order along per-sample ``dims``; its own transpose."""

    kind = "flip"

    def __init__(self, dims):
        super().__init__(dims=tuple(int(d) for d in dims))

    def forward(self, x):
        return x.flip([d + 1 for d in self.attrs["dims"]])

    def transpose(self, A):
        return A.flip([d + 2 for d in self.attrs["dims"]])


class Slice(_Move):
    """``x[..., start:stop:step]`` along per-sample ``dim`` (``start``/``stop`` already clipped
    to the dimension, ``step > 0``). Backward scatters the coefficients into zeros."""

    kind = "slice"

    def __init__(self, dim, start, stop, step=1):
        super().__init__(dim=int(dim), start=int(start), stop=int(stop), step=int(step))

    def _index(self, lead):
        a = self.attrs
        return (slice(None),) * (lead + a["dim"]) + (slice(a["start"], a["stop"], a["step"]),)

    def forward(self, x):
        return x[self._index(1)]

    def transpose(self, A):
        out = A.new_zeros(*A.shape[:2], *self.in_shapes[0])
        out[self._index(2)] = A
        return out


class Select(_Move):
    """``x.select(dim + 1, index)``: one position of per-sample ``dim`` (the dim disappears)."""

    kind = "select"

    def __init__(self, dim, index):
        super().__init__(dim=int(dim), index=int(index))

    def forward(self, x):
        return x.select(self.attrs["dim"] + 1, self.attrs["index"])

    def transpose(self, A):
        a = self.attrs
        out = A.new_zeros(*A.shape[:2], *self.in_shapes[0])
        out[(slice(None),) * (2 + a["dim"]) + (a["index"],)] = A
        return out


class IndexSelect(_Move):
    """``x.index_select(dim + 1, index)`` with a constant 1-d ``index`` (second input; negative
    entries count from the end). Backward adds coefficients back with ``index_add`` (repeated
    indices sum)."""

    kind = "index_select"

    def __init__(self, dim):
        super().__init__(dim=int(dim))

    def _index(self, index, size):
        index = index.long()
        return torch.where(index < 0, index + size, index)

    def forward(self, x, index):
        d = self.attrs["dim"] + 1
        return x.index_select(d, self._index(index, x.shape[d]).to(x.device))

    def transpose(self, A, index):
        d = self.attrs["dim"]
        shape = self.in_shapes[0]
        out = A.new_zeros(*A.shape[:2], *shape)
        return out.index_add(d + 2, self._index(index, shape[d]).to(A.device), A)


class Expand(_Move):
    """Broadcast to the per-sample ``shape`` (size-1 dims repeat; missing leading dims are
    added). Backward sums the coefficients over the repeated dims. A constant input keeps a
    batch dimension of 1."""

    kind = "expand"

    def __init__(self, shape):
        super().__init__(shape=tuple(int(s) for s in shape))

    def forward(self, x):
        shape = self.attrs["shape"]
        if x.dim() < len(shape) + 1:
            x = x.reshape((1,) * (len(shape) + 1 - x.dim()) + tuple(x.shape))
        return x.expand(x.shape[0], *shape)

    def transpose(self, A):
        return unbroadcast(A, self.in_shapes[0])


class Pad(Op):
    """Constant padding ``F.pad(x, pads, value=value)`` of the last per-sample dims (negative
    pads crop). Backward: ``F.pad(A, -pads)``; the fill value contributes ``value * sum of A over
    the padded positions`` to the bias."""

    kind = "pad"

    def __init__(self, pads, value=0.0):
        super().__init__(pads=tuple(int(p) for p in pads), value=float(value or 0.0))

    def forward(self, x):
        return F.pad(x, self.attrs["pads"], value=self.attrs["value"])

    def interval(self, x):
        return Interval(self.forward(x.lower), self.forward(x.upper))

    def backward(self, lA, uA, x, opts=None):
        neg = [-p for p in self.attrs["pads"]]
        nl, nu = _both(lambda A: F.pad(A, neg), lA, uA)
        lb = ub = 0.0
        value = self.attrs["value"]
        if value != 0.0:
            ref = lA if lA is not None else uA
            mask = F.pad(ref.new_zeros(1, *self.in_shapes[0]), self.attrs["pads"], value=value)
            if lA is not None:
                lb = bias_term(lA, mask)
            if uA is not None:
                ub = bias_term(uA, mask)
        return [(nl, nu)], lb, ub


class Cat(Op):
    """Concatenation along per-sample ``dim`` of bounded and constant pieces (constants with
    a batch dimension of 1 are repeated over the batch). Backward: each bounded piece gets its
    slice of the coefficients, each constant piece adds ``sum(A_slice * constant)``."""

    kind = "cat"

    def __init__(self, dim):
        super().__init__(dim=int(dim))

    def _join(self, xs):
        return torch.cat(xs, self.attrs["dim"] + 1)

    def forward(self, *xs):
        B = max(x.shape[0] for x in xs)
        return self._join([x if x.shape[0] == B else x.expand(B, *x.shape[1:]) for x in xs])

    def interval(self, *xs):
        lo = [x.lower if is_bounded(x) else x for x in xs]
        hi = [x.upper if is_bounded(x) else x for x in xs]
        return Interval(self.forward(*lo), self.forward(*hi))

    def _pieces(self, xs):
        """(offset, size) of each input along the joined dim."""
        d = self.attrs["dim"]
        off = 0
        for i, x in enumerate(xs):
            n = self.in_shapes[i][d] if is_bounded(x) else x.shape[d + 1]
            yield off, n
            off += n

    def _part(self, A, off, n):
        return A.narrow(self.attrs["dim"] + 2, off, n)

    def backward(self, lA, uA, *xs, opts=None):
        out = []
        lb = ub = 0.0
        for x, (off, n) in zip(xs, self._pieces(xs)):
            pl = None if lA is None else self._part(lA, off, n)
            pu = None if uA is None else self._part(uA, off, n)
            if is_bounded(x):
                out.append((pl, pu))
                continue
            out.append(None)
            if pl is not None:
                lb = lb + bias_term(pl, x)
            if pu is not None:
                ub = ub + bias_term(pu, x)
        return out, lb, ub


class Stack(Cat):
    """``torch.stack`` along per-sample ``dim``: a concatenation of pieces that each add a dim
    of size 1 there."""

    kind = "stack"

    def _join(self, xs):
        return torch.stack(xs, self.attrs["dim"] + 1)

    def _pieces(self, xs):
        for i in range(len(xs)):
            yield i, 1

    def _part(self, A, off, n):
        return A.select(self.attrs["dim"] + 2, off)


class Sum(Affine):
    """Sum over per-sample ``dims`` (``keepdim`` as torch). Affine with weights 1, so IBP is
    exact; the transpose repeats each coefficient over the summed dims."""

    kind = "sum"

    def __init__(self, dims, keepdim=False):
        super().__init__(dims=tuple(sorted(int(d) for d in dims)), keepdim=bool(keepdim))

    def _scale(self, shape):
        return 1.0

    def apply(self, x, absolute=False):
        a = self.attrs
        y = x.sum([d + 1 for d in a["dims"]], keepdim=a["keepdim"])
        s = self._scale(x.shape[1:])
        return y if s == 1.0 else y * s

    def transpose(self, A):
        shape = self.in_shapes[0]
        if not self.attrs["keepdim"]:
            for d in self.attrs["dims"]:
                A = A.unsqueeze(d + 2)
        A = A.expand(*A.shape[:2], *shape)
        s = self._scale(shape)
        return A if s == 1.0 else A * s


class Mean(Sum):
    """Mean over per-sample ``dims`` (global average pooling is ``dims=(1, 2)`` of a
    ``(C, H, W)`` sample): ``Sum`` scaled by ``1 / count``."""

    kind = "mean"

    def _scale(self, shape):
        return 1.0 / math.prod(shape[d] for d in self.attrs["dims"])
