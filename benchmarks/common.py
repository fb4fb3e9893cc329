"""Shared helpers for benchmarks: machine stamp, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_ENV = "BOUNDGRAPH_RESULTS_DIR"  # overrides RESULTS (tests, scratch runs)


def results_dir() -> Path:
    """Where result files go: ``$BOUNDGRAPH_RESULTS_DIR`` if set, else ``benchmarks/results``."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


def machine_stamp() -> dict:
    """CPU model, threads, torch version and git commit, recorded with every result."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit or "unknown", "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def median_time(fn, repeats=5, warmup=1, min_time=0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_now_mb() -> float:
    """Current resident set size (MB); the peak so far where /proc is not available."""
    v = _proc_status_mb("VmRSS")
    return v if v is not None else peak_rss_mb()


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``/proc/self/clear_refs``), so that
    :func:`window_peak_rss_mb` measures the peak of what runs next. False if not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def window_peak_rss_mb() -> float:
    """Peak RSS (MB) since the last :func:`reset_peak_rss` (``VmHWM``), else since start."""
    v = _proc_status_mb("VmHWM")
    return v if v is not None else peak_rss_mb()


def mem_total_mb() -> float | None:
    """Physical memory of the machine (MB), from /proc/meminfo; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def zoo_model(name: str, in_size: int, seed: int = 0):
    """A zoo model for MNIST-size input in eval mode; BatchNorm layers get random running
    statistics, as after training (the bounds and peers benchmarks use the same models)."""
    import torch

    import models

    torch.manual_seed(seed)
    model = models.get_model(name, in_size=in_size).eval()
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _general_models():
    """Models beyond the zoo that the peer library also bounds (issue #12's table), all on
    MNIST-shaped input ``(B, 1, S, S)``: hand-written self-attention over the image rows with a
    LayerNorm, an MLP with a LayerNorm, an MLP through exp and log, and an MLP with a softmax
    head."""
    import math

    import torch
    import torch.nn as nn

    class RowAttention(nn.Module):
        def __init__(self, size, d=32, classes=10):
            super().__init__()
            self.embed = nn.Linear(size, d)
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.norm, self.head, self.d = nn.LayerNorm(d), nn.Linear(d, classes), d

        def forward(self, x):
            h = self.embed(x.flatten(1, 2))  # one token per image row
            att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(self.d), -1)
            return self.head(self.norm(att @ self.v(h)).mean(1))

    class ExpLog(nn.Module):
        def __init__(self, size, classes=10):
            super().__init__()
            self.a, self.b = nn.Linear(size * size, 100), nn.Linear(100, classes)

        def forward(self, x):
            return self.b(torch.log(torch.exp(self.a(x.flatten(1))) + 1))

    def mlp_with(size, *middle):
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 100), *middle)

    return {
        "attention": RowAttention,
        "layernorm_mlp": lambda s: mlp_with(s, nn.LayerNorm(100), nn.ReLU(), nn.Linear(100, 10)),
        "exp_log": ExpLog,
        "softmax_head": lambda s: mlp_with(s, nn.ReLU(), nn.Linear(100, 10), nn.Softmax(-1)),
    }


GENERAL_MODELS = ("attention", "layernorm_mlp", "exp_log", "softmax_head")


def bench_model(name: str, in_size: int, seed: int = 0):
    """A zoo model (:func:`zoo_model`) or one of :data:`GENERAL_MODELS`, in eval mode."""
    if name not in GENERAL_MODELS:
        return zoo_model(name, in_size, seed)
    import torch

    torch.manual_seed(seed)
    return _general_models()[name](in_size).eval()


def run_isolated(module: str, cfg: dict, timeout: float | None = None) -> tuple[list[dict], str]:
    """Run ``python -m <module> --one <cfg as JSON>`` in a fresh process (so its peak RSS is
    its own). The child prints one JSON object per line as it goes; returns the parsed
    objects and an error message ('' on success, 'timeout after N s' or the last stderr
    line). Objects printed before a timeout or crash are kept."""
    import sys

    proc = subprocess.Popen([sys.executable, "-m", module, "--one", json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    error = ""
    try:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            error = lines[-1] if lines else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        error = f"timeout after {timeout:g} s"
    objs = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return objs, error


def write_results(name: str, payload: dict, table: str) -> tuple[Path, Path]:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / f"{name}.json", out / f"{name}.md"
    tmp = jp.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, jp)
    mp.write_text(table)
    return jp, mp


def method_label(run: dict) -> str:
    """A collected training run's method as tables show it (loss fusion named)."""
    return run["method"] + (" + loss fusion" if run.get("loss_fusion") else "")


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"
