"""Certified-training losses built on margin lower bounds.

For a classifier f with K outputs, an input x of class y and a perturbation set S(x), let
m in R^{K-1} be a lower bound of the margins f_y(x') - f_j(x') (j != y) over all x' in S(x),
as returned by ``bm.compute_bounds(x, ptb, method, C=margin_spec(y, K), bound_upper=False)``.

**Robust cross-entropy** (Wong & Kolter 2018; Gowal et al. 2018; seed eq. 14.4). With
z = [0, -m] in R^K and class 0 as the target,

    CE(z, 0) = log(1 + sum_j exp(-m_j)) >= log(1 + sum_j exp(-(f_y(x') - f_j(x'))))
             = CE(f(x'), y)            for every x' in S(x),

because the log-sum-exp is increasing in each argument and -m_j >= f_j(x') - f_y(x'). So the
robust loss upper-bounds the natural cross-entropy of every point of the set, and equals the
natural loss at eps = 0 (m is then the exact margin).

**IBP loss** (Gowal et al. 2018, "On the effectiveness of interval bound propagation for
training verifiably robust models"): kappa * CE(f(x), y) + (1 - kappa) * CE([0, -m_IBP], 0).

**CROWN-IBP** (Zhang et al. 2020, "Towards stable and efficient training of verifiably robust
neural networks"): the margin bound is the mixture (1 - beta) * m_IBP + beta * m_CROWN-IBP,
which is a valid lower bound for any beta in [0, 1] (a convex combination of two lower
bounds); the loss is the IBP loss with that margin. beta = 0 skips the CROWN-IBP backward pass.

**Loss fusion** (Xu et al. 2020, "Automatic perturbation analysis for scalable certified
robustness and beyond"): CROWN-IBP bounds the K-1 margins with one backward pass of K-1 rows
per example, which costs about K-1 forward passes. Bounding the cross-entropy itself needs a
single row. With z_j = f_j(x') - f_y(x') = -(C f(x'))_j inside IBP's interval [zl_j, zu_j],

    CE(f(x'), y) = log(1 + sum_j exp(z_j)) <= log(L(x')),
    L(x') = 1 + sum_j [exp(zl_j) + a_j (z_j - zl_j)],   a_j = chord slope of exp on [zl_j, zu_j],

because exp is convex (below its chord on the interval) and log is increasing. L is affine in
f through the single row -(a^T C), so one CROWN-IBP backward pass bounds its maximum over the
ball, and log of that maximum bounds the loss (:func:`fused_robust_ce`; computed with a shift
by max(0, max_j zu_j) so that no exponential overflows). The bound is never looser than IBP's
robust CE (the two are intersected) and equals the natural loss at eps = 0; the chords make it
looser than CE([0, -m_CROWN-IBP]) where IBP's intervals are wide, so it is an option of
CROWN-IBP training (``loss_fusion=True``), not its default.

**Improved IBP** (Shi et al. 2021, "Fast certified robust training with short warmup"): the
robust IBP loss alone (kappa = 0), with BatchNorm using the clean batch's statistics inside the
bounds (automatic in :class:`~boundgraph.BoundedModule` in ``model.train()`` mode) and the
warm-up regularisers of :mod:`boundgraph.training.regularizers`.

**Methods that mix IBP with an attack** (item: an adversarial point ``x_adv`` found by PGD in
the ball, the library's :func:`~boundgraph.attack.pgd_minimize` on the traced model):

* **SABR** (Mueller et al. 2023, "Certified training: small boxes are all you need"): IBP over
  the small box of radius ``lambda * eps`` around ``x_adv``, where ``x_adv`` is searched in the
  ball shrunk by ``(1 - lambda) eps`` so that the small box lies inside the ball (and the
  domain). The loss is the robust CE of those margins: not a bound over the whole ball, a
  cheaper and tighter proxy that regularises less.
* **MTL-IBP** (De Palma et al. 2024, "Expressive losses for verified robustness via convex
  combinations"): ``alpha * CE(f(x_adv), y) + (1 - alpha) * CE([0, -m_IBP], 0)``.
* **CC-IBP** (same paper): the robust CE of the convex combination of margins
  ``alpha * m(x_adv) + (1 - alpha) * m_IBP``.
* **EXP-IBP** (same paper): ``CE(f(x_adv), y) ** alpha * CE([0, -m_IBP], 0) ** (1 - alpha)``.
* **TAPS** and **STAPS** (Mao et al. 2023): IBP through a feature extractor, an attack
  through the classifier head inside the latent box; see :mod:`boundgraph.training.taps`.

At ``alpha = 0`` MTL-IBP, CC-IBP and EXP-IBP are the IBP loss; at ``alpha = 1`` they are the
attack's loss; SABR at ``lambda = 1`` is the IBP loss over the whole ball.

Everything goes through the public API, so it works on any traced model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..perturbation import LpBall
from ..spec import margin_spec
from .regularizers import warmup_regularizer

__all__ = ["METHODS", "robust_ce", "ibp_mix", "margin_bounds", "fused_robust_ce", "certified_loss",
           "LossResult"]

#: training methods understood by :func:`certified_loss` (and the trainer).
METHODS = ("natural", "ibp", "crown-ibp", "improved-ibp", "sabr", "taps", "staps", "mtl-ibp",
           "cc-ibp", "exp-ibp")
#: the methods that look for an adversarial point inside the ball in every step
ATTACK_METHODS = ("sabr", "mtl-ibp", "cc-ibp", "exp-ibp")
#: the methods that attack the classifier head inside the latent box (training/taps.py)
TAPS_METHODS = ("taps", "staps")


def robust_ce(margins: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Upper bound of the cross-entropy over the perturbation set: CE([0, -m], class 0).

    Args:
        margins: margin lower bounds ``m`` of shape ``(B, K-1)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, shape ``(B,)``).
    """
    if margins.dim() != 2:
        raise ValueError(f"margins must have shape (B, K-1), got {tuple(margins.shape)}")
    z = torch.cat([margins.new_zeros(margins.shape[0], 1), -margins], dim=1)  # (B, K)
    target = torch.zeros(margins.shape[0], dtype=torch.long, device=margins.device)
    return F.cross_entropy(z, target, reduction=reduction)


