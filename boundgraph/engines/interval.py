"""Interval bound propagation (IBP; Gowal et al. 2018): one forward walk of the graph applying
each op's ``interval`` rule."""
from __future__ import annotations

from ..ops.base import Interval
from .context import Context


def interval_pass(ctx: Context, bounds: dict[str, Interval] | None = None,
                  until: str | None = None) -> dict[str, Interval]:
    """Intervals of every batched node (up to ``until``), given the input box.

    Nodes already in ``bounds`` are kept as they are (so tighter bounds computed elsewhere are
    used downstream).
    """
    g = ctx.graph
    bounds = {} if bounds is None else bounds
    bounds.setdefault(g.input, ctx.box)
    for name in g.batched_order:
        if name not in bounds:
            bounds[name] = ctx.interval(name, bounds)
        if name == until:
            break
    return bounds
