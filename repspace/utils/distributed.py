"""Several processes (``torchrun --nproc_per_node N``): rank, world size and process group.

NCCL on GPUs, gloo on the CPU. Only rank 0 writes files and prints results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """This process's place in a launch: ``rank`` of ``size`` processes, ``local_rank`` on its
    machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world as ``torchrun`` describes it in the environment (``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``), without starting a process group."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def init_world(device_type: str) -> World:
    """The process group of a ``torchrun`` launch (initialised once), or a single process."""
    env = World.from_env()
    if not env.distributed:
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), env.local_rank)
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    return world
