"""alpha-CROWN on the output's backward pass: optimised lower slopes (Xu et al. 2021, "Fast
and complete: enabling complete neural network verification with rapid and massively parallel
incomplete verifiers"; free relaxation slopes go back to Lyu et al. 2020, "Fastened CROWN").

Across a kink, an op's line through the kink is sound for every slope between the slopes of the
two sides (ReLU: ``alpha x <= relu(x)`` on ``[l, u]`` for every ``alpha`` in ``[0, 1]``), so a
backward pass gives a valid bound for *any* such choice. The ops that say so
(``op.kink_slope``) get one slope per element and per specification row; projected Adam
maximises the lower bound (minimises the upper bound) of each row, starting from CROWN's own
choice, and each row keeps the slopes of the best bound it reached. A last pass with those
slopes returns bounds that are never looser than CROWN's with the same intermediate bounds,
whatever the optimiser did, and are differentiable with respect to the model's parameters at
the chosen slopes.

Only the output's pass is optimised: intermediate bounds come from :func:`crown_intermediate`
and are not re-optimised (the full method of Xu et al. also optimises the slopes used for each
intermediate bound).
"""
from __future__ import annotations

import torch

from ..ops.base import Interval
from .backward import backward_pass
from .context import Context


def alpha_output_bounds(ctx: Context, bounds: dict[str, Interval], A, lower: bool = True,
                        upper: bool = True, steps: int = 20, lr: float = 0.1):
    """Bounds ``(lb, ub)`` (``(B, S)``, ``None`` for a side not asked for) of ``A f(x)`` by a
    backward pass from the output whose kink slopes are optimised for ``steps`` Adam steps of
    rate ``lr``, each side with its own slopes. ``A`` has shape ``(B or 1, S, *out_shape)``."""
    g = ctx.graph
    B, S = ctx.box.lower.shape[0], A.shape[1]
    kinks = []
    for name in g.batched_ancestors(g.output):
        op = ctx.op(name)
        if name != g.input and getattr(op, "kink_slope", False):
            x = bounds[g.nodes[name].inputs[0]]
            if bool(((x.lower < 0) & (x.upper > 0)).any()):
                kinks.append((name, op, x.lower.detach(), x.upper.detach()))
    out = []
    for side in ("lower", "upper"):
        if not (lower if side == "lower" else upper):
            out.append(None)
            continue
        lA, uA = (A, None) if side == "lower" else (None, A)
        slopes = {}
        for name, op, lo, hi in kinks:
            a0 = op.kink_slope_init(lo, hi, ctx.opts)
            slopes[name] = a0.unsqueeze(1).expand(B, S, *a0.shape[1:]).clone()
        best = _optimise(ctx, bounds, lA, uA, slopes, steps, lr) if slopes else {}
        try:
            ctx.slopes = best
            lb, ub = backward_pass(ctx, g.output, lA, uA, bounds)
        finally:
            ctx.slopes = {}
        out.append(lb if side == "lower" else ub)
    return out[0], out[1]


def _optimise(ctx, bounds, lA, uA, slopes, steps, lr) -> dict:
    """Projected Adam on ``slopes`` (modified in place); the per-row best slopes."""
    g = ctx.graph
    fixed = {k: Interval(v.lower.detach(), v.upper.detach()) for k, v in bounds.items()}
    lA = None if lA is None else lA.detach()
    uA = None if uA is None else uA.detach()
    sign = 1.0 if lA is not None else -1.0  # maximise lower bounds, minimise upper ones
    params = [p.requires_grad_() for p in slopes.values()]
    optim = torch.optim.Adam(params, lr=lr)
    best_val, best = None, None
    try:
        ctx.slopes = slopes
        for step in range(steps + 1):
            with torch.enable_grad():
                lb, ub = backward_pass(ctx, g.output, lA, uA, fixed)
                val = sign * (lb if lA is not None else ub)  # (B, S), larger is better
                objective = -val.sum()  # rows and examples are independent
            v = val.detach()
            if best is None:
                best_val, best = v, {k: p.detach().clone() for k, p in slopes.items()}
            else:
                better = v > best_val
                best_val = torch.where(better, v, best_val)
                for k, p in slopes.items():
                    keep = better.view(*better.shape, *([1] * (p.dim() - 2)))
                    best[k] = torch.where(keep, p.detach(), best[k])
            if step == steps:
                break
            grads = torch.autograd.grad(objective, params, allow_unused=True)
            for p, gr in zip(params, grads):
                p.grad = gr
            optim.step()
            with torch.no_grad():
                for p in params:
                    p.clamp_(0.0, 1.0)
    finally:
        ctx.slopes = {}
    return best


__all__ = ["alpha_output_bounds"]
