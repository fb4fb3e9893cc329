"""Branch and bound on activation splits: complete verification of piecewise-linear networks
(ReLU, LeakyReLU, Abs) whose inputs are too many to bisect.

A *domain* is the input box of a property intersected with sign constraints on some neurons'
pre-activations (``z >= 0`` or ``z <= 0``); on a split neuron the activation is linear. Each
step takes the open domains with the lowest bounds (best first), splits each on one unstable
neuron into its two halves, and bounds all the children together as one batch with
alpha-CROWN, where every split enters the output's backward pass through an optimised Lagrange
multiplier (beta-CROWN; Wang et al. 2021) and clips the split neuron's intervals in every pass
(:attr:`boundgraph.engines.context.Context.splits`). A child whose rows are proved is closed;
one whose constraints contradict its bounds is empty and closed too. When every domain is
closed the property holds.

Branching (a BaBSR-style score; Bunel et al. 2020): for the worst open row of a domain, an
unstable neuron with interval ``[l, u]`` whose activation's output carries a negative
coefficient ``lambda`` in the lower bound's backward pass costs the bound about
``-lambda * (-u l / (u - l))`` through the intercept of its upper line; the neuron with the
largest cost is split (ties, and neurons with positive coefficients, by ``|lambda| min(-l, u)``).

Counterexamples: the input point at which each child's linear lower bound is attained (a corner
of the box, read off the input coefficients of that backward pass) is evaluated, and now and
then PGD starts from those points; a point that violates the property is confirmed on the
original model as in the rest of the verifier.
"""
from __future__ import annotations

import math
import time

import torch

from .attack import pgd_minimize
from .engines.alpha import alpha_bounds
from .engines.context import infeasible
from .ops.base import Interval
from .perturbation import Box

__all__ = ["split_nodes", "branch_and_bound"]


def split_nodes(graph) -> list[str]:
    """The nodes whose values branch and bound may split: inputs of ops that are linear on each
    side of 0 (``op.split_points == (0.0,)``), in topological order."""
    out = []
    for name in graph.batched_ops:
        node = graph.nodes[name]
        if tuple(getattr(node.op, "split_points", ())) == (0.0,):
            z = node.inputs[0]
            if graph.nodes[z].batched and z not in graph.inputs and z not in out:
                out.append(z)
    return sorted(out, key=graph.batched_order.index)


def _activation_of(graph, z) -> list[str]:
    """The split ops that read node ``z``."""
    return [c for c in graph.consumers[z] if graph.nodes[c].kind == "op"
            and tuple(getattr(graph.nodes[c].op, "split_points", ())) == (0.0,)
            and graph.nodes[c].inputs[0] == z]


class _Bounder:
    """Bounds of a batch of domains of one input box (one group of the property)."""

    def __init__(self, prob, group, nodes, steps):
        self.prob, self.g, self.nodes, self.steps = prob, group, nodes, steps
        bm = prob.bm
        self.bm = bm
        graph = bm.graph
        self.acts = {z: _activation_of(graph, z) for z in nodes}
        self.shape = prob.shape

    def __call__(self, splits: dict[str, torch.Tensor], steps: int | None = None,
                 lr: float = 0.1, lr_decay: float = 0.98):
        """``(lb (N, R), intervals of the split nodes, taps)`` for ``N`` domains (``steps``
        of alpha/beta optimisation, by default the bounder's)."""
        prob, g = self.prob, self.g
        N = next(iter(splits.values())).shape[0]
        lo = g.lower.reshape(1, *self.shape).expand(N, *self.shape)
        hi = g.upper.reshape(1, *self.shape).expand(N, *self.shape)
        x = (lo + hi) / 2
        bm = self.bm
        with torch.no_grad():
            ctx = bm._context(x, Box(lo, hi), {"relu_lower": "adaptive",
                                               "max_elements": 2 ** 25})
            ctx.splits = splits
            graph = bm.graph
            ctx.taps = {graph.input: None}
            for z in self.nodes:
                for a in self.acts[z]:
                    ctx.taps[a] = None
            A = g.C.unsqueeze(0).reshape(1, g.C.shape[0], *graph.output_shape)
            base, lb, _ = alpha_bounds(ctx, A, lower=True, upper=False,
                                       steps=self.steps if steps is None else steps, lr=lr,
                                       lr_decay=lr_decay,
                                       time_limit=max(0.0, prob.left()))
            empty = infeasible(ctx, base)
            if empty is not None and bool(empty.any()):
                lb = lb.masked_fill(empty.unsqueeze(1), math.inf)
        prob.stats["bounded_boxes"] += N
        return lb.detach(), {z: base[z] for z in self.nodes}, ctx.taps


