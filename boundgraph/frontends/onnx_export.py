"""ONNX export: a model (or a :class:`~boundgraph.BoundedModule`) -> a standard ONNX file.

The file is written from the bound graph itself: every op of the vocabulary has an emitter that
writes the equivalent standard ONNX nodes (linear -> Gemm or MatMul/Add, conv2d -> Conv,
batchnorm -> BatchNormalization, ...), constants and live parameters become initializers, and
the inputs and the output get a symbolic batch dimension ``"batch"`` (a model of several inputs
gets one ONNX input per input, named after its argument). So a traced module and an
imported ONNX model export the same way, and the file holds only ops that the ONNX importer and
other verifiers read.

This module walks the graph and writes and checks the file. The writer and the emitters
(:data:`EMITTERS`, :func:`emitter`, re-exported here) live in
:mod:`boundgraph.frontends.onnx_emitters`, whose docstring lists how each op kind maps.

Graphs holding an op without an emitter fall back on PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``) when a plain ``nn.Module`` was given.

Every export is checked: onnxruntime must reproduce the module's outputs (to ``1e-5`` relative
to the output magnitude) on the example input and on a second batch of another size, otherwise
:class:`~boundgraph.errors.BoundGraphError` is raised.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import BoundGraphError, InputError, UnsupportedOpError
# importing the emitters registers them; EMITTERS, Emitter and emitter are public here too
from .onnx_emitters import EMITTERS, Emitter, _NoEmit, _Writer, emitter  # noqa: F401
from .onnxrt import cpu_session, run_session

__all__ = ["export_onnx", "EMITTERS"]

DEFAULT_OPSET = 13
#: opsets whose operator signatures the emitters follow (first, last)
SUPPORTED_OPSETS = (13, 17)


# ---------------------------------------------------------------------------------- export
def _graph_to_onnx(bm, opset: int, input_name: str, output_name: str, dtype):
    """ONNX ``ModelProto`` for the bound graph of ``bm`` (constants in evaluation mode)."""
    import onnx
    from onnx import TensorProto, helper

    g = bm.graph
    consts = g.constants(bm.model)
    w = _Writer(g, consts, dtype)
    names = _input_names(g, input_name)
    w.tensor_names = {node: w.unique(name) for node, name in zip(g.inputs, names)}
    missing = []
    for name in g.batched_ops:
        node = g.nodes[name]
        emit = EMITTERS.get(node.op.kind)
        if emit is None:
            missing.append((name, node.op.kind, node.source))
            continue
        try:
            ins = [w.input_name(i) for i in node.inputs]
            hint = output_name if name == g.output else name
            w.tensor_names[name] = emit(w, node, ins, hint)
        except _NoEmit as e:
            missing.append((name, f"{node.op.kind} ({e})", node.source))
        except KeyError:
            missing.append((name, f"{node.op.kind} (input not exported)", node.source))
    if missing:
        raise UnsupportedOpError(missing, model=f"{g.origin} (ONNX export)")
    out = w.tensor_names[g.output]
    if out != output_name:  # the output is the input, or its name was taken
        out = w.add("Identity", [out], output_name)
    elem = TensorProto.FLOAT if dtype == torch.float32 else TensorProto.DOUBLE
    x_infos = [helper.make_tensor_value_info(w.tensor_names[node], elem, ["batch", *shape])
               for node, shape in zip(g.inputs, g.input_shapes)]
    y_info = helper.make_tensor_value_info(out, elem, ["batch", *g.output_shape])
    graph = helper.make_graph(w.nodes, f"{g.origin}", x_infos, [y_info],
                              initializer=list(w.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="boundgraph")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def _input_names(g, input_name: str) -> list[str]:
    """Names of the ONNX inputs for the bound graph ``g``: ``input_name`` for a one-input graph,
    else each input's argument name (``g.input_names``)."""
    return [input_name] if len(g.inputs) == 1 else list(g.input_names)


def _torch_export(model: nn.Module, examples, path, opset, input_names, output_name):
    """PyTorch's TorchScript-based exporter (fallback for graphs with ops lacking an emitter);
    ``examples`` holds one tensor per model argument, named ``input_names``."""
    axes = {name: {0: "batch"} for name in input_names}
    axes[output_name] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(examples), path, dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=[output_name],
                          dynamic_axes=axes)


