"""Torch front end: ``nn.Module`` -> :class:`~boundgraph.graph.BoundGraph` via ``torch.export``.

The module is exported once in evaluation mode with a dynamic batch dimension, so any batch
size works afterwards. ``torch.export`` keeps high-level aten ops (``aten.conv2d``,
``aten.linear``, ``aten.batch_norm``, ...) which map one-to-one onto the op vocabulary through
the converter table :data:`CONVERTERS`. Parameters and buffers become ``param`` nodes that look
up the module's own tensors at every call (no copies), and each BatchNorm reads the live
``training`` flag of its module, so ``model.train()`` / ``model.eval()`` behave as in torch.

Adding a rule for an aten op nobody handles yet: see :func:`register_op`.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import torch
from torch import fx

from .. import ops as O
from ..errors import TraceError, UnsupportedOpError
from ..graph import BoundGraph, Node

Factory = Callable[[dict, fx.Node], tuple]
CONVERTERS: dict[str, Factory] = {}


class Unsupported(Exception):
    """Raised by a converter for a use of an op it cannot bound (e.g. division by a tensor
    that depends on the input)."""


def register_op(target, factory: Factory | None = None):
    """Register how an aten op becomes a bound-graph op (usable as a decorator).

    ``target`` is an op overload (``torch.ops.aten.gelu.default``) or its name
    (``"aten.gelu.default"``). ``factory(args, node)`` receives the op's arguments by schema
    name (defaults filled in) and the fx node, and returns ``(op, inputs)``: an
    :class:`boundgraph.ops.Op` instance and the list of its inputs (fx nodes or literal
    constants such as numbers and tensors). Example, for a user op with its own rules::

        class Square(bg.ops.Elementwise):
            kind = "square"
            def forward(self, x): return x * x
            def interval(self, x): ...
            def relax(self, l, u, opts=None): ...

        bg.register_op("aten.square.default", lambda a, node: (Square(), [a["self"]]))
    """
    name = target if isinstance(target, str) else str(target)

    def deco(f):
        CONVERTERS[name] = f
        return f

    return deco(factory) if factory is not None else deco


def _args(node: fx.Node) -> dict[str, Any]:
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return {**{str(i): a for i, a in enumerate(node.args)}, **node.kwargs}
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


def _val_shape(node) -> tuple | None:
    v = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(v.shape) if torch.is_tensor(v) else None


def _sample_shape(node) -> tuple[int, ...]:
    shape = _val_shape(node)
    return tuple(int(s) for s in shape[1:])


def _keeps_batch(node) -> bool:
    shape = _val_shape(node)
    return bool(shape) and not isinstance(shape[0], int)


# ------------------------------------------------------------------------------- converters
def _reshape(a, node):
    if not _keeps_batch(node):
        raise Unsupported("reshapes across the batch dimension are not supported")
    return O.Reshape(_sample_shape(node)), [a["self"]]


for _n in ("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
           "aten.flatten.using_ints", "aten.unsqueeze.default", "aten.squeeze.dim",
           "aten.squeeze.dims", "aten.squeeze.default", "aten.unflatten.int"):
    register_op(_n, _reshape)

for _n in ("aten.dropout.default", "aten.clone.default", "aten.contiguous.default",
           "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
           "aten.feature_dropout.default", "aten.alpha_dropout.default"):
    register_op(_n, lambda a, node: (O.Identity(), [a.get("self", a.get("input"))]))

register_op("aten.linear.default",
            lambda a, n: (O.Linear(), [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])))
register_op("aten.relu.default", lambda a, n: (O.ReLU(), [a["self"]]))
register_op("aten.neg.default", lambda a, n: (O.Neg(), [a["self"]]))
register_op("aten.add.Tensor", lambda a, n: (O.Add(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.add.Scalar", lambda a, n: (O.Add(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.sub.Tensor", lambda a, n: (O.Sub(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.sub.Scalar", lambda a, n: (O.Sub(a["alpha"]), [a["self"], a["other"]]))
register_op("aten.rsub.Scalar", lambda a, n: (O.Sub(a["alpha"]), [a["other"], a["self"]]))
register_op("aten.rsub.Tensor", lambda a, n: (O.Sub(a["alpha"]), [a["other"], a["self"]]))
register_op("aten.mul.Tensor", lambda a, n: (O.Mul(), [a["self"], a["other"]]))
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


class _LiveFlag:
    """Marker: the ``training`` flag of submodule ``path``, looked up at every call."""

    def __init__(self, path):
        self.path = path


_INPUT_DEPENDENT: set = set()


def _depends_on_input(n: fx.Node) -> bool:
    return n in _INPUT_DEPENDENT


_SKIP = {"aten.sym_size.int", "aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
         "aten._assert_tensor_metadata.default", "aten.sym_constrain_range.default"}

_TORCH_DIR = re.escape(inspect.getfile(torch).rsplit("/", 1)[0])


def _source(node: fx.Node) -> str:
    """``file:line: code`` of the innermost frame of the user's own code for ``node``."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    user = [f for f in frames if not re.match(_TORCH_DIR, f[0])]
    if not user:
        return ""
    f, line, fn, code = user[-1]
    return f"{f}:{line} in {fn}: {code.strip()}"


