"""IBP initialisation (Shi et al. 2021, "Fast certified robust training with short warmup",
section 3.1).

For an affine layer y = W x + b and an input interval of radius r, IBP gives the output radius
|W| r. Summed over a fan-in of n inputs of (about) equal radius, the expected output radius is
n E|w| r. With w ~ N(0, sigma^2), E|w| = sigma sqrt(2/pi), so the choice

    sigma = sqrt(2 pi) / n        gives    E[radius out] = n * (2/n) * r = 2 r,

and the ReLU that follows roughly halves an interval centred near zero, so the radius keeps its
scale through depth. Standard initialisations (Kaiming, Xavier: sigma ~ 1/sqrt(n)) instead grow
it by about sqrt(n) per layer, which makes the bounds of a deep net explode at initialisation.

The rule is applied to the weight of every linear and convolution node of the bound graph
except the last ones (those from which no other linear/conv node is reachable: the classifier
keeps its default initialisation). A residual ``add`` sums two intervals, which doubles the
radius; so the weights of the first linear/conv layers after each residual add (reached through
single-input ops such as BatchNorm, ReLU and reshapes) are halved. Residual adds are found from
the graph (``op.kind == "add"`` with both inputs depending on the input), not from module names.
"""
from __future__ import annotations

import math

import networkx as nx
import torch

from ..graph import BoundGraph, resolve_live

__all__ = ["ibp_init", "weighted_nodes", "residual_adds", "nodes_after_residual", "ibp_sigma"]

#: op kinds whose second input is a weight with fan-in ``weight[0].numel()``.
WEIGHTED_KINDS = ("linear", "conv2d")


def _is_op(graph: BoundGraph, name: str, kinds) -> bool:
    node = graph.nodes[name]
    return node.kind == "op" and getattr(node.op, "kind", None) in kinds


def weighted_nodes(graph: BoundGraph) -> list[str]:
    """Linear and convolution nodes (on the input's path), in topological order."""
    return [n for n in graph.batched_order if _is_op(graph, n, WEIGHTED_KINDS)]


def residual_adds(graph: BoundGraph) -> list[str]:
    """``add`` nodes whose two inputs both depend on the input (residual connections)."""
    out = []
    for name in graph.batched_order:
        node = graph.nodes[name]
        if _is_op(graph, name, ("add",)) and len(node.inputs) == 2 and \
                all(graph.nodes[i].batched for i in node.inputs):
            out.append(name)
    return out


def nodes_after_residual(graph: BoundGraph) -> list[str]:
    """The first linear/conv nodes downstream of each residual add.

    From each residual add, walk forward through nodes with a single bounded input (BatchNorm,
    ReLU, reshape, ...); a linear/conv node ends the walk and is collected; a node with several
    bounded inputs (another add, a concat) ends it without collecting.
    """
    found: list[str] = []
    for add in residual_adds(graph):
        stack = list(graph.consumers.get(add, []))
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = graph.nodes[name]
            if _is_op(graph, name, WEIGHTED_KINDS):
                if name not in found:
                    found.append(name)
                continue
            if sum(graph.nodes[i].batched for i in node.inputs) != 1:
                continue
            stack.extend(graph.consumers.get(name, []))
    order = {n: i for i, n in enumerate(graph.batched_order)}
    return sorted(found, key=order.__getitem__)


def ibp_sigma(fan_in: int) -> float:
    """sqrt(2 pi) / fan_in, the IBP-initialisation standard deviation."""
    return math.sqrt(2.0 * math.pi) / fan_in


def _weight_param(graph: BoundGraph, module: torch.nn.Module, name: str):
    """(qualified name, live tensor) of a linear/conv node's weight, or None if it is not a
    parameter of the module (e.g. a constant folded in at import)."""
    node = graph.nodes[name]
    if len(node.inputs) < 2:
        return None
    src = graph.nodes[node.inputs[1]]
    if src.kind != "param" or src.target is None:
        return None
    value = resolve_live(module, src.target)
    if not isinstance(value, torch.Tensor) or value.dim() < 2:
        return None
    return src.target, value


@torch.no_grad()
def ibp_init(bm, *, generator: torch.Generator | None = None, halve_residual: bool = True
             ) -> dict:
    """Re-initialise the weights of a traced model for IBP training, in place.

    Args:
        bm: a :class:`~boundgraph.BoundedModule` (its graph says which nodes are linear/conv,
            which is last, and where the residual adds are; its ``model`` is changed).
        generator: random source (the global one if None).
        halve_residual: halve the weights of the first linear/conv layers after residual adds.

    Returns:
        ``{"initialised": {param name: sigma}, "halved": [param names]}``.
    """
    graph, module = bm.graph, bm.model
    weighted = weighted_nodes(graph)
    last = {n for n in weighted
            if not any(d in weighted for d in nx.descendants(graph.nx, n))}
    initialised: dict[str, float] = {}
    for name in weighted:
        if name in last:
            continue
        found = _weight_param(graph, module, name)
        if found is None or found[0] in initialised:
            continue
        target, w = found
        sigma = ibp_sigma(w[0].numel())
        w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device) * sigma)
        initialised[target] = sigma
    halved: list[str] = []
    if halve_residual:
        for name in nodes_after_residual(graph):
            found = _weight_param(graph, module, name)
            if found is None or found[0] in halved:
                continue
            found[1].mul_(0.5)
            halved.append(found[0])
    return {"initialised": initialised, "halved": halved}