def export_onnx(model_or_bounded_module, example_input, path: str | os.PathLike,
                *, opset: int = DEFAULT_OPSET, input_name: str = "input",
                output_name: str = "output", check: bool = True, rtol: float = 1e-5) -> str:
    """Write ``model_or_bounded_module`` as a standard ONNX file with a dynamic batch dimension.

    Parameters
    ----------
    model_or_bounded_module:
        an ``nn.Module`` (traced with the torch front end on ``example_input``) or a
        :class:`~boundgraph.BoundedModule` (e.g. one imported from ONNX).
    example_input:
        a batch ``(B, *input_shape)`` fixing the per-example input shape; also the check input.
        For a model of several inputs, a tuple (or list) with one such batch per input, in
        argument order, all of the same ``B``.
    path:
        where to write (``.onnx``).
    opset:
        ONNX opset of the file, 13 to 17 (default 13): the emitters write ``ReduceSum`` and
        ``Unsqueeze`` with axes inputs (13 and later) and ``ReduceMean`` with an axes
        attribute (before 18).
    input_name:
        the name of the file's input for a model of one input. A model of several inputs
        names each after its argument (``bm.graph.input_names``).
    check:
        run the file with onnxruntime on ``example_input`` and on a second batch of another
        size and compare with the module (``rtol`` relative to the output magnitude); a mismatch
        raises :class:`~boundgraph.errors.BoundGraphError`.

    The model is exported in evaluation mode (BatchNorm with running statistics, dropout off);
    its training flags are restored afterwards. Returns the path.
    """
    from ..bounded import BoundedModule

    path = os.fspath(path)
    if not (isinstance(opset, int) and SUPPORTED_OPSETS[0] <= opset <= SUPPORTED_OPSETS[1]):
        raise InputError(f"opset {opset!r} is not supported; export_onnx writes opsets "
                         f"{SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[1]}")
    several = isinstance(example_input, (tuple, list))
    examples = tuple(example_input) if several else (example_input,)
    if not examples or not all(torch.is_tensor(e) and e.dim() >= 1 for e in examples):
        raise InputError("export_onnx needs an example input tensor with a batch dimension"
                         + (" for each model input" if several else ""))
    if len({e.shape[0] for e in examples}) > 1:
        raise InputError("the example inputs have different batch sizes: "
                         f"{[e.shape[0] for e in examples]}")
    if isinstance(model_or_bounded_module, BoundedModule):
        bm = model_or_bounded_module
        module = bm.model
    elif isinstance(model_or_bounded_module, nn.Module):
        module = model_or_bounded_module
        bm = None
    else:
        raise InputError("export_onnx expects an nn.Module or a BoundedModule, got "
                         f"{type(model_or_bounded_module).__name__}")
    p = next(iter(module.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else examples[0].dtype
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    examples = tuple(e.to(dtype) for e in examples)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if bm is None:
            bm = BoundedModule(module, examples if several else examples[0])
        g = bm.graph
        if len(examples) != len(g.inputs):
            raise InputError(f"{len(examples)} example input(s) for a model of "
                             f"{len(g.inputs)} input(s) ({', '.join(g.input_names)}); give a "
                             "tuple with one example batch per input")
        for e, shape, name in zip(examples, g.input_shapes, g.input_names):
            if tuple(e.shape[1:]) != shape:
                what = "the model's input" if len(examples) == 1 else f"the model's input {name!r}"
                raise InputError(f"example input of shape {tuple(e.shape)} does not match "
                                 f"{what} (B, {', '.join(map(str, shape))})")
        try:
            model = _graph_to_onnx(bm, opset, input_name, output_name, dtype)
        except UnsupportedOpError:
            if model_or_bounded_module is bm:
                raise
            _torch_export(module, examples, path, opset, _input_names(g, input_name),
                          output_name)
        else:
            import onnx
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            onnx.save_model(model, path)
        if check:
            _check_export(path, bm, module, model_or_bounded_module is bm, examples, rtol)
    finally:
        for m, t in modes.items():
            m.training = t
    return path


def _check_export(path, bm, module, is_bm, examples, rtol):
    """Compare onnxruntime's outputs for the written file with the module's, on ``examples``
    (one batch per input) and on a second, random batch of another size."""
    sess = cpu_session(path, lambda e: f"onnxruntime cannot load the exported file '{path}': {e}")
    B2 = examples[0].shape[0] + 1
    gen = torch.Generator().manual_seed(0)
    second = []
    for e in examples:  # each input drawn in the range of its example
        lo, hi = float(e.min()), float(e.max())
        if hi <= lo:
            hi = lo + 1.0
        second.append(lo + torch.rand((B2, *e.shape[1:]), generator=gen,
                                      dtype=torch.float64).to(e.dtype) * (hi - lo))
    for xs in (tuple(examples), tuple(second)):
        B = xs[0].shape[0]
        with torch.no_grad():
            ref = (bm(*xs) if is_bm else module(*xs)).reshape(B, -1).double().numpy()
        feed = [x.detach().cpu().numpy() for x in xs]
        got = run_session(sess, feed[0] if len(feed) == 1 else feed)
        got = np.asarray(got, dtype=np.float64).reshape(B, -1)
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(got - ref).max()) / scale if got.shape == ref.shape else math.inf
        if not diff <= rtol:
            raise BoundGraphError(f"the exported file '{path}' does not reproduce the module: "
                                  f"largest difference {diff:.3g} (relative to {scale:.3g}) "
                                  f"> {rtol:g} on a batch of {B}")
