"""Warm-up regularisers of improved IBP training (Shi et al. 2021, "Fast certified robust
training with short warmup", section 3.3).

Both read the IBP intervals of the *pre-activation* nodes: the inputs of the graph's ReLU
nodes (``op.kind == "relu"``), found from the bound graph, not from module names. For a
pre-activation interval [l, u] write the centre c = (u + l) / 2 and radius r = (u - l) / 2; the
input box has mean radius r_0 (eps, less where the box is clipped to the data domain). Both
terms are hinged at a tolerance tau (0.5) and averaged over the ReLU layers.

**Tightness.** A layer's tightness is t_i = mean(r_0) / mean(r_i): 1 when the interval keeps
the input's scale, small when it has blown up. The term

    L_tightness = (1/n) sum_i ReLU(tau - t_i) / tau

is zero while every layer's mean radius stays within 1/tau (= 2 for tau = 0.5) times the
input's and grows as the bounds loosen.

**ReLU balance.** IBP training tends to kill ReLUs (stably inactive neurons are "free" in the
bound). With the stably active set A = {l > 0} and the stably inactive set I = {u < 0} of a
layer (all examples and neurons together, N entries), compare

* the mean centres  mu_A = sum_A c / N  and  mu_I = -sum_I c / N  (both >= 0), and
* the spreads       v_A = sum_A (c - cbar)^2  and  v_I = sum_I (c - cbar)^2  (cbar = mean c),

through the symmetric ratio rho(a, b) = min(a, b) / max(a, b) in [0, 1] (1 = balanced):

    L_relu = (1/n) sum_i [ReLU(tau - rho(mu_A, mu_I)) + ReLU(tau - rho(v_A, v_I))] / tau.

A layer without stably active and without stably inactive neurons gives no ratio and is left
out. During the eps ramp the trainer adds lambda (1 - eps / eps_max) (L_tightness + L_relu)
with lambda = 0.5.
"""
from __future__ import annotations

import torch

from ..graph import BoundGraph
from ..ops.base import Interval

__all__ = ["preactivation_nodes", "tightness_loss", "relu_balance_loss", "warmup_regularizer"]


def preactivation_nodes(graph: BoundGraph) -> list[str]:
    """Names of the nodes that feed a ReLU (each once, in topological order)."""
    seen: list[str] = []
    for name in graph.batched_order:
        node = graph.nodes[name]
        if node.kind == "op" and getattr(node.op, "kind", None) == "relu":
            src = node.inputs[0]
            if graph.nodes[src].batched and src not in seen:
                seen.append(src)
    return seen


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """min(a, b) / max(a, b) for non-negative a, b (0 when one of them is 0)."""
    return torch.minimum(a, b) / torch.maximum(a, b).clamp(min=1e-12)


def _mean_radius(iv: Interval) -> torch.Tensor:
    lo, up = iv
    return (up.sum() - lo.sum()) / (2 * lo.numel())


def tightness_loss(input_box: Interval, pre: list[Interval], tol: float = 0.5) -> torch.Tensor:
    """L_tightness: mean over layers of ReLU(tol - mean(r_0) / mean(r_i)) / tol."""
    r0 = _mean_radius(input_box).detach()
    if not pre or float(r0) == 0.0:
        return r0.new_zeros(())
    terms = [torch.relu(tol - r0 / _mean_radius(iv).clamp(min=1e-12)) / tol for iv in pre]
    return torch.stack(terms).mean()


def relu_balance_loss(pre: list[Interval], tol: float = 0.5) -> torch.Tensor | None:
    """L_relu: mean over layers of the hinged mean- and spread-balance of stable neurons.

    Returns None when no layer has both stably active and stably inactive neurons.

    Both ratios are invariant to scaling the centres, so the sums below use s = u + l = 2c,
    and the spreads are expanded as sum_A (s - sbar)^2 = sum_A s^2 - 2 sbar sum_A s +
    |A| sbar^2, which needs two dot products per layer instead of several full-size
    temporaries (this runs on every training batch of the ramp).
    """
    terms = []
    for lo, up in pre:
        active = lo > 0
        inactive = up < 0
        n_a, n_i = int(active.sum()), int(inactive.sum())
        if n_a == 0 or n_i == 0:
            continue
        s = (up + lo).flatten()  # 2 * centre
        sa = torch.where(active.flatten(), s, 0.0)
        si = torch.where(inactive.flatten(), s, 0.0)
        sum_a, sum_i = sa.sum(), si.sum()
        sbar = s.mean()
        v_a = (sa @ sa - 2 * sbar * sum_a + n_a * sbar * sbar).clamp(min=0)
        v_i = (si @ si - 2 * sbar * sum_i + n_i * sbar * sbar).clamp(min=0)
        terms.append((torch.relu(tol - _ratio(sum_a, -sum_i)) + torch.relu(tol - _ratio(v_a, v_i)))
                     / tol)
    if not terms:
        return None
    return torch.stack(terms).mean()


def warmup_regularizer(graph: BoundGraph, intervals: dict[str, Interval],
                       tol: float = 0.5) -> torch.Tensor:
    """L_tightness + L_relu from the intervals of one IBP pass (``{node name: Interval}``, as
    returned by ``bm.interval_bounds`` or ``compute_bounds(..., return_intermediate=True)``)."""
    box = intervals[graph.input]
    pre = [intervals[n] for n in preactivation_nodes(graph) if n in intervals]
    loss = tightness_loss(box, pre, tol)
    balance = relu_balance_loss(pre, tol)
    if balance is not None:
        loss = loss + balance
    return loss
