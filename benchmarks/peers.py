"""Peer comparison: boundgraph against auto_LiRPA on the same models, inputs and methods.

If ``auto_LiRPA`` is importable, each configuration (model, batch) runs in a fresh process that
builds the model once (``mlp``, ``cnn_4layer``, ``cnn7`` with BatchNorm in eval mode and
non-trivial running statistics, as in ``benchmarks.bounds``; and the models beyond
feed-forward nets that the peer also bounds, :data:`~benchmarks.common.GENERAL_MODELS`:
hand-written self-attention with a LayerNorm, a LayerNorm MLP, an exp/log MLP and a softmax
head), then for each method computes the
margin bounds ``f_y - f_j`` over the same clipped l-inf ball with both libraries:

==========  =====================  =====================
method      boundgraph             auto_LiRPA
==========  =====================  =====================
IBP         ``method="ibp"``       ``method="IBP"``
CROWN-IBP   ``method="crown-ibp"`` ``method="CROWN-IBP"``
CROWN       ``method="crown"``     ``method="backward"``
==========  =====================  =====================

It reports each library's time (median of repeats after a warm-up) relative to the same forward
pass, each one's extra peak memory, and the largest absolute and relative difference between
the two libraries' bounds, and whether boundgraph's are at least as tight. (boundgraph
intersects every method's bounds with IBP's, so where the other library does not, boundgraph's
CROWN-IBP can be tighter: the difference is then not an error.)

Without auto_LiRPA it writes a result file saying so and exits 0; nothing else needs it.

    python -m benchmarks.peers            # writes results/peers.{json,md,png}
    python -m benchmarks.peers --quick    # small input and batch
"""
from __future__ import annotations

import argparse
import json
import sys

from .common import (GENERAL_MODELS, bench_model, machine_stamp, md_table, median_time, reset_peak_rss, rss_now_mb,
                     run_isolated, window_peak_rss_mb, write_results)

PEER = "auto_LiRPA"
METHODS = ("ibp", "crown-ibp", "crown")
PEER_METHOD = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "backward"}
MODELS = ("mlp", "cnn_4layer", "cnn7")
TIGHTER_TOL = 1e-5  # relative slack when checking "boundgraph at least as tight"


def peer_status() -> tuple[bool, str]:
    """(importable, version or the reason it is not)."""
    try:
        import auto_LiRPA
    except Exception as e:  # ImportError, or a peer that fails on import with this torch
        return False, f"{type(e).__name__}: {e}"
    return True, str(getattr(auto_LiRPA, "__version__", "unknown version"))


def _measure(fn, repeats: int) -> tuple[float, float, object]:
    """(median time, extra peak RSS in MB of the first call, result of the first call)."""
    res = {}
    before = rss_now_mb()
    reset_peak_rss()
    res["v"] = fn()
    extra = max(window_peak_rss_mb() - before, 0.0)

    def go():
        res["v"] = fn()

    t = median_time(go, repeats=repeats, warmup=0)
    return t, extra, res["v"]


def compare(ours, theirs) -> dict:
    """Largest absolute and relative differences between two (lb, ub) pairs, and whether the
    first is at least as tight as the second (up to a relative tolerance)."""
    import torch

    (l1, u1), (l2, u2) = ours, theirs
    l2, u2 = l2.reshape(l1.shape).to(l1.dtype), u2.reshape(u1.shape).to(u1.dtype)
    d = torch.maximum((l1 - l2).abs().max(), (u1 - u2).abs().max()).item()
    scale = max(l2.abs().max().item(), u2.abs().max().item(), 1e-12)
    tol = TIGHTER_TOL * scale
    tighter = bool((l1 >= l2 - tol).all() and (u1 <= u2 + tol).all())
    return {"max_abs_diff": d, "max_rel_diff": d / scale, "boundgraph_tighter_or_equal": tighter}


def run_one(model_name: str, batch: int, methods, eps: float, in_size: int, repeats: int = 3,
            seed: int = 0, threads: int = 2) -> dict:
    """One configuration with both libraries; see the module docstring for the keys."""
    import torch

    import auto_LiRPA

    import boundgraph as bg

    torch.set_num_threads(threads)
    model = bench_model(model_name, in_size, seed)
    x = torch.rand(batch, 1, in_size, in_size)
    out = {"model": model_name, "batch": batch, "eps": eps, "in_size": in_size}
    with torch.no_grad():
        y = model(x).argmax(1)
        C = bg.margin_spec(y, 10)
        out["forward_s"] = median_time(lambda: model(x), repeats=max(repeats, 5))
        bm = bg.BoundedModule(model, x)
        lirpa = auto_LiRPA.BoundedModule(model, torch.zeros_like(x), device="cpu")
        lirpa.eval()
        ptb = bg.LinfBall(eps, 0.0, 1.0)
        lo, hi = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
        bx = auto_LiRPA.BoundedTensor(x, auto_LiRPA.PerturbationLpNorm(
            norm=float("inf"), eps=eps, x_L=lo, x_U=hi))
        for m in methods:
            reps = 1 if m == "crown" and model_name == "cnn7" else repeats
            t1, m1, b1 = _measure(lambda: bm.compute_bounds(x, ptb, method=m, C=C), reps)
            t2, m2, b2 = _measure(lambda: lirpa.compute_bounds(x=(bx,), C=C,
                                                               method=PEER_METHOD[m]), reps)
            out[m] = {"boundgraph": {"time_s": t1, "ratio_to_forward": t1 / out["forward_s"],
                                     "extra_peak_mb": round(m1, 1),
                                     "mean_width": (b1[1] - b1[0]).mean().item()},
                      "peer": {"time_s": t2, "ratio_to_forward": t2 / out["forward_s"],
                               "extra_peak_mb": round(m2, 1),
                               "mean_width": (b2[1] - b2[0]).mean().item()},
                      "speedup": t2 / t1 if t1 > 0 else None,
                      **compare(b1, b2)}
    return out


