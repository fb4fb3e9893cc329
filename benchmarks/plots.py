"""PNG plots of benchmark results (matplotlib, Agg backend).

Each ``plot_*`` function reads a result JSON (default: the file of that benchmark under the
results directory, see :func:`benchmarks.common.results_dir`), writes a PNG next to it and
returns its path, or returns None with a message on stderr when matplotlib is not installed or
the file holds nothing to plot. Plots never raise on a malformed or missing result: a benchmark
run is not failed by its figure.

    python -m benchmarks.plots bounds [--quick]     # re-plot one benchmark's results
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import results_dir

METHODS = ("ibp", "crown-ibp", "crown")
COLORS = {"ibp": "#4C72B0", "crown-ibp": "#DD8452", "crown": "#55A868",
          "natural": "#8C8C8C", "improved-ibp": "#C44E52"}


def _safe(fn):
    """A plot never fails the benchmark that asked for it: errors become a message."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # a malformed result or a matplotlib problem
            print(f"{fn.__name__}: could not plot ({type(e).__name__}: {e})", file=sys.stderr)
            return None

    return wrapper


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend, or None (with a message) if missing."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: skipping plots (pip install matplotlib)",
              file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load(json_path: Path) -> dict | None:
    try:
        return json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        print(f"no results at {json_path}: nothing to plot", file=sys.stderr)
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read {json_path}: {e}", file=sys.stderr)
    return None


def _paths(name: str, json_path, png_path) -> tuple[Path, Path]:
    jp = Path(json_path) if json_path else results_dir() / f"{name}.json"
    return jp, Path(png_path) if png_path else jp.with_suffix(".png")


def _stamp_line(data: dict) -> str:
    m = data.get("machine") or {}
    if not m:
        return ""
    return (f"{m.get('cpu', '?')}, {m.get('torch_threads', '?')} threads, torch "
            f"{m.get('torch', '?')}, commit {m.get('commit', '?')}, {m.get('date', '')}")


def _save(fig, plt, png: Path, data: dict) -> Path:
    stamp = _stamp_line(data)
    if stamp:
        fig.text(0.01, 0.005, stamp, fontsize=7, color="#555555", ha="left", va="bottom")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _grouped_bars(ax, groups: list[str], series: dict[str, list], ylabel: str, log=True):
    """Bars of ``series[name][i]`` (None: no bar) for each group i, one colour per series."""
    n = max(1, len(series))
    width = 0.8 / n
    for k, (name, vals) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        if ys:
            ax.bar(xs, ys, width=width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log and any(v is not None and v > 0 for vals in series.values() for v in vals):
        ax.set_yscale("log")
    ax.grid(axis="y", which="both", alpha=0.3)


# ------------------------------------------------------------------------------------ bounds
@_safe
def plot_bounds(json_path=None, png_path=None) -> Path | None:
    """Bars of time / forward time and mean margin width per (model, batch) and method, from
    ``bounds.json`` (``{"machine", "results": [{"model", "batch", "forward_s", "ibp": {...},
    ...}]}``)."""
    jp, png = _paths("bounds", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    rows = [r for r in data.get("results", []) if isinstance(r, dict) and "error" not in r]
    if not rows:
        print(f"{jp}: no successful configurations to plot", file=sys.stderr)
        return None
    groups = [f"{r.get('model', '?')} b{r.get('batch', '?')}"
              + ("" if r.get("norm", "inf") == "inf" else f" l{r['norm']}") for r in rows]

    def col(method, key):
        return [(r.get(method) or {}).get(key) if isinstance(r.get(method), dict) else None
                for r in rows]

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(groups) + 4), 4.6))
    _grouped_bars(a1, groups, {m: col(m, "ratio_to_forward") for m in METHODS},
                  "time / forward pass time (log)")
    a1.axhline(2.2, color=COLORS["ibp"], ls="--", lw=1, label="IBP target 2.2x")
    a1.set_title("cost relative to the forward pass")
    a1.legend(fontsize=8)
    _grouped_bars(a2, groups, {m: col(m, "mean_width") for m in METHODS},
                  "mean width of margin bounds (log)")
    a2.set_title("tightness (lower is tighter)")
    a2.legend(fontsize=8)
    eps = data.get("eps")
    fig.suptitle("Bounds benchmark" + (f", l-inf eps = {eps}" if eps is not None else "")
                 + (f", l2 eps = {data['eps_l2']}" if data.get("eps_l2") is not None else ""))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, plt, png, data)


