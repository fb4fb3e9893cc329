"""The set-up of one verification problem for :func:`boundgraph.verify.verify`.

:class:`Result` (the outcome of :func:`~boundgraph.verify.verify`); ``_Group`` (the disjuncts
of one input box with their rows stacked) and ``_Problem`` (the model, the groups, the deadline,
and the attack and bound primitives the search uses); the float64 copy of the model, the oracle
that confirms a counterexample on the original model, and loading and checking the model.
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
from .bounded import BoundedModule
from .errors import InputError
from .perturbation import Box
from .vnnlib import Property


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
            # the split scores differentiate the bound in the box's corners: through the
            # intermediate bounds too, whose relaxations carry most of the box's effect
            lb, _ = self.bm.compute_bounds(x, box, method=method, C=group.C.unsqueeze(0),
                                           bound_upper=False, relu_lower=relu_lower,
                                           intermediate_grad=grad, **extra)
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
    if len(bm.graph.inputs) != 1:
        raise InputError(f"VNN-LIB verification needs a model of one input; this one takes "
                         f"{len(bm.graph.inputs)} ({', '.join(bm.graph.input_names)})")
    n_in = math.prod(bm.graph.input_shape)
    n_out = math.prod(bm.graph.output_shape)
    if prop.n_inputs != n_in:
        raise InputError(f"the property declares {prop.n_inputs} inputs (X_i) but the model "
                         f"takes {n_in} values per example (shape {list(bm.graph.input_shape)})")
    if prop.n_outputs != n_out:
        raise InputError(f"the property declares {prop.n_outputs} outputs (Y_j) but the model "
                         f"gives {n_out} values per example")


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

