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

Supported ONNX ops (default domain, opsets 7 to current; the table ``_CONVERTERS`` is the
authority, and an unsupported-op error lists it): Gemm, MatMul (a constant on either side),
Add, Sub, Mul, Div, Sum, Neg, Abs, Pow (square), Relu, LeakyRelu, Clip, Sigmoid, Tanh, Softplus,
Elu, Selu, Gelu, Conv (1-d and 2-d, pads, strides, dilations, groups, auto_pad),
BatchNormalization (inference), MaxPool, AveragePool, GlobalAveragePool, ReduceMean, ReduceSum,
Flatten, Reshape, Transpose, Concat, Split, Slice, Gather, Expand, Pad, Squeeze, Unsqueeze,
Identity, Dropout (inference), Cast (to the same float type), Constant, Shape, Size, and any op
whose inputs are all constant.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import ops as O
from ..errors import BoundGraphError, InputError, UnsupportedOpError
from ..graph import BoundGraph, Node, resolve_live
from .naming import fresh_name

__all__ = ["load_onnx", "OnnxModel", "OnnxInfo", "read_onnx"]

#: ONNX element types the graph can compute in.
_FLOAT_TYPES = {1: torch.float32, 11: torch.float64}
_MIN_OPSET = 7


class _Unsupported(Exception):
    """Raised by a converter for a node (or a use of an op) it cannot turn into bound rules."""


# ---------------------------------------------------------------------------------- the module
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph.forward(x, self)


