"""One writer per run, no orphans: a second trainer on a run is refused naming the holder; a stale lock is taken
over; interrupting a local ``run`` (SIGINT, SIGTERM to its process group) stops its job, records the stage as
interrupted, exits non-zero, and the next ``run`` completes it to the figures of an uninterrupted run; killing the
controller (SIGKILL) kills its job, the stage reads ``killed``, and ``resubmit --failed`` resumes it to the same
losses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.jobs import PretrainJob
from patchbench.benchmark.orchestrator import parse_exit_signal
from patchbench.benchmark.store import RunDir, RunLocked

MATRIX = """\
name: safety
fixed:
  dataset: digits
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 2, batch_size: 64}
  evaluations: {knn: {k: [5, 20]}}
vary:
  methods: [dino]
  seeds: [3]
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
    optim: {warmup_epochs: 1}
runtime: {device: cpu, checkpoint_interval_min: 0, log_every: 1}
"""
STEPS = 2 * (1347 // 64)  # digits train split, drop_last
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "patchbench.benchmark.cli", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_dir(out: Path) -> RunDir:
    (path,) = [p for p in out.iterdir() if (p / "spec.yaml").exists()]
    return RunDir(path)


def losses(run: RunDir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, run.train_log.read_text().splitlines())]


def knn_metrics(run: RunDir) -> dict:
    return json.loads((run.results / "knn.json").read_text())["metrics"]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def train_rows(out: Path) -> int:
    logs = list(out.glob("*/train_log.jsonl"))
    return len(logs[0].read_text().splitlines()) if logs else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> RunDir:
    """The uninterrupted run of the matrix, on the local executor."""
    work = tmp_path_factory.mktemp("reference")
    (work / "m.yaml").write_text(MATRIX)
    proc = cli("run", "m.yaml", "--out", "out", "--executor", "local", cwd=work)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    run = run_dir(work / "out")
    assert len(losses(run)) == STEPS
    return run


def start_and_signal(work: Path, sig: signal.Signals, whole_group: bool) -> subprocess.CompletedProcess:
    """``patchbench run`` in its own process group, signalled mid-pretraining (mid-epoch 0)."""
    (work / "m.yaml").write_text(MATRIX)
    proc = cli("run", "m.yaml", "--out", "out", "--executor", "local", cwd=work, start_new_session=True)
    wait_until(lambda: train_rows(work / "out") >= 5, 600, "5 logged steps")
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    wait_until(lambda: not group_members(proc.pid), 30, "every process of the run's group to end")
    assert train_rows(work / "out") < STEPS // 2, "the signal must land in epoch 0"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_job_and_a_rerun_completes_it(tmp_path, reference, sig):
    result = start_and_signal(tmp_path, sig, whole_group=True)
    assert result.returncode == 128 + sig, result.stderr
    assert f"{sig.name} received; pretrain stopped and recorded as interrupted" in result.stderr
    assert "Traceback" not in result.stderr
    run = run_dir(tmp_path / "out")
    state = run.stage_state("pretrain")
    assert (state["state"], state["reason"]) == ("failed", "interrupted")
    assert not run.has_record("knn")

    rerun = cli("run", "m.yaml", "--out", "out", "--executor", "local", cwd=tmp_path)
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out + err
    assert run.stage_state("pretrain")["state"] == "done"
    assert losses(run) == losses(reference)
    assert knn_metrics(run) == knn_metrics(reference)


@pytest.mark.slow
def test_killed_controller_takes_its_job_along_and_resubmit_resumes_it(tmp_path, reference):
    result = start_and_signal(tmp_path, signal.SIGKILL, whole_group=False)
    assert result.returncode == -signal.SIGKILL
    run = run_dir(tmp_path / "out")

    status = cli("status", "m.yaml", "--out", "out", cwd=tmp_path)
    out, err = status.communicate(timeout=300)
    assert status.returncode == 0, err
    assert "failed: killed" in out and "pretrain: failed (killed)" in out
    state = run.stage_state("pretrain")
    assert (state["state"], state["reason"]) == ("failed", "killed")

    resubmit = cli("resubmit", "m.yaml", "--failed", "--out", "out", "--executor", "local", cwd=tmp_path)
    out, err = resubmit.communicate(timeout=900)
    assert resubmit.returncode == 0, out + err
    logs = "".join(p.read_text() for p in (tmp_path / "out" / "submitit").rglob("*_log.out"))
    assert "resumed from checkpoint at epoch 0" in logs
    assert losses(run) == losses(reference)
    assert knn_metrics(run) == knn_metrics(reference)


def tiny_spec():
    return make_spec(matrix="lock", method="dino", dataset="digits", seed=1, image_size=32,
                     backbone={"size": "pico"}, budget={"epochs": 2, "batch_size": 64}, view_kwargs={"n_local": 2},
                     objective_kwargs={"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 32},
                     runtime={"checkpoint_interval_min": 0, "log_every": 1, "device": "cpu"})


@pytest.mark.slow
def test_second_trainer_on_a_run_is_refused_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_spec(tiny_spec())
    first = subprocess.Popen([sys.executable, "-m", "patchbench.benchmark.train", str(run.path)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: run.train_log.exists() and run.train_log.read_text().count("\n") >= 2, 600,
                   "the first trainer to log")
        with pytest.raises(RunLocked) as refused:
            PretrainJob()(str(run.path), 2)
        assert f"being written by process {first.pid} on {socket.gethostname()}" in str(refused.value)
        assert run.stage_state("pretrain") == {}  # the refused job wrote nothing
    finally:
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert [step for step, _ in losses(run)] == list(range(STEPS))  # one writer: no interleaved rows


def test_stale_lock_of_a_dead_holder_is_taken_over(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom patchbench.benchmark.store import RunDir\n"
        f"with RunDir(Path({str(run.path)!r})).lock('pretrain'):\n    print('held', flush=True)\n    time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    held = run.holder("pretrain")
    assert held is not None and held["pid"] == holder.pid
    with pytest.raises(RunLocked, match=f"process {holder.pid} on"):
        with run.lock("pretrain"):
            pass
    holder.kill()
    holder.wait()
    assert run.holder("pretrain") is None  # the kernel dropped the dead holder's lock
    with run.lock("pretrain"):
        assert run.holder_file("pretrain").exists()
        assert json.loads(run.holder_file("pretrain").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("sacct, signum", [("0:9\n", 9), ("0:15", 15), ("1:0\n", None), ("0:0", None), ("", None),
                                            ("0:9\n0:0\n", 9)])
def test_signal_read_from_sacct_exit_code(sacct, signum):
    assert parse_exit_signal(sacct) == signum
