"""``boundgraph train``: certified training of a zoo model on a data set.

    boundgraph train --model cnn_4layer --dataset mnist --eps 0.1 --method ibp --epochs 10 \\
        --out runs/mnist-ibp
    boundgraph train --model cnn_4layer --dataset mnist --norm 2 --eps 0.5 --out runs/l2
    boundgraph train --recipe mnist-cnn7 --out runs/mnist-cnn7          # Table 14.1 setting
    boundgraph train --out runs/mnist-ibp --resume                      # continue a killed run
    torchrun --nproc_per_node 2 -m boundgraph train ...                 # data-parallel

Writes ``last.pt``, ``best.pt`` (selected on a validation split of the training data),
``metrics.csv``, ``metrics.jsonl``, ``metrics.png`` and ``config.json`` in ``--out``.
"""
from __future__ import annotations

import json
import sys

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="certified training (natural, IBP, CROWN-IBP, improved IBP, SABR, "
                      "TAPS, STAPS, MTL-IBP, CC-IBP, EXP-IBP)",
        description="Train a zoo model with certified training; checkpoints and metrics go "
                    "to --out. Settings resolve as: method defaults < --recipe < options.")
    p.add_argument("--model", help="zoo model name (models.MODELS), e.g. cnn_4layer, cnn7")
    p.add_argument("--model-kwargs", metavar="JSON",
                   help='extra model arguments as JSON, e.g. \'{"width": 32}\'')
    p.add_argument("--dataset", help="data set: mnist, fashion-mnist, cifar10")
    p.add_argument("--data-root", metavar="DIR", help="folder with the data files")
    p.add_argument("--method", help="natural, ibp, crown-ibp, improved-ibp, sabr, taps, staps, "
                                    "mtl-ibp, cc-ibp or exp-ibp (default: the recipe's, else "
                                    "ibp)")
    p.add_argument("--lambda", type=float, dest="sabr_lambda",
                   help="sabr, staps: radius of the small box as a fraction of eps, in (0, 1] "
                        "(default 0.4)")
    p.add_argument("--alpha", type=float, dest="mix_alpha",
                   help="mtl-ibp, cc-ibp, exp-ibp: weight of the attack's loss, in [0, 1] "
                        "(default 0.5)")
    p.add_argument("--attack-steps", type=int,
                   help="PGD steps of the attack inside sabr / staps / mtl-ibp / cc-ibp / "
                        "exp-ibp, and of the latent attack of taps / staps (default 8)")
    p.add_argument("--split", dest="taps_split", metavar="NAME",
                   help="taps/staps: the module (e.g. 5, head.fc1) or graph node where the "
                        "classifier head starts (default: before the last two linear layers)")
    p.add_argument("--taps-scale", type=float, dest="taps_grad_scale", metavar="W",
                   help="taps/staps: gradient expansion of the estimated-bound loss "
                        "(default 5)")
    p.add_argument("--eps", type=float, help="training perturbation radius (in [0, 1] pixel "
                                             "units)")
    p.add_argument("--norm", choices=("inf", "2", "1"),
                   help="norm of the perturbation ball (default: inf)")
    p.add_argument("--eval-eps", type=float, help="validation radius (default: --eps)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--recipe", help="named settings; --list-recipes shows them")
    p.add_argument("--list-recipes", action="store_true", help="list recipes and exit")
    p.add_argument("--out", metavar="DIR", help="output folder (required to train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that already holds a run")
    p.add_argument("--limit", type=int, help="use the first N training images")
    p.add_argument("--val-limit", type=int, help="validate on at most N images per epoch")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--warmup-epochs", type=float, help="natural epochs before the eps ramp")
    p.add_argument("--ramp-epochs", type=float, dest="eps_ramp_epochs",
                   help="eps ramp length in epochs")
    p.add_argument("--lr-milestones", metavar="E1,E2,...",
                   help="epochs after which the learning rate is multiplied by the recipe's "
                        "lr_factor (comma-separated; 'none' for a constant rate)")
    p.add_argument("--time-limit", type=float, metavar="MIN",
                   help="stop when one more epoch would take the training time (validation "
                        "excluded) past MIN minutes; size --epochs to fit, or pass "
                        "--schedule-by time")
    p.add_argument("--schedule-by", choices=("epochs", "time"), default=None,
                   help="lay the eps/lr schedule out over the epochs (default) or over "
                        "--time-limit: each schedule position, as a fraction of --epochs, "
                        "happens at that fraction of the time, and training runs until the "
                        "limit (fair equal-time comparisons of methods whose steps cost "
                        "differently)")
    p.add_argument("--loss-fusion", action="store_true", default=None,
                   help="crown-ibp: bound the loss with one backward row per example instead "
                        "of one per class (faster, looser; Xu et al. 2020)")
    p.add_argument("--pgd-steps", type=int, help="PGD steps of the per-epoch validation")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.config import list_recipes, load_recipe

    if args.list_recipes:
        for name in list_recipes():
            print(f"{name}: {load_recipe(name).get('description', '')}")
        return 0
    if not args.out:
        raise InputError("--out DIR is required (where checkpoints and metrics go)")
    if args.eps is not None and args.eps < 0:
        raise InputError(f"--eps must be >= 0, got {args.eps}")
    from pathlib import Path

    out = Path(args.out)
    if args.resume and (out / "last.pt").exists():
        return _train(args, None, resume=True)
    model_kwargs = None
    if args.model_kwargs:
        try:
            model_kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as e:
            raise InputError(f"--model-kwargs is not valid JSON: {e}") from None
        if not isinstance(model_kwargs, dict):
            raise InputError("--model-kwargs must be a JSON object")
    milestones = None
    if args.lr_milestones is not None:
        text = args.lr_milestones.strip().lower()
        try:
            milestones = [] if text in ("", "none") else [
                float(v) for v in text.split(",")]
        except ValueError:
            raise InputError(f"--lr-milestones must be comma-separated epochs, got "
                             f"{args.lr_milestones!r}") from None
        milestones = [int(v) if v.is_integer() else v for v in milestones]
    overrides = dict(model=args.model, model_kwargs=model_kwargs, dataset=args.dataset,
                     eps=args.eps, eval_eps=args.eval_eps, epochs=args.epochs,
                     limit=args.limit, val_limit=args.val_limit, batch_size=args.batch_size,
                     lr=args.lr, warmup_epochs=args.warmup_epochs,
                     eps_ramp_epochs=args.eps_ramp_epochs, pgd_steps=args.pgd_steps,
                     seed=args.seed, loss_fusion=args.loss_fusion, norm=args.norm,
                     sabr_lambda=args.sabr_lambda, mix_alpha=args.mix_alpha,
                     attack_steps=args.attack_steps, lr_milestones=milestones,
                     time_limit=args.time_limit, schedule_by=args.schedule_by,
                     taps_split=args.taps_split,
                     taps_grad_scale=args.taps_grad_scale)
    from ..training.config import resolve_config

    cfg = resolve_config(args.method, args.recipe, overrides)
    if cfg.model is None:
        raise InputError("--model is required (or a --recipe that names one)")
    if cfg.dataset is None:
        raise InputError("--dataset is required (or a --recipe that names one)")
    return _train(args, cfg, resume=args.resume)


