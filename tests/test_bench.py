"""Smoke tests of the benchmark suite at tiny sizes: each benchmark's measuring function returns
the expected keys, result files go where they are told (never into the committed results), the
suite's options parse, and ``boundgraph bench --help`` works. Timings are never checked here."""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch

from benchmarks import certified, common, peers, plots, scaling, suite

METHODS = ("ibp", "crown-ibp", "crown")


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """Every test writes its results under tmp_path, never into benchmarks/results."""
    out = tmp_path / "results"
    monkeypatch.setenv(common.RESULTS_ENV, str(out))
    return out


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------ common / CLI
def test_results_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv(common.RESULTS_ENV, str(tmp_path / "x"))
    jp, mp = common.write_results("demo", {"a": 1}, "# t\n")
    assert jp == tmp_path / "x" / "demo.json" and json.loads(jp.read_text()) == {"a": 1}
    assert mp.read_text() == "# t\n"
    monkeypatch.delenv(common.RESULTS_ENV)
    assert common.results_dir() == common.RESULTS


def test_machine_stamp_keys():
    st = common.machine_stamp()
    assert {"cpu", "torch_threads", "torch", "commit", "date"} <= set(st)


def test_peak_rss_window():
    common.reset_peak_rss()
    base = common.rss_now_mb()
    # 96 MB: above glibc's largest mmap threshold (32 MB), so fresh pages, never reused ones
    buf = torch.ones(24 * 2 ** 20)
    assert common.window_peak_rss_mb() >= base + 64 or not common.reset_peak_rss()
    del buf


def test_bench_help(capsys):
    from boundgraph.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--only" in out


def test_suite_options():
    args = suite.parse_args(["--quick", "--only", "bounds", "scaling"])
    assert args.quick and [b.name for b in suite.selected(args)] == ["bounds", "scaling"]
    args = suite.parse_args(["--skip", "vnncomp"])
    assert not args.quick and "vnncomp" not in [b.name for b in suite.selected(args)]
    assert [b.name for b in suite.selected(suite.parse_args([]))] == suite.NAMES
    with pytest.raises(SystemExit):
        suite.parse_args(["--only", "no-such-benchmark"])
    assert suite._quick_name(common.Path("bounds.json")) == "bounds_quick.json"
    assert suite._quick_name(common.Path("x_quick.md")) == "x_quick.md"


def test_suite_quick_writes_only_quick_files(_results_in_tmp, capsys):
    """A real quick run of two cheap benchmarks: *_quick files in the chosen directory, and
    the suite summary; a missing module is skipped, not failed."""
    before = {p.name: p.stat().st_mtime for p in common.RESULTS.glob("*")} \
        if common.RESULTS.exists() else {}
    rc = suite.main(["--quick", "--only", "peers", "certified", "vnncomp", "--budget", "0",
                     "--out", str(_results_in_tmp)])
    assert rc == 0
    names = {p.name for p in _results_in_tmp.iterdir()}
    assert {"peers_quick.json", "peers_quick.md", "certified_quick.json",
            "certified_quick.md", "suite_quick_partial.json"} <= names
    assert not {"peers.json", "certified.json"} & names
    summary = json.loads((_results_in_tmp / "suite_quick_partial.json").read_text())
    status = {r["name"]: r["status"] for r in summary["benchmarks"]}
    assert status["peers"] == status["certified"] == "ok"
    assert status["vnncomp"] in ("ok", "skipped")
    after = {p.name: p.stat().st_mtime for p in common.RESULTS.glob("*")} \
        if common.RESULTS.exists() else {}
    assert after == before  # committed results untouched


@pytest.mark.parametrize("b", suite.BENCHMARKS, ids=lambda b: b.name)
def test_suite_declares_module_options(b, monkeypatch):
    """The suite's table says which options each benchmark module takes (no --help parsing at
    run time): check the declarations against the module's own argument parser."""
    import argparse
    import importlib

    seen = {}

    def grab(parser, *args, **kwargs):
        seen["options"] = set(parser._option_string_actions)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(SystemExit):
        importlib.import_module(b.module).main([])
    opts = seen["options"]
    assert ("--quick" in opts) == b.own_quick
    wanted = [a for a in (*(b.quick_fallback or ()), *b.args) if a.startswith("--")]
    assert not [a for a in wanted if a not in opts]


def test_run_benchmark_skips_missing_module(tmp_path):
    b = suite.Benchmark("ghost", "benchmarks.no_such_module", "nothing", ("ghost",))
    rec = suite.run_benchmark(b, suite.parse_args(["--quick"]), tmp_path, None, tmp_path)
    assert rec["status"] == "skipped" and "does not exist" in rec["note"]


