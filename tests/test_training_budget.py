"""Equal-budget training: a time limit stops a run at an epoch boundary (counting the time a
resumed run spent before), and the CLI sets learning-rate milestones and the limit."""
from __future__ import annotations

import json

import pytest

from boundgraph.errors import InputError
from boundgraph.training import fit

from test_trainer import FAST, blobs, mlp


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


def test_the_cli_sets_lr_milestones_and_the_time_limit(tmp_path, capsys):
    from boundgraph.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--limit", "300",
                 "--val-limit", "50", "--epochs", "2", "--lr-milestones", "1",
                 "--time-limit", "30", "--out", str(out), "--quiet"])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr_milestones"] == [1] and cfg["time_limit"] == 30
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["lr"] == pytest.approx(0.2 * rows[0]["lr"])
    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--lr-milestones", "a,b",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--lr-milestones must be" in err and len(err.splitlines()) == 1
