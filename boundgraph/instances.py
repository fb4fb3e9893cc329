"""The VNN-COMP batch runner: every instance of an ``instances.csv``, one after the other.

:func:`read_instances` reads the csv (rows ``onnx, vnnlib, timeout``, paths relative to the
csv's folder); :func:`verify_instances` decides each instance with
:func:`boundgraph.verify.verify` (each ONNX model imported once), writes the results csv and,
if asked, one VNN-COMP result file per instance (:meth:`boundgraph.verify.Result.write`).
"""
from __future__ import annotations

import csv
import os
import time

from .bounded import BoundedModule
from .errors import BoundGraphError, InputError
from .verify import _load_model, verify
from .vnnlib import parse_vnnlib

__all__ = ["read_instances", "verify_instances"]


def read_instances(csv_path: str | os.PathLike, default_timeout: float | None = None):
    """Rows ``(onnx, vnnlib, timeout)`` of a VNN-COMP ``instances.csv`` (paths made absolute,
    relative to the csv's folder). A header row naming ``onnx``/``vnnlib`` columns is allowed
    (other columns, e.g. ``expected``, are kept); ``timeout`` falls back on ``default_timeout``.
    """
    csv_path = os.fspath(csv_path)
    base = os.path.dirname(os.path.abspath(csv_path))
    try:
        with open(csv_path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except OSError as e:
        raise InputError(f"cannot read instances file '{csv_path}': {e.strerror or e}") from None
    if not rows:
        raise InputError(f"instances file '{csv_path}' is empty")
    first = [c.strip().lower() for c in rows[0]]
    if "onnx" in first and "vnnlib" in first:
        header = first
        rows = rows[1:]
    else:
        header = ["onnx", "vnnlib", "timeout"][:len(rows[0])] + \
            [f"col{i}" for i in range(3, len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        rec = {h: (r[i].strip() if i < len(r) else "") for i, h in enumerate(header)}
        if not rec.get("onnx") or not rec.get("vnnlib"):
            raise InputError(f"instances file '{csv_path}', row {k + 1}: needs an onnx and a "
                             "vnnlib path")
        for key in ("onnx", "vnnlib"):
            rec[key + "_path"] = os.path.join(base, rec[key])
        t = rec.get("timeout", "")
        try:
            rec["timeout"] = float(t) if t else default_timeout
        except ValueError:
            raise InputError(f"instances file '{csv_path}', row {k + 1}: bad timeout {t!r}") \
                from None
        if rec["timeout"] is None:
            rec["timeout"] = 60.0
        out.append(rec)
    return out


def verify_instances(csv_path, out_csv=None, *, timeout: float | None = None,
                     max_timeout: float | None = None, method: str = "auto",
                     results_dir=None, progress: bool = True, **kw) -> list[dict]:
    """Run every instance of ``csv_path`` (see :func:`read_instances`).

    ``timeout`` replaces missing per-row timeouts; ``max_timeout`` caps all of them. Writes
    ``out_csv`` (columns onnx, vnnlib, verdict, time, stage, and expected when the input has
    it) and, if ``results_dir`` is given, one VNN-COMP result file per instance. Errors of one
    instance (a model that cannot be imported, say) are reported in its row as verdict
    ``error`` and do not stop the run. Returns the rows.
    """
    from tqdm import tqdm

    rows = read_instances(csv_path, timeout)
    models: dict[str, BoundedModule] = {}
    out = []
    bar = tqdm(rows, desc="verify", unit="inst", disable=not progress)
    for rec in bar:
        t = rec["timeout"] if max_timeout is None else min(rec["timeout"], max_timeout)
        t0 = time.perf_counter()
        row = {"onnx": rec["onnx"], "vnnlib": rec["vnnlib"]}
        try:
            prop = parse_vnnlib(rec["vnnlib_path"])
            key = rec["onnx_path"]
            if key not in models:
                models[key] = _load_model(key, prop)
            left = t - (time.perf_counter() - t0)
            res = verify(models[key], prop, timeout=max(left, 0.01), method=method, **kw)
            row.update(verdict=res.verdict, time=round(time.perf_counter() - t0, 3),
                       stage=res.details.get("stage", ""))
            if results_dir is not None:
                os.makedirs(results_dir, exist_ok=True)
                stem = (os.path.splitext(os.path.basename(rec["onnx"]))[0] + "__" +
                        os.path.splitext(os.path.basename(rec["vnnlib"]))[0])
                res.write(os.path.join(results_dir, stem + ".result"))
            row["result"] = res
        except (BoundGraphError, ValueError, OSError) as e:
            row.update(verdict="error", time=round(time.perf_counter() - t0, 3),
                       stage=str(e).splitlines()[0][:200])
        if "expected" in rec:
            row["expected"] = rec["expected"]
        out.append(row)
        bar.set_postfix_str(f"{row['verdict']} {row['time']:.1f}s")
    if out_csv is not None:
        cols = ["onnx", "vnnlib", "verdict", "time", "stage"] + \
            (["expected"] if any("expected" in r for r in out) else [])
        with open(out_csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in out:
                w.writerow([r.get(c, "") for c in cols])
    return out
