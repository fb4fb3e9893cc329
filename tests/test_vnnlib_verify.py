"""The VNN-LIB verifier on small networks built here, with known answers: provable properties
come out unsat, planted counterexamples come out sat with a counterexample onnxruntime confirms,
and a property with a counterexample is never called unsat (checked by brute-force sampling on
many random networks and boxes)."""
from __future__ import annotations

import csv
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import boundgraph as bg
from boundgraph.errors import InputError
from boundgraph.certify import certified_accuracy, robustness_vnnlib
from boundgraph.instances import read_instances, verify_instances
from boundgraph.verify import Result, verify
from boundgraph.vnnlib import Disjunct, Property, parse_counterexample, parse_vnnlib


# ---------------------------------------------------------------------------------- helpers
def mlp_onnx(path, sizes, seed, fixed_batch=False):
    """A random ReLU MLP as ONNX (Gemm/Relu), input ``[N, sizes[0]]``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = (rng.standard_normal((b, a)) / math.sqrt(a)).astype(np.float32)
        c = (0.3 * rng.standard_normal(b)).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{k}"), numpy_helper.from_array(c, f"b{k}")]
        out = "y" if k == len(sizes) - 2 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [out], transB=1))
        cur = out
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"]))
            cur = f"r{k}"
    dim0 = 1 if fixed_batch else "N"
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [dim0, sizes[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [dim0, sizes[-1]])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return str(path)


def ort_out(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(x, np.float32).reshape(1, -1)
    return sess.run(None, {"x": x})[0].reshape(-1).astype(np.float64)


def grid(lo, hi, n):
    axes = [np.linspace(a, b, n) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))


def brute_outputs(path, pts):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": pts.astype(np.float32)})[0].astype(np.float64)


def lipschitz_inf(path):
    """An upper bound on the L-inf -> L-inf Lipschitz constant of the MLP (product of the
    weight matrices' inf-norms)."""
    m = onnx.load(path)
    L = 1.0
    for init in m.graph.initializer:
        if init.name.startswith("W"):
            L *= float(np.abs(numpy_helper.to_array(init)).sum(1).max())
    return L


def vnnlib_text(lo, hi, rows, d):
    """Unsafe region ``lo <= x <= hi and rows @ y <= d`` as VNN-LIB text."""
    n, m = len(lo), np.asarray(rows).shape[1]
    out = [f"(declare-const X_{i} Real)" for i in range(n)]
    out += [f"(declare-const Y_{j} Real)" for j in range(m)]
    for i in range(n):
        out += [f"(assert (>= X_{i} {float(lo[i])!r}))", f"(assert (<= X_{i} {float(hi[i])!r}))"]
    for r, dv in zip(rows, d):
        terms = " ".join(f"(* {float(c)!r} Y_{j})" for j, c in enumerate(r) if c != 0)
        out.append(f"(assert (<= (+ {terms} 0.0) {float(dv)!r}))")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- known answers
def test_property_with_a_large_margin_is_unsat_by_bounds_alone(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [3, 10, 10, 2], seed=1)
    lo, hi = np.array([-0.1, 0.0, 0.2]), np.array([0.1, 0.2, 0.3])
    pts = grid(lo, hi, 9)
    y0 = brute_outputs(path, pts)[:, 0]
    L = lipschitz_inf(path)
    d = y0.min() - L * 0.2  # far below anything reachable: y_0 <= d is impossible
    prop = parse_vnnlib(vnnlib_text(lo, hi, [[1.0, 0.0]], [d]))
    res = verify(path, prop, timeout=20)
    assert res.verdict == "unsat"
    assert res.details["stage"] == "bounds"


def test_tight_property_on_two_inputs_is_unsat_after_bisection(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [2, 16, 16, 2], seed=3)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    n = 301
    pts = grid(lo, hi, n)
    y = brute_outputs(path, pts)
    margin = y[:, 0] - y[:, 1]
    h = (hi - lo).max() / (n - 1)
    L = lipschitz_inf(path) * 2  # of y_0 - y_1
    d = margin.min() - L * h / 2 - 1e-3  # provably below the true minimum of y_0 - y_1
    prop = parse_vnnlib(vnnlib_text(lo, hi, [[1.0, -1.0]], [d]))
    first = verify(path, prop, timeout=30, bisect=False)
    res = verify(path, prop, timeout=30)
    assert res.verdict == "unsat", res
    if first.verdict != "unsat":  # the interesting case: only bisection proves it
        assert res.details["stage"] == "bisection" and res.details["boxes"] > 1


def test_planted_counterexample_is_found_and_confirmed_by_onnxruntime(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [4, 12, 12, 3], seed=5)
    rng = np.random.default_rng(0)
    lo, hi = -np.ones(4), np.ones(4)
    x_star = rng.uniform(-0.9, 0.9, 4)
    y_star = ort_out(path, x_star)
    # unsafe: y_0 - y_1 <= (at x*) + tiny and y_2 >= (at x*) - tiny: a small region around x*
    rows = [[1.0, -1.0, 0.0], [0.0, 0.0, -1.0]]
    d = [y_star[0] - y_star[1] + 1e-3, -y_star[2] + 1e-3]
    prop = parse_vnnlib(vnnlib_text(lo, hi, rows, d))
    res = verify(path, prop, timeout=30)
    assert res.verdict == "sat", res
    x, y = res.counterexample
    assert np.all(x >= lo) and np.all(x <= hi)
    y_check = ort_out(path, x)
    assert prop.is_counterexample(x, y_check, tol=0.0)
    np.testing.assert_allclose(y, y_check, rtol=0, atol=0)


def test_result_file_is_in_vnncomp_format(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [2, 8, 2], seed=2)
    prop_path = tmp_path / "p.vnnlib"
    # the whole box is unsafe: y_0 <= 1e9
    prop_path.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, 0.0]], [1e9]))
    res = verify(path, str(prop_path), timeout=10)
    assert res.verdict == "sat"
    out = tmp_path / "result.txt"
    res.write(out)
    text = out.read_text()
    assert text.splitlines()[0] == "sat"
    x, y = parse_counterexample(str(out))
    assert x.shape == (2,) and y.shape == (2,)
    prop = parse_vnnlib(str(prop_path))
    assert prop.is_counterexample(x, ort_out(path, x))
    assert Result("unsat").to_vnncomp() == "unsat\n"


