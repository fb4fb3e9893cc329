"""Bundled recipes: every one resolves to a valid config for its own method and for each method
of its per-method block, and the GPU-scale CNN7 recipes of the attack-mixing methods train a
few batches here (on MNIST-shaped or CIFAR-shaped random images: CIFAR-10 is not available
offline)."""
from __future__ import annotations

import pytest
import torch

from boundgraph.training import fit
from boundgraph.training.config import list_recipes, load_recipe, resolve_config

MIXED = [r for r in list_recipes() if r.endswith("-mixed")]
METHODS = ("sabr", "taps", "staps", "mtl-ibp", "cc-ibp", "exp-ibp")


def test_every_bundled_recipe_resolves_for_its_method_and_its_per_method_settings():
    assert len(MIXED) == 4
    for name in list_recipes():
        rec = load_recipe(name)
        assert rec["description"]
        cfg = resolve_config(None, name)
        assert cfg.method == rec["method"] and cfg.recipe == name
        for method, block in (rec.get("methods") or {}).items():
            cfg = resolve_config(method, name)
            for key, value in block.items():
                assert getattr(cfg, key) == value, (name, method, key)


def test_the_mixed_recipes_cover_every_attack_mixing_method_and_keep_their_schedule():
    for name in MIXED:
        rec = load_recipe(name)
        for method in METHODS:
            cfg = resolve_config(method, name)
            assert cfg.model == "cnn7" and cfg.epochs == rec["epochs"]
            assert cfg.lr_milestones == rec["lr_milestones"] and cfg.grad_clip == 10.0
    # a per-method setting applies to its method only
    assert resolve_config("sabr", "mnist-cnn7-eps03-mixed").sabr_lambda == 0.9
    assert resolve_config("mtl-ibp", "mnist-cnn7-eps03-mixed").sabr_lambda == 0.4
    # and explicit options still win
    assert resolve_config("sabr", "mnist-cnn7-eps03-mixed",
                          {"sabr_lambda": 0.5}).sabr_lambda == 0.5


@pytest.mark.parametrize("name", MIXED)
def test_the_cnn7_recipes_of_the_mixed_methods_train_a_few_batches(name):
    rec = load_recipe(name)
    channels, size = (1, 28) if rec["dataset"] == "mnist" else (3, 32)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(12, channels, size, size, generator=g), torch.randint(0, 10, (12,),
                                                                             generator=g))
    # the recipe's model and method settings at toy width, two batches of one epoch
    for method in METHODS:
        cfg = resolve_config(method, name, dict(
            epochs=1, batch_size=4, val_limit=4, pgd_steps=1, lr_milestones=[],
            warmup_epochs=0, eps_ramp_epochs=0.5, attack_steps=2,
            model_kwargs={"width": 4, "linear_size": 16}))
        res = fit(None, data, cfg, progress=False, val_fraction=0.34)
        assert len(res.history) == 1, (name, method)
        assert torch.isfinite(torch.tensor(res.history[0]["loss"]))