@dataclass
class OnnxInfo:
    """What the importer learnt about the file, and a way to run it with onnxruntime.

    ``input_shape``/``output_shape`` are the ONNX shapes at the nominal batch (symbolic
    dimensions as 1); ``batch_input`` says whether the first input dimension is the batch axis
    (then ``sample_shape`` drops it). ``dynamic_batch`` is true when that dimension is symbolic.
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
    _session: Any = field(repr=False, default=None)

    def session(self):
        """An onnxruntime session for the file (created once, on CPU, two threads)."""
        if self._session is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(self.model_bytes, so,
                                                     providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - one readable error
                raise BoundGraphError(f"onnxruntime cannot load '{self.path}': "
                                      f"{type(e).__name__}: {_first_line(e)}") from e
        return self._session

    def run(self, x) -> np.ndarray:
        """Outputs of the ONNX model with onnxruntime for per-sample inputs ``x``.

        ``x`` is ``(B, *sample_shape)`` (array or tensor); returns ``(B, n_outputs)``. Examples
        go one at a time, at the nominal batch of one (the semantics the bound graph has).
        """
        x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        x = x.astype(np_dtype, copy=False)
        sess = self.session()
        B = x.shape[0]
        outs = []
        for i in range(B):
            xi = x[i].reshape(self.input_shape)
            outs.append(sess.run([self.output_name], {self.input_name: xi})[0].reshape(-1))
        return np.stack(outs, 0)


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


def _first_line(e) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else ""


# ---------------------------------------------------------------------------------- tensors
@dataclass
class _T:
    """A tensor during import: a constant (``value``) or an input-dependent node.

    For input-dependent tensors ``sample`` is the per-sample runtime shape and ``batch`` says
    whether the ONNX tensor has the batch as its leading axis (ONNX shape ``(1, *sample)``) or
    is one sample as a whole (ONNX shape ``sample``). ``probe`` is the node's value on a probe
    batch of two random examples (shape checks at import time).
    """

    value: np.ndarray | None = None
    node: str | None = None
    sample: tuple = ()
    batch: bool = False
    probe: torch.Tensor | None = None

    @property
    def const(self) -> bool:
        return self.node is None

    @property
    def shape(self) -> tuple:
        """The ONNX shape at the nominal batch."""
        if self.const:
            return tuple(self.value.shape)
        return ((1,) if self.batch else ()) + tuple(self.sample)


def _canonical_batch(shape) -> bool:
    """Whether an ONNX shape is read as ``(batch, *sample)``: rank >= 2 and a leading 1."""
    return len(shape) >= 2 and shape[0] == 1


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
        import onnx
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
        if len(real_inputs) != 1:
            names = [i.name for i in real_inputs]
            raise InputError(f"ONNX file '{self.path}' has {len(real_inputs)} inputs {names}; "
                             "bound graphs support models with exactly one input")
        if len(g.output) != 1:
            raise InputError(f"ONNX file '{self.path}' has {len(g.output)} outputs; bound graphs "
                             "support models with exactly one output")
        inp = real_inputs[0]
        tt = inp.type.tensor_type
        if tt.elem_type not in _FLOAT_TYPES:
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has element type "
                             f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; only float and "
                             "double inputs are supported")
        self.dtype = _FLOAT_TYPES[tt.elem_type]
        if not tt.HasField("shape"):
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has no shape")
        dims, dynamic = [], False
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(1)
                dynamic = True
            else:
                raise InputError(f"ONNX file '{self.path}': input '{inp.name}' has a symbolic "
                                 f"dimension {k} ({d.dim_param or '?'}); only the first "
                                 "(batch) dimension may be symbolic")
        if not dims:
            raise InputError(f"ONNX file '{self.path}': input '{inp.name}' is a scalar")
        batch = _canonical_batch(dims)
        sample = tuple(dims[1:]) if batch else tuple(dims)
        in_name = self.unique(inp.name)
        in_node = Node(in_name, "input", shape=sample)
        self.nodes.append(in_node)
        self._by_name[in_name] = in_node
        gen = torch.Generator().manual_seed(0)
        probe = torch.rand((2, *sample), generator=gen, dtype=torch.float64).to(self.dtype)
        t_in = _T(node=in_name, sample=sample, batch=batch, probe=probe)
        self.batched[in_name] = t_in
        self.tensors[inp.name] = t_in
        for name, v in inits.items():
            self.tensors[name] = _T(value=v)
        self.init_names = set(inits)
        self.consumers: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.graph_outputs = {o.name for o in g.output}
        self.info = dict(input_name=inp.name, input_shape=tuple(dims), sample_shape=sample,
                         batch_input=batch, dynamic_batch=dynamic and batch)

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
                                  "the input")
        graph = BoundGraph(self.nodes, out.node, origin=os.path.basename(self.path))
        self.info.update(output_name=out_name, output_shape=out.shape)
        return graph

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


def _topological(g, known: set[str]):
    """Nodes of ``g`` in an order where each node's inputs are produced before it (the file's
    order when it already is; ONNX requires it, but some exporters do not comply)."""
    nodes = list(g.node)
    avail = set(known) | {""}
    out, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            out.extend(rest)  # unresolvable inputs: reported by convert_node
            break
        pending = rest
    return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant_value(node) -> np.ndarray:
    from onnx import numpy_helper

    a = {x.name: x for x in node.attribute}
    if "value" in a:
        return numpy_helper.to_array(a["value"].t)
    if "value_float" in a:
        return np.array(a["value_float"].f, dtype=np.float32)
    if "value_floats" in a:
        return np.array(list(a["value_floats"].floats), dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"].i, dtype=np.int64)
    if "value_ints" in a:
        return np.array(list(a["value_ints"].ints), dtype=np.int64)
    raise _Unsupported("Constant without a dense value")


# ---------------------------------------------------------------------------------- converters
Converter = Callable[[_Importer, Any, list, dict], Any]
_CONVERTERS: dict[str, Converter] = {}
#: converters that also run when the input is constant-free but the op must not be folded
_BATCHED_ONLY: dict[str, Converter] = {}
#: ops never evaluated at import time even on constant inputs (their value is not fixed)
_NEVER_FOLD: set[str] = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                         "RandomUniformLike", "Multinomial", "Bernoulli"}


def converter(*op_types):
    def deco(f):
        for t in op_types:
            _CONVERTERS[t] = f
        return f
    return deco


def _vocab(*kinds: str):
    """The op class of the first of ``kinds`` in the vocabulary (``boundgraph.ops.OPS``)."""
    for k in kinds:
        cls = O.OPS.get(k)
        if cls is not None:
            return cls
    raise _Unsupported(f"boundgraph.ops has no '{kinds[0]}' op")


def _batched(ins):
    return [t for t in ins if t is not None and not t.const]


def _hint(node, k=0):
    if len(node.output) > k and node.output[k]:
        return node.output[k]
    return node.name or node.op_type


@converter("Identity", "Dropout")
def _identity(imp, node, ins, a):
    x = ins[0]
    if node.op_type == "Dropout":
        training = ins[2] if len(ins) > 2 else None
        if training is not None and (not training.const or bool(np.asarray(training.value))):
            raise _Unsupported("Dropout in training mode")
    return [x]


@converter("Cast")
def _cast(imp, node, ins, a):
    to = a.get("to")
    if _FLOAT_TYPES.get(to) != imp.dtype:
        raise _Unsupported("Cast of an input-dependent tensor to another type")
    return ins[0]


def _unary(kind, make=None):
    def conv(imp, node, ins, a):
        cls = _vocab(kind)
        op = make(cls, a) if make else cls()
        x = ins[0]
        t = imp.add(op, [x], _hint(node))
        t.batch = x.batch
        return t
    return conv


_SELU = (1.67326319217681884765625, 1.05070102214813232421875)  # ONNX's defaults (float32)

_CONVERTERS.update({
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Neg": _unary("neg"),
    "Abs": _unary("abs"),
    "LeakyRelu": _unary("leaky_relu", lambda cls, a: cls(float(a.get("alpha", 0.01)))),
    "Softplus": _unary("softplus", lambda cls, a: cls(1.0, math.inf)),
    "Elu": _unary("elu", lambda cls, a: cls(float(a.get("alpha", 1.0)))),
    "Selu": _unary("elu", lambda cls, a: cls(float(a.get("alpha", _SELU[0])),
                                             float(a.get("gamma", _SELU[1])))),
    "Gelu": _unary("gelu", lambda cls, a: cls(_text(a.get("approximate", "none")))),
})


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@converter("Clip")
def _clip(imp, node, ins, a):
    if imp.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        vals = []
        for t in ins[1:3] + [None] * (3 - len(ins)):
            if t is None:
                vals.append(None)
            elif not t.const:
                raise _Unsupported("Clip with input-dependent bounds")
            else:
                vals.append(float(np.asarray(t.value).reshape(-1)[0]))
        lo, hi = vals[0], vals[1]
    x = ins[0]
    if lo is None and hi is None:
        return x
    if lo == 0.0 and hi is None:
        t = imp.add(_vocab("relu")(), [x], _hint(node))
    else:
        t = imp.add(_vocab("clamp")(lo, hi), [x], _hint(node))
    t.batch = x.batch
    return t


@converter("Pow")
def _pow(imp, node, ins, a):
    x, e = ins
    if not e.const or x.const:
        raise _Unsupported("Pow with an input-dependent exponent")
    ev = np.asarray(e.value).reshape(-1)
    if ev.size != 1 or float(ev[0]) not in (1.0, 2.0):
        raise _Unsupported(f"Pow with exponent {ev.tolist()} (only 1 and 2 have rules)")
    if float(ev[0]) == 1.0:
        return x
    t = imp.add(_vocab("square")(), [x], _hint(node))
    t.batch = x.batch
    return t


def _broadcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise _Unsupported(f"shapes {[list(s) for s in shapes]} do not broadcast") from None


def _binary(kind):
    def conv(imp, node, ins, a):
        x, y = ins[0], ins[1]
        out_shape = _broadcast(x.shape, y.shape)
        r = len(out_shape)
        if kind == "div" and not y.const:
            raise _Unsupported("division by an input-dependent tensor")
        cls = _vocab(kind)
        if x.const or y.const:
            t, c = (y, x) if x.const else (x, y)
            if kind == "add":
                fused = _fuse_bias(imp, node, t, c, out_shape)
                if fused is not None:
                    return fused
            t = imp.to_rank(t, r)
            cv = np.asarray(c.value)
            full = cv.reshape((1,) * (r - cv.ndim) + cv.shape)
            if t.batch and full.shape[0] != 1:
                t = imp.as_whole(t)  # a constant with a batch-sized axis: whole-tensor form
            cv = imp.const_for(t, cv)
            if cv.size == 1 and cv.ndim == 0 or (cv.size == 1 and all(s == 1 for s in cv.shape)
                                                  and cv.ndim <= len(t.sample)):
                cv = cv.reshape(())  # a scalar: broadcasts anywhere
            src = _input_name(node, c, imp)
            cname = imp.tensor_const(cv, src or f"{_hint(node)}_const",
                                     key=None if src is None else (src, kind, cv.shape))
            ins2 = [cname, t] if x.const else [t, cname]
            res = imp.add(cls(), ins2, _hint(node))
            res.batch = t.batch
        else:
            x, y = imp.to_rank(x, r), imp.to_rank(y, r)
            if x.batch != y.batch:
                x, y = imp.as_whole(x), imp.as_whole(y)
            res = imp.add(cls(), [x, y], _hint(node))
            res.batch = x.batch
        return imp.fit(res, out_shape)
    return conv


for _k, _t in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div")):
    _CONVERTERS[_t] = _binary(_k)


def _input_name(node, c: _T, imp) -> str | None:
    """The ONNX name of input ``c`` of ``node``; None for an intermediate value made while
    converting (e.g. a partial sum), which must not be cached by identity."""
    for name in node.input:
        if imp.tensors.get(name) is c:
            return name
    return None


def _fuse_bias(imp, node, t: _T, c: _T, out_shape):
    """``Linear(x, W) + b`` with a bias vector over the last axis: one linear node with a bias
    (when the linear output has no other consumer)."""
    prod = imp._by_name.get(t.node)
    if prod is None or prod.kind != "op" or type(prod.op) is not O.Linear or \
            len(prod.inputs) != 2 or tuple(out_shape) != tuple(t.shape):
        return None
    src = [o for o, v in imp.tensors.items() if v is t or (not v.const and v.node == t.node)]
    if any(imp.consumers.get(o, 0) != 1 or o in imp.graph_outputs for o in src):
        return None
    if any(n.inputs and t.node in n.inputs for n in imp.nodes):
        return None
    cv = np.asarray(c.value)
    M = t.sample[-1] if t.sample else None
    if M is None or cv.size != M or (cv.ndim and cv.shape[-1] != M):
        return None
    x = imp.batched[prod.inputs[0]]
    src = _input_name(node, c, imp)
    b = imp.tensor_const(cv.reshape(M), src or f"{_hint(node)}_const", weight=True,
                         key=None if src is None else (src, "bias"))
    res = imp.add(O.Linear(), [x, prod.inputs[1], b], _hint(node))
    res.batch = t.batch
    return imp.fit(res, out_shape)


@converter("Sum")
def _sum(imp, node, ins, a):
    acc = ins[0]
    add = _binary("add")
    for t in ins[1:]:
        if acc.const and t.const:
            acc = _T(value=acc.value + t.value)
        else:
            acc = add(imp, node, [acc, t], a)
    return acc


# -- affine -------------------------------------------------------------------------------------
def _linear(imp, node, x: _T, W: np.ndarray, b, hint: str, key, wname=None, bname=None) -> _T:
    """``x @ W^T (+ b)`` over the last axis (``W`` of shape ``(out, in)``); parameters named
    after the ONNX tensors ``wname``/``bname`` when given."""
    w = imp.tensor_const(np.ascontiguousarray(W), wname or f"{hint}_weight", weight=True,
                         key=key + ("W",))
    ins = [x, w]
    if b is not None:
        ins.append(imp.tensor_const(np.ascontiguousarray(b), bname or f"{hint}_bias",
                                    weight=True, key=key + ("b",)))
    res = imp.add(O.Linear(), ins, hint)
    res.batch = x.batch
    return res


def _squeeze_lead(w: np.ndarray, keep: int, what: str) -> np.ndarray:
    if w.ndim > keep:
        if any(s != 1 for s in w.shape[:w.ndim - keep]):
            raise _Unsupported(f"{what} with a batched (rank {w.ndim}) constant operand")
        w = w.reshape(w.shape[w.ndim - keep:])
    return w


def _matmul_shape(sa: tuple, sb: tuple) -> tuple:
    """Shape of ``numpy.matmul`` of operands shaped ``sa`` and ``sb`` (no arrays made)."""
    a = (1,) + sa if len(sa) == 1 else sa
    b = sb + (1,) if len(sb) == 1 else sb
    if a[-1] != b[-2]:
        raise _Unsupported(f"MatMul of shapes {sa} and {sb}: inner sizes differ")
    out = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    if len(sb) == 1:
        out = out[:-1]
    if len(sa) == 1:
        out = out[:-2] + out[-1:] if len(sb) != 1 else out[:-1]
    return out


@converter("MatMul")
def _matmul(imp, node, ins, a):
    A, B = ins
    if not A.const and not B.const:
        raise _Unsupported("product of two input-dependent tensors")
    out_shape = _matmul_shape(tuple(A.shape), tuple(B.shape))
    hint = _hint(node)
    if not A.const:  # x @ W
        x, W = A, np.asarray(B.value)
        if W.ndim == 1:
            res = _linear(imp, node, x, W[None, :], None, hint, (id(B), "mm1"), node.input[1])
        else:
            W2 = _squeeze_lead(W, 2, "MatMul")
            res = _linear(imp, node, x, W2.T, None, hint, (id(B), "mmT"), node.input[1])
        return imp.fit(res, out_shape)
    # W @ x: contracts the second-to-last axis of x
    W, x = np.asarray(A.value), B
    if W.ndim == 1:
        W2 = W[None, :]
    else:
        W2 = _squeeze_lead(W, 2, "MatMul")
    xs = x.shape
    if len(xs) == 1:
        res = _linear(imp, node, x, W2, None, hint, (id(A), "mmL"), node.input[0])
        return imp.fit(res, out_shape)
    if x.batch and len(xs) == 2:
        raise _Unsupported("MatMul contracting the batch axis")
    if xs[-1] == 1:
        v = imp.reshape(x, x.sample[:-1], x.batch)
        res = _linear(imp, node, v, W2, None, hint, (id(A), "mmL"), node.input[0])
        return imp.fit(res, out_shape)
    r = len(x.sample) + 1
    perm = list(range(r - 2)) + [r - 1, r - 2]
    xt = _permute(imp, x, perm, f"{hint}_T")
    res = _linear(imp, node, xt, W2, None, hint, (id(A), "mmL"), node.input[0])
    res = _permute(imp, res, perm, f"{hint}_TT")
    return imp.fit(res, out_shape)


def _permute(imp, x: _T, runtime_perm: list, hint: str) -> _T:
    """Permute the axes of ``x``'s runtime tensor (``runtime_perm[0]`` must be 0, the batch)."""
    if runtime_perm[0] != 0:
        raise _Unsupported("a transpose that moves the batch axis")
    res = imp.add(_vocab("permute")([p - 1 for p in runtime_perm[1:]]), [x], hint)
    res.batch = x.batch
    return res


