"""The op vocabulary: one file per family, each op a class with its bound rules.

=========== ============================================================
family      ops
=========== ============================================================
affine      linear, conv2d, batchnorm, avgpool2d
activation  relu
arithmetic  add, sub, mul, div, neg
shape       reshape, identity
=========== ============================================================

See :mod:`boundgraph.ops.base` for the rule interface. To support an op of your own, subclass
:class:`Op` (or :class:`Elementwise` / :class:`Affine`, which derive most rules) and register a
converter with :func:`boundgraph.register_op`.
"""
from .activations import ReLU
from .affine import AvgPool2d, BatchNorm, Conv2d, Linear
from .arithmetic import Add, Div, Mul, Neg, Sub
from .base import Affine, Elementwise, Interval, Op
from .shape import Identity, Reshape

OPS: dict[str, type] = {cls.kind: cls for cls in (
    Linear, Conv2d, BatchNorm, AvgPool2d, ReLU, Add, Sub, Mul, Div, Neg, Reshape, Identity)}

__all__ = ["Op", "Affine", "Elementwise", "Interval", "OPS", *(c.__name__ for c in OPS.values())]
