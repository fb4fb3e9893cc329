"""Plain convolutional classifiers used throughout the certified-training literature.

All factories take ``in_channels``, ``in_size`` (image height = width) and ``num_classes``,
default to MNIST (1, 28, 10), compute the flattened feature size from ``in_size`` so that
CIFAR-10 (3, 32, 10) works unchanged, and return an ``nn.Sequential`` built only from
``Conv2d``, ``BatchNorm1d/2d``, ``ReLU``, ``Flatten`` and ``Linear``.
"""

from __future__ import annotations

import torch.nn as nn

__all__ = [
    "cnn_3layer",
    "cnn_4layer",
    "cnn7",
    "dm_small",
    "dm_medium",
    "dm_large",
    "conv_out_size",
]


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size of a square convolution/pooling: ``floor((n + 2p - k) / s) + 1``.

    Raises ``ValueError`` when the input is too small to produce at least one output pixel,
    so that factories fail at construction time with a readable message rather than at the
    first forward pass.
    """
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"spatial size {size} is too small for a {kernel}x{kernel} kernel "
            f"with stride {stride} and padding {padding}"
        )
    return out


def _conv_stack(
    in_channels: int,
    in_size: int,
    specs: list[tuple[int, int, int, int]],
    bn: bool = False,
) -> tuple[list[nn.Module], int]:
    """Build ``Conv2d [-> BatchNorm2d] -> ReLU`` for each ``(out_ch, kernel, stride, pad)``.

    Returns the layers and the number of features after flattening the last feature map.
    """
    layers: list[nn.Module] = []
    ch, size = in_channels, in_size
    for out_ch, k, s, p in specs:
        size = conv_out_size(size, k, s, p)
        layers.append(nn.Conv2d(ch, out_ch, kernel_size=k, stride=s, padding=p))
        if bn:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU())
        ch = out_ch
    return layers, ch * size * size


def _head(in_features: int, hidden: list[int], num_classes: int, bn: bool = False) -> list[nn.Module]:
    """``Flatten -> [Linear [-> BatchNorm1d] -> ReLU] * len(hidden) -> Linear(K)``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if bn:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, num_classes))
    return layers