def _scores(bounder, splits, bounds, taps, row) -> list[torch.Tensor]:
    """Per split node, the branching score ``(N, numel)`` of each neuron (``-inf`` where it
    cannot be split); ``row`` ``(N,)`` is the row whose bound drives the choice."""
    out = []
    N = row.shape[0]
    ar = torch.arange(N)
    for z in bounder.nodes:
        b = bounds[z]
        l, u = b.lower.reshape(N, -1), b.upper.reshape(N, -1)
        free = (splits[z].reshape(N, -1) == 0) & (l < 0) & (u > 0)
        lam = torch.zeros_like(l)
        for a in bounder.acts[z]:
            t = taps.get(a)
            if t is not None:  # one row per domain (see _fields)
                lam = lam + t[ar, row].reshape(N, -1)
        width = torch.where(free, u - l, torch.ones_like(u))
        intercept = torch.where(free, -u * l / width, torch.zeros_like(u))
        score = (-lam).clamp(min=0) * intercept + 1e-3 * lam.abs() * torch.minimum(-l, u)
        # a free neuron no coefficient reaches still beats none at all
        score = torch.where(free, score + 1e-12 * intercept, torch.full_like(score, -math.inf))
        out.append(score)
    return out


def branch_and_bound(prob, g, openv, details: dict, *, batch: int = 64, steps: int = 20,
                     max_domains: int = 200_000, progress: bool = False):
    """Prove the open disjuncts ``openv`` (``(1, D)``) of group ``g`` by activation splits.

    Returns a confirmed counterexample, or ``None``: then either every domain was closed (the
    group is proved) or ``details["gave_up"]`` says why not. Raises the verifier's timeout when
    the deadline passes.
    """
    from tqdm.auto import tqdm

    graph = prob.bm.graph
    nodes = split_nodes(graph)
    if not nodes:
        details["gave_up"] = True
        details["reason"] = "branch and bound needs ReLU-like activations to split"
        return None
    bounder = _Bounder(prob, g, nodes, steps)
    n_in = g.lower.numel()
    lo_in, hi_in = g.lower.reshape(1, n_in), g.upper.reshape(1, n_in)
    objective = prob.objective(g)
    # the root domain
    splits = {z: torch.zeros(1, *graph.nodes[z].shape, dtype=torch.int8) for z in nodes}
    lb, bounds, taps = bounder(splits)
    still = openv & ~g.proved(lb)
    slack = g.slack(lb).masked_fill(~still, math.inf)
    worst = slack.min(1).values
    details.setdefault("bab_domains", 0)
    details.setdefault("bab_iterations", 0)
    t0 = time.perf_counter()
    bar = tqdm(desc="branch and bound", unit="domain", disable=not progress, leave=False)
    # the open domains: splits per node (M, *shape), open disjuncts (M, D), worst slack (M,)
    # and what their bound computation left for branching
    pool = None
    if bool(still.any()):
        pool = _Pool(g, _fields(splits, still, worst, bounds, taps, lb))
    it = 0
    try:
        while pool is not None and pool.size:
            prob.check_time()
            if pool.size > max_domains:
                details["gave_up"] = True
                details["reason"] = f"more than {max_domains} open domains"
                return None
            take = pool.pop(batch)
            scores = _scores(bounder, take["splits"], take["bounds"], take["taps"],
                             take["row"])
            flat = torch.cat(scores, 1)  # (N, total neurons)
            best, where = flat.max(1)
            stuck = ~torch.isfinite(best)
            if bool(stuck.any()):
                # every unstable neuron split: the network is linear on the domain, and the
                # optimal multipliers give the exact minimum; optimise them for longer
                k = stuck.nonzero().flatten()
                sub = {z: t[k] for z, t in take["splits"].items()}
                lb_k = bounder(sub, steps=20 * bounder.steps, lr=1.0, lr_decay=0.99)[0]
                left = take["open"][k] & ~g.proved(lb_k)
                if bool(left.any()):
                    w = g.slack(lb_k).masked_fill(~left, math.inf).min(1).values
                    details["gave_up"] = True
                    details["reason"] = ("a domain stays open with every unstable neuron "
                                         f"split (worst bound {float(w.min()):.4g})")
                    return None
                keep = ~stuck
                if not bool(keep.any()):
                    continue
                take = _rows(take, keep.nonzero().flatten())
                best, where = best[keep], where[keep]
            children = {}
            offsets = [0]
            for s in scores:
                offsets.append(offsets[-1] + s.shape[1])
            N = best.shape[0]
            for k, z in enumerate(nodes):
                s = take["splits"][z].reshape(N, -1)
                mine = (where >= offsets[k]) & (where < offsets[k + 1])
                pos, neg = s.clone(), s.clone()
                idx = (where - offsets[k]).clamp(0, s.shape[1] - 1)
                r = mine.nonzero().flatten()
                pos[r, idx[r]] = 1
                neg[r, idx[r]] = -1
                shape = graph.nodes[z].shape
                children[z] = torch.cat([pos, neg]).reshape(2 * N, *shape)
            c_open = torch.cat([take["open"], take["open"]])
            lb, bounds, taps = bounder(children)
            still = c_open & ~g.proved(lb)
            slack = g.slack(lb).masked_fill(~still, math.inf)
            worst = slack.min(1).values
            it += 1
            details["bab_domains"] += 2 * N
            # the input point each child's bound is attained at (for its worst row)
            row = _drive_rows(g, lb, still)
            found = _check_points(prob, g, objective, taps, row, lo_in, hi_in,
                                  attack=(it % 4 == 0))
            if found is not None:
                return found
            keep = still.any(1)
            if bool(keep.any()):
                pool.add(_fields(children, still, worst, bounds, taps, lb), keep)
            bar.update(2 * N)
            if pool.size:
                bar.set_postfix(open=pool.size, worst=f"{float(pool.worst.min()):.4g}",
                                refresh=False)
    finally:
        bar.close()
        details["bab_iterations"] += it
        details["bab_time"] = round(details.get("bab_time", 0.0) + time.perf_counter() - t0, 3)
    return None


