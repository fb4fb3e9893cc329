"""Torch front end: ``nn.Module`` -> :class:`~boundgraph.graph.BoundGraph` via ``torch.export``.

The module is exported once in evaluation mode with a dynamic batch dimension, so any batch
size works afterwards. ``torch.export`` keeps high-level aten ops (``aten.conv2d``,
``aten.linear``, ``aten.batch_norm``, ...) which map one-to-one onto the op vocabulary through
the converter table :data:`CONVERTERS`. Parameters and buffers become ``param`` nodes that look
up the module's own tensors at every call (no copies), and each BatchNorm reads the live
``training`` flag of its module, so ``model.train()`` / ``model.eval()`` behave as in torch.

This module is the tracing loop. The converter registry (:data:`CONVERTERS`,
:func:`register_op`, :class:`Unsupported`, all re-exported here) and the helpers converters
use live in :mod:`boundgraph.frontends.torch_rules`, the built-in converters in
:mod:`boundgraph.frontends.torch_converters`.

Nodes computed from constants only (parameters, buffers, literals) are evaluated by torch
itself at every call, on the live values. Adding a rule for an aten op nobody handles yet: see
:func:`register_op`.
"""
from __future__ import annotations

import inspect
import re
import warnings
from typing import Callable

import torch
from torch import fx

from .. import ops as O
from ..errors import TraceError, UnsupportedOpError
from ..graph import BoundGraph, Node
from . import torch_converters  # noqa: F401 - registers the built-in converters
from .decompose import batch_first_attention, decompose
from .torch_converters import _MULTI_OUTPUT
# Factory, CONVERTERS, Unsupported and register_op are re-exported: public here too
from .torch_rules import (CONVERTERS, _BATCH, _BDIM, _INPUT_DEPENDENT, Factory,  # noqa: F401
                          Unsupported, _args, _batch_axis, _bdim, _depends_on_input, _LiveFlag,
                          _sample_shape, _val_shape, register_op)


class _ConstCall(O.Op):
    """A node computed from constants only (parameters, buffers, literals): torch runs the
    aten op itself at every call, on the live values, so e.g. ``self.mean.view(1, -1, 1, 1)``
    or ``self.log_scale.exp()`` stay in sync with the module. Not part of the vocabulary."""

    kind = "aten"

    def __init__(self, target, args, kwargs):
        super().__init__(target=str(target))
        self.target, self.args, self.kwargs = target, args, kwargs

    def forward(self, *vals):
        def fill(v):
            if isinstance(v, _Slot):
                return vals[v.index]
            if isinstance(v, (list, tuple)):
                return type(v)(fill(x) for x in v)
            return v
        return self.target(*fill(self.args), **{k: fill(v) for k, v in self.kwargs.items()})


class _Slot:
    def __init__(self, index):
        self.index = index


# factories whose batch-size argument can be 1 (the result broadcasts over the batch)
_BATCH_AS_ONE = {"aten.zeros.default", "aten.ones.default", "aten.full.default",
                 "aten.empty.memory_format", "aten.expand.default", "aten.new_zeros.default",
                 "aten.new_ones.default", "aten.new_full.default", "aten.new_empty.default"}


def _constant_call(node: fx.Node):
    """``(op, inputs)`` evaluating ``node`` (which depends on no input) with torch itself."""
    inputs = []

    def slot(v):
        if isinstance(v, (list, tuple)):
            return type(v)(slot(x) for x in v)
        if not isinstance(v, fx.Node):
            return v
        if str(v.target) == "aten.sym_size.int":
            batch = v.args[1] == 0 and _depends_on_input(v.args[0])
            if str(node.target) in _BATCH_AS_ONE and batch:
                return 1
            raise Unsupported("a constant computed from the input's sizes")
        inputs.append(v)
        return _Slot(len(inputs) - 1)

    args = slot(tuple(node.args))
    kwargs = {k: slot(v) for k, v in node.kwargs.items()}
    return _ConstCall(node.target, args, kwargs), inputs


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


