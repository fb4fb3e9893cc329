"""Certified-training losses and the warm-up regularisers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import boundgraph as bg
from boundgraph.training.losses import (certified_loss, fused_robust_ce, ibp_mix, margin_bounds,
                                        robust_ce)
from boundgraph.training.regularizers import (preactivation_nodes, relu_balance_loss,
                                              tightness_loss, warmup_regularizer)
from boundgraph.ops.base import Interval


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def _worst_ce(model, x, y, eps, n_samples=64, pgd_steps=20):
    """Largest CE found in the clipped ball: uniform samples, corners and PGD ascent."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    worst = F.cross_entropy(model(x), y, reduction="none")
    with torch.no_grad():
        for i in range(n_samples):
            u = torch.rand_like(x)
            if i % 2:
                u = (u > 0.5).to(x.dtype)  # corners
            worst = torch.maximum(worst, F.cross_entropy(model(lo + u * (hi - lo)), y,
                                                         reduction="none"))
    z = x.clone()
    for _ in range(pgd_steps):
        z = z.detach().requires_grad_(True)
        loss = F.cross_entropy(model(z), y, reduction="none")
        g, = torch.autograd.grad(loss.sum(), z)
        with torch.no_grad():
            worst = torch.maximum(worst, loss.detach())
            z = torch.clamp(z + (hi - lo) / 8 * g.sign(), min=lo, max=hi)
    with torch.no_grad():
        worst = torch.maximum(worst, F.cross_entropy(model(z), y, reduction="none"))
    return worst


@pytest.mark.parametrize("make,shape,beta", [(_mlp, (6,), 0.0), (_mlp, (6,), 0.5),
                                              (_mlp, (6,), 1.0), (_cnn, (1, 8, 8), 0.0),
                                              (_cnn, (1, 8, 8), 1.0)])
def test_robust_loss_upper_bounds_every_point_in_the_ball(make, shape, beta):
    model = make().eval()
    x = torch.rand(12, *shape)
    y = torch.randint(0, model[-1].out_features, (12,))
    bm = bg.BoundedModule(model, x)
    eps = 0.08
    m = margin_bounds(bm, x, y, eps, beta=beta)
    assert m.shape == (12, model[-1].out_features - 1)
    bound = robust_ce(m, reduction="none")
    worst = _worst_ce(model, x, y, eps)
    assert (bound >= worst - 1e-5).all(), (bound - worst).min()