@converter("Gemm")
def _gemm(imp, node, ins, a):
    A, B = ins[0], ins[1]
    C = ins[2] if len(ins) > 2 else None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    transA, transB = int(a.get("transA", 0)), int(a.get("transB", 0))
    if not B.const or A.const:
        raise _Unsupported("Gemm whose second operand depends on the input")
    if C is not None and not C.const:
        raise _Unsupported("Gemm with an input-dependent C")
    if transA:
        raise _Unsupported("Gemm with transA=1 on an input-dependent tensor (contracts the "
                           "batch axis)")
    if len(A.shape) != 2:
        raise _Unsupported(f"Gemm on a rank-{len(A.shape)} tensor")
    Bv = np.asarray(B.value)
    W = Bv if transB else Bv.T  # (M, K)
    if alpha != 1.0:
        W = W * np.asarray(alpha, dtype=W.dtype)
    N, M = A.shape[0], W.shape[0]
    bias = None
    if C is not None and beta != 0.0:
        cv = np.asarray(C.value) * np.asarray(beta, dtype=np.asarray(C.value).dtype)
        full = np.broadcast_to(cv, (N, M)) if cv.ndim <= 2 else None
        if full is None:
            raise _Unsupported("Gemm with a C of rank > 2")
        if cv.ndim == 2 and cv.shape[0] != 1:
            bias = np.ascontiguousarray(full) if not A.batch else None
            if bias is None:
                raise BoundGraphError("internal: Gemm bias with a batch axis")
        else:
            bias = np.ascontiguousarray(np.broadcast_to(cv.reshape(-1) if cv.ndim else cv, (M,)))
    res = _linear(imp, node, A, W, bias, _hint(node), (id(B), id(C), "gemm", alpha, beta, transB),
                  node.input[1], node.input[2] if C is not None else None)
    return imp.fit(res, (N, M))


