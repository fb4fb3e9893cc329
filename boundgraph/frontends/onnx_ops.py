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
authority, and an unsupported-op error lists it): Gemm, MatMul (a constant on either side, or
two input-dependent operands: ``matmul``), Add, Sub, Mul, Div, Sum, Neg, Abs, Pow (a constant
exponent), Exp, Log, Reciprocal, Sqrt, Sin, Cos, Erf, Max, Min, Relu, LeakyRelu, Clip, Sigmoid,
Tanh, Softplus, Elu, Selu, Gelu, Softmax, LogSoftmax, LayerNormalization (decomposed as the torch
front end does ``nn.LayerNorm``), Conv (1-d and 2-d, pads, strides, dilations, groups,
auto_pad), ConvTranspose (1-d and 2-d), Resize and Upsample (nearest and linear),
BatchNormalization (inference), MaxPool, AveragePool, GlobalAveragePool, ReduceMean, ReduceSum,
ReduceMax, ReduceMin, Flatten, Reshape, Transpose, Concat, Split, Slice, Gather, Expand, Pad,
Squeeze, Unsqueeze, LSTM and GRU (unrolled over the sequence; any direction, initial states,
LSTM peepholes, both layouts; not clip, input_forget or shorter sequence_lens), Identity,
Dropout (inference), Cast (to the same float type), Constant, Shape, Size, and any op whose
inputs are all constant.

One ONNX node may become several bound-graph ops: a converter calls ``imp.add`` once per op
and returns the last tensor (``LayerNormalization`` gives up to nine ops, ``ConvTranspose`` with
asymmetric pads a transposed convolution and crops, ``LSTM`` a chain per time step).
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

__all__ = ["converter", "Converter", "resize_matrix", "upsample_axis_maps"]


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


def _reciprocal_of(imp, x: _T, hint: str) -> _T:
    """``1 / x``; of a ``sqrt`` (how ``rsqrt`` is exported, and ``x / sqrt(v)`` in
    decomposed layer norms) the one ``rsqrt`` op."""
    p = imp._by_name.get(x.node)
    if p is not None and p.kind == "op" and p.op.kind == "sqrt":
        t = imp.add(_vocab("rsqrt")(), [imp.batched[p.inputs[0]]], hint)
    else:
        t = imp.add(_vocab("reciprocal")(), [x], hint)
    t.batch = x.batch
    return t


def _reciprocal(imp, node, ins, a):
    return _reciprocal_of(imp, ins[0], _hint(node))


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
    "Exp": _unary("exp"),
    "Log": _unary("log"),
    "Reciprocal": _reciprocal,
    "Sqrt": _unary("sqrt"),
    "Sin": _unary("sin"),
    "Cos": _unary("cos"),
    "Erf": _unary("erf"),
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
    if x.const or not e.const:
        raise _Unsupported("Pow with an input-dependent exponent")
    ev = np.unique(np.asarray(e.value, dtype=np.float64).reshape(-1))
    if ev.size != 1 or not np.isfinite(ev[0]):
        raise _Unsupported(f"Pow with exponents {ev.tolist()[:8]} (one constant exponent has "
                           "rules)")
    p = float(ev[0])
    out_shape = _broadcast(x.shape, np.asarray(e.value).shape)
    if p == 1.0:
        t = x
    else:
        op = _vocab("square")() if p == 2.0 else _vocab("pow")(p)
        t = imp.add(op, [x], _hint(node))
        t.batch = x.batch
    return imp.fit(t, out_shape) if tuple(out_shape) != tuple(x.shape) else t


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
        if kind == "div" and not y.const:  # x / y = x * (1 / y), as the torch front end
            y = _reciprocal_of(imp, y, f"{_hint(node)}_reciprocal")
            return _binary("mul")(imp, node, [x, y], a)
        if not x.const and not y.const:
            fused = _fuse_pair(imp, node, kind, x, y, out_shape)
            if fused is not None:
                return fused
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
                # a scalar: broadcasts anywhere (maximum and minimum take a tensor)
                cv = cv.reshape((1,) if kind in ("maximum", "minimum") else ())
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


def _extreme(kind):
    """``Max`` / ``Min`` of any number of inputs: pairwise, constants folded first."""
    pair = _binary(kind)
    fold = np.maximum if kind == "maximum" else np.minimum

    def conv(imp, node, ins, a):
        ts = [t for t in ins if t is not None]
        consts = [t for t in ts if t.const]
        acc = None
        if consts:
            v = consts[0].value
            for c in consts[1:]:
                v = fold(v, c.value)
            acc = _T(value=np.asarray(v))
        for t in ts:
            if t.const:
                continue
            acc = t if acc is None else pair(imp, node, [acc, t], a)
        return acc
    return conv


_CONVERTERS["Max"] = _extreme("maximum")
_CONVERTERS["Min"] = _extreme("minimum")


