"""Data-parallel training: 2 CPU processes (gloo) match one process on the same global batch."""
import json
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))


def _blobs(n=256, dim=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.eye(classes, dim)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (centres[y] + 0.04 * torch.randn(n, dim, generator=g)).clamp(0, 1)
    return TensorDataset(x, y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 3))


SETTINGS = dict(method="crown-ibp", eps=0.04, epochs=2, batch_size=32, lr=1e-2,
                warmup_epochs=0, eps_ramp_epochs=1, beta_end=0.5, pgd_steps=0, seed=1,
                grad_clip=1.0, progress=False)


def _worker(rank, world, init_file, out_file, method="crown-ibp"):
    sys.path.insert(0, os.path.dirname(HERE))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        from boundgraph.training import fit

        result = fit(_model(), _blobs(), **{**SETTINGS, "method": method})
        if rank == 0:
            state = {k: v.tolist() for k, v in result.model.state_dict().items()}
            with open(out_file, "w") as f:
                json.dump({"history": result.history, "state": state}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("method", ["crown-ibp", "mtl-ibp"])
def test_two_process_gloo_training_matches_single_process(tmp_path, method):
    from boundgraph.training import fit

    out_file = str(tmp_path / "rank0.json")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out_file, method), nprocs=2, join=True)
    with open(out_file) as f:
        ddp = json.load(f)

    single = fit(_model(), _blobs(), **{**SETTINGS, "method": method})
    assert len(ddp["history"]) == len(single.history) == 2
    for a, b in zip(ddp["history"], single.history):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["train_clean_error"] == pytest.approx(b["train_clean_error"])
        assert a["val_examples"] == b["val_examples"]  # validation reduced across ranks
        assert a["val_certified_error_ibp"] == pytest.approx(b["val_certified_error_ibp"])
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(torch.tensor(ddp["state"][name]), value, rtol=1e-4,
                                   atol=1e-5)


def _timed_worker(rank, world, init_file, out_dir):
    sys.path.insert(0, os.path.dirname(HERE))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        from boundgraph.training import fit

        result = fit(_model(), _blobs(n=2048), **{**SETTINGS, "method": "ibp", "epochs": 50,
                                                  "schedule_by": "time", "time_limit": 0.03})
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result.history, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_agree_on_a_schedule_laid_out_over_time(tmp_path):
    """Each process reads the slowest one's clock, so they step, decay and stop together
    (a process that stopped alone would leave the other waiting in a collective)."""
    mp.spawn(_timed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    keys = ("epoch", "step", "epoch_steps", "eps", "lr", "time_s")
    assert [{k: r[k] for k in keys} for r in rows[0]] == \
        [{k: r[k] for k in keys} for r in rows[1]]
    assert sum(r["time_s"] for r in rows[0]) >= 0.03 * 60
