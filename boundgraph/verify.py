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
3. **Input bisection** (inputs of at most ``max_bisect_inputs`` dimensions, e.g. ACAS Xu's 5):
   boxes whose disjuncts are not all infeasible are split in two along the input dimension with
   the largest estimated effect on the bound (``|d bound / d radius_i| * radius_i`` by autograd
   through CROWN, a "smear"-like score, refreshed every few bisection batches and halved along
   the split axis in between) or simply the widest one, and bounded again (CROWN, then CROWN with zero
   lower slopes for the boxes still open), batch by batch, until all are closed, a
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
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .attack import pgd_minimize
from .bounded import METHODS, BoundedModule
from .errors import InputError
from .perturbation import Box
from .vnnlib import Property, parse_vnnlib

__all__ = ["Result", "verify", "VERDICTS"]

VERDICTS = ("sat", "unsat", "unknown", "timeout")
LADDER = ("ibp", "crown-ibp", "crown", "alpha-crown")  # "auto": cheapest first
_GRAD_EVERY = 4


# ---------------------------------------------------------------------------------- result
@dataclass
class Result:
    """Outcome of :func:`verify`.

    ``verdict`` is one of ``sat``, ``unsat``, ``unknown``, ``timeout``; ``counterexample`` is
    ``(x, y)`` (flat float64 arrays: input and the model's output on it) for ``sat``;
    ``time`` the wall-clock seconds; ``details`` how the verdict was reached (stage, methods,
    number of boxes bounded, ...).
    """

    verdict: str
    counterexample: tuple[np.ndarray, np.ndarray] | None = None
    time: float = 0.0
    details: dict = field(default_factory=dict)

    def to_vnncomp(self) -> str:
        """The VNN-COMP result text: the verdict, then for ``sat`` ``((X_0 v) ... (Y_0 v))``."""
        lines = [self.verdict]
        if self.verdict == "sat" and self.counterexample is not None:
            x, y = self.counterexample
            pairs = [f"(X_{i} {_num(v)})" for i, v in enumerate(x)]
            pairs += [f"(Y_{j} {_num(v)})" for j, v in enumerate(y)]
            lines.append("(" + "\n ".join(pairs) + ")")
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w") as fh:
            fh.write(self.to_vnncomp())

    def __str__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items()
                          if isinstance(v, (str, int, float)) and k != "error")
        return f"{self.verdict} ({self.time:.2f} s{', ' + extra if extra else ''})"


def _num(v: float) -> str:
    return repr(float(v))


class _Timeout(Exception):
    pass


# ---------------------------------------------------------------------------------- problem
class _Group:
    """Disjuncts sharing one input box, with their rows stacked.

    ``C`` is ``(R, K)`` and ``d`` ``(R,)`` over all rows of all disjuncts; ``member`` ``(D, R)``
    marks the rows of each disjunct; ``idx``/``mask`` ``(D, Rmax)`` gather each disjunct's rows
    (padding masked) for the attack objective.
    """

    def __init__(self, lower, upper, disjuncts, dtype):
        self.lower = torch.as_tensor(lower, dtype=torch.float64)
        self.upper = torch.as_tensor(upper, dtype=torch.float64)
        self.disjuncts = disjuncts
        D = len(disjuncts)
        K = disjuncts[0].C.shape[1]
        rows = [dj.C.shape[0] for dj in disjuncts]
        R = sum(rows)
        self.C = torch.zeros(max(R, 1), K, dtype=dtype)
        self.d = torch.zeros(max(R, 1), dtype=dtype)
        self.member = torch.zeros(D, max(R, 1), dtype=dtype)
        rmax = max(1, max(rows))
        self.idx = torch.zeros(D, rmax, dtype=torch.long)
        self.mask = torch.zeros(D, rmax, dtype=torch.bool)
        r = 0
        for k, dj in enumerate(disjuncts):
            m = dj.C.shape[0]
            if m:
                self.C[r:r + m] = torch.as_tensor(dj.C, dtype=dtype)
                self.d[r:r + m] = torch.as_tensor(dj.d, dtype=dtype)
                self.member[k, r:r + m] = 1
                self.idx[k, :m] = torch.arange(r, r + m)
                self.mask[k, :m] = True
            r += m

    def margins(self, y):
        """``max_i (C_k y - d_k)_i`` per disjunct: ``(N, D)`` (``-inf`` for a disjunct without
        output rows: its whole box is unsafe)."""
        v = y.reshape(y.shape[0], -1) @ self.C.T - self.d  # (N, R)
        g = v[:, self.idx]  # (N, D, Rmax)
        g = g.masked_fill(~self.mask, float("-inf"))
        return g.max(-1).values

    def proved(self, lb):
        """Which disjuncts the row lower bounds ``lb`` (``(N, R)``) show infeasible: ``(N, D)``."""
        pos = (lb - self.d > 0).to(self.member.dtype)
        return (pos @ self.member.T) > 0

    def slack(self, lb):
        """Best row value ``max_i (lb - d)_i`` per disjunct (``(N, D)``; > 0 means proved)."""
        v = lb - self.d
        g = v[:, self.idx].masked_fill(~self.mask, float("-inf"))
        return g.max(-1).values


