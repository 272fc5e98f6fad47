"""Which device and which rank this process is: one resolver for every command."""
from __future__ import annotations

import os
import resource

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """(rank, world size) under torchrun / SLURM-style env vars; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resolve_device(device: str | torch.device | None = "auto", *, mps: bool = False) -> torch.device:
    """'auto' or None: this process's GPU (LOCAL_RANK under torchrun), Apple's MPS when `mps` allows it, else
    the CPU; anything else is passed to torch.device as it is."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's environment, joining its process group (NCCL on GPUs,
    gloo on CPUs); a plain `python` run is rank 0 of 1."""
    rank, world_size = distributed_world()
    device = resolve_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA max allocated, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