def _trained_mlp(steps=80):
    """An MLP after natural then IBP steps on separable blobs (weights unlike the random ones)."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    centers = torch.rand(4, 6, generator=g)
    y = torch.randint(0, 4, (256,), generator=g)
    x = (centers[y] + 0.05 * torch.randn(256, 6, generator=g)).clamp(0, 1)
    model = _mlp()
    bm = bg.BoundedModule(model, x[:2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        res = certified_loss(bm, x, y, method="ibp", eps=0.0 if step < steps // 2 else 0.03,
                             kappa=0.5)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    return model.eval(), x[:12], y[:12]


@pytest.mark.parametrize("weights", ["random", "trained"])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("eps", [0.01, 0.08])
def test_fused_loss_upper_bounds_every_point_in_the_ball(weights, beta, eps):
    if weights == "trained":
        model, x, y = _trained_mlp()
    else:
        model = _mlp().eval()
        x, y = torch.rand(12, 6), torch.randint(0, 4, (12,))
    bm = bg.BoundedModule(model, x)
    bound, m_ibp = fused_robust_ce(bm, x, y, eps, beta=beta)
    assert bound.shape == (12,) and m_ibp.shape == (12, 3)
    worst = _worst_ce(model, x, y, eps)
    assert (bound >= worst - 1e-5).all(), (bound - worst).min()
    # never looser than IBP's robust CE, whose margins it returns
    ibp = robust_ce(margin_bounds(bm, x, y, eps), reduction="none")
    torch.testing.assert_close(robust_ce(m_ibp, reduction="none"), ibp)
    assert (bound <= ibp + 1e-5).all()


def test_fused_loss_is_tighter_than_ibp_at_small_eps_and_exact_at_zero():
    model = _mlp().eval()
    x, y = torch.rand(16, 6), torch.randint(0, 4, (16,))
    bm = bg.BoundedModule(model, x)
    natural = F.cross_entropy(model(x), y, reduction="none")
    exact, _ = fused_robust_ce(bm, x, y, 0.0)
    torch.testing.assert_close(exact, natural, rtol=1e-5, atol=1e-5)
    fused, _ = fused_robust_ce(bm, x, y, 0.02)
    ibp = robust_ce(margin_bounds(bm, x, y, 0.02), reduction="none")
    assert fused.mean() < ibp.mean()
    mixed, _ = fused_robust_ce(bm, x, y, 0.02, beta=0.25)
    torch.testing.assert_close(mixed, 0.75 * ibp + 0.25 * fused)


def test_fused_loss_needs_one_backward_row_per_example(monkeypatch):
    model = _mlp().eval()
    x, y = torch.rand(5, 6), torch.randint(0, 4, (5,))
    bm = bg.BoundedModule(model, x)
    calls = []
    original = bm.compute_bounds

    def spy(*args, **kwargs):
        calls.append((kwargs["method"], tuple(kwargs["C"].shape),
                      kwargs.get("intervals") is not None))
        return original(*args, **kwargs)

    monkeypatch.setattr(bm, "compute_bounds", spy)
    res = certified_loss(bm, x, y, method="crown-ibp", eps=0.05, beta=1.0, loss_fusion=True)
    assert calls == [("ibp", (5, 3, 4), False), ("crown-ibp", (5, 1, 4), True)]
    res.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    calls.clear()
    certified_loss(bm, x, y, method="crown-ibp", eps=0.05, beta=0.0, loss_fusion=True)
    assert [c[0] for c in calls] == ["ibp"]  # beta = 0: IBP alone
    with pytest.raises(ValueError, match="loss fusion"):
        certified_loss(bm, x, y, method="ibp", eps=0.05, loss_fusion=True)


def test_fused_loss_stays_finite_for_wide_intervals():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(40.0)  # IBP margins in the thousands: exp would overflow unshifted
    x, y = torch.rand(8, 6), torch.randint(0, 4, (8,))
    bm = bg.BoundedModule(model, x)
    bound, m = fused_robust_ce(bm, x, y, 0.5)
    assert torch.isfinite(bound).all() and (m < -100).any()
    assert (bound >= _worst_ce(model, x, y, 0.5) - 1e-3).all()


def test_robust_loss_equals_cross_entropy_at_eps_zero():
    model = _mlp().eval()
    x, y = torch.rand(9, 6), torch.randint(0, 4, (9,))
    bm = bg.BoundedModule(model, x)
    m = margin_bounds(bm, x, y, 0.0)
    torch.testing.assert_close(robust_ce(m), F.cross_entropy(model(x), y), rtol=1e-5,
                               atol=1e-6)
    res = certified_loss(bm, x, y, method="ibp", eps=0.0, kappa=0.0)
    torch.testing.assert_close(res.loss, F.cross_entropy(model(x), y), rtol=1e-5, atol=1e-6)


def test_ibp_mix_weights_and_checks():
    a, b = torch.tensor(2.0), torch.tensor(4.0)
    assert ibp_mix(a, b, 1.0) is a and ibp_mix(a, b, 0.0) is b
    assert float(ibp_mix(a, b, 0.25)) == pytest.approx(0.25 * 2 + 0.75 * 4)
    with pytest.raises(ValueError):
        ibp_mix(a, b, 1.5)
    with pytest.raises(ValueError):
        robust_ce(torch.zeros(3))


def test_crown_ibp_margin_is_the_beta_mixture_on_one_interval_pass(monkeypatch):
    model = _mlp().eval()
    x, y = torch.rand(5, 6), torch.randint(0, 4, (5,))
    bm = bg.BoundedModule(model, x)
    C = bg.margin_spec(y, 4)
    ptb = bg.LinfBall(0.05, lower=0, upper=1)
    m_ibp = bm.compute_bounds(x, ptb, method="ibp", C=C, bound_upper=False)[0]
    m_cibp = bm.compute_bounds(x, ptb, method="crown-ibp", C=C, bound_upper=False)[0]
    mixed = margin_bounds(bm, x, y, 0.05, beta=0.3)
    torch.testing.assert_close(mixed, 0.7 * m_ibp + 0.3 * m_cibp)
    calls = []
    original = bm.compute_bounds

    def spy(*args, **kwargs):
        calls.append((kwargs.get("method"), kwargs.get("intervals") is not None))
        assert kwargs.get("bound_upper") is False
        return original(*args, **kwargs)

    monkeypatch.setattr(bm, "compute_bounds", spy)
    certified_loss(bm, x, y, method="crown-ibp", eps=0.05, kappa=0.5, beta=0.0)
    assert calls == [("ibp", False)]  # beta = 0: no CROWN-IBP pass
    calls.clear()
    certified_loss(bm, x, y, method="crown-ibp", eps=0.05, kappa=0.5, beta=1.0)
    assert calls == [("ibp", False), ("crown-ibp", True)]  # the backward pass reuses the IBP pass
    torch.testing.assert_close(margin_bounds(bm, x, y, 0.05, beta=1.0), m_cibp)


@pytest.mark.parametrize("method", ["natural", "ibp", "crown-ibp", "improved-ibp"])
def test_losses_are_differentiable_in_the_parameters(method):
    model = _cnn().train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    bm = bg.BoundedModule(model, x)
    res = certified_loss(bm, x, y, method=method, eps=0.05, kappa=0.5, beta=0.5, eps_max=0.1)
    res.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if method == "improved-ibp":  # mid-ramp: the warm-up regulariser is on and in the loss
        assert float(res.reg) > 0.0
        mixed = 0.5 * res.natural.mean() + 0.5 * res.robust.mean()
        torch.testing.assert_close(res.loss.detach(), mixed + res.reg)


def test_certified_loss_rejects_bad_input():
    model = _mlp()
    x, y = torch.rand(2, 6), torch.tensor([0, 1])
    bm = bg.BoundedModule(model, x)
    with pytest.raises(ValueError, match="unknown training method"):
        certified_loss(bm, x, y, method="pgd", eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        certified_loss(bm, x, y, method="ibp", eps=-0.1)


# ------------------------------------------------------------------------------- intervals
def test_interval_bounds_expose_every_node_and_match_compute_bounds():
    model = _cnn().eval()
    x = torch.rand(3, 1, 8, 8)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.1, lower=0, upper=1)
    iv = bm.interval_bounds(x, ptb)
    g = bm.graph
    assert set(g.batched_order) <= set(iv)
    lo, hi = ptb.box(x)
    torch.testing.assert_close(iv[g.input].lower, lo)
    lb, ub = bm.compute_bounds(x, ptb, method="ibp")
    torch.testing.assert_close(iv[g.output].lower, lb)
    torch.testing.assert_close(iv[g.output].upper, ub)
    lb2, _, iv2 = bm.compute_bounds(x, ptb, method="ibp", C=bg.margin_spec(
        torch.zeros(3, dtype=torch.long), 5), bound_upper=False, return_intermediate=True)
    for name in preactivation_nodes(g):
        torch.testing.assert_close(iv2[name].lower, iv[name].lower)


def test_preactivation_nodes_are_the_relu_inputs():
    import models

    net = models.get_model("cnn7", width=4, linear_size=8)
    bm = bg.BoundedModule(net, torch.rand(2, 1, 28, 28))
    pre = preactivation_nodes(bm.graph)
    assert len(pre) == 6
    assert all(bm.graph.nodes[n].op.kind == "batchnorm" for n in pre)


# ------------------------------------------------------------------------------ regularisers
def _iv(center, radius):
    return Interval(center - radius, center + radius)


def test_tightness_term_is_zero_within_tolerance_and_grows_with_looser_bounds():
    box = _iv(torch.rand(4, 10), torch.full((4, 10), 0.1))
    ok = [_iv(torch.randn(4, 20), torch.full((4, 20), 0.19))]  # within 2x the input radius
    assert float(tightness_loss(box, ok, tol=0.5)) == 0.0
    loose = [_iv(torch.randn(4, 20), torch.full((4, 20), 1.0))]  # 10x: t = 0.1
    assert float(tightness_loss(box, loose, tol=0.5)) == pytest.approx((0.5 - 0.1) / 0.5)
    looser = [_iv(torch.randn(4, 20), torch.full((4, 20), 10.0))]
    assert float(tightness_loss(box, looser)) > float(tightness_loss(box, loose))


def test_relu_balance_term_zero_when_balanced_positive_when_mostly_inactive():
    c = torch.cat([torch.linspace(0.5, 2.0, 50), -torch.linspace(0.5, 2.0, 50)]).view(2, 50)
    balanced = [_iv(c, torch.full_like(c, 0.1))]
    assert float(relu_balance_loss(balanced)) == pytest.approx(0.0, abs=1e-6)
    skew = torch.cat([torch.linspace(0.5, 0.6, 5), -torch.linspace(0.5, 2.0, 95)]).view(2, 50)
    unbalanced = [_iv(skew, torch.full_like(skew, 0.1))]
    assert float(relu_balance_loss(unbalanced)) > 0.5
    all_unstable = [_iv(torch.zeros(2, 5), torch.ones(2, 5))]
    assert relu_balance_loss(all_unstable) is None


def test_warmup_regularizer_gradient_pushes_bounds_tighter():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 3))
    x = torch.rand(16, 10)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.05, lower=0, upper=1)
    iv = bm.interval_bounds(x, ptb)
    reg = warmup_regularizer(bm.graph, iv)
    assert reg.item() > 0  # default init: radii grow past 2x the input's
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):
        reg = warmup_regularizer(bm.graph, bm.interval_bounds(x, ptb))
        opt.zero_grad()
        reg.backward()
        opt.step()
    assert warmup_regularizer(bm.graph, bm.interval_bounds(x, ptb)).item() < \
        warmup_regularizer(bm.graph, iv).item()


def test_clean_pass_skips_autograd_only_when_the_natural_loss_is_unused():
    model = _mlp().train()
    x, y = torch.rand(6, 6), torch.randint(0, 4, (6,))
    bm = bg.BoundedModule(model, x)
    robust_only = certified_loss(bm, x, y, method="ibp", eps=0.05, kappa=0.0)
    assert robust_only.logits.grad_fn is None and robust_only.loss.requires_grad
    mixed = certified_loss(bm, x, y, method="ibp", eps=0.05, kappa=0.5)
    assert mixed.logits.grad_fn is not None
    # eps = 0 (a warm-up epoch of improved IBP): the margins come from the logits themselves
    warmup = certified_loss(bm, x, y, method="improved-ibp", eps=0.0, kappa=0.0)
    assert warmup.loss.requires_grad
    warmup.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
