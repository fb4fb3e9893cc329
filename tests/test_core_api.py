"""Public API behaviour: tracing styles, any batch size, live parameters, dtype, readable
errors for bad input."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from oracle import assert_sound


class Styles(nn.Module):
    """Every model style the tracer promises: nested Sequential, functional and method calls,
    view/reshape/flatten, residual add, (x - mean) / std with buffers, BN, Dropout, Identity,
    AvgPool2d."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor([0.25]).view(1, 1, 1, 1))
        self.block = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)),
                                   nn.ReLU(), nn.Identity())
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        x = (x - self.mean) / self.std
        h = self.block(x)
        h = h + F.relu(self.conv(h))
        h = self.pool(h)
        h = torch.relu(h).reshape(h.shape[0], -1)
        h = self.drop(self.fc1(h)).relu()
        h = self.fc2(h.view(-1, 16)).flatten(1)
        return self.fc3(torch.relu(h))


@pytest.fixture
def styles():
    m = Styles()
    with torch.no_grad():
        m.block[0][1].running_var.fill_(2.0)
        m.block[0][1].running_mean.fill_(0.1)
    return m.eval()


def test_every_model_style_traces_matches_forward_and_is_sound(styles):
    x = torch.rand(2, 1, 8, 8)
    bm = bg.BoundedModule(styles, x)
    assert torch.allclose(bm(x), styles(x), atol=1e-6)
    ptb = bg.LinfBall(0.03, 0.0, 1.0)
    lo, hi = ptb.box(x)
    for method in bg.METHODS:
        lb, ub = bm.compute_bounds(x, ptb, method=method)
        assert_sound(styles, lo, hi, lb, ub, n=32)


@pytest.mark.parametrize("batch", [1, 5, 17])
def test_any_batch_size_works_after_tracing_once(styles, batch):
    bm = bg.BoundedModule(styles, torch.rand(1, 1, 8, 8))
    x = torch.rand(batch, 1, 8, 8)
    assert torch.allclose(bm(x), styles(x), atol=1e-6)
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.01), method="crown-ibp",
                               C=bg.margin_spec(torch.zeros(batch, dtype=torch.long), 3))
    assert lb.shape == ub.shape == (batch, 2)


def test_bounds_see_parameter_updates_without_retracing():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.rand(2, 4)
    bm = bg.BoundedModule(model, x)
    before = bm.compute_bounds(x, bg.LinfBall(0.1))[0].clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    bm.compute_bounds(x, bg.LinfBall(0.1))[0].sum().backward()
    opt.step()
    after = bm.compute_bounds(x, bg.LinfBall(0.1))[0]
    assert not torch.allclose(before, after)
    assert torch.allclose(bm(x), model(x))
    assert list(bm.parameters()) == list(model.parameters())


def test_float64_follows_the_model_dtype(styles):
    m = styles.double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.double)
    bm = bg.BoundedModule(m, x)
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.01, 0.0, 1.0), method="crown")
    assert lb.dtype == torch.double and (lb <= ub).all()


def test_graph_prints_nodes_ops_and_shapes(styles):
    bm = bg.BoundedModule(styles, torch.rand(2, 1, 8, 8))
    text = str(bm.graph)
    assert "conv2d" in text and "batchnorm" in text and "relu" in text
    assert "[B, 4, 8, 8]" in text or "(B" in text or "[B," in text
    assert "param block.0.0.weight" in text


def test_batchnorm_follows_the_module_training_flag(styles):
    x = torch.rand(4, 1, 8, 8)
    bm = bg.BoundedModule(styles, x)
    styles.train()
    bn = styles.block[0][1]
    before = bn.running_mean.clone()
    out = bm(x)
    assert not torch.allclose(before, bn.running_mean)  # forward updates running stats like torch
    styles.eval()
    assert torch.allclose(bm(x), styles(x), atol=1e-6)
    styles.train()
    stats = bn.running_mean.clone()
    bm.compute_bounds(x, bg.LinfBall(0.01), method="crown-ibp")
    assert torch.equal(stats, bn.running_mean)  # bounds never touch running statistics
    styles.eval()
    del out


# ---------------------------------------------------------------------------------- errors
@pytest.fixture
def small():
    model = nn.Sequential(nn.Linear(4, 3))
    return model, bg.BoundedModule(model, torch.rand(2, 4))


def test_negative_eps_is_a_clear_error():
    with pytest.raises(bg.InputError, match="eps must be >= 0"):
        bg.LinfBall(-0.1)
    with pytest.raises(bg.InputError, match="eps must be >= 0"):
        bg.LinfBall(torch.tensor([0.1, -0.2]))


def test_wrong_input_shape_is_a_clear_error(small):
    _, bm = small
    with pytest.raises(bg.InputError, match=r"expected input of shape \(B, 4\), got \(2, 5\)"):
        bm.compute_bounds(torch.rand(2, 5), bg.LinfBall(0.1))
    with pytest.raises(bg.InputError, match="expected input of shape"):
        bm(torch.rand(4))


