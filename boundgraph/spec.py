"""Specifications: the margin matrix C (row j = e_y - e_j, the true class's row left out)."""
from __future__ import annotations

import torch

from .errors import InputError


def margin_spec(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """Margin specification ``C`` of shape ``(B, K-1, K)``: ``(C f)_j = f_y - f_j`` for j != y.

    The lower bound of ``C f(x')`` over the input set is the margin bound ``m``; an example is
    verified when every entry of ``m`` is positive.
    """
    y = torch.as_tensor(y)
    if y.dim() != 1:
        raise InputError(f"labels must be a 1-d tensor, got shape {tuple(y.shape)}")
    if num_classes < 2:
        raise InputError("margin_spec needs at least 2 classes")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise InputError(f"labels must lie in [0, {num_classes}), got {y.min().item()}..{y.max().item()}")
    B, K = y.shape[0], num_classes
    eye = torch.eye(K, dtype=dtype, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_y - e_j
    keep = torch.arange(K, device=y.device).unsqueeze(0) != y.unsqueeze(1)  # (B, K)
    return C[keep].view(B, K - 1, K)