class _Problem:
    def __init__(self, bm: BoundedModule, prop: Property, oracle, deadline: float, seed: int):
        self.bm = bm
        self.prop = prop
        self.oracle = oracle
        self.deadline = deadline
        self.shape = bm.graph.input_shape
        self.dtype = torch.float64
        self.gen = torch.Generator().manual_seed(seed)
        self.groups = [_Group(lo, hi, djs, self.dtype) for lo, hi, djs in prop.by_box()]
        self.stats = {"bounded_boxes": 0, "attack_points": 0, "candidates_rejected": 0}

    def check_time(self):
        if time.perf_counter() > self.deadline:
            raise _Timeout

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    # -- counterexamples -----------------------------------------------------------------------
    def confirm(self, group: _Group, xs: torch.Tensor, values: torch.Tensor):
        """Check candidate points (``(N, n)``, with objective ``values``) on the original model.
        Returns ``(x, y)`` of the first confirmed counterexample, or ``None``."""
        hit = (values <= 0).nonzero().flatten()
        if hit.numel() == 0:
            return None
        order = hit[torch.argsort(values[hit])][:16]
        for i in order.tolist():
            found = self.oracle(group, xs[i])
            if found is not None:
                return found
            self.stats["candidates_rejected"] += 1
        return None

    def objective(self, group: _Group):
        def f(x):
            y = self.bm(x.reshape(x.shape[0], *self.shape))
            return group.margins(y).min(-1).values
        return f

    def attack_box(self, group: _Group, lo, hi, starts: int, steps: int):
        """PGD from ``starts`` random points of the box ``[lo, hi]`` (``(n,)``)."""
        n = lo.numel()
        L = lo.reshape(1, n).expand(starts, n).contiguous()
        U = hi.reshape(1, n).expand(starts, n).contiguous()
        start = _starts(L, U, self.gen)
        xs, vs = pgd_minimize(self.objective(group), L, U, steps=steps, restarts=1,
                              start=start, generator=self.gen)
        self.stats["attack_points"] += starts
        return xs, vs

    def sample_box(self, group: _Group, lo, hi, count: int):
        """Random points and random corners of the box, and the centre."""
        n = lo.numel()
        u = torch.rand((count, n), generator=self.gen, dtype=self.dtype)
        pts = [lo + u * (hi - lo), ((lo + hi) / 2).reshape(1, n)]
        if n <= 12:
            k = torch.arange(2 ** n).unsqueeze(1).bitwise_right_shift(torch.arange(n)) & 1
            pts.append(lo + k.to(self.dtype) * (hi - lo))
        else:
            c = (torch.rand((count, n), generator=self.gen) < 0.5).to(self.dtype)
            pts.append(lo + c * (hi - lo))
        xs = torch.cat(pts, 0)
        with torch.no_grad():
            vs = self.objective(group)(xs)
        self.stats["attack_points"] += xs.shape[0]
        return xs, vs

    def attack(self, budget: float, rounds: int | None = None):
        """Search every group for a counterexample for about ``budget`` seconds (or ``rounds``
        rounds). Each round samples the box and runs PGD from more starts than the last."""
        stop = min(self.deadline, time.perf_counter() + budget)
        n = math.prod(self.shape)
        small = n <= 64
        r = 0
        while True:
            for g in self.groups:
                xs, vs = self.sample_box(g, g.lower, g.upper, 512 if small else 32)
                found = self.confirm(g, xs, vs)
                if found is not None:
                    return found
                if time.perf_counter() > stop:
                    return None
                starts = (64 if small else 16) * (2 ** min(r, 4))
                xs, vs = self.attack_box(g, g.lower, g.upper, starts, steps=30 if r == 0 else 50)
                found = self.confirm(g, xs, vs)
                if found is not None:
                    return found
                if time.perf_counter() > stop:
                    return None
            r += 1
            if rounds is not None and r >= rounds:
                return None

    # -- bounds --------------------------------------------------------------------------------
    def bounds(self, group: _Group, lo, hi, method: str, grad: bool = False,
               relu_lower: str = "adaptive"):
        """Row lower bounds ``(N, R)`` over boxes ``[lo, hi]`` (``(N, n)``)."""
        N = lo.shape[0]
        x = ((lo + hi) / 2).detach().reshape(N, *self.shape)
        box = Box(lo.reshape(N, *self.shape), hi.reshape(N, *self.shape))
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            extra = {}
            if method == "alpha-crown":  # its optimisation stops when the time is up
                extra["alpha_time_limit"] = max(0.0, self.left())
            lb, _ = self.bm.compute_bounds(x, box, method=method, C=group.C.unsqueeze(0),
                                           bound_upper=False, relu_lower=relu_lower, **extra)
        self.stats["bounded_boxes"] += N
        return lb


