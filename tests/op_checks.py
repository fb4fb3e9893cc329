"""Checks shared by the op tests: end-to-end soundness of every method on a small model, and
direct checks of a relaxation's lines on a dense grid of each interval."""
from __future__ import annotations

import pytest
import torch

import boundgraph as bg
from oracle import assert_sound

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and on a shared machine a second thread makes
    each kernel wait for a busy core (tens of times slower). Import into a test module to use."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def traced(model, x):
    """Trace ``model`` and check the bound graph's forward equals the model's (two batch
    sizes, so the batch dimension really is free)."""
    bm = bg.BoundedModule(model, x)
    with torch.no_grad():
        for xb in (x, torch.cat([x, x[:1] * 0.5], 0)):
            torch.testing.assert_close(bm(xb), model(xb), rtol=1e-5, atol=1e-6)
    return bm


def op_kinds(bm) -> list[str]:
    return [n.op.kind for n in bm.graph.op_nodes() if n.batched]


def check_sound(model, x, eps, methods=METHODS, n=32, lower=None, upper=None, bm=None):
    """Bounds of every method contain the model's outputs on sampled and attacked points of
    the l-inf ball; returns ``{method: (lb, ub)}``."""
    bm = bm or traced(model, x)
    ptb = bg.LinfBall(eps, lower, upper)
    lo, hi = ptb.box(x)
    out = {}
    for m in methods:
        lb, ub = bm.compute_bounds(x, ptb, method=m)
        assert torch.isfinite(lb).all() and torch.isfinite(ub).all(), m
        assert (lb <= ub + 1e-6).all(), m
        assert_sound(model, lo, hi, lb, ub, n=n)
        out[m] = (lb, ub)
    return out


def grid(l, u, points=1001):
    """``points`` points of each interval (rows), representable in ``l``'s dtype, ends included:
    ``(points + 2, n)`` in float64."""
    t = torch.linspace(0, 1, points, dtype=torch.float64).unsqueeze(1)
    ld, ud = l.double(), u.double()
    x = (ld + t * (ud - ld)).to(l.dtype).double()
    x = torch.minimum(torch.maximum(x, ld), ud)
    return torch.cat([ld.unsqueeze(0), x, ud.unsqueeze(0)])


def line_violation(op, l, u, opts=None, points=1001):
    """Largest amount by which ``op``'s relaxation lines miss ``f`` (evaluated in float64) on a
    dense grid of each interval, per interval: ``(lower_violation, upper_violation)``."""
    aL, bL, aU, bU = op.relax(l, u, opts or {})
    # an intercept may be the number 0 (the interface allows it; it saves work in backward)
    bL, bU = (torch.zeros_like(l) if not torch.is_tensor(b) and b == 0 else b for b in (bL, bU))
    for t in (aL, bL, aU, bU):
        assert t.shape == l.shape and t.dtype == l.dtype
        assert torch.isfinite(t).all()
    x = grid(l, u, points)
    f = op.forward(x)
    lo = aL.double() * x + bL.double()
    hi = aU.double() * x + bU.double()
    return (lo - f).amax(0), (f - hi).amax(0)


def sample_intervals(kinks=(), dtype=torch.float32):
    """Intervals ``[l, u]`` covering: centres across kinks, inflections and saturations, widths
    from 0 and 1e-7 up to 200 (``+-100``), and intervals ending exactly at each kink."""
    centres = [-50.0, -5.0, -2.0, -1.4185, -0.7518, -0.1, 0.0, 1e-8, 0.3, 1.4142, 3.0, 19.99,
               60.0, *kinks]
    widths = [0.0, 1e-7, 1e-4, 0.1, 1.0, 4.0, 30.0, 200.0]
    c = torch.tensor(centres, dtype=torch.float64).repeat_interleave(len(widths))
    w = torch.tensor(widths, dtype=torch.float64).repeat(len(centres))
    l, u = c - w / 2, c + w / 2
    for k in kinks:
        for s in (1e-7, 0.5, 10.0):
            l = torch.cat([l, torch.tensor([k, k - s], dtype=torch.float64)])
            u = torch.cat([u, torch.tensor([k + s, k], dtype=torch.float64)])
    l, u = l.to(dtype), u.to(dtype)
    return torch.minimum(l, u), torch.maximum(l, u)


def affine_range(model, lo, hi):
    """Exact range of an affine ``model`` over the box ``[lo, hi]``: ``f(c) -/+ |J| r``."""
    c, r = (lo + hi) / 2, (hi - lo) / 2
    J = torch.autograd.functional.jacobian(lambda z: model(z).flatten(1), c[:1])
    J = J.reshape(J.shape[1], -1)  # (outputs, inputs)
    with torch.no_grad():
        mid = model(c).flatten(1)
    rad = r.flatten(1) @ J.abs().T
    shape = mid.shape[1:]
    return (mid - rad).reshape(-1, *shape), (mid + rad).reshape(-1, *shape)


def assert_exact(bm, model, x, eps, methods=("crown-ibp", "crown"), atol=1e-5):
    """For an affine model: the methods' bounds equal the exact range."""
    ptb = bg.LinfBall(eps)
    lo, hi = ptb.box(x)
    elo, ehi = affine_range(model, lo, hi)
    for m in methods:
        lb, ub = bm.compute_bounds(x, ptb, method=m)
        torch.testing.assert_close(lb.flatten(1), elo, atol=atol, rtol=1e-5)
        torch.testing.assert_close(ub.flatten(1), ehi, atol=atol, rtol=1e-5)