def test_fixed_batch_one_input_and_multi_dimensional_shape(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [3, 6, 2], seed=4, fixed_batch=True)
    prop = parse_vnnlib(vnnlib_text([0.0] * 3, [1.0] * 3, [[1.0, 0.0]], [-1e6]))
    assert verify(path, prop, timeout=10).verdict == "unsat"


def test_disjunctions_over_boxes_and_outputs(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [2, 8, 8, 2], seed=6)
    pts = grid([-1, -1], [1, 1], 41)
    y = brute_outputs(path, pts)
    # disjunct A: impossible (y_0 far below); disjunct B (another box): the whole box unsafe
    dA = Disjunct([-1, -1], [0, 0], [[1.0, 0.0]], [y[:, 0].min() - 100])
    dB = Disjunct([0.5, 0.5], [1, 1], [[0.0, 1.0]], [y[:, 1].max() + 100])
    prop = Property(2, 2, [dA, dB])
    res = verify(path, prop, timeout=10)
    assert res.verdict == "sat"
    assert np.all(res.counterexample[0] >= 0.5)
    assert verify(path, Property(2, 2, [dA]), timeout=10).verdict == "unsat"
    assert verify(path, Property(2, 2, []), timeout=10).verdict == "unsat"


@pytest.mark.parametrize("seed", range(16))
def test_never_unsat_when_brute_force_finds_a_counterexample(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    n_in = int(rng.integers(1, 4))
    n_out = int(rng.integers(2, 4))
    sizes = [n_in] + [int(rng.integers(4, 12))] * int(rng.integers(1, 3)) + [n_out]
    path = mlp_onnx(tmp_path / "n.onnx", sizes, seed=seed)
    c = rng.uniform(-1, 1, n_in)
    w = rng.uniform(0.05, 0.5, n_in)
    lo, hi = c - w, c + w
    pts = np.concatenate([grid(lo, hi, {1: 2001, 2: 61, 3: 15}[n_in]),
                          lo + rng.uniform(size=(4000, n_in)) * (hi - lo)])
    y = brute_outputs(path, pts)
    i, j = rng.choice(n_out, 2, replace=False)
    margin = y[:, i] - y[:, j]
    # a threshold near the bottom of the sampled range: sometimes reachable, sometimes not
    d = float(np.quantile(margin, rng.uniform(0.0, 0.02)) - rng.uniform(-0.02, 0.05))
    row = np.zeros(n_out)
    row[i], row[j] = 1.0, -1.0
    prop = parse_vnnlib(vnnlib_text(lo, hi, [row], [d]))
    res = verify(path, prop, timeout=6)
    found = bool((margin <= d).any())
    if found:
        assert res.verdict != "unsat", (seed, res)
    if res.verdict == "unsat":
        assert not found
    if res.verdict == "sat":
        x, _ = res.counterexample
        assert prop.is_counterexample(x, ort_out(path, x))


# ---------------------------------------------------------------------------------- modules, modes
def test_verify_accepts_a_traced_bounded_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    bm = bg.BoundedModule(net, torch.zeros(2, 2))
    prop = Property(2, 2, [Disjunct([-1, -1], [1, 1], [[1.0, 0.0]], [1e6])])
    res = verify(bm, prop, timeout=5)
    assert res.verdict == "sat"
    x, y = res.counterexample
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.tensor(x, dtype=torch.float32)[None]).numpy()[0], y,
                                   rtol=1e-6)


