"""IBP initialisation (Shi et al. 2021) and residual detection from the bound graph."""
import math

import pytest
import torch
from torch import nn

import boundgraph as bg
import models
from boundgraph.training.init import (ibp_init, nodes_after_residual, residual_adds,
                                      weighted_nodes)


def _radius_ratio(bm, x, eps=0.01):
    """mean IBP radius of the output (last layer) / mean radius of the input box."""
    iv = bm.interval_bounds(x, bg.LinfBall(eps, lower=0, upper=1))
    r0 = iv[bm.graph.input].radius.mean()
    return float(iv[bm.graph.output].radius.mean() / r0)


def test_ibp_init_keeps_cnn7_radius_at_input_scale_where_default_init_explodes():
    torch.manual_seed(0)
    net = models.get_model("cnn7").eval()
    x = torch.rand(4, 1, 28, 28)
    bm = bg.BoundedModule(net, x)
    with torch.no_grad():
        default = _radius_ratio(bm, x)
        ibp_init(bm, generator=torch.Generator().manual_seed(0))
        after = _radius_ratio(bm, x)
    assert default > 1e4, default  # orders of magnitude past the input radius
    assert after < 30, after  # a small factor of it
    assert default / after > 1e3


def test_ibp_init_uses_sigma_sqrt_2pi_over_fan_in_and_keeps_the_last_layer():
    torch.manual_seed(0)
    net = models.get_model("cnn_4layer")
    last_before = net[-1].weight.detach().clone()
    bm = bg.BoundedModule(net, torch.rand(2, 1, 28, 28))
    report = ibp_init(bm, generator=torch.Generator().manual_seed(3))
    assert set(report["initialised"]) == {"0.weight", "2.weight", "5.weight"}
    for name, fan_in in (("0.weight", 16), ("2.weight", 16 * 16), ("5.weight", 1568)):
        w = net.get_parameter(name)
        sigma = math.sqrt(2 * math.pi) / fan_in
        assert report["initialised"][name] == pytest.approx(sigma)
        assert float(w.detach().std()) == pytest.approx(sigma, rel=0.1)
    assert torch.equal(net[-1].weight, last_before)
    assert report["halved"] == []


def test_ibp_init_is_reproducible_with_a_generator():
    nets = [models.get_model("cnn_3layer") for _ in range(2)]
    for net in nets:
        ibp_init(bg.BoundedModule(net, torch.rand(2, 1, 28, 28)),
                 generator=torch.Generator().manual_seed(7))
    assert torch.equal(nets[0][0].weight, nets[1][0].weight)


class _Residual(nn.Module):
    """Two residual blocks with module names that say nothing about residuals, and an add of
    a constant that is not a residual connection."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)
        self.register_buffer("shift", torch.ones(8))

    def forward(self, x):
        h = torch.relu(self.a(x)) + self.shift  # not residual: one input is a constant
        h = self.b(h) + h  # residual
        h = torch.relu(h)
        h = torch.relu(self.c(h)) + h  # residual
        return self.head(h)


def test_residual_adds_are_found_from_the_graph_and_the_next_layers_halved():
    torch.manual_seed(0)
    net = _Residual()
    bm = bg.BoundedModule(net, torch.rand(2, 8))
    g = bm.graph
    adds = residual_adds(g)
    assert len(adds) == 2
    after = nodes_after_residual(g)
    targets = [g.nodes[g.nodes[n].inputs[1]].target for n in after]
    assert targets == ["c.weight", "head.weight"]
    head_before = net.head.weight.detach().clone()
    report = ibp_init(bm, generator=torch.Generator().manual_seed(0))
    assert set(report["initialised"]) == {"a.weight", "b.weight", "c.weight"}
    assert report["halved"] == ["c.weight", "head.weight"]
    torch.testing.assert_close(net.head.weight, head_before / 2)
    assert len(weighted_nodes(g)) == 4


def test_resnet_small_halves_layers_after_its_residual_adds():
    net = models.get_model("resnet_small")
    bm = bg.BoundedModule(net, torch.rand(2, 1, 28, 28))
    assert len(residual_adds(bm.graph)) == 2
    report = ibp_init(bm, generator=torch.Generator().manual_seed(0))
    assert set(report["halved"]) == {"2.projection.weight", "2.branch.0.weight", "6.weight"}
