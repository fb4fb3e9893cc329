"""Performance guard: cost ratios of the current tree against a committed reference.

Absolute times differ between machines and drift with load; ratios measured in one process
do much less. For a few fixed configurations (below) this times the plain forward pass and
every bound method, and forms each method's time over the forward pass and full CROWN's over
IBP. Each ratio is compared with the one committed in ``benchmarks/guard_reference.json``; the
guard fails (exit status 1) when a ratio is more than ``--factor`` (default 2) times its
reference, which is generous for noise and far below what a real regression costs (the
BatchNorm fall-back to dense coefficients made full CROWN on CNN7 twelve times slower; on the
small CNN7 here the guard measures that tree at 5.4x the reference). A configuration that fails
is measured again, twice at most, and each ratio keeps its smallest value: a load spike passes,
a regression does not.
It is part of the quick suite that CI runs.

    python -m benchmarks.guard              # check; writes guard.{json,md} (guard_quick with --quick)
    python -m benchmarks.guard --update     # re-measure and commit the reference (after a
                                            # deliberate change in cost, with the reason)

Each configuration runs in its own process (``--one``); times are the best of several repeats
after a warm-up (the least disturbed by other load), 2 threads, under ``torch.no_grad()``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import time

from .common import machine_stamp, md_table, run_isolated, write_results, zoo_model

REFERENCE = Path(__file__).resolve().parent / "guard_reference.json"
FACTOR = 2.0
RETRIES = 2  # extra measurements of a configuration that fails, before it counts as failed

#: (model, batch, input size, methods): small enough for CI, each exercising one engine path
#: (dense MLP rows, windows through convolutions, BatchNorm between convolutions)
CONFIGS = [
    ("mlp", 32, 28, ("ibp", "crown-ibp", "crown")),
    ("cnn_4layer", 8, 28, ("ibp", "crown-ibp", "crown")),
    ("cnn7", 1, 16, ("ibp", "crown-ibp", "crown")),
]


def _key(model, batch, size) -> str:
    return f"{model} b{batch} {size}x{size}"


def best_time(fn, repeats: int) -> float:
    """Shortest wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_one(model_name: str, batch: int, in_size: int, methods: list[str],
            repeats: int = 5) -> dict:
    """Times of the forward pass and of each method on one configuration, and their ratios."""
    import torch

    import boundgraph as bg

    torch.set_num_threads(2)
    model = zoo_model(model_name, in_size)
    x = torch.rand(batch, 1, in_size, in_size, generator=torch.Generator().manual_seed(0))
    bm = bg.BoundedModule(model, x)
    out = {"config": _key(model_name, batch, in_size)}
    with torch.no_grad():
        C = bg.margin_spec(model(x).argmax(1), 10)
        ptb = bg.LinfBall(0.01, 0.0, 1.0)
        # enough calls per sample that a sub-millisecond forward pass is measurable
        loops = 50

        def fwd():
            for _ in range(loops):
                model(x)

        t_fwd = best_time(fwd, repeats=max(repeats, 7)) / loops
        times = {}
        for m in methods:
            reps = 3 if m == "crown" else repeats
            times[m] = best_time(lambda: bm.compute_bounds(x, ptb, method=m, C=C),
                                 repeats=reps)
    out["forward_s"] = t_fwd
    out["times_s"] = times
    ratios = {f"{m} / forward": t / t_fwd for m, t in times.items()}
    if "crown" in times and "ibp" in times:
        ratios["crown / ibp"] = times["crown"] / times["ibp"]
    out["ratios"] = ratios
    return out


def _measure(model, batch, size, methods, errors: list) -> dict | None:
    """One configuration in a fresh process; ``None`` (and a line in ``errors``) on failure."""
    objs, error = run_isolated("benchmarks.guard", dict(
        model_name=model, batch=batch, in_size=size, methods=list(methods)))
    if error or not objs:
        errors.append(f"{_key(model, batch, size)}: {error or 'no result'}")
        return None
    return objs[-1]


