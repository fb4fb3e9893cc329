"""Soundness on trained weights: after natural and certified (IBP) training steps on a small
synthetic task, every method's bounds still contain every sampled and attacked output."""
import pytest
import torch
import torch.nn as nn

import boundgraph as bg
from oracle import assert_sound


def _blobs(n, g):
    centers = torch.randn(3, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (centers[y] * 0.3 + 0.5 + 0.1 * torch.randn(n, 1, 6, 6, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = _blobs(256, g)
    bm = bg.BoundedModule(model, x[:2])
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(60):
        idx = torch.randint(0, 256, (64,), generator=g)
        xb, yb = x[idx], y[idx]
        loss = nn.functional.cross_entropy(model(xb), yb)
        if step >= 30:  # certified (IBP) steps after a natural warm-up
            lb, _ = bm.compute_bounds(xb, bg.LinfBall(0.05, 0.0, 1.0), method="ibp",
                                      C=bg.margin_spec(yb, 3), bound_upper=False)
            robust = nn.functional.cross_entropy(torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1),
                                                 torch.zeros_like(yb))
            loss = 0.5 * loss + 0.5 * robust
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, bm, x[:4], y[:4]


@pytest.mark.parametrize("method", bg.METHODS)
@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_bounds_of_a_trained_model_contain_attacked_outputs(trained, method, eps):
    model, bm, x, y = trained
    ptb = bg.LinfBall(eps, 0.0, 1.0)
    lo, hi = ptb.box(x)
    lb, ub = bm.compute_bounds(x, ptb, method=method)
    assert_sound(model, lo, hi, lb, ub)
    C = bg.margin_spec(y, 3)
    lb, ub = bm.compute_bounds(x, ptb, method=method, C=C)
    f = lambda z: torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // 4, 1, 1), model(z))
    assert_sound(f, lo, hi, lb, ub)


def test_training_made_some_margins_verifiable(trained):
    """The fixture really trained: at a small eps CROWN verifies some training points."""
    model, bm, x, y = trained
    assert (model(x).argmax(1) == y).float().mean() >= 0.5
    lb, _ = bm.compute_bounds(x, bg.LinfBall(0.02, 0.0, 1.0), method="crown",
                              C=bg.margin_spec(y, 3))
    assert (lb > 0).all(1).any()
