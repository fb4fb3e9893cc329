"""Backward linear bound propagation (CROWN; Zhang et al. 2018) and its use for intermediate
bounds.

:func:`backward_pass` walks the ancestors of a start node in reverse topological order,
carrying lower/upper coefficient tensors. Coefficients arriving at a node from several consumers
are summed before the node's rule passes them on (residual adds, concatenation, any DAG). At the
input (or at a node listed in ``stop_at``) the coefficients are concretised over that node's box.

:func:`crown_intermediate` computes the bounds of every node a nonlinear rule needs, in
topological order, each with its own backward pass (rows = neurons, restricted to the ones the
consumers say are worth refining, e.g. unstable ReLUs), chunked so that memory stays bounded,
and intersected with the IBP interval of the same node. Spatial nodes start from tiles of
positions sized to the rows they hold (one position where there are many channels: the least
arithmetic), upper bounds come first so that inputs a consumer ignores below zero skip their
lower pass, and large batches go one example at a time (see :func:`_refine`).
"""
from __future__ import annotations

import copy
import math

import torch

from ..ops.base import Interval, Op, concretize, crop_window
from .context import Context


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# ------------------------------------------------------------------------ spatial windows
# Coefficients of a spatial node (per-sample shape (C, H, W)) may cover only a window of it:
# ``origin`` is the (row, column) of the window's corner, the window's size is the tensor's.
# A neuron of a convolutional layer depends on a small receptive field of each earlier layer,
# so starting a backward pass from a tile of neurons and keeping windows through pointwise ops
# (constants cropped to the window by the layout the op declares, ``Op.const_view``) and
# convolutions saves most of the work. Other ops see full (dense) coefficients; where a dense
# entry meets a windowed one at a node, the window is padded out (``_merge``).

def _pad_to(A, origin, win_origin, win_size):
    """Zero-pad window coefficients ``A`` (at ``origin``) to a larger window."""
    h, w = A.shape[-2:]
    top, left = origin[0] - win_origin[0], origin[1] - win_origin[1]
    bottom, right = win_size[0] - h - top, win_size[1] - w - left
    if top == left == bottom == right == 0:
        return A
    return torch.nn.functional.pad(A, (left, right, top, bottom))


def _merge(old, new, shape):
    """Sum two ``(lA, uA, origin)`` entries arriving at the same node of per-sample ``shape``.

    Windows at different places are padded to the smallest window covering both; an entry with
    dense coefficients (origin ``None``: its consumer could not keep a window) turns the other
    one dense too."""
    if old is None:
        return new
    (la, ua, oa), (lb, ub, ob) = old, new
    if la is ua and lb is ub and la is not None:  # both sides still one tensor: keep it so
        s, _, o = _merge((la, None, oa), (lb, None, ob), shape)
        return s, s, o
    if oa is None or ob is None:
        la, ua = _densify(la, ua, oa, shape)
        lb, ub = _densify(lb, ub, ob, shape)
        return _add(la, lb), _add(ua, ub), None
    if oa == ob and _size(la, ua) == _size(lb, ub):
        return _add(la, lb), _add(ua, ub), oa
    sa, sb = _size(la, ua), _size(lb, ub)
    o = (min(oa[0], ob[0]), min(oa[1], ob[1]))
    e = (max(oa[0] + sa[0], ob[0] + sb[0]), max(oa[1] + sa[1], ob[1] + sb[1]))
    size = (e[0] - o[0], e[1] - o[1])
    pad = lambda A, org: None if A is None else _pad_to(A, org, o, size)  # noqa: E731
    return _add(pad(la, oa), pad(lb, ob)), _add(pad(ua, oa), pad(ub, ob)), o


def _size(la, ua):
    A = la if la is not None else ua
    return tuple(A.shape[-2:])


def _densify(la, ua, origin, shape):
    if origin is None:
        return la, ua
    full = tuple(shape[-2:])
    pad = lambda A: None if A is None else _pad_to(A, origin, (0, 0), full)  # noqa: E731
    return pad(la), pad(ua)


