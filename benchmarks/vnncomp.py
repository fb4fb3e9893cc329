"""VNN-COMP benchmark: run the verifier on the instances of an expected-answers csv.

    python -m benchmarks.vnncomp                       # /work/shared/vnncomp/expected.csv, 60 s
    python -m benchmarks.vnncomp --timeout 30 --family acasxu
    python -m benchmarks.vnncomp --csv my/instances.csv --out-name mine

The csv has a header with ``onnx`` and ``vnnlib`` columns (paths relative to the csv) and,
optionally, ``expected`` (``sat``/``unsat``) and ``timeout``. Per family (the first folder of
the onnx path) it reports: proved (``unsat``), counterexamples found (``sat``, each re-checked
here with onnxruntime), unknown, timeout, errors, **wrong answers** (an ``unsat`` on a ``sat``
instance, a ``sat`` on an ``unsat`` one, or a counterexample onnxruntime does not confirm: must
be 0) and mean time. Writes ``benchmarks/results/vnncomp.json`` and ``vnncomp.md``; when a
previous result file of the same name exists, the Markdown also compares each family with it
(before and after, with both commits), and the JSON keeps that summary under ``previous``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import OrderedDict

DEFAULT_CSV = os.environ.get("BOUNDGRAPH_VNNCOMP_CSV", "/work/shared/vnncomp/expected.csv")


def _check_counterexample(bm, prop, x) -> bool:
    import numpy as np

    info = bm.model.onnx_info
    y = info.run(np.asarray(x, np.float64).astype(np.float32 if str(info.dtype) ==
                                                  "torch.float32" else np.float64)
                 .reshape(1, *info.sample_shape))[0]
    return bool(prop.is_counterexample(x, y, tol=0.0))


def run(csv_path: str, timeout: float, method: str = "auto", families=None, limit=None,
        progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm

    from boundgraph.errors import BoundGraphError
    from boundgraph.frontends.onnx_import import load_onnx
    from boundgraph.instances import read_instances
    from boundgraph.verify import verify
    from boundgraph.vnnlib import parse_vnnlib

    rows = read_instances(csv_path, timeout)
    if families:
        rows = [r for r in rows if r["onnx"].split("/")[0] in families]
    if limit:
        rows = rows[:limit]
    results = []
    bar = tqdm(rows, desc="vnncomp", unit="inst", disable=not progress)
    for rec in bar:
        family = rec["onnx"].split("/")[0] if "/" in rec["onnx"] else "."
        t = min(rec["timeout"], timeout)
        entry = {"family": family, "onnx": rec["onnx"], "vnnlib": rec["vnnlib"],
                 "expected": rec.get("expected", ""), "timeout": t}
        t0 = time.perf_counter()
        try:
            prop = parse_vnnlib(rec["vnnlib_path"])
            res = verify(rec["onnx_path"], prop, timeout=t, method=method)
            entry.update(verdict=res.verdict, time=round(res.time, 3),
                         stage=res.details.get("stage", ""),
                         boxes=res.details.get("boxes", res.details.get("bounded_boxes", 0)))
            if res.verdict == "sat":
                bm = load_onnx(rec["onnx_path"], check=False)
                entry["counterexample_valid"] = _check_counterexample(
                    bm, prop, res.counterexample[0])
        except (BoundGraphError, ValueError, OSError, RuntimeError) as e:
            entry.update(verdict="error", time=round(time.perf_counter() - t0, 3),
                         stage=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
        exp = entry["expected"]
        entry["wrong"] = bool(
            (entry["verdict"] == "unsat" and exp == "sat") or
            (entry["verdict"] == "sat" and (exp == "unsat" or
                                            not entry.get("counterexample_valid", False))))
        results.append(entry)
        bar.set_postfix_str(f"{family} {entry['verdict']} {entry['time']:.1f}s")
    return {"instances": results, "families": summarise(results), "timeout": timeout,
            "method": method, "csv": csv_path, "torch_threads": torch.get_num_threads()}


def summarise(results) -> "OrderedDict[str, dict]":
    fams: OrderedDict[str, dict] = OrderedDict()
    for r in results + [dict(r, family="all") for r in results]:
        f = fams.setdefault(r["family"], {"instances": 0, "expected_unsat": 0, "expected_sat": 0,
                                          "proved": 0, "counterexamples": 0, "unknown": 0,
                                          "timeout": 0, "error": 0, "wrong": 0, "times": []})
        f["instances"] += 1
        f["expected_unsat"] += r["expected"] == "unsat"
        f["expected_sat"] += r["expected"] == "sat"
        v = r["verdict"]
        if r["wrong"]:
            f["wrong"] += 1
        elif v == "unsat":
            f["proved"] += 1
        elif v == "sat":
            f["counterexamples"] += 1
        else:
            f[v if v in ("unknown", "timeout") else "error"] += 1
        f["times"].append(r["time"])
    for f in fams.values():
        times = f.pop("times")
        f["mean_time"] = round(sum(times) / max(1, len(times)), 3)
        f["total_time"] = round(sum(times), 2)
    return fams


def markdown(report: dict, stamp: dict, command: str) -> str:
    lines = ["# VNN-COMP instances", "",
             f"Verifier: `boundgraph.verify` (method {report['method']}: attack, IBP, CROWN-IBP, "
             "CROWN, then input bisection for inputs of at most 32 dimensions, alpha-CROWN and "
             "branch and bound on ReLU splits for larger ones), per-instance "
             f"timeout {report['timeout']:g} s, float64 bounds.",
             f"Machine: {stamp.get('cpu', '?')}, {stamp.get('cores', '?')} cores (shared), "
             f"torch {stamp.get('torch', '?')}, commit {stamp.get('commit', '?')}, "
             f"{stamp.get('date', '')}.", f"Command: `{command}`", "",
             "| family | instances | unsat expected | sat expected | proved (unsat) | "
             "counterexamples (sat) | unknown | timeout | error | wrong | mean time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, f in report["families"].items():
        lines.append(f"| {name} | {f['instances']} | {f['expected_unsat']} | {f['expected_sat']} "
                     f"| {f['proved']} | {f['counterexamples']} | {f['unknown']} | "
                     f"{f['timeout']} | {f['error']} | {f['wrong']} | {f['mean_time']:.2f} |")
    prev = report.get("previous")
    if prev:
        lines += ["", f"Against the previous run (commit {prev.get('commit', '?')}, "
                      f"{prev.get('date', '?')}; before -> after):", "",
                  "| family | proved | counterexamples | unknown | timeout | wrong | "
                  "mean time (s) |", "|---|---|---|---|---|---|---|"]
        for name, f in report["families"].items():
            b = prev["families"].get(name)
            if b is None:
                continue
            cells = [f"{b[k]} -> {f[k]}" for k in ("proved", "counterexamples", "unknown",
                                                    "timeout", "wrong")]
            lines.append(f"| {name} | " + " | ".join(cells)
                         + f" | {b['mean_time']:.2f} -> {f['mean_time']:.2f} |")
    lines += ["", "Per instance:", "",
              "| onnx | vnnlib | expected | verdict | time (s) | stage |",
              "|---|---|---|---|---|---|"]
    for r in report["instances"]:
        mark = " **WRONG**" if r["wrong"] else ""
        lines.append(f"| {r['onnx']} | {r['vnnlib']} | {r['expected']} | {r['verdict']}{mark} | "
                     f"{r['time']:.2f} | {r['stage']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vnncomp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default=DEFAULT_CSV, help="instances with expected answers")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per instance (cap)")
    p.add_argument("--method", default="auto")
    p.add_argument("--family", action="append", help="only these families (repeatable)")
    p.add_argument("--limit", type=int, help="first N instances only")
    p.add_argument("--out-name", default="vnncomp", help="result file stem (default vnncomp)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.common import machine_stamp, results_dir

    report = run(args.csv, args.timeout, args.method, args.family, args.limit,
                 progress=not args.quiet)
    stamp = machine_stamp()
    report["machine"] = stamp
    command = "python -m benchmarks.vnncomp " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])
    report["command"] = command.strip()
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    old = out / f"{args.out_name}.json"
    if old.exists():
        try:
            before = json.loads(old.read_text())
            report["previous"] = {"families": before["families"],
                                  "commit": before.get("machine", {}).get("commit"),
                                  "date": before.get("machine", {}).get("date")}
        except (ValueError, KeyError):
            pass
    (out / f"{args.out_name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{args.out_name}.md").write_text(markdown(report, stamp, report["command"]))
    for name, f in report["families"].items():
        print(f"{name:10s} {f['instances']:3d} instances: proved {f['proved']}, counterexamples "
              f"{f['counterexamples']}, unknown {f['unknown']}, timeout {f['timeout']}, "
              f"error {f['error']}, wrong {f['wrong']}, mean {f['mean_time']:.2f} s")
    return 1 if report["families"].get("all", {}).get("wrong", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