# ------------------------------------------------------------------------------- tracing
def export_module(model: torch.nn.Module, example: torch.Tensor):
    """``torch.export`` the model in evaluation mode with a dynamic batch dimension."""
    from torch.export import Dim, export

    if example.dim() == 0:
        raise TraceError("the example input needs a batch dimension")
    ex = example[:1].expand(2, *example.shape[1:]).clone() if example.shape[0] < 2 else example
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return export(model, (ex,), dynamic_shapes=({0: Dim("batch")},), strict=False)
    except Exception as e:  # noqa: BLE001 - turned into one readable error
        msg = str(e).strip().splitlines()
        head = "\n".join(msg[:6])
        raise TraceError(f"torch.export could not trace {type(model).__name__}: "
                         f"{type(e).__name__}: {head}") from e
    finally:
        for m, t in modes.items():
            m.training = t


def trace(model: torch.nn.Module, example: torch.Tensor) -> BoundGraph:
    """Trace ``model`` (batch-first input like ``example``) into a bound graph."""
    ep = export_module(model, example)
    sig = ep.graph_signature
    origin = type(model).__name__
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1:
        raise TraceError(f"{origin}.forward takes {len(user_inputs)} tensor inputs; "
                         "bound graphs support models with one input")

    nodes: list[Node] = []
    names: dict[fx.Node, str] = {}
    unsupported: list[tuple[str, str, str]] = []
    literal_count = [0]
    flags: dict[str, str] = {}

    def literal(value) -> str:
        if isinstance(value, _LiveFlag):
            if value.path not in flags:
                name = f"{value.path or 'model'}.training".replace(".", "_")
                nodes.append(Node(name, "param", target=f"{value.path}.training" if value.path else "training"))
                flags[value.path] = name
            return flags[value.path]
        literal_count[0] += 1
        name = f"const_{literal_count[0]}"
        if torch.is_tensor(value):
            value = value.detach().clone()
        nodes.append(Node(name, "const", value=value,
                          shape=tuple(value.shape) if torch.is_tensor(value) else None))
        return name

    _INPUT_DEPENDENT.clear()
    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name in params or n.name in buffers:
                fqn = params.get(n.name) or buffers[n.name]
                if n.name in buffers:
                    owner = fqn.rpartition(".")[0]
                    n.meta["_bg_buffer_owner"] = owner
                nodes.append(Node(n.name, "param", target=fqn, shape=_val_shape(n)))
            elif n.name in lifted:
                val = ep.constants[lifted[n.name]]
                nodes.append(Node(n.name, "const", value=val.detach().clone(), shape=tuple(val.shape)))
            elif n.name in user_inputs:
                nodes.append(Node(n.name, "input", shape=_sample_shape(n)))
                _INPUT_DEPENDENT.add(n)
            else:
                raise TraceError(f"unexpected graph input {n.name} in {origin}")
            names[n] = n.name
        elif n.op == "call_function":
            tname = str(n.target)
            if tname in _SKIP:
                continue
            conv = CONVERTERS.get(tname)
            if conv is None:
                unsupported.append((n.name, tname, _source(n)))
                continue
            try:
                op, ins = conv(_args(n), n)
            except Unsupported as e:
                unsupported.append((n.name, f"{tname} ({e})", _source(n)))
                continue
            refs = []
            for v in ins:
                if isinstance(v, fx.Node):
                    if v not in names:  # input of an unsupported node: already reported
                        break
                    refs.append(names[v])
                else:
                    refs.append(literal(v))
            else:
                dep = any(isinstance(v, fx.Node) and v in _INPUT_DEPENDENT for v in ins)
                if dep:
                    _INPUT_DEPENDENT.add(n)
                shape = _sample_shape(n) if dep else _val_shape(n)
                nodes.append(Node(n.name, "op", op=op, inputs=tuple(refs), shape=shape,
                                  source=_source(n)))
                names[n] = n.name
        elif n.op == "output":
            outs = n.args[0]
            if len(outs) != 1 or not isinstance(outs[0], fx.Node):
                raise TraceError(f"{origin}.forward returns {len(outs)} outputs; "
                                 "bound graphs support one output tensor")
            out = outs[0]
        else:
            unsupported.append((n.name, f"{n.op} {n.target}", _source(n)))
    if unsupported:
        raise UnsupportedOpError(unsupported, model=f"{origin} (traced with torch.export)")
    if out not in names:
        raise TraceError(f"the output of {origin} could not be mapped")
    return BoundGraph(nodes, names[out], origin=origin)
