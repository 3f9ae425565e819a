"""Shared fixtures. `dataset_cache`: a dataset cache folder per session. `slurm_cluster`: the local Slurm cluster of
benchmark/slurm/local-cluster.sh, for `slurm` tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "benchmark" / "slurm" / "local-cluster.sh"


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated datasets (``datasets/cache.py``) go to a folder of this session, not the user's cache; the
    processes the tests start inherit it."""
    from patchbench.datasets.cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("dataset-cache")
    os.environ[CACHE_ENV] = str(folder)
    return folder


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The running local cluster's slurm.conf; SLURM_CONF is set so sbatch/sacct (and submitit) reach it.

    A job submitted without ``--output`` (sbatch's default is slurm-%j.out in the submitting directory) writes to a
    temporary folder, never into the work tree: SBATCH_OUTPUT/SBATCH_ERROR point there (submitit always passes
    ``--output``/``--error`` under its own folder, which the tests keep in tmp_path). Skips when the cluster is not
    up; `.ci/run` always starts it, so in CI these tests run.
    """
    status = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip(f"the local Slurm cluster is not running (start it as root: {CLUSTER_SCRIPT} start)")
    env_line = subprocess.run([str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    slurm_conf = env_line.strip().removeprefix("export SLURM_CONF=")
    os.environ["SLURM_CONF"] = slurm_conf
    job_output = tmp_path_factory.mktemp("slurm-output")
    os.environ["SBATCH_OUTPUT"] = str(job_output / "slurm-%j.out")
    os.environ["SBATCH_ERROR"] = str(job_output / "slurm-%j.err")
    return Path(slurm_conf)
