"""Robustness evaluation: clean error, PGD error and certified errors of a classifier.

For each example (x, y) and radius eps (an L-inf ball clipped to the data domain):

* clean error: argmax f(x) != y;
* PGD error: a projected-gradient attack (Madry et al. 2018) on the margin f_y - max_{j!=y} f_j
  finds a misclassified point in the ball, or x itself is misclassified;
* certified error (per bound method): *not* every margin lower bound
  m_j <= min_{x'} f_y(x') - f_j(x') is > 0. A cleanly misclassified point is never certified
  (its margin bounds cannot all be positive when they are sound; it is counted either way).

certified error >= PGD error >= clean error holds for sound bounds (a certified point cannot be
attacked). Full CROWN (and alpha-CROWN, which runs only when asked for) is costly on large
convolutional networks, so it may run on the first ``crown_limit`` examples only; the report
says how many examples each figure used.
"""
from __future__ import annotations

import math
import time
from typing import Iterable, Sequence

import torch

from ..attack import pgd_margin_attack
from ..bounded import METHODS as BOUND_METHODS
from ..bounded import BoundedModule
from ..distributed import all_sum, rank_world, strided
from ..errors import InputError
from ..perturbation import INF, LpBall, norm_name, parse_p
from ..spec import margin_spec

__all__ = ["evaluate", "dataset_tensors", "count_errors"]


#: bound methods :func:`evaluate` runs unless told otherwise (``"alpha-crown"`` is opt-in)
DEFAULT_METHODS = ("ibp", "crown-ibp", "crown")
#: the costly methods that ``crown_limit`` restricts to the first examples
_LIMITED = ("crown", "alpha-crown")


