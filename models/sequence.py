"""Attention and recurrent classifiers: a small vision Transformer and an LSTM reading an
image row by row, and a small Transformer text classifier.

The first two take images ``(B, C, H, W)`` like the rest of the zoo (``in_channels``,
``in_size``, ``num_classes``; MNIST by default) and are in the zoo's registry; the text
classifier takes token ids and is not (the registry's models share the image interface). All
are built from standard layers only (``nn.Embedding``, ``nn.MultiheadAttention`` with
``batch_first=True``, ``nn.LayerNorm``, ``nn.LSTM`` with ``batch_first=True``), so any library
that takes a ``torch.nn.Module`` can use them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["vit_small", "lstm_rows", "EncoderBlock", "ViT", "RowLSTM", "TextTransformer",
           "TextBody"]


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021) at toy scale: non-overlapping patches
    embedded by a strided convolution plus a learned position embedding, ``depth`` encoder
    blocks, a final LayerNorm, mean pooling over the tokens and a linear head."""

    def __init__(self, in_channels: int = 1, in_size: int = 28, num_classes: int = 10,
                 patch: int = 7, dim: int = 32, depth: int = 2, heads: int = 4,
                 mlp_dim: int = 64) -> None:
        super().__init__()
        if in_size % patch:
            raise ValueError(f"image size {in_size} is not a multiple of the patch size {patch}")
        tokens = (in_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, tokens, dim)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


class RowLSTM(nn.Module):
    """An LSTM reading an image one row per step (``in_size`` steps of
    ``in_channels * in_size`` features), classifying from its last hidden state."""

    def __init__(self, in_channels: int = 1, in_size: int = 28, num_classes: int = 10,
                 hidden: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_channels * in_size, hidden, num_layers=num_layers,
                            batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (B, H, C * W): one row per step
        out, _ = self.lstm(rows)
        return self.head(out[:, -1])


class TextBody(nn.Module):
    """The text classifier after its embedding: learned positions, encoder blocks, a final
    LayerNorm, mean pooling over the tokens and a linear head; input ``(B, length, dim)``."""

    def __init__(self, length: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(embedded + self.pos)).mean(1))


class TextTransformer(nn.Module):
    """A small Transformer text classifier: ``body(embed(tokens))``.

    Token ids are discrete, so robustness is stated for the embedded tokens: bound ``body``
    over a ball around ``embed(tokens)`` (``bg.BoundedModule(model.body, model.embed(t))``),
    the usual relaxation of word substitutions to a neighbourhood of the embeddings."""

    def __init__(self, vocab: int = 1000, length: int = 16, dim: int = 32, depth: int = 2,
                 heads: int = 4, mlp_dim: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = TextBody(length, dim, depth, heads, mlp_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(tokens))


def vit_small(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> ViT:
    """Two encoder blocks of width 32 with 4 heads over 7x7 patches (16 tokens on MNIST)."""
    return ViT(in_channels, in_size, num_classes, patch=7 if in_size % 7 == 0 else 4)


def lstm_rows(in_channels: int = 1, in_size: int = 28, num_classes: int = 10) -> RowLSTM:
    """One LSTM layer of 64 units reading 28 rows of 28 pixels on MNIST."""
    return RowLSTM(in_channels, in_size, num_classes)
