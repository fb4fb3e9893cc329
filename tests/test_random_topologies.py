"""Soundness on random residual topologies: additions and concatenations joining branches of
different depths, each branch a random mix of convolutions, BatchNorm, pooling and activations
(see ``random_nets.py``), for every method, with and without the domain clip. Full CROWN's
spatial windows must give the same intermediate bounds as dense coefficients on all of them."""
import pytest
import torch

import boundgraph as bg
from boundgraph.engines.backward import crown_intermediate
from op_checks import one_thread  # noqa: F401
from oracle import assert_sound
from random_nets import describe, random_residual_net

METHODS = ["ibp", "crown-ibp", "crown", "alpha-crown"]
SEEDS = range(10)


def _case(seed):
    model = random_residual_net(seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(2, 2, 8, 8, generator=g)
    eps = [0.02, 0.1, 0.3][seed % 3]
    ptb = bg.LinfBall(eps, 0.0, 1.0) if seed % 2 else bg.LinfBall(eps)
    return model, x, ptb


@pytest.mark.parametrize("seed", SEEDS)
def test_random_residual_topologies_are_sound_for_every_method(seed):
    model, x, ptb = _case(seed)
    bm = bg.BoundedModule(model, x)
    with torch.no_grad():
        torch.testing.assert_close(bm(x), model(x), rtol=1e-5, atol=1e-6)
    lo, hi = ptb.box(x)
    y = model(x).argmax(1)
    C = bg.margin_spec(y, 3)
    margins = lambda z: torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // 2, 1, 1), model(z))  # noqa
    for method in METHODS:
        kw = {"alpha_steps": 3} if method == "alpha-crown" else {}  # any slopes are sound
        try:
            lb, ub = bm.compute_bounds(x, ptb, method=method, **kw)
            assert_sound(model, lo, hi, lb, ub, n=32)
            lb, ub = bm.compute_bounds(x, ptb, method=method, C=C, **kw)
            assert_sound(margins, lo, hi, lb, ub, n=16, pgd=False)
        except Exception as e:
            raise AssertionError(f"{method} on {describe(model)}: {e}") from e


@pytest.mark.parametrize("seed", SEEDS)
def test_windowed_crown_equals_dense_crown_on_random_topologies(seed):
    # in float64: relaxations make discrete choices (which line, which max-pool input), which
    # a float32 rounding difference between the two summation orders can flip
    # Max-pooling over ReLU outputs meets exact ties (inactive inputs are all [0, 0]), where a
    # last-bit difference from another summation order changes which input dominates; both
    # choices are sound, so with max-pooling only the default budget is compared.
    model, x, ptb = _case(seed)
    model, x = model.double(), x.double()
    bm = bg.BoundedModule(model, x)
    pools = any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    with torch.no_grad():
        for budget in ((2 ** 20,) if pools else (2 ** 10, 2 ** 20)):  # small: many small tiles
            bw = crown_intermediate(bm._context(x, ptb, {"max_elements": budget}))
            bd = crown_intermediate(bm._context(x, ptb, {"max_elements": budget,
                                                         "windows": False}))
            for name in bd:
                torch.testing.assert_close(bw[name].lower, bd[name].lower, atol=1e-5, rtol=1e-5,
                                           msg=lambda m: f"{name}: {m}\n{describe(model)}")
                torch.testing.assert_close(bw[name].upper, bd[name].upper, atol=1e-5, rtol=1e-5,
                                           msg=lambda m: f"{name}: {m}\n{describe(model)}")


def test_residual_block_with_batchnorm_has_crown_bounds():
    """The ResNet block that crashed full CROWN (windowed coefficients from the residual add
    meeting dense ones from the BatchNorm branch)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.a, s.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            s.bn1, s.bn2 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
            s.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16, 16), nn.ReLU(),
                                   nn.Linear(16, 10))

        def forward(s, x):
            h = F.relu(s.bn1(s.a(x)))
            h = F.relu(h + s.bn2(s.b(h)))
            return s.head(F.avg_pool2d(h, 2))

    torch.manual_seed(0)
    m, x = Block().eval(), torch.rand(4, 3, 8, 8)
    ptb = bg.LinfBall(0.05, lower=0., upper=1.)
    bm = bg.BoundedModule(m, x)
    lo, hi = ptb.box(x)
    for method in ("crown", "alpha-crown"):
        lb, ub = bm.compute_bounds(x, ptb, method=method)
        assert_sound(m, lo, hi, lb, ub, n=32)