def dataset_tensors(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) tensors of a ``TensorDataset``, a ``Subset`` of one, a pair of tensors
    or any indexable data set of (image, label) pairs; the first ``limit`` examples."""
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and torch.is_tensor(dataset[0]):
        X, Y = dataset
    elif isinstance(dataset, TensorDataset):
        X, Y = dataset.tensors[:2]
    elif isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        X, Y = dataset.dataset.tensors[0][idx], dataset.dataset.tensors[1][idx]
    else:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        items = [dataset[i] for i in range(n)]
        X = torch.stack([torch.as_tensor(a) for a, _ in items])
        Y = torch.as_tensor([int(b) for _, b in items], dtype=torch.long)
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
    return X, Y.long()


@torch.no_grad()
def count_errors(bm: BoundedModule, x: torch.Tensor, y: torch.Tensor, eps: float,
                 methods: Iterable[str], *, pgd_steps: int = 20, pgd_restarts: int = 1,
                 domain: Sequence[float] = (0.0, 1.0), crown_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, p: float = INF) -> dict[str, int]:
    """Error counts of one batch: ``clean``, ``pgd`` (if ``pgd_steps`` > 0) and, per bound
    method, ``certified_<method>`` (errors = not certified) over the l-``p`` ball of radius
    ``eps``. ``crown_mask`` (bool ``(B,)``) restricts methods ``"crown"`` and
    ``"alpha-crown"`` to some examples; their counts are then over those only.

    ``certified`` counts the examples no method certified (the per-example combination of
    all methods run, on every example: the best certified error these methods give). The
    same counts over the examples of ``crown_mask`` only (one denominator for every method)
    carry the suffix ``_subset``: ``clean_subset``, ``pgd_subset``,
    ``certified_<method>_subset``, ``certified_subset``."""
    logits = bm(x)
    wrong = logits.argmax(1) != y
    sub = torch.ones_like(wrong) if crown_mask is None else crown_mask
    out = {"clean": int(wrong.sum()), "clean_subset": int((wrong & sub).sum())}
    broken = wrong
    ptb = LpBall(float(eps), p, lower=domain[0], upper=domain[1])
    if pgd_steps > 0:
        lo, hi = ptb.box(x)
        if eps > 0:
            ball = None if ptb.p == INF else (x, float(eps), ptb.p)
            attacked = pgd_margin_attack(bm, x, y, lo, hi, steps=pgd_steps,
                                         restarts=pgd_restarts, generator=generator,
                                         ball=ball)
            broken = attacked | wrong
        out["pgd"] = int(broken.sum())
        out["pgd_subset"] = int((broken & sub).sum())
    K = logits.shape[1]
    any_cert = torch.zeros_like(wrong)
    for method in methods:
        idx = torch.arange(len(x), device=x.device)
        if method in _LIMITED and crown_mask is not None:
            idx = idx[crown_mask]
        cert = torch.zeros_like(wrong)
        if len(idx):
            lb, _ = bm.compute_bounds(x[idx], ptb, method=method,
                                      C=margin_spec(y[idx], K, dtype=x.dtype), bound_upper=False)
            cert[idx] = (lb > 0).all(dim=1) & ~wrong[idx]
        any_cert |= cert
        out[f"certified_{method}"] = int(len(idx) - cert[idx].sum())
        out[f"certified_{method}_subset"] = int((sub & ~cert).sum())
    out["certified"] = int((~any_cert).sum())
    out["certified_subset"] = int((sub & ~any_cert).sum())
    return out


def _key(method: str) -> str:
    return "certified_error_" + method.replace("-", "_")


def evaluate(model, dataset, eps: float, methods: Sequence[str] = DEFAULT_METHODS, *,
             batch_size: int = 256, limit: int | None = None, pgd_steps: int = 20,
             pgd_restarts: int = 1, crown_limit: int | None = 50,
             domain: Sequence[float] = (0.0, 1.0), device: str | torch.device = "cpu",
             seed: int = 0, progress: bool = True, norm=INF) -> dict:
    """Clean, PGD and certified errors of ``model`` on ``dataset`` at radius ``eps``.

    Args:
        model: an ``nn.Module`` (traced here) or a :class:`~boundgraph.BoundedModule`. It is
            put in eval mode (BatchNorm with running statistics).
        dataset: ``TensorDataset`` (or Subset of one, or ``(images, labels)``), images in
            ``domain``.
        eps: radius (>= 0) of the l-``norm`` ball.
        methods: bound methods among ``"ibp"``, ``"crown-ibp"``, ``"crown"`` (the default
            three) and ``"alpha-crown"``.
        limit: evaluate the first ``limit`` examples only.
        pgd_steps, pgd_restarts: the attack (``pgd_steps = 0`` skips it; ``pgd_error`` is then
            None).
        crown_limit: full CROWN (and alpha-CROWN) on the first ``crown_limit`` examples only
            (None: all).
        seed: random restarts of the attack.
        progress: show a tqdm progress bar (on stderr).
        norm: the ball's norm: 1, 2 or inf (the default; also ``"inf"``).

    Under ``torchrun`` (a process group joined, see :mod:`boundgraph.distributed`) every
    process evaluates every world-th batch and the counts are summed, so each process returns
    the report a single process would (the attack is seeded per batch).

    Returns:
        A JSON-ready dict: ``eps``, ``norm`` (``"1"``, ``"2"`` or ``"inf"``),
        ``num_examples``, ``clean_error``, ``pgd_error``, ``certified_error_ibp``,
        ``certified_error_crown_ibp``, ``certified_error_crown``,
        ``certified_error_alpha_crown`` (fractions in [0, 1]; None for a method not run),
        ``num_examples_crown`` (the examples full CROWN and alpha-CROWN ran on, whose
        figures are over those only), ``certified_error`` (an example counts as certified
        when any method run certified it: over every example, the best these methods do),
        ``subset`` (when full CROWN ran on fewer examples than the rest: every figure again,
        ``certified_error`` included, over those examples alone, one denominator; else
        None), ``pgd`` settings and ``time_s``. On every report and on ``subset``,
        ``clean_error <= pgd_error <= certified_error``.
    """
    from tqdm.auto import tqdm

    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    p = parse_p(norm)
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in BOUND_METHODS:
            raise InputError(f"unknown bound method {m!r}; choose among "
                             f"{', '.join(BOUND_METHODS)}")
    if crown_limit is not None and crown_limit < 0:
        raise InputError(f"crown_limit must be >= 0, got {crown_limit}")
    X, Y = dataset_tensors(dataset, limit)
    if len(X) == 0:
        raise InputError("the evaluation set is empty")
    device = torch.device(device)
    if isinstance(model, BoundedModule):
        bm = model
    else:
        bm = BoundedModule(model.to(device), X[:2].to(device))
    bm.to(device)
    was_training = bm.model.training
    bm.model.eval()
    totals: dict[str, int] = {
        "clean": 0, "clean_subset": 0, "certified": 0, "certified_subset": 0,
        **({"pgd": 0, "pgd_subset": 0} if pgd_steps > 0 else {}),
        **{f"certified_{m}{s}": 0 for m in methods for s in ("", "_subset")}}
    n = 0
    n_crown = 0
    t0 = time.perf_counter()
    # under torchrun each process takes every world-th batch; the attack's random restarts are
    # seeded per batch, so the report is the same whatever the number of processes
    rank, world = rank_world()
    starts = list(range(0, len(X), batch_size))
    mine = [starts[k] for k in strided(len(starts), rank, world)]
    try:
        desc = f"evaluate eps={eps:g}" + ("" if p == INF else f" (l{int(p)})")
        bar = tqdm(total=sum(min(batch_size, len(X) - s) for s in mine), desc=desc, unit="img",
                   disable=not progress or rank != 0, leave=False)
        for start in mine:
            gen = torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + start)
            xb = X[start:start + batch_size].to(device)
            yb = Y[start:start + batch_size].to(device)
            mask = None
            if any(m in methods for m in _LIMITED) and crown_limit is not None:
                idx = torch.arange(start, start + len(xb), device=device)
                mask = idx < crown_limit
            counts = count_errors(bm, xb, yb, eps, methods, pgd_steps=pgd_steps,
                                  pgd_restarts=pgd_restarts, domain=domain, crown_mask=mask,
                                  generator=gen, p=p)
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            n += len(xb)
            n_crown += len(xb) if mask is None else int(mask.sum())
            bar.update(len(xb))
        bar.close()
    finally:
        bm.model.train(was_training)
    summed = all_sum({**totals, "n": n, "n_crown": n_crown})
    n, n_crown = summed.pop("n"), summed.pop("n_crown")
    totals = summed
    report = {
        "eps": float(eps),
        "norm": norm_name(p),
        "num_examples": n,
        "clean_error": totals["clean"] / n,
        "pgd_error": totals["pgd"] / n if "pgd" in totals else None,
    }
    for m in BOUND_METHODS:
        if m not in methods:
            report[_key(m)] = None
        elif m in _LIMITED:
            report[_key(m)] = totals[f"certified_{m}"] / n_crown if n_crown else None
        else:
            report[_key(m)] = totals[f"certified_{m}"] / n
    report["num_examples_crown"] = n_crown if any(m in methods for m in _LIMITED) else 0
    report["certified_error"] = totals["certified"] / n
    if n_crown and n_crown < n and any(m in methods for m in _LIMITED):
        # every figure again on the examples the costly methods ran on: one denominator
        sub = {"num_examples": n_crown, "clean_error": totals["clean_subset"] / n_crown,
               "pgd_error": totals["pgd_subset"] / n_crown if "pgd" in totals else None}
        for m in BOUND_METHODS:
            sub[_key(m)] = totals[f"certified_{m}_subset"] / n_crown if m in methods else None
        sub["certified_error"] = totals["certified_subset"] / n_crown
        report["subset"] = sub
    else:
        report["subset"] = None
    report["methods"] = methods
    report["pgd"] = {"steps": pgd_steps, "restarts": pgd_restarts}
    report["time_s"] = round(time.perf_counter() - t0, 3)
    return report
