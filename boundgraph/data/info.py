"""Data set metadata: :class:`DatasetInfo` per set (shape, classes, mean, std), the accepted
names and aliases, the two errors every loader raises, and the label check the readers share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetNotFoundError(FileNotFoundError):
    """A data set's folder or files are missing; the message says what to put where."""


class DataFormatError(ValueError):
    """A data file exists but is malformed (bad magic number, truncated, wrong shape ...)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set.

    Attributes:
        channels: number of image channels C.
        size: image height = width.
        num_classes: number of labels.
        mean: per-channel mean of the training images (values in [0, 1]).
        std: per-channel standard deviation of the training images.

    Fields can also be read as ``info["mean"]``.
    """

    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __getitem__(self, key: str):
        """Dictionary-style access to a field (``info["std"]``)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        return (self.channels, self.size, self.size)


_MNIST_INFO = DatasetInfo(1, 28, 10, (0.1307,), (0.3081,))
_FASHION_INFO = DatasetInfo(1, 28, 10, (0.2860,), (0.3530,))
_CIFAR10_INFO = DatasetInfo(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))

#: Facts per data set name (channels, size, num_classes, mean, std).
DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist": _MNIST_INFO,
    "fashion-mnist": _FASHION_INFO,
    "cifar10": _CIFAR10_INFO,
    "mnist-test100": _MNIST_INFO,
    "cifar10-test100": _CIFAR10_INFO,
}

#: The names :func:`load_dataset` accepts (aliases such as "cifar-10" or "fashion_mnist" too).
DATASET_NAMES: tuple[str, ...] = tuple(DATASET_INFO)

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-10-test100": "cifar10-test100",
    "mnist-test-100": "mnist-test100",
    "cifar10-test-100": "cifar10-test100",
}


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASET_INFO:
        raise ValueError(
            f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}"
        )
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of a data set name (aliases accepted)."""
    return DATASET_INFO[_canonical_name(name)]


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataFormatError(f"{source}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{source}: labels must lie in [0, {num_classes - 1}], found "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return labels.astype(np.int64)