def ibp_mix(natural: torch.Tensor, robust: torch.Tensor, kappa: float) -> torch.Tensor:
    """kappa * natural + (1 - kappa) * robust (Gowal et al. 2018); a weight of 0 skips its
    term, so a NaN-free loss never depends on an unused one."""
    kappa = float(kappa)
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must lie in [0, 1], got {kappa}")
    if kappa == 1.0:
        return natural
    if kappa == 0.0:
        return robust
    return kappa * natural + (1.0 - kappa) * robust


def _setup(bm, x, y, eps, beta, num_classes, lower, upper, p=math.inf):
    """The checked beta, the margin specification and the l-p ball of a bound call."""
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    K = num_classes or math.prod(bm.graph.output_shape)
    return beta, margin_spec(y, K, dtype=x.dtype), LpBall(float(eps), p, lower=lower, upper=upper)


def margin_bounds(bm, x: torch.Tensor, y: torch.Tensor, eps: float, *, beta: float = 0.0,
                  num_classes: int | None = None, lower: float | None = 0.0,
                  upper: float | None = 1.0, return_intermediate: bool = False,
                  p: float = math.inf):
    """Margin lower bounds ``(B, K-1)`` over the l-``p`` ball (l-inf by default):
    (1-beta) m_IBP + beta m_CROWN-IBP.

    ``beta = 0`` is plain IBP (one forward interval pass); ``beta > 0`` adds the CROWN-IBP
    backward pass on the same intervals (``beta = 1``: the CROWN-IBP bound alone, which is
    itself intersected with IBP's by ``compute_bounds``). With
    ``return_intermediate`` also returns the IBP intervals of every node (``{name: Interval}``)
    for the warm-up regularisers.
    """
    beta, C, ptb = _setup(bm, x, y, eps, beta, num_classes, lower, upper, p)
    # one interval pass serves both margins: CROWN-IBP reuses its intervals and set-up
    m_ibp, _, intervals = bm.compute_bounds(x, ptb, method="ibp", C=C, bound_upper=False,
                                            return_intermediate=True)
    m_crown = None
    if beta > 0.0:
        m_crown = bm.compute_bounds(x, ptb, method="crown-ibp", C=C, bound_upper=False,
                                    intervals=intervals)[0]
    if m_crown is None:
        m = m_ibp
    elif beta == 1.0:
        m = m_crown
    else:
        m = (1.0 - beta) * m_ibp + beta * m_crown
    return (m, intervals) if return_intermediate else m


