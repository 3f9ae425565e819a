"""SLURM resources of a matrix's jobs, as written in its ``slurm:`` section, and their submitit parameters.

One task per GPU (submitit's distributed environment then gives each task its rank); a CPU-only job is one task.
``time`` is minutes or ``[D-]HH:MM:SS``; ``mem`` is GB or a string with a unit (``32G``, ``500M``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from patchbench.methods.typecheck import ranged

from .cluster import load_cluster_config
from .config import ConfigError, _strict

SLURM_KEYS = ("partition", "gpus_per_node", "nodes", "cpus_per_task", "mem", "time", "account", "qos", "constraint")


@dataclass(frozen=True)
class SlurmResources:
    partition: str | None = None
    gpus_per_node: int = ranged(0, min=0)
    nodes: int = ranged(1, min=1)
    cpus_per_task: int = ranged(2, min=1)
    mem: str | int | float = "8G"
    time: str | int = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    @property
    def tasks_per_node(self) -> int:
        return max(self.gpus_per_node, 1)

    def timeout_min(self) -> int:
        return parse_time_min(self.time)

    def mem_gb(self) -> float:
        return parse_mem_gb(self.mem)

    def executor_parameters(self) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` keywords, with the cluster file's prologue lines and srun arguments
        (``cluster.py``)."""
        params: dict[str, Any] = dict(timeout_min=self.timeout_min(), nodes=self.nodes, mem_gb=self.mem_gb(),
                                      tasks_per_node=self.tasks_per_node, cpus_per_task=self.cpus_per_task)
        cluster = load_cluster_config()
        if cluster.setup:
            params["slurm_setup"] = list(cluster.setup)
        if cluster.srun_args:
            params["slurm_srun_args"] = list(cluster.srun_args)
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key) is not None:
                params[f"slurm_{key}"] = getattr(self, key)
        return params


def parse_time_min(value: str | int) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", str(value).strip())
    if not match:
        raise ConfigError(f"slurm.time '{value}': give minutes (e.g. 120) or [D-]HH:MM:SS (e.g. 2:00:00)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return max(1, days * 1440 + hours * 60 + minutes + (seconds + 59) // 60)


def parse_mem_gb(value: str | int | float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([MGT])B?", str(value).strip(), flags=re.IGNORECASE)
    if not match:
        raise ConfigError(f"slurm.mem '{value}': give GB (e.g. 32) or a size with a unit (e.g. 32G, 500M)")
    return float(match.group(1)) * {"M": 1 / 1024, "G": 1.0, "T": 1024.0}[match.group(2).upper()]


def resources(base: dict[str, Any] | None, override: dict[str, Any] | None, where: str) -> SlurmResources:
    """Resolved resources: ``override`` on top of ``base``, every key checked, sizes parsed once to fail early."""
    merged = _strict(SlurmResources, {**(base or {}), **(override or {})}, where)
    merged.timeout_min(), merged.mem_gb()
    return merged


def eval_resources(pretrain: SlurmResources, override: dict[str, Any] | None, where: str) -> SlurmResources:
    """Evaluation jobs: one node, at most one GPU, unless ``slurm.eval`` says otherwise."""
    base = replace(pretrain, nodes=1, gpus_per_node=min(pretrain.gpus_per_node, 1))
    return resources(_fields(base), override, where)


def _fields(r: SlurmResources) -> dict[str, Any]:
    return {k: getattr(r, k) for k in SLURM_KEYS}
