"""More affine ops: 1-d convolution, transposed convolution (1-d and 2-d) and upsampling
(nearest, bilinear).

Like those of :mod:`boundgraph.ops.affine`, all are :class:`~boundgraph.ops.base.Affine`: they
give ``apply`` (``W x`` or ``|W| x``), ``offset`` and ``transpose`` (``A W``), from which the
base class derives IBP (center/radius) and the backward rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .affine import conv_transpose
from .base import Affine


def _tuple(v, n: int) -> tuple:
    """``v`` (a number or a sequence of ``n``) as an ``n``-tuple of ints."""
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"expected {n} values, got {tuple(v)}")
        return tuple(int(e) for e in v)
    return (int(v),) * n


def _channel_bias(b, ndim: int):
    """A per-channel bias as it broadcasts over a per-sample output of ``ndim`` dims."""
    return None if b is None else b.view(-1, *([1] * (ndim - 1)))


def _fold_rows(A):
    """``(B, S, *shape) -> (B * S, *shape)`` and the ``(B, S)`` to unfold with."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:]), A.shape[:2]


class Conv1d(Affine):
    """1-d convolution. Inputs ``(x, weight[, bias])`` with ``x`` of shape ``(B, C, L)``;
    attrs stride, padding (symmetric, a number), dilation and groups as in
    ``F.conv1d``. Forward and ``|W| x`` are ``F.conv1d`` (with ``|weight|``); the transpose is
    the 2-d transposed convolution of :mod:`boundgraph.ops.affine` (with its fast CPU paths)
    on the coefficients viewed as images of height 1, with the output padding that restores the
    input length. The bias is per channel."""

    kind = "conv1d"

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        if isinstance(padding, str):
            raise ValueError("conv1d: padding must be a number (express 'same' by a pad op)")
        super().__init__(stride=_tuple(stride, 1)[0], padding=_tuple(padding, 1)[0],
                         dilation=_tuple(dilation, 1)[0], groups=int(groups))

    def forward(self, x, w, b=None):
        a = self.attrs
        return F.conv1d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])

    def apply(self, x, w, b=None, absolute=False):
        a = self.attrs
        return F.conv1d(x, w.abs() if absolute else w, None, a["stride"], a["padding"],
                        a["dilation"], a["groups"])

    def offset(self, w, b=None):
        return _channel_bias(b, 2)

    def transpose(self, A, w, b=None):
        a = self.attrs
        out, (B, S) = _fold_rows(A)
        s, p, d = a["stride"], a["padding"], a["dilation"]
        full = (out.shape[-1] - 1) * s - 2 * p + d * (w.shape[-1] - 1) + 1
        opad = self.in_shapes[0][-1] - full
        x = conv_transpose(out.unsqueeze(2), w.unsqueeze(2), (1, s), (0, p), (0, opad),
                           a["groups"], (1, d))
        return x.reshape(B, S, x.shape[1], x.shape[-1])


