"""Certified training results in one table: CPU-scale runs measured here, next to published
full-scale reference numbers.

Reads the CPU-scale certified training results that ``python -m benchmarks.training
--collect RUN_DIR ...`` writes to ``results/training.json`` (tolerating its absence and a range
of layouts: a list of run records under ``runs``/``results``/``rows``, flat or nested, errors as
fractions or percentages, accuracy instead of error) and writes
``results/certified.{json,md,png}`` with, per run: dataset, eps, model, method, epochs, wall
time, clean error, PGD error, and certified error by IBP and by CROWN. Below the measured rows
come the reference numbers of the full-scale recipes (CNN7 trained with improved IBP, Shi et al.
2021, as quoted in Table 14.1 of the project's seed), labelled "published, not measured here".

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

from .common import RESULTS, machine_stamp, md_table, results_dir, write_results

PUBLISHED_NOTE = "published, not measured here"
# Table 14.1 of the seed: the full-scale improved-IBP recipe (Shi et al. 2021, "Fast certified
# robust training with short warmup"), certified error range over its reported runs (%).
PUBLISHED = [
    {"dataset": "MNIST", "eps": 0.4, "eps_label": "0.4", "model": "CNN7",
     "method": "improved IBP (Shi et al. 2021)", "certified_error_published_range": [10.82, 10.98]},
    {"dataset": "CIFAR-10", "eps": 8 / 255, "eps_label": "8/255", "model": "CNN7",
     "method": "improved IBP (Shi et al. 2021)", "certified_error_published_range": [65.03, 65.05]},
]

# field -> leaf key names (lower case, '-' read as '_') that hold it, most specific first
ALIASES = {
    "dataset": ["dataset", "data_set", "data"],
    "eps": ["eps_test", "test_eps", "eval_eps", "eps", "epsilon", "eps_max", "eps_train"],
    "model": ["model", "model_name", "arch", "architecture", "net"],
    "method": ["method", "training_method", "train_method"],
    "epochs": ["epochs", "num_epochs", "n_epochs", "epoch"],
    "wall_time_s": ["wall_time_s", "wall_s", "train_time_s", "training_time_s", "train_s",
                    "train_seconds", "wall_seconds", "total_time_s", "elapsed_s", "time_s"],
    "clean_error": ["clean_error", "clean_err", "err_clean", "error_clean", "natural_error",
                    "std_error", "standard_error", "test_error"],
    "pgd_error": ["pgd_error", "pgd_err", "err_pgd", "error_pgd", "attack_error",
                  "adversarial_error", "adv_error"],
    "certified_error_ibp": ["certified_error_ibp", "verified_error_ibp", "ibp_certified_error",
                            "ibp_verified_error", "cert_err_ibp", "ver_err_ibp", "ibp_error",
                            "ibp_err", "err_ibp"],
    "certified_error_crown": ["certified_error_crown", "verified_error_crown",
                              "crown_certified_error", "crown_verified_error", "cert_err_crown",
                              "ver_err_crown", "crown_error", "crown_err", "err_crown"],
}
# accuracies that can stand in for a missing error (error = 1 - accuracy)
ACC_ALIASES = {
    "clean_error": ["clean_acc", "clean_accuracy", "test_acc", "test_accuracy"],
    "pgd_error": ["pgd_acc", "pgd_accuracy", "robust_acc", "adv_acc"],
    "certified_error_ibp": ["certified_acc_ibp", "verified_acc_ibp", "ibp_verified_acc",
                            "ibp_certified_acc"],
    "certified_error_crown": ["certified_acc_crown", "verified_acc_crown",
                              "crown_verified_acc", "crown_certified_acc"],
}
ERROR_FIELDS = ("clean_error", "pgd_error", "certified_error_ibp", "certified_error_crown")
RECORD_LISTS = ("results", "runs", "rows", "records", "experiments")
EVAL_LISTS = ("evals", "evaluations", "eval", "evaluation", "test", "metrics")


def _norm(key: str) -> str:
    return key.lower().replace("-", "_").replace(" ", "_")


def _flatten(d: dict, prefix=()) -> dict[tuple, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (_norm(str(k)),)))
        else:
            out[prefix + (_norm(str(k)),)] = v
    return out


def _lookup(flat: dict[tuple, object], names: list[str], numeric=False):
    """The value of the shallowest key whose leaf is the first matching name (numbers only if
    ``numeric``, else strings only); nested keys like ``("final", "ibp", "certified_error")``
    also match ``ibp_certified_error``."""
    for name in names:
        hits = []
        for path, v in flat.items():
            joined = "_".join(path[-2:]) if len(path) >= 2 else path[-1]
            if path[-1] == name or joined == name:
                is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
                if (numeric and not is_num) or (not numeric and not isinstance(v, str)):
                    continue
                hits.append((len(path), v))
        if hits:
            return min(hits, key=lambda h: h[0])[1]
    return None


def _expand(records: list[dict]) -> list[dict]:
    """Records holding a list of evaluations (one per eps) become one record per evaluation,
    with the parent's fields."""
    out = []
    for r in records:
        sub = next((r[k] for k in EVAL_LISTS if isinstance(r.get(k), list)
                    and r[k] and all(isinstance(e, dict) for e in r[k])), None)
        if sub is None:
            out.append(r)
            continue
        parent = {k: v for k, v in r.items() if k not in EVAL_LISTS}
        for e in sub:
            out.append({**parent, **e})
    return out


