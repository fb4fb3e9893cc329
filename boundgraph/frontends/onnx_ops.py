"""Converters of the ONNX importer: one function per ONNX op type, building bound-graph nodes.

:mod:`boundgraph.frontends.onnx_import` walks the ONNX graph and hands each node with an
input-dependent input to the converter registered for its op type in ``_CONVERTERS`` (nodes whose
inputs are all constant are folded by the importer, unless listed in ``_NEVER_FOLD``). The sections
below hold one op family each: pass-through ops, element-wise unary and binary ops, affine
layers, convolution and batch normalisation, pooling, shape ops (reshaping, transposing,
concatenating, padding), reductions, slicing and indexing, and shape queries.

Adding a converter
    Write ``f(imp, node, ins, a)`` and register it with ``@converter("OpType", ...)``. It gets the
    importer (``imp``), the ONNX ``NodeProto``, its inputs as :class:`~.onnx_graph._T` (``None``
    for an omitted optional input) and its attributes as a dict, and returns the output ``_T``
    (or a list of them, one per ONNX output). Build nodes with ``imp.add(op, inputs, hint)`` on
    ops of the vocabulary (``_vocab(kind)``), bring results to the ONNX output shape with
    ``imp.fit(t, shape)`` (see the batch convention in :mod:`~boundgraph.frontends.onnx_import`),
    and raise ``_Unsupported(reason)`` for a use without rules: the node is then reported
    together with all other unsupported nodes. Add the op to the list below.

Supported ONNX ops (default domain, opsets 7 to current; the table ``_CONVERTERS`` is the
authority, and an unsupported-op error lists it): Gemm, MatMul (a constant on either side),
Add, Sub, Mul, Div, Sum, Neg, Abs, Pow (square), Relu, LeakyRelu, Clip, Sigmoid, Tanh, Softplus,
Elu, Selu, Gelu, Conv (1-d and 2-d, pads, strides, dilations, groups, auto_pad),
BatchNormalization (inference), MaxPool, AveragePool, GlobalAveragePool, ReduceMean, ReduceSum,
Flatten, Reshape, Transpose, Concat, Split, Slice, Gather, Expand, Pad, Squeeze, Unsqueeze,
Identity, Dropout (inference), Cast (to the same float type), Constant, Shape, Size, and any op
whose inputs are all constant.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import ops as O
from ..errors import BoundGraphError
from .onnx_graph import _FLOAT_TYPES, _T, _Unsupported

if TYPE_CHECKING:
    from .onnx_import import _Importer

__all__ = ["converter", "Converter"]


# ---------------------------------------------------------------------------------- registry
Converter = Callable[["_Importer", Any, list, dict], Any]
_CONVERTERS: dict[str, Converter] = {}
#: converters that also run when the input is constant-free but the op must not be folded
_BATCHED_ONLY: dict[str, Converter] = {}
#: ops never evaluated at import time even on constant inputs (their value is not fixed)
_NEVER_FOLD: set[str] = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                         "RandomUniformLike", "Multinomial", "Bernoulli"}


def converter(*op_types):
    """Register the decorated function as the converter of the ONNX op types ``op_types``."""
    def deco(f):
        for t in op_types:
            _CONVERTERS[t] = f
        return f
    return deco


def _vocab(*kinds: str):
    """The op class of the first of ``kinds`` in the vocabulary (``boundgraph.ops.OPS``)."""
    for k in kinds:
        cls = O.OPS.get(k)
        if cls is not None:
            return cls
    raise _Unsupported(f"boundgraph.ops has no '{kinds[0]}' op")


def _batched(ins):
    return [t for t in ins if t is not None and not t.const]


def _hint(node, k=0):
    if len(node.output) > k and node.output[k]:
        return node.output[k]
    return node.name or node.op_type


# -- pass-through -------------------------------------------------------------------------------
@converter("Identity", "Dropout")
def _identity(imp, node, ins, a):
    x = ins[0]
    if node.op_type == "Dropout":
        training = ins[2] if len(ins) > 2 else None
        if training is not None and (not training.const or bool(np.asarray(training.value))):
            raise _Unsupported("Dropout in training mode")
    return [x]


@converter("Cast")
def _cast(imp, node, ins, a):
    to = a.get("to")
    if _FLOAT_TYPES.get(to) != imp.dtype:
        raise _Unsupported("Cast of an input-dependent tensor to another type")
    return ins[0]


# -- element-wise, unary ------------------------------------------------------------------------
def _unary(kind, make=None):
    def conv(imp, node, ins, a):
        cls = _vocab(kind)
        op = make(cls, a) if make else cls()
        x = ins[0]
        t = imp.add(op, [x], _hint(node))
        t.batch = x.batch
        return t
    return conv


_SELU = (1.67326319217681884765625, 1.05070102214813232421875)  # ONNX's defaults (float32)

_CONVERTERS.update({
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Neg": _unary("neg"),
    "Abs": _unary("abs"),
    "LeakyRelu": _unary("leaky_relu", lambda cls, a: cls(float(a.get("alpha", 0.01)))),
    "Softplus": _unary("softplus", lambda cls, a: cls(1.0, math.inf)),
    "Elu": _unary("elu", lambda cls, a: cls(float(a.get("alpha", 1.0)))),
    "Selu": _unary("elu", lambda cls, a: cls(float(a.get("alpha", _SELU[0])),
                                             float(a.get("gamma", _SELU[1])))),
    "Gelu": _unary("gelu", lambda cls, a: cls(_text(a.get("approximate", "none")))),
})


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@converter("Clip")
def _clip(imp, node, ins, a):
    if imp.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        vals = []
        for t in ins[1:3] + [None] * (3 - len(ins)):
            if t is None:
                vals.append(None)
            elif not t.const:
                raise _Unsupported("Clip with input-dependent bounds")
            else:
                vals.append(float(np.asarray(t.value).reshape(-1)[0]))
        lo, hi = vals[0], vals[1]
    x = ins[0]
    if lo is None and hi is None:
        return x
    if lo == 0.0 and hi is None:
        t = imp.add(_vocab("relu")(), [x], _hint(node))
    else:
        t = imp.add(_vocab("clamp")(lo, hi), [x], _hint(node))
    t.batch = x.batch
    return t


@converter("Pow")
def _pow(imp, node, ins, a):
    x, e = ins
    if not e.const or x.const:
        raise _Unsupported("Pow with an input-dependent exponent")
    ev = np.asarray(e.value).reshape(-1)
    if ev.size != 1 or float(ev[0]) not in (1.0, 2.0):
        raise _Unsupported(f"Pow with exponent {ev.tolist()} (only 1 and 2 have rules)")
    if float(ev[0]) == 1.0:
        return x
    t = imp.add(_vocab("square")(), [x], _hint(node))
    t.batch = x.batch
    return t


# -- element-wise, binary -----------------------------------------------------------------------
def _broadcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise _Unsupported(f"shapes {[list(s) for s in shapes]} do not broadcast") from None


def _binary(kind):
    def conv(imp, node, ins, a):
        x, y = ins[0], ins[1]
        out_shape = _broadcast(x.shape, y.shape)
        r = len(out_shape)
        if kind == "div" and not y.const:
            raise _Unsupported("division by an input-dependent tensor")
        cls = _vocab(kind)
        if x.const or y.const:
            t, c = (y, x) if x.const else (x, y)
            if kind == "add":
                fused = _fuse_bias(imp, node, t, c, out_shape)
                if fused is not None:
                    return fused
            t = imp.to_rank(t, r)
            cv = np.asarray(c.value)
            full = cv.reshape((1,) * (r - cv.ndim) + cv.shape)
            if t.batch and full.shape[0] != 1:
                t = imp.as_whole(t)  # a constant with a batch-sized axis: whole-tensor form
            cv = imp.const_for(t, cv)
            if cv.size == 1 and cv.ndim == 0 or (cv.size == 1 and all(s == 1 for s in cv.shape)
                                                  and cv.ndim <= len(t.sample)):
                cv = cv.reshape(())  # a scalar: broadcasts anywhere
            src = _input_name(node, c, imp)
            cname = imp.tensor_const(cv, src or f"{_hint(node)}_const",
                                     key=None if src is None else (src, kind, cv.shape))
            ins2 = [cname, t] if x.const else [t, cname]
            res = imp.add(cls(), ins2, _hint(node))
            res.batch = t.batch
        else:
            x, y = imp.to_rank(x, r), imp.to_rank(y, r)
            if x.batch != y.batch:
                x, y = imp.as_whole(x), imp.as_whole(y)
            res = imp.add(cls(), [x, y], _hint(node))
            res.batch = x.batch
        return imp.fit(res, out_shape)
    return conv


for _k, _t in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div")):
    _CONVERTERS[_t] = _binary(_k)


def _input_name(node, c: _T, imp) -> str | None:
    """The ONNX name of input ``c`` of ``node``; None for an intermediate value made while
    converting (e.g. a partial sum), which must not be cached by identity."""
    for name in node.input:
        if imp.tensors.get(name) is c:
            return name
    return None


def _fuse_bias(imp, node, t: _T, c: _T, out_shape):
    """``Linear(x, W) + b`` with a bias vector over the last axis: one linear node with a bias
    (when the linear output has no other consumer)."""
    prod = imp._by_name.get(t.node)
    if prod is None or prod.kind != "op" or type(prod.op) is not O.Linear or \
            len(prod.inputs) != 2 or tuple(out_shape) != tuple(t.shape):
        return None
    src = [o for o, v in imp.tensors.items() if v is t or (not v.const and v.node == t.node)]
    if any(imp.consumers.get(o, 0) != 1 or o in imp.graph_outputs for o in src):
        return None
    if any(n.inputs and t.node in n.inputs for n in imp.nodes):
        return None
    cv = np.asarray(c.value)
    M = t.sample[-1] if t.sample else None
    if M is None or cv.size != M or (cv.ndim and cv.shape[-1] != M):
        return None
    x = imp.batched[prod.inputs[0]]
    src = _input_name(node, c, imp)
    b = imp.tensor_const(cv.reshape(M), src or f"{_hint(node)}_const", weight=True,
                         key=None if src is None else (src, "bias"))
    res = imp.add(O.Linear(), [x, prod.inputs[1], b], _hint(node))
    res.batch = t.batch
    return imp.fit(res, out_shape)


@converter("Sum")
def _sum(imp, node, ins, a):
    acc = ins[0]
    add = _binary("add")
    for t in ins[1:]:
        if acc.const and t.const:
            acc = _T(value=acc.value + t.value)
        else:
            acc = add(imp, node, [acc, t], a)
    return acc


# -- affine -------------------------------------------------------------------------------------
def _linear(imp, node, x: _T, W: np.ndarray, b, hint: str, key, wname=None, bname=None) -> _T:
    """``x @ W^T (+ b)`` over the last axis (``W`` of shape ``(out, in)``); parameters named
    after the ONNX tensors ``wname``/``bname`` when given."""
    w = imp.tensor_const(np.ascontiguousarray(W), wname or f"{hint}_weight", weight=True,
                         key=key + ("W",))
    ins = [x, w]
    if b is not None:
        ins.append(imp.tensor_const(np.ascontiguousarray(b), bname or f"{hint}_bias",
                                    weight=True, key=key + ("b",)))
    res = imp.add(O.Linear(), ins, hint)
    res.batch = x.batch
    return res


def _squeeze_lead(w: np.ndarray, keep: int, what: str) -> np.ndarray:
    if w.ndim > keep:
        if any(s != 1 for s in w.shape[:w.ndim - keep]):
            raise _Unsupported(f"{what} with a batched (rank {w.ndim}) constant operand")
        w = w.reshape(w.shape[w.ndim - keep:])
    return w


def _matmul_shape(sa: tuple, sb: tuple) -> tuple:
    """Shape of ``numpy.matmul`` of operands shaped ``sa`` and ``sb`` (no arrays made)."""
    a = (1,) + sa if len(sa) == 1 else sa
    b = sb + (1,) if len(sb) == 1 else sb
    if a[-1] != b[-2]:
        raise _Unsupported(f"MatMul of shapes {sa} and {sb}: inner sizes differ")
    out = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    if len(sb) == 1:
        out = out[:-1]
    if len(sa) == 1:
        out = out[:-2] + out[-1:] if len(sb) != 1 else out[:-1]
    return out


@converter("MatMul")
def _matmul(imp, node, ins, a):
    A, B = ins
    if not A.const and not B.const:
        raise _Unsupported("product of two input-dependent tensors")
    out_shape = _matmul_shape(tuple(A.shape), tuple(B.shape))
    hint = _hint(node)
    if not A.const:  # x @ W
        x, W = A, np.asarray(B.value)
        if W.ndim == 1:
            res = _linear(imp, node, x, W[None, :], None, hint, (id(B), "mm1"), node.input[1])
        else:
            W2 = _squeeze_lead(W, 2, "MatMul")
            res = _linear(imp, node, x, W2.T, None, hint, (id(B), "mmT"), node.input[1])
        return imp.fit(res, out_shape)
    # W @ x: contracts the second-to-last axis of x
    W, x = np.asarray(A.value), B
    if W.ndim == 1:
        W2 = W[None, :]
    else:
        W2 = _squeeze_lead(W, 2, "MatMul")
    xs = x.shape
    if len(xs) == 1:
        res = _linear(imp, node, x, W2, None, hint, (id(A), "mmL"), node.input[0])
        return imp.fit(res, out_shape)
    if x.batch and len(xs) == 2:
        raise _Unsupported("MatMul contracting the batch axis")
    if xs[-1] == 1:
        v = imp.reshape(x, x.sample[:-1], x.batch)
        res = _linear(imp, node, v, W2, None, hint, (id(A), "mmL"), node.input[0])
        return imp.fit(res, out_shape)
    r = len(x.sample) + 1
    perm = list(range(r - 2)) + [r - 1, r - 2]
    xt = _permute(imp, x, perm, f"{hint}_T")
    res = _linear(imp, node, xt, W2, None, hint, (id(A), "mmL"), node.input[0])
    res = _permute(imp, res, perm, f"{hint}_TT")
    return imp.fit(res, out_shape)


def _permute(imp, x: _T, runtime_perm: list, hint: str) -> _T:
    """Permute the axes of ``x``'s runtime tensor (``runtime_perm[0]`` must be 0, the batch)."""
    if runtime_perm[0] != 0:
        raise _Unsupported("a transpose that moves the batch axis")
    res = imp.add(_vocab("permute")([p - 1 for p in runtime_perm[1:]]), [x], hint)
    res.batch = x.batch
    return res


