"""What every engine needs for one bound computation: the graph, constant values, the ops to
use (after specialisation to the clean pass) and the set of each input."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

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
    #: split constraints: node -> sign tensor ``(B, *shape)``, +1 where the node's value is
    #: constrained ``>= 0``, -1 where ``<= 0``, 0 where free (branch and bound's sub-domains)
    splits: dict[str, Any] = field(default_factory=dict)
    #: node -> ``(lower, upper)`` terms ``(B, S, *shape)`` added to the coefficients reaching
    #: the node in a backward pass (the Lagrange terms of split constraints; set by
    #: alpha-CROWN for its output pass)
    betas: dict[str, Any] = field(default_factory=dict)
    #: nodes whose lower-bound coefficients a backward pass records in ``taps`` (for branching
    #: scores and the input point a bound is attained at); ``None``: record nothing
    taps: dict[str, Any] | None = None

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
        """The context of example ``b`` alone (its input sets and split constraints; constants
        and ops are shared)."""
        return replace(self, sets={k: s.example(b) for k, s in self.sets.items()},
                       splits={k: s[b:b + 1] for k, s in self.splits.items()})

    def op(self, name):
        return self.ops.get(name) or self.graph.nodes[name].op

    def interval(self, name: str, bounds: dict[str, Interval | None]) -> Interval:
        """Node ``name``'s IBP rule on its inputs' current bounds (clipped to its split
        constraints, if any)."""
        return self.clip(name, self.rule(name, self.op(name).interval,
                                         *self.inputs(name, bounds)))

    def clip(self, name: str, bound: Interval) -> Interval:
        """``bound`` intersected with node ``name``'s split constraints (a node constrained
        ``>= 0`` gets a lower bound of at least 0, one ``<= 0`` an upper bound of at most 0).
        An element whose constraint contradicts its bound then has ``lower > upper``: its
        sub-domain is empty (see :func:`infeasible`)."""
        s = self.splits.get(name)
        if s is None:
            return bound
        zero = torch.zeros((), dtype=bound.lower.dtype, device=bound.lower.device)
        lo = torch.where(s > 0, torch.maximum(bound.lower, zero), bound.lower)
        hi = torch.where(s < 0, torch.minimum(bound.upper, zero), bound.upper)
        return Interval(lo, hi)

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


def infeasible(ctx: Context, bounds: dict[str, Interval]) -> torch.Tensor | None:
    """Examples ``(B,)`` whose split constraints contradict their bounds somewhere (an empty
    sub-domain, over which any bound holds); ``None`` without splits."""
    out = None
    for name in ctx.splits:
        b = bounds.get(name)
        if b is None:
            continue
        bad = (b.lower > b.upper).flatten(1).any(1)
        out = bad if out is None else out | bad
    return out
