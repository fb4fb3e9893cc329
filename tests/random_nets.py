"""Random residual topologies for the soundness suite.

:func:`random_residual_net` builds a convolutional network as a random DAG: blocks whose
branches have different depths (zero layers: the identity of a residual connection), each
branch a random mix of convolutions, BatchNorm (eval mode, random statistics and affine
parameters), size-keeping pooling and activations, joined by an addition or a concatenation;
downsampling between blocks; a small linear head. The same seed gives the same network.
"""
from __future__ import annotations

import torch
import torch.nn as nn

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "hardtanh": nn.Hardtanh,
}


class RandomResidualNet(nn.Module):
    """A network described by ``program``: a list of steps over a list of feature maps.

    Steps: ``("branch", src, layers)`` appends ``layers(maps[src])``; ``("add", i, j)`` and
    ``("cat", i, j)`` append the join of two maps; ``("down", src, layers)`` appends a
    downsampled map. The last map goes through the head.
    """

    def __init__(self, program, layers: nn.ModuleList, head: nn.Module):
        super().__init__()
        self.program, self.layers, self.head = program, layers, head

    def forward(self, x):
        maps = [x]
        for step in self.program:
            kind = step[0]
            if kind in ("branch", "down"):
                h = maps[step[1]]
                for i in step[2]:
                    h = self.layers[i](h)
                maps.append(h)
            elif kind == "add":
                maps.append(maps[step[1]] + maps[step[2]])
            else:
                maps.append(torch.cat([maps[step[1]], maps[step[2]]], dim=1))
        return self.head(maps[-1].flatten(1))


def _randomize(module: nn.Module, g: torch.Generator):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * \
                (1.0 / m.weight[0].numel()) ** 0.5 * 1.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data = torch.randn(c, generator=g)
            m.bias.data = torch.randn(c, generator=g) * 0.2


def random_residual_net(seed: int, in_channels: int = 2, size: int = 8, blocks: int = 3,
                        num_classes: int = 3):
    """A random residual/concatenation network for inputs ``(B, in_channels, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda n: int(torch.randint(0, n, (1,), generator=g))  # noqa: E731
    layers = nn.ModuleList()
    program = []
    channels = [in_channels]  # per map
    sizes = [size]

    def add_layer(m):
        layers.append(m)
        return len(layers) - 1

    def branch(src, depth, out_ch):
        """``depth`` layers from map ``src``, ending with ``out_ch`` channels (a convolution is
        added where the channels must change)."""
        ids, ch = [], channels[src]
        for d in range(depth):
            kind = ["conv", "conv", "bn", "act", "act", "pool"][r(6)]
            if kind == "conv" or (d == depth - 1 and ch != out_ch):
                nxt = out_ch if d == depth - 1 else 2 + r(4)
                k = [1, 3, 3][r(3)]
                ids.append(add_layer(nn.Conv2d(ch, nxt, k, padding=k // 2)))
                ch = nxt
            elif kind == "bn":
                ids.append(add_layer(nn.BatchNorm2d(ch)))
            elif kind == "act":
                ids.append(add_layer(list(ACTIVATIONS.values())[r(len(ACTIVATIONS))]()))
            else:
                pool = [nn.AvgPool2d(3, 1, 1), nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(2, 1)][r(3)]
                if isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2:
                    pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), pool)  # size kept
                ids.append(add_layer(pool))
        if ch != out_ch:  # depth 0 with a channel change is not generated (see below)
            raise AssertionError("branch ends with the wrong channel count")
        return ids

    # stem: one convolution, so that every later map has a few channels
    c0 = 2 + r(3)
    program.append(("branch", 0, [add_layer(nn.Conv2d(in_channels, c0, 3, padding=1)),
                                  add_layer(nn.ReLU())]))
    channels.append(c0)
    sizes.append(size)
    for _ in range(blocks):
        src = len(channels) - 1 - r(min(2, len(channels) - 1))  # the last map or the one before
        if sizes[src] != sizes[-1]:
            src = len(channels) - 1
        join = ["add", "cat"][r(2)]
        da, db = r(4), 1 + r(3)  # different depths; the first may be the identity
        out_a = channels[src] if da == 0 else 2 + r(4)
        out_b = out_a if join == "add" else 2 + r(4)
        for depth, out in ((da, out_a), (db, out_b)):
            program.append(("branch", src, branch(src, depth, out)))
            channels.append(out)
            sizes.append(sizes[src])
        i, j = len(channels) - 2, len(channels) - 1
        program.append((join, i, j))
        channels.append(out_a + out_b if join == "cat" else out_a)
        sizes.append(sizes[src])
        if r(3) == 0 and sizes[-1] >= 4:  # downsample between blocks
            c = channels[-1]
            down = [nn.AvgPool2d(2), nn.MaxPool2d(2), nn.Conv2d(c, c, 3, stride=2, padding=1)][r(3)]
            ids = [add_layer(down)] + ([add_layer(nn.ReLU())] if r(2) else [])
            program.append(("down", len(channels) - 1, ids))
            channels.append(c)
            sizes.append(sizes[-1] // 2)
    if r(2):  # a final activation before the head
        program.append(("branch", len(channels) - 1, [add_layer(nn.ReLU())]))
        channels.append(channels[-1])
        sizes.append(sizes[-1])
    feat = channels[-1] * sizes[-1] ** 2
    hidden = 6 + r(6)
    head = nn.Sequential(nn.Linear(feat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    net = RandomResidualNet(program, layers, head)
    _randomize(net, g)
    return net.eval()


def describe(net: RandomResidualNet) -> str:
    """One line per step (for failure messages)."""
    out = []
    for step in net.program:
        if step[0] in ("branch", "down"):
            chain = " -> ".join(type(net.layers[i]).__name__ for i in step[2])
            out.append(f"{step[0]} from map {step[1]}: {chain or 'identity'}")
        else:
            out.append(f"{step[0]} maps {step[1]} and {step[2]}")
    return "; ".join(out)


__all__ = ["random_residual_net", "describe"]