@converter("Gemm")
def _gemm(imp, node, ins, a):
    A, B = ins[0], ins[1]
    C = ins[2] if len(ins) > 2 else None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    transA, transB = int(a.get("transA", 0)), int(a.get("transB", 0))
    if not B.const or A.const:
        raise _Unsupported("Gemm whose second operand depends on the input")
    if C is not None and not C.const:
        raise _Unsupported("Gemm with an input-dependent C")
    if transA:
        raise _Unsupported("Gemm with transA=1 on an input-dependent tensor (contracts the "
                           "batch axis)")
    if len(A.shape) != 2:
        raise _Unsupported(f"Gemm on a rank-{len(A.shape)} tensor")
    Bv = np.asarray(B.value)
    W = Bv if transB else Bv.T  # (M, K)
    if alpha != 1.0:
        W = W * np.asarray(alpha, dtype=W.dtype)
    N, M = A.shape[0], W.shape[0]
    bias = None
    if C is not None and beta != 0.0:
        cv = np.asarray(C.value) * np.asarray(beta, dtype=np.asarray(C.value).dtype)
        full = np.broadcast_to(cv, (N, M)) if cv.ndim <= 2 else None
        if full is None:
            raise _Unsupported("Gemm with a C of rank > 2")
        if cv.ndim == 2 and cv.shape[0] != 1:
            bias = np.ascontiguousarray(full) if not A.batch else None
            if bias is None:
                raise BoundGraphError("internal: Gemm bias with a batch axis")
        else:
            bias = np.ascontiguousarray(np.broadcast_to(cv.reshape(-1) if cv.ndim else cv, (M,)))
    res = _linear(imp, node, A, W, bias, _hint(node), (id(B), id(C), "gemm", alpha, beta, transB),
                  node.input[1], node.input[2] if C is not None else None)
    return imp.fit(res, (N, M))


