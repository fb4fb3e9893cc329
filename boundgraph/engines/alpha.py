"""alpha-CROWN: CROWN with optimised lower slopes (Xu et al. 2021, "Fast and complete:
enabling complete neural network verification with rapid and massively parallel incomplete
verifiers"; free relaxation slopes go back to Lyu et al. 2020, "Fastened CROWN").

Across a kink, an op's line through the kink is sound for every slope between the slopes of the
two sides (ReLU: ``alpha x <= relu(x)`` on ``[l, u]`` for every ``alpha`` in ``[0, 1]``), so a
backward pass gives a valid bound for *any* such choice. The ops that say so (``op.kink_slope``)
get free slopes, one per element and per row of each backward pass: the output's pass (one row
per specification row) and, where the coefficients fit in ``max_elements``, the passes that
bound intermediate nodes (one row per neuron, separate slopes for its lower and upper bound),
which are then recomputed from the slopes at every step. Projected Adam maximises the sum of the
output's lower bounds (or minimises the upper ones), starting from CROWN's own slopes; each
intermediate bound is intersected with CROWN's, so it never gets looser.

The slopes of the step with the best objective give the result, which is intersected row by row
with the CROWN bound: never looser than ``"crown"``, whatever the optimiser did, and
differentiable with respect to the model's parameters at the chosen slopes.

Split constraints (``ctx.splits``: node values constrained ``>= 0`` or ``<= 0``, the sub-domains
of branch and bound) clip the constrained elements' intervals in every pass; in the output's
pass each also enters through a Lagrange multiplier ``beta >= 0`` (beta-CROWN; Wang et al. 2021,
"Beta-CROWN: efficient bound propagation with per-neuron split constraints for neural network
robustness verification"): over the sub-domain ``s z >= 0``, so ``f >= f - beta s z`` and
``f <= f + beta s z``, and the backward pass bounds the right-hand side over the whole box for
any ``beta >= 0``. The multipliers are optimised with the slopes, from zero.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from ..ops.base import Interval
from .backward import backward_pass, crown_intermediate, needed_nodes, output_bounds
from .context import Context

_OUT = "<output>"
_BETA = "<beta>"


def alpha_bounds(ctx: Context, A, lower: bool = True, upper: bool = True, steps: int = 20,
                 lr: float = 0.1, time_limit: float | None = None,
                 intermediate_grad: bool = False, lr_decay: float = 1.0):
    """``(bounds, lb, ub)``: CROWN's intermediate bounds and the optimised bounds of
    ``A f(x)`` (``(B, S)``, ``None`` for a side not asked for). ``A`` has shape
    ``(B or 1, S, *out_shape)``; each side is optimised on its own for ``steps`` steps, or
    until ``time_limit`` seconds (counted from the call) have passed. Without
    ``intermediate_grad`` the intermediate bounds are computed outside autograd and the
    result is differentiable in the parameters through the output's pass only."""
    deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
    base = crown_intermediate(ctx, grad=intermediate_grad)
    crown = output_bounds(ctx, base, A, lower, upper)
    if steps == 0:
        return base, crown[0], crown[1]
    plan = _plan(ctx, base)
    out = []
    for side, want, ref in (("lower", lower, crown[0]), ("upper", upper, crown[1])):
        if not want:
            out.append(None)
            continue
        slopes = _initial_slopes(ctx, base, plan, side, A.shape[1])
        slopes.update(_initial_betas(ctx, side, A.shape[1]))
        if not slopes:
            out.append(ref)
            continue
        best = _optimise(ctx, base, plan, A, side, slopes, steps, lr, deadline, lr_decay)
        val = _pass(ctx, base, plan, A, side, best, intermediate_grad)
        out.append(torch.maximum(val, ref) if side == "lower" else torch.minimum(val, ref))
    return base, out[0], out[1]


