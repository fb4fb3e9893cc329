"""ONNX emitters: the bound-graph op vocabulary -> standard ONNX nodes.

:class:`_Writer` collects the nodes and initializers of one export; :data:`EMITTERS` maps each
op kind to its emitter (:func:`emitter` registers one), filled when this module is imported
(:mod:`boundgraph.frontends.onnx_export`, which walks the graph, imports it).

Every op kind of the vocabulary has an emitter (a few uses raise, e.g. a batchnorm in training
mode or a matmul of vectors). The general architectures map as: exp, log,
reciprocal, sqrt, sin, cos, erf -> the ONNX op of that name; rsqrt -> Reciprocal(Sqrt);
pow -> Pow with a constant exponent (Mul for 2); matmul -> MatMul (two computed operands of
different per-sample ranks get unit axes after the batch axis first); maximum/minimum ->
Max/Min; amax/amin -> ReduceMax/ReduceMin; center -> Sub(x, ReduceMean(x, keepdims=1));
softmax/log_softmax -> Softmax/LogSoftmax (axis = per-sample dim + 1); conv1d -> Conv;
conv_transpose -> ConvTranspose; upsample -> Resize with the output size (nearest: asymmetric
coordinates rounded down, torch's ``floor(dst * in / out)``; bilinear: ``align_corners`` or
``half_pixel``). Where onnxruntime's Resize would not reproduce torch for the size at hand
(:mod:`boundgraph.frontends.onnx_resize` probes it), the upsample is written out per axis
instead: Gather of torch's source indices, or MatMul with the interpolation matrices. The ONNX
importer reads all of these back onto the same ops (``Sub(x, ReduceMean(x))`` as center,
``Reciprocal(Sqrt)`` as rsqrt, ``Mul(x, x)`` as square).
"""
from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np
import torch

from .naming import fresh_name
from .onnx_ops import upsample_axis_maps
from .onnx_resize import _resize_agrees, _resize_attrs


class _Writer:
    """Collects ONNX nodes and initializers while walking a bound graph."""

    def __init__(self, graph, consts: dict, dtype):
        self.graph = graph
        self.consts = consts
        self.dtype = dtype
        self.np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self.nodes = []
        self.inits = {}
        self.names: set[str] = set()
        self.const_names: dict[str, str] = {}
        self.counter = 0

    def unique(self, hint: str) -> str:
        return fresh_name(self.names, re.sub(r"[^\w.\-/]", "_", hint) or "t")

    def initializer(self, value, hint: str, dtype=None) -> str:
        from onnx import numpy_helper

        if torch.is_tensor(value):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        name = self.unique(hint)
        # np.array, not np.ascontiguousarray, which makes a 0-d array 1-d
        self.inits[name] = numpy_helper.from_array(np.array(arr, order="C"), name)
        return name

    def float_const(self, value, hint: str) -> str:
        """A float initializer in the model's precision (Python numbers included)."""
        if torch.is_tensor(value):
            value = value.detach().cpu().numpy()
        return self.initializer(np.asarray(value, dtype=self.np_dtype), hint, self.np_dtype)

    def input_name(self, node_name: str, hint: str | None = None) -> str:
        """ONNX name of a bound-graph node used as an input: batched nodes by their own name,
        constants as initializers (created once)."""
        n = self.graph.nodes[node_name]
        if n.batched:
            return self.tensor_names[node_name]
        if node_name not in self.const_names:
            v = self.consts[node_name]
            hint = n.target if n.kind == "param" and n.target else node_name
            self.const_names[node_name] = self.float_const(v, hint) if \
                (not torch.is_tensor(v) or v.is_floating_point()) else self.initializer(v, hint)
        return self.const_names[node_name]

    def add(self, op_type: str, inputs: list, hint: str, n_out: int = 1, **attrs):
        from onnx import helper

        outs = [self.unique(hint if k == 0 else f"{hint}_{k}") for k in range(n_out)]
        self.counter += 1
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self.counter}",
                                           **attrs))
        return outs[0] if n_out == 1 else outs


Emitter = Callable[[_Writer, object, list, str], str]
#: op kind -> emitter(writer, node, input names, output hint) -> ONNX output name
EMITTERS: dict[str, Emitter] = {}


