"""Equal-budget training: a time limit stops a run at an epoch boundary (counting the time a
resumed run spent before); with the schedule laid out over the time limit, each schedule
position happens at its fraction of the time and the run trains until the limit; the CLI sets
learning-rate milestones, the limit and the schedule's axis."""
from __future__ import annotations

import json
import math
import types

import pytest

from boundgraph.errors import InputError
from boundgraph.training import fit
from boundgraph.training.schedules import schedules_from_config
from boundgraph.training import trainer as trainer_module

from test_trainer import EPS, FAST, Killed, blobs, mlp

STEPS_PER_EPOCH = math.ceil(288 / 32)  # blobs(): 320 images, 10% held out, batch 32


@pytest.fixture
def step_clock(monkeypatch):
    """A clock the trainer reads that advances by exactly one second per training step, so
    that time-laid-out schedules are deterministic."""
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(trainer_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: clock.now))
    step = trainer_module._Run.train_step

    def timed_step(self, *a, **k):
        out = step(self, *a, **k)
        clock.now += 1.0
        return out

    monkeypatch.setattr(trainer_module._Run, "train_step", timed_step)
    return clock


def test_a_time_limit_stops_the_run_after_the_epoch_that_would_overrun_it(tmp_path):
    data = blobs()
    free = fit(mlp(), data, **FAST)
    assert len(free.history) == FAST["epochs"]
    # any real epoch takes more than a microsecond: one epoch, then the limit stops the run
    cut = fit(mlp(), data, time_limit=1e-8, out_dir=tmp_path / "run", **FAST)
    assert len(cut.history) == 1
    # resuming counts the training time already spent, so the run stays stopped
    again = fit(mlp(), data, time_limit=1e-8, out_dir=tmp_path / "run", resume=True, **FAST)
    assert len(again.history) == 1
    # a limit larger than the run changes nothing
    roomy = fit(mlp(), data, time_limit=60.0, **FAST)
    assert len(roomy.history) == FAST["epochs"]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "ten"])
def test_a_bad_time_limit_gets_one_clear_error(bad):
    with pytest.raises(InputError, match="time_limit must be"):
        fit(mlp(), blobs(n=64), time_limit=bad, **FAST)


def cli_train(tmp_path, *options):
    """Train an MLP on 300 MNIST images from the CLI; return its config and metric rows."""
    from boundgraph.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--limit", "300",
                 "--val-limit", "50", *options, "--out", str(out), "--quiet"])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return cfg, rows


def test_the_cli_sets_lr_milestones_and_the_time_limit(tmp_path, capsys):
    from boundgraph.cli import main

    cfg, rows = cli_train(tmp_path, "--epochs", "2", "--lr-milestones", "1",
                          "--time-limit", "30")
    assert cfg["lr_milestones"] == [1] and cfg["time_limit"] == 30
    assert rows[1]["lr"] == pytest.approx(0.2 * rows[0]["lr"])
    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--lr-milestones", "a,b",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--lr-milestones must be" in err and len(err.splitlines()) == 1


BY_TIME = dict(eps=EPS, epochs=2, batch_size=32, lr=2e-2, warmup_epochs=0, eps_ramp_epochs=1,
               lr_milestones=[1.5], pgd_steps=0, progress=False, schedule_by="time",
               time_limit=0.5)  # 30 one-second steps; the 2-epoch plan is 18 steps


def test_a_schedule_laid_out_over_time_places_each_position_at_its_fraction_of_the_limit(
        step_clock):
    res = fit(mlp(), blobs(), method="ibp", **BY_TIME)
    # trains until the limit, past the nominal 2 epochs, stopping inside the fourth
    assert [r["epoch_steps"] for r in res.history] == [9, 9, 9, 3]
    assert sum(r["time_s"] for r in res.history) == 30
    # each row holds the values of its last step k (k seconds spent): schedule position
    # k / 30 of the 2-epoch plan, so the ramp (epoch 1 of 2) ends at 15 s, the lr milestone
    # (epoch 1.5) at 22.5 s
    plan = schedules_from_config({**BY_TIME, "eps_start_epoch": 0}, STEPS_PER_EPOCH)
    for row in res.history:
        k = row["step"] - 1
        expected = plan(k / 30 * 2 * STEPS_PER_EPOCH)
        assert row["eps"] == pytest.approx(expected["eps"])
        assert row["lr"] == pytest.approx(expected["lr"])
    assert res.history[0]["eps"] == pytest.approx(EPS * 8 / 15)
    assert [r["lr"] for r in res.history] == pytest.approx([2e-2, 2e-2, 4e-3, 4e-3])


def test_a_time_laid_out_run_resumes_where_it_was_killed(step_clock, tmp_path):
    full = fit(mlp(), blobs(), method="ibp", out_dir=tmp_path / "full", **BY_TIME)

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    step_clock.now = 0.0
    with pytest.raises(Killed):
        fit(mlp(), blobs(), method="ibp", out_dir=tmp_path / "cut", callbacks=[kill_after_two],
            **BY_TIME)
    resumed = fit(mlp(), blobs(), method="ibp", out_dir=tmp_path / "cut", resume=True,
                  **BY_TIME)
    keys = ("epoch", "step", "epoch_steps", "eps", "lr", "time_s")
    assert [{k: r[k] for k in keys} for r in resumed.history] == \
        [{k: r[k] for k in keys} for r in full.history]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert a.equal(b)


@pytest.mark.parametrize("bad, message", [
    (dict(schedule_by="time"), "needs time_limit"),
    (dict(schedule_by="seconds", time_limit=1.0), "schedule_by must be"),
])
def test_a_bad_schedule_axis_gets_one_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        fit(mlp(), blobs(n=64), **{**FAST, **bad})


def test_the_cli_lays_the_schedule_out_over_the_time_limit(tmp_path):
    cfg, rows = cli_train(tmp_path, "--epochs", "100", "--time-limit", "0.02",
                          "--schedule-by", "time")
    assert cfg["schedule_by"] == "time" and cfg["time_limit"] == 0.02
    # 1.2 s of training is far less than 100 epochs: the limit, not the plan, ends the run
    assert len(rows) < 100 and sum(r["time_s"] for r in rows) >= 1.2
