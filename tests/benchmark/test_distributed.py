"""Data-parallel pretraining on CPU (gloo, two processes): the same run as one process with the same global batch.

The design (benchmark/ddp.py) makes this exact up to floating-point summation order: both ranks draw the views of
the whole batch and keep half of the samples each, DDP averages the gradients and the centre updates (DINO's, and
Patch-Wise's per-position centre) are all-reduced. Without either, rank 0 would train on half of each batch and its
weights would differ at the 1e-2 level.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.ddp import shard_views
from patchbench.benchmark.store import RunDir
from patchbench.methods import Views
from patchbench.methods.distributed import all_reduce_mean


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(run: RunDir, rank: int = 0, world: int = 1, port: int = 0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if world > 1:
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, "-m", "patchbench.benchmark.train", str(run.path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_shard_views_cuts_crops_and_per_sample_meta():
    crops = [torch.arange(8.).view(8, 1, 1, 1).expand(8, 3, 4, 4), torch.arange(8.).view(8, 1, 1, 1).expand(8, 3, 2, 2)]
    views = Views(crops=crops, n_global=1,
                  meta={"boxes": torch.arange(8 * 2 * 4).view(8, 2, 4), "shared": torch.ones(3)},
                  shared_geometry=True)
    halves = [shard_views(views, r, 2) for r in range(2)]
    assert [h.crops[1][:, 0, 0, 0].tolist() for h in halves] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(torch.cat([h.meta["boxes"] for h in halves]), views.meta["boxes"])
    assert halves[1].meta["shared"].shape == (3,) and halves[1].shared_geometry and halves[1].n_global == 1
    with pytest.raises(ValueError, match="cannot be split evenly"):
        shard_views(views, 0, 3)


def test_all_reduce_mean_is_identity_in_one_process():
    x = torch.randn(4)
    assert all_reduce_mean(x) is x


@pytest.mark.slow
@pytest.mark.parametrize("method, centre", [("dino", "objective.criterion.center"), ("patchwise", "objective.center")])
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path, method, centre):
    spec = make_spec(
        matrix="ddp", method=method, dataset="digits", seed=3, image_size=32,
        backbone={"size": "pico", "drop_path_rate": 0.0},  # stochastic depth is drawn per rank: off for exactness
        budget={"epochs": 1, "batch_size": 64}, optim={"warmup_epochs": 0}, view_kwargs={"n_local": 2},
        objective_kwargs={"out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32},
        runtime={"log_every": 1, "device": "cpu"})
    single, parallel = RunDir(tmp_path / "single"), RunDir(tmp_path / "parallel")
    for run in (single, parallel):
        run.write_spec(spec)
    port = free_port()
    procs = [train(single), *(train(parallel, rank, 2, port) for rank in range(2))]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)

    rows = {name: [json.loads(line) for line in run.train_log.read_text().splitlines()]
            for name, run in (("single", single), ("parallel", parallel))}
    assert [r["step"] for r in rows["parallel"]] == [r["step"] for r in rows["single"]] == list(range(1347 // 64))
    for a, b in zip(rows["single"], rows["parallel"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)

    one = torch.load(single.checkpoint, weights_only=False)
    two = torch.load(parallel.checkpoint, weights_only=False)
    assert len(two["rng_per_rank"]) == 2
    assert one["method"].keys() == two["method"].keys()
    for key, value in one["method"].items():
        torch.testing.assert_close(two["method"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # the centre is all-reduced: both equal the single run's, which moved away from zero
    assert one["method"][centre].abs().sum() > 0
