"""BoundedModule: a model wrapped with its bound graph, and ``compute_bounds``."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .engines.alpha import alpha_bounds
from .engines.backward import crown_intermediate, elided_interval, output_bounds
from .engines.context import Context, Intervals
from .engines.interval import interval_pass
from .errors import InputError
from .graph import BoundGraph
from .ops.activations import RELU_LOWER
from .ops.base import Interval
from .perturbation import Perturbation, all_finite, exact_set

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


class BoundedModule(nn.Module):
    """A model and its bound graph.

    ``BoundedModule(model, example_input)`` traces ``model`` once (the first input dimension is
    the batch; any batch size works afterwards). ``bm(x)`` is the plain forward pass and equals
    ``model(x)``; :meth:`compute_bounds` bounds the output (or ``C @ output``) over a
    perturbation set. Parameters are the model's own (``bm.parameters()`` yields them, and
    optimiser steps on them are seen by the next bound computation).

    A model of several tensor arguments is traced from a tuple of examples,
    ``BoundedModule(model, (x1, x2))``; then ``bm(x1, x2)`` is its forward pass and
    :meth:`compute_bounds` takes the tuple and one perturbation per input that moves (the
    others stay exact).
    """

    def __init__(self, model: nn.Module, example_input=None, *,
                 graph: BoundGraph | None = None):
        super().__init__()
        self.model = model
        if graph is None:
            if example_input is None:
                raise InputError("BoundedModule needs an example input to trace the model")
            from .frontends.torch_trace import trace
            graph = trace(model, example_input)
        self.graph = graph

    # ------------------------------------------------------------------------------ forward
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        xs = self._check_inputs(xs[0] if len(xs) == 1 else xs)
        return self.graph.forward(xs, self.model)

    def _check_inputs(self, x) -> tuple[torch.Tensor, ...]:
        """The model's inputs as a tuple, each checked (shape, finite values, one batch)."""
        g = self.graph
        xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if len(xs) != len(g.inputs):
            raise InputError(f"the model takes {len(g.inputs)} input(s) "
                             f"({', '.join(g.input_names)}), got {len(xs)}")
        for name, v, shape in zip(g.input_names, xs, g.input_shapes):
            what = "input" if len(xs) == 1 else f"input {name!r}"
            if not torch.is_tensor(v):
                raise InputError(f"expected a tensor {what}, got {type(v).__name__}")
            if v.dim() != len(shape) + 1 or tuple(v.shape[1:]) != shape:
                raise InputError(f"expected {what} of shape (B, {', '.join(map(str, shape))}), "
                                 f"got {tuple(v.shape)}")
            if not all_finite(v):
                raise InputError(f"the {what} contains NaN or infinite values")
        if len({v.shape[0] for v in xs}) > 1:
            raise InputError("the inputs have different batch sizes: "
                             f"{[v.shape[0] for v in xs]}")
        return xs

    def _perturbations(self, perturbation) -> dict[str, Perturbation | None]:
        """``{input node: its perturbation or None}`` from one perturbation (a one-input
        model), a sequence with one entry per input, or a dict keyed by argument position or
        name (inputs left out are exact)."""
        g = self.graph
        hint = ("a boundgraph.LpBall, LinfBall or Box" if len(g.inputs) == 1 else
                "a dict {input index or name: boundgraph.LpBall / LinfBall / Box or None}")
        if isinstance(perturbation, Perturbation):
            if len(g.inputs) > 1:
                raise InputError(f"the model has {len(g.inputs)} inputs "
                                 f"({', '.join(g.input_names)}): say which one(s) the "
                                 f"perturbation moves with {hint}")
            return {g.input: perturbation}
        if isinstance(perturbation, (tuple, list)):
            if len(perturbation) != len(g.inputs):
                raise InputError(f"{len(perturbation)} perturbations for a model of "
                                 f"{len(g.inputs)} inputs")
            perturbation = dict(enumerate(perturbation))
        if not isinstance(perturbation, dict):
            raise InputError(f"perturbation must be {hint}, got {type(perturbation).__name__}")
        out: dict[str, Perturbation | None] = {name: None for name in g.inputs}
        names = dict(zip(g.input_names, g.inputs))
        for key, p in perturbation.items():
            if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(g.inputs):
                node = g.inputs[key]
            elif key in names:
                node = names[key]
            else:
                raise InputError(f"the model has no input {key!r}; its inputs are "
                                 + ", ".join(f"{i} ({n!r})" for i, n in enumerate(g.input_names)))
            if p is not None and not isinstance(p, Perturbation):
                raise InputError(f"the perturbation of input {key!r} must be a "
                                 f"boundgraph.LpBall, LinfBall or Box (or None), got "
                                 f"{type(p).__name__}")
            out[node] = p
        return out

    # ------------------------------------------------------------------------------ bounds
    def compute_bounds(self, x: torch.Tensor, perturbation: Perturbation, method: str = "ibp",
                       C: torch.Tensor | None = None, *, bound_lower: bool = True,
                       bound_upper: bool = True, relu_lower: str = "adaptive",
                       max_elements: int = 2 ** 25, return_intermediate: bool = False,
                       intervals: dict[str, Interval] | None = None, alpha_steps: int = 20,
                       alpha_time_limit: float | None = None, intermediate_grad: bool = False,
                       splits: dict[str, torch.Tensor] | None = None):
        """Lower and upper bounds of ``C f(x')`` (or ``f(x')``) for all ``x'`` in the set.

        Parameters
        ----------
        x:
            clean input ``(B, *input_shape)``; a tuple of them for a model of several inputs.
        perturbation:
            :class:`~boundgraph.LpBall` (l1, l2 or l-inf), :class:`~boundgraph.LinfBall` or
            :class:`~boundgraph.Box`. For a model of several inputs, a dict
            ``{argument index or name: perturbation or None}`` (or a sequence with one entry
            per input); inputs it leaves out, or maps to ``None``, are held exact.
        method:
            ``"ibp"`` (interval bound propagation), ``"crown-ibp"`` (CROWN backward pass from
            the output with IBP intermediate bounds), ``"crown"`` (every intermediate bound
            a nonlinear rule needs is itself computed by a backward pass) or ``"alpha-crown"``
            (CROWN with the lower slopes of unstable ReLUs optimised, per row of each
            backward pass, for the bound asked for; never looser than ``"crown"``).
        C:
            specification ``(B, S, K)`` or ``(S, K)`` over the flattened output of size ``K``
            (see :func:`~boundgraph.margin_spec`); ``None`` bounds the output itself.
        bound_lower, bound_upper:
            skip a side that is not needed (returned as ``None``); saves time in training.
        relu_lower:
            lower-line slope of unstable ReLUs: ``"adaptive"``, ``"zero"``, ``"one"``,
            ``"parallel"``.
        max_elements:
            size cap (elements) of one coefficient tensor; CROWN chunks its rows to stay under it.

        return_intermediate:
            also return the intervals of every batched node that the method used (IBP
            intervals for ``"ibp"`` and ``"crown-ibp"``; CROWN-tightened ones where ``"crown"``
            refined them) as a third value, ``{node name: Interval}`` (an
            :class:`~boundgraph.engines.context.Intervals` dict). Costs nothing extra;
            certified-training regularisers read pre-activation intervals from it.
        intervals:
            IBP intervals returned by an earlier call with ``return_intermediate`` for the
            same ``x``, perturbation and parameters; ``"ibp"`` and ``"crown-ibp"`` then skip
            their interval pass and reuse that call's set-up (input box, BatchNorm statistics
            of the clean batch), e.g. for IBP and CROWN-IBP margins of one training batch. Not
            checked against ``x`` beyond its shape: intervals of another input give wrong
            bounds. Ignored by ``"crown"`` and ``"alpha-crown"``, which compute their own.
        alpha_steps:
            Adam steps (rate 0.1) of ``"alpha-crown"``'s slope optimisation.
        alpha_time_limit:
            seconds after which ``"alpha-crown"`` stops optimising and uses the best slopes
            found so far (None: no limit).
        intermediate_grad:
            keep the intermediate-bound passes of ``"crown"`` and ``"alpha-crown"`` (one
            backward pass per neuron worth refining) in the autograd graph, so that gradients
            also flow through the relaxations they choose. Off by default: those passes are
            most of full CROWN's work, and recording them for autograd multiplies its memory
            (gigabytes on a CNN7 image) for gradients that verification never asks for.
        splits:
            split constraints, the sub-domains of branch and bound: ``{node name: sign}`` with
            ``sign`` a tensor ``(B, *node_shape)`` (or ``node_shape``, the same for every
            example) of +1 where the node's value is constrained ``>= 0``, -1 where ``<= 0``
            and 0 elsewhere. Every method bounds over the input set intersected with the
            constraints: the constrained elements' intervals are clipped (so a ReLU whose
            input is split is linear), and ``"alpha-crown"`` also adds each constraint to its
            output pass with an optimised multiplier (beta-CROWN). Where the constraints
            contradict each other the sub-domain is empty and any bound holds.

        Returns
        -------
        ``(lb, ub)``, each ``(B, S)`` with a spec, else ``(B, *output_shape)``; with
        ``return_intermediate``, ``(lb, ub, intervals)``. Every method's bounds are intersected
        with IBP's at each node, so no method is looser than IBP.

        Bounds are differentiable with respect to the model's parameters (when autograd is
        on): entirely for ``"ibp"`` and ``"crown-ibp"`` (what certified training uses); for
        ``"crown"`` and ``"alpha-crown"`` through the output's backward pass with the
        intermediate bounds held constant, unless ``intermediate_grad=True``.
        """
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if relu_lower not in RELU_LOWER:
            raise InputError(f"relu_lower must be one of {RELU_LOWER}, got {relu_lower!r}")
        perts = self._perturbations(perturbation)
        if not (bound_lower or bound_upper):
            raise InputError("at least one of bound_lower and bound_upper must be true")
        if isinstance(alpha_steps, bool) or not isinstance(alpha_steps, int) or alpha_steps < 0:
            raise InputError(f"alpha_steps must be an integer >= 0, got {alpha_steps!r}")
        if alpha_time_limit is not None and not (alpha_time_limit >= 0):
            raise InputError(f"alpha_time_limit must be >= 0 seconds, got {alpha_time_limit!r}")
        xs = self._check_inputs(x)
        x = xs[0]
        out_shape = self.graph.output_shape
        K = math.prod(out_shape)
        B = x.shape[0]
        spec = self._check_spec(C, B, K, x)

        opts = dict(relu_lower=relu_lower, max_elements=max_elements)
        splits = self._check_splits(splits, B, x)
        reuse = None
        if intervals is not None and method in ("ibp", "crown-ibp"):
            intervals = self._check_intervals(intervals, xs)
            reuse = getattr(intervals, "context", None)
        # the context of the call that computed the intervals (same input and perturbation,
        # as the intervals themselves require) saves rebuilding it
        ctx = replace(reuse, opts=opts) if reuse is not None else \
            self._context(xs, perts, opts)
        if splits:
            ctx.splits = splits
        A = spec.view(spec.shape[0], spec.shape[1], *out_shape) if spec is not None else \
            torch.eye(K, dtype=x.dtype, device=x.device).view(1, K, *out_shape)
        if method == "alpha-crown":
            bounds, al, au = alpha_bounds(ctx, A, bound_lower, bound_upper, steps=alpha_steps,
                                          time_limit=alpha_time_limit,
                                          intermediate_grad=intermediate_grad)
        elif method == "crown":
            bounds = crown_intermediate(ctx, grad=intermediate_grad)
        elif intervals is not None:
            bounds = intervals
        else:
            bounds = interval_pass(ctx)
        out = bounds[self.graph.output]

        if spec is None:  # the output's own interval (one step back would give no more)
            lb = out.lower.reshape(B, K) if bound_lower else None
            ub = out.upper.reshape(B, K) if bound_upper else None
        else:  # C folded into the output op: tighter than C applied to the output's interval
            lb, ub = elided_interval(ctx, bounds, A, bound_lower, bound_upper)
        if method == "alpha-crown":
            cl, cu = al, au
        elif method != "ibp":
            cl, cu = output_bounds(ctx, bounds, A, bound_lower, bound_upper)
        if method != "ibp":
            lb = torch.maximum(lb, cl) if bound_lower else None
            ub = torch.minimum(ub, cu) if bound_upper else None
        if spec is None:
            lb = None if lb is None else lb.reshape(B, *out_shape)
            ub = None if ub is None else ub.reshape(B, *out_shape)
        if not return_intermediate:
            return lb, ub
        return lb, ub, bounds if isinstance(bounds, Intervals) else Intervals(bounds, ctx)

    def interval_bounds(self, x, perturbation) -> dict[str, Interval]:
        """IBP intervals of every batched node of the graph over the perturbation set.

        Returns ``{node name: Interval(lower, upper)}`` (each ``(B, *node_shape)``), the input
        node's entry being the input box itself. The intervals are differentiable with respect
        to the model's parameters; BatchNorm layers in training mode use the clean batch's
        statistics, as in :meth:`compute_bounds`. Pre-activation nodes of a ReLU network are
        the inputs of the nodes whose ``op.kind == "relu"`` (see ``bm.graph``). ``x`` and
        ``perturbation`` are as in :meth:`compute_bounds`.
        """
        perts = self._perturbations(perturbation)
        xs = self._check_inputs(x)
        return interval_pass(self._context(xs, perts, {}))

    def _check_intervals(self, intervals, xs) -> dict[str, Interval]:
        g = self.graph
        if not isinstance(intervals, dict):
            raise InputError("intervals must be the {node: Interval} dict returned with "
                             "return_intermediate=True")
        missing = [n for n in g.batched_order if n not in intervals]
        if missing:
            raise InputError(f"intervals lack node(s) {', '.join(missing[:5])}; pass the dict "
                             "returned by compute_bounds(..., return_intermediate=True) for this "
                             "model")
        for name, x in zip(g.inputs, xs):
            if name in intervals and tuple(intervals[name].lower.shape) != tuple(x.shape):
                raise InputError(f"intervals were computed for an input of shape "
                                 f"{tuple(intervals[name].lower.shape)}, not {tuple(x.shape)}")
        return intervals

    def _check_splits(self, splits, B, x) -> dict:
        if not splits:
            return {}
        if not isinstance(splits, dict):
            raise InputError("splits must be a dict {node name: sign tensor}")
        g = self.graph
        out = {}
        for name, s in splits.items():
            node = g.nodes.get(name)
            if node is None or not node.batched or name in g.inputs:
                raise InputError(f"splits: {name!r} is not an op node that depends on the input; "
                                 "split constraints name nodes of bm.graph")
            s = torch.as_tensor(s, device=x.device)
            shape = tuple(node.shape)
            if tuple(s.shape) == shape:
                s = s.unsqueeze(0).expand(B, *shape)
            if tuple(s.shape) != (B, *shape):
                raise InputError(f"splits[{name!r}] must have shape (B, {', '.join(map(str, shape))})"
                                 f" or {shape}, got {tuple(s.shape)}")
            if not bool(((s == 0) | (s == 1) | (s == -1)).all()):
                raise InputError(f"splits[{name!r}] may only hold -1, 0 and +1")
            out[name] = s.to(torch.int8)
        return out

    def _check_spec(self, C, B, K, x):
        if C is None:
            return None
        if not torch.is_tensor(C):
            raise InputError("C must be a tensor of shape (B, S, K) or (S, K)")
        if C.dim() == 2:
            C = C.unsqueeze(0)
        if C.dim() != 3 or C.shape[2] != K or C.shape[0] not in (1, B):
            raise InputError(f"C must have shape ({B}, S, {K}) or (S, {K}); got {tuple(C.shape)}")
        if not all_finite(C):
            raise InputError("C contains NaN or infinite values")
        return C.to(dtype=x.dtype, device=x.device)

    def _context(self, x, perturbation, opts) -> Context:
        """The engines' context for inputs ``x`` (a tensor or a tuple of them) and
        ``perturbation`` (as :meth:`compute_bounds` takes it, or already resolved per input
        node)."""
        g = self.graph
        xs = self._check_inputs(x)
        perts = perturbation
        if not (isinstance(perts, dict) and set(perts) == set(g.inputs)):
            perts = self._perturbations(perturbation)
        consts = g.constants(self.model)
        sets = {}
        for name, x in zip(g.inputs, xs):
            p = perts[name]
            sets[name] = exact_set(x) if p is None else p.input_set(x)
        ctx = Context(g, consts, sets, opts)
        # ops whose rules depend on the clean pass (BatchNorm with batch statistics)
        wants = {}
        for n in g.op_nodes():
            if n.batched:
                vals = [None if g.nodes[i].batched else consts[i] for i in n.inputs]
                if n.op.wants_clean(*vals):
                    wants[n.name] = n
        if wants:
            env = dict(consts)
            env.update(zip(g.inputs, xs))
            for name in g.batched_ops:
                n = g.nodes[name]
                vals = [env[i] for i in n.inputs]
                op = n.op
                if name in wants:
                    op, ov = op.bind(*vals)
                    ctx.ops[name], ctx.overrides[name] = op, ov
                    for i, v in ov.items():
                        vals[i] = v
                env[name] = op.forward(*vals)
        return ctx

    def extra_repr(self) -> str:
        return f"graph: {len(self.graph.live)} nodes from {self.graph.origin}"