# -- convolution and batch normalisation --------------------------------------------------------
def _pairs(a, name, default, n=2):
    v = a.get(name)
    return tuple(int(x) for x in v) if v is not None else (default,) * n


def _conv_pads(a, in_hw, kernel, strides, dilations):
    """ONNX pads ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` (auto_pad resolved)."""
    n = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0] * (2 * n)))
    elif auto == "VALID":
        pads = [0] * (2 * n)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_hw[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_hw[i])
            small, big = total // 2, total - total // 2
            b_, e_ = (small, big) if auto == "SAME_UPPER" else (big, small)
            begin.append(b_)
            end.append(e_)
        pads = begin + end
    else:
        raise _Unsupported(f"auto_pad={auto}")
    return [int(p) for p in pads]


def _pad_input(imp, x: _T, pads: list, hint: str, value=0.0) -> _T:
    """Constant padding of the last ``len(pads) // 2`` axes; ``pads`` in ONNX order
    ``[begin_1, ..., begin_n, end_1, ..., end_n]`` (negative values crop)."""
    n = len(pads) // 2
    torch_pads = []
    for i in reversed(range(n)):  # torch order: last axis first, (begin, end)
        torch_pads += [pads[i], pads[n + i]]
    res = imp.add(_vocab("pad")(tuple(torch_pads), float(value)), [x], hint)
    res.batch = x.batch
    return res


