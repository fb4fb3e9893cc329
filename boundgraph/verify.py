"""Verification of one VNN-LIB property: :func:`verify` and its :class:`Result`.

:func:`verify` decides a property ``unsafe = union_k {x in box_k, C_k f(x) <= d_k}`` for a
network ``f`` (an ONNX file or a :class:`~boundgraph.BoundedModule`) in three stages, within a
time budget:

1. **Attack.** Minimise ``m(x) = min_k max_i (C_k f(x) - d_k)_i`` over each input box with PGD
   (random restarts, :func:`boundgraph.attack.pgd_minimize`), plus random points and box
   corners. A point with ``m(x) <= 0`` lies in the unsafe region; it is reported as ``sat``
   only after the original model (onnxruntime for an ONNX file, in its own precision) confirms
   it, so a ``sat`` always carries a real counterexample.
2. **Bounds.** For each disjunct, lower bounds of ``C_k f(x) - d_k`` over its box by IBP, then
   CROWN-IBP, then CROWN, then CROWN with the other lower slopes for unstable ReLUs (``zero``,
   ``parallel``), then alpha-CROWN (the slopes optimised per row; only when the input has too
   many dimensions for stage 3, which does better where it applies); each row keeps the best
   of its bounds, all of them sound. A disjunct is
   infeasible when some row's lower bound is ``> 0``; ``unsat`` needs every disjunct infeasible.
3. **Branch and bound** when the input has too many dimensions to bisect (or with
   ``method="bab"``): activation splits with beta-CROWN bounds, best first, until every
   sub-domain is proved, a counterexample turns up, or the time runs out
   (:mod:`boundgraph.bab`). Or
   **input bisection** (inputs of at most ``max_bisect_inputs`` dimensions, e.g. ACAS Xu's 5):
   boxes whose disjuncts are not all infeasible are split in two along the input dimension with
   the largest estimated effect on the bound (``|d bound / d radius_i| * radius_i`` by autograd
   through CROWN, a "smear"-like score, refreshed every few bisection batches and halved along
   the split axis in between) or simply the widest one, and bounded again (CROWN, then CROWN
   with zero lower slopes for the boxes still open), batch by batch, until all are closed, a
   counterexample turns up at a box centre or by an attack inside the most promising boxes, or
   the time runs out.

Bounds are computed on a float64 copy of the model, which makes it far less likely that
rounding in the bound computation (there is no outward rounding) turns a tiny violation into a
proof. With a strict comparison in the file (parsed as its closure), a counterexample must
satisfy every inequality strictly. Small networks run on one torch thread (their many small
operations only lose from thread synchronisation). Verdicts use the VNN-COMP words: ``unsat``
(the property holds), ``sat`` (counterexample), ``unknown``, ``timeout``.

The VNN-COMP batch runner (:func:`~boundgraph.instances.verify_instances` on an
``instances.csv``) lives in :mod:`boundgraph.instances`; certified accuracy on a data set
(:func:`~boundgraph.certify.certified_accuracy`) and the VNN-LIB text of local robustness
(:func:`~boundgraph.certify.robustness_vnnlib`) in :mod:`boundgraph.certify`.

The problem set-up (the :class:`Result` type, the disjuncts grouped by input box, the attack and
bound primitives, the float64 copy of the model and the oracle that confirms counterexamples)
is in :mod:`boundgraph.verify_problem`; this module holds :func:`verify` and its search (the
ladder of bound methods and the input bisection).
"""
from __future__ import annotations

import math
import time

import torch

from .attack import pgd_minimize
from .bab import branch_and_bound, split_nodes
from .bounded import METHODS
from .errors import InputError
from .verify_problem import (Result, _as_float64, _check_sizes, _Group, _load_model,
                             _make_oracle, _Problem, _starts, _Timeout)
from .vnnlib import Property, parse_vnnlib

__all__ = ["Result", "verify", "VERDICTS"]

VERDICTS = ("sat", "unsat", "unknown", "timeout")
LADDER = ("ibp", "crown-ibp", "crown", "alpha-crown")  # "auto": cheapest first
_GRAD_EVERY = 4


