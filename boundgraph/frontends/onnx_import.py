"""ONNX front end: an ``.onnx`` (or ``.onnx.gz``) file -> :class:`~boundgraph.BoundedModule`.

The bound graph is built directly from the ONNX graph, op by op, onto the one op vocabulary of
:mod:`boundgraph.ops`; nothing is converted to PyTorch layers. Initializers become tensors of an
internal :class:`OnnxModel` (weights in an ``nn.ParameterDict``, other constants as buffers), so
the graph's ``param`` nodes resolve live tensors as they do for a traced module.

Batch convention
    Every ONNX tensor is read at a *nominal batch of one*: a symbolic first input dimension
    (``"N"``, ``"batch"``) is taken as 1, a fixed one is kept. The bound graph runs ``B``
    independent copies of that computation, one per example, so its per-sample shapes are:

    - ``(1, *s)`` in ONNX (rank >= 2, leading 1): the leading 1 is the batch axis, sample ``s``;
    - any other ONNX shape ``S`` (rank 1, or a fixed first dimension > 1): the whole tensor is
      one sample, sample ``S``.

    So files with a fixed batch of one (ACAS Xu ``[1, 1, 1, 5]``, mnist_fc ``[1, 784, 1]``) and
    files with a dynamic batch both become per-sample graphs, and reshape constants that contain
    the batch size 1 (``Reshape(x, [1, -1])``) become per-sample reshapes. Ops that would mix
    examples (contracting, concatenating or reducing over the batch axis) are rejected.

Inputs
    Every graph input that is not an initializer becomes an input node of the bound graph, in
    the file's order, named after it (``Node.target`` is the ONNX name) and read with the batch
    convention above, each on its own; all share the batch of ``B`` examples and one element
    type. A file of several inputs so gives a module of several arguments (``bm(x1, x2)``).

Constant folding
    A node whose inputs are all constant (initializers, ``Constant`` nodes, the ``Shape`` of an
    input-dependent tensor, which is known at the nominal batch) is evaluated at import time with
    the ONNX reference implementation (:mod:`onnx.reference`), so shape arithmetic such as
    ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` ends as a constant reshape.

Checking
    After import the graph's forward pass is compared with onnxruntime on random inputs (in a
    given input box, else uniform in ``[0, 1]``); a mismatch raises
    :class:`~boundgraph.errors.BoundGraphError`. Nodes without a rule are collected and reported
    together in one :class:`~boundgraph.errors.UnsupportedOpError`.

Supported ONNX ops
    Listed in the docstring of :mod:`boundgraph.frontends.onnx_ops`, which holds the converters
    and their table ``_CONVERTERS`` (the authority; an unsupported-op error lists it). That
    module also says how to add a converter; :func:`converter` is re-exported here.

Layout
    This module holds the public entry points and the importer core (:class:`_Importer`);
    :mod:`~boundgraph.frontends.onnx_ops` the converters, :mod:`~boundgraph.frontends.onnx_graph`
    the import-time tensor ``_T`` they share and small readers of ONNX nodes, and
    :mod:`~boundgraph.frontends.onnx_model` the imported module (:class:`OnnxModel`,
    :class:`OnnxInfo`) and :func:`check_against_onnxruntime`, and
    :mod:`~boundgraph.frontends.onnxrt` the onnxruntime session used for checking.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import zlib

import numpy as np
import torch
from torch import nn

from .. import ops as O
from ..errors import BoundGraphError, InputError, UnsupportedOpError
from ..graph import BoundGraph, Node, resolve_live
from .naming import fresh_name
from .onnx_graph import (_FLOAT_TYPES, _T, _attrs, _canonical_batch, _constant_value,
                         _topological, _Unsupported)
# re-exported: converter (the unsupported-op error names it here), Converter, _matmul_shape
from .onnx_ops import (_BATCHED_ONLY, _CONVERTERS, _NEVER_FOLD, Converter,  # noqa: F401
                       _matmul_shape, converter)
from .onnx_model import OnnxInfo, OnnxModel, _first_line, check_against_onnxruntime

__all__ = ["load_onnx", "OnnxModel", "OnnxInfo", "read_onnx"]

_MIN_OPSET = 7


# ---------------------------------------------------------------------------------- reading
def read_onnx(path: str | os.PathLike):
    """Read an ONNX model from ``path`` (plain or gzip-compressed). Returns ``(model, bytes)``.

    Raises :class:`~boundgraph.errors.InputError` with one readable message for a missing,
    unreadable, corrupt or non-ONNX file.
    """
    import onnx

    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InputError(f"cannot read ONNX file '{path}': {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"'{path}' is not a readable gzip file: {e}") from None
    if not raw:
        raise InputError(f"'{path}' is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise InputError(f"'{path}' is not a valid ONNX model (the protobuf could not be "
                         f"parsed: {_first_line(e) or type(e).__name__})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0 and len(model.graph.output) == 0:
        raise InputError(f"'{path}' is not a valid ONNX model (it has no graph)")
    return model, raw


def _sanitize(name: str) -> str:
    s = re.sub(r"\W", "_", name or "t")
    if not s or s[0].isdigit():
        s = "t_" + s
    return s


# ---------------------------------------------------------------------------------- importer
class _Importer:
    def __init__(self, model, path: str, opset: int):
        self.model = model
        self.path = path
        self.opset = opset
        self.module = OnnxModel()
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.tensors: dict[str, _T] = {}
        self.failed: dict[str, bool] = {}  # tensor -> True (its producer was reported)
        self.unsupported: list[tuple[str, str, str]] = []
        self.param_cache: dict[tuple, str] = {}
        self.dtype = torch.float32
        self.current = None  # ONNX node being converted
        self.extra_outputs: dict[str, str] = {}  # outputs we do not produce -> producer op
        self._by_name: dict[str, Node] = {}
        self.batched: dict[str, _T] = {}

    # -- graph building ------------------------------------------------------------------------
    def unique(self, hint: str) -> str:
        return fresh_name(self.names, _sanitize(hint))

    def tensor_const(self, value, hint: str, *, weight: bool = False, key=None) -> str:
        """A graph node for a constant tensor, registered on the module (live)."""
        value = np.asarray(value)
        if key is not None and key in self.param_cache:
            return self.param_cache[key]
        t = torch.from_numpy(np.array(value, copy=True))
        if t.is_floating_point():
            t = t.to(self.dtype)
        name = self.unique(hint)
        if t.is_floating_point() and t.dim() > 0:
            if weight:
                self.module.params[name] = nn.Parameter(t)
                target = f"params.{name}"
            else:
                self.module.consts.register_buffer(name, t)
                target = f"consts.{name}"
            node = Node(name, "param", target=target, shape=tuple(t.shape))
        else:
            v = t.item() if t.dim() == 0 and t.is_floating_point() else t
            node = Node(name, "const", value=v,
                        shape=tuple(t.shape) if torch.is_tensor(v) else None)
        self.nodes.append(node)
        self._by_name[name] = node
        if key is not None:
            self.param_cache[key] = name
        return name

    def literal(self, value, hint="const") -> str:
        name = self.unique(hint)
        node = Node(name, "const", value=value)
        self.nodes.append(node)
        self._by_name[name] = node
        return name

    def const_value(self, name: str):
        n = self._by_name[name]
        if n.kind == "param":
            return resolve_live(self.module, n.target)
        return n.value

    def add(self, op: O.Op, inputs: list, hint: str) -> _T:
        """Append an op node. ``inputs`` are :class:`_T` (input-dependent) or node names of
        constants. Returns the new tensor with its per-sample shape from the probe."""
        refs, vals, in_shapes = [], [], []
        for v in inputs:
            if isinstance(v, _T):
                refs.append(v.node)
                vals.append(v.probe)
                in_shapes.append(tuple(v.sample))
            else:
                refs.append(v)
                n = self._by_name[v]
                vals.append(self.const_value(v))
                in_shapes.append(n.shape)
        op.in_shapes = tuple(in_shapes)
        op.out_shape = next(s for s, v in zip(in_shapes, inputs) if isinstance(v, _T))
        try:
            with torch.no_grad():
                out = op.forward(*vals)
        except Exception as e:  # noqa: BLE001 - a rule that cannot run this use
            raise _Unsupported(f"{op.kind} cannot run on these shapes "
                               f"({type(e).__name__}: {_first_line(e)})") from e
        if not torch.is_tensor(out) or out.dim() == 0 or out.shape[0] != 2:
            raise _Unsupported(f"{op.kind} does not keep the examples of a batch apart")
        name = self.unique(hint)
        sample = tuple(out.shape[1:])
        op.out_shape = sample
        src = f"ONNX node '{self.current.name}' ({self.current.op_type})" if self.current else ""
        node = Node(name, "op", op=op, inputs=tuple(refs), shape=sample, source=src)
        self.nodes.append(node)
        self._by_name[name] = node
        t = _T(node=name, sample=sample, batch=False, probe=out)
        self.batched[name] = t
        return t

    # -- representation changes ----------------------------------------------------------------
    def reshape(self, t: _T, sample: tuple, batch: bool) -> _T:
        """``t`` with per-sample shape ``sample`` (same elements, row-major)."""
        sample = tuple(int(s) for s in sample)
        if math.prod(sample) != math.prod(t.sample):
            raise BoundGraphError(f"internal: cannot reshape {t.sample} to {sample}")
        if sample == tuple(t.sample):
            return _T(node=t.node, sample=sample, batch=batch, probe=t.probe)
        src = t
        prod_node = self._by_name[t.node]
        # reshape of a reshape: reshape the original instead
        if prod_node.kind == "op" and isinstance(prod_node.op, O.Reshape):
            inp = prod_node.inputs[0]
            src = self.batched[inp]
        r = self.add(O.Reshape(sample), [src], f"{t.node}_reshape")
        r.batch = batch
        self.batched[r.node] = r
        return r

    def fit(self, t: _T, shape) -> _T:
        """Put ``t`` (whose elements are those of an ONNX tensor of ``shape``) in the canonical
        form for that shape."""
        shape = tuple(int(s) for s in shape)
        if _canonical_batch(shape):
            return self.reshape(t, shape[1:], True)
        return self.reshape(t, shape, False)

    def as_batch(self, t: _T, what: str) -> _T:
        """``t`` with its leading ONNX axis as the batch axis (for NCHW-style ops)."""
        if t.batch:
            return t
        shape = t.shape
        if len(shape) >= 1 and shape[0] == 1:
            return self.reshape(t, shape[1:], True)
        raise _Unsupported(f"{what} needs the batch as its first axis, but its input has the "
                           f"fixed shape {list(shape)}")

    def as_whole(self, t: _T) -> _T:
        """``t`` as one sample with its full ONNX shape (batch axis kept as a unit axis)."""
        if not t.batch:
            return t
        return self.reshape(t, (1,) + tuple(t.sample), False)

    def to_rank(self, t: _T, rank: int) -> _T:
        """``t`` with leading unit axes added so its ONNX rank is ``rank``."""
        shape = t.shape
        if len(shape) >= rank:
            return t
        return self.fit(t, (1,) * (rank - len(shape)) + tuple(shape))

    def axis(self, t: _T, a: int, what: str, allow_batch=False) -> int:
        """Runtime axis of the ONNX axis ``a`` of ``t``."""
        r = len(t.shape)
        if not -r <= a < r:
            raise _Unsupported(f"{what}: axis {a} out of range for rank {r}")
        a %= r
        if t.batch and a == 0 and not allow_batch:
            raise _Unsupported(f"{what} along the batch axis would mix examples")
        return a if t.batch else a + 1

    def const_for(self, t: _T, c: np.ndarray) -> np.ndarray:
        """A constant that broadcasts against ``t``'s runtime tensor as ``c`` does against the
        ONNX tensor (``t`` must already have the larger rank)."""
        c = np.asarray(c)
        if t.batch:
            r = len(t.shape)
            if c.ndim == r:
                if c.shape[0] != 1:
                    raise BoundGraphError("internal: constant with a batch-sized axis")
                c = c.reshape(c.shape[1:])
        return c

    # -- conversion ----------------------------------------------------------------------------
    def convert(self):
        from onnx import numpy_helper

        g = self.model.graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for sp in getattr(g, "sparse_initializer", []):  # stored as values at indices
            dims = [int(d) for d in sp.dims]
            vals = numpy_helper.to_array(sp.values)
            idx = numpy_helper.to_array(sp.indices).astype(np.int64)
            dense = np.zeros(math.prod(dims), dtype=vals.dtype)
            flat = idx if idx.ndim == 1 else np.ravel_multi_index(tuple(idx.T), dims)
            dense[flat] = vals
            inits[sp.values.name] = dense.reshape(dims)
        real_inputs = [i for i in g.input if i.name not in inits]
        if not real_inputs:
            raise InputError(f"ONNX file '{self.path}' has no input (every graph input is an "
                             "initializer)")
        if len(g.output) != 1:
            raise InputError(f"ONNX file '{self.path}' has {len(g.output)} outputs; bound graphs "
                             "support models with exactly one output")
        gen = torch.Generator().manual_seed(0)
        infos = [self.input_node(inp, k, gen) for k, inp in enumerate(real_inputs)]
        self.info = dict(input_name=real_inputs[0].name, input_shape=infos[0][0],
                         sample_shape=infos[0][1], batch_input=infos[0][2],
                         dynamic_batch=all(dyn and batch for _, _, batch, dyn in infos))
        if len(real_inputs) > 1:
            self.info.update(input_names=tuple(i.name for i in real_inputs),
                             input_shapes=tuple(d for d, _, _, _ in infos),
                             sample_shapes=tuple(s for _, s, _, _ in infos),
                             batch_inputs=tuple(b for _, _, b, _ in infos))
        for name, v in inits.items():
            self.tensors[name] = _T(value=v)
        self.init_names = set(inits)
        self.consumers: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.graph_outputs = {o.name for o in g.output}

        for node in _topological(g, set(self.tensors)):
            self.current = node
            self.convert_node(node)
        self.current = None

        out_name = g.output[0].name
        if self.unsupported:
            raise _unsupported_error(self.unsupported, self.path)
        if out_name not in self.tensors:
            raise BoundGraphError(f"ONNX file '{self.path}': output '{out_name}' is not "
                                  "produced by any node")
        out = self.tensors[out_name]
        if out.const:
            raise BoundGraphError(f"ONNX file '{self.path}': the output does not depend on "
                                  "the input" + ("s" if len(real_inputs) > 1 else ""))
        graph = BoundGraph(self.nodes, out.node, origin=os.path.basename(self.path))
        self.info.update(output_name=out_name, output_shape=out.shape)
        return graph

    def input_node(self, inp, k: int, gen: torch.Generator):
        """The input node for the ONNX graph input ``inp`` (the ``k``-th real one), named after
        it (``target`` is its ONNX name). Returns ``(ONNX shape at the nominal batch, sample
        shape, batch first, symbolic first dimension)``."""
        import onnx

        tt = inp.type.tensor_type
        if tt.elem_type not in _FLOAT_TYPES:
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has element type "
                             f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; only float and "
                             "double inputs are supported")
        dtype = _FLOAT_TYPES[tt.elem_type]
        if k == 0:
            self.dtype = dtype
        elif dtype != self.dtype:
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' is "
                             f"{str(dtype).replace('torch.', '')} but the first input is "
                             f"{str(self.dtype).replace('torch.', '')}; the inputs must share "
                             "one element type")
        if not tt.HasField("shape"):
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has no shape")
        dims, dynamic = [], False
        for j, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif j == 0:
                dims.append(1)
                dynamic = True
            else:
                raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has a symbolic "
                                 f"dimension {j} ({d.dim_param or '?'}); only the first "
                                 "(batch) dimension may be symbolic")
        if not dims:
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' is a scalar")
        batch = _canonical_batch(dims)
        sample = tuple(dims[1:]) if batch else tuple(dims)
        in_name = self.unique(inp.name)
        in_node = Node(in_name, "input", shape=sample, target=inp.name)
        self.nodes.append(in_node)
        self._by_name[in_name] = in_node
        probe = torch.rand((2, *sample), generator=gen, dtype=torch.float64).to(self.dtype)
        t_in = _T(node=in_name, sample=sample, batch=batch, probe=probe)
        self.batched[in_name] = t_in
        self.tensors[inp.name] = t_in
        return tuple(dims), sample, batch, dynamic

    def convert_node(self, node):
        ins = []
        failed = False
        for name in node.input:
            if name == "":
                ins.append(None)
            elif name in self.extra_outputs:
                self.report(node, f"uses '{name}', an output of {self.extra_outputs[name]} "
                                  "that has no rule")
                for o in node.output:
                    self.failed[o] = True
                return
            elif name in self.failed:
                failed = True
                ins.append(None)
            elif name in self.tensors:
                ins.append(self.tensors[name])
            else:
                self.report(node, f"uses '{name}', which no node produces")
                return
        conv = _CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if failed:
            if conv is None:
                self.report(node, "")
            for o in node.output:
                self.failed[o] = True
            return
        try:
            if node.domain not in ("", "ai.onnx"):
                raise _Unsupported(f"custom domain '{node.domain}'")
            all_const = all(t is None or t.const for t in ins)
            if node.op_type in _BATCHED_ONLY and not all_const:
                outs = _BATCHED_ONLY[node.op_type](self, node, ins, _attrs(node))
            elif all_const and node.op_type not in _NEVER_FOLD:
                outs = self.fold(node, ins)
            elif conv is None:
                raise _Unsupported("")
            else:
                outs = conv(self, node, ins, _attrs(node))
        except _Unsupported as e:
            self.report(node, str(e))
            for o in node.output:
                self.failed[o] = True
            return
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for k, name in enumerate(node.output):
            if name == "":
                continue
            if k < len(outs) and outs[k] is not None:
                t = outs[k]
                self.tensors[name] = t
                if not t.const:
                    self.batched[t.node] = t
            else:  # an extra output we do not produce: reported if something uses it
                self.extra_outputs[name] = node.op_type

    def report(self, node, reason: str):
        label = node.name or (node.output[0] if node.output else "?")
        op = f"{node.op_type} (opset {self.opset}" + (
            f", domain {node.domain})" if node.domain not in ("", "ai.onnx") else ")")
        self.unsupported.append((label, op, reason))

    def fold(self, node, ins):
        """Evaluate a node on constant inputs with the ONNX reference implementation."""
        from onnx.reference import ReferenceEvaluator

        if node.op_type == "Constant":
            return [_T(value=_constant_value(node))]
        feeds = {name: t.value for name, t in zip(node.input, ins) if name and t is not None}
        try:
            ref = ReferenceEvaluator(node, opsets={"": self.opset})
            outs = ref.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            raise _Unsupported(f"could not evaluate it on constant inputs: "
                               f"{type(e).__name__}: {_first_line(e)}") from e
        return [_T(value=np.asarray(v)) for v in outs]


def _unsupported_error(nodes, path) -> UnsupportedOpError:
    """One :class:`UnsupportedOpError` for all unsupported nodes, with ONNX-specific advice."""
    err = UnsupportedOpError(nodes, model=f"ONNX file '{path}'")
    lines = [f"{len(nodes)} ONNX node(s) in '{path}' have no bound rules:"]
    for name, op, why in nodes:
        lines.append(f"  - node '{name}': {op}" + (f": {why}" if why else ""))
    lines.append("Supported: " + ", ".join(sorted(_CONVERTERS)) + ", and any node whose inputs "
                 "are all constant. Add a converter with "
                 "boundgraph.frontends.onnx_import.converter(op_type), or re-export the model "
                 "without these operations.")
    err.args = ("\n".join(lines),)
    return err


# ---------------------------------------------------------------------------------- entry point
def load_onnx(path: str | os.PathLike, *, check: bool = True, input_box=None,
              check_samples: int = 8, rtol: float = 1e-5, seed: int = 0):
    """Import an ONNX model as a :class:`~boundgraph.BoundedModule`.

    Parameters
    ----------
    path:
        ``.onnx`` file, or a gzip-compressed one (``.onnx.gz``).
    check:
        compare the bound graph's forward pass with onnxruntime on ``check_samples`` random
        inputs; a mismatch above ``rtol`` (relative to the output's magnitude) raises
        :class:`~boundgraph.errors.BoundGraphError`.
    input_box:
        ``(lower, upper)`` to draw the check's inputs from (arrays broadcasting against one
        example, e.g. a VNN-LIB property's box); uniform in ``[0, 1]`` otherwise. For a file of
        several inputs, one such box or ``None`` per input (see
        :func:`check_against_onnxruntime`).

    The returned module takes per-sample inputs ``(B, *sample_shape)`` (see the module
    docstring for the batch convention); ``bm.model.onnx_info`` (:class:`OnnxInfo`) records the
    ONNX names and shapes and runs the file with onnxruntime. A file of several (non-initializer)
    inputs gives a module of several inputs, in the file's order, each named by its ONNX name
    (``bm.graph.input_names``): ``bm(x1, x2)``, and bounds with a perturbation per input
    (``{0: LinfBall(eps)}``, the others exact).
    """
    from ..bounded import BoundedModule

    path = os.fspath(path)
    model, raw = read_onnx(path)
    opset = None
    for imp_ in model.opset_import:
        if imp_.domain in ("", "ai.onnx"):
            opset = int(imp_.version)
    if opset is None:
        opset = 1 if not model.opset_import else _MIN_OPSET
    if opset < _MIN_OPSET:
        raise InputError(f"ONNX file '{path}' uses opset {opset}; opsets {_MIN_OPSET} and later "
                         "are supported")
    imp = _Importer(model, path, opset)
    graph = imp.convert()
    module = imp.module
    module.graph = graph
    info = OnnxInfo(path=path, dtype=imp.dtype, opset=opset, model_bytes=raw, **imp.info)
    module.onnx_info = info
    bm = BoundedModule(module, graph=graph)
    if check:
        check_against_onnxruntime(bm, input_box=input_box, n=check_samples, rtol=rtol, seed=seed)
    return bm