def _pairs(a, name, default, n=2):
    v = a.get(name)
    return tuple(int(x) for x in v) if v is not None else (default,) * n


def _conv_pads(a, in_hw, kernel, strides, dilations):
    """ONNX pads ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` (auto_pad resolved)."""
    n = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0] * (2 * n)))
    elif auto == "VALID":
        pads = [0] * (2 * n)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_hw[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_hw[i])
            small, big = total // 2, total - total // 2
            b_, e_ = (small, big) if auto == "SAME_UPPER" else (big, small)
            begin.append(b_)
            end.append(e_)
        pads = begin + end
    else:
        raise _Unsupported(f"auto_pad={auto}")
    return [int(p) for p in pads]


def _pad_input(imp, x: _T, pads: list, hint: str, value=0.0) -> _T:
    """Constant padding of the last ``len(pads) // 2`` axes; ``pads`` in ONNX order
    ``[begin_1, ..., begin_n, end_1, ..., end_n]`` (negative values crop)."""
    n = len(pads) // 2
    torch_pads = []
    for i in reversed(range(n)):  # torch order: last axis first, (begin, end)
        torch_pads += [pads[i], pads[n + i]]
    res = imp.add(_vocab("pad")(tuple(torch_pads), float(value)), [x], hint)
    res.batch = x.batch
    return res