def test_single_method_without_bisection_can_end_unknown(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [2, 16, 16, 2], seed=3)
    pts = grid([-1, -1], [1, 1], 101)
    y = brute_outputs(path, pts)
    d = float((y[:, 0] - y[:, 1]).min()) - 1e-3  # close below the minimum: IBP cannot prove it
    prop = parse_vnnlib(vnnlib_text([-1.0, -1.0], [1.0, 1.0], [[1.0, -1.0]], [d]))
    res = verify(path, prop, timeout=10, method="ibp", bisect=False)
    assert res.verdict in ("unknown", "sat")
    with pytest.raises(InputError, match="method"):
        verify(path, prop, method="magic")


def test_size_mismatch_between_model_and_property_is_an_input_error(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [3, 4, 2], seed=0)
    prop = parse_vnnlib(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, 0.0]], [0.0]))
    with pytest.raises(InputError, match="2 inputs"):
        verify(path, prop, timeout=5)


def test_timeout_verdict_when_the_budget_is_too_small(tmp_path):
    path = mlp_onnx(tmp_path / "n.onnx", [5, 50, 50, 50, 2], seed=7)
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, (20000, 5))
    y = brute_outputs(path, pts)
    d = float((y[:, 0] - y[:, 1]).min()) - 0.5
    prop = parse_vnnlib(vnnlib_text([-1.0] * 5, [1.0] * 5, [[1.0, -1.0]], [d]))
    res = verify(bg.load_onnx(path), prop, timeout=0.3, attack_budget=0.05)
    assert res.verdict in ("timeout", "unsat")
    assert res.time < 3.0


# ---------------------------------------------------------------------------------- batch mode
def test_instances_csv_batch_mode_and_cli(tmp_path, capsys):
    from boundgraph.cli import main

    d = tmp_path / "bench"
    (d / "nets").mkdir(parents=True)
    path = mlp_onnx(d / "nets" / "a.onnx", [2, 8, 2], seed=2)
    (d / "unsafe.vnnlib").write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, 0.0]], [1e9]))
    (d / "safe.vnnlib").write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], [[1.0, 0.0]], [-1e9]))
    (d / "instances.csv").write_text("nets/a.onnx,unsafe.vnnlib,10\nnets/a.onnx,safe.vnnlib,10\n")
    rows = read_instances(d / "instances.csv")
    assert rows[0]["onnx_path"] == path and rows[0]["timeout"] == 10.0
    out = tmp_path / "results.csv"
    res = verify_instances(d / "instances.csv", out, progress=False)
    assert [r["verdict"] for r in res] == ["sat", "unsat"]
    table = list(csv.DictReader(open(out)))
    assert [r["verdict"] for r in table] == ["sat", "unsat"]
    assert {"onnx", "vnnlib", "verdict", "time"} <= set(table[0])
    # the same through the command line, with result files
    rdir = tmp_path / "res"
    assert main(["verify", "--instances", str(d / "instances.csv"), "--out", str(out),
                 "--results-dir", str(rdir), "--quiet"]) == 0
    assert "sat: 1" in capsys.readouterr().out
    assert (rdir / "a__unsafe.result").read_text().startswith("sat\n((X_0 ")
    # one property from the command line
    rf = tmp_path / "one.txt"
    assert main(["verify", path, str(d / "safe.vnnlib"), "--timeout", "5", "--out", str(rf)]) == 0
    assert rf.read_text() == "unsat\n"
    assert main(["verify", path]) == 2


