"""Full CROWN's shortcuts change its cost, never its bounds: the sparse ReLU step equals the
shared relaxation step, coefficients kept side by side equal concatenated ones, and the
upper-first and one-example-at-a-time refinements give the same output bounds (and the same
intermediate bounds wherever a consumer uses them)."""
import pytest
import torch

import boundgraph as bg
import boundgraph.engines.backward as be
from boundgraph.ops.activations import ReLU
from boundgraph.ops.base import Elementwise, Interval, _both, pair_buffer
from op_checks import one_thread  # noqa: F401
from random_nets import random_residual_net


def _intervals(B, shape, unstable_share, g):
    c = torch.randn(B, *shape, generator=g)
    r = torch.rand(B, *shape, generator=g) * 0.05
    wide = torch.rand(B, *shape, generator=g) < unstable_share
    r = torch.where(wide, c.abs() + 0.1, r)  # these cross zero
    return Interval(c - r, c + r)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("B,Ab,share", [(1, 1, 0.03), (3, 1, 0.1), (3, 3, 0.2), (2, 2, 0.0)])
def test_sparse_relu_step_equals_the_shared_step(B, Ab, share, grad):
    g = torch.Generator().manual_seed(B * 10 + Ab)
    shape = (4, 5, 5)
    x = _intervals(B, shape, share, g)
    relu = ReLU()
    relu.in_shapes, relu.out_shape = (shape,), shape
    lA = torch.randn(Ab, 7, *shape, generator=g)
    uA = torch.randn(Ab, 7, *shape, generator=g)
    with torch.set_grad_enabled(grad):
        (nl, nu), lb, ub = (lambda r: (r[0][0], r[1], r[2]))(relu.backward(lA, uA, x))
        (rl, ru), rlb, rub = (lambda r: (r[0][0], r[1], r[2]))(
            Elementwise.backward(relu, lA, uA, x))
    torch.testing.assert_close(nl, rl.expand_as(nl))
    torch.testing.assert_close(nu, ru.expand_as(nu))
    torch.testing.assert_close(torch.as_tensor(lb).expand(B, 7), torch.as_tensor(rlb).expand(B, 7))
    torch.testing.assert_close(torch.as_tensor(ub).expand(B, 7), torch.as_tensor(rub).expand(B, 7))


def test_coefficients_side_by_side_map_like_concatenated_ones():
    lA, uA = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    w = torch.randn(5, 6)
    with torch.no_grad():
        lo, up = pair_buffer(lA, uA)
        lo.copy_(lA)
        up.copy_(uA)
        calls = []
        a, b = _both(lambda A: calls.append(A.shape) or A @ w, lo, up)
    assert calls == [(4, 3, 4, 5)]  # one call, on the buffer itself
    torch.testing.assert_close(a, lA @ w)
    torch.testing.assert_close(b, uA @ w)
    with torch.no_grad():
        assert pair_buffer(lA, uA) is not None and pair_buffer(lA, None) is None
    with torch.enable_grad():
        assert pair_buffer(lA, uA) is None  # written in place: not while autograd records


@pytest.mark.parametrize("seed", range(4))
def test_upper_first_and_per_example_refinement_keep_crown_bounds(seed, monkeypatch):
    model = random_residual_net(seed).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.double)
    ptb = bg.LinfBall(0.05, 0.0, 1.0)
    bm = bg.BoundedModule(model, x)
    with torch.no_grad():
        monkeypatch.setattr(be, "_flat_rule", lambda ctx, name: None)
        monkeypatch.setattr(be, "_SPLIT_CHUNKS", float("inf"))
        plain = be.crown_intermediate(bm._context(x, ptb, {}))
        plain_out = bm.compute_bounds(x, ptb, method="crown")
        monkeypatch.undo()
        monkeypatch.setattr(be, "_SPLIT_CHUNKS", 0)  # every batch one example at a time
        ctx = bm._context(x, ptb, {})
        fast = be.crown_intermediate(ctx)
        fast_out = bm.compute_bounds(x, ptb, method="crown")
    for a, b in zip(plain_out, fast_out):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    for name in plain:
        torch.testing.assert_close(fast[name].upper, plain[name].upper, atol=1e-9, rtol=1e-9)
        flat = be._flat_rule(ctx, name)
        keep = torch.ones_like(plain[name].lower, dtype=torch.bool) if flat is None else \
            ~flat(fast[name].upper)
        # lower bounds are only skipped where every consumer ignores them (and stay sound)
        torch.testing.assert_close(fast[name].lower[keep], plain[name].lower[keep], atol=1e-9,
                                   rtol=1e-9)
        assert (fast[name].lower <= plain[name].lower + 1e-9).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["crown"])
def test_an_examples_crown_bounds_do_not_depend_on_its_batch(seed, method):
    """Bounds of a batch equal those of each example bounded alone (a neuron refined for one
    example does not tighten another example's interval). Not yet true of alpha-CROWN, whose
    optimiser keeps the step that is best for the batch as a whole."""
    model = random_residual_net(seed).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.double)
    ptb = bg.LinfBall(0.05, 0.0, 1.0)
    bm = bg.BoundedModule(model, x)
    kw = {"alpha_steps": 3} if method == "alpha-crown" else {}
    with torch.no_grad():
        lb, ub = bm.compute_bounds(x, ptb, method=method, **kw)
        for b in range(3):
            l1, u1 = bm.compute_bounds(x[b:b + 1], ptb, method=method, **kw)
            torch.testing.assert_close(lb[b:b + 1], l1, atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(ub[b:b + 1], u1, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_exact_images_of_refined_nodes_skip_refinement_with_the_same_bounds(cell, monkeypatch):
    """A sigmoid or tanh of a refined pre-activation (an RNN's gates) keeps its interval: a
    CROWN pass from it could not be tighter. Fewer passes, identical bounds."""
    torch.manual_seed(0)
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(3, 4, batch_first=True)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    model = M().eval()
    x = torch.randn(2, 4, 3)
    bm = bg.BoundedModule(model, x)
    calls = []
    refine = be._refine
    monkeypatch.setattr(be, "_refine", lambda *a: calls.append(a[1]) or refine(*a))
    ptb = bg.LinfBall(0.1)
    lb, ub, inter = bm.compute_bounds(x, ptb, method="crown", return_intermediate=True)
    skipped = len(calls)
    calls.clear()
    monkeypatch.setattr(be, "_image_of_refined", lambda *a: False)
    lb0, ub0, inter0 = bm.compute_bounds(x, ptb, method="crown", return_intermediate=True)
    assert skipped < len(calls)
    torch.testing.assert_close(lb, lb0, rtol=0, atol=1e-6)
    torch.testing.assert_close(ub, ub0, rtol=0, atol=1e-6)
    for name in inter:
        torch.testing.assert_close(inter[name].lower, inter0[name].lower, rtol=0, atol=1e-6)
        torch.testing.assert_close(inter[name].upper, inter0[name].upper, rtol=0, atol=1e-6)
