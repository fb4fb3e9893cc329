"""Tests for the model zoo in ``models/`` (plain torch modules, no boundgraph)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import models
from models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    MODELS,
    Normalize,
    get_model,
    normalized,
)

NAMES = [
    "mlp",
    "cnn_3layer",
    "cnn_4layer",
    "cnn7",
    "dm_small",
    "dm_medium",
    "dm_large",
    "resnet_small",
    "densenet_small",
    "vit_small",
    "lstm_rows",
]
SHAPES = {"mnist": (1, 28), "cifar": (3, 32)}
ALLOWED_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Flatten,
    nn.AvgPool2d,
    nn.LayerNorm,  # vit_small (with nn.MultiheadAttention, whose leaf is a Linear)
    nn.LSTM,  # lstm_rows
)


def _seeded(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return get_model(name, **kwargs)


def test_registry_lists_exactly_the_documented_models():
    assert sorted(MODELS) == sorted(NAMES)
    for name in NAMES:
        assert callable(MODELS[name])
        assert getattr(models, name) is MODELS[name]


def test_get_model_unknown_name_raises_value_error_listing_known_names():
    with pytest.raises(ValueError) as info:
        get_model("no_such_model")
    message = str(info.value)
    assert "no_such_model" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_factory_defaults_are_mnist(name):
    net = _seeded(name).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("dataset", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_is_batch_by_classes_for_two_batch_sizes(name, dataset):
    c, s = SHAPES[dataset]
    net = _seeded(name, in_channels=c, in_size=s, num_classes=7).eval()
    with torch.no_grad():
        for batch in (1, 4):
            assert net(torch.rand(batch, c, s, s)).shape == (batch, 7)


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_forward_and_backward_reach_every_parameter(name):
    net = _seeded(name, in_channels=3, in_size=32).train()
    net(torch.rand(3, 3, 32, 32)).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic_and_batch_independent(name):
    net = _seeded(name, in_channels=3, in_size=32).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        y1, y2 = net(x), net(x)
        single = net(x[1:2])
    assert torch.equal(y1, y2)
    torch.testing.assert_close(single, y1[1:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_models_use_only_the_allowed_layer_types(name):
    net = _seeded(name, in_channels=3, in_size=32)
    for mname, mod in net.named_modules():
        if len(list(mod.children())) == 0:
            assert isinstance(mod, ALLOWED_LEAVES), f"{mname}: {type(mod).__name__}"


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_with_dynamic_batch_matches_eager(name):
    net = _seeded(name, in_channels=1, in_size=16).eval()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(net, (torch.rand(3, 1, 16, 16),), dynamic_shapes=({0: batch},))
    exported = ep.module()
    with torch.no_grad():
        for b in (2, 5):
            x = torch.rand(b, 1, 16, 16)
            torch.testing.assert_close(exported(x), net(x), rtol=1e-5, atol=1e-6)


def test_cnn_4layer_matches_documented_layers_and_parameter_count():
    net = _seeded("cnn_4layer")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 16, (4, 4), (2, 2), (1, 1)),
        (16, 32, (4, 4), (2, 2), (1, 1)),
    ]
    assert [(l.in_features, l.out_features) for l in linears] == [(32 * 7 * 7, 100), (100, 10)]
    # 16*1*16+16 + 32*16*16+32 + 1568*100+100 + 100*10+10
    assert sum(p.numel() for p in net.parameters()) == 166406


def test_cnn7_has_documented_widths_strides_and_batchnorm_layout():
    net = _seeded("cnn7", in_channels=3, in_size=32, width=8, linear_size=32)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (8, (3, 3), (1, 1), (1, 1)),
        (8, (3, 3), (1, 1), (1, 1)),
        (16, (3, 3), (2, 2), (1, 1)),
        (16, (3, 3), (1, 1), (1, 1)),
        (16, (3, 3), (1, 1), (1, 1)),
    ]
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(16 * 16 * 16, 32), (32, 10)]
    kinds = [type(m).__name__ for m in net]
    # every conv and the first linear is followed by BN then ReLU; nothing after the last linear
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 5 + [
        "Flatten",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
    ]


def test_cnn7_without_batchnorm_has_no_batchnorm_layers():
    net = _seeded("cnn7", width=8, linear_size=32, bn=False)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.modules())
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 6


@pytest.mark.parametrize(
    ("name", "hidden_widths"),
    [("dm_small", [100]), ("dm_medium", [512, 512]), ("dm_large", [512])],
)
def test_dm_models_have_documented_conv_channels_and_hidden_linears(name, hidden_widths):
    expected_channels = {
        "dm_small": [16, 32],
        "dm_medium": [32, 32, 64, 64],
        "dm_large": [64, 64, 128, 128, 128],
    }[name]
    net = _seeded(name, in_channels=3, in_size=32)
    assert [m.out_channels for m in net if isinstance(m, nn.Conv2d)] == expected_channels
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == hidden_widths + [10]


def test_mlp_hidden_widths_and_in_features_override():
    net = _seeded("mlp", in_features=20, hidden=(8, 4, 3), num_classes=2)
    assert [(l.in_features, l.out_features) for l in net if isinstance(l, nn.Linear)] == [
        (20, 8),
        (8, 4),
        (4, 3),
        (3, 2),
    ]
    assert net(torch.rand(5, 20)).shape == (5, 2)
    assert net(torch.rand(5, 5, 4)).shape == (5, 2)


def test_resnet_small_uses_identity_and_projection_shortcuts():
    net = _seeded("resnet_small")
    blocks = [m for m in net.modules() if isinstance(m, models.PreActBlock)]
    assert len(blocks) == 2
    assert blocks[0].projection is None
    proj = blocks[1].projection
    assert proj is not None and proj.kernel_size == (1, 1) and proj.stride == (2, 2)


def test_densenet_small_concatenates_all_previous_feature_maps():
    net = _seeded("densenet_small", growth=4, num_layers=3)
    block = next(m for m in net.modules() if isinstance(m, models.DenseBlock))
    in_channels = [layer[-1].in_channels for layer in block.layers]
    assert in_channels == [8, 12, 16]
    assert block.out_channels == 8 + 3 * 4
    out = block(torch.rand(2, 8, 5, 5))
    assert out.shape == (2, 20, 5, 5)


@pytest.mark.parametrize("name", ["cnn_4layer", "dm_medium"])
def test_too_small_input_size_raises_value_error_at_construction(name):
    with pytest.raises(ValueError, match="too small"):
        get_model(name, in_size=2)


def test_normalize_computes_per_channel_standardisation_with_constant_buffers():
    norm = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    assert norm.mean.shape == (1, 3, 1, 1) and norm.std.shape == (1, 3, 1, 1)
    assert dict(norm.named_buffers()).keys() == {"mean", "std"}
    assert list(norm.parameters()) == []
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)


def test_normalize_rejects_mismatched_or_nonpositive_std():
    with pytest.raises(ValueError):
        Normalize((0.1, 0.2), (0.3,))
    with pytest.raises(ValueError):
        Normalize((0.1,), (0.0,))


def test_normalized_wraps_model_and_exports_with_dynamic_batch():
    torch.manual_seed(0)
    inner = get_model("cnn_3layer").eval()
    net = normalized(inner, MNIST_MEAN, MNIST_STD).eval()
    assert isinstance(net[0], Normalize) and net[1] is inner
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), inner((x - 0.1307) / 0.3081))
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    y = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(y), net(y))