# ---------------------------------------------------------------------------------- data sets
def test_certified_accuracy_on_a_synthetic_data_set():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 4, 4, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2), torch.nn.ReLU(),
                              torch.nn.Linear(2, 2))
    with torch.no_grad():  # a classifier that is right by a margin: mean of the pixels
        net[1].weight.zero_()
        net[1].weight[0] = 1.0 / 16
        net[1].weight[1] = -1.0 / 16
        net[1].bias.zero_()
        net[3].weight.copy_(torch.tensor([[-8.0, 8.0], [8.0, -8.0]]))
        net[3].bias.copy_(torch.tensor([4.0, -4.0]))
    ds = torch.utils.data.TensorDataset(x, y)
    zero = certified_accuracy(net, ds, 0.0, progress=False)
    assert zero["certified_fraction"] == pytest.approx(zero["clean"])
    small = certified_accuracy(net, ds, 0.01, progress=False, batch_size=16)
    big = certified_accuracy(net, ds, 0.3, progress=False)
    assert 0.0 <= big["certified_fraction"] <= small["certified_fraction"] <= zero["clean"]
    assert big["certified_fraction"] <= big["pgd_robust"]
    assert sum(small["by_method"].values()) == small["certified"]
    assert set(small["by_method"]) == {"ibp", "crown-ibp", "crown", "alpha-crown"}
    only = certified_accuracy(net, ds, 0.01, method="ibp", progress=False)
    assert only["certified"] <= small["certified"]


