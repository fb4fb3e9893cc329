"""Affine converters: MatMul (a constant operand: ``linear``, with permutes where it contracts
an inner axis; two input-dependent operands: ``matmul``) and Gemm onto ``linear``, Conv (1-d and
2-d) onto ``conv1d`` / ``conv2d`` (asymmetric pads as a ``pad`` first), ConvTranspose onto
``conv_transpose`` (and crops), and BatchNormalization (inference) onto ``batchnorm``.
"""
from __future__ import annotations

import numpy as np

from ... import ops as O
from ...errors import BoundGraphError
from ..onnx_graph import _T, _Unsupported
from . import (_conv_pads, _hint, _keep_form, _pad_input, _pairs, _permute, _squeeze_lead,
               _text, _vocab, converter)


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
def _conv_operands(imp, ins, op: str, what: str):
    """``(x, W, b, spatial dims)`` of a Conv / ConvTranspose node: constant weights (and bias),
    a batched 1-d or 2-d input."""
    x, Wt = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not Wt.const or (b is not None and not b.const):
        raise _Unsupported(f"{op} with input-dependent weights")
    x = imp.as_batch(x, op)
    W = np.asarray(Wt.value)
    n = W.ndim - 2
    if n not in (1, 2) or len(x.sample) != n + 1:
        raise _Unsupported(f"{n}-d {what}")
    return x, W, b, n


@converter("Conv")
def _conv(imp, node, ins, a):
    x, W, b, nsp = _conv_operands(imp, ins, "Conv", "convolution")
    kernel = tuple(W.shape[2:])
    strides = _pairs(a, "strides", 1, nsp)
    dil = _pairs(a, "dilations", 1, nsp)
    group = int(a.get("group", 1))
    pads = _conv_pads(a, x.sample[1:], kernel, strides, dil)
    hint = _hint(node)
    key = (id(ins[1]), "conv")
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


# -- transposed convolution ---------------------------------------------------------------------
@converter("ConvTranspose")
def _conv_transpose(imp, node, ins, a):
    """``ConvTranspose`` (1-d or 2-d): the ``conv_transpose`` op with symmetric padding (and
    torch's ``output_padding``); asymmetric pads, ``output_shape`` and ``auto_pad`` become the
    nearest symmetric padding and a crop (slices) of the rest."""
    x, W, b, n = _conv_operands(imp, ins, "ConvTranspose", "transposed convolution")
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
    refs = [x, imp.tensor_const(W, node.input[1], weight=True, key=(id(ins[1]), "convT"))]
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
