"""Backward linear bound propagation (CROWN; Zhang et al. 2018) and its use for intermediate
bounds.

:func:`backward_pass` walks the ancestors of a start node in reverse topological order,
carrying lower/upper coefficient tensors. Coefficients arriving at a node from several consumers
are summed before the node's rule passes them on (residual adds, concatenation, any DAG). At the
input (or at a node listed in ``stop_at``) the coefficients are concretised over that node's box.

:func:`crown_intermediate` computes the bounds of every node a nonlinear rule needs, in
topological order, each with its own backward pass (rows = neurons, restricted to the ones the
consumers say are worth refining, e.g. unstable ReLUs), chunked so that memory stays bounded,
and intersected with the IBP interval of the same node.
"""
from __future__ import annotations

import math

import torch

from ..ops.base import Interval, concretize
from .context import Context
from .interval import interval_pass


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def backward_pass(ctx: Context, start: str, lA, uA, bounds: dict[str, Interval],
                  stop_at: frozenset = frozenset()):
    """Lower/upper bounds of ``sum(A * node_start)`` rows over the input set.

    ``lA``/``uA`` have shape ``(B or 1, S, *shape_of_start)`` (either may be ``None``); returns
    ``(lb, ub)`` of shape ``(B, S)`` (``None`` for a side not asked for).
    """
    g = ctx.graph
    order = g.batched_ancestors(start)
    coeffs = {start: (lA, uA)}
    lb = 0.0 if lA is not None else None
    ub = 0.0 if uA is not None else None
    for name in reversed(order):
        if name not in coeffs:
            continue
        la, ua = coeffs.pop(name)
        if la is None and ua is None:
            continue
        if name == g.input or name in stop_at:
            box = ctx.box if name == g.input else bounds[name]
            cl, cu = concretize(la, ua, box)
            lb = _add(lb, cl) if lb is not None else None
            ub = _add(ub, cu) if ub is not None else None
            continue
        node = g.nodes[name]
        per_input, bl, bu = ctx.op(name).backward(la, ua, *ctx.inputs(name, bounds),
                                                   opts=ctx.opts)
        if lb is not None:
            lb = lb + bl
        if ub is not None:
            ub = ub + bu
        for inp, pair in zip(node.inputs, per_input):
            if pair is None or not g.nodes[inp].batched:
                continue
            old = coeffs.get(inp, (None, None))
            coeffs[inp] = (_add(old[0], pair[0]), _add(old[1], pair[1]))
    B = ctx.box.lower.shape[0]
    fix = lambda t: None if t is None else (t.expand(B, -1) if t.shape[0] != B else t)  # noqa
    return fix(lb), fix(ub)


def needed_nodes(ctx: Context) -> dict[str, list[tuple[str, int]]]:
    """Batched nodes whose bounds some rule needs in ``backward``: node -> [(consumer, index)]."""
    g = ctx.graph
    need: dict[str, list[tuple[str, int]]] = {}
    for name in g.batched_order:
        node = g.nodes[name]
        if node.kind != "op":
            continue
        op = ctx.op(name)
        for i, inp in enumerate(node.inputs):
            if g.nodes[inp].batched and inp != g.input and op.needs_bounds(i):
                need.setdefault(inp, []).append((name, i))
    return need


def crown_intermediate(ctx: Context) -> dict[str, Interval]:
    """Intervals of all batched nodes, with CROWN for those that nonlinear rules need.

    Each node first gets its IBP interval from its (already refined) inputs; needed nodes are
    then refined by a backward pass from the node itself and the two are intersected, so the
    result is never looser than IBP.
    """
    g = ctx.graph
    need = needed_nodes(ctx)
    budget = int(ctx.opts.get("max_elements", 2 ** 25))
    bounds: dict[str, Interval] = {g.input: ctx.box}
    for name in g.batched_order[1:]:
        bounds[name] = ctx.op(name).interval(*ctx.inputs(name, bounds))
        if name in need:
            bounds[name] = _refine(ctx, name, need[name], bounds, budget)
    return bounds


def _refine(ctx, name, consumers, bounds, budget) -> Interval:
    g = ctx.graph
    cur = bounds[name]
    B = cur.lower.shape[0]
    mask = None
    for cname, idx in consumers:
        m = ctx.op(cname).refine_mask(idx, cur)
        if m is None:
            mask = None
            break
        mask = m if mask is None else (mask | m)
    n = cur.lower[0].numel()
    if mask is None:
        rows = torch.arange(n, device=cur.lower.device)
    else:
        rows = mask.reshape(B, -1).any(0).nonzero().flatten()
    if rows.numel() == 0:
        return cur
    widest = max(math.prod(g.nodes[a].shape) for a in g.batched_ancestors(name))
    chunk = max(1, budget // max(1, B * widest))
    lo, hi = cur.lower.flatten(1), cur.upper.flatten(1)
    new_lo, new_hi = lo.clone(), hi.clone()
    shape = g.nodes[name].shape
    for start in range(0, rows.numel(), chunk):
        idx = rows[start:start + chunk]
        s = idx.numel()
        A = torch.zeros(1, s, n, dtype=lo.dtype, device=lo.device)
        A[0, torch.arange(s, device=lo.device), idx] = 1.0
        A = A.reshape(1, s, *shape)
        lb, ub = backward_pass(ctx, name, A, A, bounds)
        new_lo[:, idx] = torch.maximum(lo[:, idx], lb)
        new_hi[:, idx] = torch.minimum(hi[:, idx], ub)
    return Interval(new_lo.reshape(cur.lower.shape), new_hi.reshape(cur.upper.shape))


def output_bounds(ctx: Context, bounds: dict[str, Interval], C, lower=True, upper=True):
    """Bounds of ``C f(x)`` by a backward pass from the output using intermediate ``bounds``."""
    g = ctx.graph
    A = C
    return backward_pass(ctx, g.output, A if lower else None, A if upper else None, bounds)


def elided_interval(ctx: Context, bounds: dict[str, Interval], C, lower=True, upper=True):
    """IBP bounds of ``C f(x)`` with ``C`` folded into the output op: one backward step from
    the output, concretised over the output op's input intervals (tighter than applying ``C``
    to the output interval; Gowal et al. 2018)."""
    g = ctx.graph
    stop = frozenset(i for i in g.nodes[g.output].inputs if g.nodes[i].batched)
    if g.output == g.input:
        stop = frozenset({g.output})
    return backward_pass(ctx, g.output, C if lower else None, C if upper else None, bounds,
                         stop_at=stop)


__all__ = ["backward_pass", "crown_intermediate", "output_bounds", "elided_interval",
           "interval_pass", "needed_nodes"]
