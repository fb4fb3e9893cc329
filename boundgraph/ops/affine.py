"""Affine ops: linear, conv2d, batchnorm (inference and batch-statistics modes), avgpool.

All are :class:`~boundgraph.ops.base.Affine`: IBP in center/radius form, backward by the
transposed map. Weights are the live constants the graph passes in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Affine, Interval, _both, bias_term


class Linear(Affine):
    """``y = x W^T + b`` over the last dimension. Inputs: ``(x, weight[, bias])``."""

    kind = "linear"

    def forward(self, x, w, b=None):
        return F.linear(x, w, b)

    def apply(self, x, w, b=None, absolute=False):
        return F.linear(x, w.abs() if absolute else w)

    def offset(self, w, b=None):
        return b

    def transpose(self, A, w, b=None):
        return A.matmul(w)


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


class Conv2d(Affine):
    """2-d convolution. Inputs ``(x, weight[, bias])``; attrs stride, padding, dilation, groups.

    ``padding`` is a pair of symmetric paddings; asymmetric padding is expressed by a separate
    ``pad`` op in front. The transpose is ``conv_transpose2d`` with the output padding that
    restores the input size.
    """

    kind = "conv2d"

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        super().__init__(stride=_pair(stride), padding=_pair(padding),
                         dilation=_pair(dilation), groups=int(groups))

    def forward(self, x, w, b=None):
        a = self.attrs
        return F.conv2d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])

    def apply(self, x, w, b=None, absolute=False):
        a = self.attrs
        return F.conv2d(x, w.abs() if absolute else w, None, a["stride"], a["padding"],
                        a["dilation"], a["groups"])

    def offset(self, w, b=None):
        return None if b is None else b.view(-1, 1, 1)

    def transpose(self, A, w, b=None):
        a = self.attrs
        B, S = A.shape[:2]
        out = A.reshape(B * S, *A.shape[2:])
        in_shape = self.in_shapes[0]
        kh, kw = w.shape[2:]
        opad = []
        for d in range(2):
            full = ((out.shape[2 + d] - 1) * a["stride"][d] - 2 * a["padding"][d]
                    + a["dilation"][d] * ((kh, kw)[d] - 1) + 1)
            opad.append(in_shape[1 + d] - full)
        x = F.conv_transpose2d(out, w, None, a["stride"], a["padding"], tuple(opad),
                               a["groups"], a["dilation"])
        return x.reshape(B, S, *x.shape[1:])

    def backward_window(self, lA, uA, origin, x, w, b=None, opts=None):
        """Backward step for coefficients covering only the output window at ``origin``.

        ``conv_transpose2d`` without padding maps the window onto the input window whose first
        row/column is ``origin * stride - padding``; rows/columns falling into the zero padding
        are dropped (they multiply zeros). Returns the rule's usual triple plus the input
        window's origin.
        """
        a = self.attrs
        H, W = self.in_shapes[0][1:]
        off = b.view(-1, 1, 1) if b is not None else None
        lb = ub = 0.0
        if off is not None:
            lb = bias_term(lA, off) if lA is not None else 0.0
            ub = bias_term(uA, off) if uA is not None else 0.0
        starts = [origin[d] * a["stride"][d] - a["padding"][d] for d in range(2)]

        def t(A):
            B, S = A.shape[:2]
            r = F.conv_transpose2d(A.reshape(B * S, *A.shape[2:]), w, None, a["stride"], 0, 0,
                                   a["groups"], a["dilation"])
            lo = [max(0, -starts[d]) for d in range(2)]
            hi = [min(r.shape[2 + d], (H, W)[d] - starts[d]) for d in range(2)]
            r = r[:, :, lo[0]:hi[0], lo[1]:hi[1]]
            return r.reshape(B, S, *r.shape[1:])

        nl, nu = _both(t, lA, uA)
        new_origin = tuple(max(0, starts[d]) for d in range(2))
        return [(nl, nu)] + [None] * (1 + (b is not None)), lb, ub, new_origin


def _channel_view(t, ndim):
    """Per-channel vector as a tensor broadcasting over a per-sample shape of ``ndim`` dims."""
    return t.view(-1, *([1] * (ndim - 1)))


class BatchNorm(Affine):
    """Batch normalisation over dimension 1.

    Inputs ``(x, weight, bias, running_mean, running_var, training)`` where ``weight``/``bias``
    may be ``None`` constants and ``training`` is the live ``training`` flag of the owning module.

    - inference (``training`` false): ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with
      running statistics, an affine op;
    - batch statistics (``training`` true): the forward pass normalises with the batch's
      statistics and updates the running ones, as torch does. Bound rules use the statistics of
      the clean batch as constants (:meth:`bind`), as in improved IBP training (Shi et al. 2021).
    """

    kind = "batchnorm"
    pointwise = True

    def __init__(self, eps=1e-5, momentum=0.1):
        super().__init__(eps=float(eps), momentum=momentum)

    def _scale_shift(self, w, b, mean, var, ndim):
        scale = torch.rsqrt(var + self.attrs["eps"])
        if w is not None:
            scale = scale * w
        shift = -mean * scale
        if b is not None:
            shift = shift + b
        return _channel_view(scale, ndim), _channel_view(shift, ndim)

    def forward(self, x, w, b, mean, var, training=False):
        if training:
            momentum = self.attrs["momentum"]
            return F.batch_norm(x, mean, var, w, b, True,
                                0.1 if momentum is None else momentum, self.attrs["eps"])
        scale, shift = self._scale_shift(w, b, mean, var, x.dim() - 1)
        return torch.addcmul(shift, x, scale)

    def apply(self, x, w, b, mean, var, training=False, absolute=False):
        scale, _ = self._scale_shift(w, b, mean, var, x.dim() - 1)
        return x * (scale.abs() if absolute else scale)

    def offset(self, w, b, mean, var, training=False):
        return self._scale_shift(w, b, mean, var, len(self.out_shape))[1]

    def transpose(self, A, w, b, mean, var, training=False):
        scale, _ = self._scale_shift(w, b, mean, var, A.dim() - 2)
        return A * scale

    def wants_clean(self, x, w, b, mean, var, training=False):
        return bool(training)

    def bind(self, x, w, b, mean, var, training=False):
        dims = [0] + list(range(2, x.dim()))
        bmean = x.mean(dim=dims)
        bvar = x.var(dim=dims, unbiased=False)
        return self, {3: bmean, 4: bvar, 5: False}


class AvgPool2d(Affine):
    """Average pooling (all torch options). Linear with non-negative weights; the transpose is
    the pooling's own gradient, which depends only on shapes."""

    kind = "avgpool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        k = _pair(kernel_size)
        super().__init__(kernel_size=k, stride=_pair(stride) if stride else k,
                         padding=_pair(padding), ceil_mode=bool(ceil_mode),
                         count_include_pad=bool(count_include_pad),
                         divisor_override=divisor_override)

    def apply(self, x, absolute=False):
        a = self.attrs
        return F.avg_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                            a["count_include_pad"], a["divisor_override"])

    def transpose(self, A):
        a = self.attrs
        B, S = A.shape[:2]
        g = A.reshape(B * S, *A.shape[2:])
        ref = g.new_empty((B * S, *self.in_shapes[0]))
        x = torch.ops.aten.avg_pool2d_backward(
            g, ref, list(a["kernel_size"]), list(a["stride"]), list(a["padding"]),
            a["ceil_mode"], a["count_include_pad"], a["divisor_override"])
        return x.reshape(B, S, *x.shape[1:])

    def interval(self, x: Interval) -> Interval:
        # monotone with non-negative weights: pool the endpoints (one pass each)
        return Interval(self.apply(x.lower), self.apply(x.upper))
