"""Collectives an objective may need under data-parallel training; no-ops in a single process.

A centre or any other running statistic of a batch must be averaged over every rank's shard so that all ranks
keep the same state and a run on W processes matches a run on one (DINO ``main_dino.py::update_center``
all-reduces the batch centre; lightly's ``DINOLoss`` does the same through ``center_mean``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over all ranks (a new tensor; the input is left alone). Identity in one process.

    Use it for statistics of the local shard whose global value is the mean over shards of equal size, e.g. a
    centre update ``center = m * center + (1 - m) * all_reduce_mean(teacher_out.mean(0))``.
    """
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
