"""The op rule interface.

Every operation of the vocabulary is an :class:`Op` with four rules:

``forward(*inputs)``
    the concrete operation (inputs are tensors, batch first, or constants).
``interval(*inputs)``
    IBP: given an :class:`Interval` for each bounded input (and the value of each constant
    input), an interval containing the output for every point of the input intervals.
``backward(lA, uA, *inputs, opts)``
    linear bound propagation. ``lA`` is the coefficient tensor of the *lower* bound being
    built, ``uA`` of the upper bound (either may be ``None``), each of shape
    ``(B or 1, S, *out_shape)``: row ``s`` says the bound so far is ``sum(A[s] * out) + bias``.
    The rule returns ``(per_input, lbias, ubias)`` where ``per_input[i]`` is ``(lA_i, uA_i)`` for a
    bounded input (``None`` for a constant one) and the biases are ``(B or 1, S)`` tensors (or
    ``0.0``), such that for every input point in the current intervals::

        sum(lA * out) >= sum_i sum(lA_i * in_i) + lbias
        sum(uA * out) <= sum_i sum(uA_i * in_i) + ubias

    A batch dimension of size 1 means "the same for every example" and is kept as long as the
    rule allows (affine rules do), which saves memory when the start is an identity.
``relax(l, u, opts)`` (elementwise nonlinear ops only)
    lines ``aL*x + bL <= f(x) <= aU*x + bU`` valid on ``[l, u]``; :class:`Elementwise` turns them
    into ``interval`` and ``backward`` by the sign of the coefficients.

Rules see only tensors and their own attributes; engines never look at op names.
Ops learn the per-sample shapes of their inputs and output from the graph (``in_shapes``,
``out_shape``) and which inputs are bounded (``bounded_inputs``) when the graph is built.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class Interval:
    """Elementwise bounds ``lower <= x <= upper`` (tensors of the node's full shape).

    Behaves like the pair ``(lower, upper)`` (unpacking, indexing). It may also be built from a
    center and radius (:meth:`from_center`, what affine rules produce); each form is computed
    from the other only when asked for, so chains of affine ops never convert back and forth.
    """

    __slots__ = ("_lower", "_upper", "_center", "_radius")

    def __init__(self, lower: Tensor, upper: Tensor):
        self._lower, self._upper = lower, upper
        self._center = self._radius = None

    @classmethod
    def from_center(cls, center: Tensor, radius: Tensor) -> "Interval":
        iv = cls.__new__(cls)
        iv._lower = iv._upper = None
        iv._center, iv._radius = center, radius
        return iv

    @property
    def lower(self) -> Tensor:
        if self._lower is None:
            self._lower = self._center - self._radius
        return self._lower

    @property
    def upper(self) -> Tensor:
        if self._upper is None:
            self._upper = self._center + self._radius
        return self._upper

    @property
    def center(self) -> Tensor:
        if self._center is None:
            self._center = (self._upper + self._lower) / 2
        return self._center

    @property
    def radius(self) -> Tensor:
        if self._radius is None:
            self._radius = (self._upper - self._lower) / 2
        return self._radius

    def __iter__(self):
        yield self.lower
        yield self.upper

    def __getitem__(self, i):
        return (self.lower, self.upper)[i]

    def __len__(self):
        return 2

    def __repr__(self):
        return f"Interval(shape={tuple(self.lower.shape)})"


def is_bounded(v: Any) -> bool:
    return isinstance(v, Interval)


class Op:
    """Base class of every operation. Subclasses set ``kind`` (the vocabulary name)."""

    kind = "op"
    in_shapes: tuple = ()
    out_shape: tuple | None = None
    #: per input, whether it depends on the model's input (set with the shapes; empty if
    #: unknown)
    bounded_inputs: tuple = ()
    #: True for ops acting elementwise (output element i depends on input element i only,
    #: constants broadcasting per channel at most). Engines may then apply the rule to a
    #: spatial window of the tensors instead of the whole (see engines/backward.py).
    pointwise = False
    #: values of its (first) input at which the op switches between linear pieces, when it is
    #: piecewise linear with a kink at 0 (ReLU, LeakyReLU, Abs: ``(0.0,)``): branch and bound
    #: splits the input there, after which the op is linear on each side
    split_points: tuple = ()

    def __init__(self, **attrs):
        self.attrs = attrs

    def __repr__(self) -> str:
        if not self.attrs:
            return self.kind
        a = ", ".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.kind}[{a}]"

    # rules ---------------------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError

    def interval(self, *inputs) -> Interval:
        raise NotImplementedError(f"{self.kind} has no interval rule")

    def backward(self, lA, uA, *inputs, opts=None):
        raise NotImplementedError(f"{self.kind} has no backward rule")

    # hooks used by engines --------------------------------------------------------------------
    def needs_bounds(self, index: int) -> bool:
        """Whether ``backward`` needs the interval of input ``index`` (nonlinear ops do)."""
        return False

    def refine_mask(self, index: int, bound: Interval) -> Tensor | None:
        """Which elements of input ``index`` benefit from tighter bounds (``None``: all).

        Engines computing intermediate bounds with CROWN only refine these elements; e.g. ReLU
        returns its unstable neurons, whose relaxation is not exact.
        """
        return None

    def const_view(self, index: int, value):
        """Constant input ``index`` as it broadcasts against one sample of the output: a tensor
        of ``len(out_shape)`` dims (or the number itself). Engines read from it along which
        output axes a constant varies (e.g. to crop it to a spatial window). The default is
        torch's broadcasting from the right; ops that place a constant otherwise (BatchNorm's
        per-channel vectors) override it."""
        if not torch.is_tensor(value) or self.out_shape is None:
            return value
        nd = len(self.out_shape)
        v = sample_view(value, nd)
        return v.reshape((1,) * (nd - v.dim()) + tuple(v.shape))

    def flat_below(self, index: int, upper: Tensor) -> Tensor | None:
        """Elements of input ``index`` at which the op's output is one constant for every
        input value ``<= upper`` (``upper``: an upper bound of that input, its full shape), so
        that the input's lower bound matters to none of the op's rules there; ``None`` when
        the op cannot say (the default). ReLU: ``upper <= 0``."""
        return None

    def wants_clean(self, *consts) -> bool:
        """Whether the rule depends on the clean (unperturbed) pass, e.g. BatchNorm with batch
        statistics. ``consts`` holds constant input values (``None`` at bounded positions)."""
        return False

    def bind(self, *clean_inputs) -> tuple["Op", dict]:
        """Specialise the rule to the clean pass (only called if ``wants_clean``).

        ``clean_inputs`` are the input values of the clean forward pass. Returns the op to use
        for this bound computation and ``{input index: constant value}`` overrides.
        """
        return self, {}


# ---------------------------------------------------------------------------- helpers
def sample_view(v, ndim: int):
    """View a constant so that it broadcasts against a per-sample tensor of ``ndim`` dims.

    Constants written against the full (batched) shape carry a leading dimension of 1, which is
    dropped; tensors of fewer dims broadcast from the right as usual.
    """
    if not torch.is_tensor(v):
        return v
    while v.dim() > ndim:
        if v.shape[0] != 1:
            raise ValueError(f"constant of shape {tuple(v.shape)} has a batch dimension")
        v = v.squeeze(0)
    return v


def unbroadcast(A: Tensor, in_shape: tuple) -> Tensor:
    """Sum ``A`` (``(B, S, *out)``) down to ``(B, S, *in_shape)`` after broadcasting."""
    in_shape = tuple(in_shape)
    out = A.shape[2:]
    if tuple(out) == in_shape:
        return A
    extra = len(out) - len(in_shape)
    if extra > 0:
        A = A.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(2 + i for i, s in enumerate(in_shape) if s == 1 and A.shape[2 + i] != 1)
    if dims:
        A = A.sum(dim=dims, keepdim=True)
    return A


def bias_term(A: Tensor, offset) -> Tensor:
    """``sum(A * offset)`` per row: ``(B, S)`` for ``A`` of shape ``(B, S, *shape)``.

    ``offset`` is a number or a constant broadcasting against one sample; ``A`` is first summed
    over the dimensions the offset is broadcast along, so no ``A``-sized product is formed.
    """
    if not torch.is_tensor(offset):
        return A.flatten(2).sum(-1) * offset
    nd = A.dim() - 2
    offset = sample_view(offset, nd)
    offset = offset.reshape((1,) * (nd - offset.dim()) + tuple(offset.shape))
    dims = tuple(2 + i for i, s in enumerate(offset.shape) if s == 1 and A.shape[2 + i] != 1)
    if dims:
        A = A.sum(dim=dims, keepdim=True)
    v = offset.expand(A.shape[2:]).reshape(-1, 1).to(A.dtype)
    return torch.matmul(A.flatten(2), v).squeeze(-1)


def concretize(lA: Tensor | None, uA: Tensor | None, bound: Interval):
    """Bounds of ``sum(A * x)`` over the box ``bound``: ``A c -/+ |A| r`` per row.

    ``A`` is ``(B or 1, S, *shape)``, the box ``(B, *shape)``; returns ``(B, S)`` tensors.
    """
    c = bound.center.flatten(1).unsqueeze(-1)  # (B, n, 1)
    r = bound.radius.flatten(1).unsqueeze(-1)
    if lA is not None and lA is uA:
        A = lA.flatten(2)
        mid, rad = torch.matmul(A, c).squeeze(-1), torch.matmul(A.abs(), r).squeeze(-1)
        return mid - rad, mid + rad
    lb = ub = None
    if lA is not None:
        A = lA.flatten(2)
        lb = (torch.matmul(A, c) - torch.matmul(A.abs(), r)).squeeze(-1)
    if uA is not None:
        A = uA.flatten(2)
        ub = (torch.matmul(A, c) + torch.matmul(A.abs(), r)).squeeze(-1)
    return lb, ub


def crop_window(t: Tensor, origin: tuple, size: tuple) -> Tensor:
    """The spatial window of ``t`` (its last two dims) with corner ``origin`` (row, column)
    and ``size`` (height, width): what coefficients covering only that window of a node
    meet."""
    (r, c), (h, w) = origin, size
    return t[..., r:r + h, c:c + w]


def pair_buffer(lA, uA, *per_element):
    """Uninitialised storage for the next ``(lA, uA)`` of a backward step: ``(lo, up)``, the two
    contiguous halves of one tensor (``B`` broadcast over the coefficients and the
    ``per_element`` tensors), so that the next linear map takes both in one call without
    concatenating them (:func:`_both`). ``None`` when autograd records (the halves are written
    in place) or the sides differ in rows."""
    if lA is None or uA is None or torch.is_grad_enabled() or lA.shape[1:] != uA.shape[1:]:
        return None
    shapes = [lA.shape, uA.shape]
    for t in per_element:  # (B, *shape) per element or (B, S, *shape) per row
        if torch.is_tensor(t) and t.dim() >= lA.dim() - 1:
            shapes.append(t.shape if t.dim() == lA.dim() else (t.shape[0], 1, *t.shape[1:]))
    full = torch.broadcast_shapes(*shapes)
    if tuple(full[1:]) != tuple(lA.shape[1:]):
        return None
    buf = lA.new_empty((2, *full))
    return buf[0], buf[1]


def _halves(lA, uA):
    """``[lA; uA]`` stacked along the batch axis as a view, when the two are the contiguous
    halves of one tensor (see :func:`pair_buffer`); else ``None``."""
    base = lA._base
    if base is None or uA._base is not base or lA.shape != uA.shape or \
            not (lA.is_contiguous() and uA.is_contiguous() and base.is_contiguous()) or \
            base.numel() != 2 * lA.numel() or lA.data_ptr() != base.data_ptr() or \
            uA.data_ptr() != base.data_ptr() + lA.numel() * lA.element_size():
        return None
    return base.view(2 * lA.shape[0], *lA.shape[1:])


def _both(fn, lA, uA):
    """Apply a linear map to lA and uA, in one call when both are present."""
    if lA is None and uA is None:
        return None, None
    if lA is None:
        return None, fn(uA)
    if uA is None or lA is uA:  # the two sides are one tensor until a relaxation splits them
        out = fn(lA)
        return out, (None if uA is None else out)
    # one call for both (the batch axis, like the row axis, only lists independent maps);
    # no copy when they already are the halves of one tensor
    if lA.shape == uA.shape:
        both = _halves(lA, uA)
        out = fn(torch.cat([lA, uA]) if both is None else both)
        B = lA.shape[0]
        return out[:B], out[B:]
    return fn(lA), fn(uA)


class Affine(Op):
    """Ops affine in their bounded first input: ``y = W x + offset`` with constants ``W``.

    Subclasses provide ``apply(x, *consts, absolute)`` (``W x`` or ``|W| x``, no offset),
    ``offset(*consts)`` (broadcastable to the per-sample output, or ``None``) and
    ``transpose(A, *consts)`` (``A W``: ``(B, S, *out) -> (B, S, *in)``).

    IBP uses the center/radius form ``(W c + offset, |W| r)``: two passes, exact for a single
    affine layer. An input held as lower/upper going into a map with fewer outputs than
    inputs is mapped as ``(W (u + l) / 2 + offset, |W| (u - l) / 2)``, halving on the smaller
    side. Backward: ``A -> A W``, bias ``+= sum(A * offset)``.
    """

    def apply(self, x, *consts, absolute: bool = False):
        raise NotImplementedError

    def offset(self, *consts):
        return None

    def transpose(self, A, *consts):
        raise NotImplementedError

    def forward(self, x, *consts):
        y = self.apply(x, *consts)
        off = self.offset(*consts)
        return y if off is None else y + off

    def interval(self, x: Interval, *consts) -> Interval:
        if x._center is None and x.lower.numel() > _numel_out(self, x.lower):
            # lower/upper form into a shrinking map: halve after the map, on the smaller side
            # (W (u + l) / 2 + offset, |W| (u - l) / 2), saving two input-sized passes
            s = self.apply(x.upper + x.lower, *consts)
            r = self.apply(x.upper - x.lower, *consts, absolute=True) * 0.5
            off = self.offset(*consts)
            c = s * 0.5 if off is None else s * 0.5 + off
            return Interval.from_center(c, r)
        c = self.forward(x.center, *consts)
        r = self.apply(x.radius, *consts, absolute=True)
        return Interval.from_center(c, r)

    def backward(self, lA, uA, x, *consts, opts=None):
        off = self.offset(*consts)
        lb = ub = 0.0
        if off is not None:
            if lA is not None:
                lb = bias_term(lA, off)
            if uA is not None:
                ub = lb if uA is lA else bias_term(uA, off)
        nl, nu = _both(lambda A: self.transpose(A, *consts), lA, uA)
        return [(nl, nu)] + [None] * len(consts), lb, ub


class Elementwise(Op):
    """Unary elementwise nonlinear ops defined by a linear relaxation.

    Subclasses implement ``forward`` and ``relax(l, u, opts) -> (aL, bL, aU, bU)`` such that
    ``aL*x + bL <= f(x) <= aU*x + bU`` for all ``x`` in ``[l, u]`` (slopes are tensors shaped
    like ``l``; an intercept may be the number ``0``); the default ``interval``
    assumes ``f`` is monotone non-decreasing (override otherwise).

    Backward (the shared CROWN step): for the lower bound, positive coefficients take the lower
    line and negative ones the upper line; mirrored for the upper bound.
    """

    pointwise = True
    #: whether ``interval`` is the exact range of ``f`` over the input interval (monotone ops
    #: using the default rule, and ops whose own rule computes the range). Then a CROWN bound
    #: of the output can never beat ``interval`` applied to a CROWN-refined input bound (the
    #: relaxation's line lies below ``f`` on that interval), so engines skip refining it.
    exact_interval = False
    #: whether ``relax`` takes ``opts["kink_slope"]``: a tensor of values in ``[0, 1]``, shaped
    #: like ``l`` or ``(B, S, *shape)`` (one per coefficient row), that places the slope of the
    #: line through the op's kink between the two sides' slopes for elements across it; any such
    #: value gives a sound line, so alpha-CROWN (:mod:`boundgraph.engines.alpha`) optimises it.
    kink_slope = False

    def kink_slope_init(self, l, u, opts=None):
        """The ``kink_slope`` value of the default relaxation (``opts["relu_lower"]``)."""
        raise NotImplementedError(f"{self.kind} has no optimisable kink slope")

    def needs_bounds(self, index: int) -> bool:
        return True

    def interval(self, x: Interval) -> Interval:
        return Interval(self.forward(x.lower), self.forward(x.upper))

    def relax(self, l, u, opts=None):
        raise NotImplementedError

    def backward(self, lA, uA, x: Interval, opts=None):
        aL, bL, aU, bU = self.relax(x.lower, x.upper, opts or {})
        nl = nu = None
        lb = ub = 0.0
        outs = pair_buffer(lA, uA, aL, aU) or (None, None)
        if lA is not None:  # positive coefficients take the lower line, negative the upper
            nl, lb = relaxation_step(lA, aL, bL, aU, bU, out=outs[0])
        if uA is not None:  # mirrored
            nu, ub = relaxation_step(uA, aU, bU, aL, bL, out=outs[1])
        return [(nl, nu)], lb, ub


def by_side(side, lA, uA):
    """``backward``'s result for a single bounded input whose two sides are computed by
    ``side(A, lower) -> (A', bias)``: ``([(lA', uA')], lbias, ubias)``."""
    nl = nu = None
    lb = ub = 0.0
    if lA is not None:
        nl, lb = side(lA, True)
    if uA is not None:
        nu, ub = side(uA, False)
    return [(nl, nu)], lb, ub


def _numel_out(op, x: Tensor) -> int:
    """Elements of ``op``'s output for a batch like ``x`` (its input's size if unknown)."""
    if op.out_shape is None:
        return x.numel()
    n = x.shape[0]
    for d in op.out_shape:
        n *= d
    return n


def _rowdot(A, v):
    """``sum(A * v)`` per row without materialising the product: ``(B, S)``. ``v`` is shaped
    like one row (``(B, *shape)``) or like ``A`` (one per row)."""
    if v.dim() == A.dim():
        return (A * v).flatten(2).sum(-1)
    return torch.matmul(A.flatten(2), v.flatten(1).unsqueeze(-1)).squeeze(-1)


def _per_row(t, A):
    """A line parameter (``(B, *shape)``, or ``(B, S, *shape)`` with one per row of ``A``) in
    the layout of ``A`` (``(B, S, *shape)``)."""
    return t.unsqueeze(1) if torch.is_tensor(t) and t.dim() < A.dim() else t


def _is_zero(b) -> bool:
    return not torch.is_tensor(b) and b == 0


def relaxation_step(A, a_pos, b_pos, a_neg, b_neg, out=None):
    """Coefficients ``A`` through lines ``(a, b)``: positive entries of ``A`` take
    ``(a_pos, b_pos)`` and negative ones ``(a_neg, b_neg)``. Returns ``(A', bias)``; ``A'`` is
    written into ``out`` when given (without autograd; see :func:`pair_buffer`).

    Written as ``A * a_base + part * (a_other - a_base)`` with a single sign split, choosing
    the base line so that a zero intercept (a number ``0``, e.g. ReLU's lower line) costs
    nothing.
    """
    if _is_zero(b_pos) and not _is_zero(b_neg):  # split off the negative part
        part, (a_base, b_base), (a_other, b_other) = A.clamp(max=0), (a_pos, b_pos), (a_neg, b_neg)
    else:
        part, (a_base, b_base), (a_other, b_other) = A.clamp(min=0), (a_neg, b_neg), (a_pos, b_pos)
    a_base, a_other = _per_row(a_base, A), _per_row(a_other, A)
    da = a_other - a_base
    new = A * a_base if out is None else torch.mul(A, a_base, out=out)
    if torch.is_grad_enabled():
        new = torch.addcmul(new, part, da)  # one pass instead of a product and a sum
    else:
        new.addcmul_(part, da)
    bias = 0.0
    if not _is_zero(b_base):
        bias = _rowdot(A, b_base)
        if torch.is_tensor(b_other) and b_other.dim() != b_base.dim():  # one is per row
            b_other, b_base = _per_row(b_other, A), _per_row(b_base, A)
        b_other = b_other - b_base
    if not _is_zero(b_other):
        bias = bias + _rowdot(part, b_other)
    return new, bias
