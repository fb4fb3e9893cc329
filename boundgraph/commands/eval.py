"""``boundgraph eval CHECKPOINT``: clean, PGD and certified errors of a trained model on the
test split.

    boundgraph eval runs/mnist-ibp/best.pt --eps 0.1 --json
    torchrun --nproc_per_node 4 -m boundgraph eval runs/mnist-ibp/best.pt   # batches split
    boundgraph eval runs/l2/best.pt --norm 2 --eps 0.5
    boundgraph eval runs/cnn7/best.pt --eps 0.4 --methods ibp,crown-ibp --limit 1000

Full CROWN is slow on large convolutional networks, so it runs on the first ``--crown-limit``
test examples only (50 by default; the JSON reports the count as ``num_examples_crown``).
"""
from __future__ import annotations

import json
import sys

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="clean / PGD / certified errors of a training checkpoint",
        description="Evaluate a checkpoint written by `boundgraph train` on the test split.")
    p.add_argument("checkpoint", help="a .pt file written by boundgraph train")
    p.add_argument("--eps", type=float, help="radius (default: the run's eval eps)")
    p.add_argument("--norm", choices=("inf", "2", "1"),
                   help="norm of the ball (default: the run's, else inf)")
    p.add_argument("--dataset", help="data set (default: the one the model was trained on)")
    p.add_argument("--data-root", metavar="DIR", help="folder with the data files")
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--limit", type=int, help="evaluate the first N examples")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pgd-steps", type=int, default=20, help="0 skips the attack")
    p.add_argument("--pgd-restarts", type=int, default=1)
    p.add_argument("--methods", default="ibp,crown-ibp,crown",
                   help="comma-separated bound methods among ibp, crown-ibp, crown, alpha-crown "
                        "(default: ibp,crown-ibp,crown)")
    p.add_argument("--crown-limit", type=int, default=50,
                   help="run full CROWN on the first N examples only (default 50; -1: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's restarts")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int,
                   help="torch threads per process (default: cores / processes on this machine)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..training.checkpoint import load_checkpoint
    from ..training.evaluate import evaluate
    from ..training.trainer import resolve_device

    if args.eps is not None and args.eps < 0:
        raise InputError(f"--eps must be >= 0, got {args.eps}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.pgd_steps < 0 or args.pgd_restarts < 1:
        raise InputError("--pgd-steps must be >= 0 and --pgd-restarts >= 1")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from ..distributed import default_threads, init_distributed

    device = resolve_device(args.device)
    rank, _ = init_distributed(device)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads or default_threads())
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    cfg = ckpt.config
    eps = args.eps if args.eps is not None else (
        cfg.get("eval_eps") if cfg.get("eval_eps") is not None else cfg.get("eps"))
    dataset = args.dataset or cfg.get("dataset")
    if dataset is None:
        raise InputError("the checkpoint names no data set; pass --dataset")
    try:
        data = load_dataset(dataset, args.split, args.data_root, limit=args.limit)
    except ValueError as e:
        raise InputError(str(e)) from None
    crown_limit = None if args.crown_limit is not None and args.crown_limit < 0 \
        else args.crown_limit
    with torch.no_grad():
        report = evaluate(ckpt.model.to(device), data, float(eps), methods,
                          batch_size=args.batch_size, pgd_steps=args.pgd_steps,
                          pgd_restarts=args.pgd_restarts, crown_limit=crown_limit,
                          domain=tuple(cfg.get("domain", (0.0, 1.0))), device=device,
                          seed=args.seed, progress=not args.quiet and not args.json,
                          norm=args.norm or cfg.get("norm", "inf"))
    report = {"checkpoint": str(args.checkpoint), "model": cfg.get("model"),
              "method": cfg.get("method"), "dataset": dataset, "split": args.split,
              "epoch": ckpt.epoch, **report}
    if rank != 0:  # under torchrun every process holds the report; the first one writes it
        return 0
    text = json.dumps(report, indent=None if args.json else 2)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(text)
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 0


def format_report(r: dict) -> str:
    """A few human-readable lines of an evaluation report: every figure over all examples and,
    when full CROWN ran on the first examples only, again over those (one denominator per
    column)."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    sub = r.get("subset")
    head = (f"{r.get('model') or 'model'} ({r.get('method')}), {r.get('dataset')} "
            f"{r.get('split', 'test')}: eps {r['eps']:g}"
            + ("" if r.get("norm", "inf") == "inf" else f" (l{r['norm']} ball)"))
    cols = [(f"all {r['num_examples']}", r)]
    if sub:
        cols.append((f"first {sub['num_examples']}", sub))
    rows = [("clean error", "clean_error"), ("PGD error", "pgd_error"),
            ("certified error (any method)", "certified_error"),
            ("  IBP", "certified_error_ibp"), ("  CROWN-IBP", "certified_error_crown_ibp"),
            ("  CROWN", "certified_error_crown"),
            ("  alpha-CROWN", "certified_error_alpha_crown")]
    lines = [head, f"  {'':30}" + "".join(f"{name:>14}" for name, _ in cols)]
    for label, key in rows:
        if all(c.get(key) is None for _, c in cols) and key.startswith("certified_error_"):
            continue
        vals = []
        for _, c in cols:
            v = c.get(key)
            if key in ("certified_error_crown", "certified_error_alpha_crown") and sub and \
                    c is r:
                v = None  # over the first examples only: shown in their column
            vals.append(pct(v))
        lines.append(f"  {label:30}" + "".join(f"{v:>14}" for v in vals))
    if r.get("pgd_error") is not None:
        lines.append(f"  (PGD: {r['pgd']['steps']} steps, {r['pgd']['restarts']} restart(s))")
    return "\n".join(lines)