"""Projected gradient descent (Madry et al. 2018) inside a box, or an l1 / l2 ball within one.

One generic routine, :func:`pgd_minimize`, minimises any differentiable per-example objective
over an input box (optionally intersected with an l-p ball) with random restarts;
:func:`pgd_margin_attack` uses it to look for misclassified points (the PGD error of training
reports) and the verifier uses it to look for counterexamples to a property.
"""
from __future__ import annotations

from typing import Callable

import torch


def pgd_minimize(objective: Callable[[torch.Tensor], torch.Tensor], lower: torch.Tensor,
                 upper: torch.Tensor, steps: int = 20, restarts: int = 1,
                 step_size: float | torch.Tensor | None = None, start: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, ball: tuple | None = None):
    """Minimise ``objective(x)`` (shape ``(B,)``) over the box ``[lower, upper]`` (``(B, ...)``).

    Signed-gradient steps projected onto the box; the first restart starts from ``start`` (or
    the box center), later ones from uniform points. Returns ``(x_best, value_best)``: the best
    point found for every example and its objective. Runs with gradients enabled on the input
    only; model parameters receive no gradient.

    ``ball = (center, eps, p)`` (``p`` 1 or 2, ``eps`` a number or a tensor scaling each
    coordinate) restricts the search to the ball within the box: steps follow the gradient
    scaled to unit l2 norm, and each point is projected onto the ball, then clipped to the box
    (which contains the center, so the clip keeps it in the ball).
    """
    if ball is not None:
        step_size, first, again, move = _ball_moves(lower, upper, ball, step_size, start,
                                                    generator)
    else:
        if step_size is None:
            step_size = (upper - lower) / 4

        def first():
            return (lower + upper) / 2 if start is None else start.clone()

        def again():
            u = torch.rand(lower.shape, dtype=lower.dtype, device=lower.device,
                           generator=generator)
            return lower + u * (upper - lower)

        def move(x, g, alpha):
            return torch.clamp(x - alpha * g.sign(), min=lower, max=upper)
    return _descend(objective, steps, restarts, step_size, first, again, move)


def _descend(objective, steps, restarts, step_size, first, again, move):
    """The PGD loop: from ``first()`` and then ``again()`` for each restart, ``steps`` steps
    ``move(x, gradient, step size)`` (the step size halved at half and three quarters of the
    way); the best point of every example and its value."""
    best_x = best_v = None
    with torch.enable_grad():
        for r in range(max(1, restarts)):
            x = first() if r == 0 else again()
            alpha = step_size
            for i in range(steps):
                x = x.detach().requires_grad_(True)
                v = objective(x)
                g, = torch.autograd.grad(v.sum(), x)
                with torch.no_grad():
                    best_x, best_v = _keep_best(best_x, best_v, x, v)
                    x = move(x, g, alpha)
                if i == steps // 2 or i == (3 * steps) // 4:
                    alpha = alpha / 2
            with torch.no_grad():
                v = objective(x)
                best_x, best_v = _keep_best(best_x, best_v, x, v)
    return best_x.detach(), best_v.detach()


def _ball_moves(lower, upper, ball, step_size, start, generator):
    """Step size, starts and step of PGD in the l1 / l2 ball ``(center, eps, p)`` within the
    box: steps along the gradient scaled to unit l2 norm (in coordinates scaled by ``eps``),
    each point projected onto the ball and clipped to the box."""
    center, eps, p = ball
    e = torch.as_tensor(eps, dtype=center.dtype, device=center.device)
    project = _project_l2 if p == 2 else _project_l1
    if step_size is None:
        step_size = 0.5 * float(e.max()) if e.numel() else 0.0

    def into_set(x):
        return torch.clamp(center + e * project((x - center) / _nz(e)), lower, upper)

    def first():
        return into_set(center.clone() if start is None else start.clone())

    def again():  # a random direction at a random radius
        d = torch.randn(center.shape, dtype=center.dtype, device=center.device,
                        generator=generator)
        rad = torch.rand(center.shape[0], dtype=center.dtype, device=center.device,
                         generator=generator)
        return into_set(center + e * rad.view(-1, *[1] * (d.dim() - 1)) * _unit(d, p))

    def move(x, g, alpha):
        return into_set(x - alpha * _unit(g * e, 2) * e)

    return step_size, first, again, move


def _nz(e):
    """``e`` with zeros made ones (a coordinate of radius 0 never moves, whatever it divides)."""
    return torch.where(e > 0, e, torch.ones_like(e))


def _unit(d, p):
    """Each example's ``d`` scaled to unit l-``p`` norm (``p`` 1 or 2; zero stays zero)."""
    n = torch.linalg.vector_norm(d.flatten(1), p, dim=1).clamp_min(1e-30)
    return d / n.view(-1, *[1] * (d.dim() - 1))


def _project_l2(z):
    """Each example of ``z`` projected onto the unit l2 ball."""
    n = torch.linalg.vector_norm(z.flatten(1), 2, dim=1).clamp_min(1.0)
    return z / n.view(-1, *[1] * (z.dim() - 1))


def _project_l1(z):
    """Each example of ``z`` projected onto the unit l1 ball (Duchi et al. 2008: soft
    thresholding at the level that leaves l1 norm one)."""
    flat = z.flatten(1)
    a = flat.abs()
    inside = a.sum(1) <= 1.0
    srt, _ = a.sort(1, descending=True)
    css = srt.cumsum(1) - 1.0
    k = torch.arange(1, a.shape[1] + 1, dtype=a.dtype, device=a.device)
    rho = ((srt - css / k) > 0).sum(1).clamp_min(1)
    theta = css.gather(1, (rho - 1).unsqueeze(1)) / rho.unsqueeze(1).to(a.dtype)
    out = flat.sign() * (a - theta).clamp_min(0.0)
    out = torch.where(inside.unsqueeze(1), flat, out)
    return out.view_as(z)


def _keep_best(bx, bv, x, v):
    v = v.detach()
    if bx is None:
        return x.detach().clone(), v.clone()
    better = v < bv
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(better.view(shape), x.detach(), bx), torch.where(better, v, bv)


def pgd_margin_attack(model, x, y, lower, upper, steps=20, restarts=1, generator=None,
                      ball=None):
    """Look for misclassified points in the box (within ``ball = (x, eps, p)`` as in
    :func:`pgd_minimize`, if given): minimise ``f_y - max_{j != y} f_j``.

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
                        start=x, generator=generator, ball=ball)
    return v <= 0