@converter("Conv")
def _conv(imp, node, ins, a):
    x, Wt = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not Wt.const or (b is not None and not b.const):
        raise _Unsupported("Conv with input-dependent weights")
    x = imp.as_batch(x, "Conv")
    W = np.asarray(Wt.value)
    nsp = W.ndim - 2
    if nsp not in (1, 2) or len(x.sample) != nsp + 1:
        raise _Unsupported(f"{nsp}-d convolution")
    kernel = tuple(W.shape[2:])
    strides = _pairs(a, "strides", 1, nsp)
    dil = _pairs(a, "dilations", 1, nsp)
    group = int(a.get("group", 1))
    pads = _conv_pads(a, x.sample[1:], kernel, strides, dil)
    hint = _hint(node)
    key = (id(Wt), "conv")
    if nsp == 1:  # as a 2-d convolution over (C, 1, L)
        x = imp.reshape(x, (x.sample[0], 1, x.sample[1]), True)
        W = W[:, :, None, :]
        kernel, strides, dil = (1,) + kernel, (1,) + strides, (1,) + dil
        pads = [0, pads[0], 0, pads[1]]
    begin, end = pads[:2], pads[2:]
    if begin != end:
        x = _pad_input(imp, x, pads, f"{hint}_pad")
        padding = (0, 0)
    else:
        padding = tuple(begin)
    w = imp.tensor_const(W, node.input[1], weight=True, key=key + (nsp,))
    refs = [x, w]
    if b is not None:
        refs.append(imp.tensor_const(np.asarray(b.value), node.input[2], weight=True,
                                     key=(id(b), "convb")))
    res = imp.add(O.Conv2d(strides, padding, dil, group), refs, hint)
    res.batch = True
    if nsp == 1:
        res = imp.reshape(res, (res.sample[0], res.sample[2]), True)
    return res