def fused_robust_ce(bm, x: torch.Tensor, y: torch.Tensor, eps: float, *, beta: float = 1.0,
                    num_classes: int | None = None, lower: float | None = 0.0,
                    upper: float | None = 1.0, p: float = math.inf):
    """Per-example upper bounds ``(B,)`` of the cross-entropy over the l-``p`` ball by loss
    fusion (Xu et al. 2020; see the module docstring): one CROWN-IBP backward pass of a single
    row per example instead of K-1.

    The result is ``(1 - beta) R_IBP + beta min(R_fused, R_IBP)`` with ``R_IBP`` the robust CE
    of IBP's margins, a valid upper bound for any beta in [0, 1]; ``beta = 0`` skips the
    backward pass. Returns ``(robust, m_ibp)`` with IBP's margin lower bounds ``(B, K-1)``
    (which decide the "certified" count of a training batch).
    """
    beta, C, ptb = _setup(bm, x, y, eps, beta, num_classes, lower, upper, p)
    m_lo, m_hi, intervals = bm.compute_bounds(x, ptb, method="ibp", C=C,
                                              return_intermediate=True)
    r_ibp = robust_ce(m_lo, reduction="none")
    robust = r_ibp
    if beta > 0.0:
        zl, zu = -m_hi, -m_lo                                   # z_j = f_j - f_y in [zl, zu]
        shift = zu.detach().amax(1, keepdim=True).clamp(min=0)  # any shift gives the same bound
        el, eu = torch.exp(zl - shift), torch.exp(zu - shift)
        width = zu - zl
        narrow = width <= 1e-6 * (1 + zu.abs())
        # chord slope of exp on [zl, zu]; on a (near) point interval the slope at zu, which is
        # at least the chord's, so the line stays above exp there
        a = torch.where(narrow, eu, (eu - el) / torch.where(narrow, torch.ones_like(width),
                                                                width))
        row = torch.einsum("bs,bsk->bk", a, C).unsqueeze(1)     # (B, 1, K): a^T C
        lb = bm.compute_bounds(x, ptb, method="crown-ibp", C=row, bound_upper=False,
                               intervals=intervals)[0].squeeze(1)
        # max over the ball of exp(-shift) + sum_j [el_j + a_j (z_j - zl_j)]: sum_j a_j z_j
        # = -(a^T C) f <= -lb
        floor = torch.exp(-shift).squeeze(1)
        top = floor + (el - a * zl).sum(1) - lb
        r_fused = shift.squeeze(1) + torch.log(torch.maximum(top, floor + el.sum(1)))
        robust = torch.minimum(r_fused, r_ibp)
        if beta < 1.0:
            robust = (1.0 - beta) * r_ibp + beta * robust
    return robust, m_lo


def adversarial_point(bm, x, y, lo, hi, steps: int = 8, ball=None) -> torch.Tensor:
    """A point of the box ``[lo, hi]`` (within ``ball`` if given) where the margin
    ``f_y - max_{j != y} f_j`` is smallest, by PGD from ``x`` (no gradient to the model)."""
    from ..attack import pgd_minimize

    def margin(z):
        out = bm(z)
        true = out.gather(1, y[:, None]).squeeze(1)
        other = out.masked_fill(F.one_hot(y, out.shape[1]).bool(), float("-inf")).max(1).values
        return true - other

    x_adv, _ = pgd_minimize(margin, lo.detach(), hi.detach(), steps=steps, restarts=1,
                            start=x.detach().clamp(lo, hi), ball=ball)
    return x_adv.detach()


def sabr_box(x, x_adv, eps: float, lam: float, lower, upper):
    """SABR's small box: radius ``lam * eps`` around ``x_adv`` moved (if needed) so that it lies
    inside the l-inf ball of radius ``eps`` around ``x`` and inside ``[lower, upper]``."""
    r = lam * eps
    lo_c, hi_c = x - (eps - r), x + (eps - r)  # where the small box's centre may lie
    if lower is not None:
        lo_c = torch.maximum(lo_c, torch.as_tensor(lower + r, dtype=x.dtype))
    if upper is not None:
        hi_c = torch.minimum(hi_c, torch.as_tensor(upper - r, dtype=x.dtype))
    c = torch.minimum(torch.maximum(x_adv, lo_c), hi_c)
    lo, hi = c - r, c + r
    if lower is not None:
        lo = lo.clamp(min=lower)
    if upper is not None:
        hi = hi.clamp(max=upper)
    # a domain narrower than the small box: keep it inside the ball all the same
    return torch.maximum(lo, x - eps), torch.minimum(hi, x + eps)


