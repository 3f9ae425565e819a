"""Collectives an objective may need under data-parallel training; no-ops in a single process.

A centre or any other running statistic of a batch must be averaged over every rank's shard so that all ranks
keep the same state and a run on W processes matches a run on one (DINO ``main_dino.py::update_center``
all-reduces the batch centre; lightly's ``DINOLoss`` and ``center_mean`` do the same).
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

    For values that are already per-shard means of equal-size shards, e.g. the trainer's logged losses. A batch
    statistic of an objective (a centre) goes through lightly's ``center_mean``, which takes the batch mean and
    all-reduces it in one call.
    """
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
