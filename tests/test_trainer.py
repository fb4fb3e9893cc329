"""The trainer loop: learning, kill-and-resume, checkpoints, logs, best-model selection and
evaluation, on seeded Gaussian blobs with tiny models."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import boundgraph as bg
from boundgraph.training import (CheckpointError, evaluate, fit, load_checkpoint,
                                 resolve_config)
from boundgraph.training.losses import margin_bounds, robust_ce
from boundgraph.training.trainer import METRIC_COLUMNS, plot_history

EPS = 0.04


def blobs(n=320, dim=8, classes=3, seed=0):
    """Separable Gaussian blobs in [0, 1]^dim (class centres 0.6 apart, noise 0.04)."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.eye(classes, dim)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (centres[y] + 0.04 * torch.randn(n, dim, generator=g)).clamp(0, 1)
    return TensorDataset(x, y)


def mlp(dim=8, classes=3, bn=False):
    torch.manual_seed(0)
    layers = [nn.Linear(dim, 32)] + ([nn.BatchNorm1d(32)] if bn else []) + [nn.ReLU(),
                                                                          nn.Linear(32, classes)]
    return nn.Sequential(*layers)


FAST = dict(eps=EPS, epochs=3, batch_size=32, lr=2e-2, warmup_epochs=0, eps_ramp_epochs=0,
            pgd_steps=3, progress=False)


def robust_loss(model, data, eps):
    x, y = data.tensors
    model.eval()
    with torch.no_grad():
        bm = bg.BoundedModule(model, x[:2])
        return float(robust_ce(margin_bounds(bm, x, y, eps)))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown-ibp-fused", "improved-ibp"])
def test_a_few_steps_of_each_certified_method_reduce_the_certified_loss(method):
    data = blobs()
    model = mlp(bn=method == "improved-ibp")
    before = robust_loss(model, data, EPS)
    extra = {"beta_end": 0.5} if method.startswith("crown-ibp") else {}  # keep CROWN-IBP in
    if method == "crown-ibp-fused":
        method, extra["loss_fusion"] = "crown-ibp", True
    result = fit(model, data, method=method, **FAST, **extra)
    after = robust_loss(result.model, data, EPS)
    assert after < 0.6 * before, (before, after)
    assert len(result.history) == 3
    assert result.history[-1]["val_certified_error_ibp"] <= result.history[0][
        "val_certified_error_ibp"]


def test_natural_training_reduces_the_natural_loss():
    data = blobs()
    model = mlp()
    x, y = data.tensors
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    result = fit(model, data, method="natural", **FAST)
    with torch.no_grad():
        after = float(F.cross_entropy(result.model(x), y))
    assert after < 0.5 * before
    assert result.history[-1]["train_certified_error"] is None


def _state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("time_s", "eval_time_s")} for r in rows]


class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path):
    data = blobs()
    cfg = dict(method="improved-ibp", eps=EPS, epochs=4, batch_size=32, lr=5e-3,
               warmup_epochs=1, eps_ramp_epochs=2, pgd_steps=2, pgd_restarts=2, seed=3,
               progress=False)
    full = fit(mlp(bn=True), data, out_dir=tmp_path / "full", **cfg)

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(mlp(bn=True), data, out_dir=tmp_path / "cut", callbacks=[kill_after_two], **cfg)
    # a leftover temp file from a write that was interrupted must not matter
    (tmp_path / "cut" / ".last.pt.tmp-999").write_bytes(b"partial")
    assert load_checkpoint(tmp_path / "cut" / "last.pt", model=mlp(bn=True)).epoch == 2
    resumed = fit(mlp(bn=True), data, out_dir=tmp_path / "cut", resume=True, **cfg)

    _state_equal(full.model.state_dict(), resumed.model.state_dict())
    assert _strip_times(full.history) == _strip_times(resumed.history)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4 * math.ceil(288 / 32)
    _state_equal(a["optimizer_state"]["state"][0], b["optimizer_state"]["state"][0])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # logs hold each epoch once, in order
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_checkpoint_contents_logs_and_best_model_on_validation(tmp_path):
    data = blobs(n=200)
    out = tmp_path / "run"
    result = fit(mlp(), data, out_dir=out, method="ibp", **{**FAST, "epochs": 2})
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "metrics.png",
                 "config.json"):
        assert (out / name).exists(), name
    raw = torch.load(out / "last.pt", weights_only=True)
    for key in ("model_state", "optimizer_state", "schedules", "rng", "epoch", "global_step",
                "config", "model_name", "model_kwargs", "history", "best"):
        assert key in raw, key
    assert set(raw["rng"]) >= {"torch", "numpy", "python"}
    assert raw["schedules"]["eps"]["eps_max"] == EPS
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(METRIC_COLUMNS)
    assert len(csv_lines) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["val_examples"] == 20 and config["train_examples"] == 180
    rows = result.history
    assert all(r["val_examples"] == 20 for r in rows)
    best_epoch = min(rows, key=lambda r: (r["val_certified_error_ibp"], r["val_clean_error"]))
    assert load_checkpoint(out / "best.pt", model=mlp()).epoch == result.best["epoch"]
    assert result.best["val_certified_error_ibp"] == best_epoch["val_certified_error_ibp"]
    # a finished run is not silently overwritten
    with pytest.raises(bg.InputError, match="already holds"):
        fit(mlp(), data, out_dir=out, method="ibp", **{**FAST, "epochs": 1})