def _module(node: fx.Node) -> str:
    """Path of the innermost submodule that ``node`` belongs to (``"layer1.0.conv1"``), or
    ``""`` for code of the top-level module."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    return re.sub(r"^L\['self'\]\.?", "", path)


#: converters that follow the batch axis wherever it is (pointwise ops, reductions and shape
#: ops name their dims through _sample_dim / _sample_shape); the others need it first
_ANY_BATCH_AXIS = {
    f"aten.{n}" for n in (
        "relu.default", "leaky_relu.default", "sigmoid.default", "tanh.default", "gelu.default",
        "silu.default", "abs.default", "elu.default", "selu.default", "hardtanh.default",
        "relu6.default", "clamp.default", "clip.default", "clamp_min.default",
        "clamp_max.default", "softplus.default", "neg.default", "exp.default", "log.default",
        "reciprocal.default", "sqrt.default", "rsqrt.default", "sin.default", "cos.default",
        "erf.default", "pow.Tensor_Scalar", "square.default", "dropout.default",
        "clone.default", "contiguous.default", "alias.default", "detach.default",
        "feature_dropout.default", "alpha_dropout.default",
        "add.Tensor", "add.Scalar", "sub.Tensor", "sub.Scalar", "rsub.Scalar", "rsub.Tensor",
        "mul.Tensor", "mul.Scalar", "div.Tensor", "div.Scalar", "maximum.default",
        "minimum.default", "linear.default", "matmul.default", "bmm.default",
        "mean.dim", "sum.dim_IntList", "amax.default", "amin.default", "max.dim", "min.dim",
        "softmax.int", "_softmax.default", "log_softmax.int", "_log_softmax.default",
        "view.default", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
        "unsqueeze.default", "squeeze.dim", "squeeze.dims", "squeeze.default",
        "unflatten.int", "permute.default", "transpose.int", "t.default", "select.int",
        "slice.Tensor", "index_select.default", "index.Tensor", "cat.default",
        "stack.default", "expand.default", "flip.default", "pad.default",
        "constant_pad_nd.default")} | {"<built-in function getitem>"}


def _batch_axis_use(n: fx.Node) -> str | None:
    """Why ``n`` cannot follow a batch axis that is not first (``None`` if it can)."""
    tname = str(n.target)
    if tname not in _ANY_BATCH_AXIS:
        return "this op needs the batch axis first (seq-first layouts reach it here)"
    if tname == "aten.linear.default":
        x = n.args[0]
        if _bdim(x) == len(_val_shape(x)) - 1:
            return "a linear map over the batch axis"
    if tname in ("aten.matmul.default", "aten.bmm.default"):
        for v in n.args[:2]:
            if isinstance(v, fx.Node) and v in _INPUT_DEPENDENT and \
                    _bdim(v) >= len(_val_shape(v)) - 2:
                return "a matrix product over the batch axis"
    return None


def _batch_first_const(v, n_out: int, q: int):
    """A constant operand of an op whose output has its batch axis at ``q`` (rank ``n_out``),
    as it broadcasts against the graph's batch-first value: the dim it has at the batch
    position (torch broadcasting, from the right) moved to the front. ``None``: unchanged."""
    shape = _val_shape(v) if isinstance(v, fx.Node) else \
        (tuple(v.shape) if torch.is_tensor(v) else None)
    if shape is None:
        return None
    k = q - (n_out - len(shape))
    return k if k > 0 else None


# ------------------------------------------------------------------------------- tracing
def export_module(model: torch.nn.Module, example):
    """``torch.export`` the model in evaluation mode with a dynamic batch dimension (the first
    dimension of ``example``, a tensor or a tuple of tensors, one per argument)."""
    from torch.export import Dim, export

    examples = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if not examples:
        raise TraceError("the example input is empty: give one tensor per model argument")
    for e in examples:
        if not torch.is_tensor(e):
            raise TraceError(f"example inputs must be tensors, got {type(e).__name__}")
        if e.dim() == 0:
            raise TraceError("the example input needs a batch dimension")
    if len({e.shape[0] for e in examples}) > 1:
        raise TraceError("the example inputs have different batch sizes: "
                         f"{[e.shape[0] for e in examples]}")
    ex = tuple(e[:1].expand(2, *e.shape[1:]).clone() if e.shape[0] < 2 else e for e in examples)
    batch = Dim("batch")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # nn.LSTM / nn.GRU refresh their flat weight list in forward; export warns
            warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights")
            return export(model, ex, dynamic_shapes=tuple({0: batch} for _ in ex), strict=False)
    except Exception as e:  # noqa: BLE001 - turned into one readable error
        msg = str(e).strip().splitlines()
        head = "\n".join(msg[:6])
        raise TraceError(f"torch.export could not trace {type(model).__name__}: "
                         f"{type(e).__name__}: {head}") from e
    finally:
        for m, t in modes.items():
            m.training = t


def _has_rule(name: str) -> bool:
    return name in CONVERTERS or name in _SKIP or name in _MULTI_OUTPUT


def _input_dependence(ep) -> Callable[[fx.Node], bool]:
    """Whether a node of ``ep``'s graph depends on the model's input."""
    user = set(ep.graph_signature.user_inputs)
    dep: set = set()
    for n in ep.graph.nodes:
        if n.op == "placeholder":
            if n.name in user:
                dep.add(n)
        elif str(n.target) not in _SKIP and any(i in dep for i in n.all_input_nodes):
            dep.add(n)  # sizes (sym_size) are not values: factories sized by them are constants
    return dep.__contains__


def trace(model: torch.nn.Module, example) -> BoundGraph:
    """Trace ``model`` (batch-first input like ``example``, or one per argument when it is a
    tuple) into a bound graph.

    Ops without a rule are first decomposed into ops that have one
    (:mod:`boundgraph.frontends.decompose`)."""
    with batch_first_attention(model):
        ep = export_module(model, example)
    try:
        ep, declined = decompose(ep, _has_rule, _input_dependence)
    except Exception as e:  # noqa: BLE001 - turned into one readable error
        raise TraceError(f"decomposing the ops of {type(model).__name__} without rules failed: "
                         f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
    sig = ep.graph_signature
    origin = type(model).__name__
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    user_inputs = list(sig.user_inputs)

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
    _BDIM.clear()
    _BATCH[:] = [str(_val_shape(next(n for n in ep.graph.nodes if n.name in user_inputs))[0])]
    moved = [0]

    def batch_first(v, k):
        """Graph name of constant ``v`` with its dim ``k`` moved to the front."""
        if torch.is_tensor(v):
            return literal(v.movedim(k, 0))
        moved[0] += 1
        name = f"{names[v]}_batch_first_{moved[0]}"
        nodes.append(Node(name, "op", op=_ConstCall(torch.movedim, (_Slot(0), k, 0), {}),
                          inputs=(names[v],)))
        return name

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
                nodes.append(Node(n.name, "input", shape=_sample_shape(n), target=n.name))
                _INPUT_DEPENDENT.add(n)
            else:
                raise TraceError(f"unexpected graph input {n.name} in {origin}")
            names[n] = n.name
        elif n.op == "call_function":
            tname = str(n.target)
            if tname in _SKIP:
                continue
            if tname in _MULTI_OUTPUT and n.args[0] in _INPUT_DEPENDENT:
                _INPUT_DEPENDENT.add(n)  # stands for its input; see _getitem
                _BDIM[n] = _bdim(n.args[0])
                if n.args[0] in names:
                    names[n] = names[n.args[0]]
                continue
            conv = CONVERTERS.get(tname)
            if any(i in _INPUT_DEPENDENT for i in n.all_input_nodes):
                _INPUT_DEPENDENT.add(n)  # even without a rule, so its consumers are reported
            else:  # a computation on constants only: torch itself evaluates it
                conv = lambda a, node: _constant_call(node)  # noqa: E731
            if conv is None:
                why = f"{tname} ({declined[n.name]})" if n.name in declined else tname
                unsupported.append((n.name, why, _source(n)))
                continue
            q = 0
            if n in _INPUT_DEPENDENT:
                q = _batch_axis(n)
                if q is not None:
                    _BDIM[n] = q
                moves = q != 0 or any(_bdim(i) != 0 for i in n.all_input_nodes
                                      if i in _INPUT_DEPENDENT)
                why = _batch_axis_use(n) if moves and q is not None else None
                if why:
                    unsupported.append((n.name, f"{tname} ({why})", _source(n)))
                    continue
            try:
                op, ins = conv(_args(n), n)
            except Unsupported as e:
                unsupported.append((n.name, f"{tname} ({e})", _source(n)))
                continue
            n_out = len(_val_shape(n) or ())
            refs = []
            for v in ins:
                const = not (isinstance(v, fx.Node) and v in _INPUT_DEPENDENT)
                k = _batch_first_const(v, n_out, q) if const and q else None
                if isinstance(v, fx.Node):
                    if v not in names:  # input of an unsupported node: already reported
                        break
                    refs.append(names[v] if k is None else batch_first(v, k))
                else:
                    refs.append(literal(v) if k is None else batch_first(v, k))
            else:
                dep = any(isinstance(v, fx.Node) and v in _INPUT_DEPENDENT for v in ins)
                if dep:
                    _INPUT_DEPENDENT.add(n)
                shape = _sample_shape(n) if dep else _val_shape(n)
                nodes.append(Node(n.name, "op", op=op, inputs=tuple(refs), shape=shape,
                                  source=_source(n), module=_module(n)))
                names[n] = n.name
        elif n.op == "output":
            outs = n.args[0]
            if len(outs) != 1 or not isinstance(outs[0], fx.Node):
                raise TraceError(f"{origin}.forward returns {len(outs)} outputs; "
                                 "bound graphs support one output tensor")
            out = outs[0]
        else:
            unsupported.append((n.name, f"{n.op} {n.target}", _source(n)))
    if out in names and _bdim(out) != 0:
        unsupported.append((out.name, f"{out.target} (the model's output has its batch axis "
                            f"at dimension {_bdim(out)}; return it batch-first, e.g. "
                            "out.transpose(0, 1))", _source(out)))
    if unsupported:
        raise UnsupportedOpError(unsupported, model=f"{origin} (traced with torch.export)")
    if out not in names:
        raise TraceError(f"the output of {origin} could not be mapped")
    return BoundGraph(nodes, names[out], origin=origin)
