"""The op vocabulary: one file per family, each op a class with its bound rules.

=========== ===============================================================================
family      ops
=========== ===============================================================================
affine      linear, conv2d, batchnorm, avgpool2d (affine.py); conv1d, conv_transpose (1-d
            and 2-d), upsample (nearest, bilinear) (affine_more.py)
activation  relu, leaky_relu, abs, clamp (hardtanh, relu6, clip) (activations.py); sigmoid,
            tanh, softplus, gelu (erf and tanh forms), silu, elu (and selu)
            (smooth_activations.py)
elementwise exp, log, reciprocal, sqrt, rsqrt, pow (any constant exponent), sin, cos, erf
arithmetic  add, sub, mul (constant factor, or two bounded factors by McCormick), div (by a
            constant; by a bounded tensor it traces to a product with its reciprocal), neg,
            square
bilinear    matmul / bmm (a constant operand: exact; two bounded: McCormick planes summed),
            maximum, minimum, amax, amin (and the values of max/min over a dim)
normalize   center (x - mean(x), one affine op: what layer/group/instance/RMS norm and the
            variance decompose into), softmax, log_softmax
pooling     maxpool2d, adaptive_avgpool2d (plus avgpool2d above and the ``mean`` reduction for
            global average pooling)
shape       reshape, identity, permute, flip, slice, select, index_select, expand, pad (constant),
            cat, stack, sum, mean (chunk / split / unbind trace to slice / select)
=========== ===============================================================================

See :mod:`boundgraph.ops.base` for the rule interface. To support an op of your own, subclass
:class:`Op` (or :class:`Elementwise` / :class:`Affine`, which derive most rules) and register a
converter for the aten op with :func:`boundgraph.register_op` (documented in
:func:`boundgraph.frontends.torch_trace.register_op`), e.g. for ``torch.expm1``::

    class Expm1(bg.ops.Elementwise):      # monotone: the default interval is (f(l), f(u))
        kind = "expm1"
        def forward(self, x):
            return torch.expm1(x)
        def relax(self, l, u, opts=None):  # convex: tangent at the midpoint below, chord above
            ...
            return aL, bL, aU, bU

    bg.register_op("aten.expm1.default", lambda args, node: (Expm1(), [args["self"]]))
"""
from .activations import Abs, Clamp, LeakyReLU, ReLU
from .affine import AvgPool2d, BatchNorm, Conv2d, Linear
from .affine_more import Conv1d, ConvTranspose, Upsample
from .arithmetic import Add, Div, Mul, Neg, Square, Sub
from .base import Affine, Elementwise, Interval, Op
from .bilinear import Amax, Amin, MatMul, Maximum, Minimum
from .elementwise import Cos, Erf, Exp, Log, Pow, Reciprocal, Rsqrt, Sin, Sqrt
from .normalization import Center, LogSoftmax, Softmax
from .pooling import AdaptiveAvgPool2d, MaxPool2d
from .shape import (Cat, Expand, Flip, Identity, IndexSelect, Mean, Pad, Permute, Reshape,
                    Select, Slice, Stack, Sum)
from .smooth_activations import ELU, GELU, Sigmoid, SiLU, Softplus, Tanh

OPS: dict[str, type] = {cls.kind: cls for cls in (
    Linear, Conv2d, BatchNorm, AvgPool2d, Conv1d, ConvTranspose, Upsample, Center,
    ReLU, LeakyReLU, Abs, Clamp, Sigmoid, Tanh, Softplus, GELU, SiLU, ELU,
    Exp, Log, Reciprocal, Sqrt, Rsqrt, Pow, Sin, Cos, Erf,
    Add, Sub, Mul, Div, Neg, Square, MatMul, Maximum, Minimum,
    Softmax, LogSoftmax,
    MaxPool2d, AdaptiveAvgPool2d, Amax, Amin,
    Reshape, Identity, Permute, Flip, Slice, Select, IndexSelect, Expand, Pad, Cat, Stack, Sum,
    Mean)}

__all__ = ["Op", "Affine", "Elementwise", "Interval", "OPS", *(c.__name__ for c in OPS.values())]
