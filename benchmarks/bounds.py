"""Bounds benchmark: time, peak memory and tightness of IBP, CROWN-IBP, CROWN and alpha-CROWN.

For each model (MLP, cnn_4layer, CNN7 with BatchNorm in eval mode, the ViT ``vit_small`` and
the row-reading LSTM ``lstm_rows``; MNIST-size input) and batch size, a fresh subprocess traces the model and times the plain forward pass and each method
(median of repeats after a warm-up, 2 threads), the mean bound width of the margins
``f_y - f_j`` and the process's peak RSS after each method (methods run from cheapest to
dearest, so the figure after a method is the peak up to and including it).

Full CROWN on CNN7 is run at batch 1 and 8 only (one repeat): its cost grows with the number of
unstable neurons times the batch; on the ViT and the LSTM at batch 1 only (every gate, product
and softmax input needs intermediate bounds). alpha-CROWN (20 Adam steps, each a CROWN pass) runs on the MLP
and cnn_4layer at batch 1 and 32.

Every model is also bounded over an l2 ball (``--eps-l2``, default 0.1, clipped to [0, 1]) at
batch 1 and 32 (the ViT and the LSTM at batch 1), with the same methods: rows with norm 2.

    python -m benchmarks.bounds            # full run: benchmarks/results/bounds.{json,md,png}
    python -m benchmarks.bounds --quick    # small sizes, a minute or so
"""
from __future__ import annotations

import argparse
import json
import sys

from .common import (machine_stamp, md_table, median_time, peak_rss_mb, run_isolated,
                     write_results, zoo_model)

MODELS = {"mlp": {}, "cnn_4layer": {}, "cnn7": {}, "vit_small": {}, "lstm_rows": {}}
#: models whose full CROWN (and alpha-CROWN) is costly: timed once, at batch 1 only
SLOW = ("cnn7", "vit_small", "lstm_rows")
SEQUENCE = ("vit_small", "lstm_rows")


def run_one(model_name: str, batch: int, methods: list[str], repeats: int, eps: float,
            in_size: int, seed: int = 0, norm: str = "inf") -> dict:
    import torch

    import boundgraph as bg

    torch.set_num_threads(2)
    model = zoo_model(model_name, in_size, seed)
    x = torch.rand(batch, 1, in_size, in_size)
    bm = bg.BoundedModule(model, x)
    out = {"model": model_name, "batch": batch, "eps": eps, "norm": norm, "in_size": in_size}
    with torch.no_grad():
        y = model(x).argmax(1)
        C = bg.margin_spec(y, 10)
        ptb = bg.LpBall(eps, norm, 0.0, 1.0)
        out["forward_s"] = median_time(lambda: model(x), repeats=max(repeats, 5))
        out["rss_forward_mb"] = round(peak_rss_mb(), 1)
        for m in methods:
            reps = 1 if (m == "crown" and model_name in SLOW) or m == "alpha-crown" else repeats
            res = {}

            def go():
                res["b"] = bm.compute_bounds(x, ptb, method=m, C=C)

            t = median_time(go, repeats=reps, warmup=0 if reps == 1 else 1)
            lb, ub = res["b"]
            out[m] = {"time_s": t, "ratio_to_forward": t / out["forward_s"],
                      "mean_width": (ub - lb).mean().item(),
                      "mean_lower": lb.mean().item(),
                      "verified": int((lb > 0).all(1).sum()),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small batches and input, fast")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON config for one subprocess
    p.add_argument("--eps", type=float, default=0.01, help="l-inf radius")
    p.add_argument("--eps-l2", type=float, default=0.1, help="radius of the l2 rows")
    args = p.parse_args(argv)
    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_one(**cfg)))
        return 0

    from tqdm import tqdm

    if args.quick:
        plan = [(m, b, ["ibp", "crown-ibp"]
                 + (["crown"] if m not in SLOW or (m == "cnn7" and b == 1) else [])
                 + (["alpha-crown"] if m == "mlp" and b == 1 else []), 3, 12, "inf")
                for m in MODELS for b in (1, 8)]
        plan += [(m, 1, ["ibp", "crown-ibp", "crown"], 3, 12, "2")
                 for m in ("mlp", "cnn_4layer")]
    else:
        plan = []
        for m in MODELS:
            for b in ((1, 32) if m in SEQUENCE else (1, 32, 128)):
                methods = ["ibp", "crown-ibp"] + (["crown"] if m not in SLOW or b == 1 else [])
                methods += ["alpha-crown"] if m not in SLOW and b <= 32 else []
                plan.append((m, b, methods, 5, 28, "inf"))
        plan.append(("cnn7", 8, ["crown"], 1, 28, "inf"))
        for m in MODELS:
            for b in ((1,) if m in SEQUENCE else (1, 32)):
                methods = ["ibp", "crown-ibp"] + (["crown"] if m not in SLOW or b == 1 else [])
                methods += ["alpha-crown"] if m not in SLOW and b == 1 else []
                plan.append((m, b, methods, 5, 28, "2"))
    results = []
    for m, b, methods, reps, size, norm in tqdm(plan, desc="bounds benchmark", unit="config"):
        cfg = dict(model_name=m, batch=b, methods=methods, repeats=reps, in_size=size,
                   eps=args.eps if norm == "inf" else args.eps_l2, norm=norm)
        objs, error = run_isolated("benchmarks.bounds", cfg)
        if error or not objs:
            results.append({"model": m, "batch": b, "error": error or "no result"})
            continue
        results.append(objs[-1])
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["model"], r["batch"], "", "error", r["error"], "", "", "", "", ""])
            continue
        for m in ("ibp", "crown-ibp", "crown", "alpha-crown"):
            if m in r:
                x = r[m]
                rows.append([r["model"], r["batch"], r.get("norm", "inf"), m,
                             f"{r['forward_s'] * 1e3:.2f}",
                             f"{x['time_s'] * 1e3:.1f}", f"{x['ratio_to_forward']:.2f}",
                             f"{x['mean_width']:.4g}", f"{x['verified']}/{r['batch']}",
                             f"{x['peak_rss_mb']:.0f}"])
    stamp = machine_stamp()
    table = (f"# Bounds benchmark\n\neps = {args.eps} (l-inf) and {args.eps_l2} (l2 rows), "
             f"inputs in [0, 1], margins "
             f"f_y - f_j, random weights with BatchNorm in eval mode"
             f"{' (quick: 12x12 inputs)' if args.quick else ' (MNIST size, 28x28)'}.\n"
             f"Machine: {stamp['cpu']}, {stamp['torch_threads']} threads, torch {stamp['torch']}, "
             f"commit {stamp['commit']}, {stamp['date']}.\n"
             "Command: `python -m benchmarks.bounds" + (" --quick" if args.quick else "") + "`\n\n"
             + md_table(["model", "batch", "norm", "method", "forward (ms)", "time (ms)", "x forward",
                         "mean width", "verified", "peak RSS (MB)"], rows))
    name = "bounds_quick" if args.quick else "bounds"
    jp, mp = write_results(name, {"machine": stamp, "eps": args.eps, "eps_l2": args.eps_l2,
                                  "results": results}, table)
    from .plots import plot_bounds

    png = plot_bounds(jp)  # None (with a message) without matplotlib
    print(table)
    print(f"wrote {jp} and {mp}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
