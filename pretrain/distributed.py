"""Process groups and devices: one process without any group, or torchrun's ranks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dinoeval.checks import check_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, local rank (0/1/0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistEnv:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (``nccl`` on CUDA, else
    ``gloo``); otherwise no process group is created at all."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(spec: str, env: DistEnv) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{env.local_rank}"
    device = torch.device(check_device(spec))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def distributed_cleanup() -> Iterator[None]:
    """Destroy the process group on exit (for ``python -m dinoeval pretrain`` under torchrun)."""
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
