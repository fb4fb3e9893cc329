"""Certified training: losses, schedules (eps, kappa, beta, learning rate), IBP initialisation,
warm-up regularisers, the trainer loop, evaluation and checkpoints.

    import boundgraph as bg
    result = bg.training.fit(model, train_set, method="ibp", eps=0.1, epochs=10, out_dir="runs/x")
    report = bg.training.evaluate(result.model, test_set, eps=0.1)
    ckpt = bg.training.load_checkpoint("runs/x/best.pt")

Methods: natural, IBP (Gowal et al. 2018), CROWN-IBP (Zhang et al. 2020; optionally with the
loss fusion of Xu et al. 2020), improved IBP (Shi et al. 2021), and the methods that mix IBP
with an attack: SABR (Mueller et al. 2023), TAPS and STAPS (Mao et al. 2023), MTL-IBP, CC-IBP
and EXP-IBP (De Palma et al. 2024).
"""
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import TrainConfig, list_recipes, load_recipe, resolve_config
from .evaluate import evaluate
from .init import ibp_init
from .losses import METHODS, certified_loss, fused_robust_ce, ibp_mix, margin_bounds, robust_ce
from .regularizers import preactivation_nodes, warmup_regularizer
from .trainer import FitResult, fit

__all__ = ["fit", "evaluate", "load_checkpoint", "Checkpoint", "CheckpointError", "FitResult",
           "TrainConfig", "resolve_config", "list_recipes", "load_recipe", "METHODS",
           "certified_loss", "robust_ce", "ibp_mix", "margin_bounds", "fused_robust_ce", "ibp_init",
           "preactivation_nodes", "warmup_regularizer"]