def test_nan_input_is_a_clear_error(small):
    _, bm = small
    x = torch.rand(2, 4)
    x[0, 1] = float("nan")
    with pytest.raises(bg.InputError, match="NaN"):
        bm.compute_bounds(x, bg.LinfBall(0.1))


def test_bad_method_spec_and_domain_are_clear_errors(small):
    _, bm = small
    x = torch.rand(2, 4)
    with pytest.raises(bg.InputError, match="unknown method 'alpha'"):
        bm.compute_bounds(x, bg.LinfBall(0.1), method="alpha")
    with pytest.raises(bg.InputError, match="C must have shape"):
        bm.compute_bounds(x, bg.LinfBall(0.1), C=torch.ones(2, 2, 5))
    with pytest.raises(bg.InputError, match="above the domain"):
        bm.compute_bounds(x + 2, bg.LinfBall(0.1, 0.0, 1.0))
    with pytest.raises(bg.InputError, match="labels must lie in"):
        bg.margin_spec(torch.tensor([0, 7]), 3)
    with pytest.raises(bg.InputError, match="Box bounds of shape"):
        bm.compute_bounds(x, bg.Box(torch.zeros(3), torch.ones(3)))


def test_unsupported_op_error_names_node_op_and_source_line():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=1).values * 2  # no rule for sort

    with pytest.raises(bg.UnsupportedOpError) as e:
        bg.BoundedModule(Odd(), torch.rand(2, 3))
    msg = str(e.value)
    assert "aten.sort" in msg and "test_core_api.py" in msg and "torch.sort(x, dim=1)" in msg
    assert "register_op" in msg


def test_untraceable_model_is_a_trace_error():
    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(bg.TraceError, match="could not trace TwoInputs"):
        bg.BoundedModule(TwoInputs(), torch.rand(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bounds_follow_the_model_to_cuda(styles):
    m = styles.cuda()
    x = torch.rand(3, 1, 8, 8, device="cuda")
    bm = bg.BoundedModule(m, x)
    for method in bg.METHODS:
        lb, ub = bm.compute_bounds(x, bg.LinfBall(0.02, 0.0, 1.0), method=method)
        assert lb.is_cuda and (lb <= ub).all()
    cpu_lb, _ = bg.BoundedModule(m.cpu(), x.cpu()).compute_bounds(
        x.cpu(), bg.LinfBall(0.02, 0.0, 1.0), method="crown")
    assert torch.allclose(lb.cpu(), cpu_lb, atol=1e-4)


def test_crown_ibp_on_reused_intervals_equals_a_fresh_call(styles):
    """``intervals=`` from an earlier IBP call skips the interval pass and changes nothing."""
    styles.train()  # batch-statistics BatchNorm: the clean pass still binds it
    bm = bg.BoundedModule(styles, torch.rand(2, 1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    ptb = bg.LinfBall(0.05, lower=0, upper=1)
    C = bg.margin_spec(torch.tensor([0, 1, 2, 0, 1]), 3)
    _, _, iv = bm.compute_bounds(x, ptb, method="ibp", C=C, return_intermediate=True)
    fresh = bm.compute_bounds(x, ptb, method="crown-ibp", C=C)
    reused = bm.compute_bounds(x, ptb, method="crown-ibp", C=C, intervals=iv)
    for a, b in zip(fresh, reused):
        torch.testing.assert_close(a, b)
    with pytest.raises(bg.InputError, match="intervals"):
        bm.compute_bounds(x[:3], ptb, method="crown-ibp", C=C[:3], intervals=iv)
    with pytest.raises(bg.InputError, match="lack node"):
        bm.compute_bounds(x, ptb, method="crown-ibp", C=C, intervals={})


def test_crown_ibp_given_intervals_reuses_the_first_calls_set_up_and_gives_the_same_bounds():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).train()
    x = torch.rand(5, 1, 6, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.05, 0.0, 1.0)
    C = bg.margin_spec(torch.tensor([0, 1, 2, 0, 1]), 3)
    _, _, iv = bm.compute_bounds(x, ptb, method="ibp", C=C, return_intermediate=True)
    assert isinstance(iv, dict) and iv.context is not None
    calls = []
    bm._context = lambda *a, **k: calls.append(a) or bg.BoundedModule._context(bm, *a, **k)
    lb, ub = bm.compute_bounds(x, ptb, method="crown-ibp", C=C, intervals=iv)
    assert calls == []  # no second set-up (no second clean pass through the BatchNorm)
    del bm._context
    ref_l, ref_u = bm.compute_bounds(x, ptb, method="crown-ibp", C=C)
    torch.testing.assert_close(lb, ref_l)
    torch.testing.assert_close(ub, ref_u)
