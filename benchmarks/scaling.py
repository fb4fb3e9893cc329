"""Scaling benchmark: how time and peak memory of IBP, CROWN-IBP and full CROWN grow with
network width, depth and input size.

Four sweeps (one image, l-inf eps = 0.01 on inputs in [0, 1], margins f_y - f_j of 10 classes,
random PyTorch-default weights):

* ``mlp_width``: MLP with two hidden layers of width w = 64 .. 1024 (1x28x28 input);
* ``mlp_depth``: MLP with d = 2 .. 8 hidden layers of width 256 (1x28x28 input);
* ``cnn_depth``: d = 2 .. 8 convolutions (3x3, padding 1, 8 channels) + a linear layer
  (1x12x12 input);
* ``cnn_input``: ``cnn_4layer`` on 3-channel images of side 8 .. 32 px.

Every point runs in a fresh process (so its memory is its own). In that process each method
runs in turn, cheapest first; before each the peak-RSS mark is reset (Linux
``/proc/self/clear_refs``), so the *extra peak* of a method is its own high-water mark minus
the resident size before it started. Time is one run, or the median of 3-5 runs when a run
takes under a second. A point that times out keeps the methods it finished; larger points on
the same sweep then skip the method that timed out.

From the measured points the benchmark fits the log-log slope of time and of extra peak memory
against the swept size (over all points, and over the largest three, which is what the
extrapolation uses) and extrapolates, clearly labelled as such, to twice the largest size and to
the size at which full CROWN would fill the machine's RAM.

    python -m benchmarks.scaling            # writes results/scaling.{json,md,png}
    python -m benchmarks.scaling --quick    # tiny sweeps (about a minute)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .common import (machine_stamp, md_table, mem_total_mb, reset_peak_rss, rss_now_mb,
                     run_isolated, window_peak_rss_mb, write_results)

METHODS = ("ibp", "crown-ibp", "crown")

# sweep name -> x label, sizes of the full and the quick run (models: see model_spec)
AXES = {
    "mlp_width": dict(x_label="hidden width", full=[64, 128, 256, 512, 1024], quick=[32, 64, 128]),
    "mlp_depth": dict(x_label="hidden layers", full=[2, 3, 4, 6, 8], quick=[2, 4]),
    "cnn_depth": dict(x_label="conv layers", full=[2, 3, 4, 6, 8], quick=[2, 4]),
    "cnn_input": dict(x_label="input side (px)", full=[8, 12, 16, 20, 24, 28, 32],
                      quick=[8, 12, 16]),
}


def model_spec(axis: str, x: int, quick: bool = False) -> dict:
    """The model of sweep ``axis`` at size ``x`` as a JSON-able spec (see :func:`build_model`)."""
    if axis == "mlp_width":
        return {"kind": "mlp", "hidden": [x, x], "in_channels": 1, "in_size": 12 if quick else 28}
    if axis == "mlp_depth":
        w = 64 if quick else 256
        return {"kind": "mlp", "hidden": [w] * x, "in_channels": 1, "in_size": 12 if quick else 28}
    if axis == "cnn_depth":
        return {"kind": "conv", "depth": x, "channels": 4 if quick else 8, "in_channels": 1,
                "in_size": 8 if quick else 12}
    if axis == "cnn_input":
        return {"kind": "zoo", "name": "cnn_4layer", "in_channels": 3, "in_size": x}
    raise ValueError(f"unknown axis {axis!r}; known: {', '.join(AXES)}")


def axis_title(axis: str, quick: bool = False) -> str:
    """What a sweep varies and what it keeps, e.g. ``MLP, 2 hidden layers, 1x28x28: width``."""
    spec = model_spec(axis, AXES[axis]["quick" if quick else "full"][0], quick)
    img = f"{spec['in_channels']}x{spec['in_size']}x{spec['in_size']}"
    return {"mlp_width": f"MLP, 2 hidden layers, {img}: width",
            "mlp_depth": f"MLP, width {spec.get('hidden', [0])[0]}, {img}: depth",
            "cnn_depth": f"CNN, {spec.get('channels')} channels, {img}: depth",
            "cnn_input": f"cnn_4layer, {spec['in_channels']} channels: input size"}[axis]


def build_model(spec: dict):
    """An ``nn.Module`` (eval mode) from a spec: ``kind`` mlp (``hidden`` widths), conv
    (``depth`` 3x3 convolutions of ``channels`` channels, then a linear layer) or zoo (``name``
    of :mod:`models`); all take ``in_channels``, ``in_size`` and 10 classes."""
    import torch.nn as nn

    import models

    c, s = spec["in_channels"], spec["in_size"]
    if spec["kind"] == "mlp":
        return models.mlp(in_channels=c, in_size=s, hidden=spec["hidden"]).eval()
    if spec["kind"] == "conv":
        layers, ch = [], c
        for _ in range(spec["depth"]):
            layers += [nn.Conv2d(ch, spec["channels"], 3, padding=1), nn.ReLU()]
            ch = spec["channels"]
        layers += [nn.Flatten(), nn.Linear(ch * s * s, 10)]
        return nn.Sequential(*layers).eval()
    if spec["kind"] == "zoo":
        return models.get_model(spec["name"], in_channels=c, in_size=s).eval()
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def _relu_counts(bm, intervals) -> tuple[int, int]:
    """(ReLU neurons per image, of which unstable under the given intervals) of a bound graph:
    a ReLU input whose interval contains 0 strictly inside."""
    total = unstable = 0
    for n in bm.graph.nodes.values():
        if n.kind == "op" and repr(n.op).split("[")[0] == "relu" and n.inputs[0] in intervals:
            iv = intervals[n.inputs[0]]
            total += iv.lower[0].numel()
            unstable += int(((iv.lower[0] < 0) & (iv.upper[0] > 0)).sum())
    return total, unstable


def _timed(fn) -> tuple[float, float, float, object]:
    """(time, peak RSS during the first run, RSS before it, result of the first run). Runs
    once; if that took under a second, 3 (under 0.1 s: 5) more and reports the median."""
    rss_before = rss_now_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0
    peak = window_peak_rss_mb()
    if first >= 1.0:
        return first, peak, rss_before, res
    times = []
    for _ in range(5 if first < 0.1 else 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], peak, rss_before, res


def run_one(spec: dict, methods=METHODS, eps: float = 0.01, batch: int = 1, seed: int = 0,
            threads: int = 2, emit=None) -> dict:
    """Measure one point: trace the model of ``spec``, time its forward pass and each method.

    Returns ``{"spec", "params", "relu_neurons", "unstable_ibp", "forward_s", "rss_base_mb",
    <method>: {"time_s", "peak_rss_mb", "extra_mb", "mean_width"}}``. ``emit`` (if given) is
    called with the header and with ``{"method": m, ...}`` after each method, so that a parent
    process keeps what finished before a timeout."""
    import torch

    import boundgraph as bg

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(spec)
    x = torch.rand(batch, spec["in_channels"], spec["in_size"], spec["in_size"])
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(eps, 0.0, 1.0)
    out = {"spec": spec, "batch": batch, "eps": eps,
           "params": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():
        y = model(x).argmax(1)
        C = bg.margin_spec(y, 10)
        _, _, iv = bm.compute_bounds(x, ptb, method="ibp", return_intermediate=True)
        out["relu_neurons"], out["unstable_ibp"] = _relu_counts(bm, iv)
        out["forward_s"] = _timed(lambda: model(x))[0]
        out["rss_base_mb"] = round(rss_now_mb(), 1)
        if emit:
            emit(dict(out))
        for m in methods:
            t, peak, before, (lb, ub) = _timed(lambda: bm.compute_bounds(x, ptb, method=m, C=C))
            r = {"time_s": t, "peak_rss_mb": round(peak, 1),
                 "extra_mb": round(max(peak - before, 0.0), 1),
                 "mean_width": (ub - lb).mean().item()}
            out[m] = r
            if emit:
                emit({"method": m, **r})
    return out


# -------------------------------------------------------------------------------------- fits
def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope b of log y = a + b log x (None with fewer than 2 distinct x)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


# smallest values treated as measured rather than noise
FLOOR = {"time_s": 1e-4, "extra_mb": 2.0}
# memory slopes below this are "flat": no size at which RAM runs out is predicted
MIN_SLOPE = 0.3
# predictions further than this factor beyond the largest measured size are not printed
MAX_EXTRAPOLATION = 1000


def fit_growth(points: list[dict], mem_total: float | None) -> list[dict]:
    """Per sweep and method: log-log slopes of time and extra memory (all points and the
    largest three) and extrapolations from the largest-three fit through the largest point."""
    fits = []
    for axis in AXES:
        pts = sorted((p for p in points if p["axis"] == axis), key=lambda p: p["x"])
        for m in METHODS:
            row = {"axis": axis, "method": m}
            for key in ("time_s", "extra_mb"):
                xy = [(p["x"], p[m][key]) for p in pts if isinstance(p.get(m), dict)
                      and p[m].get(key) is not None and p[m][key] >= FLOOR[key]]
                row[f"{key}_points"] = len(xy)
                row[f"{key}_slope_all"] = loglog_slope(*zip(*xy)) if len(xy) >= 2 else None
                tail = xy[-3:]
                b = loglog_slope(*zip(*tail)) if len(tail) >= 2 else None
                row[f"{key}_slope_tail"] = b
                if b is None:
                    continue
                x1, y1 = tail[-1]
                row[f"{key}_at_2x"] = {"x": 2 * x1, "value": y1 * 2 ** b}  # extrapolated
                if key == "extra_mb" and mem_total and b >= MIN_SLOPE:
                    base = next(p["rss_base_mb"] for p in reversed(pts) if p["x"] == x1)
                    room = mem_total - base
                    if room > y1:
                        row["x_at_ram"] = x1 * (room / y1) ** (1 / b)  # extrapolated
            fits.append(row)
    return fits


# ------------------------------------------------------------------------------------ driver
def plan(quick: bool, axes=None) -> list[tuple[str, int]]:
    return [(a, x) for a in (axes or AXES) for x in AXES[a]["quick" if quick else "full"]]


def run_plan(points_plan, eps, batch, timeout, quick=False, progress=True) -> list[dict]:
    """Run each (axis, size) in a fresh process; a method that timed out (or failed) on a
    sweep is skipped at the larger sizes of that sweep, and so are the dearer methods."""
    from tqdm import tqdm

    dropped: dict[str, dict[str, str]] = {}  # axis -> method -> why
    points = []
    for axis, x in tqdm(points_plan, desc="scaling points", unit="point", disable=not progress):
        skip = dropped.setdefault(axis, {})
        methods = [m for m in METHODS if m not in skip]
        cfg = {"spec": model_spec(axis, x, quick=quick), "methods": methods, "eps": eps,
               "batch": batch}
        objs, error = run_isolated("benchmarks.scaling", cfg, timeout=timeout) if methods \
            else ([], "")
        p = {"axis": axis, "x": x}
        if objs:
            p.update(objs[0])
        for o in objs[1:]:
            m = o.pop("method", None)
            if m:
                p[m] = o
        failed = None
        for m in METHODS:
            if m in p:
                continue
            if m in skip:
                p[m] = {"error": f"skipped ({skip[m]} at a smaller size)"}
            elif failed is None:  # the first method not finished is the one that failed
                failed = m
                p[m] = {"error": error or "no result"}
                skip[m] = "timed out" if error.startswith("timeout") else "failed"
            else:
                p[m] = {"error": f"not run ({failed} did not finish)"}
                skip[m] = f"{failed} did not finish"
        points.append(p)
    return points


def _fmt(v, spec="{:.3g}"):
    return "" if v is None else spec.format(v)


def make_table(payload: dict) -> str:
    st = payload["machine"]
    mem = payload.get("mem_total_mb")
    quick = payload.get("quick")
    lines = [
        f"# Scaling benchmark{' (quick)' if quick else ''}",
        "",
        "**Measured**: time and peak memory of each bound method on one image "
        f"(batch {payload['batch']}), l-inf eps = {payload['eps']} on inputs in [0, 1], margins "
        "f_y - f_j of 10 classes, random default-initialised weights. Each point is a fresh "
        "process; before each method the peak-RSS mark is reset, so *extra peak* = the method's "
        "own high-water mark minus the resident size before it (the process's baseline, about "
        f"{payload.get('baseline_mb', 0):.0f} MB of Python + torch, is not included). Time: one "
        "run, or the median of 3-5 runs for runs under a second. *Unstable* = ReLU inputs whose "
        "IBP interval contains 0 (what makes CROWN's intermediate passes expensive).",
        "",
        f"Machine: {st['cpu']}, {st['torch_threads']} threads, "
        f"{(mem or 0) / 1024:.1f} GB RAM, torch {st['torch']}, commit {st['commit']}, "
        f"{st['date']}.",
        f"Command: `{payload['command']}`",
        "",
        "## Measured points",
        "",
    ]
    titles = {a["name"]: a["title"] for a in payload["axes"]}
    rows = []
    for p in payload["points"]:
        for m in METHODS:
            r = p.get(m) or {}
            desc = titles.get(p["axis"], p["axis"]).split(":")[0]
            if "error" in r:
                rows.append([p["axis"], desc, p["x"], p.get("relu_neurons", ""),
                             p.get("unstable_ibp", ""), m, r["error"], "", "", ""])
            else:
                rows.append([p["axis"], desc, p["x"], p.get("relu_neurons", ""),
                             p.get("unstable_ibp", ""), m, f"{r['time_s'] * 1e3:.2f}",
                             f"{r['peak_rss_mb']:.0f}", f"{r['extra_mb']:.1f}",
                             f"{r['mean_width']:.3g}"])
    lines.append(md_table(["sweep", "model", "size", "ReLU neurons", "unstable (IBP)", "method",
                           "time (ms)", "peak RSS (MB)", "extra peak (MB)", "mean width"], rows))
    lines += [
        "## Fitted growth (from the measured points)",
        "",
        "Log-log least-squares slope b in cost ~ size^b, over all measured points of a sweep and "
        "over its largest three (the better guide to the asymptote: small points are dominated "
        f"by fixed overheads). Points under {FLOOR['time_s'] * 1e3:g} ms or "
        f"{FLOOR['extra_mb']:g} MB extra are below the measurement's resolution and left out.",
        "",
    ]
    frows = [[f["axis"], f["method"], _fmt(f["time_s_slope_all"], "{:.2f}"),
              _fmt(f["time_s_slope_tail"], "{:.2f}"), _fmt(f["extra_mb_slope_all"], "{:.2f}"),
              _fmt(f["extra_mb_slope_tail"], "{:.2f}"), f["extra_mb_points"]]
             for f in payload["fits"]]
    lines.append(md_table(["sweep", "method", "time slope (all)", "time slope (largest 3)",
                           "memory slope (all)", "memory slope (largest 3)",
                           "points above memory floor"], frows))
    lines += [
        "## Extrapolated (NOT measured)",
        "",
        "Predictions from the largest-three fit, anchored at the largest measured point: cost at "
        "twice the largest measured size, and the size at which the method's extra peak plus "
        f"the process baseline would reach this machine's RAM ({(mem or 0) / 1024:.1f} GB). "
        f"Memory slopes under {MIN_SLOPE} count as flat (no RAM limit predicted). "
        "Power laws fitted on a short range can be far off; full CROWN chunks its coefficient "
        "tensors (``max_elements``), so its memory may level off while its time keeps growing. "
        "Use these as an order of magnitude, and measure before relying on one.",
        "",
    ]
    erows = []
    for f in payload["fits"]:
        t2, m2 = f.get("time_s_at_2x"), f.get("extra_mb_at_2x")
        if not (t2 or m2 or f.get("x_at_ram")):
            continue
        x2 = (t2 or m2)["x"]
        ram = f.get("x_at_ram")
        if ram is None:
            ram_s = "flat or unmeasured" if m2 else ""
        elif ram > MAX_EXTRAPOLATION * x2 / 2:
            ram_s = f"> {MAX_EXTRAPOLATION}x the largest measured"
        else:
            ram_s = f"~{ram:,.0f}"
        erows.append([f["axis"], f["method"], x2, _fmt(t2 and t2["value"] * 1e3, "{:.3g}"),
                      _fmt(m2 and m2["value"], "{:.3g}"), ram_s])
    lines.append(md_table(["sweep", "method", "size (2x largest)", "predicted time (ms)",
                           "predicted extra peak (MB)", "size filling RAM (predicted)"], erows))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sweeps, about a minute")
    p.add_argument("--axes", nargs="+", choices=list(AXES), help="sweeps to run (default all)")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per point (default 600, quick 60)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON config for one process
    args = p.parse_args(argv)
    if args.one:
        cfg = json.loads(args.one)

        def emit(obj):
            print(json.dumps(obj), flush=True)

        run_one(**cfg, emit=emit)
        return 0

    timeout = args.timeout or (60 if args.quick else 600)
    points = run_plan(plan(args.quick, args.axes), args.eps, args.batch, timeout, args.quick)
    mem = mem_total_mb()
    bases = [p["rss_base_mb"] for p in points if "rss_base_mb" in p]
    payload = {
        "benchmark": "scaling", "quick": args.quick, "machine": machine_stamp(),
        "command": "python -m benchmarks.scaling" + (" " + " ".join(argv if argv is not None
                                                                    else sys.argv[1:])).rstrip(),
        "eps": args.eps, "batch": args.batch, "timeout_s": timeout, "mem_total_mb": mem,
        "baseline_mb": min(bases) if bases else 0.0,
        "axes": [{"name": a, "title": axis_title(a, args.quick), "x_label": AXES[a]["x_label"]}
                 for a in (args.axes or AXES)],
        "points": points,
    }
    payload["fits"] = fit_growth(points, mem)
    table = make_table(payload)
    name = "scaling_quick" if args.quick else "scaling"
    jp, mp = write_results(name, payload, table)
    from .plots import plot_scaling

    png = plot_scaling(jp)
    print(table)
    print(f"wrote {jp}, {mp}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
