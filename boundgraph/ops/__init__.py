"""The op vocabulary: one file per family, each op a class with its bound rules.

=========== ===============================================================================
family      ops
=========== ===============================================================================
affine      linear, conv2d, batchnorm, avgpool2d
activation  relu, leaky_relu, abs, clamp (hardtanh, relu6, clip), sigmoid, tanh, softplus,
            gelu (erf and tanh forms), silu, elu (and selu)
arithmetic  add, sub, mul (constant factor, or two bounded factors by McCormick), div (by a
            constant), neg, square
pooling     maxpool2d, adaptive_avgpool2d (plus avgpool2d above and the ``mean`` reduction for
            global average pooling)
shape       reshape, identity, permute, flip, slice, select, index_select, expand, pad (constant),
            cat, stack, sum, mean (chunk / split / unbind trace to slice / select)
=========== ===============================================================================

See :mod:`boundgraph.ops.base` for the rule interface. To support an op of your own, subclass
:class:`Op` (or :class:`Elementwise` / :class:`Affine`, which derive most rules) and register a
converter for the aten op with :func:`boundgraph.register_op` (documented in
:func:`boundgraph.frontends.torch_trace.register_op`), e.g. for ``torch.exp``::

    class Exp(bg.ops.Elementwise):      # monotone: the default interval is (f(l), f(u))
        kind = "exp"
        def forward(self, x):
            return torch.exp(x)
        def relax(self, l, u, opts=None):  # convex: tangent at the midpoint below, chord above
            ...
            return aL, bL, aU, bU

    bg.register_op("aten.exp.default", lambda args, node: (Exp(), [args["self"]]))
"""
from .activations import (ELU, GELU, Abs, Clamp, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus,
                          Tanh)
from .affine import AvgPool2d, BatchNorm, Conv2d, Linear
from .arithmetic import Add, Div, Mul, Neg, Square, Sub
from .base import Affine, Elementwise, Interval, Op
from .pooling import AdaptiveAvgPool2d, MaxPool2d
from .shape import (Cat, Expand, Flip, Identity, IndexSelect, Mean, Pad, Permute, Reshape,
                    Select, Slice, Stack, Sum)

OPS: dict[str, type] = {cls.kind: cls for cls in (
    Linear, Conv2d, BatchNorm, AvgPool2d,
    ReLU, LeakyReLU, Abs, Clamp, Sigmoid, Tanh, Softplus, GELU, SiLU, ELU,
    Add, Sub, Mul, Div, Neg, Square,
    MaxPool2d, AdaptiveAvgPool2d,
    Reshape, Identity, Permute, Flip, Slice, Select, IndexSelect, Expand, Pad, Cat, Stack, Sum,
    Mean)}

__all__ = ["Op", "Affine", "Elementwise", "Interval", "OPS", *(c.__name__ for c in OPS.values())]