def test_certified_accuracy_cli_on_the_mnist_test100_file(tmp_path, capsys, monkeypatch):
    from boundgraph.cli import main

    # a file of the mnist-test100 format, found through the data folder variable
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 10, (12, 1)), rng.integers(0, 256, (12, 784))], 1)
    np.savetxt(tmp_path / "mnist_test100.csv", rows, fmt="%d", delimiter=",")
    monkeypatch.setenv("BOUNDGRAPH_DATA", str(tmp_path))
    torch.manual_seed(0)
    ck = tmp_path / "ck.pt"
    from models import get_model

    model = get_model("mlp", hidden=(32,))
    torch.save({"model_name": "mlp", "model_kwargs": {"hidden": [32]},
                "model_state": model.state_dict()}, ck)
    out = tmp_path / "rep.json"
    assert main(["verify", "--checkpoint", str(ck), "--dataset", "mnist-test100", "--eps",
                 "0.001", "-n", "8", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "certified" in text and "/8" in text
    assert main(["verify", "--model", "mlp", "--dataset", "mnist-test100"]) == 2


def test_robustness_property_text_parses_to_the_clipped_ball():

    x = np.array([0.0, 0.5, 1.0])
    prop = parse_vnnlib(robustness_vnnlib(x, 2, 0.1, num_classes=4))
    assert prop.n_inputs == 3 and prop.n_outputs == 4 and len(prop.disjuncts) == 3
    np.testing.assert_allclose(prop.disjuncts[0].lower, [0.0, 0.4, 0.9])
    np.testing.assert_allclose(prop.disjuncts[0].upper, [0.1, 0.6, 1.0])
    # unsafe iff some other class reaches class 2
    assert prop.is_counterexample(x, [0.0, 3.0, 2.0, 0.0])
    assert not prop.is_counterexample(x, [0.0, 1.0, 2.0, 0.0])
    with pytest.raises(InputError):
        robustness_vnnlib(x, 5, 0.1, num_classes=4)


def test_a_point_on_a_strict_boundary_is_never_a_counterexample():
    """y = x with 0 <= x < 0.5 and y >= 0.5 holds (unsat); the closure's only unsafe point
    x = 0.5 lies on the strict bound and must not be reported as sat."""
    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    bm = bg.BoundedModule(net, torch.zeros(2, 1))
    text = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            "(assert (>= X_0 0.0))\n(assert (< X_0 0.5))\n(assert (>= Y_0 0.5))\n")
    prop = parse_vnnlib(text)
    assert prop.strict
    assert verify(bm, prop, timeout=10).verdict != "sat"
    # the same file with <= has that point as a real counterexample
    closed = parse_vnnlib(text.replace("(< X_0", "(<= X_0"))
    assert not closed.strict and verify(bm, closed, timeout=10).verdict == "sat"
    dj = prop.disjuncts[0]
    assert dj.contains([0.5], [0.5]) and not dj.contains([0.5], [0.5], strict=True)
    assert dj.contains([0.25], [0.75], strict=True)


def test_auto_ladder_ends_with_alpha_crown_which_proves_what_fixed_slopes_cannot():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 2)).double()
    lo, hi = -torch.ones(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    bm = bg.BoundedModule(net, lo)
    C = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    box, x = bg.Box(lo, hi), torch.zeros(1, 4, dtype=torch.float64)
    with torch.no_grad():
        fixed = max(bm.compute_bounds(x, box, method=m, C=C, bound_upper=False,
                                      relu_lower=mode)[0].item()
                    for m in ("ibp", "crown-ibp", "crown") for mode in ("adaptive", "zero",
                                                                        "parallel"))
        alpha = bm.compute_bounds(x, box, method="alpha-crown", C=C, bound_upper=False)[0].item()
    assert alpha > fixed + 1e-3
    d = (fixed + alpha) / 2  # unsafe: y_0 - y_1 <= d, which alpha-CROWN alone rules out
    prop = Property(4, 2, [Disjunct([-1.0] * 4, [1.0] * 4, [[1.0, -1.0]], [d])])
    res = verify(bm, prop, timeout=20, bisect=False)
    assert res.verdict == "unsat", res
    assert res.details["methods"][-1] == "alpha-crown"
    assert "crown[zero]" in res.details["methods"]


def test_bisection_split_scores_are_the_derivative_of_the_bound_through_every_layer():
    """The input-bisection scores differentiate the CROWN bound in the box's corners through
    the intermediate bounds too (held constant, ACAS Xu bisection slowed from 0.4 s to a
    timeout on some properties); finite differences of the bound agree with them."""
    from boundgraph.verify_problem import _Problem

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 24), torch.nn.ReLU(), torch.nn.Linear(24, 24),
                              torch.nn.ReLU(), torch.nn.Linear(24, 1)).double()
    bm = bg.BoundedModule(net, torch.zeros(1, 5, dtype=torch.float64))
    lo, hi = -np.ones(5) * 0.4, np.ones(5) * 0.4
    prop = Property(5, 1, [Disjunct(lo, hi, np.ones((1, 1)), np.array([-100.0]))])
    prob = _Problem(bm, prop, lambda g, x: None, deadline=math.inf, seed=0)
    g = prob.groups[0]
    L = torch.as_tensor(lo).reshape(1, 5).requires_grad_(True)
    U = torch.as_tensor(hi).reshape(1, 5).requires_grad_(True)
    lb = prob.bounds(g, L, U, "crown", grad=True)
    dL, dU = torch.autograd.grad(lb.sum(), (L, U))
    h = 1e-6
    fd = []
    for i in range(5):
        e = torch.zeros(1, 5, dtype=torch.float64)
        e[0, i] = h
        with torch.no_grad():
            up = prob.bounds(g, L.detach() + e, U.detach(), "crown")
            down = prob.bounds(g, L.detach(), U.detach() - e, "crown")
        fd.append([float((up - lb).detach()) / h, float((lb - down).detach()) / h])
    fd = torch.tensor(fd, dtype=torch.float64)
    ad = torch.stack([dL[0], dU[0]], 1)
    assert torch.nn.functional.cosine_similarity(fd.flatten(), ad.flatten(), dim=0) > 0.999
    assert ad.abs().sum() > 0
