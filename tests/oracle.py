"""Soundness oracle shared by the tests: points inside the input set (box corners, uniform
samples, and a PGD attack toward each bound) must never leave the computed bounds."""
from __future__ import annotations

import torch


def sample_box(lo, hi, n, corners=True, generator=None):
    """``n`` points per example in the box (B, *shape): uniform plus random corners."""
    B = lo.shape[0]
    u = torch.rand((n, *lo.shape), dtype=lo.dtype, generator=generator)
    pts = lo + u * (hi - lo)
    if corners:
        c = (torch.rand((n, *lo.shape), generator=generator) < 0.5).to(lo.dtype)
        pts = torch.cat([pts, lo + c * (hi - lo)], 0)
    return pts.reshape(-1, *lo.shape[1:]), B


def pgd_extremes(f, lo, hi, steps=20, restarts=2, generator=None):
    """PGD inside the box toward the minimum and maximum of every output coordinate.

    Returns the smallest and largest value of each output row found, shapes (B, rows).
    """
    best_lo = best_hi = None
    with torch.enable_grad():
        for r in range(restarts):
            x = (lo + torch.rand(lo.shape, dtype=lo.dtype, generator=generator) * (hi - lo))
            for sign in (1.0, -1.0):
                xa = x.clone().requires_grad_(True)
                step = (hi - lo) / 4
                for _ in range(steps):
                    out = f(xa)
                    g, = torch.autograd.grad((sign * out).sum(), xa)
                    xa = (xa.detach() - step * g.sign()).clamp(min=lo, max=hi).requires_grad_(True)
                    step = step * 0.8
                out = f(xa).detach()
                if sign > 0:
                    best_lo = out if best_lo is None else torch.minimum(best_lo, out)
                else:
                    best_hi = out if best_hi is None else torch.maximum(best_hi, out)
    return best_lo, best_hi


def assert_sound(f, lo, hi, lb, ub, n=64, tol=1e-4, pgd=True, seed=0):
    """Assert ``lb <= f(x') <= ub`` for sampled and attacked ``x'`` in ``[lo, hi]``.

    ``f`` maps (N, *in) -> (N, rows) and must be differentiable for the attack.
    """
    g = torch.Generator().manual_seed(seed)
    pts, B = sample_box(lo, hi, n, generator=g)
    with torch.no_grad():
        out = f(pts).reshape(-1, B, *lb.shape[1:])
    scale = tol * (1 + lb.abs().max().item() + ub.abs().max().item())
    viol_lo = (lb.unsqueeze(0) - out).max().item()
    viol_hi = (out - ub.unsqueeze(0)).max().item()
    assert viol_lo <= scale, f"lower bound violated by sampled point: {viol_lo}"
    assert viol_hi <= scale, f"upper bound violated by sampled point: {viol_hi}"
    if pgd:
        mn, mx = pgd_extremes(f, lo, hi, generator=g)
        assert (lb - mn).max().item() <= scale, f"lower bound violated by PGD: {(lb - mn).max().item()}"
        assert (mx - ub).max().item() <= scale, f"upper bound violated by PGD: {(mx - ub).max().item()}"