def _window_step(ctx, name, op, vals, la, ua, origin):
    """Apply ``op``'s backward rule to window coefficients; ``None`` if it cannot."""
    g = ctx.graph
    node = g.nodes[name]
    size = _size(la, ua)
    if name in ctx.slopes:  # per-element slopes cover the whole node
        return None
    if hasattr(op, "backward_window"):
        return op.backward_window(la, ua, origin, *vals, opts=ctx.opts)
    if not op.pointwise:
        return None
    shapes, vals = [], list(vals)
    for i, (inp, v, s) in enumerate(zip(node.inputs, vals, op.in_shapes)):
        if g.nodes[inp].batched:
            if tuple(s) != tuple(node.shape):
                return None
            shapes.append(tuple(s[:-2]) + size)
            if isinstance(v, Interval):
                vals[i] = Interval(crop_window(v.lower, origin, size), crop_window(v.upper, origin, size))
            continue
        view = op.const_view(i, v)
        if torch.is_tensor(view) and any(d != 1 for d in view.shape[-2:]):
            # a constant varying over rows or columns: the op sees its part in the window
            v = view[..., origin[0]:origin[0] + size[0], :] if view.shape[-2] != 1 else view
            v = v[..., origin[1]:origin[1] + size[1]] if view.shape[-1] != 1 else v
            vals[i], s = v, tuple(v.shape)
        shapes.append(s)
    wop = copy.copy(op)
    wop.in_shapes, wop.out_shape = tuple(shapes), tuple(node.shape[:-2]) + size
    per_input, bl, bu = ctx.rule(name, wop.backward, la, ua, *vals, opts=ctx.opts)
    return per_input, bl, bu, origin


def backward_pass(ctx: Context, start: str, lA, uA, bounds: dict[str, Interval],
                  stop_at: frozenset = frozenset(), origin: tuple | None = None):
    """Lower/upper bounds of ``sum(A * node_start)`` rows over the input set.

    ``lA``/``uA`` have shape ``(B or 1, S, *shape_of_start)`` (either may be ``None``), or
    cover only a spatial window of the start node whose corner is ``origin``. Returns
    ``(lb, ub)`` of shape ``(B, S)`` (``None`` for a side not asked for).
    """
    g = ctx.graph
    order = g.batched_ancestors(start)
    coeffs = {start: (lA, uA, origin)}
    lb = 0.0 if lA is not None else None
    ub = 0.0 if uA is not None else None
    for name in reversed(order):
        if name not in coeffs:
            continue
        la, ua, org = coeffs.pop(name)
        if la is None and ua is None:
            continue
        if name in ctx.betas:  # Lagrange terms of split constraints (dense coefficients)
            la, ua = _densify(la, ua, org, g.nodes[name].shape)
            org = None
            bl, bu = ctx.betas[name]
            la = None if la is None or bl is None else la + bl
            ua = None if ua is None or bu is None else ua + bu
        if ctx.taps is not None and name in ctx.taps and la is not None:
            ctx.taps[name] = _densify(la, None, org, g.nodes[name].shape)[0]
        node = g.nodes[name]
        if name in ctx.sets:  # an input: its own set (at least as tight as its box)
            cl, cu = ctx.sets[name].concretize(la, ua, org)
            lb = _add(lb, cl) if lb is not None else None
            ub = _add(ub, cu) if ub is not None else None
            continue
        if name in stop_at:
            box = bounds[name]
            if org is not None:
                size = _size(la, ua)
                box = Interval(crop_window(box.lower, org, size), crop_window(box.upper, org, size))
            cl, cu = concretize(la, ua, box)
            lb = _add(lb, cl) if lb is not None else None
            ub = _add(ub, cu) if ub is not None else None
            continue
        op = ctx.op(name)
        vals = ctx.inputs(name, bounds)
        step = _window_step(ctx, name, op, vals, la, ua, org) if org is not None else None
        if step is None:
            la, ua = _densify(la, ua, org, node.shape)
            per_input, bl, bu = ctx.rule(name, op.backward, la, ua, *vals,
                                         opts=ctx.opts_for(name))
            new_origin = None
        else:
            per_input, bl, bu, new_origin = step
        if lb is not None:
            lb = lb + bl
        if ub is not None:
            ub = ub + bu
        for inp, pair in zip(node.inputs, per_input):
            if pair is None or not g.nodes[inp].batched:
                continue
            coeffs[inp] = _merge(coeffs.get(inp), (pair[0], pair[1], new_origin),
                                 g.nodes[inp].shape)
    B = ctx.batch
    fix = lambda t: None if t is None else (t.expand(B, -1) if t.shape[0] != B else t)  # noqa
    return fix(lb), fix(ub)