class ConvTranspose(Affine):
    """Transposed convolution, 1-d or 2-d by the rank of the input. Inputs ``(x, weight[,
    bias])`` with ``weight`` of shape ``(C_in, C_out / groups, *kernel)``; attrs stride,
    padding, output_padding, groups and dilation as in ``F.conv_transpose1d/2d`` (numbers or
    tuples). Forward and ``|W| x`` are ``F.conv_transpose1d/2d`` (with ``|weight|``; each
    matrix entry is one kernel tap); the transpose is the convolution ``F.conv1d/2d`` with the
    same weight, stride, padding, dilation and groups, cropped to the input size (the
    convolution covers an extra position when ``output_padding >= stride``). The bias is per
    output channel."""

    kind = "conv_transpose"

    def __init__(self, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        super().__init__(stride=stride, padding=padding, output_padding=output_padding,
                         groups=int(groups), dilation=dilation)

    def _conf(self, n: int):
        a = self.attrs
        if n not in (1, 2):
            raise ValueError(f"conv_transpose: 1-d or 2-d inputs only, got {n}-d")
        return (_tuple(a["stride"], n), _tuple(a["padding"], n),
                _tuple(a["output_padding"], n), a["groups"], _tuple(a["dilation"], n))

    def apply(self, x, w, b=None, absolute=False):
        n = x.dim() - 2
        stride, padding, opad, groups, dilation = self._conf(n)
        fn = F.conv_transpose1d if n == 1 else F.conv_transpose2d
        return fn(x, w.abs() if absolute else w, None, stride, padding, opad, groups, dilation)

    def forward(self, x, w, b=None):
        y = self.apply(x, w)
        return y if b is None else y + _channel_bias(b, y.dim() - 1)

    def offset(self, w, b=None):
        return _channel_bias(b, w.dim() - 1)

    def transpose(self, A, w, b=None):
        out, (B, S) = _fold_rows(A)
        n = out.dim() - 2
        stride, padding, _, groups, dilation = self._conf(n)
        fn = F.conv1d if n == 1 else F.conv2d
        x = fn(out, w, None, stride, padding, dilation, groups)
        in_sp = tuple(self.in_shapes[0][1:])
        if tuple(x.shape[2:]) != in_sp:
            x = x[(...,) + tuple(slice(0, k) for k in in_sp)]
        return x.reshape(B, S, *x.shape[1:])


_NEAREST_BACKWARD = {1: torch.ops.aten.upsample_nearest1d_backward,
                     2: torch.ops.aten.upsample_nearest2d_backward}


class Upsample(Affine):
    """Upsampling to a fixed per-sample spatial ``size``: ``F.interpolate(x, size, mode,
    align_corners)`` with mode ``"nearest"`` (inputs ``(B, C, L)`` or ``(B, C, H, W)``) or
    ``"bilinear"`` (``(B, C, H, W)``; ``align_corners`` as in torch). No constants. Nearest
    copies input pixels (weights 0/1), bilinear averages with non-negative weights, so ``|W| x
    = W x``. The transpose calls torch's own backward kernel of the interpolation
    (``aten.upsample_nearest1d/2d_backward``, ``aten.upsample_bilinear2d_backward``, the
    way :class:`~boundgraph.ops.affine.AvgPool2d` uses ``avg_pool2d_backward``): the exact
    adjoint of the forward (same source indices and weights), computed directly without
    autograd, so it works the same under ``torch.no_grad()`` and is differentiable itself."""

    kind = "upsample"

    def __init__(self, size, mode="nearest", align_corners=None):
        size = _tuple(size, len(size) if isinstance(size, (list, tuple)) else 1)
        if mode == "nearest":
            if len(size) not in (1, 2):
                raise ValueError("upsample: nearest mode for 1-d or 2-d inputs only")
            if align_corners:
                raise ValueError("upsample: align_corners only applies to bilinear mode")
            align_corners = None
        elif mode == "bilinear":
            if len(size) != 2:
                raise ValueError("upsample: bilinear mode needs a 2-d size")
            align_corners = bool(align_corners)
        else:
            raise ValueError(f"upsample: mode {mode!r} not supported (nearest, bilinear)")
        super().__init__(size=size, mode=mode, align_corners=align_corners)

    def apply(self, x, absolute=False):
        a = self.attrs
        return F.interpolate(x, size=a["size"], mode=a["mode"], align_corners=a["align_corners"])

    def transpose(self, A):
        a = self.attrs
        g, (B, S) = _fold_rows(A)
        size = list(a["size"])
        ref = [g.shape[0], *self.in_shapes[0]]
        if a["mode"] == "nearest":
            x = _NEAREST_BACKWARD[len(size)](g, size, ref)
        else:
            x = torch.ops.aten.upsample_bilinear2d_backward(g, size, ref, a["align_corners"])
        return x.reshape(B, S, *x.shape[1:])


MORE_AFFINE_OPS = (Conv1d, ConvTranspose, Upsample)
