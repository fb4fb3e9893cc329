"""The 100-example CSV sets ``mnist-test100`` and ``cifar10-test100`` (``mnist_test100.csv``,
``cifar10_test100.csv``): one row per image, the label and then the pixel bytes."""

from __future__ import annotations

import numpy as np

from .folders import _find_file_in, _search_folders, _where_text
from .info import DATASET_INFO, DataFormatError, DatasetNotFoundError, _check_labels

# --------------------------------------------------------------------------------------------
# CSV sets: label, then pixel bytes (MNIST row-major; CIFAR-10 height-width-channel).

_CSV_FILES = {"mnist-test100": "mnist_test100.csv", "cifar10-test100": "cifar10_test100.csv"}


def _load_csv(name: str, root) -> tuple[np.ndarray, np.ndarray]:
    info = DATASET_INFO[name]
    filename = _CSV_FILES[name]
    folders = _search_folders(name, root)
    path = _find_file_in(folders, filename)
    if path is None:
        raise DatasetNotFoundError(
            f"{name}: {filename} not found. Put it in {_where_text(name, root)} "
            f"(rows: label, then {info.channels * info.size ** 2} pixel values 0-255"
            f"{' in height-width-channel order' if info.channels > 1 else ''}). "
            f"Searched: {', '.join(str(f) for f in folders)}."
        )
    n_pix = info.channels * info.size * info.size
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataFormatError(f"{path}: not a numeric CSV ({err})") from err
    if table.shape[1] != 1 + n_pix:
        raise DataFormatError(
            f"{path}: expected {1 + n_pix} columns (label + {n_pix} pixels), got {table.shape[1]}"
        )
    if not np.all(table == np.rint(table)):
        raise DataFormatError(f"{path}: values must be integers")
    pixels = table[:, 1:]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataFormatError(f"{path}: pixel values must lie in 0..255")
    labels = _check_labels(table[:, 0].astype(np.int64), info.num_classes, str(path))
    hwc = pixels.astype(np.uint8).reshape(-1, info.size, info.size, info.channels)
    return hwc.transpose(0, 3, 1, 2), labels