def _train(args, cfg, resume: bool) -> int:
    from ..data import load_dataset
    from ..training.checkpoint import read_checkpoint
    from ..training.config import TrainConfig
    from ..training.trainer import fit, init_distributed, resolve_device

    device = resolve_device(args.device)
    rank, world = init_distributed(device)
    if cfg is None:  # resume: the saved config
        raw = read_checkpoint(f"{args.out}/last.pt")
        cfg = TrainConfig.from_dict(raw["config"])
    import models

    if cfg.model not in models.MODELS:
        raise InputError(f"unknown model {cfg.model!r}; known models: "
                         f"{', '.join(sorted(models.MODELS))}")
    try:
        train = load_dataset(cfg.dataset, "train", args.data_root, limit=cfg.limit)
    except ValueError as e:
        raise InputError(str(e)) from None
    result = fit(None, train, cfg, out_dir=args.out, resume=resume,
                 overwrite=args.overwrite, device=device, progress=not args.quiet,
                 **({"epochs": args.epochs} if resume and args.epochs else {}))
    if rank == 0 and not args.quiet and result.best is not None:
        b = result.best
        print(f"best epoch {b['epoch']}: val clean {100 * b['val_clean_error']:.2f}%, "
              f"IBP-certified {100 * b['val_certified_error_ibp']:.2f}% at eps "
              f"{b['val_eps']:g}; checkpoints in {args.out}", file=sys.stderr)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
