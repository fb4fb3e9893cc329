"""A small pre-activation residual network."""

from __future__ import annotations

import torch
import torch.nn as nn

from .cnn import conv_out_size

__all__ = ["PreActBlock", "resnet_small"]


def _pre_activation(channels: int, bn: bool) -> nn.Sequential:
    """``[BatchNorm2d] -> ReLU``."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if bn else nn.Sequential(nn.ReLU())


class PreActBlock(nn.Module):
    """Pre-activation basic residual block (He et al. 2016, "Identity mappings in deep
    residual networks")::

        a   = ReLU(BN(x))
        out = conv3x3(ReLU(BN(conv3x3(a, stride))))  + shortcut

    ``shortcut`` is ``x`` itself when the shape is unchanged, otherwise a 1x1 projection
    convolution (with the block's stride) applied to the pre-activated input ``a``, as in
    the paper.  With ``bn=False`` the BatchNorm layers are left out.  The residual addition
    is a plain ``+``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bn: bool = True) -> None:
        super().__init__()
        self.pre = _pre_activation(in_channels, bn)
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            *_pre_activation(out_channels, bn),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
        )
        self.projection: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        shortcut = x if self.projection is None else self.projection(a)
        return self.branch(a) + shortcut


def resnet_small(
    in_channels: int = 1,
    in_size: int = 28,
    num_classes: int = 10,
    width: int = 16,
    bn: bool = True,
) -> nn.Sequential:
    """Small pre-activation ResNet after He et al. 2016, "Identity mappings in deep
    residual networks".

    Architecture (3x3 convolutions with padding 1)::

        conv(in -> width)                                          stem
        PreActBlock(width -> width, stride 1)                      identity shortcut
        PreActBlock(width -> 2*width, stride 2)                    1x1 projection shortcut
        [BN2d] - ReLU - flatten - linear(2*width * (in_size/2)^2 -> K)

    BatchNorm layers are present when ``bn=True``.  Spatial sizes: 28 -> 14
    (6272 features at width 16), 32 -> 16 (8192 features).
    """
    size = conv_out_size(in_size, 3, 1, 1)
    size = conv_out_size(size, 3, 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1),
        PreActBlock(width, width, stride=1, bn=bn),
        PreActBlock(width, 2 * width, stride=2, bn=bn),
        *_pre_activation(2 * width, bn),
        nn.Flatten(),
        nn.Linear(2 * width * size * size, num_classes),
    )
