"""Everyday models beyond feed-forward vision nets trace through the public API and are bounded
soundly by every method: attention (hand-written and ``nn.TransformerEncoderLayer``), LSTM and
GRU in every layer/direction/batch_first setting (the batch axis is followed wherever a
seq-first layer puts it), 1-d and transposed convolutions, upsampling, layer and
group normalisation, smooth math functions, a softmax head and elementwise maxima. Ops without
a rule of their own reach the bound graph through decompositions (``hardswish``,
``logsumexp``, ``layer_norm``); bad intervals for ``log`` and ``1/x`` give one clear error
naming the node."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import boundgraph as bg
from op_checks import check_sound, one_thread, op_kinds, traced  # noqa: F401


class SelfAttention(nn.Module):
    """``softmax(q(h) k(h)^T / sqrt(d)) v(h)``, then LayerNorm and a linear read-out."""

    def __init__(self, d=6, out=3):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, out)
        self.d = d

    def forward(self, h):
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(self.d), -1)
        return self.head(self.norm(a @ self.v(h)).mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell, **kw):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True, **kw)
        width = 4 * (2 if kw.get("bidirectional") else 1)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(out[:, -1]) + h[-1].sum(-1, keepdim=True)


class MathFunctions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h = self.a(x)
        y = (torch.exp(0.5 * h) + torch.log(torch.sigmoid(h) + 0.5) + 1 / (2 + torch.tanh(h))
             + torch.sqrt(h * h + 1) + torch.sin(h) + torch.cos(h) + torch.erf(h)
             + torch.rsqrt(h * h + 0.5) + h.pow(3) * 0.1)
        return self.out(y)


class Maximum(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.maximum(self.a(x), self.b(x)) - torch.minimum(self.a(x), x[:, :1]))


class Decomposed(nn.Module):
    """Ops without a dedicated rule: torch's decompositions of hardswish and logsumexp."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = F.hardswish(self.a(x))
        return self.out(h) + torch.logsumexp(h, -1, keepdim=True)


def _seq(*layers):
    return nn.Sequential(*layers)