@converter("BatchNormalization")
def _batchnorm(imp, node, ins, a):
    x = ins[0]
    rest = ins[1:5]
    if any(t is None or not t.const for t in rest):
        raise _Unsupported("BatchNormalization with input-dependent statistics")
    if int(a.get("training_mode", 0)) or (imp.opset < 7 and not int(a.get("is_test", 1))):
        raise _Unsupported("BatchNormalization in training mode")
    if len([o for o in node.output if o]) > 1:
        raise _Unsupported("BatchNormalization with training outputs")
    x = imp.as_batch(x, "BatchNormalization")
    hint = _hint(node)
    scale, bias, mean, var = (np.asarray(t.value) for t in rest)
    C = x.sample[0] if x.sample else 0
    if any(v.size != C for v in (scale, bias, mean, var)):
        raise _Unsupported("BatchNormalization with per-activation statistics (spatial=0)")
    refs = [x]
    for k, (v, nm, wt) in enumerate(((scale, "weight", True), (bias, "bias", True),
                                     (mean, "running_mean", False), (var, "running_var", False))):
        refs.append(imp.tensor_const(v.reshape(-1), node.input[1 + k] or f"{hint}_{nm}",
                                     weight=wt, key=(id(rest[k]), "bn", nm)))
    refs.append(imp.literal(False, f"{hint}_training"))
    res = imp.add(O.BatchNorm(float(a.get("epsilon", 1e-5))), refs, hint)
    res.batch = True
    return res


# -- pooling ------------------------------------------------------------------------------------
def _pool_params(imp, x, a, what):
    kernel = tuple(int(k) for k in a["kernel_shape"])
    n = len(kernel)
    if n != 2 or len(x.sample) != 3:
        raise _Unsupported(f"{what} over {n} spatial axes")
    strides = _pairs(a, "strides", 1, n)
    dil = _pairs(a, "dilations", 1, n)
    pads = _conv_pads(a, x.sample[1:], kernel, strides, dil)
    return kernel, strides, dil, pads, int(a.get("ceil_mode", 0))


@converter("AveragePool")
def _avgpool(imp, node, ins, a):
    x = imp.as_batch(ins[0], "AveragePool")
    kernel, strides, dil, pads, ceil = _pool_params(imp, x, a, "AveragePool")
    if any(d != 1 for d in dil):
        raise _Unsupported("AveragePool with dilations")
    include = bool(int(a.get("count_include_pad", 0)))
    if pads[:2] != pads[2:]:
        if not include and any(pads):
            raise _Unsupported("AveragePool with asymmetric padding and count_include_pad=0")
        x = _pad_input(imp, x, pads, f"{_hint(node)}_pad")
        pads = [0, 0, 0, 0]
    if any(2 * p > k for p, k in zip(pads[:2], kernel)):
        raise _Unsupported("AveragePool with padding larger than half the kernel")
    op = O.AvgPool2d(kernel, strides, tuple(pads[:2]), bool(ceil), include)
    res = imp.add(op, [x], _hint(node))
    res.batch = True
    return res


