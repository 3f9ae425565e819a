"""A run killed mid-epoch (SIGKILL, not a flag) resumes and continues exactly as an uninterrupted run: DINO, and
Patch-Wise, whose per-position centre and per-sample view geometry must come back exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.store import RunDir


def losses(run: RunDir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, run.train_log.read_text().splitlines())]


def spec(tmp: Path, method: str):
    return make_spec(
        matrix="resume", method=method, dataset="digits", seed=5, image_size=32,
        backbone={"size": "pico"}, budget={"epochs": 2, "batch_size": 64},
        optim={"warmup_epochs": 1}, view_kwargs={"n_local": 2},
        objective_kwargs={"out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32},
        runtime={"checkpoint_interval_min": 0, "log_every": 1, "device": "cpu"})


def train(run: RunDir) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "patchbench.benchmark.train", str(run.path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dino", "patchwise"])
def test_killed_run_resumes_with_identical_losses(tmp_path, method):
    s = spec(tmp_path, method)
    steps_per_epoch = 1347 // 64  # digits train split (1347 images), drop_last
    reference, killed = RunDir(tmp_path / "reference"), RunDir(tmp_path / "killed")
    for run in (reference, killed):
        run.write_spec(s)

    assert train(reference).wait(timeout=600) == 0

    proc = train(killed)
    deadline = time.time() + 300
    # kill mid-epoch 0, once a few steps are logged and checkpointed
    while time.time() < deadline:
        if killed.train_log.exists() and len(killed.train_log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = len(killed.train_log.read_text().splitlines())
    assert 5 <= logged < steps_per_epoch, "the kill must land mid-epoch"

    resumed = train(killed)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resumed from checkpoint at epoch 0" in out

    assert losses(killed) == losses(reference)
    assert len(losses(reference)) == 2 * steps_per_epoch
    final = [torch.load(run.checkpoint, weights_only=False)["method"] for run in (reference, killed)]
    assert final[0].keys() == final[1].keys()
    for key, value in final[0].items():  # the centres and every weight, bit for bit
        assert torch.equal(final[1][key], value), key
    centre = "objective.criterion.center" if method == "dino" else "objective.center"
    assert final[0][centre].abs().sum() > 0
