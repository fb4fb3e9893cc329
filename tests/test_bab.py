"""Branch and bound on activation splits: split constraints give sound bounds for every method
(points of the sub-domain never leave them), the verifier's verdict with branch and bound equals
the exact answer on small networks whose minimum can be enumerated, it proves what alpha-CROWN
alone leaves open and finds counterexamples hidden in small regions, and it stops at its time
budget."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from torch import nn

import boundgraph as bg
from boundgraph.bab import split_nodes
from boundgraph.vnnlib import parse_vnnlib
from boundgraph.verify import verify


# ------------------------------------------------------------------------ split soundness
def mlp(seed, d=6, h=10, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, out)).double()


def cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3),
                         nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(8, 3)).double()


def trained_mlp(seed):
    """An MLP fit for a few hundred steps to a random teacher (structured weights)."""
    net = mlp(seed)
    teacher = mlp(seed + 100)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(200):
        x = torch.randn(64, 6, generator=g, dtype=torch.float64)
        loss = ((net(x) - teacher(x).detach()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def _split_values(model, pts, names, bm):
    """Values of the split nodes at points ``pts`` (by the graph's recorded forward)."""
    env = bm.graph.forward(pts, model, record=True)
    return {n: env[n] for n in names}


@pytest.mark.parametrize("build, shape", [(mlp, (6,)), (trained_mlp, (6,)), (cnn, (1, 4, 4))],
                         ids=["mlp", "trained-mlp", "cnn-leaky"])
@pytest.mark.parametrize("seed", [0, 1])
def test_split_bounds_hold_on_every_point_of_the_sub_domain(build, shape, seed):
    model = build(seed)
    B = 4
    x = torch.randn(B, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    bm = bg.BoundedModule(model, x)
    names = split_nodes(bm.graph)
    assert names
    g = torch.Generator().manual_seed(10 + seed)
    eps = 0.8
    # constraints that a random point of each ball satisfies (so no sub-domain is empty), on
    # a random third of the neurons
    ref = x + eps * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)
    with torch.no_grad():
        at_ref = _split_values(model, ref, names, bm)
    splits = {}
    for n in names:
        s = torch.sign(at_ref[n]).to(torch.int64)
        s *= (torch.rand(s.shape, generator=g) < 0.35).to(s.dtype)
        splits[n] = s
    N = 20000
    pts = (x.unsqueeze(0) + eps * (2 * torch.rand(N, *x.shape, generator=g,
                                                   dtype=torch.float64) - 1))
    flat = pts.reshape(N * B, *shape)
    with torch.no_grad():
        vals = _split_values(model, flat, names, bm)
        y = model(flat).reshape(N, B, -1)
    ok = torch.ones(N, B, dtype=torch.bool)
    for n in names:
        v = vals[n].reshape(N, B, -1)
        s = splits[n].reshape(1, B, -1)
        ok &= ((s * v >= 0) | (s == 0)).all(-1)
    assert ok.sum() > 50  # the sub-domains are not all empty
    for method in bg.METHODS:
        lb, ub = bm.compute_bounds(x, bg.LinfBall(eps), method=method, splits=splits)
        lb0, ub0 = bm.compute_bounds(x, bg.LinfBall(eps), method=method)
        lo_v = torch.where(ok.unsqueeze(-1), lb.unsqueeze(0) - y, torch.zeros_like(y)).max()
        hi_v = torch.where(ok.unsqueeze(-1), y - ub.unsqueeze(0), torch.zeros_like(y)).max()
        assert lo_v <= 1e-9 and hi_v <= 1e-9, method
        if method == "ibp":  # clipping only ever tightens intervals (a CROWN relaxation chosen
            # from tighter intervals is not always tighter at the output)
            assert (lb >= lb0 - 1e-9).all() and (ub <= ub0 + 1e-9).all(), method


def test_bad_splits_get_one_clear_error():
    model = mlp(0)
    x = torch.zeros(2, 6, dtype=torch.float64)
    bm = bg.BoundedModule(model, x)
    n = split_nodes(bm.graph)[0]
    with pytest.raises(bg.InputError, match="not an op node"):
        bm.compute_bounds(x, bg.LinfBall(0.1), splits={"nope": torch.zeros(2, 10)})
    with pytest.raises(bg.InputError, match="must have shape"):
        bm.compute_bounds(x, bg.LinfBall(0.1), splits={n: torch.zeros(3, 10)})
    with pytest.raises(bg.InputError, match="-1, 0 and"):
        bm.compute_bounds(x, bg.LinfBall(0.1), splits={n: torch.full((10,), 2)})


# ------------------------------------------------------------------------ completeness
class OneHidden(nn.Module):
    """``w2 . relu(W1 x + b1) + b2`` on two inputs: its minimum over a box is attained at a
    vertex of the arrangement of the hidden units' lines within the box."""

    def __init__(self, seed, h=10):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(2, h).double()
        self.l2 = nn.Linear(h, 1).double()
        with torch.no_grad():
            self.l1.weight.copy_(torch.randn(h, 2, generator=g, dtype=torch.float64))
            self.l1.bias.copy_(torch.randn(h, generator=g, dtype=torch.float64) * 0.5)
            self.l2.weight.copy_(torch.randn(1, h, generator=g, dtype=torch.float64))
            self.l2.bias.zero_()

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def exact_min(net: OneHidden, lo, hi) -> float:
    W = net.l1.weight.detach().numpy()
    b = net.l1.bias.detach().numpy()
    pts = [np.array(c, dtype=np.float64) for c in itertools.product(*zip(lo, hi))]
    for i in range(len(b)):  # each line with the box's edges
        for axis in (0, 1):
            for v in (lo[axis], hi[axis]):
                other = 1 - axis
                if abs(W[i, other]) > 1e-12:
                    p = np.zeros(2)
                    p[axis] = v
                    p[other] = -(b[i] + W[i, axis] * v) / W[i, other]
                    pts.append(p)
    for i, j in itertools.combinations(range(len(b)), 2):  # pairs of lines
        M = W[[i, j]]
        if abs(np.linalg.det(M)) > 1e-12:
            pts.append(np.linalg.solve(M, -b[[i, j]]))
    P = np.array([p for p in pts if np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)])
    P = np.clip(P, lo, hi)
    with torch.no_grad():
        return float(net(torch.as_tensor(P)).min())


