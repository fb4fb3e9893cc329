"""The certified-training loop: :func:`fit`.

One loop serves natural training, IBP (Gowal et al. 2018), CROWN-IBP (Zhang et al. 2020),
improved IBP (Shi et al. 2021) and the methods that mix IBP with attacks (SABR, TAPS, STAPS,
MTL-IBP, CC-IBP, EXP-IBP); the method only changes the loss
(:func:`~boundgraph.training.losses.certified_loss`) and a few defaults
(:data:`~boundgraph.training.config.METHOD_DEFAULTS`). Per batch: the schedules give eps,
kappa, beta and the learning rate for the global step; ``certified_loss`` runs the clean
forward pass for the logits (without autograd when the natural loss has weight 0; under DDP
the wrapper's own forward call gives them) and the bounds (BatchNorm in ``train()`` mode
bounds with the clean batch's statistics); the loss is backpropagated, gradients are clipped
if asked, and the optimiser steps.

Per epoch, on the validation split (a seeded part of the training split, never the test
set): clean error, IBP-certified error and PGD error at the target eps; with the training loss,
eps, learning rate and times they form one metric row, appended to ``metrics.csv`` and
``metrics.jsonl`` and plotted to ``metrics.png`` (when matplotlib is installed). Then
``last.pt`` is written (atomically) and, if the selection metric improved, ``best.pt``.

Reproducibility: the data order of epoch e depends only on (seed, e) (a
``DistributedSampler`` reseeded per epoch), the attack's restarts on (seed, e), and a
checkpoint holds model, optimiser, RNG states, epoch and global step; so a run killed and
resumed from ``last.pt`` ends in the same state as an uninterrupted one.

Multi-process: under ``torchrun`` (or any initialised ``torch.distributed`` process group) the
model is wrapped in ``DistributedDataParallel`` (gloo on CPU, nccl on GPU), each process takes
``batch_size / world_size`` examples of every global batch, gradients are averaged, and the
metrics are summed over processes before rank 0 writes files. BatchNorm statistics are per
process (as in plain DDP without SyncBatchNorm).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..bounded import BoundedModule
from ..errors import BoundGraphError, InputError
from ..distributed import init_distributed  # noqa: F401  (re-exported)
from ..perturbation import parse_p
from .checkpoint import (FORMAT, VERSION, read_checkpoint, rng_state, save_atomic,
                         set_rng_state, write_text_atomic)
from .config import TrainConfig, build_model, resolve_config
from .evaluate import count_errors, dataset_tensors
from .init import ibp_init
from .losses import TAPS_METHODS, certified_loss
from .runlog import METRIC_COLUMNS, append_logs, plot_history, write_logs
from .taps import taps_split

__all__ = ["fit", "FitResult", "METRIC_COLUMNS", "init_distributed", "plot_history",
           "resolve_device"]



@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch metric rows, the best row, the trained model
    (its last state), the bounded module, the resolved config and the output folder."""

    history: list
    best: dict | None
    model: torch.nn.Module
    bounded: BoundedModule
    config: TrainConfig
    out_dir: Path | None


