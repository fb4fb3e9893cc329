"""Converter registry of the torch front end, and the helpers converters use.

:data:`CONVERTERS` maps aten op names to converters (:func:`register_op`); the built-in
converters live in :mod:`boundgraph.frontends.torch_converters` and the tracing loop that
consults them in :mod:`boundgraph.frontends.torch_trace`. The helpers give converters
their arguments by schema name (:func:`_args`) and the per-sample view of shapes and dims
(the batch axis left out, wherever torch keeps it).

``_BDIM``, ``_BATCH`` and ``_INPUT_DEPENDENT`` are state of the trace in progress, shared
with the tracing loop: it fills them in place for each trace and never rebinds them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx

Factory = Callable[[dict, fx.Node], tuple]
CONVERTERS: dict[str, Factory] = {}


class Unsupported(Exception):
    """Raised by a converter for a use of an op it cannot bound (e.g. division by a tensor
    that depends on the input)."""


def register_op(target, factory: Factory | None = None):
    """Register how an aten op becomes a bound-graph op (usable as a decorator).

    ``target`` is an op overload (``torch.ops.aten.expm1.default``) or its name
    (``"aten.expm1.default"``, as printed in :class:`~boundgraph.UnsupportedOpError`). It replaces
    any earlier rule for that name; ``CONVERTERS.pop(name)`` removes it again.

    ``factory(args, node)`` receives the op's arguments by schema name (``args["self"]``,
    ``args["dim"]``, ...; defaults filled in) and the ``torch.fx`` node, and returns
    ``(op, inputs)``: an :class:`boundgraph.ops.Op` instance and the list of its inputs, each an
    fx node taken from ``args`` or a literal constant (number, tensor). It may raise
    :class:`Unsupported` ("this use of the op has no rule", e.g. a dimension that is the batch);
    the reason then appears in the error message. Ops only ever see per-sample shapes
    (``op.in_shapes``, ``op.out_shape``, batch dimension left out) and batch-first tensors.

    Converters are only consulted for nodes that depend on the model's input; computations on
    parameters, buffers and literals alone are evaluated by torch itself.

    Example, a rule for ``torch.expm1`` (``exp(x) - 1``: convex and increasing)::

        import boundgraph as bg

        class Expm1(bg.ops.Elementwise):
            kind = "expm1"

            def forward(self, x):
                return torch.expm1(x)

            # interval: Elementwise's default (f(l), f(u)) is right for increasing functions

            def relax(self, l, u, opts=None):
                # lines valid on [l, u]: tangent at the midpoint below, chord above
                m = (l + u) / 2
                k = (torch.exp(u) - torch.exp(l)) / (u - l).clamp(min=1e-12)
                return torch.exp(m), torch.exp(m) * (1 - m) - 1, k, torch.expm1(l) - k * l

        bg.register_op("aten.expm1.default", lambda args, node: (Expm1(), [args["self"]]))

    (A rule used in earnest must also be sound in floating point, e.g. for ``u - l`` near 0;
    see :mod:`boundgraph.ops.smooth_activations` for how the built-in rules do it.)
    """
    name = target if isinstance(target, str) else str(target)

    def deco(f):
        CONVERTERS[name] = f
        return f

    return deco(factory) if factory is not None else deco


def _args(node: fx.Node) -> dict[str, Any]:
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return {**{str(i): a for i, a in enumerate(node.args)}, **node.kwargs}
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


def _val_shape(node) -> tuple | None:
    v = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(v.shape) if torch.is_tensor(v) else None


# The batch axis. The bound graph keeps it first; torch values may carry it elsewhere (a
# seq-first layer, an RNN's final states ``(layers, batch, hidden)``). ``_BDIM`` holds its
# position in each input-dependent value (found from the symbolic batch size torch.export
# puts in the value's shape); the graph stores the value with that axis moved to the front
# and converters see dims through :func:`_sample_dim` / :func:`_sample_shape`.
_BDIM: dict = {}
_BATCH: list = []  # the symbolic batch size (one element, set per trace)


def _batch_axis(node) -> int | None:
    """Position of the batch axis in ``node``'s value; ``None`` if it has none as a dim of
    its own (merged with another dim, or reduced away)."""
    shape = _val_shape(node)
    if shape is None or not _BATCH:
        return None
    b = _BATCH[0]
    hits = [i for i, s in enumerate(shape) if not isinstance(s, int) and str(s) == b]
    return hits[0] if len(hits) == 1 else None


def _bdim(node) -> int:
    return _BDIM.get(node, 0) if isinstance(node, fx.Node) else 0


def _sample_shape(node) -> tuple[int, ...]:
    shape = _val_shape(node)
    p = _bdim(node)
    return tuple(int(s) for i, s in enumerate(shape) if i != p)



def _sample_dim(node, dim, ndim=None) -> int:
    """Per-sample index of dimension ``dim`` of ``node``'s (batched) value (the batch axis
    moved to the front); refuses the batch axis itself."""
    ndim = len(_val_shape(node)) if ndim is None else ndim
    if not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise Unsupported(f"dimension {dim} of a {ndim}-d tensor")
    dim = dim % ndim
    p = _bdim(node)
    if dim == p:
        raise Unsupported("operations along the batch dimension are not supported")
    return dim if dim < p else dim - 1


_INPUT_DEPENDENT: set = set()


def _depends_on_input(n: fx.Node) -> bool:
    return n in _INPUT_DEPENDENT


class _LiveFlag:
    """Marker: the ``training`` flag of submodule ``path``, looked up at every call."""

    def __init__(self, path):
        self.path = path
