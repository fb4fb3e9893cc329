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


def conv_transpose(x, w, stride, padding, output_padding, groups, dilation):
    """``conv_transpose2d(x, w)`` (no bias) for the coefficient batches of a backward pass.

    On CPU torch's default kernels for a strided transposed convolution and its gradient are
    several times slower than the plain convolution kernels (oneDNN) for the large ``B * S``
    row batches that CROWN produces. This computes the same values, and the same gradients, from
    faster pieces (:class:`_ConvTranspose`); elsewhere it is ``F.conv_transpose2d``.
    """
    stride, padding, output_padding, dilation = (_pair(v) for v in
                                                 (stride, padding, output_padding, dilation))
    if x.device.type != "cpu" or x.shape[0] < _FAST_MIN_ROWS or \
            (stride == (1, 1) and not _few_inputs(w, groups)):
        return F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation)
    return _ConvTranspose.apply(x, w, stride, padding, output_padding, groups, dilation)


#: smallest row batch for which :func:`conv_transpose` uses :class:`_ConvTranspose`.
_FAST_MIN_ROWS = 64


def _few_inputs(w, groups) -> bool:
    """Whether the convolution being transposed has so few input values per output (a first
    layer on gray or RGB images) that one matrix product and ``fold`` beat the kernels."""
    return groups == 1 and w.shape[1] * w.shape[2] * w.shape[3] <= 32


class _ConvTranspose(torch.autograd.Function):
    """Transposed convolution with its gradients written as plain convolutions.

    Forward: when the convolution being transposed has very few input values per output
    (``C_in * kh * kw <= 32``, groups 1; a first layer on images), a matrix product and
    ``fold`` (:func:`_fold_conv_transpose`); when it has few input channels (``C_in * s^2 <=
    C_out``, stride ``s``, groups and dilation 1), the sub-pixel form: one
    convolution with ``s^2`` phase kernels of size ``ceil(K / s)``, then ``pixel_shuffle`` and
    a crop; otherwise ``conv_transpose2d`` in
    channels-last layout (oneDNN). Backward: the gradient for ``x`` is the convolution itself
    (``conv2d(g, w)``), the one for ``w`` is ``conv2d_weight`` with ``g`` as the input.
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups, dilation)
        if _few_inputs(w, groups):
            return _fold_conv_transpose(x, w, stride, padding, output_padding, dilation)
        if groups == 1 and dilation == (1, 1) and stride[0] == stride[1] and \
                w.shape[1] * stride[0] ** 2 <= w.shape[0]:
            return _subpixel_conv_transpose(x, w, stride[0], padding, output_padding)
        y = F.conv_transpose2d(x.contiguous(memory_format=torch.channels_last), w, None,
                               stride, padding, output_padding, groups, dilation)
        return y.contiguous()  # elementwise rules run several times slower on mixed layouts

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, padding, groups, dilation = ctx.conf
        gx = gw = None
        g = g.contiguous()
        if ctx.needs_input_grad[0]:
            gx = F.conv2d(g, w, None, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(g, w.shape, x, stride, padding, dilation, groups)
        return gx, gw, None, None, None, None, None


def _fold_conv_transpose(x, w, stride, padding, output_padding, dilation):
    """``conv_transpose2d`` (groups 1) as the product of each input pixel with the kernel
    (one matrix product: ``(N, H*W, C_out) @ (C_out, C_in*kh*kw)``) summed into place by
    ``fold``: fast when the kernel has few input channels, where the convolution kernels
    vectorise poorly."""
    co, ci, kh, kw = w.shape
    N, _, H, W = x.shape
    cols = torch.matmul(x.flatten(2).transpose(1, 2), w.reshape(co, ci * kh * kw))
    size = [(n - 1) * s - 2 * p + d * (k - 1) + 1 + o for n, s, p, d, k, o in
            zip((H, W), stride, padding, dilation, (kh, kw), output_padding)]
    return F.fold(cols.transpose(1, 2), size, (kh, kw), dilation=dilation, padding=padding,
                  stride=stride)


def _subpixel_conv_transpose(x, w, s, padding, output_padding):
    """``conv_transpose2d`` (stride ``s`` in both dimensions, groups and dilation 1) as one
    convolution over the stride's phases followed by ``pixel_shuffle``.

    Output row ``Y`` receives ``x[q - m] * w[s m + r]`` with ``Y + p = s q + r``: for each phase
    ``r`` a plain (flipped) convolution with the kernel taps ``s m + r``.
    """
    ci, co, kh, kw = w.shape
    H, W = x.shape[2:]
    mh, mw = -(-kh // s), -(-kw // s)
    wp = F.pad(w, (0, mw * s - kw, 0, mh * s - kh))                  # taps padded to s * m
    wp = wp.reshape(ci, co, mh, s, mw, s).permute(1, 3, 5, 0, 2, 4)  # (co, rh, rw, ci, mh, mw)
    wp = wp.flip(-1, -2).reshape(co * s * s, ci, mh, mw)
    t = F.pixel_shuffle(F.conv2d(x, wp, None, 1, (mh - 1, mw - 1)), s)
    (ph, pw), (oh, ow) = padding, output_padding
    ho, wo = (H - 1) * s - 2 * ph + kh + oh, (W - 1) * s - 2 * pw + kw + ow
    extra_h, extra_w = ph + ho - t.shape[2], pw + wo - t.shape[3]
    if extra_h > 0 or extra_w > 0:
        t = F.pad(t, (0, max(0, extra_w), 0, max(0, extra_h)))
    return t[:, :, ph:ph + ho, pw:pw + wo].contiguous()


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
        x = conv_transpose(out, w, a["stride"], a["padding"], tuple(opad), a["groups"],
                           a["dilation"])
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
            ub = lb if uA is lA else (bias_term(uA, off) if uA is not None else 0.0)
        starts = [origin[d] * a["stride"][d] - a["padding"][d] for d in range(2)]

        def t(A):
            B, S = A.shape[:2]
            r = conv_transpose(A.reshape(B * S, *A.shape[2:]), w, a["stride"], (0, 0), (0, 0),
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

    def const_view(self, index, value):
        # weight, bias and the statistics are per-channel vectors (the flag is a number)
        if torch.is_tensor(value) and 1 <= index <= 4 and self.out_shape is not None:
            return _channel_view(value, len(self.out_shape))
        return value

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