def cnn_3layer(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """Small 3-layer CNN (two convolutions and one linear layer).

    Architecture (ReLU after every convolution)::

        conv(in -> 16, 4x4, stride 2, pad 1) - ReLU
        conv(16 -> 32, 4x4, stride 2, pad 1) - ReLU
        flatten - linear(32 * (in_size/4)^2 -> K)

    It is ``cnn_4layer`` with the 100-unit hidden linear layer removed, i.e. the smallest
    member of the small-CNN family of Zhang et al. 2020, "Towards stable and efficient
    training of verifiably robust neural networks" (CROWN-IBP).  Each stride-2 4x4 conv
    with padding 1 halves even spatial sizes: 28 -> 14 -> 7, 32 -> 16 -> 8.
    """
    convs, feat = _conv_stack(in_channels, in_size, [(16, 4, 2, 1), (32, 4, 2, 1)])
    return nn.Sequential(*convs, *_head(feat, [], num_classes))


def cnn_4layer(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """Small 4-layer CNN of the certified-training literature.

    Architecture::

        conv(in -> 16, 4x4, stride 2, pad 1) - ReLU
        conv(16 -> 32, 4x4, stride 2, pad 1) - ReLU
        flatten - linear(32 * (in_size/4)^2 -> 100) - ReLU - linear(100 -> K)

    From Zhang et al. 2020, "Towards stable and efficient training of verifiably robust
    neural networks" (CROWN-IBP).  Spatial sizes: 28 -> 14 -> 7 (1568 features),
    32 -> 16 -> 8 (2048 features).
    """
    convs, feat = _conv_stack(in_channels, in_size, [(16, 4, 2, 1), (32, 4, 2, 1)])
    return nn.Sequential(*convs, *_head(feat, [100], num_classes))


def cnn7(
    in_channels: int = 1,
    in_size: int = 28,
    num_classes: int = 10,
    width: int = 64,
    linear_size: int = 512,
    bn: bool = True,
) -> nn.Sequential:
    """CNN7, the standard 7-layer CNN of certified training.

    Architecture (all convolutions 3x3 with padding 1)::

        conv(in -> width)                     [BN2d] - ReLU
        conv(width -> width)                  [BN2d] - ReLU
        conv(width -> 2*width, stride 2)      [BN2d] - ReLU
        conv(2*width -> 2*width)              [BN2d] - ReLU
        conv(2*width -> 2*width)              [BN2d] - ReLU
        flatten - linear(2*width * (in_size/2)^2 -> linear_size) [BN1d] - ReLU
        linear(linear_size -> K)

    Bracketed BatchNorm layers are present when ``bn=True`` (the default); there is no
    activation after the last linear layer.  The architecture descends from the large
    CNN of Zhang et al. 2020, "Towards stable and efficient training of verifiably robust
    neural networks"; the BatchNorm variant used here is the CNN7 of Shi et al. 2021,
    "Fast certified robust training with short warmup".  Spatial sizes: 28 -> 14 after
    the stride-2 conv (25088 features at width 64), 32 -> 16 (32768 features).
    """
    w = width
    specs = [(w, 3, 1, 1), (w, 3, 1, 1), (2 * w, 3, 2, 1), (2 * w, 3, 1, 1), (2 * w, 3, 1, 1)]
    convs, feat = _conv_stack(in_channels, in_size, specs, bn=bn)
    return nn.Sequential(*convs, *_head(feat, [linear_size], num_classes, bn=bn))


def dm_small(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """DM-Small from Gowal et al. 2018, "On the effectiveness of interval bound
    propagation for training verifiably robust models".

    Architecture (no padding, i.e. TensorFlow ``VALID`` as in the paper)::

        conv(in -> 16, 4x4, stride 2) - ReLU
        conv(16 -> 32, 4x4, stride 1) - ReLU
        flatten - linear(-> 100) - ReLU - linear(100 -> K)

    Spatial sizes: 28 -> 13 -> 10 (3200 features), 32 -> 15 -> 12 (4608 features).
    """
    convs, feat = _conv_stack(in_channels, in_size, [(16, 4, 2, 0), (32, 4, 1, 0)])
    return nn.Sequential(*convs, *_head(feat, [100], num_classes))


def dm_medium(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """DM-Medium from Gowal et al. 2018, "On the effectiveness of interval bound
    propagation for training verifiably robust models".

    Architecture (no padding, i.e. TensorFlow ``VALID`` as in the paper)::

        conv(in -> 32, 3x3, stride 1) - ReLU
        conv(32 -> 32, 4x4, stride 2) - ReLU
        conv(32 -> 64, 3x3, stride 1) - ReLU
        conv(64 -> 64, 4x4, stride 2) - ReLU
        flatten - linear(-> 512) - ReLU - linear(512 -> 512) - ReLU - linear(512 -> K)

    Spatial sizes: 28 -> 26 -> 12 -> 10 -> 4 (1024 features),
    32 -> 30 -> 14 -> 12 -> 5 (1600 features).  Needs ``in_size >= 16``.
    """
    specs = [(32, 3, 1, 0), (32, 4, 2, 0), (64, 3, 1, 0), (64, 4, 2, 0)]
    convs, feat = _conv_stack(in_channels, in_size, specs)
    return nn.Sequential(*convs, *_head(feat, [512, 512], num_classes))


def dm_large(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> nn.Sequential:
    """DM-Large from Gowal et al. 2018, "On the effectiveness of interval bound
    propagation for training verifiably robust models".

    Architecture (3x3 convolutions with padding 1, i.e. ``SAME``-sized outputs as in the
    paper; the stride-2 conv halves even sizes)::

        conv(in -> 64, stride 1) - ReLU
        conv(64 -> 64, stride 1) - ReLU
        conv(64 -> 128, stride 2) - ReLU
        conv(128 -> 128, stride 1) - ReLU
        conv(128 -> 128, stride 1) - ReLU
        flatten - linear(-> 512) - ReLU - linear(512 -> K)

    Spatial sizes: 28 -> 14 (25088 features), 32 -> 16 (32768 features).
    """
    specs = [(64, 3, 1, 1), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (128, 3, 1, 1)]
    convs, feat = _conv_stack(in_channels, in_size, specs)
    return nn.Sequential(*convs, *_head(feat, [512], num_classes))
