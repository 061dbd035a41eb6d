"""Data-parallel training under ``torchrun``: process group, sharding, metric reduction.

``torchrun --nproc_per_node N -m cnnlab train …`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``;
:func:`init_distributed` then joins the group (gloo on CPU, nccl on CUDA). ``batch_size`` stays the
*global* batch: each of the N processes takes ``batch_size / N`` images per step, so a recipe gives
the same schedule, LR and number of steps whatever N is. Each epoch's shard is the
DistributedSampler one: a global permutation (a pure function of seed and epoch) split by stride,
cut to equal length so every rank runs the same number of steps. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank and world size from the ``torchrun`` environment variables."""
    try:
        return DistInfo(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (no-op for a single process)."""
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return info


def cleanup_distributed() -> None:
    """Destroy the process group if one was initialised (safe to call in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(n: int, rank: int, world_size: int, seed: int, epoch: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``n`` items for ``epoch`` (a DistributedSampler-style shard)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g)
    per_rank = n // world_size
    return order[: per_rank * world_size][rank::world_size]


def eval_shard(n: int, rank: int, world_size: int) -> torch.Tensor:
    """A fixed, complete, disjoint split of ``n`` test items (no padding, so nothing counts twice)."""
    return torch.arange(rank, n, world_size)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a one-element list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