def _fuse_pair(imp, node, kind, x: _T, y: _T, out_shape):
    """Two input-dependent operands that are one op of the vocabulary: ``x * x`` is
    ``square``; ``x - mean(x, dims, keepdim)`` is ``center`` (one affine op whose interval is
    exact, where a difference of two intervals loses their correlation). The torch front end
    makes the same ops, so exported files come back as they were traced."""
    if kind == "mul" and x.node == y.node and x.batch == y.batch:
        res = _keep_form(imp.add(_vocab("square")(), [x], _hint(node)), x)
        return imp.fit(res, out_shape)
    if kind == "sub" and tuple(out_shape) == tuple(x.shape) and x.batch == y.batch:
        m = imp._by_name.get(y.node)  # the mean itself, not a reshape of it
        if m is not None and m.kind == "op" and m.op.kind == "mean" and \
                m.op.attrs.get("keepdim") and m.inputs[0] == x.node:
            res = _keep_form(imp.add(_vocab("center")(m.op.attrs["dims"]), [x], _hint(node)), x)
            return imp.fit(res, out_shape)
    return None


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
    out_shape = _matmul_shape(tuple(A.shape), tuple(B.shape))
    if not A.const and not B.const:
        return _matmul_bounded(imp, node, A, B, out_shape)
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


def _matmul_bounded(imp, node, A: _T, B: _T, out_shape) -> _T:
    """``A @ B`` of two input-dependent tensors: the ``matmul`` op (McCormick planes).

    Vectors are promoted as ONNX does (``(k,) -> (1, k)`` on the left, ``(k, 1)`` on the right)
    and both operands get the same rank. When that rank is at least 3 and both have a leading
    unit axis they stay in batch form (per-sample matrices, the leading axes broadcasting);
    otherwise each example holds its whole ONNX tensor (a unit batch axis in front), so the
    batch axis is never one of the two matrix axes."""
    sa = (1,) + tuple(A.shape) if len(A.shape) == 1 else tuple(A.shape)
    sb = tuple(B.shape) + (1,) if len(B.shape) == 1 else tuple(B.shape)
    r = max(len(sa), len(sb))
    sa, sb = (1,) * (r - len(sa)) + sa, (1,) * (r - len(sb)) + sb
    batch = r >= 3 and sa[0] == 1 and sb[0] == 1
    ta = imp.reshape(A, sa[1:] if batch else sa, batch)
    tb = imp.reshape(B, sb[1:] if batch else sb, batch)
    res = imp.add(_vocab("matmul")(), [ta, tb], _hint(node))
    res.batch = batch
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
    begin, end = pads[:nsp], pads[nsp:]
    if begin != end:  # asymmetric: an explicit pad op
        x = _pad_input(imp, x, pads, f"{hint}_pad")
        padding = (0,) * nsp
    else:
        padding = tuple(begin)
    w = imp.tensor_const(W, node.input[1], weight=True, key=key + (nsp,))
    refs = [x, w]
    if b is not None:
        refs.append(imp.tensor_const(np.asarray(b.value), node.input[2], weight=True,
                                     key=(id(b), "convb")))
    if nsp == 1:
        op = _vocab("conv1d")(strides[0], padding[0], dil[0], group)
    else:
        op = O.Conv2d(strides, padding, dil, group)
    res = imp.add(op, refs, hint)
    res.batch = True
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
_CONVERTERS["ReduceMax"] = _reduce("amax", 18)
_CONVERTERS["ReduceMin"] = _reduce("amin", 18)


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


# -- normalisation ------------------------------------------------------------------------------
def _softmax(kind):
    """``Softmax`` / ``LogSoftmax``. From opset 13 along one axis (default -1); before, over the
    input flattened to 2-d at ``axis`` (default 1): all axes from ``axis`` on at once."""
    def conv(imp, node, ins, a):
        x = ins[0]
        shape = tuple(x.shape)
        r = len(shape)
        ax = int(a.get("axis", -1 if imp.opset >= 13 else 1))
        if not -r <= ax < r:
            raise _Unsupported(f"{node.op_type} axis {ax} out of range for rank {r}")
        ax %= r
        if imp.opset < 13 and ax < r - 1:  # coerced to 2-d: the trailing axes as one
            x = imp.fit(x, shape[:ax] + (math.prod(shape[ax:]),))
        dim = imp.axis(x, ax, node.op_type) - 1
        res = _keep_form(imp.add(_vocab(kind)(dim), [x], _hint(node)), x)
        return imp.fit(res, shape)
    return conv


_CONVERTERS["Softmax"] = _softmax("softmax")
_CONVERTERS["LogSoftmax"] = _softmax("log_softmax")


