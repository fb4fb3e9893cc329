"""The bound graph: the one intermediate representation every front end produces and every
engine walks.

A :class:`BoundGraph` is a list of :class:`Node` in topological order. There are four node kinds:

``input``
    An input of the model (one or more per graph, in the order of the model's arguments; the
    first is ``graph.input``). Its ``shape`` is the per-sample shape, its ``target`` the
    argument's name.
``param``
    A reference to a *live* tensor of the wrapped module: a parameter or buffer named by its
    qualified name (``target="layer1.0.weight"``), or the ``training`` flag of a submodule
    (``target="bn1.training"`` with ``attr="training"``). Nothing is copied: every evaluation
    looks the tensor up on the module, so optimiser steps and ``load_state_dict`` are seen.
``const``
    A literal value captured at trace/import time (a Python number or a tensor).
``op``
    An operation of the vocabulary in :mod:`boundgraph.ops`, applied to its inputs.

A node is *batched* when it depends on the input; batched nodes carry bounds, the others are
plain constants evaluated once per call. ``shape`` is the per-sample shape (batch dimension
left out) for batched nodes and the full shape for constants (when known).

Structure queries (ancestors, consumers) use a networkx ``DiGraph`` built once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from .errors import BoundGraphError


@dataclass
class Node:
    name: str
    kind: str  # "input" | "param" | "const" | "op"
    op: Any = None  # boundgraph.ops.Op for kind "op"
    inputs: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    target: str | None = None  # qualified name of a param/buffer, or "<module path>.training"
    value: Any = None  # literal value of a const node
    source: str = ""  # where in the user's model (file:line: code) or ONNX node name
    batched: bool = False
    module: str = ""  # path of the innermost nn.Module that produced it ("" when unknown)

    def describe(self) -> str:
        if self.kind == "op":
            what = f"{self.op!r}({', '.join(self.inputs)})"
        elif self.kind == "param":
            what = f"param {self.target}"
        elif self.kind == "const":
            v = self.value
            what = f"const {tuple(v.shape) if torch.is_tensor(v) else v!r}"
        else:
            what = "input"
        dims = [] if self.shape is None else [str(d) for d in self.shape]
        shape = "" if self.shape is None else (
            "[" + ", ".join(["B"] + dims) + "]" if self.batched else f"({', '.join(dims)})")
        return f"{self.name:<20} {what}  {shape}"


class BoundGraph:
    """Nodes in topological order plus structure queries.

    Parameters
    ----------
    nodes:
        Nodes in topological order (each node's inputs appear before it).
    output:
        Name of the output node.
    origin:
        Human-readable origin (model class name or ONNX file) used in error messages.
    """

    def __init__(self, nodes: list[Node], output: str, origin: str = "model"):
        self.nodes: dict[str, Node] = {}
        for n in nodes:
            if n.name in self.nodes:
                raise BoundGraphError(f"duplicate node name {n.name!r}")
            for i in n.inputs:
                if i not in self.nodes:
                    raise BoundGraphError(f"node {n.name!r} uses {i!r} before it is defined")
            self.nodes[n.name] = n
        inputs = [n.name for n in nodes if n.kind == "input"]
        if not inputs:
            raise BoundGraphError("a bound graph needs at least one input node")
        #: the input nodes, in the order of the model's arguments
        self.inputs: tuple[str, ...] = tuple(inputs)
        #: the first input (the only one of most models)
        self.input = inputs[0]
        self.output = output
        self.origin = origin
        # batched flags: a node is batched when any input is
        for n in self.nodes.values():
            n.batched = n.kind == "input" or any(self.nodes[i].batched for i in n.inputs)
        if not self.nodes[output].batched:
            raise BoundGraphError("the model's output does not depend on its input"
                                  + ("s" if len(inputs) > 1 else ""))
        self.nx = nx.DiGraph()
        for n in self.nodes.values():
            self.nx.add_node(n.name)
            for i in n.inputs:
                self.nx.add_edge(i, n.name)
        # only nodes the output depends on matter
        keep = nx.ancestors(self.nx, output) | {output}
        self.live = [n for n in self.nodes.values() if n.name in keep]
        self.batched_order = [n.name for n in self.live if n.batched]
        #: the batched op nodes in topological order (``batched_order`` less the inputs)
        self.batched_ops = [n for n in self.batched_order if self.nodes[n].kind == "op"]
        self.const_order = [n.name for n in self.live if not n.batched]
        self._ancestors: dict[str, tuple[str, ...]] = {}  # batched_ancestors, per node
        self.consumers: dict[str, list[str]] = {
            name: [c for c in self.nx.successors(name) if c in keep] for name in keep
        }
        for n in self.live:
            if n.kind == "op":
                n.op.in_shapes = tuple(self.nodes[i].shape for i in n.inputs)
                n.op.out_shape = n.shape
                n.op.bounded_inputs = tuple(self.nodes[i].batched for i in n.inputs)

    # ----------------------------------------------------------------- structure queries
    def batched_ancestors(self, name: str) -> tuple[str, ...]:
        """Batched nodes ``name`` depends on (itself included), in topological order.

        The graph does not change after construction, so each answer is computed once (every
        backward pass asks, and full CROWN starts thousands of them)."""
        cache = self._ancestors
        if name not in cache:
            anc = nx.ancestors(self.nx, name) | {name}
            cache[name] = tuple(n for n in self.batched_order if n in anc)
        return cache[name]

    def op_nodes(self) -> list[Node]:
        return [n for n in self.live if n.kind == "op"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape of the first input."""
        return tuple(self.nodes[self.input].shape)

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-example shapes of every input, in argument order."""
        return tuple(tuple(self.nodes[i].shape) for i in self.inputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs' argument names (the node name where none was recorded)."""
        return tuple(self.nodes[i].target or i for i in self.inputs)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.nodes[self.output].shape)

    # ----------------------------------------------------------------- evaluation
    def constants(self, module: torch.nn.Module) -> dict[str, Any]:
        """Evaluate every constant node (live parameter lookups and constant-only ops)."""
        env: dict[str, Any] = {}
        for name in self.const_order:
            n = self.nodes[name]
            if n.kind == "param":
                env[name] = resolve_live(module, n.target)
            elif n.kind == "const":
                env[name] = n.value
            else:
                env[name] = n.op.forward(*[env[i] for i in n.inputs])
        return env

    def forward(self, x, module: torch.nn.Module, consts=None, record: bool = False):
        """Concrete forward pass of input ``x`` (a tuple of tensors, one per input, when there
        are several). Returns the output, or the whole environment if ``record``."""
        env = dict(self.constants(module) if consts is None else consts)
        xs = x if isinstance(x, (tuple, list)) else (x,)
        for name, v in zip(self.inputs, xs):
            env[name] = v
        for name in self.batched_ops:
            n = self.nodes[name]
            env[name] = n.op.forward(*[env[i] for i in n.inputs])
        return env if record else env[self.output]

    # ----------------------------------------------------------------- printing
    def summary(self) -> str:
        lines = [f"BoundGraph of {self.origin}: {len(self.live)} nodes "
                 f"({len(self.batched_order)} batched), output {self.output!r}"]
        lines += ["  " + n.describe() for n in self.live]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<BoundGraph of {self.origin}: {len(self.live)} nodes>"


def resolve_live(module: torch.nn.Module, target: str):
    """Look up a parameter, buffer or ``<submodule>.training`` flag on ``module`` by name."""
    path, _, attr = target.rpartition(".")
    owner = module.get_submodule(path) if path else module
    return getattr(owner, attr)