def find_records(data) -> list[dict]:
    """Run records in a training-results JSON (list, list under a usual key, or a dict of runs
    keyed by name)."""
    if isinstance(data, list):
        return _expand([r for r in data if isinstance(r, dict)])
    if not isinstance(data, dict):
        return []
    for key in RECORD_LISTS:
        v = data.get(key)
        if isinstance(v, list):
            return _expand([r for r in v if isinstance(r, dict)])
        if isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values()):
            return _expand([{"name": k, **r} for k, r in v.items()])
    if any(_lookup(_flatten(data), ALIASES[f], numeric=True) is not None for f in ERROR_FIELDS):
        return _expand([data])  # a single run
    return []


def eps_label(eps, dataset) -> str:
    if eps is None:
        return ""
    k = eps * 255
    if "cifar" in str(dataset).lower() and eps > 0 and abs(k - round(k)) < 1e-3:
        return f"{round(k)}/255"
    return f"{eps:g}"


def normalise(rec: dict, percent: bool | None = None, defaults: dict | None = None) -> dict:
    """One table row from a run record: errors in percent (``*_pct``), None where absent.
    ``percent``: whether the record's errors are already percentages (None: guess, True when
    any error or accuracy value exceeds 1)."""
    flat = _flatten({**(defaults or {}), **rec})
    row = {"source": "measured"}
    for f in ("dataset", "model", "method"):
        row[f] = _lookup(flat, ALIASES[f])
    for f in ("eps", "epochs", "wall_time_s"):
        row[f] = _lookup(flat, ALIASES[f], numeric=True)
    errs = {}
    for f in ERROR_FIELDS:
        v = _lookup(flat, ALIASES[f], numeric=True)
        if v is not None:
            errs[f] = ("error", float(v))
        else:
            a = _lookup(flat, ACC_ALIASES[f], numeric=True)
            if a is not None:
                errs[f] = ("acc", float(a))
    if percent is None:
        percent = any(v > 1.0 for _, v in errs.values())
    full = 100.0 if percent else 1.0
    for f in ERROR_FIELDS:
        if f in errs:
            kind, v = errs[f]
            v = v if kind == "error" else full - v
            row[f + "_pct"] = v * (1.0 if percent else 100.0)
        else:
            row[f + "_pct"] = None
    row["num_examples"] = _lookup(flat, ["num_examples", "n_test", "test_examples"], numeric=True)
    row["num_examples_crown"] = _lookup(flat, ["num_examples_crown"], numeric=True)
    row["eps_label"] = eps_label(row["eps"], row["dataset"])
    return row


def collect(path: Path) -> tuple[list[dict], str]:
    """Measured rows from a training-results file, and a note on what was read."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return [], f"`{path.name}` not found: no CPU-scale runs to show yet"
    except (OSError, json.JSONDecodeError) as e:
        return [], f"`{path.name}` could not be read ({e})"
    recs = find_records(data)
    percent = None
    if isinstance(data, dict):
        unit = str(data.get("error_unit") or data.get("units") or "").lower()
        percent = True if unit.startswith(("percent", "%")) else \
            False if unit.startswith("frac") else None
    defaults = {k: data[k] for k in ("dataset", "model", "method", "epochs", "eps")
                if isinstance(data, dict) and k in data and not isinstance(data[k], (dict, list))}
    rows = [normalise(r, percent, defaults) for r in recs]
    rows = [r for r in rows if any(r[f + "_pct"] is not None for f in ERROR_FIELDS)]
    if not rows:
        return [], f"`{path.name}` holds no run with error figures"
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
    measured, note = collect(src)
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