# ---------------------------------------------------------------------------------- bounds
def test_bounds_run_one_keys():
    from benchmarks import bounds

    r = bounds.run_one("mlp", batch=2, methods=list(METHODS), repeats=1, eps=0.01, in_size=6)
    assert {"model", "batch", "forward_s"} <= set(r)
    for m in METHODS:
        assert {"time_s", "ratio_to_forward", "mean_width", "peak_rss_mb"} <= set(r[m])
    assert r["crown"]["mean_width"] <= r["ibp"]["mean_width"] + 1e-5


@pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib not installed")
def test_plot_bounds(tmp_path):
    jp = tmp_path / "bounds.json"
    res = {"model": "mlp", "batch": 1, "forward_s": 1e-3}
    for i, m in enumerate(METHODS):
        res[m] = {"time_s": 1e-3 * (i + 1), "ratio_to_forward": float(i + 1),
                  "mean_width": 1.0 / (i + 1), "peak_rss_mb": 300.0}
    jp.write_text(json.dumps({"machine": common.machine_stamp(), "eps": 0.01,
                              "results": [res, {"model": "cnn7", "batch": 8, "error": "x"}]}))
    png = plots.plot_bounds(jp)
    assert png == tmp_path / "bounds.png" and png.stat().st_size > 1000


def test_plots_tolerate_missing_and_malformed(tmp_path):
    assert plots.plot_bounds(tmp_path / "none.json") is None
    bad = tmp_path / "vnncomp.json"
    bad.write_text(json.dumps({"results": [{"weird": 1}]}))
    assert plots.plot_vnncomp(bad) is None
    bad.write_text("{not json")
    assert plots.plot_training_speed(bad) is None


# --------------------------------------------------------------------------------- scaling
@pytest.mark.parametrize("spec", [
    {"kind": "mlp", "hidden": [8, 8], "in_channels": 1, "in_size": 4},
    {"kind": "conv", "depth": 2, "channels": 2, "in_channels": 1, "in_size": 4},
])
def test_scaling_run_one_keys(spec):
    seen = []
    r = scaling.run_one(spec, emit=seen.append)
    assert r["relu_neurons"] == (16 if spec["kind"] == "mlp" else 64)
    assert 0 <= r["unstable_ibp"] <= r["relu_neurons"]
    for m in METHODS:
        assert {"time_s", "peak_rss_mb", "extra_mb", "mean_width"} <= set(r[m])
        assert r[m]["extra_mb"] >= 0
    assert [o.get("method") for o in seen] == [None, *METHODS]


def test_scaling_specs_cover_axes():
    for axis, info in scaling.AXES.items():
        for quick in (False, True):
            for x in info["quick" if quick else "full"]:
                spec = scaling.model_spec(axis, x, quick)
                assert spec["kind"] in ("mlp", "conv", "zoo")
            assert ":" in scaling.axis_title(axis, quick)
    with pytest.raises(ValueError):
        scaling.model_spec("nope", 1)


def test_loglog_fit_and_extrapolation():
    xs = [64, 128, 256, 512]
    assert scaling.loglog_slope(xs, [3 * x ** 2 for x in xs]) == pytest.approx(2.0)
    assert scaling.loglog_slope([1], [1]) is None
    points = [{"axis": "mlp_width", "x": x, "rss_base_mb": 300.0,
               **{m: {"time_s": 1e-3 * x, "extra_mb": 0.01 * x ** 2} for m in METHODS}}
              for x in xs]
    fits = [f for f in scaling.fit_growth(points, mem_total=300.0 + 0.01 * 4096 ** 2)
            if f["axis"] == "mlp_width"]
    crown = next(f for f in fits if f["method"] == "crown")
    assert crown["time_s_slope_tail"] == pytest.approx(1.0)
    assert crown["extra_mb_slope_all"] == pytest.approx(2.0)
    assert crown["x_at_ram"] == pytest.approx(4096)
    assert crown["time_s_at_2x"]["x"] == 1024
    assert crown["time_s_at_2x"]["value"] == pytest.approx(1.024)


def test_scaling_isolated_point_and_report(_results_in_tmp):
    """One point through a fresh process (the --one protocol), then the tables and plot."""
    pts = scaling.run_plan([("mlp_width", 8)], eps=0.01, batch=1, timeout=120, quick=True,
                           progress=False)
    assert len(pts) == 1 and all("time_s" in pts[0][m] for m in METHODS), pts
    payload = {"quick": True, "machine": common.machine_stamp(), "command": "test",
               "eps": 0.01, "batch": 1, "mem_total_mb": common.mem_total_mb(),
               "baseline_mb": pts[0]["rss_base_mb"],
               "axes": [{"name": "mlp_width", "title": scaling.axis_title("mlp_width", True),
                         "x_label": "w"}], "points": pts}
    payload["fits"] = scaling.fit_growth(pts, payload["mem_total_mb"])
    table = scaling.make_table(payload)
    assert "## Extrapolated (NOT measured)" in table and "## Measured points" in table
    jp, _ = common.write_results("scaling_quick", payload, table)
    if _has_matplotlib():
        assert plots.plot_scaling(jp).exists()


