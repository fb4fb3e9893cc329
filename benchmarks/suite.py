"""Benchmark suite: runs the benchmarks one after another, each in its own process, and writes
a summary.

Benchmarks (in this order; ``--only`` / ``--skip`` select):

* ``guard``: cost ratios (each method over the forward pass, full CROWN over IBP) against the
  committed reference; fails when one is more than twice its reference (``benchmarks.guard``);
* ``bounds``: time, peak memory and tightness of IBP / CROWN-IBP / CROWN (``benchmarks.bounds``);
* ``scaling``: growth of time and memory with width, depth and input size (``benchmarks.scaling``);
* ``training``: training-step time of certified vs natural training (``benchmarks.training``);
* ``vnncomp``: VNN-COMP instances (``benchmarks.vnncomp``);
* ``peers``: the same bounds through auto_LiRPA, if importable (``benchmarks.peers``);
* ``certified``: certified training results next to published numbers (``benchmarks.certified``).

Each writes ``<name>.json``, ``<name>.md`` and ``<name>.png`` under the results directory
(``benchmarks/results``, or ``--out`` / ``$BOUNDGRAPH_RESULTS_DIR``), stamped with the machine
(CPU model, threads), torch version and git commit. ``--quick`` runs every benchmark at small
sizes within a total time budget (default 300 s; CI runs it) and writes ``*_quick.*`` files, so
that committed full results are never overwritten: a benchmark module of another author that has
no ``--quick`` of its own runs with small settings into a scratch directory, and its files are
copied back with a ``_quick`` suffix. A benchmark whose module does not exist yet is skipped with
a note. The suite's own summary goes to ``suite.{json,md}`` (``suite_quick.*``).

    python -m benchmarks.suite --quick               # all benchmarks, small, < 5 minutes
    python -m benchmarks.suite --only bounds scaling  # full runs of two benchmarks
    boundgraph bench --quick                          # the same from the CLI

Exit status: 0 when every selected benchmark succeeded or was skipped for a stated reason, 1
when one failed or ran out of time.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import RESULTS_ENV, machine_stamp, md_table, results_dir, write_results

ROOT = Path(__file__).resolve().parent.parent
QUICK_BUDGET_S = 300.0


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    what: str
    outputs: tuple[str, ...]  # result base names written in a full run
    plot: str | None = None  # key of benchmarks.plots.PLOTS the suite draws afterwards
    # What the module accepts, declared here (tests/test_bench.py checks it against the
    # module's own parser); the results directory always goes by $BOUNDGRAPH_RESULTS_DIR.
    own_quick: bool = True  # the module has --quick and writes *_quick files itself
    quick_fallback: tuple[str, ...] | None = None  # small settings if it has no --quick
    args: tuple[str, ...] = field(default=())  # extra arguments in every run


BENCHMARKS = [
    Benchmark("guard", "benchmarks.guard",
              "cost ratios against the committed reference (fails on a regression)",
              ("guard",)),
    Benchmark("bounds", "benchmarks.bounds", "time, memory and tightness per model and method",
              ("bounds",), plot="bounds"),
    Benchmark("scaling", "benchmarks.scaling", "growth with width, depth and input size",
              ("scaling",)),
    Benchmark("training", "benchmarks.training",
              "training-step time of certified vs natural training", ("training_speed",),
              plot="training_speed", own_quick=False,
              quick_fallback=("--rounds", "1", "--batches", "2")),
    Benchmark("vnncomp", "benchmarks.vnncomp", "VNN-COMP instances", ("vnncomp",),
              plot="vnncomp", own_quick=False),
    Benchmark("peers", "benchmarks.peers", "same job through auto_LiRPA (if importable)",
              ("peers",)),
    Benchmark("certified", "benchmarks.certified",
              "certified training results vs published numbers", ("certified",)),
]
NAMES = [b.name for b in BENCHMARKS]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The suite's options (shared by ``python -m benchmarks.suite`` and ``boundgraph bench``)."""
    p.add_argument("--quick", action="store_true",
                   help="small sizes within a time budget (CI); writes *_quick.* files")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=NAMES,
                   help=f"run only these benchmarks ({', '.join(NAMES)})")
    p.add_argument("--skip", nargs="+", metavar="NAME", choices=NAMES, default=[],
                   help="leave these benchmarks out")
    p.add_argument("--out", metavar="DIR",
                   help=f"results directory (default: ${RESULTS_ENV} or benchmarks/results)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help=f"total time budget; a benchmark still running when it is spent is "
                        f"stopped and counted as failed (default: {QUICK_BUDGET_S:g} with "
                        "--quick, none otherwise; 0 = none)")
    p.add_argument("--logs", metavar="DIR",
                   help="keep each benchmark's output in DIR/<name>.log (default: discarded "
                        "unless it fails)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite",
                                description=__doc__.splitlines()[0])
    add_arguments(p)
    return p.parse_args(argv)