def _mixed_robust(bm, x, y, eps, method, K, lower, upper, p, lam, alpha, steps):
    """The robust term ``(B,)`` and IBP-style margins ``(B, K-1)`` of the attack-mixing
    methods (see the module docstring)."""
    from ..perturbation import Box, LpBall

    if p != math.inf and method == "sabr":
        raise ValueError("sabr is defined for l-inf balls")
    C = margin_spec(y, K, dtype=x.dtype)
    ball = LpBall(float(eps), p, lower=lower, upper=upper)
    lo, hi = ball.box(x)
    was = bm.model.training
    bm.model.eval()  # the attack sees the model as evaluation will
    try:
        if method == "sabr":  # search where the small box's centre may lie
            x_adv = adversarial_point(bm, x, y, *_shrunk(x, eps, lam * eps, lower, upper),
                                      steps)
        else:
            pball = None if p == math.inf else (x, float(eps), p)
            x_adv = adversarial_point(bm, x, y, lo, hi, steps, pball)
    finally:
        bm.model.train(was)
    if method == "sabr":
        slo, shi = sabr_box(x, x_adv, eps, lam, lower, upper)
        m, _ = bm.compute_bounds(x_adv, Box(slo, shi), method="ibp", C=C, bound_upper=False)
        return robust_ce(m, reduction="none"), m
    m_ibp, _ = bm.compute_bounds(x, ball, method="ibp", C=C, bound_upper=False)
    adv_logits = bm(x_adv)
    m_adv = torch.einsum("bsk,bk->bs", C, adv_logits)
    if method == "cc-ibp":
        m = alpha * m_adv + (1.0 - alpha) * m_ibp
        return robust_ce(m, reduction="none"), m_ibp
    l_ibp = robust_ce(m_ibp, reduction="none")
    l_adv = F.cross_entropy(adv_logits, y, reduction="none")
    if method == "mtl-ibp":
        return alpha * l_adv + (1.0 - alpha) * l_ibp, m_ibp
    # exp-ibp: a weighted geometric mean (both losses are positive)
    tiny = torch.finfo(l_ibp.dtype).tiny
    return torch.exp(alpha * torch.log(l_adv.clamp_min(tiny))
                     + (1.0 - alpha) * torch.log(l_ibp.clamp_min(tiny))), m_ibp


def _shrunk(x, eps, r, lower, upper):
    """The box where SABR's small-box centre may lie: the ball shrunk by ``r``, within the
    domain shrunk by ``r`` (never empty: it always holds the clean point's projection)."""
    lo, hi = x - (eps - r), x + (eps - r)
    if lower is not None:
        lo = torch.maximum(lo, torch.full_like(x, lower + r).minimum(x))
    if upper is not None:
        hi = torch.minimum(hi, torch.full_like(x, upper - r).maximum(x))
    return lo, hi


@dataclass
class LossResult:
    """What one certified-training step computed.

    ``loss`` is the scalar to minimise; ``natural`` and ``robust`` the per-example losses
    (``(B,)``; ``robust`` is None for natural training); ``margins`` the margin lower bounds
    ``(B, K-1)`` (None for natural training); ``logits`` the clean outputs; ``reg`` the warm-up
    regulariser (0-dim tensor, 0 outside improved IBP's ramp).
    """

    loss: torch.Tensor
    natural: torch.Tensor
    robust: torch.Tensor | None
    margins: torch.Tensor | None
    logits: torch.Tensor
    reg: torch.Tensor