@converter("Conv")
def _conv(imp, node, ins, a):
    x, Wt = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not Wt.const or (b is not None and not b.const):
        raise _Unsupported("Conv with input-dependent weights")
    x = imp.as_batch(x, "Conv")
    W = np.asarray(Wt.value)
    nsp = W.ndim - 2
    if nsp not in (1, 2) or len(x.sample) != nsp + 1:
        raise _Unsupported(f"{nsp}-d convolution")
    kernel = tuple(W.shape[2:])
    strides = _pairs(a, "strides", 1, nsp)
    dil = _pairs(a, "dilations", 1, nsp)
    group = int(a.get("group", 1))
    pads = _conv_pads(a, x.sample[1:], kernel, strides, dil)
    hint = _hint(node)
    key = (id(Wt), "conv")
    if nsp == 1:  # as a 2-d convolution over (C, 1, L)
        x = imp.reshape(x, (x.sample[0], 1, x.sample[1]), True)
        W = W[:, :, None, :]
        kernel, strides, dil = (1,) + kernel, (1,) + strides, (1,) + dil
        pads = [0, pads[0], 0, pads[1]]
    begin, end = pads[:2], pads[2:]
    if begin != end:
        x = _pad_input(imp, x, pads, f"{hint}_pad")
        padding = (0, 0)
    else:
        padding = tuple(begin)
    w = imp.tensor_const(W, node.input[1], weight=True, key=key + (nsp,))
    refs = [x, w]
    if b is not None:
        refs.append(imp.tensor_const(np.asarray(b.value), node.input[2], weight=True,
                                     key=(id(b), "convb")))
    res = imp.add(O.Conv2d(strides, padding, dil, group), refs, hint)
    res.batch = True
    if nsp == 1:
        res = imp.reshape(res, (res.sample[0], res.sample[2]), True)
    return res


