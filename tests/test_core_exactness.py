"""Cases with known answers, ordering between methods, and gradients."""
import pytest
import torch
import torch.nn as nn

import boundgraph as bg
from boundgraph.engines.backward import crown_intermediate
from boundgraph.engines.interval import interval_pass

METHODS = ["ibp", "crown-ibp", "crown", "alpha-crown"]


def _true_range_affine(W, b, lo, hi):
    c, r = (lo + hi) / 2, (hi - lo) / 2
    mid = c @ W.T + b
    rad = r @ W.abs().T
    return mid - rad, mid + rad


@pytest.mark.parametrize("method", METHODS)
def test_single_affine_layer_bounds_are_exact(method):
    lin = nn.Linear(6, 4)
    x = torch.rand(3, 6)
    bm = bg.BoundedModule(lin, x)
    ptb = bg.LinfBall(0.3, 0.0, 1.0)
    lb, ub = bm.compute_bounds(x, ptb, method=method)
    lo, hi = ptb.box(x)
    elb, eub = _true_range_affine(lin.weight, lin.bias, lo, hi)
    assert torch.allclose(lb, elb, atol=1e-5) and torch.allclose(ub, eub, atol=1e-5)
    # the optimum is attained at a corner of the box: bounds are tight, not just sound
    corner_lo = torch.where(lin.weight[None] > 0, lo[:, None], hi[:, None])  # (B, out, in)
    vals = (corner_lo * lin.weight[None]).sum(-1) + lin.bias
    assert torch.allclose(vals, lb, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_single_conv_with_spec_is_exact(method):
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Flatten())
    x = torch.rand(2, 2, 5, 5)
    bm = bg.BoundedModule(conv, x)
    C = torch.randn(2, 4, 27)
    ptb = bg.LinfBall(0.1)
    lb, ub = bm.compute_bounds(x, ptb, method=method, C=C)
    # C . conv is affine in x: exact range by center/radius of the composed map
    J = torch.autograd.functional.jacobian(lambda z: conv(z), x[:1]).reshape(27, -1)
    M = torch.einsum("bsk,kn->bsn", C, J)
    center = torch.einsum("bsk,bk->bs", C, conv(x))
    rad = (M.abs() * 0.1).sum(-1)
    if method == "ibp":  # IBP folds C into the last op, which here is the flatten: still sound
        assert (lb <= center - rad + 1e-5).all() and (ub >= center + rad - 1e-5).all()
    else:
        assert torch.allclose(lb, center - rad, atol=1e-4)
        assert torch.allclose(ub, center + rad, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_zero_eps_bounds_equal_the_forward_pass(method):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10), nn.ReLU(),
                          nn.Linear(10, 5))
    x = torch.rand(4, 1, 6, 6)
    bm = bg.BoundedModule(model, x)
    lb, ub = bm.compute_bounds(x, bg.LinfBall(0.0), method=method)
    out = model(x)
    assert torch.allclose(lb, out, atol=1e-5) and torch.allclose(ub, out, atol=1e-5)


def test_crown_is_exact_on_a_network_whose_neurons_are_all_stable():
    torch.manual_seed(3)
    lin1, lin2 = nn.Linear(5, 8), nn.Linear(8, 3)
    with torch.no_grad():
        lin1.bias.copy_(torch.tensor([5.0, -5.0] * 4))  # every neuron firmly on or off
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    x = torch.rand(2, 5)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.05)
    lb, ub = bm.compute_bounds(x, ptb, method="crown")
    on = (lin1.bias > 0).float()
    W = lin2.weight * on  # effective affine map
    Wf = W @ lin1.weight
    bf = W @ lin1.bias + lin2.bias
    lo, hi = ptb.box(x)
    elb, eub = _true_range_affine(Wf, bf, lo, hi)
    assert torch.allclose(lb, elb, atol=1e-5) and torch.allclose(ub, eub, atol=1e-5)
    ilb, iub = bm.compute_bounds(x, ptb, method="ibp")
    assert (ilb < lb - 1e-4).any()  # and IBP is not exact here


def _random_mlp(seed):
    g = torch.Generator().manual_seed(seed)
    layers = []
    width = 6
    for i in range(3):
        w = 4 + int(torch.randint(0, 8, (1,), generator=g))
        lin = nn.Linear(width, w)
        lin.weight.data = torch.randn(w, width, generator=g)
        lin.bias.data = torch.randn(w, generator=g) * 0.3
        layers += [lin, nn.ReLU()]
        width = w
    layers.append(nn.Linear(width, 3))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("seed", range(8))
def test_no_method_is_looser_than_ibp_at_any_node(seed):
    model = _random_mlp(seed)
    x = torch.rand(3, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.2)
    ctx = bm._context(x, ptb, {})
    ibp = interval_pass(ctx)
    ctx = bm._context(x, ptb, {})
    crown = crown_intermediate(ctx)
    for name, (l, u) in ibp.items():
        assert (crown[name].lower >= l - 1e-6).all() and (crown[name].upper <= u + 1e-6).all(), name
    C = torch.randn(3, 4, 3)
    ilb, iub = bm.compute_bounds(x, ptb, method="ibp", C=C)
    for method in ("crown-ibp", "crown"):
        lb, ub = bm.compute_bounds(x, ptb, method=method, C=C)
        assert (lb >= ilb - 1e-5).all() and (ub <= iub + 1e-5).all(), method


