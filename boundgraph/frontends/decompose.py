"""Decompose before refusing: composite aten ops become ops that have bound rules.

The tracer keeps torch's high-level ops (``aten.linear``, ``aten.conv2d``, ...) because their
dedicated rules are exact and fast. For a node whose op has no rule, :func:`decompose` asks for
a decomposition of that op alone (``ExportedProgram.run_decompositions`` with a one-entry
table per such op) and repeats until every piece has a rule or no decomposition is left; only
then is a node reported unsupported. So rules for the primitives (exp, rsqrt, products of two
bounded tensors, softmax, ...) buy the composites (``layer_norm``, ``group_norm``, ``lstm``,
``gru``, ``scaled_dot_product_attention``, ``silu``, ...).

Where to find a decomposition, in order:

1. :data:`OVERRIDES`, ours, for ops whose torch decomposition a bound rule cannot use as it
   is or would bound loosely:

   - normalisations (``layer_norm``, ``group_norm``, ``instance_norm``, ``rms_norm``) and the
     variance family (``var``, ``var_mean``, ``std``) centre with one affine op,
     ``x - x.mean(dims)`` (the tracer maps that pattern onto :class:`~boundgraph.ops.Center`,
     whose interval is exact; ``x`` and its mean as two intervals would lose their correlation);
   - ``scaled_dot_product_attention``: a plain ``softmax(q k^T * scale) v`` (torch's own adds
     a guard against fully masked rows that no bound rule can follow);
   - ``lstm`` and ``gru``: unrolled batch-first (torch's own decomposition puts the time axis
     in front and slices it, which would need a slice per step along a dim before the
     batch axis; ours reads ``x[:, t]``).

2. torch's core ATen decomposition table, ``torch.export.default_decompositions()`` (its
   entries end in core ATen ops; torch's wider ``torch._decomp`` table also rewrites core ops
   into ``prims``, which only renames the node an error reports).

An override may decline a node (``applies`` returns a reason), leaving it reported as
unsupported with that reason.

:func:`batch_first_attention` rewrites each ``nn.MultiheadAttention`` of a model, for the
time of the export, to an equivalent batch-first computation with the same parameters: torch's
implementation merges the batch axis with the heads (``(L, B * H, d)``), which the bound graph
cannot follow (it follows the batch axis anywhere as a dim of its own, not merged).
"""
from __future__ import annotations

import contextlib
import functools
import math
import types
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx

aten = torch.ops.aten

#: ``op name -> (decomposition, applies)``; ``applies(node, depends)`` says whether the
#: decomposition is for that node (``depends(node)``: whether a node depends on the model's
#: input): ``True``, ``False`` (the op's own rule serves it) or the reason it cannot be used.
OVERRIDES: dict[str, tuple[Callable, Callable | None]] = {}


def override(*names, applies=None):
    """Register our own decomposition for the aten ops ``names`` (decorator)."""
    def deco(fn):
        for n in names:
            OVERRIDES[n] = (fn, applies)
        return fn
    return deco


# ------------------------------------------------------------------------- normalisation
def _centered(x, dims):
    return x - x.mean(dims, keepdim=True)


def _var(x, dims, correction, keepdim):
    n = _count(x, dims)
    xc = _centered(x, dims)
    v = (xc * xc).mean(dims, keepdim=keepdim)
    if correction:
        v = v * (n / (n - correction)) if n > correction else v * math.inf
    return v


def _dims(x, dim):
    if dim is None:
        return list(range(x.dim()))
    return [d % x.dim() for d in (dim if isinstance(dim, (list, tuple)) else [dim])]


@override("aten.var.correction")
def _var_correction(x, dim=None, *, correction=None, keepdim=False):
    return _var(x, _dims(x, dim), 1 if correction is None else correction, keepdim)


@override("aten.var.dim")
def _var_dim(x, dim=None, unbiased=True, keepdim=False):
    return _var(x, _dims(x, dim), int(unbiased), keepdim)


@override("aten.var_mean.correction")
def _var_mean(x, dim=None, *, correction=None, keepdim=False):
    dims = _dims(x, dim)
    return (_var(x, dims, 1 if correction is None else correction, keepdim),
            x.mean(dims, keepdim=keepdim))


@override("aten.std.correction")
def _std_correction(x, dim=None, *, correction=None, keepdim=False):
    return torch.sqrt(_var(x, _dims(x, dim), 1 if correction is None else correction, keepdim))


@override("aten.std.dim")
def _std_dim(x, dim=None, unbiased=True, keepdim=False):
    return torch.sqrt(_var(x, _dims(x, dim), int(unbiased), keepdim))


def _count(x, dims):
    n = 1
    for d in dims:
        n *= x.shape[d]
    return n


def _known_range(y, c):
    """``y`` clamped to ``[-c, c]``, a range it never leaves: the same values, but interval
    bounds learn the range (a clamp of an interval inside it is exact in every method)."""
    return torch.clamp(y, -c, c)


