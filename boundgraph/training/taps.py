"""TAPS and STAPS: interval bounds through a feature extractor, an attack through the head.

**TAPS** (Mao, Mueller, Fischer and Vechev 2023, "TAPS: Connecting certified and adversarial
training"). The network is cut into a feature extractor ``E`` and a classifier head ``H``
at one node of the bound graph, the *latent* node ``z``:

1. IBP over the input ball bounds the latent node by a box ``[l, u]`` (a differentiable
   function of the extractor's weights);
2. for every example and every margin row ``j`` (``e_y - e_j``), PGD inside ``[l, u]`` looks
   for the latent point ``p_j`` where the head's margin ``(C H(p_j))_j`` is smallest; these
   ``K - 1`` margins estimate the exact lower bounds of the head over the box, which are much
   tighter than IBP's (an estimate, not a bound: TAPS trains with it, certification still
   uses sound bounds);
3. the points depend on ``[l, u]`` only through the attack, which has no useful derivative,
   so a *gradient link* carries the gradient of the loss with respect to each point to the box
   bounds: a coordinate of ``p_j`` within ``c (u - l)`` of ``u`` passes a share of its gradient
   that grows linearly from 0 to 1 as it reaches ``u`` (and likewise for ``l``), ``c = 0.5``;
4. the loss is ``L_TAPS * L_IBP``, the robust cross-entropy of the estimated margins times the
   robust cross-entropy of IBP's margins over the whole ball, with the gradient of ``L_TAPS``
   scaled by ``w`` (5 by default), as the paper's gradient expansion.

**STAPS** (same paper): the latent box comes from SABR's small box (radius
``lambda * eps`` around an adversarial input inside the ball) instead of the whole ball, and
the IBP factor is taken over that small box too.

The split: ``split=None`` cuts before the model's last two linear layers (the latent node is
the input of the second-to-last ``Linear`` op with a constant weight); otherwise ``split``
names a module of the traced model (``"5"`` for the sixth layer of an ``nn.Sequential``,
``"head.fc1"``) or a node of the bound graph, and the head starts there. The cut must separate
the graph: every head node takes batched inputs only from the head or the latent node.

We multiply the two losses per example (the paper multiplies batch means), so that the
per-example terms average to the loss as every other method's do, and data shards combine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..spec import margin_spec

__all__ = ["TapsSplit", "taps_split", "taps_robust", "head_forward", "latent_points",
           "box_link"]


@dataclass(frozen=True)
class TapsSplit:
    """Where a bound graph is cut: the ``latent`` node and the ``head`` op nodes after it, in
    topological order (the output last)."""

    latent: str
    head: tuple[str, ...]


def _is_linear(node) -> bool:
    from ..ops.affine import Linear

    return (node.kind == "op" and type(node.op) is Linear and len(node.op.bounded_inputs) > 1
            and not node.op.bounded_inputs[1])


def taps_split(graph, split: str | None = None) -> TapsSplit:
    """The cut of ``graph`` for TAPS: before its last two linear layers (``split=None``), or
    at the module or node named ``split``; one :class:`~boundgraph.InputError` when there is
    no such name or the cut does not separate extractor and head."""
    ops = graph.batched_ops
    if split is None:
        linear = [n for n in ops if _is_linear(graph.nodes[n])]
        if len(linear) < 2:
            raise InputError(f"TAPS cuts {graph.origin} before its last two linear layers, "
                             f"but it has {len(linear)}; name where the head starts "
                             "(taps_split / --split)")
        first = linear[-2]
        where = f"the second-to-last linear layer ({first})"
    else:
        inside = [n for n in ops if n == split or graph.nodes[n].module == split
                  or graph.nodes[n].module.startswith(split + ".")]
        if not inside:
            modules = sorted({graph.nodes[n].module.split(".")[0] for n in ops
                              if graph.nodes[n].module})
            raise InputError(f"TAPS split {split!r} is neither a module nor a node of "
                             f"{graph.origin}; its top-level modules: "
                             f"{', '.join(modules) or '(none recorded)'}")
        first = inside[0]
        where = f"{split!r} (node {first})"
    node = graph.nodes[first]
    outer = [i for i in node.inputs if graph.nodes[i].batched]
    if len(outer) != 1:
        raise InputError(f"TAPS split at {where}: the head must start with one batched input, "
                         f"this node has {len(outer)}")
    latent = outer[0]
    if graph.nodes[latent].kind == "input":
        raise InputError(f"TAPS split at {where} leaves no feature extractor (the head would "
                         "start at the model's input)")
    head = set()
    for n in ops[ops.index(first):]:
        if n == latent:
            continue
        ins = [i for i in graph.nodes[n].inputs if graph.nodes[i].batched]
        if any(i in head or i == latent for i in ins):
            head.add(n)
    order = tuple(n for n in ops if n in head)
    if graph.output not in head:
        raise InputError(f"TAPS split at {where}: the model's output does not depend on it")
    for n in order:
        stray = [i for i in graph.nodes[n].inputs
                 if graph.nodes[i].batched and i != latent and i not in head]
        if stray:
            raise InputError(f"TAPS split at {where} does not separate the model: head node "
                             f"{n} also reads {stray[0]}, which comes before the cut "
                             "(a skip connection around it); cut after the branches join")
    return TapsSplit(latent, order)


def head_forward(graph, module, split: TapsSplit, z: torch.Tensor, consts=None) -> torch.Tensor:
    """The head's output for latent values ``z`` (any batch size)."""
    env = dict(graph.constants(module) if consts is None else consts)
    env[split.latent] = z
    for name in split.head:
        n = graph.nodes[name]
        env[name] = n.op.forward(*[env[i] for i in n.inputs])
    return env[graph.output]


