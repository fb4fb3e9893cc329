"""Certified training that mixes IBP with an attack (SABR, MTL-IBP, CC-IBP, EXP-IBP): each
method's pieces behave as defined (SABR's small box inside the ball and the domain, the mixed
losses equal IBP's at alpha = 0 and the attack's at alpha = 1), a few steps reduce each loss,
a killed run resumes exactly, and bad settings get one clear error."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import boundgraph as bg
from boundgraph.errors import InputError
from boundgraph.training import fit, load_checkpoint
from boundgraph.training.losses import (ATTACK_METHODS, adversarial_point, certified_loss,
                                        sabr_box)

from test_trainer import EPS, Killed, _state_equal, _strip_times, blobs, mlp


@pytest.mark.parametrize("lam", [0.05, 0.4, 1.0])
def test_sabr_small_box_lies_inside_the_ball_and_the_domain(lam):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 6, generator=g)
    x[:100] = 0.0  # on the domain's faces
    x[100:200] = 1.0
    eps = 0.3
    x_adv = x + 2 * eps * (2 * torch.rand(500, 6, generator=g) - 1)  # anywhere, even outside
    x[200:300] = 0.5  # and some well inside both the domain and the shrunk ball
    x_adv[200:300] = 0.5 + 0.9 * (1 - lam) * eps * (2 * torch.rand(100, 6, generator=g) - 1)
    lo, hi = sabr_box(x, x_adv, eps, lam, 0.0, 1.0)
    assert (lo <= hi + 1e-7).all()
    assert (lo >= x - eps - 1e-7).all() and (hi <= x + eps + 1e-7).all()
    assert (lo >= 0).all() and (hi <= 1).all()
    assert ((hi - lo) <= 2 * lam * eps + 1e-6).all()
    # inside the domain and the shrunk ball, the box is centred on the adversarial point
    inner = (x_adv - x).abs().le(eps - lam * eps).all(1) & \
        (x_adv >= lam * eps).all(1) & (x_adv <= 1 - lam * eps).all(1)
    assert inner.any()
    torch.testing.assert_close(((lo + hi) / 2)[inner], x_adv[inner])


def _task():
    data = blobs(n=64)
    x, y = data.tensors
    return x, y


@pytest.mark.parametrize("method", ["mtl-ibp", "cc-ibp", "exp-ibp"])
def test_mixed_losses_are_the_ibp_loss_at_alpha_0_and_the_attack_loss_at_alpha_1(method):
    x, y = _task()
    model = mlp()
    bm = bg.BoundedModule(model, x[:2])
    ibp = certified_loss(bm, x, y, method="ibp", eps=EPS, kappa=0.0)
    at0 = certified_loss(bm, x, y, method=method, eps=EPS, mix_alpha=0.0)
    torch.testing.assert_close(at0.loss, ibp.loss)
    at1 = certified_loss(bm, x, y, method=method, eps=EPS, mix_alpha=1.0, attack_steps=5)
    lo, hi = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    model.eval()
    x_adv = adversarial_point(bm, x, y, lo, hi, steps=5)
    attack = F.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(at1.loss, attack)
    # in between: no lower than the attack's loss, no higher than IBP's (up to the
    # curvature of CC-IBP's and EXP-IBP's mixtures, which stay between the two)
    mid = certified_loss(bm, x, y, method=method, eps=EPS, mix_alpha=0.5, attack_steps=5)
    lo_v, mid_v, hi_v = (float(t.detach()) for t in (attack, mid.loss, ibp.loss))
    assert lo_v - 1e-6 <= mid_v <= hi_v + 1e-6


def test_sabr_at_lambda_1_is_the_ibp_loss_over_the_ball():
    x, y = _task()
    bm = bg.BoundedModule(mlp(), x[:2])
    ibp = certified_loss(bm, x, y, method="ibp", eps=EPS, kappa=0.0)
    sabr = certified_loss(bm, x, y, method="sabr", eps=EPS, sabr_lambda=1.0)
    torch.testing.assert_close(sabr.loss, ibp.loss)
    small = certified_loss(bm, x, y, method="sabr", eps=EPS, sabr_lambda=0.2)
    assert float(small.loss.detach()) <= float(ibp.loss.detach()) + 1e-6  # a smaller box


@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_a_few_steps_of_each_mixed_method_reduce_its_loss(method):
    x, y = _task()
    losses, _ = loss_over_steps(mlp(), x, y, method)
    assert losses[-1] < 0.7 * losses[0], losses


def loss_over_steps(model, x, y, method, steps=25):
    """The loss of ``steps`` Adam steps of ``method`` (and the last step's LossResult)."""
    bm = bg.BoundedModule(model, x[:2])
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(steps):
        res = certified_loss(bm, x, y, method=method, eps=EPS, attack_steps=3)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        losses.append(float(res.loss.detach()))
    return losses, res


def test_a_killed_mtl_ibp_run_resumes_to_the_uninterrupted_state(tmp_path):
    data = blobs()
    cfg = dict(method="mtl-ibp", eps=EPS, epochs=3, batch_size=32, lr=5e-3,
               warmup_epochs=1, eps_ramp_epochs=1, pgd_steps=2, attack_steps=3, seed=3,
               progress=False)
    full = fit(mlp(), data, out_dir=tmp_path / "full", **cfg)

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(mlp(), data, out_dir=tmp_path / "cut", callbacks=[kill_after_two], **cfg)
    assert load_checkpoint(tmp_path / "cut" / "last.pt", model=mlp()).epoch == 2
    resumed = fit(mlp(), data, out_dir=tmp_path / "cut", resume=True, **cfg)
    _state_equal(full.model.state_dict(), resumed.model.state_dict())
    assert _strip_times(full.history) == _strip_times(resumed.history)
    assert all(math.isfinite(r["loss"]) for r in full.history)


@pytest.mark.parametrize("settings, needle", [
    (dict(method="taps-ish"), "unknown training method"),
    (dict(method="sabr", sabr_lambda=0.0), "sabr_lambda must lie in"),
    (dict(method="sabr", sabr_lambda=1.5), "sabr_lambda must lie in"),
    (dict(method="mtl-ibp", mix_alpha=-0.1), "mix_alpha must lie in"),
    (dict(method="cc-ibp", attack_steps=0), "attack_steps must be"),
    (dict(method="sabr", norm="2"), "sabr is defined for l-inf"),
])
def test_bad_settings_of_the_mixed_methods_get_one_clear_error(settings, needle):
    with pytest.raises(InputError, match=needle):
        fit(mlp(), blobs(n=64), epochs=1, progress=False, **settings)


def test_the_cli_rejects_a_bad_lambda_with_one_line(tmp_path, capsys):
    from boundgraph.cli import main

    code = main(["train", "--model", "mlp", "--dataset", "mnist", "--method", "sabr",
                 "--lambda", "2", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "sabr_lambda must lie in" in err and len(err.splitlines()) == 1