def test_crown_is_strictly_tighter_than_ibp_on_a_random_mlp():
    model = _random_mlp(0)
    x = torch.rand(3, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.2)
    ilb, iub = bm.compute_bounds(x, ptb, method="ibp")
    clb, cub = bm.compute_bounds(x, ptb, method="crown")
    assert (clb - ilb).sum() > 1e-3 and (iub - cub).sum() > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_bound_gradients_reach_the_module_parameters(method):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 4))
    x = torch.rand(2, 1, 4, 4)
    bm = bg.BoundedModule(model, x)
    model.train()
    lb, _ = bm.compute_bounds(x, bg.LinfBall(0.1), method=method,
                              C=bg.margin_spec(torch.tensor([0, 1]), 4), bound_upper=False)
    lb.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_of_bounds_in_double_precision(method):
    """Gradients of every method's bounds are exact, for CROWN and alpha-CROWN with
    ``intermediate_grad=True`` (through the intermediate bounds too)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(1, 3, dtype=torch.double)
    bm = bg.BoundedModule(model, x)
    b0 = model[0].bias.detach().clone().requires_grad_(True)

    def h(bias):
        del model[0].bias
        model[0].bias = bias  # plain tensor attribute: the graph looks it up live
        try:
            return bm.compute_bounds(x, bg.LinfBall(0.05), method=method,
                                     intermediate_grad=True)
        finally:
            del model[0].bias
            model[0].bias = nn.Parameter(b0.detach().clone())

    assert torch.autograd.gradcheck(h, (b0,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_windowed_crown_equals_dense_crown(seed):
    """Intermediate CROWN bounds computed on spatial windows (tiles of neurons, coefficients
    kept on their receptive fields) equal those of dense coefficients."""
    from test_core_soundness import random_network

    model = random_network(seed)
    x = torch.rand(2, 2, 6, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.05)
    for budget in (2 ** 12, 2 ** 20):  # small budget: many small tiles
        ctx_w = bm._context(x, ptb, {"max_elements": budget})
        ctx_d = bm._context(x, ptb, {"max_elements": budget, "windows": False})
        bw, bd = crown_intermediate(ctx_w), crown_intermediate(ctx_d)
        for name in bd:
            assert torch.allclose(bw[name].lower, bd[name].lower, atol=1e-5), name
            assert torch.allclose(bw[name].upper, bd[name].upper, atol=1e-5), name


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_intermediate_crown_passes_stay_out_of_autograd_unless_asked(method):
    """By default full CROWN's intermediate bounds are constants for autograd: the bounds'
    gradient is the output pass's alone (equal to the gradient with the intermediate bounds
    detached), and with ``intermediate_grad=True`` it also follows the intermediate bounds."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 2)).double()
    x = torch.rand(2, 3, dtype=torch.double)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.3)
    w = model[0].weight

    def grad(**kw):
        lb, _ = bm.compute_bounds(x, ptb, method=method, bound_upper=False, **kw)
        g, = torch.autograd.grad(lb.sum(), w)
        return lb.detach(), g

    lb0, g0 = grad()
    lb1, g1 = grad(intermediate_grad=True)
    torch.testing.assert_close(lb0, lb1)
    # the first layer's weight reaches the output bound through the intermediate bounds of
    # both ReLUs; without them its gradient is the output pass's alone
    assert not torch.allclose(g0, g1)
    with torch.no_grad():
        ref = bm.compute_bounds(x, ptb, method=method, bound_upper=False)[0]
    torch.testing.assert_close(lb0, ref)
    # the bounds still follow the input box (the verifier's split scores differentiate them)
    lo, hi = (x - 0.3).requires_grad_(True), (x + 0.3).requires_grad_(True)
    lb, _ = bm.compute_bounds(x, bg.Box(lo, hi), method=method, bound_upper=False)
    gl, gh = torch.autograd.grad(lb.sum(), (lo, hi))
    assert gl.abs().sum() + gh.abs().sum() > 0


def test_pointwise_ops_with_per_channel_constants_keep_crown_windows(monkeypatch):
    """BatchNorm (per-channel vectors) and a product with a per-channel constant stay on
    windows in full CROWN's intermediate passes; a constant varying over columns is cropped to
    the window instead of densifying (a fall-back to dense coefficients made full CROWN on
    CNN7 twelve times slower)."""
    import boundgraph.engines.backward as be

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.register_buffer("per_channel", torch.rand(4, 1, 1) + 0.5)
            self.register_buffer("per_column", torch.rand(6) + 0.5)
            self.fc = nn.Linear(4 * 36, 3)

        def forward(self, x):
            h = torch.relu(self.bn(self.c1(x))) * self.per_channel
            h = torch.relu(self.c2(h) * self.per_column)
            return self.fc(h.flatten(1))

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(2, 1, 6, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.05)
    kinds = {}
    real = be._window_step

    def spy(ctx, name, op, *args):
        out = real(ctx, name, op, *args)
        kinds.setdefault(op.kind, set()).add(out is not None)
        return out

    monkeypatch.setattr(be, "_window_step", spy)
    ctx = bm._context(x, ptb, {"tile": 1})
    windowed = crown_intermediate(ctx)
    assert kinds["batchnorm"] == {True} and kinds["mul"] == {True} and kinds["relu"] == {True}
    dense = crown_intermediate(bm._context(x, ptb, {"windows": False}))
    for name in dense:
        torch.testing.assert_close(windowed[name].lower, dense[name].lower, atol=1e-5, rtol=0)
        torch.testing.assert_close(windowed[name].upper, dense[name].upper, atol=1e-5, rtol=0)