def _normalize(x, dims, eps):
    """``(x - mean) / sqrt(var + eps)`` over ``dims``. Each output lies in ``[-sqrt(n - 1),
    sqrt(n - 1)]`` (``n`` elements: a centred vector has ``xc_i^2 <= (n - 1)/n sum_j xc_j^2``),
    which the decomposition states with a clamp: without it, a variance interval reaching 0
    sends IBP's bounds to ``1/sqrt(eps)`` times the input width at every normalisation."""
    xc = _centered(x, dims)
    y = xc * torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
    return _known_range(y, math.sqrt(max(_count(x, dims) - 1, 0)) * (1 + 1e-5) + 1e-6)


@override("aten.layer_norm.default")
def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    y = _normalize(x, dims, eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _affine_channels(y, weight, bias):
    shape = (1, -1) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


@override("aten.group_norm.default")
def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    c = x.shape[1]
    g = x.unflatten(1, (num_groups, c // num_groups))
    y = _normalize(g, list(range(2, g.dim())), eps).flatten(1, 2)
    return _affine_channels(y, weight, bias)


def _instance_applies(node, depends):
    a = node.args
    use_input_stats = a[5] if len(a) > 5 else node.kwargs.get("use_input_stats", True)
    if not use_input_stats:
        return "instance_norm with running statistics"
    return True


@override("aten.instance_norm.default", applies=_instance_applies)
def _instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5, cudnn_enabled=True):
    y = _normalize(x, list(range(2, x.dim())), eps)
    return _affine_channels(y, weight, bias)


@override("aten.rms_norm.default")
def _rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    y = x * torch.rsqrt((x * x).mean(dims, keepdim=True) + eps)
    y = _known_range(y, math.sqrt(_count(x, dims)) * (1 + 1e-5) + 1e-6)  # x_i^2 <= sum x^2
    return y if weight is None else y * weight


@override("aten.logsumexp.default")
def _logsumexp(x, dim, keepdim=False):
    """``x_0 - log_softmax(x)_0`` along the (flattened) reduced dims: exact, and bounded by
    the log-softmax rule (torch's decomposition guards against infinite maxima with a
    ``where`` no bound rule can follow)."""
    dims = _dims(x, dim)
    rest = [d for d in range(x.dim()) if d not in dims]
    y = x.permute(rest + dims).flatten(len(rest)) if len(dims) != 1 or dims[0] != x.dim() - 1 \
        else x
    out = y[..., 0] - torch.log_softmax(y, -1)[..., 0]
    if keepdim:
        for d in sorted(dims):
            out = out.unsqueeze(d)
    return out


# ------------------------------------------------------------------------------ attention
def _sdpa_applies(node, depends):
    names = ("attn_mask", "dropout_p", "is_causal")
    args = dict(zip(names, node.args[3:]))
    args.update({k: v for k, v in node.kwargs.items() if k in names})
    if args.get("attn_mask") is not None or args.get("is_causal"):
        return "attention masks (attn_mask, is_causal) have no rule yet"
    if node.kwargs.get("enable_gqa"):
        return "grouped-query attention (enable_gqa)"
    return True


@override("aten.scaled_dot_product_attention.default", applies=_sdpa_applies)
def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
          enable_gqa=False):
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * s, -1) @ v