def _row_margins(out: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` margins of ``out`` ``(B * S, K)``, point ``(b, s)`` on row ``s`` of
    ``C[b]``."""
    B, S, K = C.shape
    return (C * out.reshape(B, S, K)).sum(-1)


def latent_points(head, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, steps: int = 8
                  ) -> torch.Tensor:
    """For every example ``b`` and row ``s`` of ``C`` ``(B, S, K)``, a point of the box
    ``[lo[b], hi[b]]`` where ``(C[b] head(p))_s`` is small: PGD with sign steps from a uniform
    random start; the step is a fraction of the box width, large enough that the first 60 %
    of the steps can cross the box (0.2 for 8 steps), then decayed x0.2 after 60 % and 85 % of
    the steps; the best point seen is kept. Returns ``(B, S, *lo[0])``, detached; the head's
    parameters get no gradient."""
    B, S, _ = C.shape
    lo, hi = lo.detach().unsqueeze(1), hi.detach().unsqueeze(1)
    width = hi - lo
    shape = (B, S) + tuple(lo.shape[2:])
    pts = lo + width * torch.rand(shape, dtype=lo.dtype, device=lo.device)
    best = pts.clone()
    best_m = torch.full((B, S), math.inf, dtype=lo.dtype, device=lo.device)
    first = max(1, round(0.6 * steps))
    decays = {first, max(first + 1, round(0.85 * steps))}
    size = 1.0 / first
    for it in range(steps + 1):
        pts.requires_grad_(True)
        with torch.enable_grad():
            m = _row_margins(head(pts.reshape(B * S, *shape[2:])), C)
            grad = torch.autograd.grad(m.sum(), pts)[0] if it < steps else None
        m = m.detach()
        better = m < best_m
        best_m = torch.where(better, m, best_m)
        best = torch.where(better.view(B, S, *[1] * (len(shape) - 2)), pts.detach(), best)
        if grad is None:
            break
        pts = torch.minimum(torch.maximum(pts.detach() - size * width * grad.sign(), lo), hi)
        if it + 1 in decays:
            size *= 0.2
    return best


class _BoxLink(torch.autograd.Function):
    """Identity on the points; the backward pass hands each point's gradient to the box
    bounds it lies near (TAPS' rectified linear gradient link) and none to the points."""

    @staticmethod
    def forward(ctx, lo, hi, pts, c: float, tol: float):
        ctx.save_for_backward(lo, hi, pts)
        ctx.c, ctx.tol = c, tol
        return pts.clone()

    @staticmethod
    def backward(ctx, grad):
        lo, hi, pts = ctx.saved_tensors
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
        c, tol = ctx.c, ctx.tol
        slack = c * (hi - lo)
        # share of the gradient: 1 on the bound, falling linearly to 0 at c * width inside
        # (half to each bound of a box of width 0, where the point is both)
        up = (pts >= hi - slack) * ((pts - hi + slack).clamp(min=0.5 * tol)
                                    / slack.clamp(min=tol)).clamp(max=1.0)
        down = (pts <= lo + slack) * ((lo + slack - pts).clamp(min=0.5 * tol)
                                      / slack.clamp(min=tol)).clamp(max=1.0)
        return (grad * down).sum(1), (grad * up).sum(1), None, None, None


def box_link(lo, hi, pts, c: float = 0.5, tol: float = 1e-5):
    """``pts`` ``(B, S, ...)`` unchanged, with TAPS' gradient link to the box ``[lo, hi]``
    ``(B, ...)``."""
    return _BoxLink.apply(lo, hi, pts, float(c), float(tol))


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w: float):
        ctx.w = w
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.w * grad, None


def taps_robust(bm, x, y, eps, *, method: str = "taps", K: int, lower=0.0, upper=1.0,
                split: str | None = None, steps: int = 8, grad_scale: float = 5.0,
                sabr_lambda: float = 0.4):
    """TAPS' (or STAPS') robust term ``(B,)`` and the IBP margins ``(B, K-1)`` it was
    multiplied with (see the module docstring)."""
    from ..perturbation import Box, LinfBall
    from .losses import _shrunk, adversarial_point, robust_ce, sabr_box

    graph = bm.graph
    cut = _cached_split(bm, split)
    C = margin_spec(y, K, dtype=x.dtype)
    if method == "staps":
        was = bm.model.training
        bm.model.eval()
        try:
            x_adv = adversarial_point(bm, x, y, *_shrunk(x, eps, sabr_lambda * eps, lower,
                                                         upper), steps)
        finally:
            bm.model.train(was)
        centre, region = x_adv, Box(*sabr_box(x, x_adv, eps, sabr_lambda, lower, upper))
    else:
        centre, region = x, LinfBall(float(eps), lower=lower, upper=upper)
    m_ibp, _, intervals = bm.compute_bounds(centre, region, method="ibp", C=C,
                                            bound_upper=False, return_intermediate=True)
    lo, hi = intervals[cut.latent]
    lo, hi = lo.reshape(x.shape[0], *lo.shape[1:]), hi.reshape(x.shape[0], *hi.shape[1:])
    consts = graph.constants(bm.model)

    def head(z):
        return head_forward(graph, bm.model, cut, z, consts)

    was = bm.model.training
    bm.model.eval()
    try:
        pts = latent_points(head, lo, hi, C, steps=steps)
    finally:
        bm.model.train(was)
    pts = box_link(lo, hi, pts)
    B, S = C.shape[:2]
    m_taps = _row_margins(head(pts.reshape(B * S, *pts.shape[2:])), C)
    l_taps = _ScaleGrad.apply(robust_ce(m_taps, reduction="none"), float(grad_scale))
    return l_taps * robust_ce(m_ibp, reduction="none"), m_ibp


def _cached_split(bm, split):
    cache = bm.__dict__.setdefault("_taps_splits", {})
    if split not in cache:
        cache[split] = taps_split(bm.graph, split)
    return cache[split]
