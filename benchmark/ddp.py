"""Data-parallel pretraining: one process per GPU, started by submitit (one SLURM task per GPU).

Design (exact by construction, so a run's result does not depend on how many GPUs it ran on): every rank loads the
same global batch and draws the same views from the same (seed, batch) generator, then keeps its own contiguous
shard of the samples (:func:`shard_views`). Gradients are averaged by ``DistributedDataParallel`` and running
statistics (DINO's centre) by :func:`patchbench.methods.distributed.all_reduce_mean`, so with losses that are
means over samples a step on W ranks equals a step on one process with the same global batch, up to floating
point summation order. The price is that each rank draws the views of the whole batch (the cheap, batched part
of a step). Per-sample randomness inside the model (stochastic depth) is drawn per rank and is the one thing that
differs from a single-process run. The data order and views stay pure functions of (seed, epoch, batch), so the
exact-resume property of ``train.py`` holds for any world size.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from patchbench.methods import Progress, SSLMethod, Views
from patchbench.methods.distributed import is_distributed, rank, world_size


class TrainingStep(nn.Module):
    """``method.training_step`` as a module, so DDP sees one forward per backward however many times the
    objective calls the backbone."""

    def __init__(self, method: SSLMethod):
        super().__init__()
        self.method = method

    def forward(self, views: Views, progress: Progress, substep: int) -> dict[str, Tensor]:
        return self.method.training_step(views, progress, substep)


def wrap(method: SSLMethod, device: torch.device) -> nn.Module:
    """The module the trainer calls: DDP over the training step when distributed, else the plain step.

    ``find_unused_parameters``: objectives may leave heads out of some steps (e.g. alternating substeps).
    ``broadcast_buffers=False``: buffers such as the DINO centre are kept equal by all-reducing their updates.
    """
    step = TrainingStep(method)
    if not is_distributed():
        return step
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True,
                                               broadcast_buffers=False)


def shard_views(views: Views, shard: int, shards: int) -> Views:
    """The ``shard``-th contiguous slice of the samples of ``views``: every crop and every per-sample metadata
    tensor (batch first, the ``Views`` contract) is cut along its first dimension."""
    if shards == 1:
        return views
    batch = views.batch_size
    if batch % shards:
        raise ValueError(f"a batch of {batch} cannot be split evenly over {shards} ranks")
    size = batch // shards
    cut = slice(shard * size, (shard + 1) * size)

    def take(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
            return value[cut]
        if isinstance(value, dict):
            return {k: take(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(take(v) for v in value)
        return value

    return replace(views, crops=[c[cut] for c in views.crops], meta=take(views.meta))  # other fields carry over


def any_rank(*flags: bool) -> list[bool]:
    """Each flag OR-ed over all ranks (one small all-reduce), so every rank takes the same branch."""
    if not is_distributed():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a one-element list in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def training_device(name: str) -> torch.device:
    """``auto`` → this rank's GPU (``LOCAL_RANK``) or the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init_from_submitit() -> bool:
    """Join the process group of a multi-task submitit job (``TorchDistributedEnvironment``); False when the job
    has one task or this is not a submitit job."""
    import submitit

    if is_distributed():
        return True
    try:
        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except RuntimeError:
        return False
    if tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


__all__ = ["TrainingStep", "wrap", "shard_views", "any_rank", "gather_objects", "training_device",
           "init_from_submitit", "rank", "world_size"]