def _mha_forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                 attn_mask=None, average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention.forward`` written batch-first (the batch axis is never merged
    with the heads), with the module's own parameters; seq-first inputs are transposed to
    batch-first and back."""
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise NotImplementedError("boundgraph: attention masks have no bound rule yet")
    if not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    E, H = self.embed_dim, self.num_heads
    hd = E // H
    if self._qkv_same_embed_dim:
        wq, wk, wv = self.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
    bq = bk = bv = None
    if self.in_proj_bias is not None:
        bq, bk, bv = self.in_proj_bias.chunk(3)
    q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    if self.bias_k is not None:
        shape = (k.shape[0], 1, E)
        k = torch.cat([k, self.bias_k.reshape(1, 1, E).expand(shape)], 1)
        v = torch.cat([v, self.bias_v.reshape(1, 1, E).expand(shape)], 1)
    if self.add_zero_attn:
        k = torch.cat([k, k.new_zeros(k.shape[0], 1, E)], 1)
        v = torch.cat([v, v.new_zeros(v.shape[0], 1, E)], 1)
    heads = lambda t: t.unflatten(-1, (H, hd)).transpose(1, 2)  # noqa: E731 (B, H, L, hd)
    q, k, v = heads(q), heads(k), heads(v)
    attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1 / math.sqrt(hd)), -1)
    out = torch.matmul(attn, v).transpose(1, 2).flatten(2)
    out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
    if not self.batch_first:
        out = out.transpose(0, 1)
    if not need_weights:
        return out, None
    return out, (attn.mean(1) if average_attn_weights else attn)


@contextlib.contextmanager
def batch_first_attention(model: torch.nn.Module):
    """While active, every ``nn.MultiheadAttention`` of ``model`` computes its forward
    batch-first (same parameters, same results); see the module docstring."""
    patched = []
    for m in model.modules():
        if isinstance(m, torch.nn.MultiheadAttention):
            m.forward = types.MethodType(_mha_forward, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


# ------------------------------------------------------------------------------ recurrent
def _layers(params, has_biases, num_layers, bidirectional):
    per = 4 if has_biases else 2
    dirs = 2 if bidirectional else 1
    for layer in range(num_layers):
        for d in range(dirs):
            p = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            yield layer * dirs + d, d, p[0], p[1], (p[2] if has_biases else None), \
                (p[3] if has_biases else None)


def _unroll(x, params, cells, has_biases, num_layers, bidirectional, batch_first, step):
    """Run a multi-layer (bidirectional) recurrence batch-first (a seq-first input is
    transposed, and its output back); ``step(x_t, state, w_hh, b_hh) -> (h, state)``;
    ``cells`` gives the initial state per layer and direction."""
    if not batch_first:
        out, finals = _unroll(x.transpose(0, 1), params, cells, has_biases, num_layers,
                              bidirectional, True, step)
        return out.transpose(0, 1), finals
    dirs = 2 if bidirectional else 1
    T = x.shape[1]
    finals = []
    outs = []
    for idx, d, w_ih, w_hh, b_ih, b_hh in _layers(params, has_biases, num_layers, bidirectional):
        xs = F.linear(x, w_ih, b_ih)
        state = cells(idx)
        seq = [None] * T
        for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
            h, state = step(xs[:, t], state, w_hh, b_hh)
            seq[t] = h
        outs.append(torch.stack(seq, 1))
        finals.append(state)
        if d == dirs - 1:
            x = outs[0] if dirs == 1 else torch.cat(outs, -1)
            outs = []
    return x, finals


@override("aten.lstm.input")
def _lstm(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    h0, c0 = hx

    def step(xt, state, w_hh, b_hh):
        h, c = state
        i, f, g, o = (xt + F.linear(h, w_hh, b_hh)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    out, finals = _unroll(x, params, lambda i: (h0[i], c0[i]), has_biases, num_layers,
                          bidirectional, batch_first, step)
    return (out, torch.stack([s[0] for s in finals]), torch.stack([s[1] for s in finals]))


@override("aten.gru.input")
def _gru(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    def step(xt, h, w_hh, b_hh):
        xr, xz, xn = xt.chunk(3, -1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, -1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, h

    out, finals = _unroll(x, params, lambda i: hx[i], has_biases, num_layers, bidirectional,
                          batch_first, step)
    return out, torch.stack(finals)


# ---------------------------------------------------------------------------- arithmetic
def _bounded_divisor(node, depends):
    other = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    return isinstance(other, fx.Node) and depends(other)


@override("aten.div.Tensor", applies=_bounded_divisor)
def _div(a, b):
    """Division by a tensor that depends on the input: a product with its reciprocal."""
    return a * torch.reciprocal(b)


# ------------------------------------------------------------------------------- the loop
def decomposition(node: fx.Node, depends, ruled: bool = False):
    """``(fn, None)`` decomposing ``node``'s op, ``(None, reason)`` if an override declines
    it, ``(None, None)`` if there is none (or, for an op with a rule, ``ruled``, no override
    asks for the node)."""
    name = str(node.target)
    if name in OVERRIDES:
        fn, applies = OVERRIDES[name]
        verdict = True if applies is None else applies(node, depends)
        if verdict is True:
            return fn, None
        return None, (verdict or None)
    if ruled:
        return None, None
    op = node.target
    if not isinstance(op, torch._ops.OpOverload):
        return None, None
    table = _torch_table()
    return (table[op] if op in table else None), None


@functools.cache
def _torch_table():
    return torch.export.default_decompositions()


def decompose(ep, has_rule: Callable[[str], bool], dependence: Callable, rounds: int = 8):
    """Decompose, round by round, the ops of the input-dependent nodes of ``ep`` that have no
    rule (``has_rule(op name)``) but a decomposition (and those an override asks for);
    ``dependence(ep)`` gives the predicate "this node depends on the model's input". Returns
    the new program and ``{node name: reason}`` for nodes an override declined."""
    declined: dict[str, str] = {}
    for _ in range(rounds):
        depends = dependence(ep)
        table = {}
        for n in ep.graph.nodes:
            if n.op != "call_function" or not depends(n):
                continue
            ruled = has_rule(str(n.target))
            if ruled and str(n.target) not in OVERRIDES:
                continue
            fn, reason = decomposition(n, depends, ruled)
            if reason and not ruled:
                declined[n.name] = reason
            elif fn is not None and isinstance(n.target, torch._ops.OpOverload):
                table[n.target] = fn
        if not table:
            break
        with warnings.catch_warnings():  # torch-internal deprecation noise of the retrace
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            ep = ep.run_decompositions(table)
    return ep, declined
