"""A small DenseNet-style network."""

from __future__ import annotations

import torch
import torch.nn as nn

from .cnn import conv_out_size

__all__ = ["DenseBlock", "densenet_small"]


def _bn_relu(channels: int, bn: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()] if bn else [nn.ReLU()]


class DenseBlock(nn.Module):
    """Dense block (Huang et al. 2017, "Densely connected convolutional networks").

    Layer ``i`` is ``[BN2d] - ReLU - conv3x3(in_channels + i*growth -> growth, pad 1)`` and
    consumes ``torch.cat`` (along channels) of the block input and the outputs of all
    previous layers.  The block returns the concatenation of the input and all layer
    outputs, i.e. ``in_channels + num_layers * growth`` channels at unchanged spatial size.
    """

    def __init__(self, in_channels: int, growth: int, num_layers: int, bn: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                *_bn_relu(in_channels + i * growth, bn),
                nn.Conv2d(in_channels + i * growth, growth, kernel_size=3, padding=1),
            )
            for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            inp = features[0] if len(features) == 1 else torch.cat(features, dim=1)
            features.append(layer(inp))
        return torch.cat(features, dim=1)


def densenet_small(
    in_channels: int = 1,
    in_size: int = 28,
    num_classes: int = 10,
    growth: int = 8,
    num_layers: int = 3,
    bn: bool = True,
) -> nn.Sequential:
    """Small DenseNet-style classifier after Huang et al. 2017, "Densely connected
    convolutional networks".

    Architecture (``C = 2*growth + num_layers*growth``)::

        conv(in -> 2*growth, 3x3, pad 1)                                 stem
        DenseBlock(num_layers layers, growth rate `growth`)              torch.cat along channels
        [BN2d] - ReLU - conv(C -> C//2, 1x1) - AvgPool2d(2)              transition
        [BN2d] - ReLU - flatten - linear(C//2 * (in_size//2)^2 -> K)

    BatchNorm layers are present when ``bn=True``.  With the defaults (growth 8, 3 layers)
    the block outputs 40 channels and the transition 20; spatial sizes 28 -> 14
    (3920 features), 32 -> 16 (5120 features).
    """
    stem_channels = 2 * growth
    block = DenseBlock(stem_channels, growth, num_layers, bn=bn)
    c = block.out_channels
    t = c // 2
    size = conv_out_size(in_size, 2, 2, 0)
    return nn.Sequential(
        nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1),
        block,
        *_bn_relu(c, bn),
        nn.Conv2d(c, t, kernel_size=1),
        nn.AvgPool2d(2),
        *_bn_relu(t, bn),
        nn.Flatten(),
        nn.Linear(t * size * size, num_classes),
    )
