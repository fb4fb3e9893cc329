"""Per-batch schedules for certified training: eps, kappa, beta and the learning rate.

Certified training ramps the perturbation radius eps from 0 to its target (Gowal et al. 2018),
mixes the natural and robust losses with a weight kappa that moves from 1 (natural only) to
kappa_end, and, for CROWN-IBP (Zhang et al. 2020), blends the CROWN-IBP and IBP margins with a
weight beta that moves from 1 to beta_end over the same window. Shi et al. (2021) use a short
"smoothed" eps ramp that starts as a polynomial so that eps grows gently at first.

Every schedule here is a small frozen dataclass: stateless, picklable, and called with the
global batch index, ``schedule(step) -> float`` (0-based; floats allowed, e.g. a fractional
epoch times the steps per epoch). Because they hold no state, resuming a run needs nothing but
the step counter. The trainer passes the batch counter, or, when a run lays its schedule out
over a time limit (``schedule_by="time"``), the training time spent expressed as the same
fraction of all planned steps.

The value at ``step`` is the value to use for the batch with that index: a ramp that starts at
``start_step`` and lasts ``ramp_steps`` gives its start value at ``start_step`` and its end value
from ``start_step + ramp_steps`` on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

__all__ = [
    "EPS_KINDS",
    "EpsSchedule",
    "LinearRamp",
    "StepLR",
    "TrainingSchedules",
    "lr_milestones",
    "schedules_from_config",
]

#: The ramp shapes :class:`EpsSchedule` knows.
EPS_KINDS = ("linear", "smoothed", "step")


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _non_negative(name: str, value) -> float:
    v = _finite(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def _step_value(step) -> float:
    s = float(step)
    if math.isnan(s):
        raise ValueError("step must not be NaN")
    return s


@dataclass(frozen=True)
class EpsSchedule:
    """Perturbation radius per batch: 0, then a ramp to ``eps_max``, then ``eps_max``.

    Args:
        eps_max: final radius (>= 0).
        start_step: first step of the ramp; eps is 0 for every step before it (>= 0).
        ramp_steps: ramp length in steps (>= 0); eps reaches ``eps_max`` at
            ``start_step + ramp_steps`` and stays there. ``ramp_steps = 0`` jumps to
            ``eps_max`` at ``start_step``.
        kind: ``"linear"``, ``"smoothed"`` or ``"step"`` (jump from 0 to ``eps_max`` at
            ``start_step``; ``ramp_steps`` is not used).
        poly_frac: for ``"smoothed"``, the fraction f in [0, 1] of the ramp spent on the
            polynomial part (0.25 as in Shi et al. 2021; 0 gives the linear ramp, 1 a pure
            quartic).

    Smoothed ramp. Write u = (step - start_step) / ramp_steps in [0, 1] and E = eps_max. On
    [0, f] eps is p(u) = a u^4; on [f, 1] it is the line through (f, p(f)) with slope p'(f),
    L(u) = p(f) + p'(f) (u - f), which must end at L(1) = E:

        p(f) = a f^4,   p'(f) = 4 a f^3,
        L(1) = a f^4 + 4 a f^3 (1 - f) = a f^3 (4 - 3 f) = E   =>   a = E / (f^3 (4 - 3 f)).

    Hence eps = E u^4 / (f^3 (4 - 3f)) for u <= f and eps = E (4u - 3f) / (4 - 3f) for u >= f.
    Both pieces give E f / (4 - 3f) at u = f with slope 4E / (4 - 3f) (per unit of u; divide by
    ramp_steps for per step), so value and slope are continuous; the slope is >= 0 throughout,
    so the ramp is monotone non-decreasing, and it is exactly E at u = 1. Compared with the
    linear ramp (slope E), the linear part is steeper by the factor 4 / (4 - 3f) (1.23 for
    f = 0.25) to make up for the slow start.
    """

    eps_max: float
    start_step: float
    ramp_steps: float
    kind: str = "linear"
    poly_frac: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps_max", _non_negative("eps_max", self.eps_max))
        object.__setattr__(self, "start_step", _non_negative("start_step", self.start_step))
        object.__setattr__(self, "ramp_steps", _non_negative("ramp_steps", self.ramp_steps))
        f = _finite("poly_frac", self.poly_frac)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"poly_frac must lie in [0, 1], got {self.poly_frac!r}")
        object.__setattr__(self, "poly_frac", f)
        if self.kind not in EPS_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EPS_KINDS)}; got {self.kind!r}")

    @property
    def end_step(self) -> float:
        """The first step at which eps equals ``eps_max``."""
        return self.start_step if self.kind == "step" else self.start_step + self.ramp_steps

    def __call__(self, step) -> float:
        """Return eps for the batch with global index ``step``."""
        t = _step_value(step) - self.start_step
        if t < 0:
            return 0.0
        if self.kind == "step" or t >= self.ramp_steps:
            return self.eps_max
        u = t / self.ramp_steps
        E = self.eps_max
        f = self.poly_frac
        if self.kind == "linear" or f == 0.0:
            return E * u
        denom = 4.0 - 3.0 * f
        if u <= f:
            return E * u**4 / (f**3 * denom)
        return min(E, E * (4.0 * u - 3.0 * f) / denom)

    def fraction(self, step) -> float:
        """Return eps(step) / eps_max in [0, 1] (1 when ``eps_max`` is 0 after the start).

        Handy for weights such as the warm-up regulariser's lambda * (1 - eps / eps_max).
        """
        if self.eps_max == 0.0:
            return 0.0 if _step_value(step) < self.start_step else 1.0
        return self(step) / self.eps_max


@dataclass(frozen=True)
class LinearRamp:
    """A value that moves linearly from ``start_value`` to ``end_value``; constant outside.

    ``start_value`` for steps before ``start_step``, ``end_value`` from
    ``start_step + ramp_steps`` on, linear in between (used for kappa 1 -> kappa_end and beta
    1 -> beta_end while eps ramps). ``ramp_steps = 0`` jumps at ``start_step``. The values may
    increase or decrease.
    """

    start_value: float
    end_value: float
    start_step: float
    ramp_steps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_value", _finite("start_value", self.start_value))
        object.__setattr__(self, "end_value", _finite("end_value", self.end_value))
        object.__setattr__(self, "start_step", _non_negative("start_step", self.start_step))
        object.__setattr__(self, "ramp_steps", _non_negative("ramp_steps", self.ramp_steps))

    @property
    def end_step(self) -> float:
        """The first step at which the value equals ``end_value``."""
        return self.start_step + self.ramp_steps

    def __call__(self, step) -> float:
        """Return the value for the batch with global index ``step``."""
        t = _step_value(step) - self.start_step
        if t < 0:
            return self.start_value
        if t >= self.ramp_steps:
            return self.end_value
        u = t / self.ramp_steps
        return self.start_value + (self.end_value - self.start_value) * u


@dataclass(frozen=True)
class StepLR:
    """Learning rate that is multiplied by ``factor`` at each milestone step.

    lr(step) = base_lr * factor ** k, where k is the number of milestones m with step >= m
    (a milestone listed twice decays twice, as in ``torch.optim.lr_scheduler.MultiStepLR``).
    Milestones are global batch indices; they are stored sorted.
    """

    base_lr: float
    milestones: tuple[int, ...] = field(default=())
    factor: float = 0.2

    def __post_init__(self) -> None:
        base = _finite("base_lr", self.base_lr)
        if base <= 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr!r}")
        object.__setattr__(self, "base_lr", base)
        factor = _finite("factor", self.factor)
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {self.factor!r}")
        object.__setattr__(self, "factor", factor)
        ms = []
        for m in self.milestones:
            v = _non_negative("milestone", m)
            if v != int(v):
                raise ValueError(f"milestones must be whole step numbers, got {m!r}")
            ms.append(int(v))
        object.__setattr__(self, "milestones", tuple(sorted(ms)))

    def __call__(self, step) -> float:
        """Return the learning rate for the batch with global index ``step``."""
        s = _step_value(step)
        k = sum(1 for m in self.milestones if s >= m)
        return self.base_lr * self.factor**k


def lr_milestones(base_lr: float, milestones: Iterable[int], factor: float = 0.2) -> StepLR:
    """Return a :class:`StepLR`: ``base_lr`` times ``factor`` per milestone step passed."""
    return StepLR(base_lr, tuple(milestones), factor)


@dataclass(frozen=True)
class TrainingSchedules:
    """The schedules of one certified-training run (see :func:`schedules_from_config`).

    Attributes:
        eps: perturbation radius.
        kappa: weight of the natural loss (1 - kappa goes to the robust loss).
        beta: weight of the CROWN-IBP margin (1 - beta goes to the IBP margin).
        lr: learning rate, or None when the config gave no ``lr``.
    """

    eps: EpsSchedule
    kappa: LinearRamp
    beta: LinearRamp
    lr: StepLR | None = None

    def __call__(self, step) -> dict[str, float]:
        """Return ``{"eps", "kappa", "beta"[, "lr"]}`` for the batch with index ``step``."""
        out = {"eps": self.eps(step), "kappa": self.kappa(step), "beta": self.beta(step)}
        if self.lr is not None:
            out["lr"] = self.lr(step)
        return out


_CONFIG_KEYS = {
    "eps", "eps_start_epoch", "eps_ramp_epochs", "eps_schedule", "eps_poly_frac",
    "kappa_start", "kappa_end", "beta_start", "beta_end", "warmup_epochs",
    "lr", "lr_milestones", "lr_factor",
}
_CONFIG_PREFIXES = ("eps_", "kappa_", "beta_", "warmup", "lr_")


def schedules_from_config(cfg: Mapping, steps_per_epoch: int) -> TrainingSchedules:
    """Build the eps / kappa / beta (and optionally lr) schedules from epoch-based settings.

    Keys of ``cfg`` (epochs may be fractional; they become ``round(epochs * steps_per_epoch)``
    steps):

    * ``eps`` (required): target radius.
    * ``warmup_epochs`` (0): natural-training epochs (eps = 0, kappa = kappa_start) before the
      ramp.
    * ``eps_start_epoch`` (= ``warmup_epochs``): epoch at which the ramp starts; must not be
      before the warm-up ends.
    * ``eps_ramp_epochs`` (0): ramp length in epochs.
    * ``eps_schedule`` ("linear"): "linear", "smoothed" or "step"; ``eps_poly_frac`` (0.25) for
      "smoothed".
    * ``kappa_start`` (1.0), ``kappa_end`` (0.0): natural-loss weight, ramped linearly over the
      eps ramp window. Gowal et al. (2018) use kappa_end = 0.5.
    * ``beta_start`` (1.0), ``beta_end`` (0.0): CROWN-IBP weight, ramped over the same window.
    * ``lr`` (optional), ``lr_milestones`` (epochs, default none), ``lr_factor`` (0.2): a
      :class:`StepLR`; without ``lr`` the result's ``lr`` is None.

    Other keys are ignored (the dict may hold the whole training config), except unknown keys
    that start with ``eps_``, ``kappa_``, ``beta_``, ``warmup`` or ``lr_``, which are likely
    typos and raise ValueError, as do missing ``eps`` and values out of range (kappa and beta
    must lie in [0, 1]).
    """
    if isinstance(steps_per_epoch, bool) or int(steps_per_epoch) != steps_per_epoch \
            or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    spe = int(steps_per_epoch)
    unknown = sorted(k for k in cfg if isinstance(k, str) and k not in _CONFIG_KEYS
                     and k.startswith(_CONFIG_PREFIXES))
    if unknown:
        raise ValueError(
            f"unknown schedule setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_CONFIG_KEYS))}"
        )
    if "eps" not in cfg:
        raise ValueError("schedule config needs 'eps' (the target perturbation radius)")

    def steps(key: str, epochs) -> int:
        return int(round(_non_negative(key, epochs) * spe))

    def weight(key: str, default: float) -> float:
        v = _finite(key, cfg.get(key, default))
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1], got {cfg.get(key)!r}")
        return v

    warmup = _non_negative("warmup_epochs", cfg.get("warmup_epochs", 0))
    start_epoch = _non_negative("eps_start_epoch", cfg.get("eps_start_epoch", warmup))
    if start_epoch < warmup:
        raise ValueError(
            f"eps_start_epoch ({start_epoch}) is before the end of warmup_epochs ({warmup})"
        )
    start = steps("eps_start_epoch", start_epoch)
    ramp = steps("eps_ramp_epochs", cfg.get("eps_ramp_epochs", 0))

    eps = EpsSchedule(
        _non_negative("eps", cfg["eps"]), start, ramp,
        kind=cfg.get("eps_schedule", "linear"),
        poly_frac=cfg.get("eps_poly_frac", 0.25),
    )
    # "step" eps jumps at the start, so the weights jump with it.
    window = 0 if eps.kind == "step" else ramp
    kappa = LinearRamp(weight("kappa_start", 1.0), weight("kappa_end", 0.0), start, window)
    beta = LinearRamp(weight("beta_start", 1.0), weight("beta_end", 0.0), start, window)

    lr = None
    if cfg.get("lr") is not None:
        milestones = [steps("lr_milestones", e) for e in cfg.get("lr_milestones") or ()]
        lr = StepLR(cfg["lr"], tuple(milestones), cfg.get("lr_factor", 0.2))
    elif cfg.get("lr_milestones"):
        raise ValueError("lr_milestones given without lr (the base learning rate)")
    return TrainingSchedules(eps=eps, kappa=kappa, beta=beta, lr=lr)
