"""Torch front end: ``nn.Module`` -> :class:`~boundgraph.graph.BoundGraph` via ``torch.export``.

The module is exported once in evaluation mode with a dynamic batch dimension, so any batch
size works afterwards. ``torch.export`` keeps high-level aten ops (``aten.conv2d``,
``aten.linear``, ``aten.batch_norm``, ...) which map one-to-one onto the op vocabulary through
the converter table :data:`CONVERTERS`. Parameters and buffers become ``param`` nodes that look
up the module's own tensors at every call (no copies), and each BatchNorm reads the live
``training`` flag of its module, so ``model.train()`` / ``model.eval()`` behave as in torch.

Nodes computed from constants only (parameters, buffers, literals) are evaluated by torch
itself at every call, on the live values. Adding a rule for an aten op nobody handles yet: see
:func:`register_op`.
"""
from __future__ import annotations

import inspect
import math
import re
import warnings
from typing import Any, Callable

import torch
from torch import fx

from .. import ops as O
from ..errors import TraceError, UnsupportedOpError
from ..graph import BoundGraph, Node
from .decompose import batch_first_attention, decompose

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
    see :mod:`boundgraph.ops.activations` for how the built-in rules do it.)
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


def _keeps_batch(node) -> bool:
    return _batch_axis(node) is not None


# ------------------------------------------------------------------------------- converters
def _reshape(a, node):
    x = a["self"]
    q = _batch_axis(node)
    if q is None:
        raise Unsupported("reshapes across the batch dimension are not supported")
    before_in = math.prod(int(s) for s in _val_shape(x)[:_bdim(x)])
    before_out = math.prod(int(s) for s in _val_shape(node)[:q])
    if before_in != before_out:  # elements would change sides of the batch axis
        raise Unsupported("reshapes that move elements across the batch dimension")
    return O.Reshape(_sample_shape(node)), [x]


for _n in ("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
           "aten.flatten.using_ints", "aten.unsqueeze.default", "aten.squeeze.dim",
           "aten.squeeze.dims", "aten.squeeze.default", "aten.unflatten.int"):
    register_op(_n, _reshape)

for _n in ("aten.dropout.default", "aten.clone.default", "aten.contiguous.default",
           "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
           "aten.detach_.default",
           "aten.feature_dropout.default", "aten.alpha_dropout.default"):
    register_op(_n, lambda a, node: (O.Identity(), [a.get("self", a.get("input"))]))

register_op("aten.linear.default",
            lambda a, n: (O.Linear(), [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])))