def plan(quick: bool) -> list[dict]:
    if quick:
        return [dict(model_name=m, batch=1, methods=list(METHODS), in_size=12, repeats=3)
                for m in MODELS + GENERAL_MODELS]
    cfgs = []
    for m in MODELS:
        for b in (1, 32):
            methods = ["ibp", "crown-ibp"] + (["crown"] if m != "cnn7" or b == 1 else [])
            cfgs.append(dict(model_name=m, batch=b, methods=methods, in_size=28, repeats=7))
    # full CROWN on a batch of CNN7 images (DESIGN's target: 60 s and 4 GB for 8)
    cfgs.append(dict(model_name="cnn7", batch=8, methods=["crown"], in_size=28, repeats=1))
    # beyond feed-forward vision nets: the models of issue #12 the peer also bounds
    cfgs += [dict(model_name=m, batch=b, methods=list(METHODS), in_size=28, repeats=5)
             for m in GENERAL_MODELS for b in (1, 32)]
    return cfgs


def make_table(payload: dict) -> str:
    st = payload["machine"]
    head = [f"# Peer comparison: boundgraph vs {PEER}{' (quick)' if payload['quick'] else ''}",
            "", f"Machine: {st['cpu']}, {st['torch_threads']} threads, torch {st['torch']}, "
            f"commit {st['commit']}, {st['date']}.", f"Command: `{payload['command']}`", ""]
    if not payload["available"]:
        return "\n".join(head + [
            f"**Not measured**: `{PEER}` is not importable here ({payload['reason']}). Install it "
            "in the same environment and rerun `python -m benchmarks.peers` to fill this table; "
            "boundgraph does not depend on it.", ""])
    head += [f"{PEER} {payload['peer_version']}; l-inf eps = {payload['eps']} clipped to [0, 1], "
             "margins f_y - f_j, random weights (BatchNorm in eval mode). Times are medians; "
             "'x fwd' is time over the plain forward pass of the same model and batch; "
             "'speed-up' is the peer's time over boundgraph's; 'extra MB' is each call's peak "
             "RSS above the RSS before it. Differences are between the two libraries' bounds "
             "(relative to the largest bound magnitude). Targets (DESIGN section 6): IBP at "
             "most 2.2x the forward pass; CROWN-IBP and CROWN at least 1.5x faster than the "
             "peer at every batch size, with equal or tighter bounds.", ""]
    rows = []
    for r in payload["results"]:
        if "error" in r:
            rows.append([r["model"], r["batch"], "", "error: " + r["error"]] + [""] * 8)
            continue
        for m in METHODS:
            if m not in r:
                continue
            x = r[m]
            a, b = x["boundgraph"], x["peer"]
            rows.append([r["model"], r["batch"], m, f"{a['time_s'] * 1e3:.2f}",
                         f"{a['ratio_to_forward']:.2f}", f"{b['time_s'] * 1e3:.2f}",
                         f"{b['ratio_to_forward']:.2f}",
                         "" if x["speedup"] is None else f"{x['speedup']:.2f}x",
                         f"{a['extra_peak_mb']:.0f} / {b['extra_peak_mb']:.0f}",
                         f"{x['max_abs_diff']:.2e}", f"{x['max_rel_diff']:.2e}",
                         "yes" if x["boundgraph_tighter_or_equal"] else "NO"])
    return "\n".join(head) + md_table(
        ["model", "batch", "method", "boundgraph (ms)", "x fwd", f"{PEER} (ms)", "x fwd",
         "speed-up", "extra MB (ours / peer)", "max abs diff", "max rel diff",
         "boundgraph tighter or equal"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12x12 inputs, batch 1")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per configuration (default 1800, quick 120)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON config for one process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))), flush=True)
        return 0

    available, info = peer_status()
    payload = {"benchmark": "peers", "peer": PEER, "quick": args.quick,
               "available": available, "machine": machine_stamp(), "eps": args.eps,
               "command": "python -m benchmarks.peers" + (" --quick" if args.quick else ""),
               "results": []}
    if available:
        from tqdm import tqdm

        payload["peer_version"] = info
        timeout = args.timeout or (120 if args.quick else 1800)
        for cfg in tqdm(plan(args.quick), desc="peer comparison", unit="config"):
            cfg["eps"] = args.eps
            objs, error = run_isolated("benchmarks.peers", cfg, timeout=timeout)
            payload["results"].append(objs[-1] if objs and not error else
                                      {"model": cfg["model_name"], "batch": cfg["batch"],
                                       "error": error or "no result"})
    else:
        payload["reason"] = info
    table = make_table(payload)
    jp, mp = write_results("peers_quick" if args.quick else "peers", payload, table)
    png = None
    if available:
        from .plots import plot_peers

        png = plot_peers(jp)
    print(table)
    print(f"wrote {jp}, {mp}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
