"""`boundgraph train | eval | demo` on a tiny MNIST subset, and their one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from boundgraph.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mnist_available():
    try:
        from boundgraph.data import load_dataset

        load_dataset("mnist", "test", limit=1)
        return True
    except (FileNotFoundError, ValueError):
        return False


needs_mnist = pytest.mark.skipif(not _mnist_available(), reason="MNIST is not available")

TINY = ["--model", "mlp", "--model-kwargs", '{"hidden": [32]}', "--dataset", "mnist",
        "--limit", "300", "--batch-size", "50", "--eps", "0.05", "--pgd-steps", "2",
        "--device", "cpu", "--quiet"]


def _error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "nope", "--dataset", "mnist", "--eps", "0.1", "--out", "{out}"],
     "unknown model"),
    (["train", "--model", "mlp", "--dataset", "imagenet", "--eps", "0.1", "--out", "{out}"],
     "unknown data set"),
    (["train", "--model", "mlp", "--dataset", "mnist", "--method", "pgd", "--eps", "0.1",
      "--out", "{out}"], "unknown training method"),
    (["train", "--model", "mlp", "--dataset", "mnist", "--eps", "-0.1", "--out", "{out}"],
     "eps"),
    (["train", "--model", "mlp", "--dataset", "mnist", "--recipe", "nope", "--out", "{out}"],
     "unknown recipe"),
    (["train", "--model", "mlp", "--dataset", "mnist", "--eps", "0.1"], "--out"),
    (["train", "--model", "mlp", "--dataset", "mnist", "--method", "ibp", "--loss-fusion",
      "--eps", "0.1", "--out", "{out}"], "loss_fusion applies to crown-ibp"),
    (["eval", "{bad}", "--eps", "0.1", "--json"], "corrupt"),
    (["eval", "{out}/missing.pt", "--eps", "0.1"], "not found"),
])
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, argv, needle):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    argv = [a.format(out=tmp_path / "run", bad=bad) for a in argv]
    code, err = _error_line(capsys, argv)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert needle in err


def test_eval_rejects_negative_eps_before_loading(tmp_path, capsys):
    code, err = _error_line(capsys, ["eval", str(tmp_path / "x.pt"), "--eps", "-1"])
    assert code == 2 and "--eps must be >= 0" in err  # (the tmp path itself contains "eps")


@needs_mnist
def test_train_then_eval_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "ibp", "--epochs", "1", "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.pt")} == {"last.pt", "best.pt"}
    assert (out / "metrics.csv").exists() and (out / "metrics.jsonl").exists()
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--eps", "0.05", "--json", "--limit", "40",
                 "--crown-limit", "8", "--pgd-steps", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("clean_error", "pgd_error", "certified_error_ibp",
                "certified_error_crown_ibp", "certified_error_crown"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["num_examples"] == 40 and report["num_examples_crown"] == 8
    assert main(["eval", str(out / "best.pt"), "--json", "--limit", "20",
                 "--methods", "ibp", "--pgd-steps", "0"]) == 0
    skipped = json.loads(capsys.readouterr().out)
    assert skipped["eps"] == 0.05 and skipped["certified_error_crown"] is None
    # continue the run for a second epoch
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet",
                 "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # refuses to clobber the run without --resume or --overwrite
    code, err = _error_line(capsys, ["train", *TINY, "--epochs", "1", "--out", str(out)])
    assert code == 2 and "already holds" in err


@needs_mnist
def test_demo_runs_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--limit", "200", "--epochs", "1",
                 "--test-limit", "30", "--crown-limit", "5", "--device", "cpu",
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_examples"] == 30 and report["method"] == "ibp"
    text = capsys.readouterr().out
    assert "certified error (any method)" in text and "IBP" in text


def test_python_dash_m_reports_errors_the_same_way(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "boundgraph", "eval", str(bad), "--eps",
                           "0.1", "--json"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "corrupt" in proc.stderr
    assert proc.stdout == ""
