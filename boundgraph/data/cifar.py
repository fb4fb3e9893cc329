"""CIFAR-10: the python-pickle batches ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``
of ``cifar-10-batches-py``, read with the restricted unpickler."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .folders import _search_folders, _where_text
from .info import DataFormatError, DatasetNotFoundError, _check_labels
from .pickles import _load_pickle

# --------------------------------------------------------------------------------------------
# CIFAR-10 python batches.

_CIFAR_FILES = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _load_pickle(path, encoding="bytes")
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict batch, got {type(obj).__name__}")

    def get(key: str):
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise DataFormatError(f"{path}: batch has no {key!r} entry")

    data = np.asarray(get("data"))
    labels = np.asarray(get("labels"))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: expected data of shape (N, 3072), got {data.shape}")
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > 255 or not np.all(data == np.rint(data))):
            raise DataFormatError(f"{path}: data must hold bytes 0..255")
        data = data.astype(np.uint8)
    labels = _check_labels(labels, 10, str(path))
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Rows are channel-major: 1024 red, then 1024 green, then 1024 blue values, each row-major.
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(split: str, root) -> tuple[np.ndarray, np.ndarray]:
    names = _CIFAR_FILES[split]
    folders = _search_folders("cifar10", root)
    for folder in folders:
        present = [n for n in names if (folder / n).is_file()]
        if not present:
            continue
        missing = [n for n in names if n not in present]
        if missing:
            raise DatasetNotFoundError(
                f"cifar10 {split} split: {folder} lacks {', '.join(missing)}; it needs "
                f"{', '.join(names)} (from cifar-10-python.tar.gz)"
            )
        parts = [_cifar_batch(folder / n) for n in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    all_names = ", ".join(_CIFAR_FILES["train"] + _CIFAR_FILES["test"])
    raise DatasetNotFoundError(
        f"cifar10 files not found. Extract cifar-10-python.tar.gz (the python version from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html) so that the folder "
        f"cifar-10-batches-py/ with {all_names} lies in {_where_text('cifar10', root)}. "
        f"Searched: {', '.join(str(f) for f in folders)}. For evaluation only, "
        f"'cifar10-test100' (cifar10_test100.csv) holds the first 100 test images."
    )