@converter("LayerNormalization")
def _layer_norm(imp, node, ins, a):
    """``LayerNormalization`` (opset 17) over the axes from ``axis`` on, as the torch front end
    decomposes ``nn.LayerNorm``: ``center`` (one affine op), ``square``, ``mean``, ``+ eps``,
    ``rsqrt``, the product of the centred input with it, a ``clamp`` to the range every
    normalised entry lies in (``+-sqrt(n - 1)`` for ``n`` entries, an identity on values), then
    ``* scale`` and ``+ bias``. Only the first output (the normalised tensor) has a rule."""
    x = ins[0]
    scale = ins[1] if len(ins) > 1 else None
    bias = ins[2] if len(ins) > 2 else None
    if any(t is not None and not t.const for t in (scale, bias)):
        raise _Unsupported("LayerNormalization with an input-dependent scale or bias")
    shape = tuple(x.shape)
    r = len(shape)
    ax = int(a.get("axis", -1))
    if not -r <= ax < r:
        raise _Unsupported(f"LayerNormalization axis {ax} out of range for rank {r}")
    ax %= r
    if x.batch and ax == 0:  # normalising over the (unit) batch axis too: per example
        x = imp.as_whole(x)
    dims = tuple(imp.axis(x, k, "LayerNormalization") - 1 for k in range(ax, r))
    eps = float(a.get("epsilon", 1e-5))
    hint = _hint(node)

    def step(op, refs, name):
        return _keep_form(imp.add(op, refs, f"{hint}_{name}"), x)

    xc = step(_vocab("center")(dims), [x], "centered")
    var = step(_vocab("mean")(dims, True), [step(_vocab("square")(), [xc], "square")], "var")
    var = step(_vocab("add")(), [var, imp.literal(eps, f"{hint}_eps")], "var_eps")
    inv = step(_vocab("rsqrt")(), [var], "rstd")
    y = step(_vocab("mul")(), [xc, inv], "normalized")
    # each normalised entry lies in [-sqrt(n - 1), sqrt(n - 1)]: stated by an identity clamp,
    # as the torch front end does (it keeps IBP finite where the variance interval reaches 0)
    n = math.prod(x.sample[d] for d in dims)
    c = math.sqrt(max(n - 1, 0)) * (1 + 1e-5) + 1e-6
    y = step(_vocab("clamp")(-c, c), [y], "range")
    for k, (t, kind) in enumerate(((scale, "mul"), (bias, "add"))):
        if t is None:
            continue
        v = np.asarray(t.value)
        if v.ndim > r - ax:
            v = _squeeze_lead(v, r - ax, "LayerNormalization")
        src = node.input[1 + k]
        c = imp.tensor_const(v, src or f"{hint}_{kind}", weight=True, key=(src, "ln", kind))
        y = step(_vocab(kind)(), [y, c], "scaled" if kind == "mul" else "shifted")
    return imp.fit(y, shape)


