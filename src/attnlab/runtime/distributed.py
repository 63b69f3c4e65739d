"""Data-parallel training with PyTorch DDP under `torchrun` (nccl on GPUs, gloo on CPU).

Every process draws the same global batch from the same seeded sampler and trains on its own
slice of it, and DDP averages the gradients, so a step's update and logged loss do not depend on
how many processes computed them. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: str = "auto") -> str | None:
    """Join the process group `torchrun` describes in the environment; returns this rank's device.

    Each rank takes the GPU of its local rank (nccl) unless `device` asks for the CPU (gloo).
    """
    if not launched():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def launched() -> bool:
    """Started by `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    """This process's rank: from the process group, or from torchrun's environment outside it."""
    return dist.get_rank() if initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def mean_across(value: float, device: str) -> float:
    """The mean of a number over all processes (the identity in a single process)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / world_size()


def all_agree(flag: bool, device: str) -> bool:
    """True only if every process says True (so all stop at the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