@converter("BatchNormalization")
def _batchnorm(imp, node, ins, a):
    x = ins[0]
    rest = ins[1:5]
    if any(t is None or not t.const for t in rest):
        raise _Unsupported("BatchNormalization with input-dependent statistics")
    if int(a.get("training_mode", 0)) or (imp.opset < 7 and not int(a.get("is_test", 1))):
        raise _Unsupported("BatchNormalization in training mode")
    if len([o for o in node.output if o]) > 1:
        raise _Unsupported("BatchNormalization with training outputs")
    x = imp.as_batch(x, "BatchNormalization")
    hint = _hint(node)
    scale, bias, mean, var = (np.asarray(t.value) for t in rest)
    C = x.sample[0] if x.sample else 0
    if any(v.size != C for v in (scale, bias, mean, var)):
        raise _Unsupported("BatchNormalization with per-activation statistics (spatial=0)")
    refs = [x]
    for k, (v, nm, wt) in enumerate(((scale, "weight", True), (bias, "bias", True),
                                     (mean, "running_mean", False), (var, "running_var", False))):
        refs.append(imp.tensor_const(v.reshape(-1), node.input[1 + k] or f"{hint}_{nm}",
                                     weight=wt, key=(id(rest[k]), "bn", nm)))
    refs.append(imp.literal(False, f"{hint}_training"))
    res = imp.add(O.BatchNorm(float(a.get("epsilon", 1e-5))), refs, hint)
    res.batch = True
    return res


