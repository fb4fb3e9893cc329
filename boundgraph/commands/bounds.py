"""``boundgraph bounds``: bounds and timings for a zoo model on random (or dataset) inputs."""
from __future__ import annotations

import json
import time


def register(sub):
    p = sub.add_parser("bounds", help="print bounds and timings for a zoo model",
                       description="Trace a model of the zoo, bound its margins over an "
                                   "l-p ball and print bounds and timings per method.")
    p.add_argument("--model", required=True, help="zoo model name (see models.MODELS)")
    p.add_argument("--eps", type=float, required=True, help="radius (input scale [0, 1])")
    p.add_argument("--norm", choices=("inf", "2", "1"), default="inf",
                   help="norm of the ball (default: inf)")
    p.add_argument("--method", default="all",
                   help="ibp, crown-ibp, crown, alpha-crown, or all (default: all)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--in-size", type=int, default=28)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    import boundgraph as bg
    from boundgraph.errors import InputError

    try:
        import models
    except ImportError as e:  # pragma: no cover - models/ ships with the package
        raise InputError("the model zoo (package 'models') is not importable") from e
    if args.batch < 1:
        raise InputError("--batch must be >= 1")
    methods = list(bg.METHODS) if args.method == "all" else [args.method]
    for m in methods:
        if m not in bg.METHODS:
            raise InputError(f"unknown method {m!r}; choose from {', '.join(bg.METHODS)} or all")
    torch.manual_seed(args.seed)
    model = models.get_model(args.model, in_channels=args.in_channels, in_size=args.in_size,
                             num_classes=args.num_classes).eval()
    x = torch.rand(args.batch, args.in_channels, args.in_size, args.in_size)
    t0 = time.perf_counter()
    bm = bg.BoundedModule(model, x)
    trace_s = time.perf_counter() - t0
    with torch.no_grad():
        y = model(x).argmax(1)
        C = bg.margin_spec(y, args.num_classes)
        ptb = bg.LpBall(args.eps, args.norm, 0.0, 1.0)
        report = {"model": args.model, "eps": args.eps, "norm": args.norm, "batch": args.batch,
                  "trace_s": round(trace_s, 3), "methods": {}}
        for m in methods:
            t0 = time.perf_counter()
            lb, ub = bm.compute_bounds(x, ptb, method=m, C=C)
            dt = time.perf_counter() - t0
            report["methods"][m] = {
                "time_s": round(dt, 4),
                "mean_margin_lower": lb.mean().item(),
                "mean_width": (ub - lb).mean().item(),
                "verified": int((lb > 0).all(1).sum().item()),
            }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model}: batch {args.batch}, eps {args.eps} (l-{args.norm}), "
          f"traced in {trace_s:.2f} s")
    print(f"{'method':<11} {'time (s)':>10} {'mean lower margin':>18} {'mean width':>12} verified")
    for m, r in report["methods"].items():
        print(f"{m:<11} {r['time_s']:>10.4f} {r['mean_margin_lower']:>18.4g} "
              f"{r['mean_width']:>12.4g} {r['verified']}/{args.batch}")
    return 0