def needed_nodes(ctx: Context) -> dict[str, list[tuple[str, int]]]:
    """Batched nodes whose bounds some rule needs in ``backward``: node -> [(consumer, index)]."""
    g = ctx.graph
    need: dict[str, list[tuple[str, int]]] = {}
    for name in g.batched_order:
        node = g.nodes[name]
        if node.kind != "op":
            continue
        op = ctx.op(name)
        for i, inp in enumerate(node.inputs):
            if g.nodes[inp].batched and inp not in ctx.sets and op.needs_bounds(i):
                need.setdefault(inp, []).append((name, i))
    return need


def crown_intermediate(ctx: Context, grad: bool = True) -> dict[str, Interval]:
    """Intervals of all batched nodes, with CROWN for those that nonlinear rules need.

    Each node first gets its IBP interval from its (already refined) inputs; needed nodes are
    then refined by a backward pass from the node itself and the two are intersected, so the
    result is never looser than IBP. With ``grad`` false the backward passes run outside
    autograd (the IBP intervals, a cheap pass, keep their gradients where they are the
    tighter side).
    """
    g = ctx.graph
    need = needed_nodes(ctx)
    budget = int(ctx.opts.get("max_elements", 2 ** 25))
    bounds: dict[str, Interval] = ctx.input_boxes()
    exact = set(bounds)  # nodes whose every element has its CROWN (or exact) bound
    for name in g.batched_ops:
        bounds[name] = cur = ctx.interval(name, bounds)
        if name not in need:
            continue
        if _image_of_refined(ctx, name, exact):
            exact.add(name)  # the interval is already at least as tight as CROWN's
            continue
        if all(type(ctx.op(c)).refine_mask is Op.refine_mask for c, _ in need[name]):
            exact.add(name)  # refined below on every element
        if grad or not torch.is_grad_enabled():
            bounds[name] = _refine(ctx, name, need[name], bounds, budget)
            continue
        with torch.no_grad():
            ref = _refine(ctx, name, need[name], bounds, budget)
        bounds[name] = Interval(torch.maximum(cur.lower, ref.lower),
                                torch.minimum(cur.upper, ref.upper))
    return bounds


def refine(ctx: Context, name: str, bounds: dict[str, Interval], flat: bool = True
           ) -> Interval:
    """CROWN bounds of every neuron of node ``name`` intersected with ``bounds[name]``, for a
    node affine in the inputs: its coefficients stay shared by the batch (batch size 1) all the
    way to the inputs, so the batch is neither split nor counted when sizing chunks. Without
    ``flat`` every row gets both bounds (see :func:`_refine`)."""
    return _refine(ctx, name, [], bounds, int(ctx.opts.get("max_elements", 2 ** 25)),
                   shared=True, flat=flat)


def _image_of_refined(ctx, name, exact) -> bool:
    """Whether node ``name`` is an elementwise op with an exact interval rule applied to a
    node refined on every element. Its CROWN bound cannot beat that interval: per element the
    backward pass bounds a line below (above) ``f`` on the input's refined interval, and the
    line's extreme over that interval is no better than ``f``'s (and the refined interval is
    itself no looser than the input's CROWN bound). So the refinement is skipped, with the
    same result."""
    op = ctx.op(name)
    if not getattr(op, "exact_interval", False):
        return False
    node = ctx.graph.nodes[name]
    return len(node.inputs) == 1 and node.inputs[0] in exact


