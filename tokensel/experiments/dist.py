"""Data-parallel evaluation under ``torchrun``: shard samples, gather records on every rank.

Launched with ``torchrun --nproc_per_node=N``, each process evaluates samples ``rank::N``;
records are gathered with ``all_gather_object`` (gloo on CPU, NCCL on GPUs) and re-ordered by
sample position, so metrics computed from them equal a single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["DistContext", "init_distributed"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[Any]) -> list[tuple[int, Any]]:
        """``(global position, item)`` pairs this rank evaluates."""
        return [(i, x) for i, x in enumerate(items) if i % self.world_size == self.rank]

    def gather(self, records: list[dict]) -> list[dict]:
        """Every rank's records, ordered by their ``_pos`` field."""
        if not self.enabled:
            return sorted(records, key=lambda r: r["_pos"])
        import torch.distributed as dist

        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, records)
        return sorted((r for part in parts for r in part), key=lambda r: r["_pos"])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized_here = False


def init_distributed(backend: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment (no-op when WORLD_SIZE <= 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dist.is_initialized():
        return DistContext(rank=rank, world_size=world, local_rank=local_rank)
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, initialized_here=True)