# ----------------------------------------------------------------------------------- scaling
@_safe
def plot_scaling(json_path=None, png_path=None) -> Path | None:
    """Log-log lines of time and extra peak memory against each swept size, per method."""
    jp, png = _paths("scaling", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    points = [p for p in data.get("points", []) if isinstance(p, dict)]
    axes_names = list(dict.fromkeys(p["axis"] for p in points if "axis" in p))
    if not axes_names:
        print(f"{jp}: no points to plot", file=sys.stderr)
        return None
    labels = {a["name"]: a for a in data.get("axes", []) if isinstance(a, dict)}
    fig, axs = plt.subplots(2, len(axes_names), figsize=(3.6 * len(axes_names) + 1, 6.6),
                            squeeze=False)
    for j, name in enumerate(axes_names):
        pts = sorted((p for p in points if p.get("axis") == name), key=lambda p: p["x"])
        for m in METHODS:
            for i, key in enumerate(("time_s", "extra_mb")):
                xy = [(p["x"], p[m][key]) for p in pts
                      if isinstance(p.get(m), dict) and p[m].get(key) is not None
                      and p[m][key] > 0]
                if xy:
                    axs[i][j].plot(*zip(*xy), "o-", color=COLORS[m], label=m, ms=4)
                failed = [p["x"] for p in pts if isinstance(p.get(m), dict)
                          and p[m].get("error")]
                for x in failed:
                    axs[i][j].axvline(x, color=COLORS[m], ls=":", lw=1)
        info = labels.get(name, {})
        axs[0][j].set_title(info.get("title", name), fontsize=9)
        xs = sorted({p["x"] for p in pts})
        for i in range(2):
            ax = axs[i][j]
            if ax.lines:
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xticks(xs, [str(x) for x in xs], fontsize=8)
                ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.grid(which="both", alpha=0.3)
            ax.set_xlabel(info.get("x_label", "size"), fontsize=8)
        axs[0][j].set_ylabel("time (s, log)" if j == 0 else "")
        axs[1][j].set_ylabel("extra peak RSS (MB, log)" if j == 0 else "")
    axs[0][0].legend(fontsize=8)
    fig.suptitle("Scaling of IBP, CROWN-IBP and full CROWN (measured points; dotted: "
                 "failed or timed out)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return _save(fig, plt, png, data)


# ------------------------------------------------------------------------------------- peers
@_safe
def plot_peers(json_path=None, png_path=None) -> Path | None:
    """Bars of time / forward for boundgraph and the peer library, per model and method."""
    jp, png = _paths("peers", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    rows = [r for r in data.get("results", []) if isinstance(r, dict) and "error" not in r]
    if not data.get("available") or not rows:
        print(f"{jp}: no peer measurements to plot", file=sys.stderr)
        return None
    groups, ours, theirs = [], [], []
    for r in rows:
        for m in METHODS:
            x = r.get(m)
            if isinstance(x, dict):
                groups.append(f"{r['model']} b{r['batch']} {m}")
                ours.append((x.get("boundgraph") or {}).get("ratio_to_forward"))
                theirs.append((x.get("peer") or {}).get("ratio_to_forward"))
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(groups) + 3), 4.6))
    COLORS.setdefault("boundgraph", "#4C72B0")
    COLORS.setdefault(data.get("peer", "peer"), "#C44E52")
    _grouped_bars(ax, groups, {"boundgraph": ours, data.get("peer", "peer"): theirs},
                  "time / forward pass time (log)")
    ax.legend(fontsize=8)
    ax.set_title("Same model, input and method: cost relative to the forward pass")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, plt, png, data)


# --------------------------------------------------------------------------------- certified
@_safe
def plot_certified(json_path=None, png_path=None) -> Path | None:
    """Bars of clean / PGD / certified error per measured run, and the published references."""
    jp, png = _paths("certified", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    rows = [r for r in data.get("rows", []) if isinstance(r, dict)]
    if not rows:
        print(f"{jp}: no rows to plot", file=sys.stderr)
        return None
    keys = [("clean_error_pct", "clean"), ("pgd_error_pct", "PGD"),
            ("certified_error_ibp_pct", "certified (IBP)"),
            ("certified_error_crown_pct", "certified (CROWN)"),
            ("certified_error_published_pct", "certified (published)")]
    groups = []
    for r in rows:
        tag = "" if r.get("source") == "measured" else " [published]"
        method = str(r.get("method")).split(" (")[0]
        ep = f", {r['epochs']} ep" if r.get("epochs") else ""
        groups.append(f"{r.get('dataset')} eps={r.get('eps_label', r.get('eps'))}{ep}\n"
                      f"{r.get('model')} {method}{tag}")
    palette = ["#8C8C8C", "#C44E52", "#4C72B0", "#55A868", "#8172B3"]
    for (k, label), c in zip(keys, palette):
        COLORS.setdefault(label, c)
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(groups) + 3), 5))
    _grouped_bars(ax, groups, {label: [r.get(k) for r in rows] for k, label in keys},
                  "error (%)", log=False)
    ax.set_ylim(0, 100)
    offset = (len(keys) - 1) / 2 * 0.8 / len(keys)  # the last series' bar, see _grouped_bars
    for i, r in enumerate(rows):  # published ranges as error bars on their bar
        rng = r.get("certified_error_published_range")
        if rng:
            mid = (rng[0] + rng[1]) / 2
            ax.errorbar([i + offset], [mid], yerr=[[mid - rng[0]], [rng[1] - mid]], color="k",
                        capsize=3, lw=1)
    ax.legend(fontsize=8)
    ax.set_title("Certified training: errors on the test set (lower is better)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, plt, png, data)


# ----------------------------------------------------------------------- other benchmarks
@_safe
def plot_training_speed(json_path=None, png_path=None) -> Path | None:
    """Bars of epoch-time ratio to natural training per method (``ratio_vs_natural``)."""
    jp, png = _paths("training_speed", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    ratio = data.get("ratio_vs_natural")
    if not isinstance(ratio, dict) or not ratio:
        print(f"{jp}: no 'ratio_vs_natural' to plot", file=sys.stderr)
        return None
    names = list(ratio)
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    ax.bar(range(len(names)), [ratio[n] for n in names],
           color=[COLORS.get(n, "#999999") for n in names])
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names])  # variant below
    for n, target in (data.get("targets") or {}).items():
        if n in names:
            i = names.index(n)
            ax.plot([i - 0.4, i + 0.4], [target, target], "k--", lw=1)
            ax.text(i, target, f" target {target:g}x", fontsize=7, va="bottom", ha="center")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("time per training step / natural")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Training speed ({data.get('model', '?')}, batch {data.get('batch_size', '?')})")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, plt, png, data)


