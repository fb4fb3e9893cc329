"""l1 / l2 balls and models of several inputs: bounds hold over the set (sampled points inside
and on the sphere, their clip to the domain, PGD projected onto the ball), a single affine layer
is bounded exactly, an l2 ball never bounds looser than the l-inf ball of the same radius, the
inputs left out of a perturbation stay exact, and bad input gets one clear error."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import boundgraph as bg
from boundgraph.attack import _project_l1, _project_l2, pgd_minimize
from boundgraph.errors import InputError

from random_nets import random_residual_net

METHODS = bg.METHODS


def ball_points(x, eps, p, n, gen, on_sphere=False):
    """``n`` points per example of the l-``p`` ball around ``x`` (``(n * B, *shape)``): inside
    (uniform radius) or on the sphere."""
    B, d = x.shape[0], x[0].numel()
    if p == 2:
        u = torch.randn(n, B, d, generator=gen, dtype=x.dtype)
        u = u / u.norm(dim=-1, keepdim=True)
    else:  # a random point of the l1 sphere: signed exponential weights
        w = -torch.log(torch.rand(n, B, d, generator=gen, dtype=x.dtype))
        u = torch.sign(torch.randn(n, B, d, generator=gen, dtype=x.dtype)) * w / w.sum(-1, True)
    r = 1.0 if on_sphere else torch.rand(n, B, 1, generator=gen, dtype=x.dtype)
    # vertices of the l1 ball are the extreme points: add a few
    pts = x.unsqueeze(0) + (eps * r * u).view(n, *x.shape)
    return pts.reshape(-1, *x.shape[1:])


def pgd_toward_bounds(f, x, eps, p, lo, hi, rows, steps=25):
    """Per output row, the smallest and largest value PGD finds in the ball within [lo, hi]."""
    mins, maxs = [], []
    for k in range(rows):
        for sign, keep in ((1.0, mins), (-1.0, maxs)):
            xb, v = pgd_minimize(lambda z: sign * f(z)[:, k], lo, hi, steps=steps, restarts=2,
                                 ball=(x, eps, p), generator=torch.Generator().manual_seed(k))
            keep.append(sign * v)
    return torch.stack(mins, 1), torch.stack(maxs, 1)


def check_ball(model, x, eps, p, lower=None, upper=None, tol=1e-5):
    bm = bg.BoundedModule(model, x)
    ptb = bg.LpBall(eps, p, lower=lower, upper=upper)
    gen = torch.Generator().manual_seed(0)
    pts = torch.cat([ball_points(x, eps, p, 200, gen), ball_points(x, eps, p, 100, gen, True)])
    if lower is not None:
        pts = pts.clamp(lower, upper)  # the clip of a ball point stays in the ball
    with torch.no_grad():
        out = model(pts).view(-1, *model(x).shape)
    lo, hi = ptb.box(x)
    rows = out.shape[-1]
    pmin, pmax = pgd_toward_bounds(lambda z: model(z).flatten(1), x, eps, p, lo, hi, rows)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x, ptb, method=method)
        scale = tol * (1 + lb.abs().max().item() + ub.abs().max().item())
        assert (lb.unsqueeze(0) - out).max() <= scale, (method, "sample below the lower bound")
        assert (out - ub.unsqueeze(0)).max() <= scale, (method, "sample above the upper bound")
        assert (lb - pmin).max() <= scale, (method, "PGD below the lower bound")
        assert (pmax - ub).max() <= scale, (method, "PGD above the upper bound")


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16),
                         nn.Tanh(), nn.Linear(16, 4))


def cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_hold_over_the_ball_for_every_method(p, seed):
    torch.manual_seed(100 + seed)
    check_ball(mlp(seed).double(), torch.randn(2, 3, 2, 2, dtype=torch.float64), 0.7, p)
    check_ball(cnn(seed).double(), torch.rand(2, 3, 4, 4, dtype=torch.float64), 0.5, p)


@pytest.mark.parametrize("p", [1, 2])
def test_bounds_hold_over_the_ball_clipped_to_the_domain(p):
    torch.manual_seed(3)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    x[0, 0] = 0.0  # on the domain's faces: the clip cuts the ball
    x[1, 1] = 1.0
    check_ball(cnn(3).double(), x, 0.8, p, lower=0.0, upper=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_hold_over_the_l2_ball_on_random_residual_networks(seed):
    net = random_residual_net(seed, size=6).double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    check_ball(net, x, 0.3, 2, lower=0.0, upper=1.0)


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_bounds_hold_over_the_l2_ball_on_random_sequence_networks(seed):
    """Attention, normalisation, recurrent and elementwise blocks behind the exactly bounded
    first layer (IBP and CROWN-IBP; full CROWN is covered on the other networks)."""
    from random_seq_nets import random_seq_net

    net = random_seq_net(seed).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    bm = bg.BoundedModule(net, x)
    gen = torch.Generator().manual_seed(1)
    pts = torch.cat([ball_points(x, 0.3, 2, 300, gen), ball_points(x, 0.3, 2, 100, gen, True)])
    with torch.no_grad():
        out = net(pts).view(400, *net(x).shape)
    for method in ("ibp", "crown-ibp"):
        lb, ub = bm.compute_bounds(x, bg.LpBall(0.3, 2), method=method)
        assert (out >= lb - 1e-9).all() and (out <= ub + 1e-9).all(), method


@pytest.mark.parametrize("per", ["channel", "example"])
def test_bounds_hold_over_per_channel_and_per_example_eps(per):
    model = cnn(4).double()
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    if per == "channel":
        eps = torch.tensor([0.1, 0.5, 0.0], dtype=torch.float64).view(3, 1, 1)
    else:
        eps = torch.tensor([0.1, 0.6], dtype=torch.float64).view(2, 1, 1, 1)
    bm = bg.BoundedModule(model, x)
    gen = torch.Generator().manual_seed(0)
    u = ball_points(torch.zeros_like(x), 1.0, 2, 300, gen).view(300, *x.shape)
    pts = (x + u * eps).reshape(-1, 3, 4, 4)
    out = model(pts).view(300, 2, -1)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x, bg.LpBall(eps, 2), method=method)
        assert (out >= lb - 1e-9).all() and (out <= ub + 1e-9).all(), method


@pytest.mark.parametrize("p, q", [(2, 2), (1, math.inf)])
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_one_affine_layer_is_bounded_exactly_by_crown_and_ibp(p, q, layer):
    torch.manual_seed(5)
    if layer == "linear":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
        W = model[1].weight
    else:
        model = nn.Sequential(nn.Conv2d(3, 2, 2), nn.Flatten()).double()
        eye = torch.eye(12, dtype=torch.float64).view(12, 3, 2, 2)
        W = (model(eye) - model(torch.zeros(1, 3, 2, 2, dtype=torch.float64))).T  # rows
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    eps = 0.3
    y = model(x)
    rad = eps * torch.linalg.vector_norm(W, q, dim=1)
    bm = bg.BoundedModule(model, x)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x, bg.LpBall(eps, p), method=method)
        torch.testing.assert_close(lb, y - rad)
        torch.testing.assert_close(ub, y + rad)
    # IBP of a network whose first layer is that one: its interval is exact too
    iv = bm.interval_bounds(x, bg.LpBall(eps, p))
    out = iv[bm.graph.output]
    torch.testing.assert_close(out.lower, y - rad)


@pytest.mark.parametrize("seed", range(4))
def test_l2_ball_bounds_are_never_looser_than_the_linf_ball_of_the_same_radius(seed):
    net = random_residual_net(seed, size=6).double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    bm = bg.BoundedModule(net, x)
    for method in ("ibp", "crown-ibp"):
        l2 = bm.compute_bounds(x, bg.LpBall(0.1, 2, 0.0, 1.0), method=method)
        li = bm.compute_bounds(x, bg.LinfBall(0.1, 0.0, 1.0), method=method)
        assert (l2[0] >= li[0] - 1e-9).all() and (l2[1] <= li[1] + 1e-9).all(), method
        l1 = bm.compute_bounds(x, bg.LpBall(0.1, 1, 0.0, 1.0), method=method)
        assert (l1[0] >= l2[0] - 1e-9).all() and (l1[1] <= l2[1] + 1e-9).all(), method


def test_ibp_over_the_l2_ball_is_much_tighter_than_over_its_box():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.rand(4, 1, 8, 8)
    bm = bg.BoundedModule(model, x)
    lb2, ub2 = bm.compute_bounds(x, bg.LpBall(0.5, 2), method="ibp")
    lbi, ubi = bm.compute_bounds(x, bg.LinfBall(0.5), method="ibp")
    assert (ub2 - lb2).mean() < 0.3 * (ubi - lbi).mean()


def test_l2_bounds_are_differentiable_for_training():
    model = mlp(0)
    x = torch.randn(3, 3, 2, 2)
    bm = bg.BoundedModule(model, x)
    C = bg.margin_spec(torch.tensor([0, 1, 2]), 4)
    for method in ("ibp", "crown-ibp"):
        lb, _ = bm.compute_bounds(x, bg.LpBall(0.3, 2), method=method, C=C, bound_upper=False)
        grads = torch.autograd.grad(lb.sum(), list(model.parameters()), allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("p", [1, 2])
def test_ball_attack_stays_in_the_ball_and_the_domain(p):
    torch.manual_seed(0)
    x = torch.rand(3, 1, 5, 5)
    w = torch.randn(25)
    lo, hi = bg.LpBall(0.4, p, 0.0, 1.0).box(x)
    xb, _ = pgd_minimize(lambda z: z.flatten(1) @ w, lo, hi, steps=30, restarts=3,
                         ball=(x, 0.4, p), generator=torch.Generator().manual_seed(1))
    d = torch.linalg.vector_norm((xb - x).flatten(1), p, dim=1)
    assert (d <= 0.4 + 1e-5).all() and (xb >= 0).all() and (xb <= 1).all()
    assert (d > 0.2).all()  # it moved toward the objective's minimum
    z = torch.randn(4, 7) * 3
    for proj, q in ((_project_l1, 1), (_project_l2, 2)):
        n = torch.linalg.vector_norm(proj(z), q, dim=1)
        torch.testing.assert_close(n, torch.ones(4))
        small = z / (10 * torch.linalg.vector_norm(z, q, dim=1, keepdim=True))
        torch.testing.assert_close(proj(small), small)  # points inside stay where they are


# ------------------------------------------------------------------------ several inputs
class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.side = nn.Linear(4, 3)
        self.head = nn.Linear(3 * 16 + 3, 5)

    def forward(self, image, extra):
        h = torch.relu(self.conv(image * extra[:, :1, None, None]))
        s = torch.tanh(self.side(extra))
        return self.head(torch.cat([h.flatten(1), s], 1))


def two_inputs():
    torch.manual_seed(0)
    m = TwoInputs().double()
    return m, torch.rand(2, 1, 4, 4, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)


def test_a_model_of_two_inputs_traces_with_their_names_and_runs():
    m, a, b = two_inputs()
    bm = bg.BoundedModule(m, (a, b))
    assert bm.graph.input_names == ("image", "extra")
    assert bm.graph.input_shapes == ((1, 4, 4), (4,))
    torch.testing.assert_close(bm(a, b), m(a, b))
    torch.testing.assert_close(bm(a[:1], b[:1]), m(a[:1], b[:1]))


def test_perturbing_no_input_gives_the_forward_pass():
    m, a, b = two_inputs()
    bm = bg.BoundedModule(m, (a, b))
    y = m(a, b)
    for method in METHODS:
        for pert in ({}, {0: None, "extra": None}, (None, None)):
            lb, ub = bm.compute_bounds((a, b), pert, method=method)
            torch.testing.assert_close(lb, y, atol=1e-9, rtol=0)
            torch.testing.assert_close(ub, y, atol=1e-9, rtol=0)


@pytest.mark.parametrize("which", [0, 1])
def test_perturbing_one_input_bounds_samples_varying_only_that_input(which):
    m, a, b = two_inputs()
    bm = bg.BoundedModule(m, (a, b))
    gen = torch.Generator().manual_seed(which)
    n = 300
    if which == 0:
        ptb = {"image": bg.LinfBall(0.2, 0.0, 1.0)}
        va = (a + 0.2 * (2 * torch.rand(n, *a.shape, generator=gen, dtype=a.dtype) - 1))
        va = va.clamp(0, 1).reshape(-1, *a.shape[1:])
        vb = b.repeat(n, 1)
    else:
        ptb = {1: bg.LpBall(0.3, 2)}
        va = a.repeat(n, 1, 1, 1)
        vb = ball_points(b, 0.3, 2, n, gen)
    out = m(va, vb).view(n, *m(a, b).shape)
    for method in METHODS:
        lb, ub = bm.compute_bounds((a, b), ptb, method=method)
        assert (out >= lb - 1e-9).all() and (out <= ub + 1e-9).all(), method
        assert (ub - lb).max() > 0


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("p", [0, 3, "two", -1, None])
def test_p_outside_1_2_inf_is_one_clear_error(p):
    with pytest.raises(InputError, match="p must be 1, 2 or inf"):
        bg.LpBall(0.1, p)


def test_bad_perturbations_get_one_clear_error_each():
    with pytest.raises(InputError, match="eps must be >= 0"):
        bg.LpBall(-0.1, 2)
    m, a, b = two_inputs()
    bm = bg.BoundedModule(m, (a, b))
    with pytest.raises(InputError, match="no input 'mask'.*image"):
        bm.compute_bounds((a, b), {"mask": bg.LinfBall(0.1)})
    with pytest.raises(InputError, match="no input 2"):
        bm.compute_bounds((a, b), {2: bg.LinfBall(0.1)})
    with pytest.raises(InputError, match="say which one"):
        bm.compute_bounds((a, b), bg.LinfBall(0.1))
    with pytest.raises(InputError, match="takes 2 input"):
        bm.compute_bounds(a, {0: bg.LinfBall(0.1)})
    with pytest.raises(InputError, match="different batch sizes"):
        bm.compute_bounds((a, b[:1]), {0: bg.LinfBall(0.1)})
    with pytest.raises(InputError, match="must be a boundgraph"):
        bm.compute_bounds((a, b), {0: 0.1})
    single = bg.BoundedModule(cnn(0), torch.rand(1, 3, 4, 4))
    with pytest.raises(InputError, match="does not broadcast"):
        single.compute_bounds(torch.rand(2, 3, 4, 4), bg.LpBall(torch.ones(5), 2))


def test_training_and_evaluation_run_at_l2():
    from boundgraph.training.evaluate import evaluate
    from boundgraph.training.losses import certified_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    bm = bg.BoundedModule(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(30):
        res = certified_loss(bm, x, y, method="crown-ibp", eps=0.3, beta=1.0, p=2)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        first = first if first is not None else float(res.loss.detach())
    assert float(res.loss.detach()) < first
    rep = evaluate(bm, (x, y), 0.3, norm=2, progress=False, pgd_steps=5)
    assert rep["norm"] == "2"
    assert rep["clean_error"] <= rep["pgd_error"] <= rep["certified_error_crown"]
    inf = evaluate(bm, (x, y), 0.3, progress=False, pgd_steps=5)
    assert inf["norm"] == "inf" and inf["certified_error_ibp"] >= rep["certified_error_ibp"]