def emitter(*kinds):
    def deco(f):
        for k in kinds:
            EMITTERS[k] = f
        return f
    return deco


def _value(w: _Writer, node, i):
    """The value of constant input ``i`` of ``node``."""
    return w.consts[node.inputs[i]]


class _NoEmit(Exception):
    pass


@emitter("identity")
def _e_identity(w, node, ins, hint):
    return w.add("Identity", [ins[0]], hint)


@emitter("relu")
def _e_relu(w, node, ins, hint):
    return w.add("Relu", [ins[0]], hint)


@emitter("neg")
def _e_neg(w, node, ins, hint):
    return w.add("Neg", [ins[0]], hint)


@emitter("sigmoid")
def _e_sigmoid(w, node, ins, hint):
    return w.add("Sigmoid", [ins[0]], hint)


@emitter("tanh")
def _e_tanh(w, node, ins, hint):
    return w.add("Tanh", [ins[0]], hint)


@emitter("leaky_relu")
def _e_leaky(w, node, ins, hint):
    return w.add("LeakyRelu", [ins[0]], hint, alpha=float(node.op.attrs["negative_slope"]))


@emitter("linear")
def _e_linear(w, node, ins, hint):
    g = w.graph
    x = g.nodes[node.inputs[0]]
    if not x.batched:
        raise _NoEmit("linear with a constant input")
    if any(g.nodes[i].batched for i in node.inputs[1:]):
        raise _NoEmit("linear with input-dependent weights")
    weight = _value(w, node, 1)
    bias = _value(w, node, 2) if len(node.inputs) > 2 else None
    if len(x.shape) == 1 and (bias is None or (torch.is_tensor(bias) and bias.dim() == 1)):
        args = [ins[0], ins[1]] + ([ins[2]] if bias is not None else [])
        return w.add("Gemm", args, hint, transB=1)
    wt = w.float_const(weight.detach().t().contiguous(), f"{node.inputs[1]}_T")
    out = w.add("MatMul", [ins[0], wt], hint if bias is None else f"{hint}_matmul")
    if bias is not None:
        out = w.add("Add", [out, ins[2]], hint)
    return out


@emitter("conv2d")
def _e_conv(w, node, ins, hint):
    a = node.op.attrs
    weight = _value(w, node, 1)
    ph, pw = a["padding"]
    if isinstance(ph, str) or isinstance(pw, str):
        raise _NoEmit("conv2d with string padding")
    return w.add("Conv", ins, hint, kernel_shape=list(weight.shape[2:]),
                 strides=list(a["stride"]), pads=[ph, pw, ph, pw],
                 dilations=list(a["dilation"]), group=int(a["groups"]))


@emitter("batchnorm")
def _e_bn(w, node, ins, hint):
    g = w.graph
    vals = [w.consts[i] if not g.nodes[i].batched else None for i in node.inputs]
    weight, bias, mean, var = vals[1:5]
    training = vals[5] if len(vals) > 5 else False
    if training:
        raise _NoEmit("batchnorm in training mode")
    C = mean.shape[0]
    sc = ins[1] if weight is not None else w.float_const(np.ones(C), f"{hint}_scale")
    bi = ins[2] if bias is not None else w.float_const(np.zeros(C), f"{hint}_bias")
    return w.add("BatchNormalization", [ins[0], sc, bi, ins[3], ins[4]], hint,
                 epsilon=float(node.op.attrs["eps"]))


@emitter("avgpool2d")
def _e_avgpool(w, node, ins, hint):
    a = node.op.attrs
    if a.get("divisor_override"):
        raise _NoEmit("avgpool2d with divisor_override")
    ph, pw = a["padding"]
    return w.add("AveragePool", [ins[0]], hint, kernel_shape=list(a["kernel_size"]),
                 strides=list(a["stride"]), pads=[ph, pw, ph, pw],
                 ceil_mode=int(a["ceil_mode"]), count_include_pad=int(a["count_include_pad"]))


