"""The built-in converters of the torch front end: one rule per aten op (or family of ops)
that turns it into a bound-graph op, registered in :data:`~.torch_rules.CONVERTERS` when this
module is imported (:mod:`boundgraph.frontends.torch_trace` imports it)."""
from __future__ import annotations

import math

import torch
from torch import fx

from .. import ops as O
from .torch_rules import (Unsupported, _args, _batch_axis, _bdim, _depends_on_input, _LiveFlag,
                          _sample_dim, _sample_shape, _val_shape, register_op)


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




@register_op("aten.embedding.default")
def _embedding(a, node):
    # reached only when the indices depend on the input (a lookup with constant indices is a
    # computation on constants, which torch evaluates)
    raise Unsupported("an embedding lookup of input-dependent indices: token ids are not a "
                      "perturbation set; bound the model from the embedded tokens on")


# softmax
def _softmax(cls):
    def conv(a, node):
        if a.get("dtype") is not None or a.get("half_to_float"):
            raise Unsupported(f"{cls.kind} with a dtype argument")
        return cls(_sample_dim(a["self"], a["dim"])), [a["self"]]
    return conv


for _n in ("aten.softmax.int", "aten._softmax.default"):
    register_op(_n, _softmax(O.Softmax))
for _n in ("aten.log_softmax.int", "aten._log_softmax.default"):
    register_op(_n, _softmax(O.LogSoftmax))


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
register_op("aten.amax.default", _reduce(O.Amax))
register_op("aten.amin.default", _reduce(O.Amin))
register_op("aten.max.dim", _reduce(O.Amax))  # its values; see _getitem
register_op("aten.min.dim", _reduce(O.Amin))


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
