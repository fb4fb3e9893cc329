"""Pooling: max pooling (nonlinear) and adaptive average pooling (affine).

Average pooling with a fixed kernel (:class:`~boundgraph.ops.affine.AvgPool2d`) lives with the
affine ops and is re-exported here; global average pooling (``x.mean(dim=(2, 3))``) is the
:class:`~boundgraph.ops.shape.Mean` reduction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .affine import AvgPool2d, _pair
from .base import Affine, Interval, Op, by_side


class MaxPool2d(Op):
    """2-d max pooling over ``(C, H, W)`` samples; all torch options (stride, padding, dilation,
    ceil_mode).

    IBP: max pooling is monotone, so the bounds are the pooled lower and upper bounds.

    Linear bounds, per window with inputs ``x_i`` in ``[l_i, u_i]``:

    - lower: ``y >= x_j`` with ``j`` the input of largest lower bound;
    - upper: with ``k`` the input of largest upper bound and ``u2`` the largest upper bound of
      the others, ``y <= x_k + max(0, u2 - l_k)`` (if the max is ``x_i != x_k`` then
      ``x_i <= u2 <= x_k + (u2 - l_k)``), or the constant ``y <= u_k``, whichever has the smaller
      mean over the box (``c_k + max(0, u2 - l_k)`` against ``u_k``).

    When one input dominates its window (``l_j >= u_i`` for all other ``i``) both lines are
    ``y = x_j``: exact.
    """

    kind = "maxpool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        k = _pair(kernel_size)
        s = _pair(stride) if stride not in (None, [], ()) else k
        super().__init__(kernel_size=k, stride=s, padding=_pair(padding),
                         dilation=_pair(dilation), ceil_mode=bool(ceil_mode))
        self._position_cache: dict = {}  # (H, W, device) -> _positions

    def forward(self, x):
        a = self.attrs
        return F.max_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                            a["ceil_mode"])

    def interval(self, x: Interval) -> Interval:
        return Interval(self.forward(x.lower), self.forward(x.upper))

    def needs_bounds(self, index):
        return True

    # windows ---------------------------------------------------------------------------
    def _windows(self, t, fill):
        """``(N, C, H, W) -> (N, C, K, L)``: the ``K`` entries of each of the ``L`` windows,
        padding read as ``fill``."""
        a = self.attrs
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (a["kernel_size"], a["stride"], a["padding"],
                                                  a["dilation"])
        N, C, H, W = t.shape
        Ho, Wo = self.out_shape[-2:]
        need_h = (Ho - 1) * sh + dh * (kh - 1) + 1
        need_w = (Wo - 1) * sw + dw * (kw - 1) + 1
        t = F.pad(t, (pw, max(0, need_w - W - pw), ph, max(0, need_h - H - ph)), value=fill)
        t = t[:, :, :need_h, :need_w]
        cols = F.unfold(t, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # (N, C*K, L)
        return cols.view(N, C, kh * kw, Ho * Wo)

    def _positions(self, H, W, device):
        """Flat input index (``h * W + w``) of each window entry, ``-1`` for padding: (K, L).

        Depends on shapes only, so it is built once per size and device."""
        cache = self._position_cache
        key = (H, W, str(device))
        if key not in cache:
            pos = torch.arange(H * W, dtype=torch.float64, device=device).view(1, 1, H, W)
            cache[key] = self._windows(pos, -1.0)[0, 0].long()
        return cache[key]

    def _lines(self, x: Interval):
        """Per window: lower index ``j``; upper index ``k``, its offset ``gap``, the constant
        ``const`` and which of the two upper bounds to use. Shapes (B, C, L)."""
        l, u = x.lower, x.upper
        inf = float("inf")
        lw, uw = self._windows(l, -inf), self._windows(u, -inf)
        j = lw.argmax(2, keepdim=True)
        if uw.shape[2] >= 2:
            top = uw.topk(2, dim=2)
            k, u1, u2 = top.indices[:, :, :1], top.values[:, :, 0], top.values[:, :, 1]
        else:
            k, u1 = uw.argmax(2, keepdim=True), uw[:, :, 0]
            u2 = torch.full_like(u1, -inf)
        lk = lw.gather(2, k).squeeze(2)
        u2 = torch.where(torch.isfinite(u2), u2, lk)
        gap = (u2 - lk).clamp(min=0)
        use_line = (lk + u1) / 2 + gap < u1
        k = k.squeeze(2)
        j = torch.where(gap == 0, k, j.squeeze(2))  # a dominating input: both lines use it
        return j, k, gap, u1, use_line

    def backward(self, lA, uA, x: Interval, opts=None):
        C, H, W = self.in_shapes[0]
        B = x.lower.shape[0]
        j, k, gap, const, use_line = self._lines(x)
        pos = self._positions(H, W, x.lower.device)  # (K, L)
        L = pos.shape[1]
        col = torch.arange(L, device=pos.device)
        idx_lo = pos[j, col]  # (B, C, L) flat input positions
        idx_up = pos[k, col]
        line = use_line.to(x.lower.dtype)
        up_bias = torch.where(use_line, gap, const)

        def scatter(A, idx):  # (B', S, C, L) coefficients onto (B, S, C, H*W)
            S = A.shape[1]
            A = A.expand(B, -1, -1, -1)
            out = A.new_zeros(B, S, C, H * W)
            return out.scatter_add(3, idx.unsqueeze(1).expand(-1, S, -1, -1), A)

        def side(A, lower):
            A = A.flatten(3)  # (B', S, C, L)
            take_lo, take_up = (A.clamp(min=0), A.clamp(max=0))
            if not lower:
                take_lo, take_up = take_up, take_lo
            coef = scatter(take_lo, idx_lo) + scatter(take_up * line.unsqueeze(1), idx_up)
            bias = (take_up * up_bias.unsqueeze(1)).flatten(2).sum(-1)
            return coef.view(B, A.shape[1], C, H, W), bias

        return by_side(side, lA, uA)

    def refine_mask(self, index, bound: Interval):
        """Inputs of windows whose relaxation is not exact (no dominating input)."""
        C, H, W = self.in_shapes[0]
        j, k, gap, const, use_line = self._lines(bound)
        loose = ~(use_line & (gap == 0))  # (B, C, L)
        pos = self._positions(H, W, bound.lower.device)
        K, L = pos.shape
        B = bound.lower.shape[0]
        src = loose.unsqueeze(2).expand(B, C, K, L).to(bound.lower.dtype)
        idx = pos.clamp(min=0).view(1, 1, K, L).expand(B, C, K, L)
        valid = (pos >= 0).view(1, 1, K, L).to(src.dtype)
        out = src.new_zeros(B, C, H * W).scatter_add(2, idx.reshape(B, C, K * L),
                                                     (src * valid).reshape(B, C, K * L))
        return (out > 0).view(B, C, H, W)


def _adaptive_matrix(n: int, o: int, dtype, device):
    """``(o, n)`` averaging matrix of adaptive pooling: row ``i`` averages
    ``[floor(i n / o), ceil((i + 1) n / o))``."""
    P = torch.zeros(o, n, dtype=dtype, device=device)
    for i in range(o):
        s, e = (i * n) // o, -((-(i + 1) * n) // o)
        P[i, s:e] = 1.0 / (e - s)
    return P


class AdaptiveAvgPool2d(Affine):
    """Adaptive average pooling to ``output_size``: ``y = P_h x P_w^T`` per channel with the
    non-negative averaging matrices of torch's windows; the transpose is ``P_h^T A P_w``."""

    kind = "adaptive_avgpool2d"

    def __init__(self, output_size):
        super().__init__(output_size=_pair(output_size))

    def _size(self):
        out, H, W = self.attrs["output_size"], *self.in_shapes[0][-2:]
        return (out[0] or H), (out[1] or W)

    def apply(self, x, absolute=False):
        return F.adaptive_avg_pool2d(x, self.attrs["output_size"])

    def transpose(self, A):
        H, W = self.in_shapes[0][-2:]
        oh, ow = self._size()
        Ph = _adaptive_matrix(H, oh, A.dtype, A.device)
        Pw = _adaptive_matrix(W, ow, A.dtype, A.device)
        return torch.einsum("...ij,ih,jw->...hw", A, Ph, Pw)

    def interval(self, x: Interval) -> Interval:
        return Interval(self.apply(x.lower), self.apply(x.upper))


__all__ = ["MaxPool2d", "AdaptiveAvgPool2d", "AvgPool2d"]
