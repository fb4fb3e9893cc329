"""A training run's metric log: one row per epoch in ``metrics.csv`` and ``metrics.jsonl``
(rewritten from the history when a run starts or resumes, appended to after each epoch) and
the validation curves in ``metrics.png``. The logs are rewritten atomically from the
checkpoint's history whenever a run starts or resumes, so a line cut short by a kill is
repaired on resume; the plot is replaced atomically."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from .checkpoint import write_text_atomic

__all__ = ["METRIC_COLUMNS", "write_logs", "append_logs", "plot_history"]

#: columns of ``metrics.csv`` (and keys of each ``metrics.jsonl`` row).
METRIC_COLUMNS = (
    "epoch", "step", "epoch_steps", "eps", "lr", "kappa", "beta", "loss", "reg",
    "train_clean_error", "train_certified_error", "val_clean_error", "val_certified_error_ibp",
    "val_pgd_error", "val_eps", "val_examples", "time_s", "eval_time_s",
)


def write_logs(out: Path, history: list) -> None:
    """(Re)write ``metrics.csv`` and ``metrics.jsonl`` from the rows."""
    lines = [json.dumps(r) for r in history]
    write_text_atomic(out / "metrics.jsonl", "".join(line + "\n" for line in lines))
    tmp = out / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in history:
            w.writerow(r)
    os.replace(tmp, out / "metrics.csv")


def append_logs(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    new = not (out / "metrics.csv").exists()
    with open(out / "metrics.csv", "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def plot_history(history: list, path: str | os.PathLike, title: str = "") -> bool:
    """Plot validation errors, loss and eps per epoch to a PNG. Returns False (and writes
    nothing) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    ep = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for key, label in (("val_clean_error", "clean"), ("val_pgd_error", "PGD"),
                       ("val_certified_error_ibp", "IBP-certified")):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax1.plot(ep, [math.nan if y is None else 100 * y for y in ys], marker="o",
                     label=label)
    ax1.set(xlabel="epoch", ylabel="validation error (%)", ylim=(0, 100))
    ax1.legend()
    ax2.plot(ep, [r["loss"] for r in history], marker="o")
    ax2.set(xlabel="epoch", ylabel="training loss")
    ax3.plot(ep, [r["eps"] for r in history], marker="o")
    ax3.set(xlabel="epoch", ylabel="training eps (end of epoch)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    return True
