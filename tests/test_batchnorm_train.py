"""BatchNorm with batch statistics (a model in ``.train()``, or without running statistics):
bounds are sound for the network whose BatchNorm layers normalise with the *clean* batch's
statistics held fixed, equal its output at eps = 0, are differentiable, and never touch the
running statistics."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from op_checks import METHODS, one_thread  # noqa: F401
from oracle import assert_sound

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def _model(track=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1),
                          nn.BatchNorm2d(4, track_running_stats=track),
                          nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, BN_TYPES):
            m.weight.data = torch.randn(m.num_features, generator=g)
            m.bias.data = torch.randn(m.num_features, generator=g)
            if m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def fixed_statistics_network(model, x):
    """A copy of ``model`` whose BatchNorm layers normalise with the statistics of the clean
    batch ``x`` (computed as torch's training forward computes them), held constant."""
    probe = copy.deepcopy(model).train()
    stats = {}

    def grab(name):
        def hook(mod, inp):
            dims = [0] + list(range(2, inp[0].dim()))
            stats[name] = (inp[0].mean(dims).detach(), inp[0].var(dims, unbiased=False).detach())
        return hook

    for name, m in probe.named_modules():
        if isinstance(m, BN_TYPES):
            m.register_forward_pre_hook(grab(name))
    with torch.no_grad():
        probe(x)
    fixed = copy.deepcopy(model)
    for name, m in fixed.named_modules():
        if isinstance(m, BN_TYPES):
            mean, var = stats[name]
            m.forward = (lambda inp, m=m, mean=mean, var=var:
                         F.batch_norm(inp, mean, var, m.weight, m.bias, False, 0.0, m.eps))
    return fixed.eval()


def _running(model):
    return [t.clone() for m in model.modules() if isinstance(m, BN_TYPES)
            for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]


@pytest.mark.parametrize("batch", [4, 7])
@pytest.mark.parametrize("method", METHODS)
def test_train_mode_bounds_are_sound_for_the_clean_batch_statistics(method, batch):
    model = _model()
    x = torch.rand(batch, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    model.train()
    oracle = fixed_statistics_network(model, x)
    before = _running(model)
    ptb = bg.LinfBall(0.05, 0.0, 1.0)
    lb, ub = bm.compute_bounds(x, ptb, method=method)
    lo, hi = ptb.box(x)
    assert_sound(oracle, lo, hi, lb, ub, n=32)
    # the fixed-statistics network differs from the running-statistics one: a real test
    assert not torch.allclose(oracle(x), model.eval()(x), atol=1e-3)
    model.train()
    after = _running(model)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("method", METHODS)
def test_train_mode_bounds_at_zero_eps_equal_the_training_forward(method):
    model = _model()
    x = torch.rand(5, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    model.train()
    with torch.no_grad():
        expected = copy.deepcopy(model)(x)  # torch's own training forward (on a copy)
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.0), method=method)
    torch.testing.assert_close(lb, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ub, expected, atol=1e-4, rtol=1e-4)


def test_train_mode_bounds_are_differentiable_through_the_batch_statistics():
    model = _model().train()
    x = torch.rand(4, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    for method in METHODS:
        model.zero_grad()
        lb, ub = bm.compute_bounds(x, bg.LinfBall(0.05), method=method)
        (ub - lb).sum().backward()
        for p in (model[0].weight, model[1].weight, model[8].bias):
            assert p.grad is not None and torch.isfinite(p.grad).all(), method
        assert model[0].weight.grad.abs().sum() > 0


def test_batchnorm_without_running_statistics_uses_batch_statistics_in_eval_too():
    model = _model(track=False).eval()
    x = torch.rand(4, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    # layer 1 has no running statistics: batch statistics even in eval mode; the others use
    # their running statistics in eval mode
    train_stats_first = fixed_statistics_network(model, x)
    for name, m in train_stats_first.named_modules():
        if isinstance(m, BN_TYPES) and name != "1":
            del m.forward  # back to the module's own eval forward
    torch.testing.assert_close(bm(x), model(x))
    ptb = bg.LinfBall(0.05)
    lo, hi = ptb.box(x)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x, ptb, method=method)
        assert_sound(train_stats_first, lo, hi, lb, ub, n=16)
