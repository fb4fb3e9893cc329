"""Every model of the zoo traces, reproduces its own forward pass at any batch size, and gets
sound bounds: IBP and CROWN-IBP (on the output and on margins) for every model, full CROWN on
the small ones (tiny inputs; full CROWN on the wide convnets is a benchmark, not a test)."""
import pytest
import torch

import boundgraph as bg
from models import MODELS, get_model
from op_checks import one_thread  # noqa: F401
from oracle import assert_sound

# name -> factory keyword arguments (tiny inputs: the architectures are unchanged)
ZOO = {
    "mlp": dict(in_channels=1, in_size=8),
    "cnn_3layer": dict(in_channels=3, in_size=8),
    "cnn_4layer": dict(in_channels=1, in_size=8),
    "cnn7": dict(in_channels=3, in_size=8),
    "dm_small": dict(in_channels=1, in_size=12),
    "dm_medium": dict(in_channels=3, in_size=16),
    "dm_large": dict(in_channels=1, in_size=8),
    "resnet_small": dict(in_channels=3, in_size=8),
    "densenet_small": dict(in_channels=3, in_size=8),
    "vit_small": dict(in_channels=1, in_size=8),  # four 4x4 patches
    "lstm_rows": dict(in_channels=1, in_size=8),  # eight steps
}
# full CROWN: the small models, and CNN7 at a reduced width
CROWN = {
    "mlp": ("mlp", {}),
    "cnn_3layer": ("cnn_3layer", {}),
    "cnn_4layer": ("cnn_4layer", {}),
    "dm_small": ("dm_small", {}),
    "resnet_small": ("resnet_small", {}),
    "densenet_small": ("densenet_small", {}),
    "cnn7_narrow": ("cnn7", dict(width=8, linear_size=32)),
}
EPS = 2 / 255


def _build(name, **extra):
    torch.manual_seed(0)
    kw = {**ZOO[name], **extra}
    model = get_model(name, num_classes=10, **kw)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial running statistics for BatchNorm layers
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.eval()
    x = torch.rand(3, kw["in_channels"], kw["in_size"], kw["in_size"])
    return model, x


def test_the_zoo_is_covered():
    assert sorted(ZOO) == sorted(MODELS)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_traces_reproduces_its_forward_and_ibp_crown_ibp_are_sound(name):
    model, x = _build(name)
    bm = bg.BoundedModule(model, x[:2])
    ptb = bg.LinfBall(EPS, 0.0, 1.0)
    for batch in (1, 3):  # traced once, any batch size
        xb = x[:batch]
        with torch.no_grad():
            torch.testing.assert_close(bm(xb), model(xb), rtol=1e-5, atol=1e-5)
        lo, hi = ptb.box(xb)
        widths = {}
        for method in ("ibp", "crown-ibp"):
            lb, ub = bm.compute_bounds(xb, ptb, method=method)
            assert lb.shape == ub.shape == (batch, 10)
            assert_sound(model, lo, hi, lb, ub, n=16)
            widths[method] = (ub - lb).mean().item()
        assert widths["crown-ibp"] <= widths["ibp"] + 1e-6
    # margins of the predicted class, as used in certified training and verification
    y = model(x).argmax(1)
    C = bg.margin_spec(y, 10)
    lo, hi = ptb.box(x)
    lb, ub = bm.compute_bounds(x, ptb, method="crown-ibp", C=C)
    assert lb.shape == ub.shape == (3, 9)
    f = lambda z: torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // 3, 1, 1), model(z))  # noqa
    assert_sound(f, lo, hi, lb, ub, n=16)


@pytest.mark.parametrize("key", sorted(CROWN))
def test_full_crown_is_sound_and_tighter_than_ibp_on_small_zoo_models(key):
    name, extra = CROWN[key]
    model, x = _build(name, **extra)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(EPS, 0.0, 1.0)
    lo, hi = ptb.box(x)
    lb, ub = bm.compute_bounds(x, ptb, method="crown")
    assert_sound(model, lo, hi, lb, ub, n=16)
    ilb, iub = bm.compute_bounds(x, ptb, method="ibp")
    assert (ub - lb).mean() < (iub - ilb).mean()