# -- transposed convolution ---------------------------------------------------------------------
@converter("ConvTranspose")
def _conv_transpose(imp, node, ins, a):
    """``ConvTranspose`` (1-d or 2-d): the ``conv_transpose`` op with symmetric padding (and
    torch's ``output_padding``); asymmetric pads, ``output_shape`` and ``auto_pad`` become the
    nearest symmetric padding and a crop (slices) of the rest."""
    x, Wt = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not Wt.const or (b is not None and not b.const):
        raise _Unsupported("ConvTranspose with input-dependent weights")
    x = imp.as_batch(x, "ConvTranspose")
    W = np.asarray(Wt.value)
    n = W.ndim - 2
    if n not in (1, 2) or len(x.sample) != n + 1:
        raise _Unsupported(f"{n}-d transposed convolution")
    kernel = tuple(W.shape[2:])
    if "kernel_shape" in a and tuple(int(k) for k in a["kernel_shape"]) != kernel:
        raise _Unsupported("ConvTranspose whose kernel_shape differs from the weight's")
    strides = _pairs(a, "strides", 1, n)
    dil = _pairs(a, "dilations", 1, n)
    opad = _pairs(a, "output_padding", 0, n)
    group = int(a.get("group", 1))
    in_sp = tuple(x.sample[1:])
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sp, strides, kernel, dil)]
    auto = _text(a.get("auto_pad", "NOTSET"))
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
        if "output_shape" in a:
            target = [int(v) for v in a["output_shape"]][-n:]
        else:
            target = [i * s for i, s in zip(in_sp, strides)]
        total = [f + p - t for f, p, t in zip(full, opad, target)]
        if any(t < 0 for t in total):
            raise _Unsupported("ConvTranspose with an output_shape larger than the full output")
        if auto == "SAME_UPPER":
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            begin, end = [t - t // 2 for t in total], [t // 2 for t in total]
    elif auto in ("NOTSET", "", "VALID"):
        pads = [0] * (2 * n) if auto == "VALID" else [int(p) for p in a.get("pads", [0] * 2 * n)]
        begin, end = pads[:n], pads[n:]
    else:
        raise _Unsupported(f"auto_pad={auto}")
    if any(p < 0 for p in begin + end):
        raise _Unsupported("ConvTranspose with negative pads")
    sym = [min(p, q) for p, q in zip(begin, end)]
    extra = [max(0, o - e + p) for o, e, p in zip(opad, end, sym)]  # torch's output_padding
    if any(q >= s and q >= d for q, s, d in zip(extra, strides, dil)):
        raise _Unsupported("ConvTranspose with output_padding not below the stride or dilation")
    hint = _hint(node)
    refs = [x, imp.tensor_const(W, node.input[1], weight=True, key=(id(Wt), "convT"))]
    if b is not None:
        refs.append(imp.tensor_const(np.asarray(b.value), node.input[2], weight=True,
                                     key=(id(b), "convTb")))
    op = _vocab("conv_transpose")(tuple(strides), tuple(sym), tuple(extra), group, tuple(dil))
    res = imp.add(op, refs, hint)
    res.batch = True
    for k in range(n):  # crop what the symmetric padding left
        start = begin[k] - sym[k]
        size = full[k] + opad[k] - begin[k] - end[k]
        if size <= 0:
            raise _Unsupported("ConvTranspose with an empty output")
        if start == 0 and size == res.sample[1 + k]:
            continue
        res = _keep_form(imp.add(_vocab("slice")(1 + k, start, start + size, 1), [res],
                                 f"{hint}_crop{k}"), res)
    return res


# -- resizing -----------------------------------------------------------------------------------
def _resize_coords(n: int, m: int, scale, coord: str):
    """ONNX ``Resize`` source coordinates of the ``m`` output positions of an axis of ``n``
    (exact fractions): ``scale`` is ``m / n`` for a given size, else the given float scale."""
    from fractions import Fraction as Fr

    s = Fr(scale) if not isinstance(scale, Fr) else scale
    half = Fr(1, 2)
    out = []
    for x in range(m):
        if coord == "asymmetric":
            xo = x / s
        elif coord == "half_pixel":
            xo = (x + half) / s - half
        elif coord == "pytorch_half_pixel":
            xo = (x + half) / s - half if m > 1 else Fr(0)
        elif coord == "tf_half_pixel_for_nn":
            xo = (x + half) / s
        elif coord == "align_corners":
            xo = Fr(x * (n - 1), m - 1) if m > 1 else Fr(0)
        elif coord == "half_pixel_symmetric":
            adjustment = m / (s * n)
            offset = Fr(n, 2) * (1 - adjustment)
            xo = offset + (x + half) / s - half
        else:
            raise _Unsupported(f"Resize with coordinate_transformation_mode '{coord}'")
        out.append(xo)
    return out


def resize_matrix(n: int, m: int, scale, mode: str, coord: str,
                  nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """The ``(m, n)`` matrix of ONNX ``Resize`` along one axis (nearest or linear), from the
    operator's formulas evaluated exactly; ``nearest_mode="simple"`` is the rounding of
    ``Resize-10`` and ``Upsample`` (down when enlarging, up when shrinking)."""
    from fractions import Fraction as Fr

    s = Fr(scale)
    M = np.zeros((m, n))
    if s == 1 and m == n:  # no resizing along this axis (onnxruntime copies it)
        return np.eye(n)
    coords = _resize_coords(n, m, s, coord)
    for o, xo in enumerate(coords):
        if mode == "nearest":
            if nearest_mode == "floor" or (nearest_mode == "simple" and s >= 1):
                i = math.floor(xo)
            elif nearest_mode in ("ceil", "simple"):
                i = math.ceil(xo)
            elif nearest_mode == "round_prefer_ceil":
                i = math.floor(xo + Fr(1, 2))
            elif nearest_mode == "round_prefer_floor":
                i = math.ceil(xo - Fr(1, 2))
            else:
                raise _Unsupported(f"Resize with nearest_mode '{nearest_mode}'")
            M[o, min(max(i, 0), n - 1)] = 1.0
        else:
            xc = min(max(xo, Fr(0)), Fr(n - 1))
            i0 = math.floor(xc)
            i1 = min(i0 + 1, n - 1)
            w = float(xc - i0)
            M[o, i0] += 1.0 - w
            M[o, i1] += w
    return M


def upsample_axis_maps(op, in_shape) -> list:
    """Per spatial axis, the ``(out, in)`` matrix of an ``upsample`` op on a per-sample input
    of shape ``in_shape`` ``(C, *spatial)``: each axis alone (both modes are separable and
    their rows sum to 1), from the op's own forward on an identity along that axis."""
    import torch

    sp = list(in_shape[1:])
    mats = []
    for k, n in enumerate(sp):
        view = [n, 1] + [n if j == k else 1 for j in range(len(sp))]
        eye = torch.eye(n, dtype=torch.float64).reshape(view).expand([n, 1] + sp).contiguous()
        with torch.no_grad():
            out = op.forward(eye)
        idx = [0] * len(sp)
        idx[k] = slice(None)
        mats.append(out[(slice(None), 0, *idx)].T.numpy())  # (out_k, in_k)
    return mats


def _resize_params(imp, node, ins, a, x):
    """``(mode, coordinate mode, nearest mode, per-axis scales, output shape)`` of a
    ``Resize`` or ``Upsample`` node on ``x`` (scales as given, or ``out / in`` from sizes)."""
    from fractions import Fraction as Fr

    shape = tuple(x.shape)
    r = len(shape)
    mode = _text(a.get("mode", "nearest"))
    if node.op_type == "Upsample" or imp.opset < 11:
        coord, nearest = "asymmetric", "simple"
        if node.op_type == "Upsample" and imp.opset < 9:
            scales, sizes = a.get("scales"), None
        else:
            k = 1
            scales, sizes = (ins[k] if len(ins) > k else None), None
            if scales is not None and not scales.const:
                raise _Unsupported(f"{node.op_type} with input-dependent scales")
            scales = None if scales is None else np.asarray(scales.value).reshape(-1)
    else:
        coord = _text(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
        vals = []
        for k in (2, 3):
            t = ins[k] if len(ins) > k else None
            if t is not None and not t.const:
                raise _Unsupported("Resize with input-dependent scales or sizes")
            v = None if t is None else np.asarray(t.value).reshape(-1)
            vals.append(None if v is None or v.size == 0 else v)
        scales, sizes = vals
        if _text(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise _Unsupported("Resize with keep_aspect_ratio_policy other than 'stretch'")
        axes = a.get("axes")
        if axes is not None:  # opset 18: values for some axes only
            axes = [int(v) % r for v in axes]
            for name in ("scales", "sizes"):
                v = scales if name == "scales" else sizes
                if v is None:
                    continue
                full = np.asarray([1.0] * r if name == "scales" else list(shape),
                                  dtype=v.dtype)
                full[axes] = v
                if name == "scales":
                    scales = full
                else:
                    sizes = full
    if mode not in ("nearest", "linear"):
        raise _Unsupported(f"{node.op_type} mode '{mode}' (nearest and linear have rules)")
    if coord == "tf_crop_and_resize":
        raise _Unsupported("Resize with coordinate_transformation_mode 'tf_crop_and_resize'")
    if sizes is not None:
        out = tuple(int(v) for v in sizes)
        if len(out) != r:
            raise _Unsupported("Resize sizes of another rank than the input")
        sc = [Fr(o, i) for o, i in zip(out, shape)]
    elif scales is not None:
        if len(scales) != r:
            raise _Unsupported(f"{node.op_type} scales of another rank than the input")
        f32 = [np.float32(v) for v in scales]
        sc = [Fr(float(v)) for v in f32]
        out = tuple(int(np.float32(v) * np.float32(i)) for v, i in zip(f32, shape))
    else:
        raise _Unsupported(f"{node.op_type} without scales or sizes")
    if int(a.get("antialias", 0)) and any(o < i for o, i in zip(out, shape)):
        raise _Unsupported("Resize with antialias when shrinking")
    if any(o <= 0 for o in out):
        raise _Unsupported("Resize to an empty tensor")
    return mode, coord, nearest, sc, out


@converter("Resize", "Upsample")
def _resize(imp, node, ins, a):
    """``Resize`` (and the older ``Upsample``) in nearest or linear mode over the axes after
    batch and channel. The per-axis maps come from the operator's formulas; when they equal
    those of torch's interpolation for the output size (``F.interpolate`` nearest, or bilinear
    with ``align_corners`` as the coordinate mode says), one ``upsample`` op; otherwise each
    axis on its own, ``index_select`` of the source positions (nearest) or a ``linear`` op
    with the interpolation matrix (linear)."""
    x = imp.as_batch(ins[0], node.op_type)
    mode, coord, nearest, sc, out = _resize_params(imp, node, ins, a, x)
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise _Unsupported(f"{node.op_type} of a rank-{len(shape)} tensor")
    if tuple(out[:2]) != shape[:2]:
        raise _Unsupported(f"{node.op_type} of the batch or channel axis")
    n_sp = len(shape) - 2
    mats = [resize_matrix(shape[2 + k], out[2 + k], sc[2 + k], mode, coord, nearest)
            for k in range(n_sp)]
    hint = _hint(node)
    if all(M.shape[0] == M.shape[1] and np.array_equal(M, np.eye(M.shape[0])) for M in mats):
        return x
    for align in ((None,) if mode == "nearest" else (coord == "align_corners",)):
        try:
            op = _vocab("upsample")(tuple(out[2:]), "nearest" if mode == "nearest" else
                                    "bilinear", align)
        except ValueError:
            break
        theirs = upsample_axis_maps(op, x.sample)
        if all(T.shape == M.shape and np.allclose(T, M, rtol=0, atol=1e-9)
               for T, M in zip(theirs, mats)):
            res = imp.add(op, [x], hint)
            res.batch = True
            return res
    cur = x
    for k, M in enumerate(mats):
        if M.shape[0] == M.shape[1] and np.array_equal(M, np.eye(M.shape[0])):
            continue
        dim = 1 + k  # per-sample dim
        name = f"{hint}_axis{k}"
        if mode == "nearest":
            idx = imp.tensor_const(M.argmax(1).astype(np.int64), f"{hint}_index{k}")
            cur = _keep_form(imp.add(_vocab("index_select")(dim), [cur, idx], name), cur)
            continue
        nd = len(cur.sample)
        last = dim == nd - 1
        if not last:  # move the axis last, interpolate, move it back
            perm = [0] + [p + 1 for p in range(nd) if p != dim] + [dim + 1]
            cur = _permute(imp, cur, perm, f"{name}_in")
        w = imp.tensor_const(M.astype(np.float64), f"{hint}_matrix{k}")
        cur = _keep_form(imp.add(O.Linear(), [cur, w], name), cur)
        if not last:
            back = [0] + [0] * nd
            for pos, p in enumerate(perm[1:]):
                back[p] = pos + 1
            cur = _permute(imp, cur, back, f"{name}_out")
    return cur


# -- recurrent layers ---------------------------------------------------------------------------
_RNN_ACTIVATIONS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _Rnn:
    """Shared plumbing of the ``LSTM`` and ``GRU`` converters: the node's constants per
    direction, the input as one tensor per example, and the ops of one time step."""

    def __init__(self, imp, node, ins, a, gates: int, default_acts: list):
        self.imp, self.node, self.hint = imp, node, _hint(node)
        X, W, R = ins[0], ins[1], ins[2]
        rest = list(ins[3:]) + [None] * (8 - len(ins))
        B, seq_lens, h0 = rest[0], rest[1], rest[2]
        self.c0_t = rest[3] if gates == 4 else None
        self.P = rest[4] if gates == 4 else None
        if X.const:
            raise _Unsupported(f"{node.op_type} of a constant sequence")
        for t, what in ((W, "W"), (R, "R"), (B, "B"), (seq_lens, "sequence_lens"),
                        (h0, "initial_h"), (self.c0_t, "initial_c"), (self.P, "P")):
            if t is not None and not t.const:
                raise _Unsupported(f"{node.op_type} with an input-dependent {what}")
        self.layout = int(a.get("layout", 0))
        direction = _text(a.get("direction", "forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise _Unsupported(f"{node.op_type} direction '{direction}'")
        self.dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        if a.get("activation_alpha") or a.get("activation_beta"):
            raise _Unsupported(f"{node.op_type} with activation_alpha/beta")
        names = [_text(v).lower() for v in a.get("activations", [])] or \
            default_acts * len(self.dirs)
        if any(n not in _RNN_ACTIVATIONS for n in names):
            raise _Unsupported(f"{node.op_type} activations {names} (sigmoid, tanh and relu "
                               "have rules)")
        k = len(default_acts)
        if len(names) != k * len(self.dirs):
            raise _Unsupported(f"{node.op_type} with {len(names)} activations for "
                               f"{len(self.dirs)} direction(s)")
        self.acts = [names[d * k:(d + 1) * k] for d in range(len(self.dirs))]
        if a.get("clip") is not None:
            raise _Unsupported(f"{node.op_type} with clip")
        self.W = np.asarray(W.value)
        self.R = np.asarray(R.value)
        D, GH, I = self.W.shape
        self.H = int(a.get("hidden_size", GH // gates))
        if D != len(self.dirs) or GH != gates * self.H:
            raise _Unsupported(f"{node.op_type} weights of shape {list(self.W.shape)}")
        self.B = np.zeros((D, 2 * gates * self.H), self.W.dtype) if B is None else \
            np.asarray(B.value)
        x = imp.as_whole(X)  # each example holds its whole ONNX sequence tensor
        self.X = x
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[2] != I:
            raise _Unsupported(f"{node.op_type} input of shape {list(shape)}")
        self.S, self.b = (shape[0], shape[1]) if self.layout == 0 else (shape[1], shape[0])
        self.seq_dim = 0 if self.layout == 0 else 1  # per-sample dim of the time axis
        if seq_lens is not None and np.any(np.asarray(seq_lens.value) != self.S):
            raise _Unsupported(f"{node.op_type} with sequence_lens shorter than the sequence")

        def state(t):
            if t is None:
                return np.zeros((D, self.b, self.H), self.W.dtype)
            v = np.asarray(t.value)
            return v if self.layout == 0 else np.swapaxes(v, 0, 1)  # (D, b, H)
        self.h0, self.c0 = state(h0), state(self.c0_t)

    def add(self, op, refs, name):
        res = self.imp.add(op, refs, f"{self.hint}_{name}")
        res.batch = False
        return res

    def const(self, v, name):
        return self.imp.tensor_const(np.ascontiguousarray(v), f"{self.hint}_{name}")

    def linear(self, x, W, b, name, key):
        w = self.imp.tensor_const(np.ascontiguousarray(W), f"{self.hint}_{name}_weight",
                                  weight=True, key=(id(self.node), key, "W"))
        refs = [x, w]
        if b is not None:
            refs.append(self.imp.tensor_const(np.ascontiguousarray(b),
                                              f"{self.hint}_{name}_bias", weight=True,
                                              key=(id(self.node), key, "b")))
        return self.add(O.Linear(), refs, name)

    def act(self, kind, x, name):
        return self.add(_vocab(_RNN_ACTIVATIONS[kind])(), [x], name)

    def gate(self, g, k, name):
        """Gate ``k`` (``H`` wide) of the pre-activations ``g``."""
        return self.add(_vocab("slice")(1, k * self.H, (k + 1) * self.H, 1), [g], name)

    def plus(self, x, c, name):
        """``x + c`` for a batched ``x`` and a constant ``c`` of shape ``(b, n)`` (skipped when
        0)."""
        if not np.any(c):
            return x
        return self.add(_vocab("add")(), [x, self.const(c, name)], name)

    def times(self, x, c, name):
        """``x * c`` for a constant ``c`` (None when ``c`` is 0)."""
        if not np.any(c):
            return None
        return self.add(_vocab("mul")(), [x, self.const(c, name)], name)

    def sum(self, parts, name):
        parts = [p for p in parts if p is not None]
        out = parts[0]
        for k, p in enumerate(parts[1:]):
            out = self.add(_vocab("add")(), [out, p], f"{name}{k}" if k < len(parts) - 2
                           else name)
        return out

    def run(self, step):
        """Unroll every direction with ``step(d, t, x_proj_t, state) -> state`` (``state[0]``
        the hidden state); returns ``(hidden states per direction and time, last states)``."""
        hs, last = [], []
        for d, direction in enumerate(self.dirs):
            G = self.W.shape[1]
            proj = self.linear(self.X, self.W[d], self.B[d, :G], f"d{d}_input", f"in{d}")
            order = range(self.S) if direction == "forward" else range(self.S - 1, -1, -1)
            state, seq = None, [None] * self.S
            for t in order:
                xt = self.add(_vocab("select")(self.seq_dim, t), [proj], f"d{d}_x{t}")
                state = step(d, t, xt, state)
                seq[t] = state[0]
            hs.append(seq)
            last.append(state)
        return hs, last

    def outputs(self, hs, last, extra=()):
        """``Y``, ``Y_h`` (and ``Y_c``) in the node's layout."""
        imp, D = self.imp, len(self.dirs)
        stack = _vocab("stack")
        outs = []
        # Y: layout 0 (S, D, b, H), layout 1 (b, S, D, H)
        dir_dim = 0 if self.layout == 0 else 1
        per_t = [self.add(stack(dir_dim), [hs[d][t] for d in range(D)], f"y{t}")
                 for t in range(self.S)]
        Y = self.add(stack(0 if self.layout == 0 else 1), per_t, "y")
        outs.append(Y)
        for k in range(1 + len(extra)):
            vals = [last[d][k] for d in range(D)]
            outs.append(self.add(stack(dir_dim), vals, "y_h" if k == 0 else "y_c"))
        shapes = [(self.S, D, self.b, self.H) if self.layout == 0 else (self.b, self.S, D, self.H)]
        shapes += [(D, self.b, self.H) if self.layout == 0 else (self.b, D, self.H)] * \
            (1 + len(extra))
        return [imp.fit(t, s) for t, s in zip(outs, shapes)]


@converter("LSTM")
def _lstm(imp, node, ins, a):
    """``LSTM`` unrolled over its (fixed) sequence into the ops the torch front end makes for
    ``nn.LSTM``: one ``linear`` for the input projections, then per step a ``linear`` of the
    hidden state, gate slices, sigmoid/tanh, products of two bounded tensors and sums
    (peepholes included, any direction; no clip)."""
    if int(a.get("input_forget", 0)):
        raise _Unsupported("LSTM with input_forget=1")
    rnn = _Rnn(imp, node, ins, a, 4, ["sigmoid", "tanh", "tanh"])
    H = rnn.H
    P = None if rnn.P is None else np.asarray(rnn.P.value)

    def step(d, t, xt, state):
        f_act, g_act, h_act = rnn.acts[d]
        G = 4 * H
        Rb = rnn.B[d, G:]
        tag = f"d{d}_t{t}"
        if state is None:  # constant initial state
            h_prev, c_prev = rnn.h0[d], rnn.c0[d]
            g = rnn.plus(xt, h_prev @ rnn.R[d].T + Rb, f"{tag}_gates")
        else:
            h_prev, c_prev = state
            g = rnn.sum([xt, rnn.linear(h_prev, rnn.R[d], Rb, f"{tag}_rec", f"rec{d}")],
                        f"{tag}_gates")
        const_c = not isinstance(c_prev, _T)
        # ONNX gate order: input, output, forget, cell
        pi, po, pf, pc = (rnn.gate(g, k, f"{tag}_{n}") for k, n in enumerate("iofc"))
        if P is not None:
            Pi, Po, Pf = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
            if const_c:
                pi, pf = rnn.plus(pi, Pi * c_prev, f"{tag}_peep_i"), \
                    rnn.plus(pf, Pf * c_prev, f"{tag}_peep_f")
            else:
                pi = rnn.sum([pi, rnn.times(c_prev, Pi, f"{tag}_pci")], f"{tag}_peep_i")
                pf = rnn.sum([pf, rnn.times(c_prev, Pf, f"{tag}_pcf")], f"{tag}_peep_f")
        i = rnn.act(f_act, pi, f"{tag}_i")
        f = rnn.act(f_act, pf, f"{tag}_f")
        cc = rnn.act(g_act, pc, f"{tag}_cand")
        ic = rnn.add(_vocab("mul")(), [i, cc], f"{tag}_ic")
        fc = rnn.times(f, c_prev, f"{tag}_fc") if const_c else \
            rnn.add(_vocab("mul")(), [f, c_prev], f"{tag}_fc")
        c = rnn.sum([fc, ic], f"{tag}_c")
        if P is not None:
            po = rnn.sum([po, rnn.times(c, Po, f"{tag}_pco")], f"{tag}_peep_o")
        o = rnn.act(f_act, po, f"{tag}_o")
        h = rnn.add(_vocab("mul")(), [o, rnn.act(h_act, c, f"{tag}_hc")], f"{tag}_h")
        return h, c

    hs, last = rnn.run(step)
    return rnn.outputs(hs, last, extra=("c",))


@converter("GRU")
def _gru(imp, node, ins, a):
    """``GRU`` unrolled like :func:`_lstm` into the ops of the torch front end's ``nn.GRU``
    (``linear_before_reset`` either way; any direction)."""
    rnn = _Rnn(imp, node, ins, a, 3, ["sigmoid", "tanh"])
    H = rnn.H
    lbr = bool(int(a.get("linear_before_reset", 0)))

    def step(d, t, xt, state):
        f_act, g_act = rnn.acts[d]
        G = 3 * H
        Rd, Rb = rnn.R[d], rnn.B[d, G:]
        tag = f"d{d}_t{t}"
        const_h = state is None
        h_prev = rnn.h0[d] if const_h else state[0]
        # ONNX gate order: update (z), reset (r), hidden (h)
        xz, xr, xh = (rnn.gate(xt, k, f"{tag}_x{n}") for k, n in enumerate("zrh"))
        if const_h:
            rec = h_prev @ Rd.T + Rb  # (b, 3H)
            pz = rnn.plus(xz, rec[:, :H], f"{tag}_pz")
            pr = rnn.plus(xr, rec[:, H:2 * H], f"{tag}_pr")
        else:
            rec = rnn.linear(h_prev, Rd[:2 * H], Rb[:2 * H], f"{tag}_rec", f"rec{d}")
            pz = rnn.sum([xz, rnn.gate(rec, 0, f"{tag}_hz")], f"{tag}_pz")
            pr = rnn.sum([xr, rnn.gate(rec, 1, f"{tag}_hr")], f"{tag}_pr")
        z = rnn.act(f_act, pz, f"{tag}_z")
        r = rnn.act(f_act, pr, f"{tag}_r")
        Rh, Rbh = Rd[2 * H:], Rb[2 * H:]
        if const_h and lbr:  # r * (h0 Rh^T + Rbh)
            hh = rnn.times(r, h_prev @ Rh.T + Rbh, f"{tag}_rh")
            ph = xh if hh is None else rnn.sum([xh, hh], f"{tag}_ph")
        elif const_h and np.any(h_prev):  # (r * h0) Rh^T + Rbh
            rh = rnn.times(r, h_prev, f"{tag}_rh0")
            ph = rnn.sum([xh, rnn.linear(rh, Rh, Rbh, f"{tag}_rh", f"rech{d}")], f"{tag}_ph")
        elif const_h:  # h0 = 0: Rbh alone
            ph = rnn.plus(xh, np.broadcast_to(Rbh, (rnn.b, H)), f"{tag}_ph")
        elif lbr:
            lin = rnn.linear(h_prev, Rh, Rbh, f"{tag}_rh", f"rech{d}")
            ph = rnn.sum([xh, rnn.add(_vocab("mul")(), [r, lin], f"{tag}_rlin")], f"{tag}_ph")
        else:
            rh = rnn.add(_vocab("mul")(), [r, h_prev], f"{tag}_rh0")
            ph = rnn.sum([xh, rnn.linear(rh, Rh, Rbh, f"{tag}_rh", f"rech{d}")], f"{tag}_ph")
        n = rnn.act(g_act, ph, f"{tag}_n")
        one_minus_z = rnn.add(_vocab("sub")(), [imp.literal(1.0, f"{rnn.hint}_one"), z],
                              f"{tag}_1mz")
        new = rnn.add(_vocab("mul")(), [one_minus_z, n], f"{tag}_new")
        keep = rnn.times(z, h_prev, f"{tag}_keep") if const_h else \
            rnn.add(_vocab("mul")(), [z, h_prev], f"{tag}_keep")
        h = rnn.sum([new, keep], f"{tag}_h")
        return (h,)

    hs, last = rnn.run(step)
    return rnn.outputs(hs, last)


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
