"""Shape converters: Flatten, Reshape, Squeeze and Unsqueeze onto reshapes (``imp.fit``),
Transpose onto ``permute``, Concat onto ``cat``, Pad onto ``pad``, Slice and Split onto
``slice``, Gather onto ``select`` / ``index_select`` and Expand onto ``expand``; Shape and Size
become constants (from the static shape, also of input-dependent tensors).
"""
from __future__ import annotations

import math

import numpy as np

from ..onnx_graph import _T, _Unsupported
from . import (_BATCHED_ONLY, _axes, _batched, _broadcast, _hint, _keep_form, _pad_input,
               _permute, _vocab, converter)


# -- shape ops ----------------------------------------------------------------------------------
@converter("Flatten")
def _flatten(imp, node, ins, a):
    x = ins[0]
    shape = x.shape
    r = len(shape)
    ax = int(a.get("axis", 1))
    if not -r <= ax <= r:
        raise _Unsupported(f"Flatten axis {ax} out of range")
    if ax < 0:
        ax += r
    out = (math.prod(shape[:ax]), math.prod(shape[ax:]))
    return imp.fit(x, out)


def _reshape_target(in_shape, shape, allowzero: bool):
    shape = [int(s) for s in shape]
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise _Unsupported("Reshape copies a dimension the input does not have")
            out.append(in_shape[i])
        else:
            out.append(s)
    if out.count(-1) > 1:
        raise _Unsupported("Reshape with more than one -1")
    total = math.prod(in_shape)
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        if known == 0 or total % known:
            raise _Unsupported(f"cannot reshape {list(in_shape)} to {shape}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise _Unsupported(f"cannot reshape {list(in_shape)} to {shape}")
    return tuple(out)


@converter("Reshape")
def _reshape(imp, node, ins, a):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        if not ins[1].const:
            raise _Unsupported("Reshape to an input-dependent shape")
        shape = np.asarray(ins[1].value).reshape(-1)
    else:
        shape = a.get("shape")
        if shape is None:
            raise _Unsupported("Reshape without a shape")
    out = _reshape_target(x.shape, shape, bool(int(a.get("allowzero", 0))))
    return imp.fit(x, out)


@converter("Squeeze")
def _squeeze(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    axes = _axes(ins, a)
    if axes is None:
        axes = [i for i, s in enumerate(shape) if s == 1]
    axes = {ax % len(shape) for ax in axes}
    if any(shape[ax] != 1 for ax in axes):
        raise _Unsupported("Squeeze of an axis whose size is not 1")
    return imp.fit(x, [s for i, s in enumerate(shape) if i not in axes])


@converter("Unsqueeze")
def _unsqueeze(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    axes = _axes(ins, a)
    if axes is None:
        raise _Unsupported("Unsqueeze without axes")
    r = len(shape) + len(axes)
    axes = sorted(ax % r for ax in axes)
    out = list(shape)
    for ax in axes:
        out.insert(ax, 1)
    return imp.fit(x, out)


@converter("Transpose")
def _transpose(imp, node, ins, a):
    x = ins[0]
    shape = x.shape
    r = len(shape)
    perm = [int(p) for p in a.get("perm", list(reversed(range(r))))]
    out = tuple(shape[p] for p in perm)
    moved = [p for p in perm if shape[p] != 1]
    if moved == sorted(moved):  # only unit axes move: a reshape
        return imp.fit(x, out)
    if x.batch and perm[0] == 0:
        res = _permute(imp, x, perm, _hint(node))
    else:
        x = imp.as_whole(x)
        res = _permute(imp, x, [0] + [p + 1 for p in perm], _hint(node))
    return imp.fit(res, out)


@converter("Concat")
def _concat(imp, node, ins, a):
    ts = [t for t in ins if t is not None and (not t.const or t.value.size > 0)]
    r = len(ts[0].shape)
    ax = int(a["axis"]) % r
    out = list(ts[0].shape)
    out[ax] = sum(t.shape[ax] for t in ts)
    cls = _vocab("cat")
    # batch form when every input-dependent piece has the batch axis and we do not join on it
    form_batch = ax != 0 and out[0] == 1 and all(t.batch for t in _batched(ts))
    refs = []
    for k, t in enumerate(ts):
        if t.const:
            v = np.asarray(t.value)
            if not form_batch:
                v = v[None]  # constants carry a batch axis of 1
            refs.append(imp.tensor_const(v, f"{_hint(node)}_part{k}", key=(id(t), "cat")))
        else:
            refs.append(t if form_batch else imp.as_whole(t))
    dim = ax - 1 if form_batch else ax  # per-sample axis
    res = imp.add(cls(dim), refs, _hint(node))
    res.batch = form_batch
    return imp.fit(res, out)


@converter("Pad")
def _pad(imp, node, ins, a):
    x = ins[0]
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if imp.opset < 11:
        pads = list(a.get("pads", a.get("paddings", [])))
        value = float(a.get("value", 0.0))
    else:
        if len(ins) < 2 or ins[1] is None or not ins[1].const:
            raise _Unsupported("Pad with input-dependent pads")
        pads = [int(p) for p in np.asarray(ins[1].value).reshape(-1)]
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            if not ins[2].const:
                raise _Unsupported("Pad with an input-dependent value")
            value = float(np.asarray(ins[2].value).reshape(-1)[0]) if np.asarray(
                ins[2].value).size else 0.0
        if len(ins) > 3 and ins[3] is not None:
            r = len(x.shape)
            axes = [int(v) % r for v in np.asarray(ins[3].value).reshape(-1)]
            full = [0] * (2 * r)
            for k, ax in enumerate(axes):
                full[ax] = pads[k]
                full[r + ax] = pads[len(axes) + k]
            pads = full
    if mode != "constant":
        raise _Unsupported(f"Pad mode '{mode}'")
    r = len(x.shape)
    if x.batch and (pads[0] or pads[r]):
        raise _Unsupported("Pad along the batch axis")
    if not any(pads):
        return x
    # pads of the per-sample axes (the batch axis, if any, has none)
    first = 1 if x.batch else 0
    sp = [pads[i] for i in range(first, r)] + [pads[r + i] for i in range(first, r)]
    n = len(sp) // 2
    lead = 0  # leading axes without padding need no entry
    while lead < n - 1 and sp[lead] == 0 and sp[n + lead] == 0:
        lead += 1
    res = _pad_input(imp, x, sp[lead:n] + sp[n + lead:], _hint(node), value)
    out = [s + pads[i] + pads[r + i] for i, s in enumerate(x.shape)]
    return imp.fit(res, out)


# -- slicing and indexing -----------------------------------------------------------------------
@converter("Slice")
def _slice(imp, node, ins, a):
    x = ins[0]
    shape = list(x.shape)
    r = len(shape)
    if imp.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        vals = []
        for t in ins[1:5] + [None] * (5 - len(ins)):
            if t is not None and not t.const:
                raise _Unsupported("Slice with input-dependent bounds")
            vals.append(None if t is None else [int(v) for v in np.asarray(t.value).reshape(-1)])
        starts, ends, axes, steps = vals
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
    cur = x
    out = list(shape)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= r
        n = shape[ax]
        if sp <= 0:
            raise _Unsupported("Slice with a non-positive step")
        st = min(max(st + n if st < 0 else st, 0), n)
        en = min(max(en + n if en < 0 else en, 0), n)
        size = max(0, -(-(en - st) // sp))
        if size == n:
            continue
        if size == 0:
            raise _Unsupported("Slice to an empty tensor")
        if cur.batch and ax == 0:
            raise _Unsupported("Slice along the batch axis would mix examples")
        dim = imp.axis(cur, ax, "Slice") - 1
        cur = _keep_form(imp.add(_vocab("slice")(dim, st, en, sp), [cur], _hint(node)), cur)
        out[ax] = size
    return imp.fit(cur, out)


@converter("Gather")
def _gather(imp, node, ins, a):
    x, ind = ins
    if not ind.const:
        raise _Unsupported("Gather with input-dependent indices")
    if x.const:
        raise _Unsupported("")
    idx = np.asarray(ind.value).astype(np.int64)
    r = len(x.shape)
    ax = int(a.get("axis", 0)) % r
    n = x.shape[ax]
    if x.batch and ax == 0:
        if np.all((idx == 0) | (idx == -1)):
            x = imp.as_whole(x)
        else:
            raise _Unsupported("Gather along the batch axis would mix examples")
    idx = np.where(idx < 0, idx + n, idx)
    if np.any(idx < 0) or np.any(idx >= n):
        raise _Unsupported("Gather with out-of-range indices")
    out = list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:])
    dim = imp.axis(x, ax, "Gather") - 1
    if idx.ndim == 0:
        res = _keep_form(imp.add(_vocab("select")(dim, int(idx)), [x], _hint(node)), x)
    else:
        iname = imp.tensor_const(idx.reshape(-1), f"{_hint(node)}_index", key=(id(ind), "gather"))
        res = _keep_form(imp.add(_vocab("index_select")(dim), [x, iname], _hint(node)), x)
    return imp.fit(res, out)


@converter("Split")
def _split(imp, node, ins, a):
    x = ins[0]
    r = len(x.shape)
    ax = int(a.get("axis", 0)) % r
    n = x.shape[ax]
    k = len(node.output)
    if "split" in a:
        sizes = [int(v) for v in a["split"]]
    elif len(ins) > 1 and ins[1] is not None:
        if not ins[1].const:
            raise _Unsupported("Split with input-dependent sizes")
        sizes = [int(v) for v in np.asarray(ins[1].value).reshape(-1)]
    else:
        parts = int(a.get("num_outputs", k))
        step = -(-n // parts)
        sizes = [min(step, n - i * step) for i in range(parts)]
    if sum(sizes) != n:
        raise _Unsupported(f"Split sizes {sizes} do not add up to {n}")
    if x.batch and ax == 0:
        raise _Unsupported("Split along the batch axis would mix examples")
    dim = imp.axis(x, ax, "Split") - 1
    outs, start = [], 0
    for j, sz in enumerate(sizes):
        res = _keep_form(imp.add(_vocab("slice")(dim, start, start + sz, 1), [x],
                                 _hint(node, j)), x)
        shape = list(x.shape)
        shape[ax] = sz
        outs.append(imp.fit(res, shape))
        start += sz
    return outs


@converter("Expand")
def _expand(imp, node, ins, a):
    x, shp = ins
    if not shp.const:
        raise _Unsupported("Expand to an input-dependent shape")
    out = _broadcast(x.shape, tuple(int(v) for v in np.asarray(shp.value).reshape(-1)))
    if out == tuple(x.shape):
        return x
    x = imp.to_rank(x, len(out))
    if x.batch and out[0] != 1:
        x = imp.as_whole(x)
    target = out[1:] if x.batch else out
    res = _keep_form(imp.add(_vocab("expand")(target), [x], _hint(node)), x)
    return imp.fit(res, out)


# -- shape queries ------------------------------------------------------------------------------
@converter("Shape")
def _shape(imp, node, ins, a):
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = int(a.get("start", 0)), a.get("end")
    return _T(value=shape[start:None if end is None else int(end)])


@converter("Size")
def _size(imp, node, ins, a):
    return _T(value=np.array(math.prod(ins[0].shape), dtype=np.int64))


_BATCHED_ONLY.update({"Shape": _shape, "Size": _size})
