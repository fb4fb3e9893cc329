"""What every engine needs for one bound computation: the graph, constant values, the ops to
use (after specialisation to the clean pass) and the set of each input."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DomainError
from ..graph import BoundGraph
from ..ops.base import Interval
from ..perturbation import InputSet


@dataclass
class Context:
    graph: BoundGraph
    consts: dict[str, Any]
    sets: dict[str, InputSet]  # input node -> its set (box (B, *shape), and ball if any)
    opts: dict = field(default_factory=dict)
    ops: dict[str, Any] = field(default_factory=dict)  # node -> op (after bind)
    overrides: dict[str, dict[int, Any]] = field(default_factory=dict)
    #: node -> its op's ``kink_slope`` tensor for backward steps (set by alpha-CROWN)
    slopes: dict[str, Any] = field(default_factory=dict)

    @property
    def box(self) -> Interval:
        """The box of the first input's set."""
        return self.sets[self.graph.input].box

    @property
    def batch(self) -> int:
        return self.sets[self.graph.input].batch

    def input_boxes(self) -> dict[str, Interval]:
        """``{input node: its box}``, the intervals every pass starts from."""
        return {name: s.box for name, s in self.sets.items()}

    def example(self, b: int) -> "Context":
        """The context of example ``b`` alone (its input sets; constants and ops are shared)."""
        return replace(self, sets={k: s.example(b) for k, s in self.sets.items()})

    def op(self, name):
        return self.ops.get(name) or self.graph.nodes[name].op

    def interval(self, name: str, bounds: dict[str, Interval | None]) -> Interval:
        """Node ``name``'s IBP rule on its inputs' current bounds."""
        return self.rule(name, self.op(name).interval, *self.inputs(name, bounds))

    def rule(self, name: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, one of node ``name``'s rules; a :class:`DomainError` it
        raises comes out naming the node and its line of code."""
        try:
            return fn(*args, **kwargs)
        except DomainError as e:
            raise e.at(name, self.graph.nodes[name].source) from None

    def opts_for(self, name: str) -> dict:
        """Options for node ``name``'s rules: the shared ones plus its own kink slopes."""
        if name not in self.slopes:
            return self.opts
        return {**self.opts, "kink_slope": self.slopes[name]}

    def inputs(self, name: str, bounds: dict[str, Interval | None]) -> list:
        """Input values of node ``name``: the interval of a bounded input (``None`` if not
        computed), the value of a constant one (after clean-pass overrides)."""
        node = self.graph.nodes[name]
        ov = self.overrides.get(name, {})
        vals = []
        for i, inp in enumerate(node.inputs):
            if i in ov:
                vals.append(ov[i])
            elif self.graph.nodes[inp].batched:
                vals.append(bounds.get(inp))
            else:
                vals.append(self.consts[inp])
        return vals


class Intervals(dict):
    """``{node name: Interval}`` as :meth:`~boundgraph.BoundedModule.compute_bounds` returns it
    with ``return_intermediate``. It remembers the :class:`Context` it was computed in (input
    box, constants, ops bound to the clean batch), so a later call given these intervals for the
    same input and perturbation skips rebuilding it (for a BatchNorm network in training mode
    that is a whole clean forward pass)."""

    def __init__(self, bounds, context: Context | None = None):
        super().__init__(bounds)
        self.context = context