# ---------------------------------------------------------------------------------- helpers
def _as_float64(bm: BoundedModule) -> BoundedModule:
    """A float64 copy of ``bm`` (its own module and graph; the original is untouched)."""
    model = bm.model
    info = getattr(model, "onnx_info", None)
    if info is not None:
        model.onnx_info = None
    try:
        m, graph = copy.deepcopy((model, bm.graph))
    finally:
        if info is not None:
            model.onnx_info = info
    m = m.double()
    for n in graph.nodes.values():
        if n.kind == "const" and torch.is_tensor(n.value) and n.value.is_floating_point():
            n.value = n.value.double()
    if hasattr(m, "graph") and getattr(m, "graph", None) is not None:
        m.graph = graph
    if info is not None:
        m.onnx_info = info
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return BoundedModule(m, graph=graph)


def _into_box32(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, dtype) -> np.ndarray:
    """``x`` rounded to ``dtype`` and moved (by one ulp at most) back into ``[lo, hi]``."""
    xr = np.clip(x, lo, hi).astype(dtype)
    below = xr.astype(np.float64) < lo
    xr[below] = np.nextafter(xr[below], dtype(np.inf))
    above = xr.astype(np.float64) > hi
    xr[above] = np.nextafter(xr[above], dtype(-np.inf))
    return xr


