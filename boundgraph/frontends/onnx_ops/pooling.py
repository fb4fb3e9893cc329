"""Pooling and reduction converters: AveragePool, GlobalAveragePool and MaxPool (2-d) onto
``avgpool2d`` / ``maxpool2d`` (asymmetric average-pool pads as a ``pad`` first), and ReduceMean,
ReduceSum, ReduceMax and ReduceMin onto ``mean``, ``sum``, ``amax`` and ``amin``.
"""
from __future__ import annotations

from ... import ops as O
from ..onnx_graph import _Unsupported
from . import _CONVERTERS, _axes, _conv_pads, _hint, _pad_input, _pairs, _vocab, converter


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