def test_scaling_failed_method_is_dropped_for_larger_sizes(monkeypatch):
    calls = []

    def fake(module, cfg, timeout=None):
        calls.append(cfg["methods"])
        head = {"relu_neurons": 1, "unstable_ibp": 0, "forward_s": 1e-4, "rss_base_mb": 1.0}
        r = {"time_s": 1e-3, "peak_rss_mb": 1.0, "extra_mb": 0.0, "mean_width": 1.0}
        return [head, {"method": "ibp", **r}, {"method": "crown-ibp", **r}], "timeout after 1 s"

    monkeypatch.setattr(scaling, "run_isolated", fake)
    pts = scaling.run_plan([("mlp_width", 8), ("mlp_width", 16)], 0.01, 1, 1, progress=False)
    assert calls == [list(METHODS), ["ibp", "crown-ibp"]]
    assert pts[0]["crown"]["error"].startswith("timeout")
    assert "skipped" in pts[1]["crown"]["error"]


# ----------------------------------------------------------------------------------- peers
def _fake_auto_lirpa():
    """A stand-in with auto_LiRPA's calling convention, computing with boundgraph."""
    import boundgraph as bg

    mod = types.ModuleType("auto_LiRPA")
    mod.__version__ = "fake"

    class PerturbationLpNorm:
        def __init__(self, eps=0.0, norm=math.inf, x_L=None, x_U=None):
            self.lo, self.hi = x_L, x_U

    class BoundedTensor:
        def __init__(self, x, ptb):
            self.x, self.ptb = x, ptb

    class BoundedModule(torch.nn.Module):
        def __init__(self, model, x, device="cpu"):
            super().__init__()
            self.bm = bg.BoundedModule(model, x)

        def compute_bounds(self, x=None, C=None, method="backward"):
            (bx,) = x
            m = {"IBP": "ibp", "CROWN-IBP": "crown-ibp", "backward": "crown"}[method]
            return self.bm.compute_bounds(bx.x, bg.Box(bx.ptb.lo, bx.ptb.hi), method=m, C=C)

    mod.PerturbationLpNorm, mod.BoundedTensor, mod.BoundedModule = \
        PerturbationLpNorm, BoundedTensor, BoundedModule
    return mod


def test_peers_run_one_with_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "auto_LiRPA", _fake_auto_lirpa())
    r = peers.run_one("mlp", batch=2, methods=list(METHODS), eps=0.01, in_size=6, repeats=1)
    for m in METHODS:
        assert {"boundgraph", "peer", "speedup", "max_abs_diff", "max_rel_diff",
                "boundgraph_tighter_or_equal"} <= set(r[m])
        assert r[m]["max_abs_diff"] < 1e-4 and r[m]["boundgraph_tighter_or_equal"]
    table = peers.make_table({"quick": True, "available": True, "peer_version": "fake",
                              "machine": common.machine_stamp(), "command": "t", "eps": 0.01,
                              "results": [r]})
    assert "boundgraph tighter or equal" in table


def test_peers_without_peer_writes_a_note(_results_in_tmp, monkeypatch):
    monkeypatch.setattr(peers, "peer_status", lambda: (False, "ModuleNotFoundError: nope"))
    assert peers.main(["--quick"]) == 0
    data = json.loads((_results_in_tmp / "peers_quick.json").read_text())
    assert data["available"] is False and data["results"] == []
    assert "not importable" in (_results_in_tmp / "peers_quick.md").read_text()


def test_peers_compare_detects_looser_bounds():
    lb, ub = torch.zeros(2, 3), torch.ones(2, 3)
    c = peers.compare((lb, ub), (lb - 0.5, ub))
    assert c["boundgraph_tighter_or_equal"] and c["max_abs_diff"] == pytest.approx(0.5)
    assert not peers.compare((lb - 0.5, ub), (lb, ub))["boundgraph_tighter_or_equal"]


# ------------------------------------------------------------------------------- certified
def _training_json(tmp_path, payload):
    p = tmp_path / "training.json"
    p.write_text(json.dumps(payload))
    return p


