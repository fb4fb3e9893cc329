"""``boundgraph verify``: VNN-LIB properties, VNN-COMP instance lists, certified accuracy.

    boundgraph verify net.onnx prop.vnnlib --timeout 60 --out result.txt
    boundgraph verify --instances instances.csv --out results.csv --timeout 60
    boundgraph verify --model cnn_3layer --checkpoint run/best.pt --dataset mnist --eps 0.1

The first form prints the verdict (``sat``, ``unsat``, ``unknown``, ``timeout``) and writes the
VNN-COMP result file (the verdict, then the counterexample for ``sat``). The second runs every
row ``onnx,vnnlib[,timeout]`` of a csv (paths relative to it) and writes a csv of verdicts and
times; rows are appended as they finish, and ``--resume`` after a kill runs only the rest. The
third reports the fraction of a data set certified robust.

The second and third forms scale out with ``torchrun`` (one machine or several)::

    torchrun --nproc_per_node 4 -m boundgraph verify --instances instances.csv --out results.csv
    torchrun --nproc_per_node 4 -m boundgraph verify --checkpoint run/best.pt --dataset mnist \
        --eps 0.1

Instances are shared among the processes by their time budgets, data set batches in turn; the
first process writes the same results file, or prints the same report, as one process would.
"""
from __future__ import annotations

import json
import os

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="verify VNN-LIB properties or certified accuracy",
        description="Verify a VNN-LIB property of an ONNX network, a VNN-COMP instances.csv, "
                    "or certified accuracy of a model on a data set.")
    p.add_argument("onnx", nargs="?", metavar="MODEL.onnx", help="ONNX network (.onnx/.onnx.gz)")
    p.add_argument("property", nargs="?", metavar="PROPERTY.vnnlib", help="VNN-LIB property")
    p.add_argument("--instances", metavar="CSV", help="VNN-COMP instances.csv to run")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per property (default 60, or the csv's timeouts)")
    p.add_argument("--max-timeout", type=float, default=None,
                   help="cap on the csv's per-instance timeouts")
    p.add_argument("--method", default="auto",
                   help="auto (IBP, CROWN-IBP, CROWN, alpha-CROWN, then input bisection for "
                        "small inputs or branch and bound on activation splits), bab (branch "
                        "and bound whatever the input size), or one of ibp, crown-ibp, crown, "
                        "alpha-crown")
    p.add_argument("--no-bisect", action="store_true", help="do not split input boxes")
    p.add_argument("--out", metavar="FILE",
                   help="result file (one property) or results csv (--instances)")
    p.add_argument("--results-dir", metavar="DIR",
                   help="with --instances: also one VNN-COMP result file per instance")
    p.add_argument("--model", metavar="NAME", help="zoo model for certified accuracy")
    p.add_argument("--checkpoint", metavar="PT", help="weights (a boundgraph train checkpoint)")
    p.add_argument("--dataset", help="data set for certified accuracy (e.g. mnist-test100)")
    p.add_argument("--data-root", metavar="DIR", help="folder with the data files")
    p.add_argument("--split", default="test")
    p.add_argument("--eps", type=float, help="L-inf radius for certified accuracy")
    p.add_argument("--bab-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="certified accuracy: give each example the bounds leave open up to "
                        "this many seconds of branch and bound (default 0: none)")
    p.add_argument("-n", "--limit", type=int, dest="limit", help="first N examples")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="with --instances: keep the rows an interrupted run already wrote to "
                        "--out (and its part files) and run only the others")
    p.add_argument("--threads", type=int,
                   help="torch threads per process (default: cores / processes on this "
                        "machine, at most 4)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..distributed import default_threads, init_distributed

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.resume and not (args.instances and args.out):
        raise InputError("--resume continues a --instances run: give the same --out file")
    init_distributed()
    torch.set_num_threads(args.threads or max(1, min(default_threads(), 4)))
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout must be > 0, got {args.timeout}")
    if args.instances:
        if args.onnx or args.property:
            raise InputError("give either --instances or MODEL.onnx PROPERTY.vnnlib, not both")
        return _run_instances(args)
    if args.model or args.checkpoint or args.dataset:
        if args.onnx or args.property:
            raise InputError("give either --model/--dataset or MODEL.onnx PROPERTY.vnnlib")
        return _run_dataset(args)
    if not (args.onnx and args.property):
        raise InputError("usage: boundgraph verify MODEL.onnx PROPERTY.vnnlib | --instances CSV "
                         "| --model NAME --dataset NAME --eps EPS")
    return _run_one(args)


def _run_one(args) -> int:
    from ..verify import verify

    for path in (args.onnx, args.property):
        if not os.path.exists(path):
            raise InputError(f"no such file: '{path}'")
    res = verify(args.onnx, args.property, timeout=args.timeout or 60.0, method=args.method,
                 bisect=not args.no_bisect, seed=args.seed,
                 progress=not args.quiet and not args.json)
    if args.out:
        res.write(args.out)
    if args.json:
        rep = {"verdict": res.verdict, "time": res.time,
               "details": {k: v for k, v in res.details.items()
                           if isinstance(v, (str, int, float, list, bool))}}
        if res.counterexample is not None:
            rep["counterexample"] = {"x": res.counterexample[0].tolist(),
                                     "y": res.counterexample[1].tolist()}
        print(json.dumps(rep, indent=2))
    else:
        print(res.verdict)
        print(f"# {res}")
    return 0


def _run_instances(args) -> int:
    from ..distributed import is_main
    from ..instances import verify_instances

    rows = verify_instances(args.instances, args.out, timeout=args.timeout,
                            max_timeout=args.max_timeout, method=args.method,
                            results_dir=args.results_dir, progress=not args.quiet,
                            resume=args.resume, bisect=not args.no_bisect, seed=args.seed)
    if not is_main():  # under torchrun the first process reports
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    wrong = [r for r in rows if r.get("expected") in ("sat", "unsat")
             and r["verdict"] in ("sat", "unsat") and r["verdict"] != r["expected"]]
    summary = {"instances": len(rows), "verdicts": counts,
               "total_time": round(sum(r["time"] for r in rows), 2)}
    if any("expected" in r for r in rows):
        summary["wrong"] = len(wrong)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) +
              f" ({len(rows)} instances, {summary['total_time']} s)")
        for r in wrong:
            print(f"WRONG: {r['onnx']} {r['vnnlib']}: {r['verdict']} (expected {r['expected']})")
    return 1 if wrong else 0