def prop_text(lo, hi, c) -> str:
    """Unsafe when the network's one output is ``<= c`` inside the box."""
    lines = [f"(declare-const X_{i} Real)" for i in range(2)] + ["(declare-const Y_0 Real)"]
    for i in range(2):
        lines += [f"(assert (>= X_{i} {float(lo[i])!r}))",
                  f"(assert (<= X_{i} {float(hi[i])!r}))"]
    lines.append(f"(assert (<= Y_0 {float(c)!r}))")
    return "\n".join(lines)


def instance(seed):
    net = OneHidden(seed)
    g = np.random.default_rng(seed)
    centre = g.uniform(-1, 1, 2)
    lo, hi = centre - 1.0, centre + 1.0
    m = exact_min(net, lo, hi)
    bm = bg.BoundedModule(net, torch.zeros(1, 2, dtype=torch.float64))
    return net, bm, lo, hi, m


@pytest.mark.parametrize("seed", range(12))
def test_bab_verdict_equals_the_exact_answer_on_small_networks(seed):
    net, bm, lo, hi, m = instance(seed)
    scale = 0.02 * (1 + abs(m))
    for c, truth in ((m - scale, "unsat"), (m + scale, "sat")):
        r = verify(bm, parse_vnnlib(prop_text(lo, hi, c)), timeout=30, method="bab",
                   attack_budget=0.05)
        assert r.verdict == truth, (seed, c, m, r)
        if truth == "sat":
            x, _ = r.counterexample
            with torch.no_grad():
                assert float(net(torch.as_tensor(x).reshape(1, 2))) <= c


def _left_open_by_alpha_crown():
    """A (network, box, threshold) whose property holds but alpha-CROWN cannot prove."""
    for seed in range(40):
        net, bm, lo, hi, m = instance(100 + seed)
        c = m - 0.01 * (1 + abs(m))
        x = torch.as_tensor((lo + hi) / 2).reshape(1, 2)
        box = bg.Box(torch.as_tensor(lo).reshape(1, 2), torch.as_tensor(hi).reshape(1, 2))
        lb, _ = bm.compute_bounds(x, box, method="alpha-crown", alpha_steps=50)
        if float(lb.detach()) < c - 0.1 * (1 + abs(m)):
            return net, bm, lo, hi, m, c
    raise AssertionError("no instance that alpha-CROWN leaves open")


def test_bab_proves_what_alpha_crown_leaves_open():
    net, bm, lo, hi, m, c = _left_open_by_alpha_crown()
    prop = parse_vnnlib(prop_text(lo, hi, c))
    plain = verify(bm, prop, timeout=30, method="alpha-crown", bisect=False)
    assert plain.verdict == "unknown"
    r = verify(bm, prop, timeout=30, method="bab")
    assert r.verdict == "unsat" and r.details["bab_domains"] > 0, r