def _rows(ctx, name, bound: Interval, consumers) -> torch.Tensor:
    """Neurons of ``name`` worth bounding (the union over the batch of its consumers' masks)."""
    B = bound.lower.shape[0]
    mask = None
    for cname, idx in consumers:
        m = ctx.op(cname).refine_mask(idx, bound)
        if m is None:
            return torch.arange(bound.lower[0].numel(), device=bound.lower.device)
        mask = m if mask is None else (mask | m)
    return mask.reshape(B, -1).any(0).nonzero().flatten()


def _kinks(ctx, start, base) -> list[str]:
    """Nodes upstream of ``start`` whose op has a free kink slope and some element across it."""
    g = ctx.graph
    out = []
    for name in g.batched_ancestors(start):
        op = ctx.op(name)
        if name in ctx.sets or name == start or not getattr(op, "kink_slope", False):
            continue
        across = op.refine_mask(0, ctx.inputs(name, base)[0])  # the op's unstable elements
        if across is None or bool(across.any()):
            out.append(name)
    return out


def _plan(ctx, base) -> dict:
    """``{node: (rows, kink nodes)}`` for the intermediate nodes whose dense backward pass fits
    in ``max_elements``, plus ``_OUT: (None, kink nodes)`` for the output's pass."""
    g = ctx.graph
    budget = int(ctx.opts.get("max_elements", 2 ** 25))
    B = ctx.batch
    plan = {}
    for name, consumers in needed_nodes(ctx).items():
        rows = _rows(ctx, name, base[name], consumers)
        kinks = _kinks(ctx, name, base)
        widest = max(math.prod(g.nodes[a].shape) for a in g.batched_ancestors(name))
        if rows.numel() and kinks and B * rows.numel() * widest <= budget:
            plan[name] = (rows, kinks)
    plan[_OUT] = (None, _kinks(ctx, g.output, base))
    return plan


def _initial_slopes(ctx, base, plan, side, S) -> dict:
    """CROWN's slopes as free tensors: ``{(node, side): {kink node: (B, rows, *shape)}}``."""
    B = ctx.batch
    slopes = {}
    for name, (rows, kinks) in plan.items():
        R = S if rows is None else rows.numel()
        for s in ((side,) if rows is None else ("lower", "upper")):
            per = {}
            for k in kinks:
                x = ctx.inputs(k, base)[0]
                a0 = ctx.op(k).kink_slope_init(x.lower.detach(), x.upper.detach(), ctx.opts)
                per[k] = a0.unsqueeze(1).expand(B, R, *a0.shape[1:]).clone()
            if per:
                slopes[(name, s)] = per
    return slopes


def _initial_betas(ctx, side, S) -> dict:
    """Zero multipliers ``(B, S, *shape)`` for the split-constrained nodes: ``{(_BETA, side):
    {node: beta}}`` (empty without splits)."""
    per = {}
    for name, s in ctx.splits.items():
        if bool((s != 0).any()):
            per[name] = torch.zeros(s.shape[0], S, *s.shape[1:], dtype=ctx.box.lower.dtype,
                                    device=s.device)
    return {(_BETA, side): per} if per else {}


def _beta_terms(ctx, betas, side) -> dict:
    """``ctx.betas`` entries from multipliers: ``-beta s`` on the lower bound's coefficients,
    ``+beta s`` on the upper bound's (only constrained elements count)."""
    out = {}
    for name, b in betas.items():
        s = ctx.splits[name].unsqueeze(1).to(b.dtype)
        term = b * s
        out[name] = (-term, None) if side == "lower" else (None, term)
    return out


