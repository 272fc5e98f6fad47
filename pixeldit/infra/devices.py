"""Which device and which rank this process is: one resolver for every command."""
from __future__ import annotations

import os
import resource

import numpy as np
import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """(rank, world size) under torchrun / SLURM-style env vars; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """This process's index on its machine under torchrun (LOCAL_RANK); 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", 0))


class DeviceError(ValueError):
    """A device was asked for that this machine or this torch build does not have."""


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


DEVICE_HINT = "use --device auto (the GPU when there is one, else the CPU) or --device cpu"


def resolve_device(device: str | torch.device | None = "auto", *, mps: bool = False) -> torch.device:
    """'auto' or None: this process's GPU (LOCAL_RANK under torchrun), Apple's MPS when `mps` allows it, else
    the CPU; anything else must name a device this machine has ('cuda' alone means this process's GPU)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank())
        if mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {str(device)!r}; {DEVICE_HINT}, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceError(f"--device {device}: no CUDA device is usable here (torch {torch.__version__} is "
                              f"{build}); {DEVICE_HINT}")
        index = local_rank() if chosen.index is None else chosen.index
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0; {DEVICE_HINT}")
        return torch.device("cuda", index)
    if chosen.type == "mps" and not _mps_available():
        raise DeviceError(f"--device {device}: Apple's MPS is not available on this machine; {DEVICE_HINT}")
    return chosen


def setup_distributed(device: str | torch.device | None = "auto") -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's environment, joining its process group (NCCL on GPUs,
    gloo on CPUs); a plain `python` run is rank 0 of 1."""
    rank, world_size = distributed_world()
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) when none is joined."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def batch_aligned_share(count: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of `count` items for `rank`: a contiguous run of whole batches, so every rank sees the
    batches one process would (same boundaries, same results)."""
    batches = -(-count // batch_size)
    first, last = batches * rank // world_size, batches * (rank + 1) // world_size
    return min(first * batch_size, count), min(last * batch_size, count)


def gather_rows(rows: np.ndarray, shares: list[tuple[int, int]]) -> np.ndarray:
    """Every rank's `rows` (its share [start, stop) of one array, in rank order) concatenated, on every rank.
    Gloo and NCCL gather equal sizes only, so each share travels padded to the largest."""
    longest = max(stop - start for start, stop in shares)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=torch.from_numpy(rows[:0]).dtype, device=device)
    padded[:len(rows)] = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
    parts = [torch.empty_like(padded) for _ in shares]
    dist.all_gather(parts, padded)
    return np.concatenate([part[:stop - start].cpu().numpy() for part, (start, stop) in zip(parts, shares)])


def all_ranks_agree(flag: bool) -> bool:
    """True only when `flag` is true on every rank (so all take the same branch of a collective)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA max allocated, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
