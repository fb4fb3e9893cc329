"""Where the loaders look for a data set's files: the ``root`` argument or the default data
roots (``$BOUNDGRAPH_DATA``, ``./data``, Debian's Fashion-MNIST folder), with each set's usual
sub-folders, and the "put them in ..." text of the not-found messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

ENV_VAR = "BOUNDGRAPH_DATA"


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


def _find_file_in(folders: Sequence[Path], filename: str) -> Path | None:
    for folder in folders:
        p = folder / filename
        if p.is_file():
            return p
    return None