@_safe
def plot_training_compare(json_path, png_path=None) -> Path | None:
    """Validation clean and IBP-certified error of each run against its training minutes
    (the file :func:`benchmarks.training.compare` writes)."""
    plt = pyplot()
    data = _load(Path(json_path))
    if plt is None or data is None:
        return None
    png = Path(png_path) if png_path else Path(json_path).with_suffix(".png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab10")
    for k, run in enumerate(data["runs"]):
        t, clean, cert = 0.0, [], []
        for row in run["history"]:
            t += row["time_s"] / 60
            clean.append((t, 100 * row["val_clean_error"]))
            cert.append((t, 100 * row["val_certified_error_ibp"]))
        label = run["method"] + (" + loss fusion" if run.get("loss_fusion") else "")
        for ax, pts in zip(axes, (clean, cert)):
            ax.plot(*zip(*pts), marker=".", ms=3, lw=1.2, color=cmap(k % 10), label=label)
    for ax, what in zip(axes, ("clean error", "IBP-certified error")):
        ax.set_xlabel("training minutes")
        ax.set_ylabel(f"validation {what} (%)")
        ax.set_ylim(0, 100 if "certified" in what else 30)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{data['runs'][0]['model']} at eps {data['runs'][0]['eps']:g}: validation "
                 "curves", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, plt, png, data)


def _find_records(data) -> list[dict]:
    """The list of per-item records in a result JSON: the first list of dicts found under a
    usual key (results, instances, rows, runs), else at the top level."""
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    for key in ("results", "instances", "rows", "runs"):
        v = data.get(key) if isinstance(data, dict) else None
        if isinstance(v, list) and any(isinstance(r, dict) for r in v):
            return [r for r in v if isinstance(r, dict)]
    return []


def _first(rec: dict, keys) -> object:
    for k in keys:
        if k in rec and rec[k] is not None:
            return rec[k]
    return None


@_safe
def plot_vnncomp(json_path=None, png_path=None) -> Path | None:
    """Cactus plot of a VNN-COMP run: instances solved (per outcome) against time, one line per
    benchmark family (or method) found in the records. Tolerates unknown record layouts."""
    jp, png = _paths("vnncomp", json_path, png_path)
    data = _load(jp)
    plt = pyplot() if data else None
    if plt is None:
        return None
    recs = _find_records(data)
    lines: dict[str, list[float]] = {}
    outcomes: dict[str, int] = {}
    for r in recs:
        t = _first(r, ("time_s", "time", "wall_s", "seconds", "runtime"))
        status = str(_first(r, ("status", "result", "outcome", "verdict")) or "?").lower()
        outcomes[status] = outcomes.get(status, 0) + 1
        if not isinstance(t, (int, float)):
            continue
        if status in ("unknown", "timeout", "error", "?"):
            continue
        group = str(_first(r, ("benchmark", "family", "method", "category")) or "all")
        lines.setdefault(group, []).append(float(t))
    if not lines:
        print(f"{jp}: no timed, solved instances to plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for g, ts in sorted(lines.items()):
        ts = sorted(ts)
        ax.step(ts, range(1, len(ts) + 1), where="post", label=f"{g} ({len(ts)} solved)")
    ax.set_xscale("log")
    ax.set_xlabel("time per instance (s, log)")
    ax.set_ylabel("instances solved within time")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("VNN-COMP instances: " + ", ".join(f"{k} {v}" for k, v in
                                                   sorted(outcomes.items())), fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, plt, png, data)


PLOTS = {"bounds": plot_bounds, "scaling": plot_scaling, "peers": plot_peers,
         "certified": plot_certified, "training_speed": plot_training_speed,
         "vnncomp": plot_vnncomp}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Re-plot a benchmark's results as PNG.")
    p.add_argument("name", choices=sorted(PLOTS))
    p.add_argument("--quick", action="store_true", help="plot the *_quick results")
    p.add_argument("--json", help="result file (default: results/<name>[_quick].json)")
    args = p.parse_args(argv)
    jp = args.json or results_dir() / (args.name + ("_quick" if args.quick else "") + ".json")
    out = PLOTS[args.name](jp)
    if out:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