CASES = {
    "self_attention": (SelfAttention, (5, 6), 0.05),
    "transformer_encoder_layer": (
        lambda: _seq(nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True),
                     nn.Flatten(), nn.Linear(32, 3)), (4, 8), 0.02),
    "lstm": (lambda: Recurrent(nn.LSTM), (3, 3), 0.1),
    "lstm_2layer_bidirectional": (lambda: Recurrent(nn.LSTM, num_layers=2, bidirectional=True),
                                  (3, 3), 0.05),
    "gru": (lambda: Recurrent(nn.GRU), (3, 3), 0.1),
    "gru_2layer_bidirectional": (lambda: Recurrent(nn.GRU, num_layers=2, bidirectional=True),
                                 (3, 3), 0.05),
    "conv1d": (lambda: _seq(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(18, 3)), (2, 6), 0.1),
    "conv_transpose2d": (lambda: _seq(nn.ConvTranspose2d(2, 2, 3, stride=2), nn.ReLU(),
                                      nn.Flatten(), nn.Linear(98, 3)), (2, 3, 3), 0.1),
    "upsample_nearest": (lambda: _seq(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3),
                                      nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)), (2, 3, 3), 0.1),
    "layernorm_mlp": (lambda: _seq(nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(),
                                   nn.Linear(8, 3)), (5,), 0.05),
    "groupnorm_cnn": (lambda: _seq(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(36, 3)), (1, 5, 5), 0.05),
    "math_functions": (MathFunctions, (4,), 0.1),
    "softmax_head": (lambda: _seq(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3),
                                  nn.Softmax(-1)), (4,), 0.1),
    "maximum": (Maximum, (4,), 0.1),
    "decomposed_ops": (Decomposed, (4,), 0.1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_everyday_model_traces_and_every_method_is_sound(name):
    factory, shape, eps = CASES[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(2, *shape)
    bm = traced(model, x)
    methods = ("ibp", "crown-ibp", "crown") if "lstm" in name or "gru" in name or \
        "transformer" in name else ("ibp", "crown-ibp", "crown", "alpha-crown")
    out = check_sound(model, x, eps, methods=methods, n=24, bm=bm)
    # at eps = 0 every method gives the forward pass (to rounding)
    with torch.no_grad():
        y = model(x)
    for m in ("ibp", "crown"):
        lb, ub = bm.compute_bounds(x, bg.LinfBall(0.0), method=m)
        torch.testing.assert_close(lb, y, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(ub, y, atol=2e-4, rtol=1e-4)
    # CROWN is never looser than IBP on these models by more than rounding
    assert (out["crown"][0] >= out["ibp"][0] - 1e-4).all()


def test_decompositions_reach_ops_that_have_rules():
    kinds = op_kinds(traced(Decomposed().eval(), torch.randn(2, 4)))
    assert "clamp" in kinds and "log_softmax" in kinds  # hardswish; logsumexp (ours)
    norm = traced(_seq(nn.Linear(5, 8), nn.LayerNorm(8)).eval(), torch.randn(2, 5))
    assert {"center", "square", "rsqrt", "mul"} <= set(op_kinds(norm))


def test_attention_of_nn_multiheadattention_keeps_the_batch_axis_first():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    model = M().eval()
    bm = traced(model, torch.randn(2, 3, 8))
    assert "matmul" in op_kinds(bm) and "softmax" in op_kinds(bm)
    assert "forward" not in vars(mha)  # the rewrite lasts only for the export


class LogOf(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn,what", [(torch.log, "log"), (torch.reciprocal, "reciprocal"),
                                     (lambda x: 1 / x, "reciprocal"), (torch.sqrt, "sqrt")])
def test_a_function_undefined_on_part_of_the_interval_names_the_node(fn, what):
    bm = bg.BoundedModule(LogOf(fn), torch.full((1, 3), 0.5))
    x = torch.full((1, 3), 0.5)
    bm.compute_bounds(x, bg.LinfBall(0.1), method="crown")  # inside the domain: fine
    for method in ("ibp", "crown"):
        with pytest.raises(bg.DomainError, match=what) as err:
            bm.compute_bounds(x, bg.LinfBall(1.0), method=method)
        assert err.value.node is not None and "node '" in str(err.value)


class SeqFirstEncoder(nn.Module):
    """Batch-first input fed to seq-first layers: the batch axis sits at dim 1 in between."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0)  # batch_first=False
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(x.transpose(0, 1)).mean(0))


class SeqFirstRecurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(3, 4, num_layers=2, bidirectional=True)  # batch_first=False
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, state = self.rnn(x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        return self.head(out[-1]) + h[-1].sum(-1, keepdim=True)


class SeqFirstWithConstants(nn.Module):
    """Seq-first constants: a positional buffer ``(L, 1, E)`` and a class token ``(1, 1, E)``
    expanded over the batch and concatenated along the sequence (the tutorial layout)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pe", torch.randn(10, 1, 8))
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.enc = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = x.transpose(0, 1)
        h = h + self.pe[:h.size(0)]
        h = torch.cat([self.cls.expand(1, h.size(1), 8), h], 0)
        return self.head(self.enc(h)[0])


@pytest.mark.parametrize("factory", [SeqFirstEncoder, SeqFirstWithConstants,
                                     lambda: SeqFirstRecurrent(nn.LSTM),
                                     lambda: SeqFirstRecurrent(nn.GRU)],
                         ids=["transformer_encoder", "constants", "lstm", "gru"])
def test_seq_first_layers_follow_the_batch_axis_and_are_sound(factory):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(2, 4, 3) if isinstance(model, SeqFirstRecurrent) else torch.randn(2, 4, 8)
    bm = traced(model, x)
    check_sound(model, x, 0.05, methods=("ibp", "crown-ibp", "crown"), n=16, bm=bm)


def test_an_output_with_the_batch_axis_elsewhere_is_refused_with_the_fix():
    class SeqOut(nn.Module):
        def forward(self, x):
            return x.transpose(0, 1) * 2

    with pytest.raises(bg.UnsupportedOpError, match=r"batch axis at dimension 1.*transpose"):
        bg.BoundedModule(SeqOut(), torch.randn(2, 3, 4))


def test_ops_that_need_the_batch_axis_first_say_so():
    class PoolSeqFirst(nn.Module):
        def forward(self, x):  # (B, C, L) -> (C, B, L): pooling with the batch as channels
            return F.max_pool2d(x.transpose(0, 1), 2).transpose(0, 1)

    with pytest.raises(bg.UnsupportedOpError, match="needs the batch axis first"):
        bg.BoundedModule(PoolSeqFirst(), torch.randn(2, 3, 4, 4))


def test_attention_weights_times_values_stay_in_the_hull_of_the_values():
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.randn(2, 5, 6)
    bm = traced(model, x)
    stochastic = [n for n in bm.graph.op_nodes() if n.op.kind == "matmul"
                  and n.op.attrs.get("stochastic_rows")]
    assert len(stochastic) == 1  # attn @ v, not q @ k^T
    _, _, inter = bm.compute_bounds(x, bg.LinfBall(1.0), method="ibp", return_intermediate=True)
    node = stochastic[0]
    v = inter[node.inputs[1]]
    out = inter[node.name]
    assert (out.lower >= v.lower.amin(-2, keepdim=True) - 1e-6).all()
    assert (out.upper <= v.upper.amax(-2, keepdim=True) + 1e-6).all()
    check_sound(model, x, 1.0, methods=("ibp", "crown"), n=16, bm=bm)


@pytest.mark.parametrize("norm", [nn.LayerNorm(8), nn.RMSNorm(8)], ids=["layer", "rms"])
def test_normalised_outputs_keep_their_known_range_under_wide_intervals(norm):
    model = _seq(nn.Linear(5, 8), norm).eval()
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight.fill_(1.0)
        if getattr(norm, "bias", None) is not None:
            norm.bias.zero_()
    x = torch.randn(2, 5)
    bm = traced(model, x)
    limit = math.sqrt(7 if isinstance(norm, nn.LayerNorm) else 8) * (1 + 1e-4)
    for method in ("ibp", "crown-ibp", "crown"):
        lb, ub = bm.compute_bounds(x, bg.LinfBall(10.0), method=method)
        assert (lb >= -limit).all() and (ub <= limit).all(), method
    check_sound(model, x, 10.0, n=16, bm=bm)
