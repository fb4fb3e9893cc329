"""Real VNN-COMP instances (``/work/shared/vnncomp``, answers in ``expected.csv``): every network
imports and reproduces onnxruntime, a fast subset is decided correctly by default, and the whole
list (``-m slow``) never gets a wrong answer. Nothing here knows anything about particular
files beyond their expected answers."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from boundgraph.frontends.onnx_import import check_against_onnxruntime, load_onnx
from boundgraph.verify import verify
from boundgraph.vnnlib import parse_counterexample, parse_vnnlib

ROOT = os.environ.get("BOUNDGRAPH_VNNCOMP", "/work/shared/vnncomp")
EXPECTED = os.path.join(ROOT, "expected.csv")

pytestmark = pytest.mark.skipif(not os.path.exists(EXPECTED),
                                reason="VNN-COMP instances not available")


def _rows():
    if not os.path.exists(EXPECTED):
        return []
    with open(EXPECTED, newline="") as fh:
        return list(csv.DictReader(fh))


ROWS = _rows()
NETWORKS = sorted({r["onnx"] for r in ROWS})

# a fast subset: the toy networks, and a few instances of each family (both answers)
FAST = [("test/test_nano.onnx", "test/test_nano.vnnlib"),
        ("test/test_tiny.onnx", "test/test_tiny.vnnlib"),
        ("test/test_small.onnx", "test/test_small.vnnlib"),
        ("test/test_sat.onnx", "test/test_prop.vnnlib"),
        ("test/test_unsat.onnx", "test/test_prop.vnnlib"),
        ("mnist_fc/onnx/mnist-net_256x2.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib"),
        ("mnist_fc/onnx/mnist-net_256x2.onnx", "mnist_fc/vnnlib/prop_1_0.03.vnnlib"),
        ("acasxu/onnx/ACASXU_run2a_5_9_batch_2000.onnx", "acasxu/vnnlib/prop_3.vnnlib"),
        ("acasxu/onnx/ACASXU_run2a_2_1_batch_2000.onnx", "acasxu/vnnlib/prop_4.vnnlib"),
        ("acasxu/onnx/ACASXU_run2a_2_1_batch_2000.onnx", "acasxu/vnnlib/prop_2.vnnlib"),
        ("acasxu/onnx/ACASXU_run2a_1_9_batch_2000.onnx", "acasxu/vnnlib/prop_3.vnnlib")]


def _expected(onnx_rel, vnnlib_rel):
    for r in ROWS:
        if r["onnx"] == onnx_rel and r["vnnlib"] == vnnlib_rel:
            return r
    raise KeyError((onnx_rel, vnnlib_rel))


def _check_answer(row, res):
    expected = row["expected"]
    assert res.verdict != ("unsat" if expected == "sat" else "sat"), (row, res)
    if res.verdict == "sat":
        prop = parse_vnnlib(os.path.join(ROOT, row["vnnlib"]))
        x, y = res.counterexample
        bm = load_onnx(os.path.join(ROOT, row["onnx"]), check=False)
        y_ort = bm.model.onnx_info.run(x.reshape(1, -1).astype(np.float32).reshape(
            1, *bm.model.onnx_info.sample_shape))[0]
        assert prop.is_counterexample(x, y_ort, tol=0.0)


@pytest.mark.parametrize("onnx_rel", NETWORKS)
def test_every_network_imports_and_matches_onnxruntime(onnx_rel):
    bm = load_onnx(os.path.join(ROOT, onnx_rel), check=False)
    diff = check_against_onnxruntime(bm, n=16)
    assert diff <= 1e-5


def test_given_counterexamples_are_counterexamples_for_the_imported_graph():
    """The imported graph (not only onnxruntime) sees the known counterexamples as unsafe."""
    import torch

    from boundgraph.vnnlib import VnnlibError

    checked = 0
    for r in ROWS:
        if r["expected"] != "sat" or not r["counterexample"]:
            continue
        bm = load_onnx(os.path.join(ROOT, r["onnx"]), check=False)
        try:
            x, _ = parse_counterexample(os.path.join(ROOT, r["counterexample"]))
        except VnnlibError:
            continue  # a malformed file in the data set, not ours to judge
        checked += 1
        prop = parse_vnnlib(os.path.join(ROOT, r["vnnlib"]))
        with torch.no_grad():
            y = bm(torch.tensor(x, dtype=torch.float32).reshape(1, *bm.graph.input_shape))
        assert prop.is_counterexample(x, y.numpy().reshape(-1), tol=1e-4)
    assert checked >= 5


@pytest.mark.parametrize("onnx_rel,vnnlib_rel", FAST)
def test_fast_instances_are_decided_correctly(onnx_rel, vnnlib_rel):
    row = _expected(onnx_rel, vnnlib_rel)
    res = verify(os.path.join(ROOT, onnx_rel), os.path.join(ROOT, vnnlib_rel), timeout=30)
    assert res.verdict == row["expected"], res
    _check_answer(row, res)


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[f"{r['onnx']}:{r['vnnlib']}" for r in ROWS])
def test_all_instances_never_get_a_wrong_answer(row):
    res = verify(os.path.join(ROOT, row["onnx"]), os.path.join(ROOT, row["vnnlib"]), timeout=60)
    _check_answer(row, res)


def test_benchmark_script_reports_per_family(tmp_path, monkeypatch):
    import json

    from benchmarks import vnncomp

    monkeypatch.setenv("BOUNDGRAPH_RESULTS_DIR", str(tmp_path))
    rc = vnncomp.main(["--csv", EXPECTED, "--family", "test", "--timeout", "20", "--quiet",
                       "--out-name", "smoke"])
    assert rc == 0
    rep = json.loads((tmp_path / "smoke.json").read_text())
    fam = rep["families"]["test"]
    assert fam["instances"] == 5 and fam["wrong"] == 0
    assert fam["proved"] + fam["counterexamples"] + fam["unknown"] + fam["timeout"] == 5
    assert "| test | 5 |" in (tmp_path / "smoke.md").read_text()
    # a second run compares itself with the first
    assert vnncomp.main(["--csv", EXPECTED, "--family", "test", "--timeout", "20", "--quiet",
                         "--out-name", "smoke"]) == 0
    again = json.loads((tmp_path / "smoke.json").read_text())
    assert again["previous"]["families"]["test"]["instances"] == 5
    assert "Against the previous run" in (tmp_path / "smoke.md").read_text()
