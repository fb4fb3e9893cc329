"""onnxruntime's ``Resize`` against torch's upsampling: the attributes that compute
``F.interpolate`` and a probe of whether onnxruntime reproduces it on a given size.

Nearest source indices are computed by onnxruntime in float32 from ``out / in`` and differ by
one from torch's ``floor(dst * in / out)`` where ``dst * in / out`` is an integer (e.g. 14 -> 2);
the upsample emitter (:mod:`boundgraph.frontends.onnx_emitters`) writes such sizes out per axis.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .onnxrt import cpu_session, run_session


def _resize_attrs(mode, align_corners):
    """Attributes of the ONNX ``Resize`` that computes ``F.interpolate(x, size,
    mode, align_corners)``: nearest as ``asymmetric`` coordinates rounded down (torch takes
    source index ``floor(dst * in / out)``), bilinear with ``align_corners`` or ``half_pixel``
    coordinates (torch's ``(dst + 0.5) * in / out - 0.5``, clamped at 0 as ONNX's linear mode
    does)."""
    if mode == "nearest":
        return dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    return dict(mode="linear",
                coordinate_transformation_mode="align_corners" if align_corners
                else "half_pixel")


def _resize_agrees(op, in_shape, np_dtype) -> bool:
    """Whether onnxruntime's ``Resize`` (attributes of :func:`_resize_attrs`) reproduces the
    upsample op on this size. Nearest: the source index of every output position (computed in
    float32 from ``out / in``, it can differ from torch's ``floor(dst * (in / out))`` by one
    where ``dst * in / out`` is an integer); bilinear: the values on a random probe."""
    from onnx import TensorProto, helper, numpy_helper

    a = op.attrs
    sp = tuple(in_shape[1:])
    if a["mode"] == "nearest":
        probe = np.arange(math.prod(sp), dtype=np.float64).reshape(1, 1, *sp)
    else:
        probe = np.random.default_rng(0).random((1, 1, *sp))
    probe = probe.astype(np_dtype)
    with torch.no_grad():
        ref = op.forward(torch.from_numpy(probe)).numpy()
    elem = TensorProto.FLOAT if np_dtype == np.float32 else TensorProto.DOUBLE
    sizes = numpy_helper.from_array(np.asarray([1, 1, *a["size"]], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"],
                            **_resize_attrs(a["mode"], a["align_corners"]))
    graph = helper.make_graph([node], "resize_probe",
                              [helper.make_tensor_value_info("x", elem, list(probe.shape))],
                              [helper.make_tensor_value_info("y", elem, None)],
                              initializer=[sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    try:
        sess = cpu_session(model.SerializeToString(), lambda e: str(e))
        got = run_session(sess, probe)
    except Exception:  # noqa: BLE001 - a Resize onnxruntime cannot run: written another way
        return False
    if got.shape != ref.shape:
        return False
    if a["mode"] == "nearest":
        return bool(np.array_equal(got, ref))
    return float(np.abs(got - ref).max()) <= 1e-6
