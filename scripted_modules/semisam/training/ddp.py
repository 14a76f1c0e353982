"""Data-parallel training under ``torchrun``: process group, gradient averaging, agreement on flags.

``torchrun --nproc_per_node=N -m semisam train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; we
then join a process group (gloo on CPU, nccl on CUDA, one GPU per local rank). The student is wrapped
in ``DistributedDataParallel`` (gradients averaged during backward, BatchNorm buffers broadcast from
rank 0); a part's own trainable parameters are averaged with :func:`average_gradients`. Only rank 0
writes events, checkpoints and the registry; every rank draws its own batches (generators seeded with
the rank) and, when there are at least as many training cases as ranks, from its own shard of cases.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """``rank``, ``world_size``, ``local_rank`` and ``backend`` (``None``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """What ``torchrun`` put in the environment (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> DistInfo:
    """Join the process group (gloo on CPU, nccl on CUDA) when ``info`` is distributed."""
    if not info.active:
        return info
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=30))
    log.info("DDP rank %d/%d on %s (%s)", info.rank, info.world_size, device, backend)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def shutdown(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (all ranks must stop at the same iteration)."""
    if not info.active:
        return bool(flag)
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` of ``params`` over ranks (parameters outside the DDP-wrapped student)."""
    if not info.active or not params:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(info.world_size)


def barrier(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """``obj`` of rank 0 on every rank."""
    if not info.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
