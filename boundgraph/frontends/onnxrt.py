"""onnxruntime plumbing shared by the ONNX importer and exporter: one CPU session, one run.

The importer runs an imported file with it (:meth:`~.onnx_model.OnnxInfo.session`, used by
:func:`~.onnx_model.check_against_onnxruntime`) and the exporter checks a written file with it
(:func:`~.onnx_export.export_onnx`), so both run ONNX models the same way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import BoundGraphError

__all__ = ["cpu_session", "run_session"]


def cpu_session(model: bytes | str, error: Callable[[Exception], str]):
    """An onnxruntime ``InferenceSession`` for ``model`` (a serialized model or a file path) on
    the CPU provider, with two intra-op threads, one inter-op thread and only errors logged.

    If onnxruntime cannot load the model, raises :class:`~boundgraph.errors.BoundGraphError`
    with the message ``error(e)`` for the exception ``e`` (each caller words its own).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - one readable error
        raise BoundGraphError(error(e)) from e


def run_session(sess, x, input_name=None, output_name: str | None = None) -> np.ndarray:
    """The output ``output_name`` (default: the first) of ``sess`` fed ``x`` as its input
    ``input_name`` (default: the first).

    For a model of several inputs ``x`` is a tuple or list of arrays, one per input, and
    ``input_name`` their names (default: the session's inputs in order); a count that does not
    match raises :class:`~boundgraph.errors.BoundGraphError`.
    """
    outputs = None if output_name is None else [output_name]
    if isinstance(x, (tuple, list)):
        names = [i.name for i in sess.get_inputs()] if input_name is None else list(input_name)
        if len(names) != len(x):
            raise BoundGraphError(f"the ONNX model takes {len(names)} input(s) "
                                  f"({', '.join(names)}), got {len(x)}")
        return sess.run(outputs, dict(zip(names, x)))[0]
    if input_name is None:
        input_name = sess.get_inputs()[0].name
    return sess.run(outputs, {input_name: x})[0]