def _pool_params(imp, x, a, what):
    kernel = tuple(int(k) for k in a["kernel_shape"])
    n = len(kernel)
    if n != 2 or len(x.sample) != 3:
        raise _Unsupported(f"{what} over {n} spatial axes")
    strides = _pairs(a, "strides", 1, n)
    dil = _pairs(a, "dilations", 1, n)
    pads = _conv_pads(a, x.sample[1:], kernel, strides, dil)
    return kernel, strides, dil, pads, int(a.get("ceil_mode", 0))


@converter("AveragePool")
def _avgpool(imp, node, ins, a):
    x = imp.as_batch(ins[0], "AveragePool")
    kernel, strides, dil, pads, ceil = _pool_params(imp, x, a, "AveragePool")
    if any(d != 1 for d in dil):
        raise _Unsupported("AveragePool with dilations")
    include = bool(int(a.get("count_include_pad", 0)))
    if pads[:2] != pads[2:]:
        if not include and any(pads):
            raise _Unsupported("AveragePool with asymmetric padding and count_include_pad=0")
        x = _pad_input(imp, x, pads, f"{_hint(node)}_pad")
        pads = [0, 0, 0, 0]
    if any(2 * p > k for p, k in zip(pads[:2], kernel)):
        raise _Unsupported("AveragePool with padding larger than half the kernel")
    op = O.AvgPool2d(kernel, strides, tuple(pads[:2]), bool(ceil), include)
    res = imp.add(op, [x], _hint(node))
    res.batch = True
    return res


@converter("GlobalAveragePool")
def _gap(imp, node, ins, a):
    x = imp.as_batch(ins[0], "GlobalAveragePool")
    if len(x.sample) != 3:
        raise _Unsupported(f"GlobalAveragePool over {len(x.sample) - 1} spatial axes")
    hw = tuple(x.sample[1:])
    res = imp.add(O.AvgPool2d(hw, hw), [x], _hint(node))
    res.batch = True
    return res


@converter("MaxPool")
def _maxpool(imp, node, ins, a):
    x = imp.as_batch(ins[0], "MaxPool")
    kernel, strides, dil, pads, ceil = _pool_params(imp, x, a, "MaxPool")
    if pads[:2] != pads[2:]:
        raise _Unsupported("MaxPool with asymmetric padding")
    if any(2 * p > k for p, k in zip(pads[:2], kernel)):
        raise _Unsupported("MaxPool with padding larger than half the kernel")
    op = _vocab("maxpool2d")(kernel, strides, tuple(pads[:2]), dil, bool(ceil))
    res = imp.add(op, [x], _hint(node))
    res.batch = True
    return res


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