def certified_loss(bm, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float,
                   kappa: float = 0.0, beta: float = 0.0, eps_max: float | None = None,
                   reg_lambda: float = 0.5, reg_tol: float = 0.5,
                   lower: float | None = 0.0, upper: float | None = 1.0,
                   logits: torch.Tensor | None = None, loss_fusion: bool = False,
                   p: float = math.inf, sabr_lambda: float = 0.4, mix_alpha: float = 0.5,
                   attack_steps: int = 8, taps_split: str | None = None,
                   taps_grad_scale: float = 5.0) -> LossResult:
    """The training loss of one batch for ``method`` (see :data:`METHODS`).

    * ``"natural"``: CE(f(x), y).
    * ``"ibp"``: kappa CE(f(x), y) + (1 - kappa) CE([0, -m_IBP], 0).
    * ``"crown-ibp"``: the same with m = (1 - beta) m_IBP + beta m_CROWN-IBP; with
      ``loss_fusion`` the robust term is :func:`fused_robust_ce` instead (one backward row
      per example; ``margins`` are then IBP's).
    * ``"improved-ibp"``: CE([0, -m_IBP], 0) mixed with kappa like IBP (its recipes use
      kappa = 0) plus, while 0 < eps < eps_max, the warm-up regulariser
      reg_lambda (1 - eps / eps_max) (L_tightness + L_relu) of Shi et al. 2021.
    * ``"sabr"``, ``"mtl-ibp"``, ``"cc-ibp"``, ``"exp-ibp"``: the robust term of the module
      docstring (``sabr_lambda``, ``mix_alpha``; the attack takes ``attack_steps`` PGD steps
      from the clean point, in evaluation mode), mixed with the natural loss by kappa like
      IBP.
    * ``"taps"``, ``"staps"``: ``L_TAPS * L_IBP`` of :mod:`boundgraph.training.taps` (the
      head starts at ``taps_split``; ``attack_steps`` latent PGD steps; the gradient of
      ``L_TAPS`` scaled by ``taps_grad_scale``; STAPS' small box uses ``sabr_lambda``).

    ``logits`` may be passed when the caller already ran the clean forward pass (e.g. through a
    ``DistributedDataParallel`` wrapper); otherwise ``bm(x)`` is used, without autograd when
    the natural loss has weight 0 (``kappa = 0`` and ``eps > 0``; the returned logits then
    carry no gradient). At ``eps = 0`` the bound
    computation is skipped: the margins are then exact and the robust loss equals the natural
    one. The per-example losses average to ``loss`` (before the regulariser), so losses of data
    shards can be combined by weighting with shard sizes. ``p`` (1, 2 or inf, the default)
    is the norm of the perturbation ball.
    """
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not 0.0 < float(sabr_lambda) <= 1.0:
        raise ValueError(f"sabr_lambda must lie in (0, 1], got {sabr_lambda}")
    if not 0.0 <= float(mix_alpha) <= 1.0:
        raise ValueError(f"mix_alpha must lie in [0, 1], got {mix_alpha}")
    if loss_fusion and method != "crown-ibp":
        raise ValueError(f"loss fusion bounds CROWN-IBP's loss; method {method!r} has no "
                         "backward pass to fuse")
    if logits is None:
        if method != "natural" and eps > 0 and float(kappa) == 0.0:
            with torch.no_grad():  # the natural loss is not part of the objective
                logits = bm(x)
        else:
            logits = bm(x)
    natural = F.cross_entropy(logits, y, reduction="none")
    zero = logits.new_zeros(())
    if method == "natural":
        return LossResult(natural.mean(), natural.detach(), None, None, logits, zero)

    K = logits.shape[1]
    want_reg = (method == "improved-ibp" and reg_lambda > 0 and eps > 0
                and eps_max is not None and eps < eps_max)
    intervals = robust = None
    if eps == 0:
        C = margin_spec(y, K, dtype=logits.dtype)
        margins = torch.einsum("bsk,bk->bs", C, logits)
    elif method in TAPS_METHODS:
        if p != math.inf:
            raise ValueError(f"{method} is defined for l-inf balls")
        from .taps import taps_robust

        robust, margins = taps_robust(bm, x, y, eps, method=method, K=K, lower=lower,
                                      upper=upper, split=taps_split, steps=attack_steps,
                                      grad_scale=taps_grad_scale,
                                      sabr_lambda=float(sabr_lambda))
    elif method in ATTACK_METHODS:
        robust, margins = _mixed_robust(bm, x, y, eps, method, K, lower, upper, p,
                                        float(sabr_lambda), float(mix_alpha), attack_steps)
    elif loss_fusion:
        robust, margins = fused_robust_ce(bm, x, y, eps, beta=beta, num_classes=K, lower=lower,
                                          upper=upper, p=p)
    else:
        out = margin_bounds(bm, x, y, eps, beta=beta if method == "crown-ibp" else 0.0,
                            num_classes=K, lower=lower, upper=upper,
                            return_intermediate=want_reg, p=p)
        margins, intervals = out if want_reg else (out, None)
    if robust is None:
        robust = robust_ce(margins, reduction="none")
    loss = ibp_mix(natural.mean(), robust.mean(), kappa)
    reg = zero
    if want_reg:
        weight = reg_lambda * (1.0 - eps / eps_max)
        reg = weight * warmup_regularizer(bm.graph, intervals, tol=reg_tol)
        loss = loss + reg
    return LossResult(loss, natural.detach(), robust.detach(), margins.detach(), logits,
                      reg.detach())
