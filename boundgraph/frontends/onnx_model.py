"""The imported ONNX file as a torch module: :class:`OnnxModel` holds its tensors and runs its
bound graph, :class:`OnnxInfo` records what the importer learnt and runs the file itself with
onnxruntime, and :func:`check_against_onnxruntime` compares the two on random inputs (every
import ends with it)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BoundGraphError, InputError
from ..graph import BoundGraph
from .onnxrt import cpu_session, run_session

__all__ = ["OnnxModel", "OnnxInfo", "check_against_onnxruntime"]


class OnnxModel(nn.Module):
    """Holds the tensors of an imported ONNX model; ``forward`` runs its bound graph.

    ``params`` (an ``nn.ParameterDict``) holds weights and biases of affine layers, ``consts``
    the other constants as buffers (normalisation constants, BatchNorm statistics). Names are the
    ONNX initializer names made into identifiers.
    """

    def __init__(self):
        super().__init__()
        self.params = nn.ParameterDict()
        self.consts = nn.Module()
        self.graph: BoundGraph | None = None
        self.onnx_info: OnnxInfo | None = None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The bound graph's forward pass: one tensor per ONNX input, in the file's order."""
        g = self.graph
        if len(xs) != len(g.inputs):
            raise InputError(f"the ONNX model takes {len(g.inputs)} input(s) "
                             f"({', '.join(g.input_names)}), got {len(xs)}")
        return g.forward(xs[0] if len(xs) == 1 else xs, self)


@dataclass
class OnnxInfo:
    """What the importer learnt about the file, and a way to run it with onnxruntime.

    ``input_shape``/``output_shape`` are the ONNX shapes at the nominal batch (symbolic
    dimensions as 1); ``batch_input`` says whether the first input dimension is the batch axis
    (then ``sample_shape`` drops it). ``dynamic_batch`` is true when that dimension is symbolic.

    A file may have several inputs: ``input_names``, ``input_shapes``, ``sample_shapes`` and
    ``batch_inputs`` list each one's, in the file's order (the order of the bound graph's
    inputs), and the singular fields describe the first. ``dynamic_batch`` is then true when
    every input has a symbolic batch dimension.
    """

    path: str
    input_name: str
    output_name: str
    input_shape: tuple
    output_shape: tuple
    sample_shape: tuple
    batch_input: bool
    dynamic_batch: bool
    dtype: torch.dtype
    opset: int
    model_bytes: bytes = field(repr=False, default=b"")
    input_names: tuple = ()
    input_shapes: tuple = ()
    sample_shapes: tuple = ()
    batch_inputs: tuple = ()
    _session: Any = field(repr=False, default=None)

    def __post_init__(self):
        if not self.input_names:  # a one-input record: the lists from the singular fields
            self.input_names = (self.input_name,)
            self.input_shapes = (tuple(self.input_shape),)
            self.sample_shapes = (tuple(self.sample_shape),)
            self.batch_inputs = (self.batch_input,)

    def session(self):
        """An onnxruntime session for the file (created once, on CPU, two threads; see
        :func:`~boundgraph.frontends.onnxrt.cpu_session`)."""
        if self._session is None:
            def error(e: Exception) -> str:
                return (f"onnxruntime cannot load '{self.path}': "
                        f"{type(e).__name__}: {_first_line(e)}")

            self._session = cpu_session(self.model_bytes, error)
        return self._session

    def run(self, *xs) -> np.ndarray:
        """Outputs of the ONNX model with onnxruntime for per-sample inputs ``xs``.

        One array or tensor per ONNX input, in the file's order, each ``(B, *sample_shape)``
        of its input; returns ``(B, n_outputs)``. Examples go one at a time, at the nominal
        batch of one (the semantics the bound graph has).
        """
        n = len(self.input_names)
        if len(xs) != n:
            raise InputError(f"'{self.path}' takes {n} input(s) ({', '.join(self.input_names)}), "
                             f"got {len(xs)}")
        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        arrays = []
        for x in xs:
            x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
            arrays.append(x.astype(np_dtype, copy=False))
        B = arrays[0].shape[0]
        if any(a.shape[0] != B for a in arrays):
            raise InputError(f"the inputs of '{self.path}' have different batch sizes: "
                             f"{[a.shape[0] for a in arrays]}")
        sess = self.session()
        outs = []
        for i in range(B):
            if n == 1:
                xi = arrays[0][i].reshape(self.input_shape)
                y = run_session(sess, xi, self.input_name, self.output_name)
            else:
                feed = [a[i].reshape(s) for a, s in zip(arrays, self.input_shapes)]
                y = run_session(sess, feed, self.input_names, self.output_name)
            outs.append(y.reshape(-1))
        return np.stack(outs, 0)


def _first_line(e) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else ""


def check_against_onnxruntime(bm, input_box=None, n: int = 8, rtol: float = 1e-5, seed: int = 0):
    """Raise :class:`~boundgraph.errors.BoundGraphError` unless the bound graph of an imported
    model reproduces onnxruntime's outputs on ``n`` random inputs (to ``rtol`` relative to the
    largest output magnitude). Returns the largest relative difference.

    ``input_box`` is ``(lower, upper)`` for a one-input model; for a model of several inputs it
    is ``None`` or a tuple or list with one entry per input, each ``(lower, upper)`` or ``None``
    (uniform in ``[0, 1]``).
    """
    info: OnnxInfo = bm.model.onnx_info
    shapes = info.sample_shapes
    if len(shapes) == 1:
        boxes = [input_box]
    elif input_box is None:
        boxes = [None] * len(shapes)
    elif isinstance(input_box, (tuple, list)) and len(input_box) == len(shapes) and all(
            b is None or isinstance(b, (tuple, list)) and len(b) == 2 for b in input_box):
        boxes = list(input_box)
    else:
        raise InputError(f"'{info.path}' has {len(shapes)} inputs "
                         f"({', '.join(info.input_names)}): input_box must be None or one box "
                         "(lower, upper) or None per input")
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for name, shape, box in zip(info.input_names, shapes, boxes):
        u = torch.rand((n, *shape), generator=gen, dtype=torch.float64)
        if box is not None:
            lo = torch.as_tensor(np.asarray(box[0], dtype=np.float64)).reshape(-1)
            hi = torch.as_tensor(np.asarray(box[1], dtype=np.float64)).reshape(-1)
            if lo.numel() != math.prod(shape) or hi.numel() != math.prod(shape):
                what = "the input box" if len(shapes) == 1 else f"the box of input '{name}'"
                takes = "" if len(shapes) == 1 else f" at input '{name}'"
                raise InputError(f"{what} has {lo.numel()} values but '{info.path}' takes "
                                 f"{math.prod(shape)}{takes} per example (shape {list(shape)})")
            u = (lo + u.reshape(n, -1) * (hi - lo)).reshape(n, *shape)
        xs.append(u.to(info.dtype))
    expected = info.run(*xs)
    with torch.no_grad():
        got = bm(*xs).reshape(n, -1).to(torch.float64).numpy()
    expected = expected.astype(np.float64)
    if got.shape != expected.shape:
        raise BoundGraphError(f"imported graph of '{info.path}' gives {got.shape[1]} outputs per "
                              f"example, onnxruntime {expected.shape[1]}")
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max()) / scale
    if not np.isfinite(diff) or diff > rtol:
        raise BoundGraphError(
            f"the imported graph of '{info.path}' does not reproduce onnxruntime: largest "
            f"difference {diff:.3g} (relative to {scale:.3g}) > {rtol:g} on random inputs; "
            "no bound computed on it could be trusted")
    return diff
