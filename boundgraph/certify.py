"""Local robustness of a classifier's examples: certified accuracy on a data set, and one
example's robustness as a VNN-LIB property.

:func:`certified_accuracy` reports the fraction of a data set certified robust in an
L-infinity ball (bounds on whole batches, the cheapest method first; a PGD attack on the
examples left gives an upper bound on robust accuracy); :func:`robustness_vnnlib` states the
local robustness of one example as VNN-LIB text, for :func:`boundgraph.verify.verify`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .bounded import METHODS, BoundedModule
from .distributed import all_sum, rank_world, strided
from .errors import InputError
from .verify import LADDER

__all__ = ["certified_accuracy", "robustness_vnnlib"]


# ---------------------------------------------------------------------------------- data sets
def certified_accuracy(model, dataset, eps: float, *, method: str = "auto", n: int | None = None,
                       batch_size: int = 64, lower: float = 0.0, upper: float = 1.0,
                       attack_steps: int = 20, progress: bool = True,
                       bab_timeout: float = 0.0) -> dict:
    """Fraction of a data set certified robust in the L-infinity ball of radius ``eps``
    (clipped to ``[lower, upper]``).

    ``model`` is an ``nn.Module`` (traced on the first batch) or a BoundedModule; ``dataset`` a
    ``(images, labels)`` data set (e.g. :func:`boundgraph.data.load_dataset`). An example counts
    as certified when it is classified correctly and every margin's lower bound is positive.
    ``method`` ``"auto"`` tries IBP, then CROWN-IBP for the examples IBP leaves, then CROWN and
    alpha-CROWN for the rest; a single method name uses only that one. A PGD attack on the
    uncertified examples gives an upper bound on robust accuracy. With ``bab_timeout > 0``
    every example still open after the attack goes to the complete verifier
    (:func:`boundgraph.verify.verify` with ``method="bab"``: branch and bound on activation
    splits) for at most that many seconds: ``unsat`` certifies it (counted under ``"bab"``),
    ``sat`` is a counterexample (it leaves the PGD-robust count). Under ``torchrun`` every
    process takes every world-th batch and the counts are summed: each process returns the
    report of the whole data set.

    Returns a dict: ``n``, ``clean``, ``certified``, ``certified_fraction``, ``pgd_robust``
    (fraction not broken by PGD or, with branch and bound, by a counterexample), ``by_method``
    (how many examples each method certified first), ``method``, ``eps``, ``time``, and with
    branch and bound ``bab_open`` (examples it left undecided).
    """
    from tqdm import tqdm

    from .attack import pgd_margin_attack
    from .perturbation import LinfBall
    from .spec import margin_spec

    if method != "auto" and method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose auto or one of {', '.join(METHODS)}")
    if eps < 0:
        raise InputError(f"eps must be >= 0, got {eps}")
    t0 = time.perf_counter()
    total = len(dataset) if n is None else min(n, len(dataset))
    ladder = LADDER if method == "auto" else (method,)
    bm = model if isinstance(model, BoundedModule) else None
    counts = {"n": 0, "clean": 0, "certified": 0, "pgd_robust": 0}
    by_method = {m: 0 for m in ladder}
    if bab_timeout > 0:
        by_method["bab"] = 0
        counts["bab_open"] = 0
    # under torchrun each process takes every world-th batch; counts are summed at the end
    rank, world = rank_world()
    starts = list(range(0, total, batch_size))
    bar = tqdm([starts[k] for k in strided(len(starts), rank, world)],
               desc=f"certify eps={eps:g}", unit="batch", disable=not progress or rank != 0)
    was_training = (bm.model if bm is not None else model).training
    (bm.model if bm is not None else model).eval()
    try:
        for start in bar:
            items = [dataset[i] for i in range(start, min(total, start + batch_size))]
            x = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
            y = torch.as_tensor([int(it[1]) for it in items])
            if bm is None:
                bm = BoundedModule(model, x)
            with torch.no_grad():
                logits = bm(x)
            K = logits.shape[1]
            correct = logits.argmax(1) == y
            cert = torch.zeros_like(correct)
            todo = correct.clone()
            pert = LinfBall(eps, lower, upper)
            for m in ladder:
                if not todo.any():
                    break
                idx = todo.nonzero().flatten()
                with torch.no_grad():
                    lb, _ = bm.compute_bounds(x[idx], pert, method=m, C=margin_spec(y[idx], K),
                                              bound_upper=False)
                ok = (lb > 0).all(1)
                cert[idx[ok]] = True
                todo[idx[ok]] = False
                by_method[m] += int(ok.sum())
            robust = correct.clone()
            left = (correct & ~cert).nonzero().flatten()
            if left.numel() and attack_steps > 0:
                lo = (x[left] - eps).clamp(min=lower)
                hi = (x[left] + eps).clamp(max=upper)
                broken = pgd_margin_attack(bm, x[left], y[left], lo, hi, steps=attack_steps,
                                           restarts=1)
                robust[left[broken]] = False
            if bab_timeout > 0:
                for i in (correct & ~cert & robust).nonzero().flatten().tolist():
                    verdict = _complete(bm, x[i], int(y[i]), eps, K, lower, upper,
                                        bab_timeout)
                    if verdict == "unsat":
                        cert[i] = True
                        by_method["bab"] += 1
                    elif verdict == "sat":
                        robust[i] = False
                    else:
                        counts["bab_open"] += 1
            counts["n"] += len(items)
            counts["clean"] += int(correct.sum())
            counts["certified"] += int(cert.sum())
            counts["pgd_robust"] += int(robust.sum())
            bar.set_postfix(certified=f"{counts['certified'] / counts['n']:.3f}")
    finally:
        (bm.model if bm is not None else model).train(was_training)
    summed = all_sum({**counts, **{f"by_{k}": v for k, v in by_method.items()}})
    by_method = {k: summed.pop(f"by_{k}") for k in by_method}
    counts = summed
    N = max(1, counts["n"])
    out = {"n": counts["n"], "eps": eps, "method": method,
           "clean": counts["clean"] / N, "certified": counts["certified"],
           "certified_fraction": counts["certified"] / N,
           "pgd_robust": counts["pgd_robust"] / N, "by_method": by_method,
           "time": time.perf_counter() - t0}
    if bab_timeout > 0:
        out["bab_open"] = counts["bab_open"]
        out["bab_timeout"] = bab_timeout
    return out


def _complete(bm, x, label, eps, K, lower, upper, timeout) -> str:
    """The complete verifier's verdict on one example's robustness."""
    from .verify import verify
    from .vnnlib import parse_vnnlib

    prop = parse_vnnlib(robustness_vnnlib(x, label, eps, num_classes=K, lower=lower,
                                          upper=upper))
    return verify(bm, prop, timeout=timeout, method="bab", attack_budget=0.1).verdict


# ---------------------------------------------------------------------------------- one example
def robustness_vnnlib(x, label: int, eps: float, num_classes: int, lower: float | None = 0.0,
                      upper: float | None = 1.0) -> str:
    """VNN-LIB text of local robustness: every input within L-inf distance ``eps`` of ``x``
    (clipped to ``[lower, upper]``) keeps ``label`` as the top class. The unsafe region is
    ``Y_j >= Y_label`` for some ``j != label`` (so ``unsat`` means robust)."""
    x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64).reshape(-1)
    if eps < 0:
        raise InputError(f"eps must be >= 0, got {eps}")
    if not 0 <= int(label) < num_classes:
        raise InputError(f"label {label} outside [0, {num_classes})")
    lo, hi = x - eps, x + eps
    if lower is not None:
        lo = np.maximum(lo, lower)
    if upper is not None:
        hi = np.minimum(hi, upper)
    out = [f"; local robustness of class {int(label)} at eps {eps!r}"]
    out += [f"(declare-const X_{i} Real)" for i in range(x.size)]
    out += [f"(declare-const Y_{j} Real)" for j in range(num_classes)]
    for i in range(x.size):
        out.append(f"(assert (>= X_{i} {float(lo[i])!r}))")
        out.append(f"(assert (<= X_{i} {float(hi[i])!r}))")
    alts = " ".join(f"(and (>= Y_{j} Y_{int(label)}))" for j in range(num_classes)
                    if j != int(label))
    out.append(f"(assert (or {alts}))")
    return "\n".join(out) + "\n"