def _refine(ctx, name, consumers, bounds, budget, shared: bool = False,
            flat: bool = True) -> Interval:
    """CROWN bounds of node ``name``'s neurons that its consumers want refined, intersected
    with its current (IBP) interval ``bounds[name]``.

    Rows are the union over the batch of the consumers' ``refine_mask``; each example keeps
    only the rows its own consumers asked for (its bounds never depend on its batch). Two
    savings that leave every bound a consumer uses as it is:

    - when every consumer of the node says which elements are flat below a value
      (``Op.flat_below``; ReLU: an upper bound ``<= 0``), the upper bounds are computed first
      and the lower bound only of rows that are not flat in some example (the lower bound of
      an inactive ReLU input changes neither the relaxation nor any interval after it);
    - a very large batch is refined one example at a time, each with its own rows, when the
      coefficients of the batch as a whole would need many ``budget`` chunks anyway.
    """
    g = ctx.graph
    cur = bounds[name]
    B = cur.lower.shape[0]
    mask = None
    for cname, idx in consumers:
        m = ctx.op(cname).refine_mask(idx, cur)
        if m is None:
            mask = None
            break
        mask = m if mask is None else (mask | m)
    n = cur.lower[0].numel()
    if mask is None:
        rows = torch.arange(n, device=cur.lower.device)
    else:
        mask = mask.reshape(B, -1)
        rows = mask.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return cur
    widest = max(math.prod(g.nodes[a].shape) for a in g.batched_ancestors(name))
    if not shared and B > 1 and B * rows.numel() * widest > _SPLIT_CHUNKS * budget:
        parts = [_refine(ctx.example(b), name, consumers,
                         {k: Interval(v.lower[b:b + 1], v.upper[b:b + 1])
                          for k, v in bounds.items() if v is not None}, budget)
                 for b in range(B)]
        return Interval(torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]))
    chunk = max(1, budget // max(1, (1 if shared else B) * widest))
    lo, hi = cur.lower.flatten(1), cur.upper.flatten(1)
    new_lo, new_hi = lo.clone(), hi.clone()
    shape = tuple(g.nodes[name].shape)
    tile = ctx.opts.get("tile") if ctx.opts.get("windows", True) else 0
    if tile is None:
        tile = _tile_size(shape, rows.numel())
    flat = _flat_rule(ctx, name) if flat else None

    def put(new, old, idx, val, better):
        # a row refines only the examples whose consumers asked for it, so that an example's
        # bounds never depend on the other examples of its batch
        val = better(old[:, idx], val)
        new[:, idx] = val if mask is None else torch.where(mask[:, idx], val, old[:, idx])

    for idx, A, origin in _start_rows(rows, shape, chunk, lo, int(tile)):
        if flat is None:
            lb, ub = backward_pass(ctx, name, A, A, bounds, origin=origin)
            put(new_lo, lo, idx, lb, torch.maximum)
            put(new_hi, hi, idx, ub, torch.minimum)
            continue
        _, ub = backward_pass(ctx, name, None, A, bounds, origin=origin)
        put(new_hi, hi, idx, ub, torch.minimum)
        need = ~flat(new_hi.view(cur.upper.shape)).flatten(1)[:, idx]
        if mask is not None:
            need &= mask[:, idx]
        need = need.any(0)
        if need.any():
            k = need.nonzero().flatten()
            lb, _ = backward_pass(ctx, name, A.index_select(1, k), None, bounds, origin=origin)
            put(new_lo, lo, idx[k], lb, torch.maximum)
    return Interval(new_lo.reshape(cur.lower.shape), new_hi.reshape(cur.upper.shape))


#: a batch is refined one example at a time when its coefficients would need more than this
#: many chunks of ``max_elements``: it bounds the memory of a pass by one example's share (on
#: smaller problems the batch's passes are cheaper, by up to 1.6x measured on cnn_4layer)
_SPLIT_CHUNKS = 64


def _flat_rule(ctx: Context, name: str):
    """``upper -> bool mask`` of the elements of node ``name`` whose lower bound no consumer
    needs (see :meth:`~boundgraph.ops.base.Op.flat_below`), or ``None`` when some consumer
    cannot say (or the node is the graph's output)."""
    g = ctx.graph
    if name == g.output:
        return None
    uses = []
    for c in g.nx.successors(name):
        node = g.nodes[c]
        if not node.batched or c not in g.batched_order:
            continue
        for i, inp in enumerate(node.inputs):
            if inp == name:
                uses.append((ctx.op(c), i))
    if not uses:
        return None
    probe = torch.zeros(1)  # whether an op can say at all does not depend on the bounds
    if any(op.flat_below(i, probe) is None for op, i in uses):
        return None

    def flat(upper):
        m = None
        for op, i in uses:
            f = op.flat_below(i, upper)
            m = f if m is None else m & f
        return m
    return flat


#: rows a backward pass should carry at least, when its tiles allow (fewer rows per pass leave
#: the per-op overhead of a pass uncovered; more positions per tile widen every row's window)
_MIN_ROWS = 192


def _tile_size(shape, rows: int) -> int:
    """Side of the square tiles of a spatial node ``(C, H, W)`` whose ``rows`` neurons are to be
    bounded: the smallest that gives about :data:`_MIN_ROWS` rows per pass.

    Every row of a tile carries the tile's whole receptive field, so one position per tile is
    the least arithmetic (its own receptive field), and deep nodes with many channels use it;
    nodes with few rows per position group positions so that a pass is not all overhead."""
    if len(shape) != 3:
        return 0
    _, H, W = shape
    per_position = max(rows / (H * W), 1e-9)
    t = round(math.sqrt(_MIN_ROWS / per_position))
    return max(1, min(t, max(H, W)))


def _start_rows(rows, shape, chunk, like, tile=1):
    """Yield ``(flat indices, one-hot start coefficients, window origin)`` chunks of ``rows``.

    Spatial nodes ``(C, H, W)`` are walked in square tiles of at most ``tile`` x ``tile``
    positions (all their channels), so each chunk's coefficients cover one tile; other nodes
    (or ``tile=0``) in plain chunks of at most ``chunk`` rows.
    """
    n = math.prod(shape)
    dev, dt = like.device, like.dtype
    if tile > 0 and len(shape) == 3 and shape[1] * shape[2] > 1:
        C, H, W = shape
        t = max(1, min(tile, int(math.isqrt(max(1, chunk // C)))))
        sel = torch.zeros(n, dtype=torch.bool, device=dev)
        sel[rows] = True
        sel = sel.view(C, H, W)
        for r0 in range(0, H, t):
            for c0 in range(0, W, t):
                h, w = min(t, H - r0), min(t, W - c0)
                local = sel[:, r0:r0 + h, c0:c0 + w].reshape(-1).nonzero().flatten()
                if local.numel() == 0:
                    continue
                ch = local // (h * w)
                rr = (local // w) % h
                cc = local % w
                idx = ch * H * W + (rr + r0) * W + (cc + c0)
                A = torch.zeros(1, local.numel(), C * h * w, dtype=dt, device=dev)
                A[0, torch.arange(local.numel(), device=dev), local] = 1.0
                yield idx, A.view(1, -1, C, h, w), (r0, c0)
        return
    for start in range(0, rows.numel(), chunk):
        idx = rows[start:start + chunk]
        s = idx.numel()
        A = torch.zeros(1, s, n, dtype=dt, device=dev)
        A[0, torch.arange(s, device=dev), idx] = 1.0
        yield idx, A.view(1, s, *shape), None


def output_bounds(ctx: Context, bounds: dict[str, Interval], C, lower=True, upper=True):
    """Bounds of ``C f(x)`` by a backward pass from the output using intermediate ``bounds``."""
    g = ctx.graph
    A = C
    return backward_pass(ctx, g.output, A if lower else None, A if upper else None, bounds)


def elided_interval(ctx: Context, bounds: dict[str, Interval], C, lower=True, upper=True):
    """IBP bounds of ``C f(x)`` with ``C`` folded into the output op: one backward step from
    the output, concretised over the output op's input intervals (tighter than applying ``C``
    to the output interval; Gowal et al. 2018)."""
    g = ctx.graph
    stop = frozenset(i for i in g.nodes[g.output].inputs if g.nodes[i].batched)
    if g.output in ctx.sets:
        stop = frozenset({g.output})
    return backward_pass(ctx, g.output, C if lower else None, C if upper else None, bounds,
                         stop_at=stop)


__all__ = ["backward_pass", "crown_intermediate", "output_bounds", "elided_interval",
           "needed_nodes", "refine"]
