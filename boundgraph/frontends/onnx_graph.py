"""Shared pieces of the ONNX importer: the import-time tensor :class:`_T`, the batch convention,
the ``_Unsupported`` signal and small readers of the ONNX graph (node order, attributes,
``Constant`` values).

The importer core (:mod:`boundgraph.frontends.onnx_import`) and its converters
(:mod:`boundgraph.frontends.onnx_ops`) both import from here, so the importer can import the
converters without an import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: ONNX element types the graph can compute in.
_FLOAT_TYPES = {1: torch.float32, 11: torch.float64}


class _Unsupported(Exception):
    """Raised by a converter for a node (or a use of an op) it cannot turn into bound rules."""


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


# ---------------------------------------------------------------------------------- graph
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