register_op("aten.relu.default", lambda a, n: (O.ReLU(), [a["self"]]))
register_op("aten.neg.default", lambda a, n: (O.Neg(), [a["self"]]))
register_op("aten.add.Tensor", lambda a, n: (O.Add(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.add.Scalar", lambda a, n: (O.Add(a["alpha"]), [a["self"], a["other"]]))


@register_op("aten.sub.Tensor")
def _sub(a, node):
    x, other = a["self"], a["other"]
    if a["alpha"] == 1 and isinstance(other, fx.Node) and \
            str(other.target) == "aten.mean.dim" and other.args[0] is x:
        m = _args(other)
        if m["keepdim"] and m.get("dtype") is None and m["dim"]:
            # x - x.mean(dims): one affine op, whose interval keeps the correlation
            return O.Center([_sample_dim(x, d) for d in m["dim"]]), [x]
    return O.Sub(a["alpha"]), [x, other]


register_op("aten.sub.Scalar", lambda a, n: (O.Sub(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.rsub.Scalar", lambda a, n: (O.Sub(a["alpha"]), [a["other"], a["self"]]))
register_op("aten.rsub.Tensor", lambda a, n: (O.Sub(a["alpha"]), [a["other"], a["self"]]))


@register_op("aten.mul.Tensor")
def _mul(a, node):
    if isinstance(a["self"], fx.Node) and a["self"] is a["other"]:
        return O.Square(), [a["self"]]  # x * x: one convex op, tighter than McCormick
    return O.Mul(), [a["self"], a["other"]]


register_op("aten.mul.Scalar", lambda a, n: (O.Mul(), [a["self"], a["other"]]))


@register_op("aten.div.Tensor")
@register_op("aten.div.Scalar")
def _div(a, node):
    if isinstance(a["other"], fx.Node) and _depends_on_input(a["other"]):
        raise Unsupported("division by a tensor that depends on the input")
    return O.Div(), [a["self"], a["other"]]


@register_op("aten.conv2d.default")
def _conv2d(a, node):
    ins = [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])
    return O.Conv2d(a["stride"], a["padding"], a["dilation"], a["groups"]), ins


@register_op("aten.conv1d.default")
def _conv1d(a, node):
    if isinstance(a["padding"], str):
        raise Unsupported(f"padding={a['padding']!r} (give the padding as numbers)")
    ins = [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])
    return O.Conv1d(a["stride"], a["padding"], a["dilation"], a["groups"]), ins


@register_op("aten.conv_transpose1d.default")
@register_op("aten.conv_transpose2d.input")
def _conv_transpose(a, node):
    ins = [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])
    return O.ConvTranspose(a["stride"], a["padding"], a["output_padding"], a["groups"],
                           a["dilation"]), ins


@register_op("aten.upsample_nearest1d.vec")
@register_op("aten.upsample_nearest2d.vec")
@register_op("aten.upsample_bilinear2d.vec")
def _upsample(a, node):
    mode = "bilinear" if "bilinear" in str(node.target) else "nearest"
    size = _sample_shape(node)[1:]  # the size torch produced (scale factors included)
    return O.Upsample(size, mode, a.get("align_corners") if mode == "bilinear" else None), \
        [a["input"]]


@register_op("aten.batch_norm.default")
def _batch_norm(a, node):
    flag = a["training"]
    rm = a["running_mean"]
    owner = rm.meta.get("_bg_buffer_owner") if isinstance(rm, fx.Node) else None
    if owner is not None:
        flag = _LiveFlag(owner)
    elif rm is None:
        flag = True
    return O.BatchNorm(a["eps"], a["momentum"]), [a["input"], a["weight"], a["bias"],
                                                  a["running_mean"], a["running_var"], flag]


@register_op("aten.avg_pool2d.default")
def _avg_pool2d(a, node):
    return O.AvgPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                       a["count_include_pad"], a["divisor_override"]), [a["self"]]


# activations
register_op("aten.leaky_relu.default",
            lambda a, n: (O.LeakyReLU(a["negative_slope"]), [a["self"]]))
register_op("aten.sigmoid.default", lambda a, n: (O.Sigmoid(), [a["self"]]))
register_op("aten.tanh.default", lambda a, n: (O.Tanh(), [a["self"]]))
register_op("aten.gelu.default", lambda a, n: (O.GELU(a["approximate"]), [a["self"]]))
register_op("aten.silu.default", lambda a, n: (O.SiLU(), [a["self"]]))
register_op("aten.abs.default", lambda a, n: (O.Abs(), [a["self"]]))
register_op("aten.elu.default", lambda a, n: (
    O.ELU(a["alpha"], a["scale"], a["input_scale"]), [a["self"]]))
register_op("aten.selu.default", lambda a, n: (
    O.ELU(1.6732632423543772848170429916717, 1.0507009873554804934193349852946), [a["self"]]))
register_op("aten.hardtanh.default",
            lambda a, n: (O.Clamp(a["min_val"], a["max_val"]), [a["self"]]))
register_op("aten.relu6.default", lambda a, n: (O.Clamp(0.0, 6.0), [a["self"]]))
register_op("aten.clamp_min.default", lambda a, n: (O.Clamp(a["min"], None), [a["self"]]))
register_op("aten.clamp_max.default", lambda a, n: (O.Clamp(None, a["max"]), [a["self"]]))


@register_op("aten.softplus.default")
def _softplus(a, node):
    if not a["beta"] > 0:
        raise Unsupported("softplus with beta <= 0")
    return O.Softplus(a["beta"], a["threshold"]), [a["self"]]


@register_op("aten.clamp.default")
@register_op("aten.clip.default")
def _clamp(a, node):
    if a["min"] is None and a["max"] is None:
        raise Unsupported("clamp without bounds")
    return O.Clamp(a["min"], a["max"]), [a["self"]]


@register_op("aten.clamp.Tensor")
@register_op("aten.clip.Tensor")
def _clamp_tensor(a, node):
    raise Unsupported("clamp with tensor bounds; pass numbers as min/max")


# arithmetic and smooth elementwise functions
register_op("aten.square.default", lambda a, n: (O.Square(), [a["self"]]))
for _n, _cls in (("exp", "Exp"), ("log", "Log"), ("reciprocal", "Reciprocal"),
                 ("sqrt", "Sqrt"), ("rsqrt", "Rsqrt"), ("sin", "Sin"), ("cos", "Cos"),
                 ("erf", "Erf")):
    register_op(f"aten.{_n}.default", lambda a, n, c=_cls: (getattr(O, c)(), [a["self"]]))


@register_op("aten.pow.Tensor_Scalar")
def _pow(a, node):
    p = a["exponent"]
    if isinstance(p, fx.Node) or not isinstance(p, (int, float)):
        raise Unsupported("a power whose exponent is computed at run time")
    if p == 2:
        return O.Square(), [a["self"]]
    if p == 1:
        return O.Identity(), [a["self"]]
    return O.Pow(p), [a["self"]]


# two bounded operands
register_op("aten.maximum.default", lambda a, n: (O.Maximum(), [a["self"], a["other"]]))
register_op("aten.minimum.default", lambda a, n: (O.Minimum(), [a["self"], a["other"]]))


@register_op("aten.matmul.default")
@register_op("aten.bmm.default")
def _matmul(a, node):
    x, y = a["self"], a["mat2"] if "mat2" in a else a["other"]
    for v in (x, y):
        shape = _val_shape(v) if isinstance(v, fx.Node) else tuple(v.shape)
        rank = len(shape) - (1 if isinstance(v, fx.Node) and _depends_on_input(v) else 0)
        if rank < 2:
            raise Unsupported("matmul with a vector operand (each operand needs the two "
                              "matrix dimensions per example)")
    return O.MatMul(stochastic_rows=_is_softmax_rows(x)), [x, y]


_PASS_THROUGH = {"aten.dropout.default", "aten.clone.default", "aten.contiguous.default",
                 "aten.alias.default", "aten.detach.default"}


def _is_softmax_rows(v) -> bool:
    """Whether ``v`` is a softmax over its last dim (rows are probability vectors)."""
    while isinstance(v, fx.Node) and str(v.target) in _PASS_THROUGH:
        v = v.args[0]
    if not isinstance(v, fx.Node) or str(v.target) not in ("aten.softmax.int",
                                                           "aten._softmax.default"):
        return False
    ndim = len(_val_shape(v) or ())
    return ndim > 0 and isinstance(v.args[1], int) and v.args[1] % ndim == ndim - 1


def _extreme(cls):
    def conv(a, node):
        dims = a["dim"]
        dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
        if not dims:
            raise Unsupported("reductions over all dimensions include the batch")
        return getattr(O, cls)([_sample_dim(a["self"], d) for d in dims], a["keepdim"]), \
            [a["self"]]
    return conv


register_op("aten.amax.default", _extreme("Amax"))
register_op("aten.amin.default", _extreme("Amin"))
register_op("aten.max.dim", _extreme("Amax"))  # its values; see _getitem
register_op("aten.min.dim", _extreme("Amin"))


@register_op("aten.embedding.default")
def _embedding(a, node):
    # reached only when the indices depend on the input (a lookup with constant indices is a
    # computation on constants, which torch evaluates)
    raise Unsupported("an embedding lookup of input-dependent indices: token ids are not a "
                      "perturbation set; bound the model from the embedded tokens on")


# softmax
@register_op("aten.softmax.int")
@register_op("aten._softmax.default")
def _softmax(a, node):
    if a.get("dtype") is not None or a.get("half_to_float"):
        raise Unsupported("softmax with a dtype argument")
    return O.Softmax(_sample_dim(a["self"], a["dim"])), [a["self"]]


@register_op("aten.log_softmax.int")
@register_op("aten._log_softmax.default")
def _log_softmax(a, node):
    if a.get("dtype") is not None or a.get("half_to_float"):
        raise Unsupported("log_softmax with a dtype argument")
    return O.LogSoftmax(_sample_dim(a["self"], a["dim"])), [a["self"]]


# pooling and reductions
def _spatial_4d(node, what):
    if len(_val_shape(node) or ()) != 4:
        raise Unsupported(f"{what} needs a (batch, channels, height, width) input")


@register_op("aten.max_pool2d.default")
def _max_pool2d(a, node):
    _spatial_4d(node, "max_pool2d")
    return O.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                       a["ceil_mode"]), [a["self"]]


@register_op("aten.adaptive_avg_pool2d.default")
def _adaptive_avg_pool2d(a, node):
    _spatial_4d(node, "adaptive_avg_pool2d")
    return O.AdaptiveAvgPool2d(a["output_size"]), [a["self"]]


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


def _reduce(cls):
    def conv(a, node):
        dims = a["dim"]
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            raise Unsupported("reductions over all dimensions include the batch")
        if a.get("dtype") is not None:
            raise Unsupported("reductions with a dtype argument")
        dims = dims if isinstance(dims, (list, tuple)) else [dims]
        return cls([_sample_dim(a["self"], d) for d in dims], a["keepdim"]), [a["self"]]
    return conv


register_op("aten.mean.dim", _reduce(O.Mean))
register_op("aten.sum.dim_IntList", _reduce(O.Sum))


@register_op("aten.mean.default")
@register_op("aten.sum.default")
def _reduce_all(a, node):
    raise Unsupported("reductions over all dimensions include the batch")


# structure
@register_op("aten.cat.default")
def _cat(a, node):
    return O.Cat(_sample_dim(node, a["dim"])), list(a["tensors"])


@register_op("aten.stack.default")
def _stack(a, node):
    return O.Stack(_sample_dim(node, a["dim"])), list(a["tensors"])


@register_op("aten.slice.Tensor")
def _slice(a, node):
    x, step = a["self"], a["step"]
    shape = _val_shape(x)
    dim = a["dim"] % len(shape)
    start, end = a["start"], a["end"]
    if any(isinstance(v, fx.Node) for v in (start, end, step)):
        raise Unsupported("slicing with bounds computed at run time")
    if dim == _bdim(x):
        if (start in (None, 0)) and (end is None or end >= 2 ** 62) and step == 1:
            return O.Identity(), [x]
        raise Unsupported("slicing the batch dimension")
    start, stop, step = slice(start, end, step).indices(int(shape[dim]))
    return O.Slice(_sample_dim(x, dim), start, max(stop, start), step), [x]


@register_op("aten.select.int")
def _select(a, node):
    x = a["self"]
    dim = _sample_dim(x, a["dim"])
    size = int(_val_shape(x)[a["dim"]])
    index = a["index"]
    if not isinstance(index, int) or not -size <= index < size:
        raise Unsupported(f"select of index {index} in a dimension of size {size}")
    return O.Select(dim, index % size), [x]


def _constant_index(idx):
    if isinstance(idx, fx.Node) and _depends_on_input(idx):
        raise Unsupported("indexing with a tensor that depends on the input")
    val = idx.meta.get("val") if isinstance(idx, fx.Node) else idx
    if not torch.is_tensor(val) or val.dim() != 1 or val.dtype in (torch.bool, torch.uint8):
        raise Unsupported("indexing with anything but a constant 1-d integer tensor")
    return idx


@register_op("aten.index_select.default")
def _index_select(a, node):
    return O.IndexSelect(_sample_dim(a["self"], a["dim"])), [a["self"],
                                                               _constant_index(a["index"])]


@register_op("aten.index.Tensor")
def _index(a, node):
    given = [(i, v) for i, v in enumerate(a["indices"]) if v is not None]
    if len(given) != 1:
        raise Unsupported("advanced indexing with more than one index tensor")
    dim, idx = given[0]
    return O.IndexSelect(_sample_dim(a["self"], dim)), [a["self"], _constant_index(idx)]


def _layout_change(x, perm: list[int], node):
    """``x.permute(perm)`` on the graph's batch-first values: the batch axis may move (its
    new place is recorded for ``node``); the other axes are permuted."""
    p = _bdim(x)
    q = perm.index(p)
    sample = [d if d < p else d - 1 for j, d in enumerate(perm) if j != q]
    if sample == sorted(sample):
        return O.Identity(), [x]
    return O.Permute(sample), [x]


@register_op("aten.permute.default")
def _permute(a, node):
    n = len(_val_shape(a["self"]))
    return _layout_change(a["self"], [d % n for d in a["dims"]], node)


@register_op("aten.transpose.int")
def _transpose(a, node):
    x = a["self"]
    n = len(_val_shape(x))
    perm = list(range(n))
    d0, d1 = a["dim0"] % n, a["dim1"] % n
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return _layout_change(x, perm, node)


@register_op("aten.t.default")
def _t(a, node):
    n = len(_val_shape(a["self"]))
    return _layout_change(a["self"], list(range(n))[::-1], node)


@register_op("aten.flip.default")
def _flip(a, node):
    return O.Flip([_sample_dim(a["self"], d) for d in a["dims"]]), [a["self"]]


@register_op("aten.pad.default")
@register_op("aten.constant_pad_nd.default")
def _pad(a, node):
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise Unsupported(f"{mode} padding (only constant padding has rules)")
    pads = [int(p) for p in a["pad"]]
    ndim = len(_val_shape(a["self"]))
    padded = len(pads) // 2  # the last `padded` dims, last first
    if ndim - padded <= _bdim(a["self"]):
        if any(pads[2 * (ndim - 1 - _bdim(a["self"])):]):
            raise Unsupported("padding the batch dimension")
        pads = pads[:2 * (ndim - 1 - _bdim(a["self"]))]
    pads = pads[:2 * (ndim - 1)]
    return O.Pad(pads, a["value"] or 0.0), [a["self"]]


@register_op("aten.expand.default")
def _expand(a, node):
    sizes = list(a["size"])
    if any(isinstance(s, fx.Node) for s in sizes[1:]) or len(sizes) != len(_val_shape(node)):
        raise Unsupported("expand to sizes computed at run time")
    return O.Expand(_sample_shape(node)), [a["self"]]


# ops returning several tensors: the trace loop lets the node stand for its input and each
# ``getitem`` of it becomes a slice (split, chunk) or a select (unbind) of that input
_MULTI_OUTPUT = {"aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default",
                 "aten.unbind.int", "aten.tensor_split.sections",
                 "aten.tensor_split.indices"}


@register_op("<built-in function getitem>")
def _getitem(a, node):
    src, i = a["0"], a["1"]
    if isinstance(src, fx.Node) and str(src.target) in ("aten.max.dim", "aten.min.dim"):
        if i != 0:
            raise Unsupported("the indices of max/min (only their values have rules)")
        return O.Identity(), [src]
    if not isinstance(src, fx.Node) or str(src.target) not in _MULTI_OUTPUT:
        raise Unsupported("indexing the result of an op without a rule")
    x = src.args[0]
    dim = _args(src)["dim"] % len(_val_shape(x))
    d = _sample_dim(x, dim)
    if str(src.target) == "aten.unbind.int":
        return O.Select(d, i), [src]
    sizes = [int(v.shape[dim]) for v in src.meta["val"]]
    start = sum(sizes[:i])
    return O.Slice(d, start, start + sizes[i], 1), [src]


class _ConstCall(O.Op):
    """A node computed from constants only (parameters, buffers, literals): torch runs the
    aten op itself at every call, on the live values, so e.g. ``self.mean.view(1, -1, 1, 1)``
    or ``self.log_scale.exp()`` stay in sync with the module. Not part of the vocabulary."""

    kind = "aten"

    def __init__(self, target, args, kwargs):
        super().__init__(target=str(target))
        self.target, self.args, self.kwargs = target, args, kwargs

    def forward(self, *vals):
        def fill(v):
            if isinstance(v, _Slot):
                return vals[v.index]
            if isinstance(v, (list, tuple)):
                return type(v)(fill(x) for x in v)
            return v
        return self.target(*fill(self.args), **{k: fill(v) for k, v in self.kwargs.items()})


class _Slot:
    def __init__(self, index):
        self.index = index


# factories whose batch-size argument can be 1 (the result broadcasts over the batch)
_BATCH_AS_ONE = {"aten.zeros.default", "aten.ones.default", "aten.full.default",
                 "aten.empty.memory_format", "aten.expand.default", "aten.new_zeros.default",
                 "aten.new_ones.default", "aten.new_full.default", "aten.new_empty.default"}


def _constant_call(node: fx.Node):
    """``(op, inputs)`` evaluating ``node`` (which depends on no input) with torch itself."""
    inputs = []

    def slot(v):
        if isinstance(v, (list, tuple)):
            return type(v)(slot(x) for x in v)
        if not isinstance(v, fx.Node):
            return v
        if str(v.target) == "aten.sym_size.int":
            batch = v.args[1] == 0 and _depends_on_input(v.args[0])
            if str(node.target) in _BATCH_AS_ONE and batch:
                return 1
            raise Unsupported("a constant computed from the input's sizes")
        inputs.append(v)
        return _Slot(len(inputs) - 1)

    args = slot(tuple(node.args))
    kwargs = {k: slot(v) for k, v in node.kwargs.items()}
    return _ConstCall(node.target, args, kwargs), inputs


class _LiveFlag:
    """Marker: the ``training`` flag of submodule ``path``, looked up at every call."""

    def __init__(self, path):
        self.path = path


_INPUT_DEPENDENT: set = set()


def _depends_on_input(n: fx.Node) -> bool:
    return n in _INPUT_DEPENDENT


_SKIP = {"aten.sym_size.int", "aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
         "aten._assert_tensor_metadata.default", "aten.sym_constrain_range.default"}

_TORCH_DIR = re.escape(inspect.getfile(torch).rsplit("/", 1)[0])


def _source(node: fx.Node) -> str:
    """``file:line: code`` of the innermost frame of the user's own code for ``node``."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    user = [f for f in frames if not re.match(_TORCH_DIR, f[0])]
    if not user:
        return ""
    f, line, fn, code = user[-1]
    return f"{f}:{line} in {fn}: {code.strip()}"


#: converters that follow the batch axis wherever it is (pointwise ops, reductions and shape
#: ops name their dims through _sample_dim / _sample_shape); the others need it first
_ANY_BATCH_AXIS = {
    f"aten.{n}" for n in (
        "relu.default", "leaky_relu.default", "sigmoid.default", "tanh.default", "gelu.default",
        "silu.default", "abs.default", "elu.default", "selu.default", "hardtanh.default",
        "relu6.default", "clamp.default", "clip.default", "clamp_min.default",
        "clamp_max.default", "softplus.default", "neg.default", "exp.default", "log.default",
        "reciprocal.default", "sqrt.default", "rsqrt.default", "sin.default", "cos.default",
        "erf.default", "pow.Tensor_Scalar", "square.default", "dropout.default",
        "clone.default", "contiguous.default", "alias.default", "detach.default",
        "feature_dropout.default", "alpha_dropout.default",
        "add.Tensor", "add.Scalar", "sub.Tensor", "sub.Scalar", "rsub.Scalar", "rsub.Tensor",
        "mul.Tensor", "mul.Scalar", "div.Tensor", "div.Scalar", "maximum.default",
        "minimum.default", "linear.default", "matmul.default", "bmm.default",
        "mean.dim", "sum.dim_IntList", "amax.default", "amin.default", "max.dim", "min.dim",
        "softmax.int", "_softmax.default", "log_softmax.int", "_log_softmax.default",
        "view.default", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
        "unsqueeze.default", "squeeze.dim", "squeeze.dims", "squeeze.default",
        "unflatten.int", "permute.default", "transpose.int", "t.default", "select.int",
        "slice.Tensor", "index_select.default", "index.Tensor", "cat.default",
        "stack.default", "expand.default", "flip.default", "pad.default",
        "constant_pad_nd.default")} | {"<built-in function getitem>"}


def _batch_axis_use(n: fx.Node) -> str | None:
    """Why ``n`` cannot follow a batch axis that is not first (``None`` if it can)."""
    tname = str(n.target)
    if tname not in _ANY_BATCH_AXIS:
        return "this op needs the batch axis first (seq-first layouts reach it here)"
    if tname == "aten.linear.default":
        x = n.args[0]
        if _bdim(x) == len(_val_shape(x)) - 1:
            return "a linear map over the batch axis"
    if tname in ("aten.matmul.default", "aten.bmm.default"):
        for v in n.args[:2]:
            if isinstance(v, fx.Node) and v in _INPUT_DEPENDENT and \
                    _bdim(v) >= len(_val_shape(v)) - 2:
                return "a matrix product over the batch axis"
    return None


def _batch_first_const(v, n_out: int, q: int):
    """A constant operand of an op whose output has its batch axis at ``q`` (rank ``n_out``),
    as it broadcasts against the graph's batch-first value: the dim it has at the batch
    position (torch broadcasting, from the right) moved to the front. ``None``: unchanged."""
    shape = _val_shape(v) if isinstance(v, fx.Node) else \
        (tuple(v.shape) if torch.is_tensor(v) else None)
    if shape is None:
        return None
    k = q - (n_out - len(shape))
    return k if k > 0 else None


# ------------------------------------------------------------------------------- tracing
def export_module(model: torch.nn.Module, example: torch.Tensor):
    """``torch.export`` the model in evaluation mode with a dynamic batch dimension."""
    from torch.export import Dim, export

    if example.dim() == 0:
        raise TraceError("the example input needs a batch dimension")
    ex = example[:1].expand(2, *example.shape[1:]).clone() if example.shape[0] < 2 else example
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # nn.LSTM / nn.GRU refresh their flat weight list in forward; export warns
            warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights")
            return export(model, (ex,), dynamic_shapes=({0: Dim("batch")},), strict=False)
    except Exception as e:  # noqa: BLE001 - turned into one readable error
        msg = str(e).strip().splitlines()
        head = "\n".join(msg[:6])
        raise TraceError(f"torch.export could not trace {type(model).__name__}: "
                         f"{type(e).__name__}: {head}") from e
    finally:
        for m, t in modes.items():
            m.training = t


def _has_rule(name: str) -> bool:
    return name in CONVERTERS or name in _SKIP or name in _MULTI_OUTPUT


def _input_dependence(ep) -> Callable[[fx.Node], bool]:
    """Whether a node of ``ep``'s graph depends on the model's input."""
    user = set(ep.graph_signature.user_inputs)
    dep: set = set()
    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name in user:
                dep.add(n)
        elif str(n.target) not in _SKIP and any(i in dep for i in n.all_input_nodes):
            dep.add(n)  # sizes (sym_size) are not values: factories sized by them are constants
    return dep.__contains__


def trace(model: torch.nn.Module, example: torch.Tensor) -> BoundGraph:
    """Trace ``model`` (batch-first input like ``example``) into a bound graph.

    Ops without a rule are first decomposed into ops that have one
    (:mod:`boundgraph.frontends.decompose`)."""
    with batch_first_attention(model):
        ep = export_module(model, example)
    try:
        ep, declined = decompose(ep, _has_rule, _input_dependence)
    except Exception as e:  # noqa: BLE001 - turned into one readable error
        raise TraceError(f"decomposing the ops of {type(model).__name__} without rules failed: "
                         f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
    sig = ep.graph_signature
    origin = type(model).__name__
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1:
        raise TraceError(f"{origin}.forward takes {len(user_inputs)} tensor inputs; "
                         "bound graphs support models with one input")

    nodes: list[Node] = []
    names: dict[fx.Node, str] = {}
    unsupported: list[tuple[str, str, str]] = []
    literal_count = [0]
    flags: dict[str, str] = {}

    def literal(value) -> str:
        if isinstance(value, _LiveFlag):
            if value.path not in flags:
                name = f"{value.path or 'model'}.training".replace(".", "_")
                nodes.append(Node(name, "param", target=f"{value.path}.training" if value.path else "training"))
                flags[value.path] = name
            return flags[value.path]
        literal_count[0] += 1
        name = f"const_{literal_count[0]}"
        if torch.is_tensor(value):
            value = value.detach().clone()
        nodes.append(Node(name, "const", value=value,
                          shape=tuple(value.shape) if torch.is_tensor(value) else None))
        return name

    _INPUT_DEPENDENT.clear()
    _BDIM.clear()
    _BATCH[:] = [str(_val_shape(next(n for n in ep.graph.nodes if n.name in user_inputs))[0])]
    moved = [0]

    def batch_first(v, k):
        """Graph name of constant ``v`` with its dim ``k`` moved to the front."""
        if torch.is_tensor(v):
            return literal(v.movedim(k, 0))
        moved[0] += 1
        name = f"{names[v]}_batch_first_{moved[0]}"
        nodes.append(Node(name, "op", op=_ConstCall(torch.movedim, (_Slot(0), k, 0), {}),
                          inputs=(names[v],)))
        return name

    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name in params or n.name in buffers:
                fqn = params.get(n.name) or buffers[n.name]
                if n.name in buffers:
                    owner = fqn.rpartition(".")[0]
                    n.meta["_bg_buffer_owner"] = owner
                nodes.append(Node(n.name, "param", target=fqn, shape=_val_shape(n)))
            elif n.name in lifted:
                val = ep.constants[lifted[n.name]]
                nodes.append(Node(n.name, "const", value=val.detach().clone(), shape=tuple(val.shape)))
            elif n.name in user_inputs:
                nodes.append(Node(n.name, "input", shape=_sample_shape(n)))
                _INPUT_DEPENDENT.add(n)
            else:
                raise TraceError(f"unexpected graph input {n.name} in {origin}")
            names[n] = n.name
        elif n.op == "call_function":
            tname = str(n.target)
            if tname in _SKIP:
                continue
            if tname in _MULTI_OUTPUT and n.args[0] in _INPUT_DEPENDENT:
                _INPUT_DEPENDENT.add(n)  # stands for its input; see _getitem
                _BDIM[n] = _bdim(n.args[0])
                if n.args[0] in names:
                    names[n] = names[n.args[0]]
                continue
            conv = CONVERTERS.get(tname)
            if any(i in _INPUT_DEPENDENT for i in n.all_input_nodes):
                _INPUT_DEPENDENT.add(n)  # even without a rule, so its consumers are reported
            else:  # a computation on constants only: torch itself evaluates it
                conv = lambda a, node: _constant_call(node)  # noqa: E731
            if conv is None:
                why = f"{tname} ({declined[n.name]})" if n.name in declined else tname
                unsupported.append((n.name, why, _source(n)))
                continue
            q = 0
            if n in _INPUT_DEPENDENT:
                q = _batch_axis(n)
                if q is not None:
                    _BDIM[n] = q
                moves = q != 0 or any(_bdim(i) != 0 for i in n.all_input_nodes
                                      if i in _INPUT_DEPENDENT)
                why = _batch_axis_use(n) if moves and q is not None else None
                if why:
                    unsupported.append((n.name, f"{tname} ({why})", _source(n)))
                    continue
            try:
                op, ins = conv(_args(n), n)
            except Unsupported as e:
                unsupported.append((n.name, f"{tname} ({e})", _source(n)))
                continue
            n_out = len(_val_shape(n) or ())
            refs = []
            for v in ins:
                const = not (isinstance(v, fx.Node) and v in _INPUT_DEPENDENT)
                k = _batch_first_const(v, n_out, q) if const and q else None
                if isinstance(v, fx.Node):
                    if v not in names:  # input of an unsupported node: already reported
                        break
                    refs.append(names[v] if k is None else batch_first(v, k))
                else:
                    refs.append(literal(v) if k is None else batch_first(v, k))
            else:
                dep = any(isinstance(v, fx.Node) and v in _INPUT_DEPENDENT for v in ins)
                if dep:
                    _INPUT_DEPENDENT.add(n)
                shape = _sample_shape(n) if dep else _val_shape(n)
                nodes.append(Node(n.name, "op", op=op, inputs=tuple(refs), shape=shape,
                                  source=_source(n)))
                names[n] = n.name
        elif n.op == "output":
            outs = n.args[0]
            if len(outs) != 1 or not isinstance(outs[0], fx.Node):
                raise TraceError(f"{origin}.forward returns {len(outs)} outputs; "
                                 "bound graphs support one output tensor")
            out = outs[0]
        else:
            unsupported.append((n.name, f"{n.op} {n.target}", _source(n)))
    if out in names and _bdim(out) != 0:
        unsupported.append((out.name, f"{out.target} (the model's output has its batch axis "
                            f"at dimension {_bdim(out)}; return it batch-first, e.g. "
                            "out.transpose(0, 1))", _source(out)))
    if unsupported:
        raise UnsupportedOpError(unsupported, model=f"{origin} (traced with torch.export)")
    if out not in names:
        raise TraceError(f"the output of {origin} could not be mapped")
    return BoundGraph(nodes, names[out], origin=origin)
