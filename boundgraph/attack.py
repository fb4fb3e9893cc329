"""Projected gradient descent (Madry et al. 2018) inside a box.

One generic routine, :func:`pgd_minimize`, minimises any differentiable per-example objective
over an input box with random restarts; :func:`pgd_margin_attack` uses it to look for
misclassified points (the PGD error of training reports) and the verifier uses it to look for
counterexamples to a property.
"""
from __future__ import annotations

from typing import Callable

import torch


def pgd_minimize(objective: Callable[[torch.Tensor], torch.Tensor], lower: torch.Tensor,
                 upper: torch.Tensor, steps: int = 20, restarts: int = 1,
                 step_size: float | torch.Tensor | None = None, start: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
    """Minimise ``objective(x)`` (shape ``(B,)``) over the box ``[lower, upper]`` (``(B, ...)``).

    Signed-gradient steps projected onto the box; the first restart starts from ``start`` (or
    the box center), later ones from uniform points. Returns ``(x_best, value_best)``: the best
    point found for every example and its objective. Runs with gradients enabled on the input
    only; model parameters receive no gradient.
    """
    if step_size is None:
        step_size = (upper - lower) / 4
    best_x = None
    best_v = None
    with torch.enable_grad():
        for r in range(max(1, restarts)):
            if r == 0:
                x = (lower + upper) / 2 if start is None else start.clone()
            else:
                u = torch.rand(lower.shape, dtype=lower.dtype, device=lower.device,
                               generator=generator)
                x = lower + u * (upper - lower)
            alpha = step_size
            for i in range(steps):
                x = x.detach().requires_grad_(True)
                v = objective(x)
                g, = torch.autograd.grad(v.sum(), x)
                with torch.no_grad():
                    best_x, best_v = _keep_best(best_x, best_v, x, v)
                    x = torch.clamp(x - alpha * g.sign(), min=lower, max=upper)
                if i == steps // 2 or i == (3 * steps) // 4:
                    alpha = alpha / 2
            with torch.no_grad():
                v = objective(x)
                best_x, best_v = _keep_best(best_x, best_v, x, v)
    return best_x.detach(), best_v.detach()


def _keep_best(bx, bv, x, v):
    v = v.detach()
    if bx is None:
        return x.detach().clone(), v.clone()
    better = v < bv
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(better.view(shape), x.detach(), bx), torch.where(better, v, bv)


def pgd_margin_attack(model, x, y, lower, upper, steps=20, restarts=1, generator=None):
    """Look for misclassified points in the box: minimise ``f_y - max_{j != y} f_j``.

    Returns a boolean tensor ``(B,)``: True where an attack point is misclassified (or the clean
    point already is).
    """
    def objective(z):
        out = model(z)
        true = out.gather(1, y[:, None]).squeeze(1)
        other = out.masked_fill(torch.nn.functional.one_hot(y, out.shape[1]).bool(),
                                float("-inf")).max(1).values
        return true - other

    _, v = pgd_minimize(objective, lower, upper, steps=steps, restarts=restarts,
                        start=x, generator=generator)
    return v <= 0
