"""Normalisation converters: Softmax and LogSoftmax onto ``softmax`` / ``log_softmax`` along one
axis, and LayerNormalization onto the ops the torch front end decomposes ``nn.LayerNorm`` into
(``center``, ``square``, ``mean``, ``rsqrt``, products, an identity ``clamp``, scale and bias).
"""
from __future__ import annotations

import math

import numpy as np

from ..onnx_graph import _Unsupported
from . import _CONVERTERS, _hint, _keep_form, _squeeze_lead, _vocab, converter


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
