"""Element-wise converters: Identity, Dropout (inference) and Cast (to the same float type) pass
their input through; Relu, LeakyRelu, Sigmoid, Tanh, Softplus, Elu, Selu, Gelu, Neg, Abs, Exp,
Log, Reciprocal, Sqrt, Sin, Cos, Erf, Clip and Pow (a constant exponent) map onto the
vocabulary's unary ops, and Add, Sub, Mul, Div, Sum, Max and Min onto its binary ops (``x * x``
as ``square``, ``x - mean(x)`` as ``center``, a bias vector added to a ``linear`` fused into it).
"""
from __future__ import annotations

import math

import numpy as np

from ... import ops as O
from ..onnx_graph import _FLOAT_TYPES, _T, _Unsupported
from . import _CONVERTERS, _broadcast, _hint, _keep_form, _text, _vocab, converter


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
