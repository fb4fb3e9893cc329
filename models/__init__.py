"""Model zoo: plain ``torch.nn.Module`` architectures used in certified-robustness work.

Every factory takes keyword arguments ``in_channels``, ``in_size`` (image height = width)
and ``num_classes``, defaulting to MNIST (1, 28, 10); pass ``in_channels=3, in_size=32``
for CIFAR-10.  The vision models are built from ``Conv2d``, ``Linear``, ``BatchNorm1d/2d``,
``ReLU``, ``Flatten``, ``AvgPool2d``, ``+`` and ``torch.cat``; ``vit_small`` adds
``nn.MultiheadAttention`` and ``nn.LayerNorm``, ``lstm_rows`` an ``nn.LSTM``. All accept any
batch size and export with ``torch.export`` using a dynamic batch dimension.  This package does not depend on
``boundgraph``.

>>> from models import get_model
>>> net = get_model("cnn7", in_channels=3, in_size=32, num_classes=10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .cnn import cnn7, cnn_3layer, cnn_4layer, dm_large, dm_medium, dm_small
from .densenet import DenseBlock, densenet_small
from .mlp import mlp
from .resnet import PreActBlock, resnet_small
from .sequence import lstm_rows, vit_small

__all__ = [
    "MODELS",
    "get_model",
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
    "PreActBlock",
    "DenseBlock",
    "Normalize",
    "normalized",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn_3layer": cnn_3layer,
    "cnn_4layer": cnn_4layer,
    "cnn7": cnn7,
    "dm_small": dm_small,
    "dm_medium": dm_medium,
    "dm_large": dm_large,
    "resnet_small": resnet_small,
    "densenet_small": densenet_small,
    "vit_small": vit_small,
    "lstm_rows": lstm_rows,
}


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` in :data:`MODELS` with ``kwargs``.

    Raises ``ValueError`` listing the known names when ``name`` is not registered.
    """
    try:
        factory = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
    return factory(**kwargs)


MNIST_MEAN: tuple[float, ...] = (0.1307,)
MNIST_STD: tuple[float, ...] = (0.3081,)
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """Per-channel input normalisation ``(x - mean) / std``.

    ``mean`` and ``std`` are stored as constant (non-trainable) buffers of shape
    ``(1, C, 1, 1)`` so they move with ``.to()`` and are saved in the ``state_dict``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if bool((std_t <= 0).any()):
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def normalized(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """Return ``nn.Sequential(Normalize(mean, std), model)`` so the model takes raw
    ``[0, 1]`` inputs (e.g. ``normalized(net, CIFAR10_MEAN, CIFAR10_STD)``)."""
    return nn.Sequential(Normalize(mean, std), model)
