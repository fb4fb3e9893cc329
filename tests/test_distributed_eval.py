"""Verification and evaluation across processes (gloo on CPU, as under torchrun): a batch of
VNN-COMP instances gives the same verdicts in the same order, evaluation and certified accuracy
give the single-process report, and a killed batch run resumed with ``resume`` recomputes only
the rows it had not written."""
from __future__ import annotations

import csv
import json
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DEV = os.environ.get("BOUNDGRAPH_VNNCOMP", "/work/shared/vnncomp")

pytestmark = pytest.mark.skipif(not dist.is_available(),
                                reason="torch.distributed is not available")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def make_instances(folder) -> str:
    """An instances.csv of one small ONNX network and eight robustness properties of several
    radii (some proved, some with counterexamples, some needing bisection)."""
    import boundgraph as bg
    from boundgraph.certify import robustness_vnnlib

    net = _net()
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(1))
    bg.export_onnx(net, x[:2], os.path.join(folder, "net.onnx"))
    rows = []
    for k in range(8):
        y = int(net(x[k:k + 1]).argmax())
        eps = (0.01, 0.1, 1.0, 3.0)[k % 4]
        name = f"prop_{k}.vnnlib"
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(robustness_vnnlib(x[k], y, eps, num_classes=3, lower=-5.0, upper=5.0))
        rows.append(["net.onnx", name, "20"])
    path = os.path.join(folder, "instances.csv")
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _worker(rank, world, init_file, job, args):
    sys.path.insert(0, os.path.dirname(HERE))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        if job == "instances":
            from boundgraph.instances import verify_instances

            csv_path, out = args
            verify_instances(csv_path, out, progress=False)
        elif job == "evaluate":
            from boundgraph.certify import certified_accuracy
            from boundgraph.training.evaluate import evaluate

            out, = args
            data = _data()
            rep = evaluate(_net(), data, 0.05, methods=("ibp", "crown-ibp", "crown"),
                           batch_size=16, crown_limit=40, pgd_steps=5, pgd_restarts=2,
                           progress=False, seed=3)
            cert = certified_accuracy(_net(), list(zip(*data)), 0.05, batch_size=16,
                                      progress=False)
            with open(f"{out}.{rank}", "w") as fh:
                json.dump({"evaluate": rep, "certified": cert}, fh)
    finally:
        dist.destroy_process_group()


def _data():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(100, 6, generator=g)
    with torch.no_grad():
        y = _net()(x).argmax(1)
    y[::7] = (y[::7] + 1) % 3  # some misclassified examples
    return x, y


def _spawn(tmp_path, job, *args):
    mp.spawn(_worker, args=(2, str(tmp_path / f"init_{job}"), job, args), nprocs=2, join=True)


def _same_rows(a, b):
    assert [(r["onnx"], r["vnnlib"], r["verdict"]) for r in a] == \
        [(r["onnx"], r["vnnlib"], r["verdict"]) for r in b]


def test_two_processes_give_the_verdicts_of_one_in_the_same_order(tmp_path):
    from boundgraph.instances import verify_instances

    csv_path = make_instances(str(tmp_path))
    one = tmp_path / "one.csv"
    verify_instances(csv_path, one, progress=False)
    two = tmp_path / "two.csv"
    _spawn(tmp_path, "instances", csv_path, str(two))
    a, b = _read(one), _read(two)
    assert len(a) == 8 and list(a[0]) == list(b[0])  # same columns
    _same_rows(a, b)
    assert {r["verdict"] for r in a} >= {"sat", "unsat"}
    assert not list(tmp_path.glob("two.csv.part*"))  # the part files are gone


@pytest.mark.skipif(not os.path.exists(os.path.join(DEV, "expected.csv")),
                    reason="the VNN-COMP dev instances are not present")
def test_two_processes_on_dev_instances_match_one_process(tmp_path):
    from boundgraph.instances import verify_instances

    rows = _read(os.path.join(DEV, "expected.csv"))
    fast = [r for r in rows if r["onnx"].startswith("test/")][:5]
    path = tmp_path / "dev.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["onnx", "vnnlib", "timeout"])
        for r in fast:
            w.writerow([os.path.join(DEV, r["onnx"]), os.path.join(DEV, r["vnnlib"]), 20])
    one = tmp_path / "one.csv"
    verify_instances(str(path), one, progress=False)
    two = tmp_path / "two.csv"
    _spawn(tmp_path, "instances", str(path), str(two))
    _same_rows(_read(one), _read(two))


def test_two_process_evaluation_and_certified_accuracy_equal_one_process(tmp_path):
    from boundgraph.certify import certified_accuracy
    from boundgraph.training.evaluate import evaluate

    data = _data()
    one = evaluate(_net(), data, 0.05, methods=("ibp", "crown-ibp", "crown"), batch_size=16,
                   crown_limit=40, pgd_steps=5, pgd_restarts=2, progress=False, seed=3)
    cert = certified_accuracy(_net(), list(zip(*data)), 0.05, batch_size=16, progress=False)
    out = tmp_path / "rep"
    _spawn(tmp_path, "evaluate", str(out))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rep.{rank}").read_text())
        a = {k: v for k, v in one.items() if k != "time_s"}
        b = {k: v for k, v in got["evaluate"].items() if k != "time_s"}
        assert a == json.loads(json.dumps(b)) or a == b
        c1 = {k: v for k, v in cert.items() if k != "time"}
        c2 = {k: v for k, v in got["certified"].items() if k != "time"}
        assert c1 == c2
    assert 0 < one["clean_error"] <= one["pgd_error"] <= one["certified_error_ibp"]


def test_a_killed_batch_run_resumes_without_recomputing_written_rows(tmp_path, monkeypatch):
    import boundgraph.instances as inst

    csv_path = make_instances(str(tmp_path))
    full = tmp_path / "full.csv"
    inst.verify_instances(csv_path, full, progress=False)
    out = tmp_path / "out.csv"
    real = inst.verify
    calls = []

    def killed_after_three(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies while the fourth instance runs
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(inst, "verify", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        inst.verify_instances(csv_path, out, progress=False)
    assert not out.exists()
    written = (tmp_path / "out.csv.part0").read_text().splitlines()
    assert len(written) == 3
    with open(tmp_path / "out.csv.part0", "a") as fh:
        fh.write("3,net.onnx,prop_3.vnn")  # a line cut short by the kill
    again = []

    def counting(*a, **k):
        again.append(1)
        return real(*a, **k)

    monkeypatch.setattr(inst, "verify", counting)
    inst.verify_instances(csv_path, out, progress=False, resume=True)
    assert len(again) == 8 - 3
    _same_rows(_read(full), _read(out))
    assert not (tmp_path / "out.csv.part0").exists()
    # resuming a finished run recomputes nothing
    again.clear()
    inst.verify_instances(csv_path, out, progress=False, resume=True)
    assert again == []
    _same_rows(_read(full), _read(out))


def test_resume_without_a_results_file_is_one_clear_error(tmp_path, capsys):
    from boundgraph.cli import main

    csv_path = make_instances(str(tmp_path))
    assert main(["verify", "--instances", csv_path, "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_each_process_defaults_to_its_share_of_the_cores(monkeypatch):
    from boundgraph.distributed import balanced, default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_threads() == 1
    # heaviest first to the least loaded process
    assert balanced([60, 10, 10, 10, 30, 20], 2) == [0, 1, 0, 1, 1, 1]