class _Sized:
    """A stand-in data set of a given length for :class:`DistributedSampler`."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None: the local GPU if there is one (``cuda:LOCAL_RANK`` under torchrun),
    else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _all_max(value: float, device, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2 ** 63)


# ------------------------------------------------------------------------------- selection
def _selection_key(cfg: TrainConfig, row: dict, eps_max: float) -> tuple:
    metric = cfg.select_metric
    if metric == "auto":
        metric = "val_clean_error" if cfg.method == "natural" else "val_certified_error_ibp"
    if metric not in row:
        raise InputError(f"select_metric {cfg.select_metric!r} is not a metric; choose among "
                         f"{', '.join(c for c in METRIC_COLUMNS if c.startswith('val_'))}")
    ramped = cfg.method == "natural" or row["eps"] >= eps_max
    value = row[metric]
    return (0 if ramped else 1, math.inf if value is None else value, row["val_clean_error"])


# ------------------------------------------------------------------------------------- fit
def fit(model=None, train_data=None, config: TrainConfig | dict | None = None, *,
        val_data=None, out_dir: str | os.PathLike | None = None, resume: bool = False,
        overwrite: bool = False, device: str | torch.device | None = "cpu",
        progress: bool = True, callbacks: Iterable[Callable[[dict], None]] = (),
        **overrides) -> FitResult:
    """Train ``model`` with certified training; see the module docstring for the loop.

    Args:
        model: an ``nn.Module``, or None / a zoo name to build ``config.model`` (after seeding,
            so the initialisation depends on ``seed`` only).
        train_data: the training split (``TensorDataset``, Subset of one, or
            ``(images, labels)``); images in ``config.domain``. Required.
        config: a :class:`TrainConfig`, a dict of its fields, or None; ``overrides`` (any
            TrainConfig field, e.g. ``method="crown-ibp", eps=0.1, epochs=5``) are applied on
            top, method defaults first (see :func:`~boundgraph.training.config.resolve_config`).
        val_data: validation split; by default ``config.val_fraction`` of ``train_data``
            (seeded) is held out.
        out_dir: folder for ``last.pt``, ``best.pt``, ``metrics.csv``, ``metrics.jsonl``,
            ``metrics.png`` and ``config.json``; None writes nothing (and ``resume`` is
            impossible).
        resume: continue from ``out_dir/last.pt`` (its config wins; ``epochs`` may be raised).
            Without a checkpoint there the run starts fresh.
        overwrite: allow starting a fresh run in a folder that already holds one.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        progress: tqdm bar per epoch and a summary line per epoch (rank 0 only).
        callbacks: functions called with each epoch's metric row after its checkpoint is
            written (raising in one stops the run as a kill would).

    Returns:
        :class:`FitResult`.
    """
    run = _Run(model, train_data, config, val_data=val_data, out_dir=out_dir, resume=resume,
               overwrite=overwrite, device=device, progress=progress, callbacks=callbacks,
               overrides=overrides)
    for epoch in run.epochs():
        if run.out_of_time():
            break
        run.train_epoch(epoch)
        row = run.validate(epoch)
        improved = run.select(row)
        run.checkpoint(row, improved)
        run.log(row, improved)
        run.notify(row)
    return run.result()


class _Run:
    """The state of one :func:`fit` call (what would otherwise be a dozen local variables)
    and its steps: set-up in ``__init__``, then per epoch :meth:`train_epoch` (one
    :meth:`train_step` per batch), :meth:`validate`, :meth:`select`, :meth:`checkpoint`,
    :meth:`log` and :meth:`notify`; :meth:`result` at the end."""

    # ---- set-up -----------------------------------------------------------------------
    def __init__(self, model, train_data, config, *, val_data, out_dir, resume, overwrite,
                 device, progress, callbacks, overrides):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        if train_data is None:
            raise InputError("fit needs train_data")
        self.cfg = _make_config(config, model, overrides)
        self.rank, self.world = _dist()
        self.is_main = self.rank == 0
        self.device = resolve_device(device)
        self.out = Path(out_dir) if out_dir is not None else None
        self.progress = progress

        ckpt = self._open_checkpoint(resume, overwrite, overrides)
        if self.cfg.batch_size % self.world:
            raise InputError(f"batch_size {self.cfg.batch_size} is not divisible by the "
                             f"{self.world} processes")
        _seed_all(self.cfg.seed)
        self._load_data(train_data, val_data)
        self._build(model, fresh=ckpt is None)
        self.history: list = []
        self.best = None
        self.start_epoch, self.global_step = 0, 0
        self.spent_before, self.epoch_t0, self.steps_in_epoch = 0.0, None, 0
        if ckpt is not None:
            self._restore(ckpt)
        self._prepare_out_dir(fresh=ckpt is None)
        self.plot_note_shown = False
        self.ddp = self._wrap_ddp()
        self.callbacks = list(callbacks)

    def _open_checkpoint(self, resume, overwrite, overrides):
        """Read ``out/last.pt`` when resuming (its config wins, ``epochs`` may be raised);
        refuse to start over an existing run without ``overwrite``."""
        out = self.out
        if out is None:
            if resume:
                raise InputError("resume needs out_dir (the folder holding last.pt)")
            return None
        last = out / "last.pt"
        if resume and last.exists():
            ckpt = read_checkpoint(last, map_location=self.device)
            saved = TrainConfig.from_dict(ckpt["config"])
            epochs = max(saved.epochs, int(overrides.get("epochs") or saved.epochs))
            self.cfg = replace(saved, epochs=epochs)
            return ckpt
        if resume and self.progress and self.is_main:
            print(f"boundgraph train: no checkpoint in {out}; starting a fresh run",
                  file=sys.stderr)
        elif last.exists() and not overwrite:
            raise InputError(f"{out} already holds a training run (last.pt); pass resume to "
                             f"continue it, overwrite to replace it, or choose another folder")
        return None

    def _load_data(self, train_data, val_data) -> None:
        """The training and validation tensors (``X, Y``, ``Xv, Yv``), checked."""
        cfg = self.cfg
        X, Y = dataset_tensors(train_data, cfg.limit)
        if val_data is None:
            from torch.utils.data import TensorDataset

            from ..data import validation_split

            try:
                tr, va = validation_split(TensorDataset(X, Y), cfg.val_fraction, cfg.seed)
            except ValueError as e:
                raise InputError(str(e)) from None
            tr_idx = torch.as_tensor(tr.indices, dtype=torch.long)
            va_idx = torch.as_tensor(va.indices, dtype=torch.long)
            Xv, Yv = X[va_idx], Y[va_idx]
            X, Y = X[tr_idx], Y[tr_idx]
        else:
            Xv, Yv = dataset_tensors(val_data)
        if cfg.val_limit is not None:
            Xv, Yv = Xv[:cfg.val_limit], Yv[:cfg.val_limit]
        if len(X) == 0 or len(Xv) == 0:
            raise InputError("the training or validation split is empty")
        lo, hi = cfg.domain
        if float(X.min()) < lo - 1e-6 or float(X.max()) > hi + 1e-6:
            raise InputError(f"training images must lie in the domain [{lo}, {hi}]")
        self.X, self.Y, self.Xv, self.Yv = X, Y, Xv, Yv

    def _build(self, model, fresh: bool) -> None:
        """Model, bounded graph (IBP initialisation for a fresh run), optimiser, sampler and
        schedules."""
        cfg, device = self.cfg, self.device
        self.model_name = cfg.model  # None for a model built by the caller outside the zoo
        if model is None or isinstance(model, str):
            model = build_model(cfg)
        model.to(device)
        was_training = model.training
        model.eval()
        self.bm = BoundedModule(model, self.X[:2].to(device))
        model.train(was_training)
        if cfg.method in TAPS_METHODS:  # a bad split name fails here, before any training
            taps_split(self.bm.graph, cfg.taps_split)
        if fresh and cfg.ibp_init:
            ibp_init(self.bm,
                     generator=torch.Generator().manual_seed(_epoch_seed(cfg.seed, -1)))
        self.model = model

        self.params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay)
        self.local_batch = cfg.batch_size // self.world
        self.sampler = DistributedSampler(_Sized(len(self.X)), num_replicas=self.world,
                                          rank=self.rank, shuffle=True, seed=cfg.seed,
                                          drop_last=False)
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.local_batch)
        self.sched = cfg.schedules(self.steps_per_epoch)
        self.eps_max = self.sched.eps.eps_max
        self.val_eps = cfg.target_eval_eps

    def _restore(self, ckpt) -> None:
        """Model, optimiser, history, best row, epoch, step and RNG states from ``last.pt``."""
        try:
            self.model.load_state_dict(ckpt["model_state"])
            self.opt.load_state_dict(ckpt["optimizer_state"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise BoundGraphError(f"{self.out / 'last.pt'} does not fit this model: "
                                  f"{str(e).splitlines()[0][:200]}") from None
        self.start_epoch, self.global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        self.history = list(ckpt.get("history", []))
        self.best = ckpt.get("best")
        set_rng_state(ckpt["rng"])

    def _prepare_out_dir(self, fresh: bool) -> None:
        """Rank 0: write ``config.json``, clear an old run's files for a fresh run, and
        rewrite the metric logs from the history."""
        out = self.out
        if out is None or not self.is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(
            {**self.cfg.to_dict(), "steps_per_epoch": self.steps_per_epoch,
             "train_examples": len(self.X), "val_examples": len(self.Xv),
             "world_size": self.world}, indent=2) + "\n")
        if fresh:  # a fresh run (possibly over an old one, with overwrite)
            for name in ("last.pt", "best.pt", "metrics.png"):
                if (out / name).exists():
                    (out / name).unlink()
        write_logs(out, self.history)

    def _wrap_ddp(self):
        if self.world <= 1:
            return None
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(self.model, device_ids=[self.device]
                                       if self.device.type == "cuda" else None)

    # ---- time -------------------------------------------------------------------------
    def epochs(self) -> Iterable[int]:
        """The epochs still to train: up to ``cfg.epochs``, or, with the schedule laid out
        over the time limit, until :meth:`out_of_time` says the limit is reached."""
        if self.cfg.schedule_by == "time":
            return itertools.count(self.start_epoch)
        return range(self.start_epoch, self.cfg.epochs)

    def _history_time(self) -> float:
        """Training seconds of the finished epochs (of this run and, resumed, of earlier
        ones)."""
        return sum(r["time_s"] for r in self.history)

    def _spent(self) -> float:
        """Training seconds spent so far: the finished epochs' plus the current epoch's
        (the largest over processes, so that every process sees the same schedule)."""
        now = self.spent_before
        if self.epoch_t0 is not None:
            now += time.perf_counter() - self.epoch_t0
        return _all_max(now, self.device, self.world)

    def _schedule_step(self, spent: float | None = None) -> float:
        """The step the schedules are read at: the batch counter, or, with
        ``schedule_by="time"``, the training time spent (``spent`` seconds, read from the
        clock when None) as the same fraction of all ``epochs * steps_per_epoch`` steps as
        of the time limit."""
        if self.cfg.schedule_by != "time":
            return self.global_step
        if spent is None:
            spent = self._spent()
        return spent / (60.0 * self.cfg.time_limit) * self.cfg.epochs * self.steps_per_epoch

    # ---- one epoch --------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> None:
        """Train one epoch in the order the sampler gives for ``epoch``; leaves the summed
        statistics in ``sums``, the last schedule values in ``s`` and the time in
        ``train_time``."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        self.model.train()
        self.sums = [0.0] * 5  # loss*n, n, clean wrong, certified wrong, reg*n
        by_time = cfg.schedule_by == "time"
        self.spent_before = self._history_time()
        desc = (f"epoch {epoch + 1} ({self.spent_before / 60:.1f} of {cfg.time_limit:g} min)"
                if by_time else f"epoch {epoch + 1}/{cfg.epochs}")
        bar = self._tqdm(total=self.steps_per_epoch, desc=desc,
                         disable=not (self.progress and self.is_main), leave=False,
                         file=sys.stderr)
        t0 = self.epoch_t0 = time.perf_counter()
        self.s = self.sched(self._schedule_step())
        self.steps_in_epoch = 0
        for b in range(self.steps_per_epoch):
            # with the schedule over time, one clock read per step places the step in the
            # schedule, and the limit may end the run within an epoch
            spent = self._spent() if by_time else None
            if by_time and b and spent >= 60.0 * cfg.time_limit:
                break
            loss_v = self.train_step(epoch,
                                     order[b * self.local_batch:(b + 1) * self.local_batch],
                                     spent)
            self.steps_in_epoch += 1
            bar.set_postfix(loss=f"{loss_v:.4f}", eps=f"{self.s['eps']:.4f}", refresh=False)
            bar.update(1)
        bar.close()
        # the slowest process's time, so that every history (and stop) agrees
        self.train_time = _all_max(time.perf_counter() - t0, self.device, self.world)
        self.epoch_t0 = None
        self.sums = _all_sum(self.sums, self.device, self.world)

    def train_step(self, epoch: int, idx: torch.Tensor, spent: float | None = None) -> float:
        """One optimiser step on the examples ``idx`` (``spent``: the training seconds
        spent before it, for a schedule laid out over time); adds to ``sums``, returns the
        loss."""
        cfg, device = self.cfg, self.device
        xb = self.X[idx].to(device, non_blocking=True)
        yb = self.Y[idx].to(device, non_blocking=True)
        s = self.s = self.sched(self._schedule_step(spent))
        for g in self.opt.param_groups:
            g["lr"] = s["lr"]
        # DDP needs its own forward call; otherwise certified_loss runs the clean pass
        # (without autograd when the natural loss is not in the objective)
        logits = self.ddp(xb) if self.ddp is not None else None
        lo, hi = cfg.domain
        res = certified_loss(self.bm, xb, yb, method=cfg.method, eps=s["eps"],
                             kappa=s["kappa"], beta=s["beta"], eps_max=self.eps_max,
                             reg_lambda=cfg.reg_lambda, reg_tol=cfg.reg_tol, lower=lo,
                             upper=hi, logits=logits, loss_fusion=cfg.loss_fusion,
                             p=parse_p(cfg.norm), sabr_lambda=cfg.sabr_lambda,
                             mix_alpha=cfg.mix_alpha, attack_steps=cfg.attack_steps,
                             taps_split=cfg.taps_split, taps_grad_scale=cfg.taps_grad_scale)
        self.opt.zero_grad(set_to_none=True)
        res.loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.global_step += 1
        loss_v = float(res.loss.detach())
        if not math.isfinite(loss_v):
            raise BoundGraphError(f"training diverged: the loss is {loss_v} at epoch "
                                  f"{epoch + 1}, step {self.global_step} (eps "
                                  f"{s['eps']:.4g}); try a smaller lr or a longer eps ramp")
        n = len(yb)
        wrong = res.logits.detach().argmax(1) != yb
        sums = self.sums
        sums[0] += loss_v * n
        sums[1] += n
        sums[2] += int(wrong.sum())
        if res.margins is not None:  # certified: correct and every margin bound > 0
            sums[3] += int((wrong | ~(res.margins > 0).all(1)).sum())
        sums[4] += float(res.reg) * n
        return loss_v

    def validate(self, epoch: int) -> dict:
        """Validate (summed over processes) and return the epoch's metric row."""
        cfg, sums, s = self.cfg, self.sums, self.s
        rank, world = self.rank, self.world
        t1 = time.perf_counter()
        counts = _validate(self.bm, self.Xv[rank::world], self.Yv[rank::world], self.val_eps,
                           cfg, self.device, epoch, self.local_batch)
        counts = _all_sum(counts, self.device, world)
        self.eval_time = time.perf_counter() - t1
        nv = counts[0]
        return {
            "epoch": epoch + 1,
            "step": self.global_step,
            "epoch_steps": self.steps_in_epoch,
            "eps": s["eps"],
            "lr": s["lr"],
            "kappa": s["kappa"],
            "beta": s["beta"] if cfg.method == "crown-ibp" else None,
            "loss": sums[0] / sums[1],
            "reg": sums[4] / sums[1],
            "train_clean_error": sums[2] / sums[1],
            "train_certified_error": (sums[3] / sums[1]) if cfg.method != "natural" else None,
            "val_clean_error": counts[1] / nv,
            "val_certified_error_ibp": counts[2] / nv,
            "val_pgd_error": (counts[3] / nv) if cfg.pgd_steps > 0 else None,
            "val_eps": self.val_eps,
            "val_examples": int(nv),
            "time_s": round(self.train_time, 3),
            "eval_time_s": round(self.eval_time, 3),
        }

    def out_of_time(self) -> bool:
        """True when ``cfg.time_limit`` is set and one more epoch, as long as the last one,
        would take the training time (summed over the history, so resumed runs count what
        they spent before) past it; says so on stderr (rank 0)."""
        limit = self.cfg.time_limit
        if limit is None or not self.history:
            return False
        spent = self._history_time()
        if self.cfg.schedule_by == "time":
            if spent < 60.0 * limit:
                return False
            planned = "epochs (schedule laid out over the time limit)"
        elif spent + self.history[-1]["time_s"] <= 60.0 * limit:
            return False
        else:
            planned = f"of {self.cfg.epochs} epochs"
        if self.is_main and self.progress:
            print(f"time limit: {spent:.0f} s of {60 * limit:.0f} s of training spent after "
                  f"{len(self.history)} {planned}; stopping", file=sys.stderr, flush=True)
        return True

    def select(self, row: dict) -> bool:
        """Append ``row`` to the history; keep it as the best row if it improves on it."""
        self.history.append(row)
        improved = self.best is None or _selection_key(self.cfg, row, self.eps_max) < \
            _selection_key(self.cfg, self.best, self.eps_max)
        if improved:
            self.best = dict(row)
        return improved

    def checkpoint(self, row: dict, improved: bool) -> None:
        """Rank 0: write ``last.pt`` (and ``best.pt`` if improved) atomically, append the
        metric logs and replot ``metrics.png``."""
        out, cfg, model = self.out, self.cfg, self.model
        if out is None or not self.is_main:
            return
        state = {
            "format": FORMAT, "version": VERSION,
            "model_state": model.state_dict(),
            "optimizer_state": self.opt.state_dict(),
            "schedules": _schedules_record(self.sched),
            "rng": rng_state(),
            "epoch": row["epoch"],
            "global_step": self.global_step,
            "config": cfg.to_dict(),
            "model_name": self.model_name,
            "model_kwargs": dict(cfg.model_kwargs),
            "history": self.history,
            "best": self.best,
        }
        save_atomic(state, out / "last.pt")
        if improved:
            save_atomic(state, out / "best.pt")
        append_logs(out, row)
        if not plot_history(self.history, out / "metrics.png",
                            title=f"{cfg.model or type(model).__name__} {cfg.method} "
                                  f"eps={cfg.eps:g}") and not self.plot_note_shown:
            print("boundgraph train: matplotlib is not installed; skipping metrics.png "
                  "(pip install 'boundgraph[plot]')", file=sys.stderr)
            self.plot_note_shown = True

    def log(self, row: dict, improved: bool) -> None:
        """Rank 0, with ``progress``: the epoch's summary line on stderr."""
        if not (self.progress and self.is_main):
            return
        pgd = "-" if row["val_pgd_error"] is None else f"{100 * row['val_pgd_error']:.2f}%"
        cfg = self.cfg
        which = (f"{row['epoch']} ({self._history_time() / 60:.1f} of "
                 f"{cfg.time_limit:g} min)" if cfg.schedule_by == "time"
                 else f"{row['epoch']}/{cfg.epochs}")
        print(f"epoch {which}  eps {row['eps']:.4f}  "
              f"loss {row['loss']:.4f}  val clean {100 * row['val_clean_error']:.2f}%  "
              f"PGD {pgd}  IBP-cert {100 * row['val_certified_error_ibp']:.2f}% "
              f"(eps {self.val_eps:g}{_norm_tag(self.cfg.norm)})  "
              f"{self.train_time:.1f}s+{self.eval_time:.1f}s"
              + ("  *best" if improved else ""), file=sys.stderr, flush=True)

    def notify(self, row: dict) -> None:
        """Wait for every process, then call the callbacks with the row."""
        if self.world > 1:
            dist.barrier()
        for cb in self.callbacks:
            cb(row)

    def result(self) -> FitResult:
        self.model.eval()
        return FitResult(history=self.history, best=self.best, model=self.model,
                         bounded=self.bm, config=self.cfg, out_dir=self.out)