def test_corrupt_or_foreign_checkpoints_give_one_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    data = blobs(n=100)
    fit(mlp(), data, out_dir=tmp_path / "run", method="ibp", **{**FAST, "epochs": 1})
    good = (tmp_path / "run" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(truncated, model=mlp())
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a boundgraph"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "run" / "last.pt", model=mlp(dim=5))


def test_evaluate_reports_ordered_error_fractions():
    data = blobs(n=200)
    result = fit(mlp(), data, method="ibp", **FAST)
    test = blobs(n=60, seed=5)
    report = evaluate(result.model, test, EPS, crown_limit=25, pgd_steps=5, progress=False)
    assert report["num_examples"] == 60 and report["num_examples_crown"] == 25
    for key in ("clean_error", "pgd_error", "certified_error_ibp",
                "certified_error_crown_ibp", "certified_error_crown"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["clean_error"] <= report["pgd_error"] <= report["certified_error_ibp"]
    assert report["certified_error_crown_ibp"] <= report["certified_error_ibp"]
    only = evaluate(result.model, test, EPS, methods=["ibp"], pgd_steps=0, progress=False)
    assert only["certified_error_crown"] is None and only["pgd_error"] is None
    # a cleanly misclassified point is never certified, even at eps = 0
    zero = evaluate(result.model, test, 0.0, methods=["ibp"], progress=False)
    assert zero["certified_error_ibp"] == zero["clean_error"] == zero["pgd_error"]
    with pytest.raises(bg.InputError):
        evaluate(result.model, test, -0.1)
    with pytest.raises(bg.InputError):
        evaluate(result.model, test, 0.1, methods=["alpha"])


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_evaluation_report_orders_clean_pgd_certified_on_one_denominator(trained):
    torch.manual_seed(2)
    model = fit(mlp(), blobs(n=200), method="ibp", **FAST).model if trained else mlp()
    test = blobs(n=60, seed=7)
    for eps in (0.0, EPS, 3 * EPS):
        r = evaluate(model, test, eps, methods=("ibp", "crown-ibp", "crown", "alpha-crown"),
                     crown_limit=20, pgd_steps=5, progress=False)
        sub = r["subset"]
        assert sub is not None and sub["num_examples"] == 20
        for rep in (r, sub):  # every figure of a column over the same examples
            assert rep["clean_error"] <= rep["pgd_error"] <= rep["certified_error"]
            # the combination is no worse than any one method's figure on the same examples
            for m in ("ibp", "crown_ibp"):
                assert rep["certified_error"] <= rep[f"certified_error_{m}"]
        for m in ("crown", "alpha_crown"):
            assert sub["certified_error"] <= sub[f"certified_error_{m}"]
            assert r[f"certified_error_{m}"] == sub[f"certified_error_{m}"]
        assert sub["certified_error"] <= r["certified_error"] * 60 / 20 + 1e-12
    full = evaluate(model, test, EPS, crown_limit=None, pgd_steps=5, progress=False)
    assert full["subset"] is None
    assert full["clean_error"] <= full["pgd_error"] <= full["certified_error"]


def test_config_resolution_and_recipes():
    cfg = resolve_config("improved-ibp", "mnist-cnn7")
    assert (cfg.model, cfg.dataset, cfg.eps, cfg.epochs, cfg.batch_size) == \
        ("cnn7", "mnist", 0.4, 70, 256)
    assert cfg.ibp_init and cfg.reg_lambda == 0.5 and cfg.grad_clip == 10.0
    assert cfg.eps_schedule == "smoothed" and cfg.lr == 5e-4 and cfg.lr_factor == 0.2
    cifar = resolve_config(None, "cifar10-cnn7")
    assert (cifar.eps, cifar.epochs, cifar.eps_ramp_epochs, cifar.batch_size) == \
        (8 / 255, 160, 80, 128)
    import models
    from boundgraph.training.config import build_model

    net = build_model(cifar)
    assert isinstance(net[0], models.Normalize)  # the CIFAR recipe normalises inside the model
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    ibp = resolve_config("ibp", "mnist-cnn7", {"epochs": 3})
    assert ibp.method == "ibp" and not ibp.ibp_init and ibp.reg_lambda == 0.0 and \
        ibp.epochs == 3
    s = resolve_config("improved-ibp", "mnist-cnn7").schedules(100)
    assert s.lr(49 * 100) == 5e-4 and s.lr(50 * 100) == pytest.approx(1e-4)
    assert s.eps(100) == 0.0 and s.eps(21 * 100) == 0.4
    auto = resolve_config("ibp", None, {"epochs": 10})  # no recipe, no ramp given
    assert (auto.warmup_epochs, auto.eps_ramp_epochs) == (1, 4)
    with pytest.raises(bg.InputError, match="unknown recipe"):
        resolve_config(None, "nope")
    with pytest.raises(bg.InputError, match="unknown training method"):
        resolve_config("pgd")
    with pytest.raises(bg.InputError, match="eps"):
        resolve_config("ibp", None, {"eps": -1.0})


def test_plot_is_skipped_with_a_note_when_matplotlib_is_missing(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    rows = [{"epoch": 1, "loss": 1.0, "eps": 0.1, "val_clean_error": 0.1,
             "val_pgd_error": 0.2, "val_certified_error_ibp": 0.3}]
    assert plot_history(rows, tmp_path / "m.png") is False
    assert not (tmp_path / "m.png").exists()
