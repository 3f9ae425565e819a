"""The local executor's warm workers and the dataset cache: a job that crashes, or whose worker is killed, fails alone
with its reason and its log while the other cells complete on a fresh worker; ``shapes`` is generated once however
many processes ask for it at once, read back identical, and generated again for a different key or a damaged file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.store import RunDir, run_dir
from patchbench.datasets import cache, shapes

MATRIX = """\
name: workers
fixed:
  dataset: digits
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 2, batch_size: 64}
  evaluations: {knn: {k: [5]}}
vary:
  methods: [dino]
  references: [raw-pixels, random-init]
  seeds: [0]
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
runtime: {device: cpu, log_every: 1}
"""


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def logged_steps(run: RunDir) -> int:
    return len(run.train_log.read_text().splitlines()) if run.train_log.exists() else 0


@pytest.mark.slow
def test_crashed_job_and_killed_worker_fail_alone_and_a_fresh_worker_runs_the_rest(tmp_path):
    """One worker, three cells in this order: dino (its worker is SIGKILLed mid-pretraining), raw-pixels (its k-NN
    crashes: its results folder is a file) and random-init (healthy); the last two run on a fresh worker."""
    (tmp_path / "m.yaml").write_text(MATRIX)
    matrix = load_matrix(tmp_path / "m.yaml")
    killed, crashed, healthy = (run_dir(tmp_path / "out", c.spec) for c in matrix.cells)
    assert [c.spec.label for c in matrix.cells] == ["dino", "raw-pixels", "random-init"]
    crashed.path.mkdir(parents=True)
    crashed.results.write_text("not a folder")  # the k-NN computes, then cannot write its record
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "patchbench.benchmark.cli", "run", "m.yaml", "--out", "out",
                             "--executor", "local", "--workers", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: logged_steps(killed) >= 2 or proc.poll() is not None, 600, "2 logged steps")
        assert proc.poll() is None, proc.communicate()
        worker = killed.stage_state("pretrain")["pid"]
        assert worker != proc.pid
        rows_at_kill = killed.train_log.read_text().splitlines()[:2]
        os.kill(worker, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err

    state = killed.stage_state("pretrain")
    assert (state["state"], state["reason"]) == ("failed", "killed")
    assert f"pretrain failed: killed: worker process {worker} killed by SIGKILL" in out
    assert (killed.stage_state("knn")["state"], killed.stage_state("knn")["reason"]) == ("failed", "cancelled")
    assert killed.train_log.read_text().splitlines()[:2] == rows_at_kill  # nothing written is lost

    state = crashed.stage_state("knn")
    assert (state["state"], state["reason"]) == ("failed", "error") and "FileExistsError" in state["message"]
    [line] = [line for line in out.splitlines() if "knn failed: error: FileExistsError" in line]
    log = tmp_path / line.rsplit("(log: ", 1)[1].rstrip(")")
    assert "Traceback" in log.read_text() and "FileExistsError" in log.read_text()

    assert healthy.stage_state("knn")["state"] == "done"
    fresh = healthy.stage_state("knn")["pid"]
    assert fresh not in (worker, proc.pid) and crashed.stage_state("knn")["pid"] == fresh  # it outlived the crash

    status = subprocess.run([sys.executable, "-m", "patchbench.benchmark.cli", "status", "m.yaml", "--out", "out"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert status.stdout.splitlines()[-1] == "1 done, 1 failed: error, 1 failed: killed", status.stdout


GENERATE_AND_REPORT = """\
import hashlib, json
from patchbench.datasets import shapes
calls = []
generate = shapes.generate_shapes
shapes.generate_shapes = lambda n, seed: calls.append((n, seed)) or generate(n, seed)
test = shapes.ShapesSource().load("test")
digest = hashlib.sha256(test.images.numpy().tobytes() + test.masks.numpy().tobytes() + test.labels.tobytes())
print(json.dumps({"calls": calls, "digest": digest.hexdigest()}))
"""


@pytest.mark.slow
def test_shapes_generated_once_across_processes_and_read_back_identical(tmp_path):
    env = {**os.environ, cache.CACHE_ENV: str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    racers = [subprocess.Popen([sys.executable, "-c", GENERATE_AND_REPORT], env=env, stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    reports = [json.loads(p.communicate(timeout=300)[0]) for p in racers]
    assert sorted(len(r["calls"]) for r in reports) == [0, 1]  # one generated, the other waited and read it
    assert [c for r in reports for c in r["calls"]] == [[shapes.SPLIT_SIZES["test"], shapes.SPLIT_SEEDS["test"]]]
    images, masks, labels = shapes.generate_shapes(shapes.SPLIT_SIZES["test"], shapes.SPLIT_SEEDS["test"])
    expected = hashlib.sha256(images.tobytes() + masks.tobytes() + labels.tobytes()).hexdigest()
    assert [r["digest"] for r in reports] == [expected, expected]
    [entry] = (tmp_path / "cache").glob("shapes-test-*.npz")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_shapes_cache_key_holds_the_generator_source_and_settings():
    key = shapes.cache_key("train")
    assert key["generator"] == hashlib.sha256(Path(shapes.__file__).read_bytes()).hexdigest()
    assert (key["n"], key["seed"], key["numpy"]) == (4000, 1001, np.__version__)


def test_cache_reuses_an_entry_and_regenerates_for_another_key_or_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    calls = []

    def generate() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(6, dtype=np.int64).reshape(2, 3) + len(calls)}

    first = cache.cached_arrays("toy", {"seed": 1, "generator": "a"}, generate)
    again = cache.cached_arrays("toy", {"generator": "a", "seed": 1}, generate)  # same key, another order
    assert len(calls) == 1
    np.testing.assert_array_equal(again["x"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(first["x"], again["x"])
    other_code = cache.cached_arrays("toy", {"seed": 1, "generator": "b"}, generate)
    assert len(calls) == 2 and other_code["x"][0, 0] == 2
    cache.entry_path("toy", {"seed": 1, "generator": "a"}).write_bytes(b"PK\x03\x04 torn")
    repaired = cache.cached_arrays("toy", {"seed": 1, "generator": "a"}, generate)
    assert len(calls) == 3 and repaired["x"][0, 0] == 3
    assert len(list(tmp_path.glob("toy-*.npz"))) == 2


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "patchbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "patchbench"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