@emitter("maxpool2d")
def _e_maxpool(w, node, ins, hint):
    a = node.op.attrs
    p = list(a["padding"])
    return w.add("MaxPool", [ins[0]], hint, kernel_shape=list(a["kernel_size"]),
                 strides=list(a["stride"]), pads=p + p, dilations=list(a["dilation"]),
                 ceil_mode=int(a["ceil_mode"]))


def _arith(op_type):
    def emit(w, node, ins, hint):
        alpha = node.op.attrs.get("alpha", 1)
        args = list(ins)
        if alpha != 1:
            args[1] = w.add("Mul", [args[1], w.float_const(alpha, f"{hint}_alpha")],
                            f"{hint}_scaled")
        return w.add(op_type, args, hint)
    return emit


EMITTERS["add"] = _arith("Add")
EMITTERS["sub"] = _arith("Sub")
EMITTERS["mul"] = _arith("Mul")
EMITTERS["div"] = _arith("Div")


@emitter("reshape")
def _e_reshape(w, node, ins, hint):
    shape = [-1] + [int(s) for s in node.op.attrs["shape"]]
    return w.add("Reshape", [ins[0], w.initializer(np.array(shape, np.int64), f"{hint}_shape")],
                 hint)


@emitter("abs")
def _e_abs(w, node, ins, hint):
    return w.add("Abs", [ins[0]], hint)


@emitter("clamp")
def _e_clamp(w, node, ins, hint):
    a = node.op.attrs
    lo = "" if a["min"] is None else w.float_const(a["min"], f"{hint}_min")
    hi = "" if a["max"] is None else w.float_const(a["max"], f"{hint}_max")
    args = [ins[0], lo] + ([hi] if hi else [])
    return w.add("Clip", args, hint)


@emitter("square")
def _e_square(w, node, ins, hint):
    return w.add("Mul", [ins[0], ins[0]], hint)


@emitter("softplus")
def _e_softplus(w, node, ins, hint):
    beta = node.op.attrs["beta"]
    if beta == 1.0:
        return w.add("Softplus", [ins[0]], hint)
    bx = w.add("Mul", [ins[0], w.float_const(beta, f"{hint}_beta")], f"{hint}_bx")
    sp = w.add("Softplus", [bx], f"{hint}_sp")
    return w.add("Div", [sp, w.float_const(beta, f"{hint}_beta")], hint)


@emitter("silu")
def _e_silu(w, node, ins, hint):
    return w.add("Mul", [ins[0], w.add("Sigmoid", [ins[0]], f"{hint}_sigmoid")], hint)


@emitter("gelu")
def _e_gelu(w, node, ins, hint):
    x = ins[0]
    if node.op.attrs.get("approximate", "none") == "tanh":
        x3 = w.add("Mul", [w.add("Mul", [x, x], f"{hint}_x2"), x], f"{hint}_x3")
        inner = w.add("Add", [x, w.add("Mul", [x3, w.float_const(0.044715, f"{hint}_c")],
                                       f"{hint}_cx3")], f"{hint}_inner")
        t = w.add("Tanh", [w.add("Mul", [inner, w.float_const(math.sqrt(2 / math.pi),
                                                               f"{hint}_k")], f"{hint}_kin")],
                  f"{hint}_tanh")
    else:
        t = w.add("Erf", [w.add("Div", [x, w.float_const(math.sqrt(2.0), f"{hint}_sqrt2")],
                                f"{hint}_scaled")], f"{hint}_erf")
    one_plus = w.add("Add", [t, w.float_const(1.0, f"{hint}_one")], f"{hint}_1p")
    half_x = w.add("Mul", [x, w.float_const(0.5, f"{hint}_half")], f"{hint}_halfx")
    return w.add("Mul", [half_x, one_plus], hint)


@emitter("elu")
def _e_elu(w, node, ins, hint):
    a = node.op.attrs
    if a["input_scale"] != 1.0:
        raise _NoEmit("elu with input_scale != 1")
    out = w.add("Elu", [ins[0]], hint if a["scale"] == 1.0 else f"{hint}_elu",
                alpha=float(a["alpha"]))
    if a["scale"] != 1.0:
        out = w.add("Mul", [out, w.float_const(a["scale"], f"{hint}_scale")], hint)
    return out


