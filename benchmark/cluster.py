"""Per-cluster settings in one small YAML file: where the data lives, the job prologue, the GPU model.

The file is ``$PATCHBENCH_CLUSTER`` if set, else ``~/.config/patchbench/cluster.yaml``; without one, every key
keeps its default. Example (README, "Running on a cluster")::

    data_root: /datasets            # the data root when neither --data-root, runtime.data_root nor $PATCHBENCH_DATA
    setup:                          # lines run in each SLURM job script before srun (submitit's slurm_setup)
      - module load cuda/12.4
      - source /home/me/patchbench/.venv/bin/activate
    srun_args: [--cpu-bind=none]    # extra srun arguments (submitit's slurm_srun_args)
    gpu: a100                       # the GPU model of the cost estimate (GPU_TFLOPS)
    max_gpu_hours: 500              # run refuses a matrix estimated above this without --yes
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from patchbench.methods.typecheck import ranged

from .config import ConfigError, _strict

CLUSTER_ENV = "PATCHBENCH_CLUSTER"
GPU_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "l40s": 362.0}  # dense bf16 peak, vendor data sheets


@dataclass(frozen=True)
class ClusterConfig:
    data_root: str | None = None
    setup: tuple[str, ...] = ()
    srun_args: tuple[str, ...] = ()
    gpu: str = ranged("a100", choices=tuple(GPU_TFLOPS))
    max_gpu_hours: float | None = ranged(None, above=0)


def cluster_file() -> Path:
    return Path(os.environ[CLUSTER_ENV]) if os.environ.get(CLUSTER_ENV) else (
        Path.home() / ".config" / "patchbench" / "cluster.yaml")


def load_cluster_config() -> ClusterConfig:
    """The cluster file's settings (module docstring); a missing ``$PATCHBENCH_CLUSTER`` file or a malformed file
    is a :class:`ConfigError` naming it."""
    path = cluster_file()
    if not path.exists():
        if os.environ.get(CLUSTER_ENV):
            raise ConfigError(f"cluster file not found: {path} (${CLUSTER_ENV}); create it or unset the variable")
        return ClusterConfig()
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable YAML file: {' '.join(str(err).split())}") from None
    return _strict(ClusterConfig, values, str(path))
