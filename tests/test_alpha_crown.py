"""alpha-CROWN (method "alpha-crown"): optimised kink slopes on the output's backward pass.

Its soundness on every op and model is also checked where the other methods are (op_checks,
test_core_soundness, test_core_exactness, test_trained_soundness, test_batchnorm_train)."""
import pytest
import torch
from torch import nn

import boundgraph as bg
from boundgraph.errors import InputError
from boundgraph.ops.activations import ReLU
from boundgraph.ops.base import relaxation_step
from oracle import assert_sound


def _mlp(seed, width=24):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 5))


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_crown_is_never_looser_than_crown_and_tighter_when_relus_are_unstable(seed):
    model = _mlp(seed)
    x = torch.randn(3, 6)
    bm = bg.BoundedModule(model, x)
    C = bg.margin_spec(model(x).argmax(1), 5)
    ptb = bg.LinfBall(0.4)
    cl, cu = bm.compute_bounds(x, ptb, method="crown", C=C)
    al, au = bm.compute_bounds(x, ptb, method="alpha-crown", C=C)
    assert (al >= cl - 1e-6).all() and (au <= cu + 1e-6).all()
    assert (al - cl).max() > 1e-3 and (cu - au).max() > 1e-3  # the optimiser did something
    lo, hi = ptb.box(x)
    # the oracle stacks its points as (N * B, *in): example i of a point is row i mod B
    margins = lambda z: torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // 3, 1, 1), model(z))  # noqa: E731
    assert_sound(margins, lo, hi, al, au)


def test_alpha_crown_bounds_of_a_cnn_contain_sampled_and_attacked_outputs():
    model = _cnn(0)
    x = torch.rand(2, 1, 8, 8)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.1, 0.0, 1.0)
    lb, ub = bm.compute_bounds(x, ptb, method="alpha-crown")
    cl, cu = bm.compute_bounds(x, ptb, method="crown")
    assert (lb >= cl - 1e-6).all() and (ub <= cu + 1e-6).all()
    lo, hi = ptb.box(x)
    assert_sound(model, lo, hi, lb, ub)


def test_zero_alpha_steps_gives_the_crown_bound():
    model = _mlp(3)
    x = torch.randn(4, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.3)
    cl, cu = bm.compute_bounds(x, ptb, method="crown")
    al, au = bm.compute_bounds(x, ptb, method="alpha-crown", alpha_steps=0)
    torch.testing.assert_close(al, cl, rtol=0, atol=1e-6)
    torch.testing.assert_close(au, cu, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "20"])
def test_alpha_steps_must_be_a_non_negative_integer(bad):
    model = _mlp(0)
    x = torch.randn(2, 6)
    bm = bg.BoundedModule(model, x)
    with pytest.raises(InputError, match="alpha_steps"):
        bm.compute_bounds(x, bg.LinfBall(0.1), method="alpha-crown", alpha_steps=bad)


def test_alpha_crown_bounds_are_differentiable_in_the_parameters():
    model = _mlp(4)
    x = torch.randn(3, 6)
    bm = bg.BoundedModule(model, x)
    C = bg.margin_spec(torch.tensor([0, 1, 2]), 5)
    lb, _ = bm.compute_bounds(x, bg.LinfBall(0.3), method="alpha-crown", C=C,
                              bound_upper=False)
    lb.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_alpha_crown_runs_under_no_grad_and_leaves_parameter_gradients_alone():
    model = _mlp(5)
    x = torch.randn(2, 6)
    bm = bg.BoundedModule(model, x)
    with torch.no_grad():
        lb, ub = bm.compute_bounds(x, bg.LinfBall(0.3), method="alpha-crown")
    assert not lb.requires_grad and not ub.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_per_row_slopes_give_each_row_its_own_relaxation():
    torch.manual_seed(0)
    B, S, N = 2, 3, 7
    A = torch.randn(B, S, N)
    l, u = -torch.rand(B, N), torch.rand(B, N)
    alpha = torch.rand(B, S, N)
    relu = ReLU()
    new, bias = relaxation_step(A, *relu.relax(l, u, {"kink_slope": alpha}))
    for s in range(S):
        row_new, row_bias = relaxation_step(A[:, s:s + 1], *relu.relax(l, u,
                                                                     {"kink_slope": alpha[:, s]}))
        torch.testing.assert_close(new[:, s:s + 1], row_new)
        torch.testing.assert_close(bias[:, s:s + 1], row_bias)


def test_kink_slopes_outside_the_unit_interval_are_clamped_to_sound_lines():
    l, u = torch.tensor([[-1.0, -2.0, 0.5]]), torch.tensor([[2.0, 1.0, 3.0]])
    relu = ReLU()
    for given, used in ((3.0, 1.0), (-2.0, 0.0)):
        aL, bL, _, _ = relu.relax(l, u, {"kink_slope": torch.full_like(l, given)})
        assert aL[0, :2].tolist() == [used, used] and aL[0, 2] == 1.0  # stable: exact
        assert bL == 0.0


def test_kink_slope_init_matches_the_default_relaxation():
    l, u = torch.tensor([[-1.0, -3.0, 0.5, -2.0]]), torch.tensor([[2.0, 1.0, 3.0, -1.0]])
    relu = ReLU()
    for mode in ("adaptive", "zero", "one", "parallel"):
        opts = {"relu_lower": mode}
        a0 = relu.kink_slope_init(l, u, opts)
        ref = relu.relax(l, u, opts)
        got = relu.relax(l, u, {**opts, "kink_slope": a0})
        for r, g in zip(ref, got):
            torch.testing.assert_close(torch.as_tensor(g), torch.as_tensor(r))


def test_a_zero_time_limit_stops_the_optimisation_at_crowns_bound():
    model = _mlp(6)
    x = torch.randn(2, 6)
    bm = bg.BoundedModule(model, x)
    ptb = bg.LinfBall(0.4)
    cl, _ = bm.compute_bounds(x, ptb, method="crown", bound_upper=False)
    al, _ = bm.compute_bounds(x, ptb, method="alpha-crown", bound_upper=False,
                              alpha_time_limit=0.0)
    torch.testing.assert_close(al, cl, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="alpha_time_limit"):
        bm.compute_bounds(x, ptb, method="alpha-crown", alpha_time_limit=-1.0)


def test_intermediate_slopes_make_alpha_crown_tighter_than_output_slopes_alone():
    model = _mlp(7, width=32)
    x = torch.randn(2, 6)
    bm = bg.BoundedModule(model, x)
    C = bg.margin_spec(model(x).argmax(1), 5)
    ptb = bg.LinfBall(0.4)
    full, _ = bm.compute_bounds(x, ptb, method="alpha-crown", C=C, bound_upper=False)
    # max_elements too small for any intermediate pass: only the output's slopes are free
    out_only, _ = bm.compute_bounds(x, ptb, method="alpha-crown", C=C, bound_upper=False,
                                    max_elements=1)
    crown, _ = bm.compute_bounds(x, ptb, method="crown", C=C, bound_upper=False)
    assert (out_only >= crown - 1e-6).all() and (full >= crown - 1e-6).all()
    assert full.sum() > out_only.sum() + 1e-3