def test_bab_finds_a_counterexample_hidden_in_a_small_region():
    net, bm, lo, hi, m, c = _left_open_by_alpha_crown()
    # just above the minimum: the unsafe set is a small region around the minimiser
    prop = parse_vnnlib(prop_text(lo, hi, m + 1e-4 * (1 + abs(m))))
    r = verify(bm, prop, timeout=30, method="bab", attack_budget=0.01)
    assert r.verdict == "sat", r
    x, _ = r.counterexample
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)


def test_bab_is_the_auto_ladder_for_many_inputs_and_proves_a_robustness_property():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 3)).double()
    x0 = torch.rand(1, 40, dtype=torch.float64)
    y = int(net(x0).argmax())
    from boundgraph.certify import robustness_vnnlib

    bm = bg.BoundedModule(net, x0)
    # the largest eps whose property CROWN cannot prove but holds (bisected on the attack)
    for eps in (0.2, 0.1, 0.05, 0.03, 0.02):
        prop = parse_vnnlib(robustness_vnnlib(x0.numpy().ravel(), y, eps, num_classes=3,
                                              lower=-10, upper=10))
        crown = verify(bm, prop, timeout=20, method="crown")
        if crown.verdict == "unknown":
            r = verify(bm, prop, timeout=60)
            assert r.verdict in ("unsat", "sat"), r
            if r.verdict == "unsat":
                assert r.details["stage"] == "bab"
                return
    pytest.skip("no eps left CROWN open with a provable property")


# ------------------------------------------------------------------------ time budget
def test_bab_returns_timeout_within_ten_percent_of_its_budget():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(50, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                        nn.Linear(100, 1)).double()
    lo, hi = -np.ones(50), np.ones(50)
    # the threshold a long attack reaches, lowered a little: the property most likely holds,
    # and proving it takes far more domains than the budget allows
    from boundgraph.attack import pgd_minimize

    L = torch.as_tensor(lo).expand(256, 50)
    H = torch.as_tensor(hi).expand(256, 50)
    _, v = pgd_minimize(lambda z: net(z)[:, 0], L, H, steps=100, restarts=4,
                        generator=torch.Generator().manual_seed(0))
    c = float(v.min()) - 0.05 * abs(float(v.min()))
    text = "\n".join([f"(declare-const X_{i} Real)" for i in range(50)]
                     + ["(declare-const Y_0 Real)"]
                     + [f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))" for i in range(50)]
                     + [f"(assert (<= Y_0 {c!r}))"])
    bm = bg.BoundedModule(net, torch.zeros(1, 50, dtype=torch.float64))
    budget = 4.0
    t0 = time.perf_counter()
    r = verify(bm, parse_vnnlib(text), timeout=budget)
    took = time.perf_counter() - t0
    assert r.verdict == "timeout", r
    assert took <= 1.1 * budget, took


def test_certified_accuracy_with_bab_certifies_at_least_what_bounds_do_and_stays_consistent():
    from boundgraph.certify import certified_accuracy

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                        nn.Linear(24, 3))
    x = torch.rand(12, 40)
    with torch.no_grad():
        y = net(x).argmax(1)
    data = list(zip(x, y))
    # at this radius alpha-CROWN certifies half the examples and branch and bound the rest
    plain = certified_accuracy(net, data, 0.2, progress=False)
    full = certified_accuracy(net, data, 0.2, progress=False, bab_timeout=5.0)
    assert plain["certified"] < 12 and full["by_method"]["bab"] > 0
    assert full["certified"] == plain["certified"] + full["by_method"]["bab"]
    # certified examples are never broken; every example is decided or counted open
    assert full["certified"] / full["n"] <= full["pgd_robust"] <= plain["pgd_robust"]
    decided_or_open = full["certified"] + full["bab_open"] + round((1 - full["pgd_robust"]) * 12)
    assert decided_or_open == 12


def test_split_bounds_are_the_same_when_full_crown_refines_one_example_at_a_time(monkeypatch):
    """Large batches are refined example by example; each must keep its own constraints."""
    import boundgraph.engines.backward as be

    model = mlp(4)
    B = 6
    x = torch.randn(B, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    bm = bg.BoundedModule(model, x)
    names = split_nodes(bm.graph)
    g = torch.Generator().manual_seed(5)
    splits = {n: torch.randint(-1, 2, (B, *bm.graph.nodes[n].shape), generator=g)
              for n in names}
    whole = bm.compute_bounds(x, bg.LinfBall(0.5), method="crown", splits=splits)
    monkeypatch.setattr(be, "_SPLIT_CHUNKS", 0)  # force the per-example path
    apart = bm.compute_bounds(x, bg.LinfBall(0.5), method="crown", splits=splits)
    for a, b in zip(whole, apart):
        torch.testing.assert_close(a, b)
