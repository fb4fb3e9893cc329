"""Interval bound propagation (IBP; Gowal et al. 2018): one forward walk of the graph applying
each op's ``interval`` rule.

An l1 or l2 ball is not a box, and the box around it is much larger (in ``n`` dimensions an l2
ball of radius ``eps`` sits in a box of half-width ``eps``, whose corners lie ``eps * sqrt(n)``
away). So where an input's set is a ball, the nodes that are affine functions of the inputs and
feed a nonlinear op (the first layer, typically) get their exact range over the ball,
``W x +- eps ||W_row||_q``, by a backward pass over the affine ops before they (their affine
ops, that is: ops whose ``backward`` needs no bounds) hand intervals on.
"""
from __future__ import annotations

from ..ops.base import Interval
from .backward import refine
from .context import Context


def interval_pass(ctx: Context, bounds: dict[str, Interval] | None = None,
                  until: str | None = None) -> dict[str, Interval]:
    """Intervals of every batched node (up to ``until``), given the input sets.

    Nodes already in ``bounds`` are kept as they are (so tighter bounds computed elsewhere are
    used downstream).
    """
    g = ctx.graph
    bounds = {} if bounds is None else bounds
    for name, box in ctx.input_boxes().items():
        bounds.setdefault(name, box)
    exact = ball_frontier(ctx)
    for name in g.batched_order:
        if name not in bounds:
            bounds[name] = ctx.interval(name, bounds)
            if name in exact:
                bounds[name] = refine(ctx, name, bounds)
        if name == until:
            break
    return bounds


def ball_frontier(ctx: Context) -> set[str]:
    """Nodes that are affine in the inputs, depend on an input whose set is a ball, and are
    the output or used by an op that is not affine (an op is affine in an input when its
    ``backward`` rule does not need that input's bounds)."""
    balls = {name for name, s in ctx.sets.items() if s.is_ball}
    if not balls:
        return set()
    g = ctx.graph
    affine, on_ball = set(ctx.sets), set(balls)
    for name in g.batched_ops:
        node, op = g.nodes[name], ctx.op(name)
        ins = [(i, inp) for i, inp in enumerate(node.inputs) if g.nodes[inp].batched]
        if all(inp in affine and not op.needs_bounds(i) for i, inp in ins):
            affine.add(name)
            if any(inp in on_ball for _, inp in ins):
                on_ball.add(name)
    frontier = set()
    for name in on_ball - set(ctx.sets):
        users = [c for c in g.consumers[name] if g.nodes[c].batched]
        if name == g.output or any(c not in affine for c in users):
            frontier.add(name)
    return frontier