def _drive_rows(g, lb, open_) -> torch.Tensor:
    """Per domain, the row its branching and its attack follow: in its worst open disjunct
    (lowest slack), the row closest to a proof (a disjunct falls when any one row does)."""
    slack = g.slack(lb).masked_fill(~open_, math.inf)
    dj = slack.argmin(1)
    member = g.member[dj] > 0  # (N, R)
    return (lb - g.d).masked_fill(~member, -math.inf).argmax(1)


def _check_points(prob, g, objective, taps, row, lo, hi, attack: bool):
    """Evaluate the corners where the children's lower bounds are attained; with ``attack``,
    run a short PGD from the most promising of them. Returns a confirmed counterexample."""
    A = taps.get(prob.bm.graph.input)
    if A is None:
        return None
    N = row.shape[0]
    A = A.expand(N, *A.shape[1:]) if A.shape[0] != N else A
    a = A[torch.arange(N), row].reshape(N, -1)
    x = torch.where(a >= 0, lo.expand(N, -1), hi.expand(N, -1))
    with torch.no_grad():
        v = objective(x)
    found = prob.confirm(g, x, v)
    if found is not None or not attack:
        return found
    top = torch.argsort(v)[:16]
    L, U = lo.expand(top.numel(), -1), hi.expand(top.numel(), -1)
    xs, vs = pgd_minimize(objective, L, U, steps=20, restarts=1, start=x[top],
                          generator=prob.gen)
    prob.stats["attack_points"] += top.numel()
    return prob.confirm(g, xs, vs)


class _Pool:
    """The open domains, kept as stacked fields (``(M, ...)`` each, see :func:`_fields`);
    :meth:`pop` takes those with the lowest worst slack (best first)."""

    def __init__(self, g, fields: dict):
        self.g, self.fields = g, fields

    @property
    def size(self) -> int:
        return int(self.fields["worst"].shape[0])

    @property
    def worst(self) -> torch.Tensor:
        return self.fields["worst"]

    def pop(self, n: int) -> dict:
        order = torch.argsort(self.fields["worst"])
        out = _rows(self.fields, order[:n])
        self.fields = _rows(self.fields, order[n:])
        out["row"] = _drive_rows(self.g, out["lb"], out["open"])
        return out

    def add(self, fields: dict, keep: torch.Tensor) -> None:
        self.fields = _joined(self.fields, _rows(fields, keep.nonzero().flatten()))


def _fields(splits, open_, worst, bounds, taps, lb) -> dict:
    """One record of stacked domains; recorded coefficients shared by the batch (batch size
    1) are expanded to one row per domain."""
    M = open_.shape[0]
    taps = {k: (None if t is None else t.expand(M, *t.shape[1:]) if t.shape[0] != M else t)
            for k, t in taps.items()}
    return dict(splits=splits, open=open_, worst=worst, bounds=bounds, taps=taps, lb=lb)


def _rows(v, idx):
    """Rows ``idx`` of a domain record: of each tensor, interval (``Interval``), ``None`` or
    dict of those."""
    if v is None:
        return None
    if isinstance(v, dict):
        return {k: _rows(t, idx) for k, t in v.items()}
    if isinstance(v, Interval):
        return Interval(v.lower[idx], v.upper[idx])
    return v[idx]


def _joined(a, b):
    """Two domain records stacked (a field missing on either side stays ``None``)."""
    if a is None or b is None:
        return None
    if isinstance(a, dict):
        return {k: _joined(t, b.get(k)) for k, t in a.items()}
    if isinstance(a, Interval):
        return Interval(torch.cat([a.lower, b.lower]), torch.cat([a.upper, b.upper]))
    return torch.cat([a, b])
