"""Random sequence topologies for the soundness suite (attention, normalisation, recurrence).

:func:`random_seq_net` builds a network over token sequences ``(B, L, D)`` as a random DAG:
each step takes one or two earlier maps and appends a random block: a linear map with an
activation, LayerNorm / RMSNorm, hand-written or ``nn.MultiheadAttention`` self-attention, a
smooth function (exp, sin, erf, a power), a softmax over the tokens, a product or maximum of two
maps, a residual add, a concatenation of features followed by a linear map, a GRU or LSTM
(batch-first or seq-first) or a seq-first detour (transpose, linear, transpose back). A mean
over the tokens and a linear head close it. The same seed gives the same network.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class _Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.d = d

    def forward(self, h):
        w = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(self.d), -1)
        return w @ self.v(h)


class _MHA(nn.Module):
    def __init__(self, d, batch_first):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, 2, batch_first=batch_first)
        self.batch_first = batch_first

    def forward(self, h):
        if self.batch_first:
            return self.mha(h, h, h, need_weights=False)[0]
        s = h.transpose(0, 1)
        return self.mha(s, s, s, need_weights=False)[0].transpose(0, 1)


class _Recurrent(nn.Module):
    def __init__(self, cell, d, batch_first, bidirectional):
        super().__init__()
        self.rnn = cell(d, d // 2 if bidirectional else d, batch_first=batch_first,
                        bidirectional=bidirectional)
        self.batch_first = batch_first

    def forward(self, h):
        if self.batch_first:
            return self.rnn(h)[0]
        return self.rnn(h.transpose(0, 1))[0].transpose(0, 1)


class _Unary(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, h):
        if self.kind == "exp":
            return torch.exp(0.3 * h)
        if self.kind == "sin":
            return torch.sin(h)
        if self.kind == "erf":
            return torch.erf(h)
        if self.kind == "cube":
            return 0.1 * h ** 3
        if self.kind == "softmax_tokens":
            return torch.softmax(h, 1)
        if self.kind == "seq_first_linear":
            return h.transpose(0, 1).flip(0).transpose(0, 1)
        raise ValueError(self.kind)


class RandomSeqNet(nn.Module):
    """A network described by ``program``: steps over a list of ``(B, L, D)`` maps.

    ``("block", src, i)`` appends ``blocks[i](maps[src])``; ``("add" | "mul" | "max", i, j)``
    the sum, product or maximum of two maps; ``("cat", i, j, k)`` ``blocks[k]`` of their
    feature concatenation.
    """

    def __init__(self, program, blocks: nn.ModuleList, head: nn.Module):
        super().__init__()
        self.program, self.blocks, self.head = program, blocks, head

    def forward(self, x):
        maps = [x]
        for step in self.program:
            kind = step[0]
            if kind == "block":
                maps.append(self.blocks[step[2]](maps[step[1]]))
            elif kind == "add":
                maps.append(maps[step[1]] + maps[step[2]])
            elif kind == "mul":
                maps.append(maps[step[1]] * torch.sigmoid(maps[step[2]]))
            elif kind == "max":
                maps.append(torch.maximum(maps[step[1]], maps[step[2]]))
            else:
                maps.append(self.blocks[step[3]](torch.cat([maps[step[1]], maps[step[2]]], -1)))
        return self.head(maps[-1].mean(1))


BLOCKS = ("linear_relu", "linear_tanh", "layernorm", "rmsnorm", "attention", "mha",
          "mha_seq_first", "gru", "lstm_seq_first", "gru_bidirectional", "exp", "sin", "erf",
          "cube", "softmax_tokens", "seq_first_linear")


def _block(kind, d, g):
    if kind == "linear_relu":
        return nn.Sequential(nn.Linear(d, d), nn.ReLU())
    if kind == "linear_tanh":
        return nn.Sequential(nn.Linear(d, d), nn.Tanh())
    if kind == "layernorm":
        ln = nn.LayerNorm(d)
        with torch.no_grad():
            ln.weight.copy_(1 + 0.3 * torch.randn(d, generator=g))
            ln.bias.copy_(0.3 * torch.randn(d, generator=g))
        return ln
    if kind == "rmsnorm":
        return nn.RMSNorm(d)
    if kind == "attention":
        return _Attention(d)
    if kind in ("mha", "mha_seq_first"):
        return _MHA(d, kind == "mha")
    if kind == "gru":
        return _Recurrent(nn.GRU, d, True, False)
    if kind == "lstm_seq_first":
        return _Recurrent(nn.LSTM, d, False, False)
    if kind == "gru_bidirectional":
        return _Recurrent(nn.GRU, d, True, True)
    return _Unary(kind)


def random_seq_net(seed: int, d: int = 6, steps: int = 5, classes: int = 3) -> RandomSeqNet:
    """A random sequence network (see the module docstring); eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # module initialisers
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    program, blocks = [], nn.ModuleList()
    n_maps = 1
    for _ in range(steps):
        r = pick(10)
        if r < 6 or n_maps < 2:
            blocks.append(_block(BLOCKS[pick(len(BLOCKS))], d, g))
            program.append(("block", pick(n_maps), len(blocks) - 1))
        else:
            i, j = pick(n_maps), pick(n_maps)
            kind = ("add", "mul", "max", "cat")[r - 6]
            if kind == "cat":
                blocks.append(nn.Linear(2 * d, d))
                program.append(("cat", i, j, len(blocks) - 1))
            else:
                program.append((kind, i, j))
        n_maps += 1
    return RandomSeqNet(program, blocks, nn.Linear(d, classes)).eval()


def describe(net: RandomSeqNet) -> str:
    """One line per step, for failure messages."""
    out = []
    for step in net.program:
        if step[0] == "block":
            out.append(f"block {type(net.blocks[step[2]]).__name__}"
                       f"{getattr(net.blocks[step[2]], 'kind', '')} of map {step[1]}")
        else:
            out.append(f"{step[0]} of maps {step[1:3]}")
    return "; ".join(out)