def test_certified_reads_collected_runs(tmp_path):
    run = {"method": "ibp", "model": "cnn_4layer", "dataset": "mnist", "eps": 0.1, "epochs": 5,
           "train_time_s": 300.0, "best_val": {"val_clean_error": 0.5},
           "test": {"eps": 0.1, "num_examples": 1000, "clean_error": 0.02, "pgd_error": 0.05,
                    "certified_error_ibp": 0.12, "certified_error_crown_ibp": 0.11,
                    "certified_error_crown": 0.1, "num_examples_crown": 50, "time_s": 9.0},
           "history": [{"epoch": 1}]}
    rows, note = certified.collect(_training_json(tmp_path, {"runs": [run]}))
    assert len(rows) == 1 and "1 row" in note
    r = rows[0]
    assert (r["dataset"], r["model"], r["method"], r["eps"], r["epochs"]) == \
        ("mnist", "cnn_4layer", "ibp", 0.1, 5)
    assert r["wall_time_s"] == 300.0
    assert r["clean_error_pct"] == pytest.approx(2.0)
    assert r["pgd_error_pct"] == pytest.approx(5.0)
    assert r["certified_error_ibp_pct"] == pytest.approx(12.0)
    assert r["certified_error_crown_pct"] == pytest.approx(10.0)
    assert certified._crown(r) == "10.00 (n=50)"


def test_certified_rejects_other_layouts(tmp_path, capsys):
    """Only what ``benchmarks.training --collect`` writes is read; anything else is an error
    naming the file, and a missing file only leaves the measured rows out."""
    rows, note = certified.collect(tmp_path / "missing.json")
    assert rows == [] and "not found" in note
    run = {"method": "ibp", "model": "m", "dataset": "mnist", "eps": 0.1, "epochs": 1,
           "train_time_s": 1.0, "test": {"eps": 0.1, "num_examples": 10, "clean_error": 0.1}}
    for payload, what in [({"results": [run]}, '"runs"'), ([run], '"runs"'),
                          ({"runs": [run]}, "missing test.num_examples_crown"),
                          ({"runs": [{"method": "ibp"}]}, '"test"')]:
        path = _training_json(tmp_path, payload)
        with pytest.raises(certified.LayoutError, match=what) as e:
            certified.collect(path)
        assert str(path) in str(e.value)
    path.write_text("not json")
    assert certified.main(["--training", str(path)]) == 1
    assert str(path) in capsys.readouterr().err


def test_certified_main_has_published_rows(_results_in_tmp, tmp_path):
    assert certified.main(["--training", str(tmp_path / "absent.json")]) == 0
    md = (_results_in_tmp / "certified.md").read_text()
    assert md.count("published, not measured here") == 2
    assert "10.82-10.98" in md and "65.03-65.05" in md and "8/255" in md
    data = json.loads((_results_in_tmp / "certified.json").read_text())
    assert "machine" in data and len(data["rows"]) == 2


# ----------------------------------------------------------------------------------- guard
def test_guard_flags_only_ratios_past_the_factor():
    from benchmarks import guard

    measured = [{"config": "m", "ratios": {"ibp / forward": 2.0, "crown / ibp": 50.0,
                                           "new / forward": 9.0}}]
    reference = {"m": {"ibp / forward": 1.5, "crown / ibp": 20.0}}
    rows = {r["ratio"]: r for r in guard.compare(measured, reference, 2.0)}
    assert rows["ibp / forward"]["ok"] and rows["new / forward"]["ok"]
    assert not rows["crown / ibp"]["ok"] and rows["crown / ibp"]["change"] == 2.5


def test_guard_run_one_measures_every_ratio():
    from benchmarks import guard

    r = guard.run_one("mlp", batch=2, in_size=6, methods=["ibp", "crown"], repeats=1)
    assert set(r["ratios"]) == {"ibp / forward", "crown / forward", "crown / ibp"}
    assert all(v > 0 and math.isfinite(v) for v in r["ratios"].values())


def test_guard_reference_covers_every_configuration():
    from benchmarks import guard

    ref = json.loads(guard.REFERENCE.read_text())
    for model, batch, size, methods in guard.CONFIGS:
        ratios = ref[guard._key(model, batch, size)]
        assert {f"{m} / forward" for m in methods} <= set(ratios)


def test_guard_fails_the_run_on_a_regression(tmp_path, monkeypatch):
    """A reference with impossibly small ratios makes the guard exit 1 (CI goes red)."""
    from benchmarks import guard

    monkeypatch.setattr(guard, "CONFIGS", [("mlp", 2, 6, ("ibp",))])
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"mlp b2 6x6": {"ibp / forward": 1e-6}}))
    assert guard.main(["--reference", str(ref)]) == 1
    ref.write_text(json.dumps({"mlp b2 6x6": {"ibp / forward": 1e6}}))
    assert guard.main(["--reference", str(ref)]) == 0


def test_readme_figures_are_generated_from_the_committed_results():
    """The README's benchmark paragraph is exactly what benchmarks.readme writes from the
    committed bounds.json and suite.json (no figure typed by hand, none left stale)."""
    from benchmarks import readme

    assert readme.readme_block(readme.README.read_text()) == readme.figures()