def load_model(name: str | None, checkpoint: str | None, dataset: str | None = None,
               model_kwargs: dict | None = None):
    """A zoo model (``name``) with the weights of a checkpoint, if given.

    A full ``boundgraph train`` checkpoint is loaded with the training package's loader (so its
    data set shape and input normalisation are rebuilt as trained). Otherwise a ``torch.save``
    dict with ``model_state`` and, when ``name`` is not given, ``model_name`` (and optionally
    ``model_kwargs``) works, and so does a bare state dict with ``name``; ``model_kwargs``
    given here win over a checkpoint's; without any the model is built for ``dataset``'s image
    shape."""
    import torch

    from models import get_model

    state, kwargs = None, None
    if checkpoint is not None:
        if not os.path.exists(checkpoint):
            raise InputError(f"no such checkpoint: '{checkpoint}'")
        full = _training_checkpoint(checkpoint, name)
        if full is not None:
            return full
        try:
            ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - one readable error
            raise InputError(f"cannot read checkpoint '{checkpoint}': {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
        if isinstance(ck, dict) and "model_state" in ck:
            state = ck["model_state"]
            name = name or ck.get("model_name")
            kwargs = ck.get("model_kwargs")
            if dataset is None and isinstance(ck.get("config"), dict):
                dataset = ck["config"].get("dataset")
        elif isinstance(ck, dict) and all(torch.is_tensor(v) for v in ck.values()):
            state = ck
        else:
            raise InputError(f"'{checkpoint}' holds no model_state")
        if name is None:
            raise InputError(f"checkpoint '{checkpoint}' does not name its model; pass --model")
    if name is None:
        raise InputError("--model NAME is needed")
    if model_kwargs is not None:
        kwargs = model_kwargs
    if kwargs is None:
        kwargs = {}
        if dataset is not None:
            from ..data import dataset_info

            info = dataset_info(dataset)
            kwargs = {"in_channels": info.channels, "in_size": info.size,
                      "num_classes": info.num_classes}
    try:
        model = get_model(name, **dict(kwargs))
    except (TypeError, ValueError) as e:
        raise InputError(f"cannot build model {name!r} with {kwargs}: {e}") from None
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"checkpoint '{checkpoint}' does not fit model {name!r}: "
                             f"{str(e).splitlines()[0][:300]}") from None
    return model.eval()


def checkpoint_dataset(path) -> str | None:
    """The data set a checkpoint's config names (``None`` if it names none or is unreadable)."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - reported by load_model
        return None
    cfg = ck.get("config") if isinstance(ck, dict) else None
    return cfg.get("dataset") if isinstance(cfg, dict) else None


def _training_checkpoint(path, name):
    """The model of a full ``boundgraph train`` checkpoint (zoo name, config with the data set
    and normalisation) via the training package's loader; ``None`` for other files or when that
    package is not there."""
    try:
        from ..training.checkpoint import load_checkpoint, read_checkpoint
    except ImportError:
        return None
    try:
        raw = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a full training checkpoint: the simple path
        return None
    if not isinstance(raw, dict) or "config" not in raw or raw.get("model_name") is None:
        return None
    if name is not None and name != raw.get("model_name"):
        raise InputError(f"checkpoint '{path}' holds a {raw.get('model_name')!r} model, not "
                         f"{name!r}")
    return load_checkpoint(path).model.eval()


def _run_dataset(args) -> int:
    from ..data import load_dataset
    from ..certify import certified_accuracy

    if args.eps is None:
        raise InputError("--eps is needed for certified accuracy")
    if args.dataset is None:
        raise InputError("--dataset is needed for certified accuracy (e.g. mnist-test100)")
    model = load_model(args.model, args.checkpoint, args.dataset)
    ds = load_dataset(args.dataset, args.split, args.data_root, limit=args.limit)
    if args.bab_timeout < 0:
        raise InputError(f"--bab-timeout must be >= 0, got {args.bab_timeout}")
    rep = certified_accuracy(model, ds, args.eps, method=args.method,
                             batch_size=args.batch_size, progress=not args.quiet,
                             bab_timeout=args.bab_timeout)
    rep["model"] = args.model
    rep["dataset"] = args.dataset
    from ..distributed import is_main

    if not is_main():  # under torchrun every process holds the report; the first one prints
        return 0
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        by = ", ".join(f"{k} {v}" for k, v in rep["by_method"].items())
        print(f"certified {rep['certified']}/{rep['n']} = {rep['certified_fraction']:.4f} at eps "
              f"{rep['eps']:g} (method {rep['method']}: {by}); clean {rep['clean']:.4f}, "
              f"PGD-robust {rep['pgd_robust']:.4f}; {rep['time']:.1f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rep, fh, indent=2)
    return 0
