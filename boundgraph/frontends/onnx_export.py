"""ONNX export: a model (or a :class:`~boundgraph.BoundedModule`) -> a standard ONNX file.

The file is written from the bound graph itself: every op of the vocabulary has an emitter that
writes the equivalent standard ONNX nodes (linear -> Gemm or MatMul/Add, conv2d -> Conv,
batchnorm -> BatchNormalization, ...), constants and live parameters become initializers, and
the input and output get a symbolic batch dimension ``"batch"``. So a traced module and an
imported ONNX model export the same way, and the file holds only ops that the ONNX importer and
other verifiers read.

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
(nearest source indices are computed in float32 from ``out / in``, and differ by one where
``dst * in / out`` is an integer, e.g. 14 -> 2), the upsample is written out per axis instead:
Gather of torch's source indices, or MatMul with the interpolation matrices. The ONNX importer
reads all of these back onto the same ops (``Sub(x, ReduceMean(x))`` as center, ``Reciprocal(
Sqrt)`` as rsqrt, ``Mul(x, x)`` as square).

Graphs holding an op without an emitter fall back on PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``) when a plain ``nn.Module`` was given.

Every export is checked: onnxruntime must reproduce the module's outputs (to ``1e-5`` relative
to the output magnitude) on the example input and on a second batch of another size, otherwise
:class:`~boundgraph.errors.BoundGraphError` is raised.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import BoundGraphError, InputError, UnsupportedOpError
from .naming import fresh_name
from .onnx_ops import upsample_axis_maps
from .onnxrt import cpu_session, run_session

__all__ = ["export_onnx", "EMITTERS"]

DEFAULT_OPSET = 13
#: opsets whose operator signatures the emitters follow (first, last)
SUPPORTED_OPSETS = (13, 17)


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
def _resize_attrs(mode, align_corners):
    """Attributes of the ONNX ``Resize`` that computes ``F.interpolate(x, size,
    mode, align_corners)``: nearest as ``asymmetric`` coordinates rounded down (torch takes
    source index ``floor(dst * in / out)``), bilinear with ``align_corners`` or ``half_pixel``
    coordinates (torch's ``(dst + 0.5) * in / out - 0.5``, clamped at 0 as ONNX's linear mode
    does)."""
    if mode == "nearest":
        return dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    return dict(mode="linear",
                coordinate_transformation_mode="align_corners" if align_corners
                else "half_pixel")


def _resize_agrees(op, in_shape, np_dtype) -> bool:
    """Whether onnxruntime's ``Resize`` (attributes of :func:`_resize_attrs`) reproduces the
    upsample op on this size. Nearest: the source index of every output position (computed in
    float32 from ``out / in``, it can differ from torch's ``floor(dst * (in / out))`` by one
    where ``dst * in / out`` is an integer); bilinear: the values on a random probe."""
    from onnx import TensorProto, helper, numpy_helper

    a = op.attrs
    sp = tuple(in_shape[1:])
    if a["mode"] == "nearest":
        probe = np.arange(math.prod(sp), dtype=np.float64).reshape(1, 1, *sp)
    else:
        probe = np.random.default_rng(0).random((1, 1, *sp))
    probe = probe.astype(np_dtype)
    with torch.no_grad():
        ref = op.forward(torch.from_numpy(probe)).numpy()
    elem = TensorProto.FLOAT if np_dtype == np.float32 else TensorProto.DOUBLE
    sizes = numpy_helper.from_array(np.asarray([1, 1, *a["size"]], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"],
                            **_resize_attrs(a["mode"], a["align_corners"]))
    graph = helper.make_graph([node], "resize_probe",
                              [helper.make_tensor_value_info("x", elem, list(probe.shape))],
                              [helper.make_tensor_value_info("y", elem, None)],
                              initializer=[sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    try:
        sess = cpu_session(model.SerializeToString(), lambda e: str(e))
        got = run_session(sess, probe)
    except Exception:  # noqa: BLE001 - a Resize onnxruntime cannot run: written another way
        return False
    if got.shape != ref.shape:
        return False
    if a["mode"] == "nearest":
        return bool(np.array_equal(got, ref))
    return float(np.abs(got - ref).max()) <= 1e-6


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


# ---------------------------------------------------------------------------------- export
def _graph_to_onnx(bm, opset: int, input_name: str, output_name: str, dtype):
    """ONNX ``ModelProto`` for the bound graph of ``bm`` (constants in evaluation mode)."""
    import onnx
    from onnx import TensorProto, helper

    g = bm.graph
    consts = g.constants(bm.model)
    w = _Writer(g, consts, dtype)
    w.tensor_names = {g.input: w.unique(input_name)}
    missing = []
    for name in g.batched_order[1:]:
        node = g.nodes[name]
        emit = EMITTERS.get(node.op.kind)
        if emit is None:
            missing.append((name, node.op.kind, node.source))
            continue
        try:
            ins = [w.input_name(i) for i in node.inputs]
            hint = output_name if name == g.output else name
            w.tensor_names[name] = emit(w, node, ins, hint)
        except _NoEmit as e:
            missing.append((name, f"{node.op.kind} ({e})", node.source))
        except KeyError:
            missing.append((name, f"{node.op.kind} (input not exported)", node.source))
    if missing:
        raise UnsupportedOpError(missing, model=f"{g.origin} (ONNX export)")
    out = w.tensor_names[g.output]
    if out != output_name:  # the output is the input, or its name was taken
        out = w.add("Identity", [out], output_name)
    elem = TensorProto.FLOAT if dtype == torch.float32 else TensorProto.DOUBLE
    x_info = helper.make_tensor_value_info(w.tensor_names[g.input], elem,
                                           ["batch", *g.input_shape])
    y_info = helper.make_tensor_value_info(out, elem, ["batch", *g.output_shape])
    graph = helper.make_graph(w.nodes, f"{g.origin}", [x_info], [y_info],
                              initializer=list(w.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="boundgraph")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def _torch_export(model: nn.Module, example, path, opset, input_name, output_name):
    """PyTorch's TorchScript-based exporter (fallback for graphs with ops lacking an emitter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})