# ---------------------------------------------------------------------------------- verify
def verify(model, prop, timeout: float = 60.0, method: str = "auto", *, bisect: bool = True,
           max_bisect_inputs: int = 32, split: str = "grad", batch: int = 256,
           attack_budget: float | None = None, seed: int = 0,
           max_domains: int = 2_000_000, threads: int | None = None,
           bab_batch: int = 64, progress: bool = False) -> Result:
    """Decide a VNN-LIB property for a network within ``timeout`` seconds.

    Parameters
    ----------
    model:
        path of an ``.onnx`` / ``.onnx.gz`` file (imported with
        :func:`~boundgraph.frontends.onnx_import.load_onnx` and checked against onnxruntime), or
        a :class:`~boundgraph.BoundedModule` whose flattened input/output are ``X_i``/``Y_j``.
    prop:
        path of a ``.vnnlib`` file or a parsed :class:`~boundgraph.vnnlib.Property`.
    timeout:
        wall-clock budget in seconds, model loading included.
    method:
        ``"auto"`` (IBP, then CROWN-IBP, then CROWN, then bisection with CROWN for small
        inputs, alpha-CROWN and branch and bound on activation splits for larger ones),
        ``"bab"`` (the same ladder, then branch and bound whatever the input size) or one of
        ``"ibp"``, ``"crown-ibp"``, ``"crown"``, ``"alpha-crown"`` for every bound computed
        (no branch and bound).
    bisect:
        split when bounds alone do not decide: the input box (inputs of at most
        ``max_bisect_inputs`` dimensions) or, with ``"auto"``, activations.
    split:
        ``"grad"`` (largest ``|d bound / d radius_i| * radius_i``) or ``"widest"`` (widest
        dimension relative to the original box).
    batch:
        boxes bounded together during bisection.
    bab_batch:
        domains split per branch-and-bound step (each gives two children, bounded together).
    progress:
        show a progress bar (domains, open domains, worst bound) during branch and bound.
    threads:
        torch threads while verifying (restored afterwards); default one thread for small
        networks (fewer than 200,000 neurons), whose many small tensor operations only lose
        from thread synchronisation, and torch's setting otherwise.
    attack_budget:
        at most this many seconds for the first attack (default: 5 % of the timeout, between
        0.2 and 2 s); bisection attacks inside its most promising boxes as it goes, and a
        problem too large to bisect gets a longer attack (15 % of the timeout) before
        ``unknown``.

    Returns
    -------
    :class:`Result`. ``sat`` only with a counterexample confirmed on the original model
    (onnxruntime for a file); ``unsat`` only when every disjunct was proved infeasible.
    """
    t0 = time.perf_counter()
    deadline = t0 + float(timeout)
    if method not in ("auto", "bab") and method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose auto, bab or one of "
                         f"{', '.join(METHODS)}")
    if split not in ("grad", "widest"):
        raise InputError(f"split must be 'grad' or 'widest', got {split!r}")
    if not isinstance(prop, Property):
        prop = parse_vnnlib(prop)
    details: dict = {}

    def done(verdict, cex=None):
        details.update(prob.stats if prob is not None else {})
        return Result(verdict, cex, time.perf_counter() - t0, details)

    prob = None
    if not prop.disjuncts:
        details["stage"] = "parse"
        return done("unsat")
    bm = _load_model(model, prop)
    _check_sizes(bm, prop)
    if threads is None:
        neurons = sum(math.prod(bm.graph.nodes[n].shape or (1,)) for n in bm.graph.batched_order)
        threads = 1 if neurons < 200_000 else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _verify(bm, prop, t0, deadline, timeout, method, bisect, max_bisect_inputs, split,
                       batch, attack_budget, seed, max_domains, bab_batch, progress)
    finally:
        torch.set_num_threads(before)


