"""A SLURM job runs torch on the CPUs it was allocated, not on every CPU of the node."""

from __future__ import annotations

import torch

from patchbench.benchmark.jobs import threads_from_allocation


def test_threads_follow_cpus_per_task(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        threads_from_allocation()
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        torch.set_num_threads(2)
        threads_from_allocation()
        assert torch.get_num_threads() == 2  # off SLURM, nothing changes
    finally:
        torch.set_num_threads(before)