def _pass(ctx, base, plan, A, side, slopes, intermediate_grad=True) -> torch.Tensor:
    """The bound of ``side`` of ``A f(x)`` with intermediate bounds recomputed from ``slopes``
    (each intersected with ``base``, CROWN's) and the output's pass using its own; the
    intermediate passes outside autograd unless ``intermediate_grad``."""
    g = ctx.graph
    grad = torch.is_grad_enabled()
    inner = ctx
    if grad and not intermediate_grad:  # input boxes whose cached centre and radius, set
        inner = replace(ctx, sets={k: s.fresh() for k, s in ctx.sets.items()})  # without
    bounds = inner.input_boxes()                                     # autograd, stay their own
    try:  # (the output's pass below concretises over the caller's sets, with autograd)
        torch.set_grad_enabled(grad and intermediate_grad)
        for name in g.batched_ops:
            cur = ctx.interval(name, bounds)
            b = base[name]  # CROWN's (or IBP's) bound of the node: keep the tighter side
            cur = Interval(torch.maximum(cur.lower, b.lower), torch.minimum(cur.upper, b.upper))
            if name in plan:
                lo, hi = cur.lower.flatten(1).clone(), cur.upper.flatten(1).clone()
                rows = plan[name][0]
                one = torch.zeros(1, rows.numel(), lo.shape[1], dtype=lo.dtype, device=lo.device)
                one[0, torch.arange(rows.numel(), device=lo.device), rows] = 1.0
                one = one.view(1, rows.numel(), *g.nodes[name].shape)
                for s in ("lower", "upper"):
                    inner.slopes = slopes.get((name, s), {})
                    lb, ub = backward_pass(inner, name, one if s == "lower" else None,
                                           one if s == "upper" else None, bounds)
                    if s == "lower":
                        lo[:, rows] = torch.maximum(lo[:, rows], lb)
                    else:
                        hi[:, rows] = torch.minimum(hi[:, rows], ub)
                inner.slopes = {}
                cur = Interval(lo.view_as(cur.lower), hi.view_as(cur.upper))
            bounds[name] = cur
        torch.set_grad_enabled(grad)
        ctx.slopes = slopes.get((_OUT, side), {})
        ctx.betas = _beta_terms(ctx, slopes.get((_BETA, side), {}), side)
        lA, uA = (A, None) if side == "lower" else (None, A)
        lb, ub = backward_pass(ctx, g.output, lA, uA, bounds)
    finally:
        ctx.slopes = inner.slopes = {}
        ctx.betas = {}
        torch.set_grad_enabled(grad)
    return lb if side == "lower" else ub


def _optimise(ctx, base, plan, A, side, slopes, steps, lr, deadline=None,
              lr_decay: float = 1.0) -> dict:
    """Projected Adam on ``slopes`` (learning rate multiplied by ``lr_decay`` after each step);
    per example, a copy of its slopes at the step with its best objective (examples are
    independent problems: every slope tensor is ``(B, ...)`` and an example's bounds depend on
    its own slopes only). Stops early at ``deadline``, a ``time.perf_counter()`` value."""
    fixed = {k: Interval(v.lower.detach(), v.upper.detach()) for k, v in base.items()}
    A = A.detach()
    sign = 1.0 if side == "lower" else -1.0  # maximise lower bounds, minimise upper ones
    params = [p.requires_grad_() for per in slopes.values() for p in per.values()]
    betas = {id(p) for key, per in slopes.items() if key[0] == _BETA for p in per.values()}
    optim = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, lr_decay) if lr_decay != 1.0 else None
    best_val, best = None, None
    for step in range(steps + 1):
        with torch.enable_grad():
            per_example = (sign * _pass(ctx, fixed, plan, A, side, slopes)).sum(1)
            loss = -per_example.sum()
        val = per_example.detach()
        if best is None:
            best_val = val.clone()
            best = {key: {k: p.detach().clone() for k, p in per.items()}
                    for key, per in slopes.items()}
        else:
            better = val > best_val
            if bool(better.any()):
                best_val = torch.where(better, val, best_val)
                for key, per in slopes.items():
                    for k, p in per.items():
                        m = better.view(-1, *[1] * (p.dim() - 1))
                        best[key][k] = torch.where(m, p.detach(), best[key][k])
        if step == steps or (deadline is not None and time.perf_counter() > deadline):
            break
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, gr in zip(params, grads):
            p.grad = gr
        optim.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            for p in params:
                if id(p) in betas:
                    p.clamp_(min=0.0)  # a multiplier of an inequality
                else:
                    p.clamp_(0.0, 1.0)
    return best


__all__ = ["alpha_bounds"]
