"""Training configuration: one flat dataclass, per-method defaults and named recipes.

A run's settings are resolved in this order (later wins):

1. the field defaults of :class:`TrainConfig`;
2. the defaults of the training method (:data:`METHOD_DEFAULTS`: e.g. improved IBP turns on
   IBP initialisation, the warm-up regulariser, gradient clipping and the smoothed ramp);
3. a recipe (``boundgraph/training/recipes/<name>.json``; its ``method`` is the default method,
   and its optional ``methods`` block holds settings for one method each, applied when that
   method trains);
4. explicit overrides (CLI options, keyword arguments of :func:`~boundgraph.training.fit`).

Epoch-valued settings (ramp, milestones) become step counts with
:func:`~boundgraph.training.schedules.schedules_from_config`; every schedule is evaluated per
batch from the global step.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from ..errors import InputError
from ..perturbation import norm_name
from .losses import METHODS
from .schedules import TrainingSchedules, schedules_from_config

__all__ = ["TrainConfig", "METHOD_DEFAULTS", "resolve_config", "default_ramp", "list_recipes",
           "load_recipe", "build_model"]


@dataclass
class TrainConfig:
    """Every setting of a training run (saved in checkpoints and ``config.json``).

    Model and data: ``model`` (a :data:`models.MODELS` name, or None for a user-built model),
    ``model_kwargs``, ``normalize`` (put the data set's mean/std normalisation inside the
    model), ``dataset``, ``limit`` (use the first ``limit`` training images),
    ``val_fraction`` (held-out part of the training split used for validation and best-model
    selection; the test split is never used), ``val_limit`` (evaluate at most this many
    validation images per epoch).

    Objective: ``method`` (natural, ibp, crown-ibp, improved-ibp, sabr, taps, staps,
    mtl-ibp, cc-ibp, exp-ibp), ``eps`` (training target),
    ``eval_eps`` (validation radius; defaults to ``eps``), ``norm`` (of the perturbation ball:
    ``"inf"``, the default, ``"2"`` or ``"1"``), ``domain`` (input range, [0, 1]),
    ``kappa_start/end``, ``beta_start/end``, ``reg_lambda``/``reg_tol`` (warm-up regulariser;
    lambda 0 disables it), ``ibp_init``, ``loss_fusion`` (CROWN-IBP only: bound the loss with
    one backward row per example instead of K-1; see
    :func:`~boundgraph.training.losses.fused_robust_ce`), ``sabr_lambda`` (SABR's small-box
    ratio, in (0, 1]), ``mix_alpha`` (the attack's weight in MTL-IBP, CC-IBP and EXP-IBP, in
    [0, 1]), ``attack_steps`` (PGD steps of the attack inside those losses, and of TAPS'
    latent attack), ``taps_split`` (TAPS/STAPS: the module or graph node where the classifier
    head starts; None cuts before the last two linear layers), ``taps_grad_scale`` (TAPS'
    gradient expansion of its estimated-bound loss).

    Schedule and optimiser: ``epochs``, ``batch_size`` (global, split over processes),
    ``optimizer`` (adam or sgd), ``lr``, ``momentum``, ``weight_decay``, ``lr_milestones``
    (epochs), ``lr_factor``, ``warmup_epochs`` (eps = 0), ``eps_start_epoch``,
    ``eps_ramp_epochs``, ``eps_schedule`` (linear, smoothed, step), ``eps_poly_frac``,
    ``grad_clip`` (max gradient norm, None for none), ``time_limit`` (minutes of training
    steps, validation excluded: the run stops after the epoch when the next one would pass the
    limit, judged by the last epoch's time; None for no limit), ``schedule_by`` (``"epochs"``:
    the schedule is laid out over ``epochs``, so pick ``epochs`` to fit the limit;
    ``"time"``: every schedule position, read as a fraction of ``epochs``, is placed at that
    fraction of ``time_limit`` instead, and the run trains until the limit is reached, stopping
    within an epoch if need be. A 120-epoch recipe with a 20-epoch ramp then ramps eps over the
    first sixth of the training time whatever one step costs, which is what makes budgets of
    methods with very different step costs equal and their schedules alike).

    Evaluation during training: ``pgd_steps``, ``pgd_restarts``, ``select_metric``
    (``"auto"``: certified error at ``eval_eps`` for certified methods, clean error for natural
    training; or one of the validation metric names). Best-model selection only considers
    epochs that end with eps at its target, unless none does yet.

    Without a recipe or explicit ``warmup_epochs`` / ``eps_ramp_epochs`` / ``eps_start_epoch``,
    :func:`resolve_config` picks :func:`default_ramp` (1 natural epoch, then a ramp over half
    of the remaining epochs).

    ``seed`` fixes initialisation, data order (shuffling depends on (seed, epoch) only) and the
    validation split.
    """

    method: str = "ibp"
    eps: float = 0.1
    eval_eps: float | None = None
    norm: str = "inf"
    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    normalize: bool = False
    dataset: str | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    val_limit: int | None = None
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: list = field(default_factory=list)
    lr_factor: float = 0.2
    warmup_epochs: float = 0.0
    eps_start_epoch: float | None = None
    eps_ramp_epochs: float = 0.0
    eps_schedule: str = "linear"
    eps_poly_frac: float = 0.25
    kappa_start: float = 1.0
    kappa_end: float = 0.5
    beta_start: float = 1.0
    beta_end: float = 0.0
    grad_clip: float | None = None
    time_limit: float | None = None
    schedule_by: str = "epochs"
    ibp_init: bool = False
    loss_fusion: bool = False
    reg_lambda: float = 0.0
    reg_tol: float = 0.5
    sabr_lambda: float = 0.4
    mix_alpha: float = 0.5
    attack_steps: int = 8
    taps_split: str | None = None
    taps_grad_scale: float = 5.0
    domain: list = field(default_factory=lambda: [0.0, 1.0])
    pgd_steps: int = 10
    pgd_restarts: int = 1
    select_metric: str = "auto"
    seed: int = 0
    recipe: str | None = None

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown training setting(s): {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(names))}")
        cfg = cls(**dict(d))
        cfg.validate()
        return cfg

    @property
    def target_eval_eps(self) -> float:
        return float(self.eps if self.eval_eps is None else self.eval_eps)

    def validate(self) -> None:
        """Raise :class:`~boundgraph.InputError` for a setting out of range."""
        if self.method not in METHODS:
            raise InputError(f"unknown training method {self.method!r}; choose one of "
                             f"{', '.join(METHODS)}")
        for name in ("eps", "lr", "lr_factor", "warmup_epochs", "eps_ramp_epochs",
                     "weight_decay", "reg_lambda", "reg_tol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        try:
            self.norm = norm_name(self.norm)
        except InputError:
            raise InputError(f"norm must be 1, 2 or inf, got {self.norm!r}") from None
        if self.eval_eps is not None and (not math.isfinite(self.eval_eps) or self.eval_eps < 0):
            raise InputError(f"eval_eps must be >= 0, got {self.eval_eps!r}")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("pgd_steps", "pgd_restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("limit", "val_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"{name} must be a positive integer or null, got {v!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must lie strictly between 0 and 1, got "
                             f"{self.val_fraction!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError(f"grad_clip must be > 0 or null, got {self.grad_clip!r}")
        if self.time_limit is not None and not (
                isinstance(self.time_limit, (int, float)) and math.isfinite(self.time_limit)
                and self.time_limit > 0):
            raise InputError(f"time_limit must be a number of minutes > 0 or null, got "
                             f"{self.time_limit!r}")
        if self.schedule_by not in ("epochs", "time"):
            raise InputError(f"schedule_by must be 'epochs' or 'time', got "
                             f"{self.schedule_by!r}")
        if self.schedule_by == "time" and self.time_limit is None:
            raise InputError("schedule_by 'time' needs time_limit (the training minutes the "
                             "schedule is laid out over)")
        if not isinstance(self.loss_fusion, bool):
            raise InputError(f"loss_fusion must be true or false, got {self.loss_fusion!r}")
        if self.loss_fusion and self.method != "crown-ibp":
            raise InputError(f"loss_fusion applies to crown-ibp training only (method is "
                             f"{self.method!r})")
        if not (isinstance(self.sabr_lambda, (int, float)) and 0.0 < self.sabr_lambda <= 1.0):
            raise InputError(f"sabr_lambda must lie in (0, 1], got {self.sabr_lambda!r}")
        if not (isinstance(self.mix_alpha, (int, float)) and 0.0 <= self.mix_alpha <= 1.0):
            raise InputError(f"mix_alpha must lie in [0, 1], got {self.mix_alpha!r}")
        if isinstance(self.attack_steps, bool) or not isinstance(self.attack_steps, int) or \
                self.attack_steps < 1:
            raise InputError(f"attack_steps must be a positive integer, got "
                             f"{self.attack_steps!r}")
        if self.method in ("sabr", "taps", "staps") and self.norm != "inf":
            raise InputError(f"{self.method} is defined for l-inf balls (norm inf)")
        if not (isinstance(self.taps_grad_scale, (int, float))
                and math.isfinite(self.taps_grad_scale) and self.taps_grad_scale > 0):
            raise InputError(f"taps_grad_scale must be a number > 0, got "
                             f"{self.taps_grad_scale!r}")
        if self.taps_split is not None and not (isinstance(self.taps_split, str)
                                                and self.taps_split):
            raise InputError(f"taps_split must be a module or node name, got "
                             f"{self.taps_split!r}")
        if len(self.domain) != 2 or not self.domain[0] < self.domain[1]:
            raise InputError(f"domain must be [lower, upper] with lower < upper, got "
                             f"{self.domain!r}")
        try:
            self.schedules(1)
        except ValueError as e:
            raise InputError(str(e)) from None

    def schedule_settings(self) -> dict:
        """The keys :func:`schedules_from_config` reads."""
        d = {k: getattr(self, k) for k in (
            "eps", "warmup_epochs", "eps_ramp_epochs", "eps_schedule", "eps_poly_frac",
            "kappa_start", "kappa_end", "beta_start", "beta_end", "lr", "lr_milestones",
            "lr_factor")}
        if self.eps_start_epoch is not None:
            d["eps_start_epoch"] = self.eps_start_epoch
        if self.method == "natural":
            # plain training: no perturbation, natural loss only
            d.update(eps=0.0, kappa_start=1.0, kappa_end=1.0)
        return d

    def schedules(self, steps_per_epoch: int) -> TrainingSchedules:
        return schedules_from_config(self.schedule_settings(), steps_per_epoch)


#: settings each training method brings before a recipe's and the user's.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "natural": dict(kappa_start=1.0, kappa_end=1.0),
    # Gowal et al. 2018: kappa from 1 to 0.5 while eps ramps
    "ibp": dict(kappa_start=1.0, kappa_end=0.5),
    # Zhang et al. 2020: beta from 1 (CROWN-IBP) to 0 (IBP), kappa from 1 to 0
    "crown-ibp": dict(kappa_start=1.0, kappa_end=0.0, beta_start=1.0, beta_end=0.0),
    # Shi et al. 2021: robust loss only, IBP init, warm-up regulariser, grad clip, smoothed ramp
    "improved-ibp": dict(kappa_start=0.0, kappa_end=0.0, ibp_init=True, reg_lambda=0.5,
                         reg_tol=0.5, grad_clip=10.0, eps_schedule="smoothed"),
    # Mueller et al. 2023, Mao et al. 2023 and De Palma et al. 2024: the robust (mixed) loss
    # alone, IBP initialisation, gradient clipping and the smoothed ramp of Shi et al. 2021
    **{m: dict(kappa_start=0.0, kappa_end=0.0, ibp_init=True, grad_clip=10.0,
               eps_schedule="smoothed")
       for m in ("sabr", "taps", "staps", "mtl-ibp", "cc-ibp", "exp-ibp")},
}


def default_ramp(epochs: int) -> dict:
    """The eps schedule used when neither a recipe nor the caller gives one: one natural
    epoch (from 3 epochs on), then a linear ramp over half of the remaining epochs, then the
    target eps (certified training from the full eps at once often fails to learn)."""
    warmup = 1 if epochs >= 3 else 0
    ramp = max(1, (epochs - warmup) // 2) if epochs >= 2 else 0
    return {"warmup_epochs": warmup, "eps_ramp_epochs": ramp}


def list_recipes() -> list[str]:
    """Names of the bundled recipes."""
    folder = resources.files(__package__) / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_recipe(name: str) -> dict:
    """The settings of a bundled recipe (``description`` included)."""
    path = resources.files(__package__) / "recipes" / f"{name}.json"
    if not path.is_file():
        raise InputError(f"unknown recipe {name!r}; known recipes: {', '.join(list_recipes())}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:  # pragma: no cover - bundled files are valid
        raise InputError(f"recipe {name!r} is not valid JSON: {e}") from None


def resolve_config(method: str | None = None, recipe: str | None = None,
                   overrides: Mapping | None = None) -> TrainConfig:
    """Merge defaults, method defaults, a recipe and overrides into a validated config.

    ``method`` falls back to the recipe's method, then to ``"ibp"``. Overrides whose value is
    None are ignored (so unset CLI options keep the recipe's values).
    """
    settings: dict[str, Any] = {}
    rec: dict[str, Any] = {}
    per_method: dict[str, dict] = {}
    if recipe is not None:
        rec = {k: v for k, v in load_recipe(recipe).items() if k != "description"}
        per_method = rec.pop("methods", None) or {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    method = method or overrides.pop("method", None) or rec.get("method") or "ibp"
    overrides.pop("method", None)
    if method not in METHODS:
        raise InputError(f"unknown training method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    settings.update(METHOD_DEFAULTS[method])
    settings.update(rec)
    if rec.get("method") not in (None, method):
        # a recipe written for another method: keep its schedule, not its method's extras
        settings.update(METHOD_DEFAULTS[method])
    settings.update(per_method.get(method, {}))
    settings.update(overrides)
    settings["method"] = method
    if not {"warmup_epochs", "eps_ramp_epochs", "eps_start_epoch"} & set(settings):
        settings.update(default_ramp(int(settings.get("epochs", TrainConfig.epochs))))
    if recipe is not None:
        settings["recipe"] = recipe
    return TrainConfig.from_dict(settings)


def build_model(cfg: TrainConfig | Mapping):
    """Build the zoo model a config names (with the data set's shape and, if asked, its
    input normalisation inside the model)."""
    import models

    from ..data import dataset_info

    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    name = d.get("model")
    if name is None:
        raise InputError("the config names no model; pass the model yourself")
    if name not in models.MODELS:
        raise InputError(f"unknown model {name!r}; known models: "
                         f"{', '.join(sorted(models.MODELS))}")
    kwargs = dict(d.get("model_kwargs") or {})
    info = None
    if d.get("dataset"):
        try:
            info = dataset_info(d["dataset"])
        except ValueError as e:
            raise InputError(str(e)) from None
        kwargs.setdefault("in_channels", info.channels)
        kwargs.setdefault("in_size", info.size)
        kwargs.setdefault("num_classes", info.num_classes)
    try:
        net = models.get_model(name, **kwargs)
    except TypeError as e:
        raise InputError(f"bad model_kwargs for {name}: {e}") from None
    if d.get("normalize"):
        if info is None:
            raise InputError("normalize needs a dataset (for its mean and std)")
        net = models.normalized(net, info.mean, info.std)
    return net