def selected(args) -> list[Benchmark]:
    names = args.only or NAMES
    return [b for b in BENCHMARKS if b.name in names and b.name not in (args.skip or [])]


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def quick_args(b: Benchmark) -> tuple[list[str] | None, str]:
    """Arguments for a quick run of ``b``, or None (with the reason) when it has no quick
    mode."""
    if b.own_quick:
        return ["--quick"], ""
    if b.quick_fallback is not None:
        return list(b.quick_fallback), f"no --quick; ran with {' '.join(b.quick_fallback)}"
    return None, "the module has no --quick option"


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a benchmark process started in its own session, with its children."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()
    proc.wait()


def _quick_name(path: Path) -> str:
    stem = path.name.split(".", 1)
    base, ext = stem[0], ("." + stem[1]) if len(stem) > 1 else ""
    return (base if base.endswith("_quick") else base + "_quick") + ext


def _tail(path: Path, n=15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _plot(b: Benchmark, out: Path, quick: bool) -> Path | None:
    """Draw the suite-side plot of ``b`` unless its PNG is already newer than its JSON."""
    if not b.plot:
        return None
    from .plots import PLOTS

    name = b.outputs[0] + ("_quick" if quick else "")
    jp, png = out / f"{name}.json", out / f"{name}.png"
    if not jp.exists():
        return None
    if png.exists() and png.stat().st_mtime >= jp.stat().st_mtime:
        return png
    return PLOTS[b.plot](jp, png)


def run_benchmark(b: Benchmark, args, out: Path, timeout: float | None, logdir: Path) -> dict:
    """Run one benchmark module in a subprocess; returns its summary record."""
    rec = {"name": b.name, "module": b.module, "what": b.what, "status": "ok", "note": "",
           "seconds": 0.0, "files": []}
    if not module_exists(b.module):
        rec.update(status="skipped", note=f"`{b.module}` does not exist yet")
        return rec
    env = dict(os.environ)
    env[RESULTS_ENV] = str(out)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", b.module, *b.args]
    scratch = None
    if args.quick:
        qa, note = quick_args(b)
        if qa is None:
            rec.update(status="skipped", note=note)
            return rec
        rec["note"] = note
        cmd += qa
        if not b.own_quick:  # keep committed results safe: write to scratch, copy as *_quick
            scratch = Path(tempfile.mkdtemp(prefix=f"bench-{b.name}-"))
            env[RESULTS_ENV] = str(scratch)
    rec["command"] = " ".join(["python", "-m", b.module, *cmd[3:]])
    log = logdir / f"{b.name}{'_quick' if args.quick else ''}.log"
    before = {p: p.stat().st_mtime for p in out.glob("*") if p.is_file()} if out.exists() else {}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # own session, so that a timeout also stops the benchmark's own subprocesses
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    if rc is None:
        rec.update(status="timeout", note=f"stopped after {timeout:.0f} s (budget)")
    elif rc != 0:
        rec.update(status="failed", note=f"exit status {rc}")
    if rec["status"] != "ok":
        rec["log_tail"] = _tail(log)
    if scratch is not None:
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(scratch.glob("*")):
            if f.is_file():
                shutil.copyfile(f, out / _quick_name(f))
        shutil.rmtree(scratch, ignore_errors=True)
    if rec["status"] == "ok":
        png = _plot(b, out, args.quick)
        if b.plot and png is None:
            rec["note"] = (rec["note"] + "; " if rec["note"] else "") + "no plot"
    after = [p for p in out.glob("*") if p.is_file() and p.suffix in (".json", ".md", ".png")
             and before.get(p) != p.stat().st_mtime and not p.name.startswith("suite")]
    rec["files"] = sorted(p.name for p in after)
    return rec


def make_table(payload: dict) -> str:
    st = payload["machine"]
    rows = []
    for r in payload["benchmarks"]:
        files = ", ".join(f"[{f}]({f})" for f in r["files"] if f.endswith((".md", ".png")))
        rows.append([r["name"], r["what"], r["status"], f"{r['seconds']:.0f}", files,
                     r["note"].replace("|", "/")])
    return (f"# Benchmark suite{' (quick)' if payload['quick'] else ''}\n\n"
            f"Machine: {st['cpu']}, {st['cores']} cores, {st['torch_threads']} torch threads, "
            f"torch {st['torch']}, commit {st['commit']}, {st['date']}. Total "
            f"{payload['seconds']:.0f} s"
            + (f" of a {payload['budget_s']:.0f} s budget" if payload.get("budget_s") else "")
            + f".\nCommand: `{payload['command']}`\n\n"
            + md_table(["benchmark", "measures", "status", "seconds", "results", "note"], rows))


def run(args) -> int:
    """Run the selected benchmarks (``args`` from :func:`add_arguments`); exit status."""
    from tqdm import tqdm

    if args.list:
        for b in BENCHMARKS:
            state = "" if module_exists(b.module) else "  (module not present)"
            print(f"{b.name:<10} {b.what}{state}")
        return 0
    out = Path(args.out).resolve() if args.out else results_dir()
    os.environ[RESULTS_ENV] = str(out)  # this process's writes (summary, plots) go there too
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else (QUICK_BUDGET_S if args.quick else 0)
    keep_logs = bool(args.logs)
    logdir = Path(args.logs) if keep_logs else Path(tempfile.mkdtemp(prefix="bench-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    todo = selected(args)
    records = []
    t0 = time.perf_counter()
    bar = tqdm(todo, desc="benchmark suite", unit="benchmark")
    for b in bar:
        bar.set_postfix_str(b.name)
        left = budget - (time.perf_counter() - t0) if budget else None
        if left is not None and left <= 1:
            rec = {"name": b.name, "module": b.module, "what": b.what, "status": "timeout",
                   "note": "not started: time budget spent", "seconds": 0.0, "files": []}
        else:
            rec = run_benchmark(b, args, out, left, logdir)
        records.append(rec)
        msg = f"{b.name}: {rec['status']} in {rec['seconds']:.0f} s"
        if rec["note"]:
            msg += f" ({rec['note']})"
        tqdm.write(msg)
        if rec.get("log_tail"):
            tqdm.write("  " + rec["log_tail"].replace("\n", "\n  "))
    bar.close()
    total = time.perf_counter() - t0
    payload = {"benchmark": "suite", "quick": args.quick, "machine": machine_stamp(),
               "command": "python -m benchmarks.suite" + (" --quick" if args.quick else "")
               + (f" --only {' '.join(args.only)}" if args.only else "")
               + (f" --skip {' '.join(args.skip)}" if args.skip else ""),
               "budget_s": budget or None, "seconds": round(total, 1), "benchmarks": records}
    name = "suite_quick" if args.quick else "suite"
    if args.only or args.skip:  # a partial run keeps the summary of the last full one
        name += "_partial"
    table = make_table(payload)
    jp, mp = write_results(name, payload, table)
    if not keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    print(table)
    print(f"wrote {jp} and {mp}")
    bad = [r["name"] for r in records if r["status"] in ("failed", "timeout")]
    if bad:
        print(f"benchmarks that did not finish: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