@emitter("adaptive_avgpool2d")
def _e_adaptive(w, node, ins, hint):
    H, W = node.op.in_shapes[0][-2:]
    oh, ow = node.op.attrs["output_size"]
    oh, ow = oh or H, ow or W
    if H % oh or W % ow:
        raise _NoEmit("adaptive_avgpool2d with uneven windows")
    k = [H // oh, W // ow]
    return w.add("AveragePool", [ins[0]], hint, kernel_shape=k, strides=k)


def _ints(w, values, hint):
    return w.initializer(np.asarray(list(values), dtype=np.int64), hint)


@emitter("permute")
def _e_permute(w, node, ins, hint):
    return w.add("Transpose", [ins[0]], hint,
                 perm=[0] + [int(p) + 1 for p in node.op.attrs["perm"]])


@emitter("flip")
def _e_flip(w, node, ins, hint):
    dims = [int(d) + 1 for d in node.op.attrs["dims"]]
    big = np.iinfo(np.int64)
    return w.add("Slice", [ins[0], _ints(w, [-1] * len(dims), f"{hint}_starts"),
                           _ints(w, [big.min] * len(dims), f"{hint}_ends"),
                           _ints(w, dims, f"{hint}_axes"),
                           _ints(w, [-1] * len(dims), f"{hint}_steps")], hint)


@emitter("slice")
def _e_slice(w, node, ins, hint):
    a = node.op.attrs
    return w.add("Slice", [ins[0], _ints(w, [a["start"]], f"{hint}_starts"),
                           _ints(w, [a["stop"]], f"{hint}_ends"),
                           _ints(w, [a["dim"] + 1], f"{hint}_axes"),
                           _ints(w, [a["step"]], f"{hint}_steps")], hint)


@emitter("select")
def _e_select(w, node, ins, hint):
    a = node.op.attrs
    idx = w.initializer(np.asarray(a["index"], dtype=np.int64), f"{hint}_index")
    return w.add("Gather", [ins[0], idx], hint, axis=a["dim"] + 1)


@emitter("index_select")
def _e_index_select(w, node, ins, hint):
    index = _value(w, node, 1)
    idx = w.initializer(np.asarray(index.detach().cpu().numpy(), dtype=np.int64).reshape(-1),
                        f"{hint}_index")
    return w.add("Gather", [ins[0], idx], hint, axis=node.op.attrs["dim"] + 1)


@emitter("expand")
def _e_expand(w, node, ins, hint):
    shape = list(node.op.attrs["shape"])
    x = ins[0]
    in_shape = node.op.in_shapes[0]
    if len(in_shape) < len(shape):
        x = w.add("Reshape", [x, _ints(w, [-1] + [1] * (len(shape) - len(in_shape)) +
                                       list(in_shape), f"{hint}_rank")], f"{hint}_ranked")
    return w.add("Expand", [x, _ints(w, [1] + shape, f"{hint}_shape")], hint)


@emitter("pad")
def _e_pad(w, node, ins, hint):
    a = node.op.attrs
    tp = list(a["pads"])
    r = len(node.op.in_shapes[0]) + 1
    begin, end = [0] * r, [0] * r
    for k in range(len(tp) // 2):  # torch order: last axis first
        begin[r - 1 - k], end[r - 1 - k] = tp[2 * k], tp[2 * k + 1]
    return w.add("Pad", [ins[0], _ints(w, begin + end, f"{hint}_pads"),
                         w.float_const(a["value"], f"{hint}_value")], hint, mode="constant")


def _batch_size(w):
    """A 1-element int64 tensor holding the batch size (``Shape(input)[:1]``)."""
    if getattr(w, "_batch", None) is None:
        shp = w.add("Shape", [w.tensor_names[w.graph.input]], "batch_shape")
        w._batch = w.add("Slice", [shp, _ints(w, [0], "batch_start"), _ints(w, [1], "batch_end")],
                         "batch_size")
    return w._batch


def _expand_const(w, name, value, hint):
    """A constant piece with a batch axis of 1, expanded to the batch size."""
    rest = _ints(w, list(value.shape[1:]), f"{hint}_rest")
    shape = w.add("Concat", [_batch_size(w), rest], f"{hint}_shape", axis=0)
    return w.add("Expand", [name, shape], f"{hint}_expanded")


def _pieces(w, node, ins, hint):
    g = w.graph
    out = []
    for k, (i, name) in enumerate(zip(node.inputs, ins)):
        if g.nodes[i].batched:
            out.append(name)
        else:
            v = w.consts[i]
            if not torch.is_tensor(v) or v.dim() == 0:
                raise _NoEmit("a scalar piece")
            out.append(_expand_const(w, name, v, f"{hint}_piece{k}"))
    return out


@emitter("cat")
def _e_cat(w, node, ins, hint):
    return w.add("Concat", _pieces(w, node, ins, hint), hint, axis=node.op.attrs["dim"] + 1)


@emitter("stack")
def _e_stack(w, node, ins, hint):
    ax = node.op.attrs["dim"] + 1
    axes = _ints(w, [ax], f"{hint}_axes")
    parts = [w.add("Unsqueeze", [p, axes], f"{hint}_u{k}")
             for k, p in enumerate(_pieces(w, node, ins, hint))]
    return w.add("Concat", parts, hint, axis=ax)


@emitter("sum")
def _e_sum(w, node, ins, hint):
    a = node.op.attrs
    return w.add("ReduceSum", [ins[0], _ints(w, [d + 1 for d in a["dims"]], f"{hint}_axes")],
                 hint, keepdims=int(a["keepdim"]))


@emitter("mean")
def _e_mean(w, node, ins, hint):
    a = node.op.attrs
    return w.add("ReduceMean", [ins[0]], hint, axes=[d + 1 for d in a["dims"]],
                 keepdims=int(a["keepdim"]))


# ------------------------------------------------------------------ element-wise functions
def _unary_emitter(op_type):
    def emit(w, node, ins, hint):
        return w.add(op_type, [ins[0]], hint)
    return emit


for _kind, _op_type in (("exp", "Exp"), ("log", "Log"), ("reciprocal", "Reciprocal"),
                        ("sqrt", "Sqrt"), ("sin", "Sin"), ("cos", "Cos"), ("erf", "Erf")):
    EMITTERS[_kind] = _unary_emitter(_op_type)


@emitter("rsqrt")
def _e_rsqrt(w, node, ins, hint):
    return w.add("Reciprocal", [w.add("Sqrt", [ins[0]], f"{hint}_sqrt")], hint)


@emitter("pow")
def _e_pow(w, node, ins, hint):
    p = float(node.op.attrs["exponent"])
    if p == 1.0:
        return w.add("Identity", [ins[0]], hint)
    if p == 2.0:
        return w.add("Mul", [ins[0], ins[0]], hint)
    return w.add("Pow", [ins[0], w.float_const(p, f"{hint}_exponent")], hint)


# ------------------------------------------------------------ products, maxima and minima
def _same_rank(w, node, ins, hint):
    """Inputs of an op broadcasting per sample (behind the batch axis): two batched operands of
    different per-sample ranks get unit axes after the batch axis, so that ONNX's broadcasting
    from the right (which would align the batch axis with a per-sample axis) agrees."""
    g = w.graph
    batched = [g.nodes[i].batched for i in node.inputs]
    if not all(batched):
        return list(ins)
    ranks = [len(s) for s in node.op.in_shapes]
    r = max(ranks)
    out = []
    for k, (name, rk) in enumerate(zip(ins, ranks)):
        if rk < r:
            name = w.add("Unsqueeze", [name, _ints(w, range(1, 1 + r - rk), f"{hint}_ax{k}")],
                         f"{hint}_lift{k}")
        out.append(name)
    return out


@emitter("matmul")
def _e_matmul(w, node, ins, hint):
    if any(len(s) < 2 for s in node.op.in_shapes if s is not None):
        raise _NoEmit("matmul of a vector")
    return w.add("MatMul", _same_rank(w, node, ins, hint), hint)


@emitter("maximum")
def _e_maximum(w, node, ins, hint):
    return w.add("Max", _same_rank(w, node, ins, hint), hint)


@emitter("minimum")
def _e_minimum(w, node, ins, hint):
    return w.add("Min", _same_rank(w, node, ins, hint), hint)


def _reduce_extreme(op_type):
    def emit(w, node, ins, hint):
        a = node.op.attrs
        nd = len(node.op.in_shapes[0])
        dims = sorted({int(d) % nd for d in a["dims"]}) if a["dims"] else list(range(nd))
        return w.add(op_type, [ins[0]], hint, axes=[d + 1 for d in dims],
                     keepdims=int(a["keepdim"]))
    return emit


EMITTERS["amax"] = _reduce_extreme("ReduceMax")
EMITTERS["amin"] = _reduce_extreme("ReduceMin")


# ------------------------------------------------------------------------- normalisation
@emitter("center")
def _e_center(w, node, ins, hint):
    nd = len(node.op.in_shapes[0])
    axes = sorted({int(d) % nd + 1 for d in node.op.attrs["dims"]})
    mean = w.add("ReduceMean", [ins[0]], f"{hint}_mean", axes=axes, keepdims=1)
    return w.add("Sub", [ins[0], mean], hint)


def _softmax_emitter(op_type):
    def emit(w, node, ins, hint):
        nd = len(node.op.in_shapes[0])
        return w.add(op_type, [ins[0]], hint, axis=int(node.op.attrs["dim"]) % nd + 1)
    return emit


EMITTERS["softmax"] = _softmax_emitter("Softmax")
EMITTERS["log_softmax"] = _softmax_emitter("LogSoftmax")


# -------------------------------------------------------- 1-d and transposed convolutions
@emitter("conv1d")
def _e_conv1d(w, node, ins, hint):
    a = node.op.attrs
    weight = _value(w, node, 1)
    p = int(a["padding"])
    return w.add("Conv", ins, hint, kernel_shape=[int(weight.shape[-1])],
                 strides=[int(a["stride"])], pads=[p, p], dilations=[int(a["dilation"])],
                 group=int(a["groups"]))


def _per_axis(v, n):
    return [int(e) for e in v] if isinstance(v, (list, tuple)) else [int(v)] * n


@emitter("conv_transpose")
def _e_conv_transpose(w, node, ins, hint):
    a = node.op.attrs
    weight = _value(w, node, 1)
    n = weight.dim() - 2
    p = _per_axis(a["padding"], n)
    return w.add("ConvTranspose", ins, hint, kernel_shape=list(weight.shape[2:]),
                 strides=_per_axis(a["stride"], n), pads=p + p,
                 output_padding=_per_axis(a["output_padding"], n),
                 dilations=_per_axis(a["dilation"], n), group=int(a["groups"]))


# ------------------------------------------------------------------------------ upsampling
@emitter("upsample")
def _e_upsample(w, node, ins, hint):
    op = node.op
    a = op.attrs
    in_shape = tuple(op.in_shapes[0])
    n = len(in_shape) - 1
    if _resize_agrees(op, in_shape, w.np_dtype):
        sizes = w.add("Concat", [_batch_size(w), _ints(w, [in_shape[0], *a["size"]],
                                                       f"{hint}_size")], f"{hint}_sizes", axis=0)
        return w.add("Resize", [ins[0], "", "", sizes], hint,
                     **_resize_attrs(a["mode"], a["align_corners"]))
    # a size where onnxruntime's coordinates differ from torch's: the same map written out
    # per axis, Gather of torch's source indices (nearest) or products with the interpolation
    # matrices (bilinear)
    mats = upsample_axis_maps(op, in_shape)
    x = ins[0]
    for k, M in enumerate(mats):
        last = k == n - 1
        name = hint if last else f"{hint}_axis{k}"
        ax = 2 + k
        if a["mode"] == "nearest":
            idx = w.initializer(M.argmax(1).astype(np.int64), f"{hint}_index{k}")
            x = w.add("Gather", [x, idx], name, axis=ax)
        elif ax == n + 1:  # the last axis: x @ M^T
            x = w.add("MatMul", [x, w.float_const(np.ascontiguousarray(M.T), f"{hint}_m{k}")],
                      name)
        else:  # an inner axis (H of (B, C, H, W)): M @ x
            x = w.add("MatMul", [w.float_const(M, f"{hint}_m{k}"), x], name)
    return x
