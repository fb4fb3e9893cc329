"""TAPS and STAPS (Mao et al. 2023): the cut reproduces the model's forward on fixed and random
architectures, the latent attack finds the exact minimum of a linear head and never goes below
a sound bound, the gradient link hands each point's gradient to the bounds it touches, a few
steps reduce the loss, and a bad split gets one clear error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import boundgraph as bg
from boundgraph.errors import InputError
from boundgraph.spec import margin_spec
from boundgraph.training import fit
from boundgraph.training.taps import (box_link, head_forward, latent_points, taps_split)

from random_nets import random_residual_net
from test_trainer import EPS, blobs
from test_training_mixed import loss_over_steps


def deep_mlp(dim=8, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, classes))


def _cut_reproduces_forward(model, x, split=None):
    bm = bg.BoundedModule(model, x[:2])
    cut = taps_split(bm.graph, split)
    env = bm.graph.forward(x, model, record=True)
    out = head_forward(bm.graph, model, cut, env[cut.latent])
    torch.testing.assert_close(out, model(x))
    return bm, cut


def test_the_default_cut_is_before_the_last_two_linear_layers_and_reproduces_the_forward():
    x = torch.rand(5, 8)
    bm, cut = _cut_reproduces_forward(deep_mlp(), x)
    # head: Linear(16, 16), ReLU, Linear(16, 3); the latent is the first ReLU's output
    assert len(cut.head) == 3 and bm.graph.nodes[cut.latent].module == "1"
    bm, cut = _cut_reproduces_forward(deep_mlp(), x, split="4")
    assert len(cut.head) == 1


@pytest.mark.parametrize("seed", range(6))
def test_the_cut_reproduces_the_forward_of_random_residual_networks(seed):
    net = random_residual_net(seed)
    x = torch.rand(4, 2, 8, 8)
    _cut_reproduces_forward(net, x)
    _cut_reproduces_forward(net, x, split="head")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(8, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(h + self.block(h))


def test_a_cut_inside_a_residual_block_is_refused_with_one_clear_error():
    x = torch.rand(4, 8)
    bm = bg.BoundedModule(_Residual(), x[:2])
    with pytest.raises(InputError, match="does not separate the model"):
        taps_split(bm.graph, "block.2")  # the skip connection bypasses the cut
    # a cut where the skip connection starts, or after the join, separates it
    _cut_reproduces_forward(_Residual(), x, split="block")
    _cut_reproduces_forward(_Residual(), x)


def test_a_split_name_not_in_the_model_gets_one_clear_error():
    bm = bg.BoundedModule(deep_mlp(), torch.rand(2, 8))
    with pytest.raises(InputError, match="neither a module nor a node"):
        taps_split(bm.graph, "encoder.fc9")
    with pytest.raises(InputError, match="no feature extractor"):
        taps_split(bm.graph, "0")
    two = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(InputError, match="no feature extractor"):
        taps_split(bg.BoundedModule(two, torch.rand(2, 8)).graph)


def test_the_latent_attack_finds_the_exact_minimum_of_a_linear_head():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    lo = torch.rand(4, 5, generator=g)
    hi = lo + torch.rand(4, 5, generator=g)
    y = torch.tensor([0, 1, 2, 1])
    C = margin_spec(y, 3)
    A = C @ W  # (B, S, 5): the margin rows are linear in the point
    exact = (torch.where(A > 0, lo[:, None], hi[:, None]) * A).sum(-1) + C @ b
    for steps in (3, 4, 8):
        pts = latent_points(lambda z: z @ W.T + b, lo, hi, C, steps=steps)
        assert ((pts >= lo[:, None] - 1e-6) & (pts <= hi[:, None] + 1e-6)).all()
        est = (C * (pts @ W.T + b)).sum(-1)
        torch.testing.assert_close(est, exact)


def test_the_estimated_margins_lie_between_sound_bounds_and_sampled_margins():
    torch.manual_seed(1)
    model = deep_mlp()
    x, y = torch.rand(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    bm = bg.BoundedModule(model, x[:2])
    cut = taps_split(bm.graph)
    C = margin_spec(y, 3)
    ball = bg.LinfBall(0.1, lower=0, upper=1)
    _, _, iv = bm.compute_bounds(x, ball, method="ibp", return_intermediate=True)
    lo, hi = iv[cut.latent]
    head = lambda z: head_forward(bm.graph, model, cut, z)  # noqa: E731
    pts = latent_points(head, lo, hi, C, steps=20)
    est = (C * head(pts.reshape(-1, 16)).reshape(6, 2, 3)).sum(-1)
    # a sound bound of the head over the latent box never exceeds the estimate ...
    sub = nn.Sequential(*list(model)[2:])
    sound = bg.BoundedModule(sub, lo[:2]).compute_bounds(
        (lo + hi) / 2, bg.Box(lo, hi), method="crown", C=C, bound_upper=False)[0]
    assert (sound <= est + 1e-5).all()
    # ... and the estimate is better on average than the best of 2000 random points of the
    # box, and never much worse (PGD is a local search)
    r = lo[:, None] + (hi - lo)[:, None] * torch.rand(6, 2000, 16)
    sampled = (C[:, None] * head(r.reshape(-1, 16)).reshape(6, 2000, 1, 3)).sum(-1)
    sampled = sampled.min(1).values
    assert est.mean() < sampled.mean() and (est <= sampled + 0.01).all()


def test_the_gradient_link_hands_each_points_gradient_to_the_bounds_it_touches():
    lo = torch.tensor([[0.0, 0.0, 0.0, 0.5]], requires_grad=True)
    hi = torch.tensor([[1.0, 1.0, 1.0, 0.5]], requires_grad=True)
    # on the upper bound, on the lower bound, in the middle, in a box of width 0
    pts = torch.tensor([[[1.0, 0.0, 0.5, 0.5]]])
    out = box_link(lo, hi, pts)
    torch.testing.assert_close(out, pts)
    out.sum().backward()
    torch.testing.assert_close(hi.grad, torch.tensor([[1.0, 0.0, 0.0, 0.5]]))
    torch.testing.assert_close(lo.grad, torch.tensor([[0.0, 1.0, 0.0, 0.5]]))
    # a quarter of the width from the upper bound: half the gradient (c = 0.5)
    lo2, hi2 = torch.zeros(1, 1, requires_grad=True), torch.ones(1, 1, requires_grad=True)
    box_link(lo2, hi2, torch.tensor([[[0.75]]])).sum().backward()
    torch.testing.assert_close(hi2.grad, torch.tensor([[0.5]]))
    torch.testing.assert_close(lo2.grad, torch.tensor([[0.0]]))


@pytest.mark.parametrize("method", ["taps", "staps"])
def test_a_few_steps_of_taps_and_staps_reduce_their_loss(method):
    x, y = blobs(n=64).tensors
    losses, res = loss_over_steps(deep_mlp(), x, y, method)
    assert losses[-1] < 0.5 * losses[0], losses
    # the margins reported for the certified count are IBP's, sound over the region
    assert res.margins.shape == (64, 2)


def test_taps_trains_from_the_api_with_a_named_split_and_refuses_a_bad_one(tmp_path):
    data = blobs()
    res = fit(deep_mlp(), data, method="taps", eps=EPS, epochs=2, batch_size=64, lr=1e-2,
              warmup_epochs=0, eps_ramp_epochs=1, pgd_steps=2, attack_steps=3,
              taps_split="2", progress=False, out_dir=tmp_path / "run")
    assert len(res.history) == 2 and res.config.taps_split == "2"
    with pytest.raises(InputError, match="neither a module nor a node"):
        fit(deep_mlp(), data, method="taps", eps=EPS, epochs=1, taps_split="fc9",
            progress=False)
    with pytest.raises(InputError, match="defined for l-inf"):
        fit(deep_mlp(), data, method="staps", norm="2", eps=EPS, epochs=1, progress=False)


def test_the_cli_trains_with_taps_and_rejects_a_bad_split_with_one_line(tmp_path, capsys):
    from boundgraph.cli import main

    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--method", "taps",
                 "--split", "nowhere", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "neither a module nor a node" in err and len(err.splitlines()) == 1