def export_onnx(model_or_bounded_module, example_input: torch.Tensor, path: str | os.PathLike,
                *, opset: int = DEFAULT_OPSET, input_name: str = "input",
                output_name: str = "output", check: bool = True, rtol: float = 1e-5) -> str:
    """Write ``model_or_bounded_module`` as a standard ONNX file with a dynamic batch dimension.

    Parameters
    ----------
    model_or_bounded_module:
        an ``nn.Module`` (traced with the torch front end on ``example_input``) or a
        :class:`~boundgraph.BoundedModule` (e.g. one imported from ONNX).
    example_input:
        a batch ``(B, *input_shape)`` fixing the per-example input shape; also the check input.
    path:
        where to write (``.onnx``).
    opset:
        ONNX opset of the file, 13 to 17 (default 13): the emitters write ``ReduceSum`` and
        ``Unsqueeze`` with axes inputs (13 and later) and ``ReduceMean`` with an axes
        attribute (before 18).
    check:
        run the file with onnxruntime on ``example_input`` and on a second batch of another
        size and compare with the module (``rtol`` relative to the output magnitude); a mismatch
        raises :class:`~boundgraph.errors.BoundGraphError`.

    The model is exported in evaluation mode (BatchNorm with running statistics, dropout off);
    its training flags are restored afterwards. Returns the path.
    """
    from ..bounded import BoundedModule

    path = os.fspath(path)
    if not (isinstance(opset, int) and SUPPORTED_OPSETS[0] <= opset <= SUPPORTED_OPSETS[1]):
        raise InputError(f"opset {opset!r} is not supported; export_onnx writes opsets "
                         f"{SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[1]}")
    if not torch.is_tensor(example_input) or example_input.dim() < 1:
        raise InputError("export_onnx needs an example input tensor with a batch dimension")
    if isinstance(model_or_bounded_module, BoundedModule):
        bm = model_or_bounded_module
        module = bm.model
    elif isinstance(model_or_bounded_module, nn.Module):
        module = model_or_bounded_module
        bm = None
    else:
        raise InputError("export_onnx expects an nn.Module or a BoundedModule, got "
                         f"{type(model_or_bounded_module).__name__}")
    p = next(iter(module.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else example_input.dtype
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    example = example_input.to(dtype)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if bm is None:
            bm = BoundedModule(module, example)
        if tuple(example.shape[1:]) != bm.graph.input_shape:
            raise InputError(f"example input of shape {tuple(example.shape)} does not match the "
                             f"model's input (B, {', '.join(map(str, bm.graph.input_shape))})")
        try:
            model = _graph_to_onnx(bm, opset, input_name, output_name, dtype)
        except UnsupportedOpError:
            if model_or_bounded_module is bm:
                raise
            _torch_export(module, example, path, opset, input_name, output_name)
        else:
            import onnx
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            onnx.save_model(model, path)
        if check:
            _check_export(path, bm, module, model_or_bounded_module is bm, example, rtol)
    finally:
        for m, t in modes.items():
            m.training = t
    return path


def _check_export(path, bm, module, is_bm, example, rtol):
    sess = cpu_session(path, lambda e: f"onnxruntime cannot load the exported file '{path}': {e}")
    lo, hi = float(example.min()), float(example.max())
    if hi <= lo:
        hi = lo + 1.0
    B2 = example.shape[0] + 1
    gen = torch.Generator().manual_seed(0)
    second = lo + torch.rand((B2, *example.shape[1:]), generator=gen,
                             dtype=torch.float64).to(example.dtype) * (hi - lo)
    for x in (example, second):
        with torch.no_grad():
            ref = (bm(x) if is_bm else module(x)).reshape(x.shape[0], -1).double().numpy()
        got = run_session(sess, x.detach().cpu().numpy())
        got = np.asarray(got, dtype=np.float64).reshape(x.shape[0], -1)
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(got - ref).max()) / scale if got.shape == ref.shape else math.inf
        if not diff <= rtol:
            raise BoundGraphError(f"the exported file '{path}' does not reproduce the module: "
                                  f"largest difference {diff:.3g} (relative to {scale:.3g}) "
                                  f"> {rtol:g} on a batch of {x.shape[0]}")
