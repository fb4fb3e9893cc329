"""Certified training results in one table: CPU-scale runs measured here, next to published
full-scale reference numbers.

Reads the CPU-scale certified training results that ``python -m benchmarks.training
--collect RUN_DIR ...`` writes to ``results/training.json`` (``{"runs": [...]}``, one record per
run with its config fields and, under ``test``, the ``boundgraph eval --out`` report, errors as
fractions; a missing file only leaves the measured rows out, a file of another layout is an
error) and writes ``results/certified.{json,md,png}`` with, per run: dataset, eps, model,
method, epochs, wall time, clean error, PGD error, and certified error by IBP and by CROWN.
Below the measured rows come the reference numbers of the full-scale recipes (CNN7 trained with
improved IBP, Shi et al. 2021, as quoted in Table 14.1 of the project's seed), labelled
"published, not measured here".

    python -m benchmarks.certified                    # reads results/training.json
    python -m benchmarks.certified --quick            # training_quick.json if present
    python -m benchmarks.certified --training FILE    # another results file
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .common import RESULTS, machine_stamp, md_table, method_label, results_dir, write_results
from .training import epochs_trained

PUBLISHED_NOTE = "published, not measured here"
# Table 14.1 of the seed: the full-scale improved-IBP recipe (Shi et al. 2021, "Fast certified
# robust training with short warmup"), certified error range over its reported runs (%).
PUBLISHED = [
    {"dataset": "MNIST", "eps": 0.4, "eps_label": "0.4", "model": "CNN7",
     "method": "improved IBP (Shi et al. 2021)", "certified_error_published_range": [10.82, 10.98]},
    {"dataset": "CIFAR-10", "eps": 8 / 255, "eps_label": "8/255", "model": "CNN7",
     "method": "improved IBP (Shi et al. 2021)", "certified_error_published_range": [65.03, 65.05]},
]

ERROR_FIELDS = ("clean_error", "pgd_error", "certified_error_ibp", "certified_error_crown")
# what benchmarks.training.collect writes per run, and what boundgraph eval writes under "test"
# (boundgraph.training.evaluate: errors are fractions, None for a method or attack not run)
RUN_KEYS = ("dataset", "model", "method", "epochs", "train_time_s", "test")
TEST_KEYS = ("eps", "num_examples", "num_examples_crown") + ERROR_FIELDS


class LayoutError(ValueError):
    """A training-results file that is not what ``benchmarks.training --collect`` writes."""


def eps_label(eps, dataset) -> str:
    if eps is None:
        return ""
    k = eps * 255
    if "cifar" in str(dataset).lower() and eps > 0 and abs(k - round(k)) < 1e-3:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run_row(run) -> dict:
    """One table row (errors in percent, ``*_pct``, None where not measured) from a run record
    of ``benchmarks.training --collect``; ValueError saying what is wrong when it is not one."""
    if not isinstance(run, dict) or not isinstance(run.get("test"), dict):
        raise ValueError('not a run record with a "test" report')
    test = run["test"]
    missing = [k for k in RUN_KEYS if k not in run] + \
        [f"test.{k}" for k in TEST_KEYS if k not in test]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    for k in TEST_KEYS:  # clean error always measured; the others None when not run
        if not (_is_num(test[k]) or (test[k] is None and k in ERROR_FIELDS[1:])):
            raise ValueError(f"test.{k} = {test[k]!r} is not a number")
    row = {"source": "measured", "dataset": run["dataset"], "model": run["model"],
           "method": method_label(run),
           "eps": test["eps"], "epochs": epochs_trained(run),
           "wall_time_s": run["train_time_s"]}
    for f in ERROR_FIELDS:
        row[f + "_pct"] = None if test[f] is None else float(test[f]) * 100.0
    row["num_examples"] = test["num_examples"]
    row["num_examples_crown"] = test["num_examples_crown"]
    row["eps_label"] = eps_label(row["eps"], row["dataset"])
    norm = run.get("norm", test.get("norm", "inf"))
    if norm != "inf":
        row["norm"] = norm
        row["eps_label"] += f" (l{norm})"
    return row


def collect(path: Path) -> tuple[list[dict], str]:
    """Measured rows from a training-results file, and a note on what was read. A missing
    file gives no rows; one that is not what ``benchmarks.training --collect`` writes raises
    :class:`LayoutError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return [], f"`{path.name}` not found: no CPU-scale runs to show yet"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path}: not a readable JSON file ({e})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise LayoutError(f'{path}: expected a JSON object with a list of runs under "runs", '
                          "as `python -m benchmarks.training --collect` writes")
    rows = []
    for i, run in enumerate(runs):
        try:
            rows.append(run_row(run))
        except ValueError as e:
            raise LayoutError(f"{path}: runs[{i}] is not a collected training run ({e})") \
                from None
    if not rows:
        return [], f"`{path.name}` holds no runs"
    return rows, f"{len(rows)} row(s) from `{path.name}`"


def published_rows() -> list[dict]:
    rows = []
    for p in PUBLISHED:
        lo, hi = p["certified_error_published_range"]
        rows.append({**p, "source": PUBLISHED_NOTE, "epochs": None, "wall_time_s": None,
                     "clean_error_pct": None, "pgd_error_pct": None,
                     "certified_error_ibp_pct": None, "certified_error_crown_pct": None,
                     "certified_error_published_pct": (lo + hi) / 2})
    return rows


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _crown(r: dict) -> str:
    """CROWN's figure, with its example count where it used fewer examples than the rest."""
    v, n, total = r.get("certified_error_crown_pct"), r.get("num_examples_crown"), \
        r.get("num_examples")
    if v is not None and n and total and n < total:
        return f"{_pct(v)} (n={n:g})"
    return _pct(v)


def _wall(s) -> str:
    if s is None:
        return ""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def make_table(payload: dict) -> str:
    st = payload["machine"]
    rows = []
    for r in payload["rows"]:
        pub = r.get("certified_error_published_range")
        rows.append([r.get("dataset") or "", r.get("eps_label") or "", r.get("model") or "",
                     r.get("method") or "", "" if r.get("epochs") is None else r["epochs"],
                     _wall(r.get("wall_time_s")), _pct(r.get("clean_error_pct")),
                     _pct(r.get("pgd_error_pct")), _pct(r.get("certified_error_ibp_pct")),
                     _crown(r),
                     f"{pub[0]:.2f}-{pub[1]:.2f}" if pub else "", r["source"]])
    return (
        f"# Certified training{' (quick)' if payload['quick'] else ''}\n\n"
        "Errors in % on the test examples used (lower is better). Certified error: the share of "
        "examples not proven robust by that bound method (a misclassified example is never "
        "certified); it is an upper bound on the error under any attack in the ball, and PGD "
        "error a lower bound (n = examples, where CROWN used fewer). Measured rows are the "
        "CPU-scale runs collected by `python -m benchmarks.training --collect` ("
        + payload["source_note"] + "); their models, "
        "epochs and data are far smaller than the published recipes, so the two are not "
        "comparable number for number. Published rows are quoted from the literature (the "
        "seed's Table 14.1: CNN7 trained with improved IBP, Shi et al. 2021) and were "
        "**not measured here**.\n\n"
        f"Collected on: {st['cpu']}, torch {st['torch']}, commit {st['commit']}, {st['date']} "
        "(the measured runs carry their own machine stamp in their results file).\n"
        f"Command: `{payload['command']}`\n\n"
        + md_table(["dataset", "eps", "model", "method", "epochs", "wall time", "clean err",
                    "PGD err", "certified err (IBP)", "certified err (CROWN)",
                    "certified err (published)", "source"], rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="read training_quick.json if present; write certified_quick.*")
    p.add_argument("--training", help="training results JSON (default: results/training.json)")
    args = p.parse_args(argv)
    if args.training:
        src = Path(args.training)
    else:  # quick results first (quick mode), then full ones, then the committed ones
        names = (["training_quick.json"] if args.quick else []) + ["training.json"]
        cands = [d / n for d in dict.fromkeys([results_dir(), RESULTS]) for n in names]
        src = next((c for c in cands if c.exists()), results_dir() / "training.json")
    try:
        measured, note = collect(src)
    except LayoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    payload = {"benchmark": "certified", "quick": args.quick, "machine": machine_stamp(),
               "command": "python -m benchmarks.certified" + (" --quick" if args.quick else ""),
               "source": str(src), "source_note": note, "rows": measured + published_rows()}
    try:
        src_data = json.loads(src.read_text())
        if isinstance(src_data, dict) and isinstance(src_data.get("machine"), dict):
            payload["source_machine"] = src_data["machine"]
    except (OSError, json.JSONDecodeError):
        pass
    table = make_table(payload)
    jp, mp = write_results("certified_quick" if args.quick else "certified", payload, table)
    from .plots import plot_certified

    png = plot_certified(jp)
    print(table)
    print(f"wrote {jp}, {mp}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
