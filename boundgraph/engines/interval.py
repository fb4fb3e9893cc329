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

import math
from dataclasses import replace

import torch

from ..ops.base import Interval
from ..perturbation import InputSet
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
    radius = _ball_radii(ctx, exact) if exact else None
    for name in g.batched_order:
        if name not in bounds:
            bounds[name] = ctx.interval(name, bounds)
            if name in exact:
                bounds[name] = _on_ball(ctx, name, bounds, radius)
        if name == until:
            break
    return bounds


def _on_ball(ctx: Context, name: str, bounds, radius) -> Interval:
    """The exact range of affine node ``name`` over the input balls, intersected with its
    interval ``bounds[name]``: its clean value plus or minus a radius that depends on the
    weights only (computed once per call), when the sets allow; else a backward pass per
    call that concretises over each example's ball."""
    if radius is None:
        return refine(ctx, name, bounds)
    cur = bounds[name]
    val = radius["values"][name]
    r = radius[name]
    return Interval(torch.maximum(cur.lower, val - r), torch.minimum(cur.upper, val + r))


def _ball_radii(ctx: Context, frontier: set[str]) -> dict | None:
    """``{node: radius (1, *shape), "values": {node: clean value}}`` for the frontier nodes,
    or ``None`` when the radius differs between examples (per-example eps, or an input whose
    set is a box of nonzero width).

    An affine node is ``W x + b`` over the inputs, so over balls of radius ``eps`` its range is
    ``W x + b +- eps ||W_row||_q``: the backward pass of a zero-centred ball of one example
    gives ``b +- eps ||W_row||_q``, and the clean forward pass gives ``W x + b``."""
    zero_sets = {}
    for name, s in ctx.sets.items():
        z = torch.zeros_like(s.box.lower[:1])
        if s.is_ball:
            if torch.is_tensor(s.eps) and s.eps.shape[0] != 1:
                return None
            zero_sets[name] = InputSet(Interval(z, z), z, s.eps, s.q, False)
        elif torch.equal(s.box.lower, s.box.upper):  # an exact input
            zero_sets[name] = InputSet(Interval(z, z))
        else:
            return None
    g = ctx.graph
    ctx0 = replace(ctx, sets=zero_sets)
    out: dict = {}
    like = ctx.box.lower
    for name in frontier:
        # affine rules only ask whether an input is bounded: zero intervals say so
        bounds0 = {}
        for a in g.batched_ancestors(name):
            z = torch.zeros((1, *g.nodes[a].shape), dtype=like.dtype, device=like.device)
            bounds0[a] = Interval(z, z)
        inf = torch.full((1, *g.nodes[name].shape), math.inf, dtype=like.dtype,
                         device=like.device)
        bounds0[name] = Interval(-inf, inf)
        r = refine(ctx0, name, bounds0, flat=False)
        out[name] = (r.upper - r.lower) / 2
    # the clean values of the affine nodes (the forward pass of the part the frontier needs)
    env = {name: s.center if s.is_ball else s.box.lower for name, s in ctx.sets.items()}
    need = set()
    for name in frontier:
        need.update(g.batched_ancestors(name))
    for name in g.batched_ops:
        if name not in need:
            continue
        ov = ctx.overrides.get(name, {})
        vals = [ov[i] if i in ov else (env[inp] if g.nodes[inp].batched else ctx.consts[inp])
                for i, inp in enumerate(g.nodes[name].inputs)]
        env[name] = ctx.op(name).forward(*vals)
    out["values"] = env
    return out


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