def _make_config(config, model, overrides) -> TrainConfig:
    overrides = dict(overrides)
    if isinstance(model, str):
        overrides.setdefault("model", model)
    if isinstance(config, TrainConfig):
        if not overrides:
            config.validate()
            return config
        base = config.to_dict()
        method = overrides.pop("method", None) or base["method"]
        if method != base["method"]:
            return resolve_config(method, base.get("recipe"), {**base, **overrides,
                                                               "method": method})
        return TrainConfig.from_dict({**base, **overrides})
    base = dict(config or {})
    recipe = overrides.pop("recipe", None) or base.pop("recipe", None)
    method = overrides.pop("method", None) or base.pop("method", None)
    return resolve_config(method, recipe, {**base, **overrides})


def _schedules_record(sched) -> dict:
    import dataclasses

    out = {}
    for name in ("eps", "kappa", "beta", "lr"):
        v = getattr(sched, name)
        if v is not None:
            d = dataclasses.asdict(v)
            d = {k: (list(x) if isinstance(x, tuple) else x) for k, x in d.items()}
            out[name] = {"type": type(v).__name__, **d}
    return out


def _norm_tag(norm: str) -> str:
    return "" if norm == "inf" else f", l{norm}"


@torch.no_grad()
def _validate(bm, Xv, Yv, eps, cfg: TrainConfig, device, epoch: int, batch: int) -> list:
    """[n, clean wrong, IBP-certified wrong, PGD wrong] on this process's validation shard."""
    was = bm.model.training
    bm.model.eval()
    gen = torch.Generator(device=device).manual_seed(_epoch_seed(cfg.seed, epoch))
    totals = [0.0, 0.0, 0.0, 0.0]
    try:
        for start in range(0, len(Xv), batch):
            xb = Xv[start:start + batch].to(device)
            yb = Yv[start:start + batch].to(device)
            c = count_errors(bm, xb, yb, eps, ["ibp"], pgd_steps=cfg.pgd_steps,
                             pgd_restarts=cfg.pgd_restarts, domain=cfg.domain, generator=gen,
                             p=parse_p(cfg.norm))
            totals[0] += len(xb)
            totals[1] += c["clean"]
            totals[2] += c["certified_ibp"]
            totals[3] += c.get("pgd", 0)
    finally:
        bm.model.train(was)
    return totals