@converter("GlobalAveragePool")
def _gap(imp, node, ins, a):
    x = imp.as_batch(ins[0], "GlobalAveragePool")
    if len(x.sample) != 3:
        raise _Unsupported(f"GlobalAveragePool over {len(x.sample) - 1} spatial axes")
    hw = tuple(x.sample[1:])
    res = imp.add(O.AvgPool2d(hw, hw), [x], _hint(node))
    res.batch = True
    return res


@converter("MaxPool")
def _maxpool(imp, node, ins, a):
    x = imp.as_batch(ins[0], "MaxPool")
    kernel, strides, dil, pads, ceil = _pool_params(imp, x, a, "MaxPool")
    if pads[:2] != pads[2:]:
        raise _Unsupported("MaxPool with asymmetric padding")
    if any(2 * p > k for p, k in zip(pads[:2], kernel)):
        raise _Unsupported("MaxPool with padding larger than half the kernel")
    op = _vocab("maxpool2d")(kernel, strides, tuple(pads[:2]), dil, bool(ceil))
    res = imp.add(op, [x], _hint(node))
    res.batch = True
    return res


# -- shape ops ----------------------------------------------------------------------------------
@converter("Flatten")
def _flatten(imp, node, ins, a):
    x = ins[0]
    shape = x.shape
    r = len(shape)
    ax = int(a.get("axis", 1))
    if not -r <= ax <= r:
        raise _Unsupported(f"Flatten axis {ax} out of range")
    if ax < 0:
        ax += r
    out = (math.prod(shape[:ax]), math.prod(shape[ax:]))
    return imp.fit(x, out)