def compare(measured: list[dict], reference: dict, factor: float) -> list[dict]:
    """One row per ratio: measured, reference, measured / reference and whether it passes."""
    rows = []
    for res in measured:
        ref = reference.get(res["config"], {})
        for name, val in res["ratios"].items():
            r = ref.get(name)
            rows.append({"config": res["config"], "ratio": name, "measured": val,
                         "reference": r, "change": None if r is None else val / r,
                         "ok": r is None or val <= factor * r})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="the same check (it is small already), written as guard_quick.*")
    p.add_argument("--update", action="store_true",
                   help=f"write the measured ratios to {REFERENCE.name} instead of checking")
    p.add_argument("--factor", type=float, default=FACTOR,
                   help=f"largest allowed measured / reference ratio (default {FACTOR:g})")
    p.add_argument("--reference", default=str(REFERENCE), help=argparse.SUPPRESS)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON config for one subprocess
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))))
        return 0

    measured, errors = [], []
    for model, batch, size, methods in CONFIGS:
        res = _measure(model, batch, size, methods, errors)
        if res is not None:
            measured.append(res)
    stamp = machine_stamp()
    ref_path = Path(args.reference)
    if args.update:
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        ref = {"machine": stamp, "note": "ratios: method time / forward time, full CROWN "
               "time / IBP time, best of repeats in one process",
               **{m["config"]: m["ratios"] for m in measured}}
        ref_path.write_text(json.dumps(ref, indent=2) + "\n")
        print(f"wrote {ref_path}")
        return 0
    try:
        reference = json.loads(ref_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read the reference {ref_path}: {e}", file=sys.stderr)
        return 1
    rows = compare(measured, reference, args.factor)
    # a real regression persists; a load spike does not: measure a failing configuration
    # again (up to RETRIES times) and keep each ratio's smallest value
    for _ in range(RETRIES):
        failing = {r["config"] for r in rows if not r["ok"]}
        if not failing:
            break
        for i, res in enumerate(measured):
            if res["config"] not in failing:
                continue
            model, batch, size, methods = next(c for c in CONFIGS if _key(*c[:3]) == res["config"])
            again = _measure(model, batch, size, methods, [])
            if again is not None:
                res["ratios"] = {k: min(v, again["ratios"].get(k, v))
                                 for k, v in res["ratios"].items()}
                res["attempts"] = res.get("attempts", 1) + 1
        rows = compare(measured, reference, args.factor)
    bad = [r for r in rows if not r["ok"]]
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    ref_stamp = reference.get("machine", {})
    table = (f"# Performance guard\n\nEach ratio measured in one process and compared with the "
             f"committed reference (`benchmarks/{REFERENCE.name}`, commit "
             f"{ref_stamp.get('commit', '?')}, {ref_stamp.get('cpu', '?')}); it fails above "
             f"{args.factor:g}x the reference.\nMachine: {stamp['cpu']}, "
             f"{stamp['torch_threads']} threads, torch {stamp['torch']}, commit "
             f"{stamp['commit']}, {stamp['date']}.\nCommand: `python -m benchmarks.guard"
             f"{' --quick' if args.quick else ''}`\n\n"
             + md_table(["configuration", "ratio", "measured", "reference", "measured / ref",
                         "status"],
                        [[r["config"], r["ratio"], fmt(r["measured"]), fmt(r["reference"]),
                          fmt(r["change"]), "ok" if r["ok"] else "**REGRESSION**"]
                         for r in rows]))
    if errors:
        table += "\nErrors:\n" + "\n".join(f"- {e}" for e in errors) + "\n"
    name = "guard_quick" if args.quick else "guard"
    write_results(name, {"machine": stamp, "factor": args.factor, "rows": rows,
                         "measured": measured, "errors": errors}, table)
    print(table)
    if bad or errors:
        print(f"performance guard: {len(bad)} ratio(s) more than {args.factor:g}x their "
              f"reference" + (f", {len(errors)} configuration(s) failed" if errors else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
