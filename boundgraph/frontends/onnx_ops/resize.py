"""Resize converters: Resize and Upsample (nearest and linear) onto one ``upsample`` op where
torch's interpolation matches the ONNX formulas, else, axis by axis, ``index_select`` (nearest)
or ``linear`` with the interpolation matrix; ``resize_matrix`` and ``upsample_axis_maps`` (also
used by the exporter) give those per-axis matrices.
"""
from __future__ import annotations

import math

import numpy as np

from ... import ops as O
from ..onnx_graph import _Unsupported
from . import _hint, _keep_form, _permute, _text, _vocab, converter


def _resize_coords(n: int, m: int, scale, coord: str):
    """ONNX ``Resize`` source coordinates of the ``m`` output positions of an axis of ``n``
    (exact fractions): ``scale`` is ``m / n`` for a given size, else the given float scale."""
    from fractions import Fraction as Fr

    s = Fr(scale) if not isinstance(scale, Fr) else scale
    half = Fr(1, 2)
    out = []
    for x in range(m):
        if coord == "asymmetric":
            xo = x / s
        elif coord == "half_pixel":
            xo = (x + half) / s - half
        elif coord == "pytorch_half_pixel":
            xo = (x + half) / s - half if m > 1 else Fr(0)
        elif coord == "tf_half_pixel_for_nn":
            xo = (x + half) / s
        elif coord == "align_corners":
            xo = Fr(x * (n - 1), m - 1) if m > 1 else Fr(0)
        elif coord == "half_pixel_symmetric":
            adjustment = m / (s * n)
            offset = Fr(n, 2) * (1 - adjustment)
            xo = offset + (x + half) / s - half
        else:
            raise _Unsupported(f"Resize with coordinate_transformation_mode '{coord}'")
        out.append(xo)
    return out