def _verify(bm, prop, t0, deadline, timeout, method, bisect, max_bisect_inputs, split, batch,
            attack_budget, seed, max_domains, bab_batch=64, progress=False) -> Result:
    details: dict = {}
    prob = None

    def done(verdict, cex=None):
        details.update(prob.stats if prob is not None else {})
        return Result(verdict, cex, time.perf_counter() - t0, details)

    oracle = _make_oracle(bm, prop)
    bm64 = _as_float64(bm)
    prob = _Problem(bm64, prop, oracle, deadline, seed)
    n_in = prop.n_inputs
    try:
        # 1. attack
        budget = attack_budget if attack_budget is not None else \
            min(2.0, max(0.2, 0.05 * float(timeout)))
        ta = time.perf_counter()
        found = prob.attack(budget, rounds=2)
        details["attack_time"] = round(time.perf_counter() - ta, 3)
        if found is not None:
            details["stage"] = "attack"
            return done("sat", found)
        prob.check_time()

        # 2. bounds on the whole boxes
        auto = method in ("auto", "bab")
        small = bisect and n_in <= max_bisect_inputs and method != "bab"
        ladder = [(m, "adaptive") for m in (LADDER if auto else (method,))]
        if auto:  # other fixed lower slopes for unstable ReLUs sometimes do
            # better; they are cheap, so they go before alpha-CROWN, which optimises them
            ladder[3:3] = [("crown", "zero"), ("crown", "parallel")]
            if small:  # bisection with CROWN does better
                ladder = [r for r in ladder if r[0] != "alpha-crown"]
        open_groups = []
        used = []
        for g in prob.groups:
            best = None  # the best lower bound of each row over all methods so far
            for m, mode in ladder:
                prob.check_time()
                lb = prob.bounds(g, g.lower.reshape(1, -1), g.upper.reshape(1, -1), m,
                                 relu_lower=mode)
                used.append(m if mode == "adaptive" else f"{m}[{mode}]")
                best = lb if best is None else torch.maximum(best, lb)
                openv = ~g.proved(best)
                if not openv.any():
                    break
            if openv.any():
                open_groups.append((g, openv))
        details["methods"] = used
        if not open_groups:
            details["stage"] = "bounds"
            return done("unsat")

        # 3. branch and bound on activations, or bisection of the input
        if auto and bisect and not small and split_nodes(bm64.graph):
            details["bisection_method"] = "bab"
            for g, openv in open_groups:
                res = branch_and_bound(prob, g, openv, details, batch=bab_batch,
                                       max_domains=max_domains, progress=progress)
                if res is not None:
                    details["stage"] = "bab"
                    return done("sat", res)
                if details.get("gave_up"):
                    found = prob.attack(min(prob.left(), max(1.0, 0.15 * float(timeout))))
                    if found is not None:
                        details["stage"] = "attack"
                        return done("sat", found)
                    details["stage"] = "bab"
                    return done("unknown")
            details["stage"] = "bab"
            return done("unsat")
        if not small:
            # a last, longer attack before giving up
            found = prob.attack(min(prob.left(), max(1.0, 0.15 * float(timeout))))
            if found is not None:
                details["stage"] = "attack"
                return done("sat", found)
            details["stage"] = "bounds"
            details["reason"] = ("bounds too loose" if bisect else
                                 "bounds too loose (bisection off)")
            if n_in > max_bisect_inputs and bisect:
                details["reason"] += f"; {n_in} inputs is too many to bisect"
            return done("unknown")
        bab_method = "crown" if auto else method
        details["bisection_method"] = bab_method
        for g, openv in open_groups:
            res = _bisect(prob, g, openv, bab_method, split, batch, max_domains, details)
            if res is not None:  # counterexample
                details["stage"] = "bisection"
                return done("sat", res)
            if details.get("gave_up"):
                details["stage"] = "bisection"
                return done("unknown")
        details["stage"] = "bisection"
        return done("unsat")
    except _Timeout:
        details.setdefault("stage", "timeout")
        return done("timeout")


