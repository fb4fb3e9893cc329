"""Converters of the ONNX importer: one function per ONNX op type, building bound-graph nodes.

:mod:`boundgraph.frontends.onnx_import` walks the ONNX graph and hands each node with an
input-dependent input to the converter registered for its op type in ``_CONVERTERS`` (nodes whose
inputs are all constant are folded by the importer, unless listed in ``_NEVER_FOLD``). This
module holds the registry and the helpers the families share; the modules of the package hold
one op family each: :mod:`.elementwise` (pass-through ops, element-wise unary and binary ops),
:mod:`.linear` (affine layers, convolution, transposed convolution and batch normalisation),
:mod:`.pooling` (pooling and reductions), :mod:`.shape` (reshaping, transposing, concatenating,
padding, slicing and indexing, shape queries), :mod:`.normalization` (softmax and layer norm),
:mod:`.resize` (Resize and Upsample) and :mod:`.recurrent` (LSTM and GRU).

Adding a converter
    Write ``f(imp, node, ins, a)`` in the module of its family and register it with
    ``@converter("OpType", ...)`` (a new family module is imported at the end of this one). It
    gets the importer (``imp``), the ONNX ``NodeProto``, its inputs as
    :class:`~boundgraph.frontends.onnx_graph._T` (``None`` for an omitted optional input) and its
    attributes as a dict, and returns the output ``_T`` (or a list of them, one per ONNX output).
    Build nodes with ``imp.add(op, inputs, hint)`` on ops of the vocabulary (``_vocab(kind)``),
    bring results to the ONNX output shape with ``imp.fit(t, shape)`` (see the batch convention
    in :mod:`~boundgraph.frontends.onnx_import`), and raise ``_Unsupported(reason)`` for a use
    without rules: the node is then reported together with all other unsupported nodes. Add the
    op to the list below.

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

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ... import ops as O
from ..onnx_graph import _T, _Unsupported

if TYPE_CHECKING:
    from ..onnx_import import _Importer

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


# -- helpers shared by the families -------------------------------------------------------------
def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _keep_form(res: _T, like: _T) -> _T:
    res.batch = like.batch
    return res


def _broadcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise _Unsupported(f"shapes {[list(s) for s in shapes]} do not broadcast") from None


def _permute(imp, x: _T, runtime_perm: list, hint: str) -> _T:
    """Permute the axes of ``x``'s runtime tensor (``runtime_perm[0]`` must be 0, the batch)."""
    if runtime_perm[0] != 0:
        raise _Unsupported("a transpose that moves the batch axis")
    res = imp.add(_vocab("permute")([p - 1 for p in runtime_perm[1:]]), [x], hint)
    res.batch = x.batch
    return res


def _squeeze_lead(w: np.ndarray, keep: int, what: str) -> np.ndarray:
    if w.ndim > keep:
        if any(s != 1 for s in w.shape[:w.ndim - keep]):
            raise _Unsupported(f"{what} with a batched (rank {w.ndim}) constant operand")
        w = w.reshape(w.shape[w.ndim - keep:])
    return w


def _axes(ins, a, k=1):
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(ins) > k and ins[k] is not None:
        if not ins[k].const:
            raise _Unsupported("input-dependent axes")
        return [int(v) for v in np.asarray(ins[k].value).reshape(-1)]
    return None


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


# --------------------------------------------------------------- the families (registration)
# Imported last: each family module imports the registry and the helpers above, and registers
# its converters on import.
from . import (elementwise, linear, normalization, pooling, recurrent,  # noqa: E402, F401
               resize, shape)
from .linear import _matmul_shape  # noqa: E402, F401  (imported from here by onnx_import)
from .resize import resize_matrix, upsample_axis_maps  # noqa: E402, F401