def resize_matrix(n: int, m: int, scale, mode: str, coord: str,
                  nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """The ``(m, n)`` matrix of ONNX ``Resize`` along one axis (nearest or linear), from the
    operator's formulas evaluated exactly; ``nearest_mode="simple"`` is the rounding of
    ``Resize-10`` and ``Upsample`` (down when enlarging, up when shrinking)."""
    from fractions import Fraction as Fr

    s = Fr(scale)
    M = np.zeros((m, n))
    if s == 1 and m == n:  # no resizing along this axis (onnxruntime copies it)
        return np.eye(n)
    coords = _resize_coords(n, m, s, coord)
    for o, xo in enumerate(coords):
        if mode == "nearest":
            if nearest_mode == "floor" or (nearest_mode == "simple" and s >= 1):
                i = math.floor(xo)
            elif nearest_mode in ("ceil", "simple"):
                i = math.ceil(xo)
            elif nearest_mode == "round_prefer_ceil":
                i = math.floor(xo + Fr(1, 2))
            elif nearest_mode == "round_prefer_floor":
                i = math.ceil(xo - Fr(1, 2))
            else:
                raise _Unsupported(f"Resize with nearest_mode '{nearest_mode}'")
            M[o, min(max(i, 0), n - 1)] = 1.0
        else:
            xc = min(max(xo, Fr(0)), Fr(n - 1))
            i0 = math.floor(xc)
            i1 = min(i0 + 1, n - 1)
            w = float(xc - i0)
            M[o, i0] += 1.0 - w
            M[o, i1] += w
    return M


def upsample_axis_maps(op, in_shape) -> list:
    """Per spatial axis, the ``(out, in)`` matrix of an ``upsample`` op on a per-sample input
    of shape ``in_shape`` ``(C, *spatial)``: each axis alone (both modes are separable and
    their rows sum to 1), from the op's own forward on an identity along that axis."""
    import torch

    sp = list(in_shape[1:])
    mats = []
    for k, n in enumerate(sp):
        view = [n, 1] + [n if j == k else 1 for j in range(len(sp))]
        eye = torch.eye(n, dtype=torch.float64).reshape(view).expand([n, 1] + sp).contiguous()
        with torch.no_grad():
            out = op.forward(eye)
        idx = [0] * len(sp)
        idx[k] = slice(None)
        mats.append(out[(slice(None), 0, *idx)].T.numpy())  # (out_k, in_k)
    return mats


def _resize_params(imp, node, ins, a, x):
    """``(mode, coordinate mode, nearest mode, per-axis scales, output shape)`` of a
    ``Resize`` or ``Upsample`` node on ``x`` (scales as given, or ``out / in`` from sizes)."""
    from fractions import Fraction as Fr

    shape = tuple(x.shape)
    r = len(shape)
    mode = _text(a.get("mode", "nearest"))
    if node.op_type == "Upsample" or imp.opset < 11:
        coord, nearest = "asymmetric", "simple"
        if node.op_type == "Upsample" and imp.opset < 9:
            scales, sizes = a.get("scales"), None
        else:
            k = 1
            scales, sizes = (ins[k] if len(ins) > k else None), None
            if scales is not None and not scales.const:
                raise _Unsupported(f"{node.op_type} with input-dependent scales")
            scales = None if scales is None else np.asarray(scales.value).reshape(-1)
    else:
        coord = _text(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
        vals = []
        for k in (2, 3):
            t = ins[k] if len(ins) > k else None
            if t is not None and not t.const:
                raise _Unsupported("Resize with input-dependent scales or sizes")
            v = None if t is None else np.asarray(t.value).reshape(-1)
            vals.append(None if v is None or v.size == 0 else v)
        scales, sizes = vals
        if _text(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise _Unsupported("Resize with keep_aspect_ratio_policy other than 'stretch'")
        axes = a.get("axes")
        if axes is not None:  # opset 18: values for some axes only
            axes = [int(v) % r for v in axes]
            for name in ("scales", "sizes"):
                v = scales if name == "scales" else sizes
                if v is None:
                    continue
                full = np.asarray([1.0] * r if name == "scales" else list(shape),
                                  dtype=v.dtype)
                full[axes] = v
                if name == "scales":
                    scales = full
                else:
                    sizes = full
    if mode not in ("nearest", "linear"):
        raise _Unsupported(f"{node.op_type} mode '{mode}' (nearest and linear have rules)")
    if coord == "tf_crop_and_resize":
        raise _Unsupported("Resize with coordinate_transformation_mode 'tf_crop_and_resize'")
    if sizes is not None:
        out = tuple(int(v) for v in sizes)
        if len(out) != r:
            raise _Unsupported("Resize sizes of another rank than the input")
        sc = [Fr(o, i) for o, i in zip(out, shape)]
    elif scales is not None:
        if len(scales) != r:
            raise _Unsupported(f"{node.op_type} scales of another rank than the input")
        f32 = [np.float32(v) for v in scales]
        sc = [Fr(float(v)) for v in f32]
        out = tuple(int(np.float32(v) * np.float32(i)) for v, i in zip(f32, shape))
    else:
        raise _Unsupported(f"{node.op_type} without scales or sizes")
    if int(a.get("antialias", 0)) and any(o < i for o, i in zip(out, shape)):
        raise _Unsupported("Resize with antialias when shrinking")
    if any(o <= 0 for o in out):
        raise _Unsupported("Resize to an empty tensor")
    return mode, coord, nearest, sc, out


@converter("Resize", "Upsample")
def _resize(imp, node, ins, a):
    """``Resize`` (and the older ``Upsample``) in nearest or linear mode over the axes after
    batch and channel. The per-axis maps come from the operator's formulas; when they equal
    those of torch's interpolation for the output size (``F.interpolate`` nearest, or bilinear
    with ``align_corners`` as the coordinate mode says), one ``upsample`` op; otherwise each
    axis on its own, ``index_select`` of the source positions (nearest) or a ``linear`` op
    with the interpolation matrix (linear)."""
    x = imp.as_batch(ins[0], node.op_type)
    mode, coord, nearest, sc, out = _resize_params(imp, node, ins, a, x)
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise _Unsupported(f"{node.op_type} of a rank-{len(shape)} tensor")
    if tuple(out[:2]) != shape[:2]:
        raise _Unsupported(f"{node.op_type} of the batch or channel axis")
    n_sp = len(shape) - 2
    mats = [resize_matrix(shape[2 + k], out[2 + k], sc[2 + k], mode, coord, nearest)
            for k in range(n_sp)]
    hint = _hint(node)
    if all(M.shape[0] == M.shape[1] and np.array_equal(M, np.eye(M.shape[0])) for M in mats):
        return x
    for align in ((None,) if mode == "nearest" else (coord == "align_corners",)):
        try:
            op = _vocab("upsample")(tuple(out[2:]), "nearest" if mode == "nearest" else
                                    "bilinear", align)
        except ValueError:
            break
        theirs = upsample_axis_maps(op, x.sample)
        if all(T.shape == M.shape and np.allclose(T, M, rtol=0, atol=1e-9)
               for T, M in zip(theirs, mats)):
            res = imp.add(op, [x], hint)
            res.batch = True
            return res
    cur = x
    for k, M in enumerate(mats):
        if M.shape[0] == M.shape[1] and np.array_equal(M, np.eye(M.shape[0])):
            continue
        dim = 1 + k  # per-sample dim
        name = f"{hint}_axis{k}"
        if mode == "nearest":
            idx = imp.tensor_const(M.argmax(1).astype(np.int64), f"{hint}_index{k}")
            cur = _keep_form(imp.add(_vocab("index_select")(dim), [cur, idx], name), cur)
            continue
        nd = len(cur.sample)
        last = dim == nd - 1
        if not last:  # move the axis last, interpolate, move it back
            perm = [0] + [p + 1 for p in range(nd) if p != dim] + [dim + 1]
            cur = _permute(imp, cur, perm, f"{name}_in")
        w = imp.tensor_const(M.astype(np.float64), f"{hint}_matrix{k}")
        cur = _keep_form(imp.add(O.Linear(), [cur, w], name), cur)
        if not last:
            back = [0] + [0] * nd
            for pos, p in enumerate(perm[1:]):
                back[p] = pos + 1
            cur = _permute(imp, cur, back, f"{name}_out")
    return cur