def _axes(ins, a, k=1):
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(ins) > k and ins[k] is not None:
        if not ins[k].const:
            raise _Unsupported("input-dependent axes")
        return [int(v) for v in np.asarray(ins[k].value).reshape(-1)]
    return None


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


def _reduce_axes(imp, node, ins, a, input_since):
    if imp.opset >= input_since:
        axes = _axes(ins, {}, 1)
    else:
        axes = [int(v) for v in a["axes"]] if "axes" in a else None
    return axes


def _reduce(kind, input_since):
    def conv(imp, node, ins, a):
        x = ins[0]
        r = len(x.shape)
        axes = _reduce_axes(imp, node, ins, a, input_since)
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):
                return x
            axes = list(range(r))
        axes = sorted({ax % r for ax in axes})
        keep = bool(int(a.get("keepdims", 1)))
        out = [1 if i in axes else s for i, s in enumerate(x.shape)] if keep else \
            [s for i, s in enumerate(x.shape) if i not in axes]
        if x.batch and 0 in axes:
            if x.shape[0] == 1 and len(axes) > 1:
                axes = [ax for ax in axes if ax != 0]  # summing over the batch axis of 1
                x = imp.as_whole(x)
            else:
                raise _Unsupported(f"{node.op_type} over the batch axis would mix examples")
        dims = [imp.axis(x, ax, node.op_type) - 1 for ax in axes]
        res = imp.add(_vocab(kind)(dims, keep), [x], _hint(node))
        res.batch = x.batch and keep
        if not keep:
            res.batch = x.batch
        return imp.fit(res, out)
    return conv


_CONVERTERS["ReduceMean"] = _reduce("mean", 18)
_CONVERTERS["ReduceSum"] = _reduce("sum", 13)


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


def _keep_form(res: _T, like: _T) -> _T:
    res.batch = like.batch
    return res


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


@converter("Shape")
def _shape(imp, node, ins, a):
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = int(a.get("start", 0)), a.get("end")
    return _T(value=shape[start:None if end is None else int(end)])


@converter("Size")
def _size(imp, node, ins, a):
    return _T(value=np.array(math.prod(ins[0].shape), dtype=np.int64))


_BATCHED_ONLY.update({"Shape": _shape, "Size": _size})


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
        example, e.g. a VNN-LIB property's box); uniform in ``[0, 1]`` otherwise.

    The returned module takes per-sample inputs ``(B, *sample_shape)`` (see the module
    docstring for the batch convention); ``bm.model.onnx_info`` (:class:`OnnxInfo`) records the
    ONNX names and shapes and runs the file with onnxruntime.
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


def check_against_onnxruntime(bm, input_box=None, n: int = 8, rtol: float = 1e-5, seed: int = 0):
    """Raise :class:`~boundgraph.errors.BoundGraphError` unless the bound graph of an imported
    model reproduces onnxruntime's outputs on ``n`` random inputs (to ``rtol`` relative to the
    largest output magnitude). Returns the largest relative difference."""
    info: OnnxInfo = bm.model.onnx_info
    shape = info.sample_shape
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((n, *shape), generator=gen, dtype=torch.float64)
    if input_box is not None:
        lo = torch.as_tensor(np.asarray(input_box[0], dtype=np.float64)).reshape(-1)
        hi = torch.as_tensor(np.asarray(input_box[1], dtype=np.float64)).reshape(-1)
        if lo.numel() != math.prod(shape) or hi.numel() != math.prod(shape):
            raise InputError(f"the input box has {lo.numel()} values but '{info.path}' takes "
                             f"{math.prod(shape)} per example (shape {list(shape)})")
        x = (lo + u.reshape(n, -1) * (hi - lo)).reshape(n, *shape)
    else:
        x = u
    x = x.to(info.dtype)
    expected = info.run(x)
    with torch.no_grad():
        got = bm(x).reshape(n, -1).to(torch.float64).numpy()
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
