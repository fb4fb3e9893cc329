"""Every method's bounds contain every point of the input set (sampled corners, uniform points
and PGD toward each bound), on fixed and random architectures, with and without the domain
clip, for the output itself and for margin specifications."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from oracle import assert_sound

METHODS = ["ibp", "crown-ibp", "crown", "alpha-crown"]


class Normalised(nn.Module):
    """Normalisation with buffers, functional relu, tensor-method relu, view, residual add."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.2, 0.4]).view(1, 2, 1, 1))
        self.register_buffer("std", torch.tensor([0.3, 0.5]).view(1, 2, 1, 1))
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Sequential(nn.Sequential(nn.Linear(4 * 3 * 3, 12), nn.ReLU()), nn.Dropout(0.2),
                                nn.Identity(), nn.Linear(12, 5))

    def forward(self, x):
        x = (x - self.mean) / self.std
        h = F.relu(self.bn(self.conv(x)))
        h = h + torch.relu(self.conv2(h)) * 0.5
        h = self.pool(h).relu()
        return self.fc(h.view(h.shape[0], -1))


def _randomize_bn(model, g):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))


def fixed_models():
    g = torch.Generator().manual_seed(1)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 6, 2, dilation=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 2 * 2, 5))
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.ReLU(),
                            nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(),
                            nn.Flatten(), nn.LazyLinear(3))
    norm = Normalised()
    _randomize_bn(norm, g)
    return {"mlp": (mlp, (2, 2, 3)), "cnn": (cnn, (2, 6, 6)), "grouped": (grouped, (2, 6, 6)),
            "normalised_residual": (norm, (2, 6, 6))}


def _prep(name):
    model, shape = fixed_models()[name]
    x = torch.rand(3, *shape)
    model(x)  # materialise lazy layers
    return model.eval(), x


@pytest.mark.parametrize("name", ["mlp", "cnn", "grouped", "normalised_residual"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("clip", [True, False])
def test_bounds_contain_sampled_and_attacked_outputs(name, method, clip):
    model, x = _prep(name)
    bm = bg.BoundedModule(model, x)
    eps = 0.1
    ptb = bg.LinfBall(eps, 0.0, 1.0) if clip else bg.LinfBall(eps)
    lb, ub = bm.compute_bounds(x, ptb, method=method)
    lo, hi = ptb.box(x)
    assert_sound(model, lo, hi, lb, ub)


@pytest.mark.parametrize("name", ["cnn", "normalised_residual"])
@pytest.mark.parametrize("method", METHODS)
def test_margin_bounds_contain_attacked_margins(name, method):
    model, x = _prep(name)
    bm = bg.BoundedModule(model, x)
    y = model(x).argmax(1)
    K = model(x).shape[1]
    C = bg.margin_spec(y, K)
    ptb = bg.LinfBall(0.05, 0.0, 1.0)
    lb, ub = bm.compute_bounds(x, ptb, method=method, C=C)
    assert lb.shape == (3, K - 1)
    lo, hi = ptb.box(x)
    f = lambda z: torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // 3, 1, 1), model(z))
    assert_sound(f, lo, hi, lb, ub)


def random_network(seed):
    """A random DAG of conv/linear/relu/add/avgpool/batchnorm layers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda n: int(torch.randint(0, n, (1,), generator=g))  # noqa: E731

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c = 2 + r(3)
            self.c1 = nn.Conv2d(2, c, 3, padding=1)
            self.c2 = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)
            self.use_pool, self.use_res, self.use_bn = r(2), r(2), r(2)
            side = 3 if self.use_pool else 6
            self.fc1 = nn.Linear(c * side * side, 8 + r(8))
            self.fc2 = nn.Linear(self.fc1.out_features, 3)
            self.fc3 = nn.Linear(self.fc1.out_features, 3)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * (0.5 + r(3) * 0.5)
            _randomize_bn(self, g)

        def forward(self, x):
            h = torch.relu(self.c1(x))
            z = self.c2(h)
            if self.use_bn:
                z = self.bn(z)
            h = h + z.relu() if self.use_res else z.relu()
            if self.use_pool:
                h = F.avg_pool2d(h, 2)
            h = self.fc1(h.flatten(1)).relu()
            return self.fc2(h) - 0.5 * self.fc3(h)

    return Net().eval()


@pytest.mark.parametrize("seed", range(6))
def test_random_architectures_are_sound_for_every_method(seed):
    model = random_network(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 2, 6, 6, generator=g)
    bm = bg.BoundedModule(model, x)
    eps = [0.01, 0.1, 0.5][seed % 3]
    ptb = bg.LinfBall(eps, 0.0, 1.0) if seed % 2 else bg.LinfBall(eps)
    lo, hi = ptb.box(x)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x, ptb, method=method)
        assert_sound(model, lo, hi, lb, ub, n=32)


def test_box_perturbation_is_sound_and_per_channel_eps_works():
    model, x = _prep("normalised_residual")
    bm = bg.BoundedModule(model, x)
    eps = torch.tensor([0.02, 0.2]).view(2, 1, 1)
    ptb = bg.LinfBall(eps, 0.0, 1.0)
    lo, hi = ptb.box(x)
    assert torch.allclose((hi - lo)[:, 0].max(), torch.tensor(0.04)) or (hi - lo)[:, 0].max() <= 0.04 + 1e-6
    box = bg.Box(lo, hi)
    for method in METHODS:
        lb1, ub1 = bm.compute_bounds(x, ptb, method=method)
        lb2, ub2 = bm.compute_bounds(x, box, method=method)
        assert torch.allclose(lb1, lb2) and torch.allclose(ub1, ub2)
        assert_sound(model, lo, hi, lb1, ub1, pgd=False)