def _reshape_target(in_shape, shape, allowzero: bool):
    shape = [int(s) for s in shape]
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise _Unsupported("Reshape copies a dimension the input does not have")
            out.append(in_shape[i])
        else:
            out.append(s)
    if out.count(-1) > 1:
        raise _Unsupported("Reshape with more than one -1")
    total = math.prod(in_shape)
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        if known == 0 or total % known:
            raise _Unsupported(f"cannot reshape {list(in_shape)} to {shape}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise _Unsupported(f"cannot reshape {list(in_shape)} to {shape}")
    return tuple(out)


@converter("Reshape")
def _reshape(imp, node, ins, a):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        if not ins[1].const:
            raise _Unsupported("Reshape to an input-dependent shape")
        shape = np.asarray(ins[1].value).reshape(-1)
    else:
        shape = a.get("shape")
        if shape is None:
            raise _Unsupported("Reshape without a shape")
    out = _reshape_target(x.shape, shape, bool(int(a.get("allowzero", 0))))
    return imp.fit(x, out)


def _axes(ins, a, k=1):
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(ins) > k and ins[k] is not None:
        if not ins[k].const:
            raise _Unsupported("input-dependent axes")
        return [int(v) for v in np.asarray(ins[k].value).reshape(-1)]
    return None


@converter("Squeeze")
def _squeeze(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    axes = _axes(ins, a)
    if axes is None:
        axes = [i for i, s in enumerate(shape) if s == 1]
    axes = {ax % len(shape) for ax in axes}
    if any(shape[ax] != 1 for ax in axes):
        raise _Unsupported("Squeeze of an axis whose size is not 1")
    return imp.fit(x, [s for i, s in enumerate(shape) if i not in axes])


@converter("Unsqueeze")
def _unsqueeze(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    axes = _axes(ins, a)
    if axes is None:
        raise _Unsupported("Unsqueeze without axes")
    r = len(shape) + len(axes)
    axes = sorted(ax % r for ax in axes)
    out = list(shape)
    for ax in axes:
        out.insert(ax, 1)
    return imp.fit(x, out)


@converter("Transpose")
def _transpose(imp, node, ins, a):
    x = ins[0]
    shape = x.shape
    r = len(shape)
    perm = [int(p) for p in a.get("perm", list(reversed(range(r))))]
    out = tuple(shape[p] for p in perm)
    moved = [p for p in perm if shape[p] != 1]
    if moved == sorted(moved):  # only unit axes move: a reshape
        return imp.fit(x, out)
    if x.batch and perm[0] == 0:
        res = _permute(imp, x, perm, _hint(node))
    else:
        x = imp.as_whole(x)
        res = _permute(imp, x, [0] + [p + 1 for p in perm], _hint(node))
    return imp.fit(res, out)


@converter("Concat")
def _concat(imp, node, ins, a):
    ts = [t for t in ins if t is not None and (not t.const or t.value.size > 0)]
    r = len(ts[0].shape)
    ax = int(a["axis"]) % r
    out = list(ts[0].shape)
    out[ax] = sum(t.shape[ax] for t in ts)
    cls = _vocab("cat")
    # batch form when every input-dependent piece has the batch axis and we do not join on it
    form_batch = ax != 0 and out[0] == 1 and all(t.batch for t in _batched(ts))
    refs = []
    for k, t in enumerate(ts):
        if t.const:
            v = np.asarray(t.value)
            if not form_batch:
                v = v[None]  # constants carry a batch axis of 1
            refs.append(imp.tensor_const(v, f"{_hint(node)}_part{k}", key=(id(t), "cat")))
        else:
            refs.append(t if form_batch else imp.as_whole(t))
    dim = ax - 1 if form_batch else ax  # per-sample axis
    res = imp.add(cls(dim), refs, _hint(node))
    res.batch = form_batch
    return imp.fit(res, out)


@converter("Pad")
def _pad(imp, node, ins, a):
    x = ins[0]
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if imp.opset < 11:
        pads = list(a.get("pads", a.get("paddings", [])))
        value = float(a.get("value", 0.0))
    else:
        if len(ins) < 2 or ins[1] is None or not ins[1].const:
            raise _Unsupported("Pad with input-dependent pads")
        pads = [int(p) for p in np.asarray(ins[1].value).reshape(-1)]
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            if not ins[2].const:
                raise _Unsupported("Pad with an input-dependent value")
            value = float(np.asarray(ins[2].value).reshape(-1)[0]) if np.asarray(
                ins[2].value).size else 0.0
        if len(ins) > 3 and ins[3] is not None:
            r = len(x.shape)
            axes = [int(v) % r for v in np.asarray(ins[3].value).reshape(-1)]
            full = [0] * (2 * r)
            for k, ax in enumerate(axes):
                full[ax] = pads[k]
                full[r + ax] = pads[len(axes) + k]
            pads = full
    if mode != "constant":
        raise _Unsupported(f"Pad mode '{mode}'")
    r = len(x.shape)
    if x.batch and (pads[0] or pads[r]):
        raise _Unsupported("Pad along the batch axis")
    if not any(pads):
        return x
    # pads of the per-sample axes (the batch axis, if any, has none)
    first = 1 if x.batch else 0
    sp = [pads[i] for i in range(first, r)] + [pads[r + i] for i in range(first, r)]
    n = len(sp) // 2
    lead = 0  # leading axes without padding need no entry
    while lead < n - 1 and sp[lead] == 0 and sp[n + lead] == 0:
        lead += 1
    res = _pad_input(imp, x, sp[lead:n] + sp[n + lead:], _hint(node), value)
    out = [s + pads[i] + pads[r + i] for i, s in enumerate(x.shape)]
    return imp.fit(res, out)


# -- reductions ---------------------------------------------------------------------------------
def _reduce_axes(imp, node, ins, a, input_since):
    if imp.opset >= input_since:
        axes = _axes(ins, {}, 1)
    else:
        axes = [int(v) for v in a["axes"]] if "axes" in a else None
    return axes


def _reduce(kind, input_since):
    def conv(imp, node, ins, a):
        x = ins[0]
        r = len(x.shape)
        axes = _reduce_axes(imp, node, ins, a, input_since)
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):
                return x
            axes = list(range(r))
        axes = sorted({ax % r for ax in axes})
        keep = bool(int(a.get("keepdims", 1)))
        out = [1 if i in axes else s for i, s in enumerate(x.shape)] if keep else \
            [s for i, s in enumerate(x.shape) if i not in axes]
        if x.batch and 0 in axes:
            if x.shape[0] == 1 and len(axes) > 1:
                axes = [ax for ax in axes if ax != 0]  # summing over the batch axis of 1
                x = imp.as_whole(x)
            else:
                raise _Unsupported(f"{node.op_type} over the batch axis would mix examples")
        dims = [imp.axis(x, ax, node.op_type) - 1 for ax in axes]
        res = imp.add(_vocab(kind)(dims, keep), [x], _hint(node))
        res.batch = x.batch and keep
        if not keep:
            res.batch = x.batch
        return imp.fit(res, out)
    return conv


_CONVERTERS["ReduceMean"] = _reduce("mean", 18)
_CONVERTERS["ReduceSum"] = _reduce("sum", 13)


# -- slicing and indexing -----------------------------------------------------------------------
@converter("Slice")
def _slice(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    r = len(shape)
    if imp.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        vals = []
        for t in ins[1:5] + [None] * (5 - len(ins)):
            if t is not None and not t.const:
                raise _Unsupported("Slice with input-dependent bounds")
            vals.append(None if t is None else [int(v) for v in np.asarray(t.value).reshape(-1)])
        starts, ends, axes, steps = vals
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
    cur = x
    out = list(shape)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= r
        n = shape[ax]
        if sp <= 0:
            raise _Unsupported("Slice with a non-positive step")
        st = min(max(st + n if st < 0 else st, 0), n)
        en = min(max(en + n if en < 0 else en, 0), n)
        size = max(0, -(-(en - st) // sp))
        if size == n:
            continue
        if size == 0:
            raise _Unsupported("Slice to an empty tensor")
        if cur.batch and ax == 0:
            raise _Unsupported("Slice along the batch axis would mix examples")
        dim = imp.axis(cur, ax, "Slice") - 1
        cur = _keep_form(imp.add(_vocab("slice")(dim, st, en, sp), [cur], _hint(node)), cur)
        out[ax] = size
    return imp.fit(cur, out)


def _keep_form(res: _T, like: _T) -> _T:
    res.batch = like.batch
    return res


@converter("Gather")
def _gather(imp, node, ins, a):
    x, ind = ins
    if not ind.const:
        raise _Unsupported("Gather with input-dependent indices")
    if x.const:
        raise _Unsupported("")
    idx = np.asarray(ind.value).astype(np.int64)
    r = len(x.shape)
    ax = int(a.get("axis", 0)) % r
    n = x.shape[ax]
    if x.batch and ax == 0:
        if np.all((idx == 0) | (idx == -1)):
            x = imp.as_whole(x)
        else:
            raise _Unsupported("Gather along the batch axis would mix examples")
    idx = np.where(idx < 0, idx + n, idx)
    if np.any(idx < 0) or np.any(idx >= n):
        raise _Unsupported("Gather with out-of-range indices")
    out = list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:])
    dim = imp.axis(x, ax, "Gather") - 1
    if idx.ndim == 0:
        res = _keep_form(imp.add(_vocab("select")(dim, int(idx)), [x], _hint(node)), x)
    else:
        iname = imp.tensor_const(idx.reshape(-1), f"{_hint(node)}_index", key=(id(ind), "gather"))
        res = _keep_form(imp.add(_vocab("index_select")(dim), [x, iname], _hint(node)), x)
    return imp.fit(res, out)


@converter("Expand")
def _expand(imp, node, ins, a):
    x, shp = ins
    if not shp.const:
        raise _Unsupported("Expand to an input-dependent shape")
    out = _broadcast(x.shape, tuple(int(v) for v in np.asarray(shp.value).reshape(-1)))
    if out == tuple(x.shape):
        return x
    x = imp.to_rank(x, len(out))
    if x.batch and out[0] != 1:
        x = imp.as_whole(x)
    target = out[1:] if x.batch else out
    res = _keep_form(imp.add(_vocab("expand")(target), [x], _hint(node)), x)
    return imp.fit(res, out)


@converter("Split")
def _split(imp, node, ins, a):
    x = ins[0]
    r = len(x.shape)
    ax = int(a.get("axis", 0)) % r
    n = x.shape[ax]
    k = len(node.output)
    if "split" in a:
        sizes = [int(v) for v in a["split"]]
    elif len(ins) > 1 and ins[1] is not None:
        if not ins[1].const:
            raise _Unsupported("Split with input-dependent sizes")
        sizes = [int(v) for v in np.asarray(ins[1].value).reshape(-1)]
    else:
        parts = int(a.get("num_outputs", k))
        step = -(-n // parts)
        sizes = [min(step, n - i * step) for i in range(parts)]
    if sum(sizes) != n:
        raise _Unsupported(f"Split sizes {sizes} do not add up to {n}")
    if x.batch and ax == 0:
        raise _Unsupported("Split along the batch axis would mix examples")
    dim = imp.axis(x, ax, "Split") - 1
    outs, start = [], 0
    for j, sz in enumerate(sizes):
        res = _keep_form(imp.add(_vocab("slice")(dim, start, start + sz, 1), [x],
                                 _hint(node, j)), x)
        shape = list(x.shape)
        shape[ax] = sz
        outs.append(imp.fit(res, shape))
        start += sz
    return outs


# -- shape queries ------------------------------------------------------------------------------
@converter("Shape")
def _shape(imp, node, ins, a):
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = int(a.get("start", 0)), a.get("end")
    return _T(value=shape[start:None if end is None else int(end)])


@converter("Size")
def _size(imp, node, ins, a):
    return _T(value=np.array(math.prod(ins[0].shape), dtype=np.int64))


_BATCHED_ONLY.update({"Shape": _shape, "Size": _size})
