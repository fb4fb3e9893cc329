"""Recurrent converters: LSTM and GRU unrolled over their fixed sequence (``_Rnn`` holds the
plumbing both share) into the ops the torch front end makes for ``nn.LSTM`` / ``nn.GRU``: a
``linear`` input projection, then per step ``linear``, gate ``slice``, activations, products and
sums, the outputs joined by ``stack``.
"""
from __future__ import annotations

import numpy as np

from ... import ops as O
from ..onnx_graph import _T, _Unsupported
from . import _hint, _text, _vocab, converter


_RNN_ACTIVATIONS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _Rnn:
    """Shared plumbing of the ``LSTM`` and ``GRU`` converters: the node's constants per
    direction, the input as one tensor per example, and the ops of one time step."""

    def __init__(self, imp, node, ins, a, gates: int, default_acts: list):
        self.imp, self.node, self.hint = imp, node, _hint(node)
        X, W, R = ins[0], ins[1], ins[2]
        rest = list(ins[3:]) + [None] * (8 - len(ins))
        B, seq_lens, h0 = rest[0], rest[1], rest[2]
        self.c0_t = rest[3] if gates == 4 else None
        self.P = rest[4] if gates == 4 else None
        if X.const:
            raise _Unsupported(f"{node.op_type} of a constant sequence")
        for t, what in ((W, "W"), (R, "R"), (B, "B"), (seq_lens, "sequence_lens"),
                        (h0, "initial_h"), (self.c0_t, "initial_c"), (self.P, "P")):
            if t is not None and not t.const:
                raise _Unsupported(f"{node.op_type} with an input-dependent {what}")
        self.layout = int(a.get("layout", 0))
        direction = _text(a.get("direction", "forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise _Unsupported(f"{node.op_type} direction '{direction}'")
        self.dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        if a.get("activation_alpha") or a.get("activation_beta"):
            raise _Unsupported(f"{node.op_type} with activation_alpha/beta")
        names = [_text(v).lower() for v in a.get("activations", [])] or \
            default_acts * len(self.dirs)
        if any(n not in _RNN_ACTIVATIONS for n in names):
            raise _Unsupported(f"{node.op_type} activations {names} (sigmoid, tanh and relu "
                               "have rules)")
        k = len(default_acts)
        if len(names) != k * len(self.dirs):
            raise _Unsupported(f"{node.op_type} with {len(names)} activations for "
                               f"{len(self.dirs)} direction(s)")
        self.acts = [names[d * k:(d + 1) * k] for d in range(len(self.dirs))]
        if a.get("clip") is not None:
            raise _Unsupported(f"{node.op_type} with clip")
        self.W = np.asarray(W.value)
        self.R = np.asarray(R.value)
        D, GH, I = self.W.shape
        self.H = int(a.get("hidden_size", GH // gates))
        if D != len(self.dirs) or GH != gates * self.H:
            raise _Unsupported(f"{node.op_type} weights of shape {list(self.W.shape)}")
        self.B = np.zeros((D, 2 * gates * self.H), self.W.dtype) if B is None else \
            np.asarray(B.value)
        x = imp.as_whole(X)  # each example holds its whole ONNX sequence tensor
        self.X = x
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[2] != I:
            raise _Unsupported(f"{node.op_type} input of shape {list(shape)}")
        self.S, self.b = (shape[0], shape[1]) if self.layout == 0 else (shape[1], shape[0])
        self.seq_dim = 0 if self.layout == 0 else 1  # per-sample dim of the time axis
        if seq_lens is not None and np.any(np.asarray(seq_lens.value) != self.S):
            raise _Unsupported(f"{node.op_type} with sequence_lens shorter than the sequence")

        def state(t):
            if t is None:
                return np.zeros((D, self.b, self.H), self.W.dtype)
            v = np.asarray(t.value)
            return v if self.layout == 0 else np.swapaxes(v, 0, 1)  # (D, b, H)
        self.h0, self.c0 = state(h0), state(self.c0_t)

    def add(self, op, refs, name):
        res = self.imp.add(op, refs, f"{self.hint}_{name}")
        res.batch = False
        return res

    def const(self, v, name):
        return self.imp.tensor_const(np.ascontiguousarray(v), f"{self.hint}_{name}")

    def linear(self, x, W, b, name, key):
        w = self.imp.tensor_const(np.ascontiguousarray(W), f"{self.hint}_{name}_weight",
                                  weight=True, key=(id(self.node), key, "W"))
        refs = [x, w]
        if b is not None:
            refs.append(self.imp.tensor_const(np.ascontiguousarray(b),
                                              f"{self.hint}_{name}_bias", weight=True,
                                              key=(id(self.node), key, "b")))
        return self.add(O.Linear(), refs, name)

    def act(self, kind, x, name):
        return self.add(_vocab(_RNN_ACTIVATIONS[kind])(), [x], name)

    def gate(self, g, k, name):
        """Gate ``k`` (``H`` wide) of the pre-activations ``g``."""
        return self.add(_vocab("slice")(1, k * self.H, (k + 1) * self.H, 1), [g], name)

    def plus(self, x, c, name):
        """``x + c`` for a batched ``x`` and a constant ``c`` of shape ``(b, n)`` (skipped when
        0)."""
        if not np.any(c):
            return x
        return self.add(_vocab("add")(), [x, self.const(c, name)], name)

    def times(self, x, c, name):
        """``x * c`` for a constant ``c`` (None when ``c`` is 0)."""
        if not np.any(c):
            return None
        return self.add(_vocab("mul")(), [x, self.const(c, name)], name)

    def sum(self, parts, name):
        parts = [p for p in parts if p is not None]
        out = parts[0]
        for k, p in enumerate(parts[1:]):
            out = self.add(_vocab("add")(), [out, p], f"{name}{k}" if k < len(parts) - 2
                           else name)
        return out

    def run(self, step):
        """Unroll every direction with ``step(d, t, x_proj_t, state) -> state`` (``state[0]``
        the hidden state); returns ``(hidden states per direction and time, last states)``."""
        hs, last = [], []
        for d, direction in enumerate(self.dirs):
            G = self.W.shape[1]
            proj = self.linear(self.X, self.W[d], self.B[d, :G], f"d{d}_input", f"in{d}")
            order = range(self.S) if direction == "forward" else range(self.S - 1, -1, -1)
            state, seq = None, [None] * self.S
            for t in order:
                xt = self.add(_vocab("select")(self.seq_dim, t), [proj], f"d{d}_x{t}")
                state = step(d, t, xt, state)
                seq[t] = state[0]
            hs.append(seq)
            last.append(state)
        return hs, last

    def outputs(self, hs, last, extra=()):
        """``Y``, ``Y_h`` (and ``Y_c``) in the node's layout."""
        imp, D = self.imp, len(self.dirs)
        stack = _vocab("stack")
        outs = []
        # Y: layout 0 (S, D, b, H), layout 1 (b, S, D, H)
        dir_dim = 0 if self.layout == 0 else 1
        per_t = [self.add(stack(dir_dim), [hs[d][t] for d in range(D)], f"y{t}")
                 for t in range(self.S)]
        Y = self.add(stack(0 if self.layout == 0 else 1), per_t, "y")
        outs.append(Y)
        for k in range(1 + len(extra)):
            vals = [last[d][k] for d in range(D)]
            outs.append(self.add(stack(dir_dim), vals, "y_h" if k == 0 else "y_c"))
        shapes = [(self.S, D, self.b, self.H) if self.layout == 0 else (self.b, self.S, D, self.H)]
        shapes += [(D, self.b, self.H) if self.layout == 0 else (self.b, D, self.H)] * \
            (1 + len(extra))
        return [imp.fit(t, s) for t, s in zip(outs, shapes)]


@converter("LSTM")
def _lstm(imp, node, ins, a):
    """``LSTM`` unrolled over its (fixed) sequence into the ops the torch front end makes for
    ``nn.LSTM``: one ``linear`` for the input projections, then per step a ``linear`` of the
    hidden state, gate slices, sigmoid/tanh, products of two bounded tensors and sums
    (peepholes included, any direction; no clip)."""
    if int(a.get("input_forget", 0)):
        raise _Unsupported("LSTM with input_forget=1")
    rnn = _Rnn(imp, node, ins, a, 4, ["sigmoid", "tanh", "tanh"])
    H = rnn.H
    P = None if rnn.P is None else np.asarray(rnn.P.value)

    def step(d, t, xt, state):
        f_act, g_act, h_act = rnn.acts[d]
        G = 4 * H
        Rb = rnn.B[d, G:]
        tag = f"d{d}_t{t}"
        if state is None:  # constant initial state
            h_prev, c_prev = rnn.h0[d], rnn.c0[d]
            g = rnn.plus(xt, h_prev @ rnn.R[d].T + Rb, f"{tag}_gates")
        else:
            h_prev, c_prev = state
            g = rnn.sum([xt, rnn.linear(h_prev, rnn.R[d], Rb, f"{tag}_rec", f"rec{d}")],
                        f"{tag}_gates")
        const_c = not isinstance(c_prev, _T)
        # ONNX gate order: input, output, forget, cell
        pi, po, pf, pc = (rnn.gate(g, k, f"{tag}_{n}") for k, n in enumerate("iofc"))
        if P is not None:
            Pi, Po, Pf = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
            if const_c:
                pi, pf = rnn.plus(pi, Pi * c_prev, f"{tag}_peep_i"), \
                    rnn.plus(pf, Pf * c_prev, f"{tag}_peep_f")
            else:
                pi = rnn.sum([pi, rnn.times(c_prev, Pi, f"{tag}_pci")], f"{tag}_peep_i")
                pf = rnn.sum([pf, rnn.times(c_prev, Pf, f"{tag}_pcf")], f"{tag}_peep_f")
        i = rnn.act(f_act, pi, f"{tag}_i")
        f = rnn.act(f_act, pf, f"{tag}_f")
        cc = rnn.act(g_act, pc, f"{tag}_cand")
        ic = rnn.add(_vocab("mul")(), [i, cc], f"{tag}_ic")
        fc = rnn.times(f, c_prev, f"{tag}_fc") if const_c else \
            rnn.add(_vocab("mul")(), [f, c_prev], f"{tag}_fc")
        c = rnn.sum([fc, ic], f"{tag}_c")
        if P is not None:
            po = rnn.sum([po, rnn.times(c, Po, f"{tag}_pco")], f"{tag}_peep_o")
        o = rnn.act(f_act, po, f"{tag}_o")
        h = rnn.add(_vocab("mul")(), [o, rnn.act(h_act, c, f"{tag}_hc")], f"{tag}_h")
        return h, c

    hs, last = rnn.run(step)
    return rnn.outputs(hs, last, extra=("c",))


@converter("GRU")
def _gru(imp, node, ins, a):
    """``GRU`` unrolled like :func:`_lstm` into the ops of the torch front end's ``nn.GRU``
    (``linear_before_reset`` either way; any direction)."""
    rnn = _Rnn(imp, node, ins, a, 3, ["sigmoid", "tanh"])
    H = rnn.H
    lbr = bool(int(a.get("linear_before_reset", 0)))

    def step(d, t, xt, state):
        f_act, g_act = rnn.acts[d]
        G = 3 * H
        Rd, Rb = rnn.R[d], rnn.B[d, G:]
        tag = f"d{d}_t{t}"
        const_h = state is None
        h_prev = rnn.h0[d] if const_h else state[0]
        # ONNX gate order: update (z), reset (r), hidden (h)
        xz, xr, xh = (rnn.gate(xt, k, f"{tag}_x{n}") for k, n in enumerate("zrh"))
        if const_h:
            rec = h_prev @ Rd.T + Rb  # (b, 3H)
            pz = rnn.plus(xz, rec[:, :H], f"{tag}_pz")
            pr = rnn.plus(xr, rec[:, H:2 * H], f"{tag}_pr")
        else:
            rec = rnn.linear(h_prev, Rd[:2 * H], Rb[:2 * H], f"{tag}_rec", f"rec{d}")
            pz = rnn.sum([xz, rnn.gate(rec, 0, f"{tag}_hz")], f"{tag}_pz")
            pr = rnn.sum([xr, rnn.gate(rec, 1, f"{tag}_hr")], f"{tag}_pr")
        z = rnn.act(f_act, pz, f"{tag}_z")
        r = rnn.act(f_act, pr, f"{tag}_r")
        Rh, Rbh = Rd[2 * H:], Rb[2 * H:]
        if const_h and lbr:  # r * (h0 Rh^T + Rbh)
            hh = rnn.times(r, h_prev @ Rh.T + Rbh, f"{tag}_rh")
            ph = xh if hh is None else rnn.sum([xh, hh], f"{tag}_ph")
        elif const_h and np.any(h_prev):  # (r * h0) Rh^T + Rbh
            rh = rnn.times(r, h_prev, f"{tag}_rh0")
            ph = rnn.sum([xh, rnn.linear(rh, Rh, Rbh, f"{tag}_rh", f"rech{d}")], f"{tag}_ph")
        elif const_h:  # h0 = 0: Rbh alone
            ph = rnn.plus(xh, np.broadcast_to(Rbh, (rnn.b, H)), f"{tag}_ph")
        elif lbr:
            lin = rnn.linear(h_prev, Rh, Rbh, f"{tag}_rh", f"rech{d}")
            ph = rnn.sum([xh, rnn.add(_vocab("mul")(), [r, lin], f"{tag}_rlin")], f"{tag}_ph")
        else:
            rh = rnn.add(_vocab("mul")(), [r, h_prev], f"{tag}_rh0")
            ph = rnn.sum([xh, rnn.linear(rh, Rh, Rbh, f"{tag}_rh", f"rech{d}")], f"{tag}_ph")
        n = rnn.act(g_act, ph, f"{tag}_n")
        one_minus_z = rnn.add(_vocab("sub")(), [imp.literal(1.0, f"{rnn.hint}_one"), z],
                              f"{tag}_1mz")
        new = rnn.add(_vocab("mul")(), [one_minus_z, n], f"{tag}_new")
        keep = rnn.times(z, h_prev, f"{tag}_keep") if const_h else \
            rnn.add(_vocab("mul")(), [z, h_prev], f"{tag}_keep")
        h = rnn.sum([new, keep], f"{tag}_h")
        return (h,)

    hs, last = rnn.run(step)
    return rnn.outputs(hs, last)