def _bisect(prob: _Problem, g: _Group, openv, method, split, batch, max_domains, details):
    """Branch on the input box of group ``g``. Returns a counterexample, or ``None`` when every
    box is closed (or ``details['gave_up']`` is set)."""
    n = g.lower.numel()
    width0 = (g.upper - g.lower).clamp(min=1e-12)
    grad = split == "grad"
    # stack of open boxes: lo, hi (N, n), open (N, D), score (N, n)
    lo, hi = g.lower.reshape(1, n), g.upper.reshape(1, n)
    score, openv, _ = _bound_boxes(prob, g, lo, hi, openv, method, grad, width0)
    stack = [(lo, hi, openv, score)]
    total = 1
    it = 0
    while stack:
        prob.check_time()
        # take up to `batch` boxes from the top of the stack
        take, count = [], 0
        while stack and count < batch:
            lo_, hi_, op_, sc_ = stack.pop()
            room = batch - count
            if lo_.shape[0] > room:
                stack.append((lo_[room:], hi_[room:], op_[room:], sc_[room:]))
                lo_, hi_, op_, sc_ = lo_[:room], hi_[:room], op_[:room], sc_[:room]
            take.append((lo_, hi_, op_, sc_))
            count += lo_.shape[0]
        lo = torch.cat([t[0] for t in take])
        hi = torch.cat([t[1] for t in take])
        op = torch.cat([t[2] for t in take])
        sc = torch.cat([t[3] for t in take])
        # split each box along its best dimension (boxes too small to split end the search)
        if bool(((hi - lo) <= 1e-12 * width0).all(1).any()):
            details["gave_up"] = True
            details["reason"] = "an open box is too small to split"
            break
        dim = sc.argmax(1)
        mid = (lo.gather(1, dim[:, None]) + hi.gather(1, dim[:, None])) / 2
        lo_r = lo.clone().scatter_(1, dim[:, None], mid)
        hi_l = hi.clone().scatter_(1, dim[:, None], mid)
        clo = torch.cat([lo, lo_r])
        chi = torch.cat([hi_l, hi])
        cop = torch.cat([op, op])
        # counterexamples at the centres
        centres = (clo + chi) / 2
        with torch.no_grad():
            v = prob.objective(g)(centres)
        found = prob.confirm(g, centres, v)
        if found is not None:
            return found
        prob.check_time()
        fresh = grad and (it % _GRAD_EVERY == 0)
        csc, cop, worst = _bound_boxes(prob, g, clo, chi, cop, method, fresh, width0)
        if grad and not fresh:  # inherit the parent's scores; the split axis got half as wide
            inh = sc.clone()
            inh.scatter_(1, dim[:, None], inh.gather(1, dim[:, None]) / 2)
            csc = torch.cat([inh, inh])
        keep = cop.any(1)
        total += clo.shape[0]
        it += 1
        if keep.any():
            k = keep.nonzero().flatten()
            stack.append((clo[k], chi[k], cop[k], csc[k]))
            # now and then, attack inside the most promising open boxes
            if it % 4 == 0:
                wk = worst[k]
                top = k[torch.argsort(wk)[:32]].repeat(4)
                found = _attack_boxes(prob, g, clo[top], chi[top])
                if found is not None:
                    return found
        if sum(s[0].shape[0] for s in stack) > max_domains:
            details["gave_up"] = True
            details["reason"] = f"more than {max_domains} open boxes"
            break
    details["boxes"] = details.get("boxes", 0) + total
    details["bisection_iterations"] = details.get("bisection_iterations", 0) + it
    return None


def _bound_boxes(prob, g, lo, hi, openv, method, grad, width0):
    """Bound boxes; returns (split scores (N, n), still-open disjuncts (N, D), worst slack).

    With ``grad``, the split scores are ``|d bound / d radius_i| * radius_i`` for the worst open
    disjunct of each box, by autograd through the same bound computation."""
    if grad:
        lo_ = lo.clone().requires_grad_(True)
        hi_ = hi.clone().requires_grad_(True)
        lb = prob.bounds(g, lo_, hi_, method, grad=True)
    else:
        lb = prob.bounds(g, lo, hi, method)
    with torch.no_grad():
        still = openv & ~g.proved(lb.detach())
        if method != "ibp":  # the zero lower ReLU slope, on boxes the adaptive one leaves open
            k = still.any(1).nonzero().flatten()
            if k.numel():
                lb2 = prob.bounds(g, lo[k], hi[k], method, relu_lower="zero")
                still[k] &= ~g.proved(lb2)
    slack = g.slack(lb).masked_fill(~still, float("inf"))  # (N, D)
    worst = slack.min(1).values
    rel = (hi - lo) / width0
    score = rel
    if grad and still.any():
        keep = still.any(1).nonzero().flatten()
        target = worst[keep]
        fin = torch.isfinite(target)
        gl, gh = torch.autograd.grad(target[fin].sum(), (lo_, hi_), allow_unused=True)
        gl = torch.zeros_like(lo_) if gl is None else gl
        gh = torch.zeros_like(hi_) if gh is None else gh
        sc = ((gl[keep] - gh[keep]) * (hi[keep] - lo[keep])).detach()
        # fall back on the widest dimension where the gradient says nothing
        flat = sc.max(1).values <= 0
        sc = torch.where(flat[:, None], rel[keep], sc + 1e-9 * rel[keep])
        score = rel.clone()
        score[keep] = sc
    return score, still, worst.detach()


def _attack_boxes(prob, g, lo, hi):
    """A short PGD inside each of the boxes ``(M, n)``; returns a confirmed counterexample."""
    M, n = lo.shape
    start = _starts(lo, hi, prob.gen)
    xs, vs = pgd_minimize(prob.objective(g), lo, hi, steps=30, restarts=1, start=start,
                          generator=prob.gen)
    prob.stats["attack_points"] += M
    return prob.confirm(g, xs, vs)
