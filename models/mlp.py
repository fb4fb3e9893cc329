"""Fully connected (multi-layer perceptron) classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

__all__ = ["mlp"]


def mlp(
    in_channels: int = 1,
    in_size: int = 28,
    num_classes: int = 10,
    hidden: Sequence[int] = (256, 256),
    in_features: int | None = None,
) -> nn.Sequential:
    """Multi-layer perceptron: ``Flatten -> [Linear -> ReLU] * len(hidden) -> Linear(K)``.

    The input is an image batch of shape ``(B, in_channels, in_size, in_size)`` (or any
    tensor whose trailing dimensions multiply to ``in_features``); it is flattened to
    ``(B, in_features)`` where ``in_features`` defaults to ``in_channels * in_size ** 2``.
    Each entry of ``hidden`` adds a ``Linear`` layer of that width followed by ``ReLU``; the
    final ``Linear`` maps to ``num_classes`` logits with no activation.

    Defaults describe MNIST (1x28x28, 10 classes) with two hidden layers of 256 units.
    """
    if in_features is None:
        in_features = in_channels * in_size * in_size
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