def _off_faces(xr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``xr`` with coordinates lying on a face of ``[lo, hi]`` moved one ulp inside (where the
    box is wider than that)."""
    xr = xr.copy()
    x64 = xr.astype(np.float64)
    up = (x64 <= lo) & (lo < hi)
    xr[up] = np.nextafter(xr[up], np.inf)
    down = (xr.astype(np.float64) >= hi) & (lo < hi)
    xr[down] = np.nextafter(xr[down], -np.inf)
    return xr


def _make_oracle(bm: BoundedModule, prop: Property):
    """``oracle(group, x) -> (x, y) | None``: a counterexample confirmed on the original model
    (onnxruntime for an imported ONNX file, else the module in its own precision)."""
    info = getattr(bm.model, "onnx_info", None)
    if info is not None:
        np_dtype = np.float32 if info.dtype == torch.float32 else np.float64

        def run(xr):
            return info.run(xr.reshape(1, -1).reshape(1, *info.sample_shape))[0]
    else:
        p = next(iter(bm.model.parameters()), None)
        tdtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        np_dtype = np.float32 if tdtype == torch.float32 else np.float64
        shape = bm.graph.input_shape

        def run(xr):
            with torch.no_grad():
                y = bm(torch.as_tensor(xr, dtype=tdtype).reshape(1, *shape))
            return y.reshape(-1).double().numpy()

    def oracle(group: _Group, x: torch.Tensor):
        lo = group.lower.numpy()
        hi = group.upper.numpy()
        xr = _into_box32(x.detach().double().numpy().reshape(-1), lo, hi, np_dtype)
        x64 = xr.astype(np.float64)
        if np.any(x64 < lo) or np.any(x64 > hi):
            return None
        if prop.strict:  # off the box's faces: a strict input bound may sit on one
            xr = _off_faces(xr, lo, hi)
            x64 = xr.astype(np.float64)
        y = np.asarray(run(xr), dtype=np.float64).reshape(-1)
        for dj in group.disjuncts:
            if dj.contains(x64, y, tol=0.0, strict=prop.strict):
                return x64, y
        return None

    return oracle


def _load_model(model, prop):
    if isinstance(model, BoundedModule):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .frontends.onnx_import import check_against_onnxruntime, load_onnx

        bm = load_onnx(model, check=False)
        _check_sizes(bm, prop)
        box = (prop.disjuncts[0].lower, prop.disjuncts[0].upper) if prop.disjuncts else None
        check_against_onnxruntime(bm, input_box=box)
        return bm
    raise InputError("verify expects an ONNX file path or a BoundedModule, got "
                     f"{type(model).__name__}")


def _check_sizes(bm, prop):
    n_in = math.prod(bm.graph.input_shape)
    n_out = math.prod(bm.graph.output_shape)
    if prop.n_inputs != n_in:
        raise InputError(f"the property declares {prop.n_inputs} inputs (X_i) but the model "
                         f"takes {n_in} values per example (shape {list(bm.graph.input_shape)})")
    if prop.n_outputs != n_out:
        raise InputError(f"the property declares {prop.n_outputs} outputs (Y_j) but the model "
                         f"gives {n_out} values per example")


# ---------------------------------------------------------------------------------- verify
def verify(model, prop, timeout: float = 60.0, method: str = "auto", *, bisect: bool = True,
           max_bisect_inputs: int = 32, split: str = "grad", batch: int = 256,
           attack_budget: float | None = None, seed: int = 0,
           max_domains: int = 2_000_000, threads: int | None = None) -> Result:
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
        ``"auto"`` (IBP, then CROWN-IBP, then CROWN, then bisection with CROWN) or one of
        ``"ibp"``, ``"crown-ibp"``, ``"crown"`` for every bound computed.
    bisect:
        split the input box when bounds alone do not decide (inputs of at most
        ``max_bisect_inputs`` dimensions).
    split:
        ``"grad"`` (largest ``|d bound / d radius_i| * radius_i``) or ``"widest"`` (widest
        dimension relative to the original box).
    batch:
        boxes bounded together during bisection.
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
    if method != "auto" and method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose auto or one of {', '.join(METHODS)}")
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
                       batch, attack_budget, seed, max_domains)
    finally:
        torch.set_num_threads(before)


def _verify(bm, prop, t0, deadline, timeout, method, bisect, max_bisect_inputs, split, batch,
            attack_budget, seed, max_domains) -> Result:
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
        ladder = [(m, "adaptive") for m in (LADDER if method == "auto" else (method,))]
        if method == "auto":  # other fixed lower slopes for unstable ReLUs sometimes do
            # better; they are cheap, so they go before alpha-CROWN, which optimises them
            ladder[3:3] = [("crown", "zero"), ("crown", "parallel")]
            if bisect and n_in <= max_bisect_inputs:  # bisection with CROWN does better
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

        # 3. bisection
        if not bisect or n_in > max_bisect_inputs:
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
        bab_method = "crown" if method == "auto" else method
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


def _starts(L, U, gen):
    """Starting points for PGD in the boxes ``[L, U]`` (``(S, n)``): a quarter uniform, the rest
    random corners, each with its own share of upper ends (steep regions of ReLU networks are
    often far from the flat centre of an input box)."""
    S, n = L.shape
    u = torch.rand(L.shape, generator=gen, dtype=L.dtype)
    share = torch.rand((S, 1), generator=gen, dtype=L.dtype)
    corner = (torch.rand(L.shape, generator=gen, dtype=L.dtype) < share).to(L.dtype)
    pick = torch.arange(S).unsqueeze(1) % 4 == 0
    return L + torch.where(pick, u, corner) * (U - L)


def _attack_boxes(prob, g, lo, hi):
    """A short PGD inside each of the boxes ``(M, n)``; returns a confirmed counterexample."""
    M, n = lo.shape
    start = _starts(lo, hi, prob.gen)
    xs, vs = pgd_minimize(prob.objective(g), lo, hi, steps=30, restarts=1, start=start,
                          generator=prob.gen)
    prob.stats["attack_points"] += M
    return prob.confirm(g, xs, vs)
