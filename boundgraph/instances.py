"""The VNN-COMP batch runner: every instance of an ``instances.csv``, one after the other (or
shared among ``torchrun`` processes).

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
from .distributed import balanced, barrier, gather, rank_world
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
                     results_dir=None, progress: bool = True, resume: bool = False,
                     **kw) -> list[dict]:
    """Run every instance of ``csv_path`` (see :func:`read_instances`).

    ``timeout`` replaces missing per-row timeouts; ``max_timeout`` caps all of them. Writes
    ``out_csv`` (columns onnx, vnnlib, verdict, time, stage, and expected when the input has
    it) and, if ``results_dir`` is given, one VNN-COMP result file per instance. Errors of one
    instance (a model that cannot be imported, say) are reported in its row as verdict
    ``error`` and do not stop the run. Returns the rows, in the file's order.

    Each finished row is appended at once to ``<out_csv>.part<rank>`` (flushed to disk), so a
    killed run loses only the instances in progress; ``resume=True`` keeps the rows found
    there (and in a finished ``out_csv``) and runs only the others. The final ``out_csv`` is
    written, in the input's order, when every row is done, and the part files are removed.

    Under ``torchrun`` the rows are shared among the processes, balanced by their time
    budgets (heaviest first to the least loaded process); the first process writes the one
    results file, which has the same rows and columns as a single process's.
    """
    from tqdm import tqdm

    rows = read_instances(csv_path, timeout)
    if resume and out_csv is None:
        raise InputError("resume needs the results file (out_csv / --out) of the earlier run")
    rank, world = rank_world()
    budgets = [r["timeout"] if max_timeout is None else min(r["timeout"], max_timeout)
               for r in rows]
    owner = balanced(budgets, world)
    done = _finished_rows(out_csv, rows) if resume else {}
    mine = [i for i in range(len(rows)) if owner[i] == rank and i not in done]
    part = None if out_csv is None else open(f"{os.fspath(out_csv)}.part{rank}", "a",
                                             newline="")
    writer = None if part is None else csv.writer(part)
    models: dict[str, BoundedModule] = {}
    results: dict[int, dict] = {}
    bar = tqdm(mine, desc="verify", unit="inst", disable=not progress or rank != 0)
    try:
        for i in bar:
            row = _run_row(rows[i], budgets[i], models, method, results_dir, kw)
            results[i] = row
            if writer is not None:
                writer.writerow([i] + [row.get(c, "") for c in _PART_COLUMNS] + ["."])
                part.flush()
                os.fsync(part.fileno())
            bar.set_postfix_str(f"{row['verdict']} {row['time']:.1f}s")
    finally:
        if part is not None:
            part.close()
    merged = dict(done)
    for got in gather({i: {k: v for k, v in r.items() if k != "result"}
                       for i, r in results.items()}):
        merged.update(got)
    merged.update(results)  # this process's rows keep their Result objects
    out = [merged[i] for i in range(len(rows))]
    barrier()
    if out_csv is not None and rank == 0:
        cols = ["onnx", "vnnlib", "verdict", "time", "stage"] + \
            (["expected"] if any("expected" in r for r in out) else [])
        tmp = f"{os.fspath(out_csv)}.tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in out:
                w.writerow([r.get(c, "") for c in cols])
        os.replace(tmp, out_csv)
        for k in range(max(world, _part_count(out_csv))):
            try:
                os.remove(f"{os.fspath(out_csv)}.part{k}")
            except FileNotFoundError:
                pass
    barrier()
    return out


_PART_COLUMNS = ("onnx", "vnnlib", "verdict", "time", "stage", "expected")


def _run_row(rec, t, models, method, results_dir, kw) -> dict:
    """Decide one instance within ``t`` seconds; any failure becomes verdict ``error``."""
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
    except Exception as e:  # noqa: BLE001 - one instance's crash must not end the run
        row.update(verdict="error", time=round(time.perf_counter() - t0, 3),
                   stage=f"{type(e).__name__}: {str(e).splitlines()[0][:180] if str(e) else ''}")
    if "expected" in rec:
        row["expected"] = rec["expected"]
    return row


def _part_count(out_csv) -> int:
    folder = os.path.dirname(os.path.abspath(out_csv)) or "."
    stem = os.path.basename(os.fspath(out_csv)) + ".part"
    return 1 + max([int(f[len(stem):]) for f in os.listdir(folder)
                    if f.startswith(stem) and f[len(stem):].isdigit()] or [-1])


def _finished_rows(out_csv, rows) -> dict[int, dict]:
    """Rows an earlier run finished: ``{index: row}`` from its part files and, when it
    completed, from ``out_csv`` itself (matched by position, onnx and vnnlib)."""
    done: dict[int, dict] = {}
    path = os.fspath(out_csv)
    if os.path.exists(path):
        with open(path, newline="") as fh:
            got = list(csv.DictReader(fh))
        for i, r in enumerate(got[:len(rows)]):
            if r.get("onnx") == rows[i]["onnx"] and r.get("vnnlib") == rows[i]["vnnlib"]:
                done[i] = _typed(r)
    for k in range(_part_count(path)):
        try:
            with open(f"{path}.part{k}", newline="") as fh:
                for rec in csv.reader(fh):
                    if len(rec) != len(_PART_COLUMNS) + 2 or rec[-1] != "." or \
                            not rec[0].isdigit():
                        continue  # a line cut short by the kill (it ends with ".")
                    i = int(rec[0])
                    r = dict(zip(_PART_COLUMNS, rec[1:-1]))
                    if i < len(rows) and r["onnx"] == rows[i]["onnx"] and \
                            r["vnnlib"] == rows[i]["vnnlib"]:
                        done[i] = _typed(r)
        except FileNotFoundError:
            continue
    return done


def _typed(r: dict) -> dict:
    out = {k: v for k, v in r.items() if not (k == "expected" and v == "")}
    try:
        out["time"] = float(out.get("time") or 0.0)
    except ValueError:
        out["time"] = 0.0
    return out
