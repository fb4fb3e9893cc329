"""Checkpoints: atomic writes, RNG states, and loading with one clear error.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts only,
so it loads with ``weights_only=True``; no code runs when reading one):

``format``/``version``, ``model_state``, ``optimizer_state``, ``schedules`` (the resolved eps,
kappa, beta and lr schedules as dicts, for the record; they are stateless functions of the
global step), ``rng`` (torch, numpy and python states), ``epoch`` (completed epochs),
``global_step``, ``config`` (:class:`~boundgraph.training.config.TrainConfig` as a dict),
``model_name``, ``model_kwargs``, ``history`` (the per-epoch metric rows) and ``best``.

Writes go to a temporary file in the same folder that is flushed, synced and then renamed over
the target (``os.replace`` is atomic), so a run killed mid-write leaves the previous checkpoint
intact.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BoundGraphError

__all__ = ["CheckpointError", "Checkpoint", "save_atomic", "read_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state", "FORMAT", "VERSION"]

FORMAT = "boundgraph-checkpoint"
VERSION = 1
_REQUIRED = ("format", "version", "model_state", "config", "epoch", "global_step")


class CheckpointError(BoundGraphError):
    """A checkpoint file is missing, truncated, corrupt or not a boundgraph checkpoint."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """torch, numpy and python RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ read
def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The raw checkpoint dict; :class:`CheckpointError` with one readable line otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass a .pt file such as "
                              f"{path / 'best.pt'}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError, KeyError, AttributeError, TypeError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt, truncated "
                              f"or not a PyTorch file ({msg[:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a boundgraph training checkpoint (no "
                              f"'{FORMAT}' marker)")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if obj["version"] > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {obj['version']}; this "
                              f"boundgraph reads up to {VERSION}")
    return obj


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (weights loaded, eval mode) and what was saved with it."""

    model: torch.nn.Module
    config: dict
    epoch: int
    global_step: int
    history: list
    best: dict | None
    path: str
    raw: dict

    @property
    def metrics(self) -> dict | None:
        """The metric row of the saved epoch (None for a checkpoint without history)."""
        for row in reversed(self.history):
            if row.get("epoch") == self.epoch:
                return row
        return None


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module | None = None,
                    map_location="cpu") -> Checkpoint:
    """Load a training checkpoint (``last.pt`` or ``best.pt``).

    The model is rebuilt from the saved zoo name and keyword arguments (pass ``model`` for a
    model that is not in the zoo) and its weights are loaded. Raises :class:`CheckpointError`
    (one line) for a missing, corrupt or foreign file and for weights that do not fit.
    """
    raw = read_checkpoint(path, map_location=map_location)
    config = raw["config"]
    if model is None:
        from .config import build_model

        if raw.get("model_name") is None:
            raise CheckpointError(f"checkpoint {path} was trained on a model outside the zoo; "
                                  f"pass model= to load it")
        model = build_model(config)
    try:
        model.load_state_dict(raw["model_state"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit the model: {first[:200]}") \
            from None
    model.eval()
    return Checkpoint(model=model, config=config, epoch=int(raw["epoch"]),
                      global_step=int(raw["global_step"]), history=list(raw.get("history", [])),
                      best=raw.get("best"), path=str(path), raw=raw)
