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
from .perturbation import Perturbation, all_finite

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


class BoundedModule(nn.Module):
    """A model and its bound graph.

    ``BoundedModule(model, example_input)`` traces ``model`` once (the first input dimension is
    the batch; any batch size works afterwards). ``bm(x)`` is the plain forward pass and equals
    ``model(x)``; :meth:`compute_bounds` bounds the output (or ``C @ output``) over a
    perturbation set. Parameters are the model's own (``bm.parameters()`` yields them, and
    optimiser steps on them are seen by the next bound computation).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None, *,
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
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.graph.forward(x, self.model)

    def _check_input(self, x):
        if not torch.is_tensor(x):
            raise InputError(f"expected a tensor input, got {type(x).__name__}")
        shape = self.graph.input_shape
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise InputError(f"expected input of shape (B, {', '.join(map(str, shape))}), got "
                             f"{tuple(x.shape)}")
        if not all_finite(x):
            raise InputError("the input contains NaN or infinite values")

    # ------------------------------------------------------------------------------ bounds
    def compute_bounds(self, x: torch.Tensor, perturbation: Perturbation, method: str = "ibp",
                       C: torch.Tensor | None = None, *, bound_lower: bool = True,
                       bound_upper: bool = True, relu_lower: str = "adaptive",
                       max_elements: int = 2 ** 25, return_intermediate: bool = False,
                       intervals: dict[str, Interval] | None = None, alpha_steps: int = 20,
                       alpha_time_limit: float | None = None, intermediate_grad: bool = False):
        """Lower and upper bounds of ``C f(x')`` (or ``f(x')``) for all ``x'`` in the set.

        Parameters
        ----------
        x:
            clean input ``(B, *input_shape)``.
        perturbation:
            :class:`~boundgraph.LinfBall` or :class:`~boundgraph.Box`.
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
        if not isinstance(perturbation, Perturbation):
            raise InputError("perturbation must be a boundgraph.LinfBall or boundgraph.Box, "
                             f"got {type(perturbation).__name__}")
        if not (bound_lower or bound_upper):
            raise InputError("at least one of bound_lower and bound_upper must be true")
        if isinstance(alpha_steps, bool) or not isinstance(alpha_steps, int) or alpha_steps < 0:
            raise InputError(f"alpha_steps must be an integer >= 0, got {alpha_steps!r}")
        if alpha_time_limit is not None and not (alpha_time_limit >= 0):
            raise InputError(f"alpha_time_limit must be >= 0 seconds, got {alpha_time_limit!r}")
        self._check_input(x)
        out_shape = self.graph.output_shape
        K = math.prod(out_shape)
        B = x.shape[0]
        spec = self._check_spec(C, B, K, x)

        opts = dict(relu_lower=relu_lower, max_elements=max_elements)
        reuse = None
        if intervals is not None and method in ("ibp", "crown-ibp"):
            intervals = self._check_intervals(intervals, x)
            reuse = getattr(intervals, "context", None)
        # the context of the call that computed the intervals (same input and perturbation,
        # as the intervals themselves require) saves rebuilding it
        ctx = replace(reuse, opts=opts) if reuse is not None else \
            self._context(x, perturbation, opts)
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

    def interval_bounds(self, x: torch.Tensor, perturbation: Perturbation
                        ) -> dict[str, Interval]:
        """IBP intervals of every batched node of the graph over the perturbation set.

        Returns ``{node name: Interval(lower, upper)}`` (each ``(B, *node_shape)``), the input
        node's entry being the input box itself. The intervals are differentiable with respect
        to the model's parameters; BatchNorm layers in training mode use the clean batch's
        statistics, as in :meth:`compute_bounds`. Pre-activation nodes of a ReLU network are
        the inputs of the nodes whose ``op.kind == "relu"`` (see ``bm.graph``).
        """
        if not isinstance(perturbation, Perturbation):
            raise InputError("perturbation must be a boundgraph.LinfBall or boundgraph.Box, "
                             f"got {type(perturbation).__name__}")
        self._check_input(x)
        return interval_pass(self._context(x, perturbation, {}))

    def _check_intervals(self, intervals, x) -> dict[str, Interval]:
        g = self.graph
        if not isinstance(intervals, dict):
            raise InputError("intervals must be the {node: Interval} dict returned with "
                             "return_intermediate=True")
        missing = [n for n in g.batched_order if n not in intervals]
        if missing:
            raise InputError(f"intervals lack node(s) {', '.join(missing[:5])}; pass the dict "
                             "returned by compute_bounds(..., return_intermediate=True) for this "
                             "model")
        if tuple(intervals[g.input].lower.shape) != tuple(x.shape):
            raise InputError(f"intervals were computed for an input of shape "
                             f"{tuple(intervals[g.input].lower.shape)}, not {tuple(x.shape)}")
        return intervals

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
        g = self.graph
        consts = g.constants(self.model)
        box = perturbation.box(x)
        ctx = Context(g, consts, Interval(*box), opts)
        # ops whose rules depend on the clean pass (BatchNorm with batch statistics)
        wants = {}
        for n in g.op_nodes():
            if n.batched:
                vals = [None if g.nodes[i].batched else consts[i] for i in n.inputs]
                if n.op.wants_clean(*vals):
                    wants[n.name] = n
        if wants:
            env = dict(consts)
            env[g.input] = x
            for name in g.batched_order[1:]:
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
