"""Running across processes with ``torchrun``: the process group, threads per process, and the
few collective steps that training, evaluation and verification share.

Launch any of them as ``torchrun --nproc_per_node N [--nnodes M ...] -m boundgraph <command>``:
:func:`init_distributed` joins the group torchrun describes in the environment (gloo on CPU,
nccl on CUDA), and without torchrun every helper here acts as the single process it then is.
Work is split deterministically (:func:`strided`, :func:`balanced`), so every process knows
which items each one holds; results come back together with :func:`all_sum` (counts) or
:func:`gather` (Python objects).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "rank_world", "default_threads", "strided", "balanced",
           "all_sum", "gather", "barrier", "is_main"]


def init_distributed(device: torch.device | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses nccl for CUDA devices and gloo otherwise. Returns ``(rank, world_size)``;
    ``(0, 1)`` when not launched by torchrun.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def default_threads() -> int:
    """Torch threads for this process: the machine's cores shared by the processes torchrun
    started on it (``LOCAL_WORLD_SIZE``), at least one, so that N processes on one machine do
    not oversubscribe it."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return max(1, cores // local)


def strided(n: int, rank: int | None = None, world: int | None = None) -> range:
    """The items ``rank, rank + world, ...`` of ``range(n)``: this process's share."""
    if rank is None or world is None:
        rank, world = rank_world()
    return range(rank, n, world)


def balanced(weights, world: int) -> list[int]:
    """An owner rank for each item, balancing the summed ``weights`` (e.g. time budgets):
    heaviest first to the least loaded rank (ties to the lower rank, so every process computes
    the same assignment)."""
    load = [0.0] * world
    owner = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: (-float(weights[i]), i)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[i] = r
        load[r] += float(weights[i])
    return owner


def all_sum(counts: dict[str, float]) -> dict[str, float]:
    """``counts`` summed over the processes (same keys everywhere; integers stay integers)."""
    _, world = rank_world()
    if world == 1 or not counts:
        return dict(counts)
    keys = sorted(counts)
    t = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: (int(round(v)) if isinstance(counts[k], int) else v)
            for k, v in zip(keys, t.tolist())}


def gather(obj) -> list:
    """Every process's ``obj``, in rank order (a list of one without a process group)."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()
