"""The local Slurm cluster (benchmark/slurm/local-cluster.sh) driven by submitit, the way the orchestrator drives it.

Each test gets a fresh submitit folder (job ids restart at 1 on every cluster start) and checks what Slurm itself
reports (squeue, sacct) next to what the job returned or wrote: results, array ids, dependency holds and
cancellations, requeues and the step a checkpointed job resumed from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# Jobs unpickle these functions in a fresh interpreter where tests/ is not importable: send them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = TypeVar("T")


def executor(folder: Path, **parameters) -> submitit.AutoExecutor:
    """timeout_min=60 so that an early USR2 counts as preemption, not as a time-out (submitit's 0.8·T rule)."""
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    ex.update_parameters(**{"timeout_min": 60, "slurm_partition": "debug", "cpus_per_task": 1, "mem_gb": 1,
                            **parameters})
    return ex


def wait_until(condition: Callable[[], T], seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)
    return value


def slurm(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def accounted_states(job_id: str) -> list[str]:
    """Every state accounting recorded for the job, oldest first (-D keeps the runs before a requeue)."""
    accounting = slurm("sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job_id)
    return [line.split()[0] for line in accounting.splitlines()]


def final_states(job_id: str, count: int = 1) -> list[str]:
    """The accounted states once the last of `count` runs has left the running states (records arrive async)."""
    def done():
        return (s := accounted_states(job_id)) and len(s) >= count and s[-1] not in ("PENDING", "RUNNING") and s

    return wait_until(done, 30, f"job {job_id} to reach a final state in sacct")


def add(a: int, b: int) -> int:
    return a + b


def job_identity() -> dict[str, str]:
    return {key: os.environ[key] for key in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME")}


def square_with_task(x: int) -> tuple[int, str]:
    return x * x, f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"


def write_time(path: Path, label: str, sleep_s: float = 0.0) -> str:
    time.sleep(sleep_s)
    path.write_text(str(time.time()))
    return label


def fail(message: str) -> None:
    raise RuntimeError(message)


class CheckpointedCounter(Checkpointable):
    """Counts steps; submitit pickles this object on USR2, so `next_step` is the checkpoint a requeued run resumes
    from. Each step appends "restart-count step time" to `log`, with USR2 held off so that a step is logged and
    counted together."""

    def __init__(self) -> None:
        self.next_step = 0

    def __call__(self, log: Path, total: int, step_s: float) -> int:
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        while self.next_step < total:
            time.sleep(step_s)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
            with log.open("a") as out:
                out.write(f"{restarts} {self.next_step} {time.time()}\n")
            self.next_step += 1
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        return self.next_step


def counter_log(log: Path) -> list[tuple[int, int, float]]:
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(int(restarts), int(step), float(at)) for restarts, step, at in rows]


def assert_resumed_once_from_checkpoint(log: Path, total: int) -> list[tuple[int, int, float]]:
    rows = counter_log(log)
    assert [step for _, step, _ in rows] == list(range(total)), "a step was repeated or skipped"
    assert sorted({restarts for restarts, _, _ in rows}) == [0, 1]
    first_resumed = next(step for restarts, step, _ in rows if restarts == 1)
    assert first_resumed > 0, "the requeued run started from scratch, not from its checkpoint"
    return rows


def test_job_runs_in_slurm_and_returns_its_result_or_its_exception(tmp_path):
    ex = executor(tmp_path)
    ok, identity, bad = ex.submit(add, 2, 3), ex.submit(job_identity), ex.submit(fail, "forced failure")
    assert ok.result() == 5
    assert identity.result() == {"SLURM_JOB_ID": identity.job_id, "SLURM_JOB_PARTITION": "debug",
                                 "SLURM_CLUSTER_NAME": "localci"}
    with pytest.raises(FailedJobError, match="forced failure"):
        bad.result()
    assert final_states(ok.job_id) == ["COMPLETED"]
    assert final_states(bad.job_id) == ["FAILED"]


def test_job_array_and_batch_return_every_result(tmp_path):
    ex = executor(tmp_path, slurm_array_parallelism=4)
    jobs = ex.map_array(square_with_task, [1, 2, 3, 4])
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{task}" for task in range(4)]
    assert [job.result() for job in jobs] == [(x * x, f"{array_id}_{task}") for task, x in enumerate([1, 2, 3, 4])]
    with ex.batch():
        batch = [ex.submit(add, i, 10) for i in range(3)]
    assert len({job.job_id.split("_")[0] for job in batch}) == 1  # one array
    assert [job.result() for job in batch] == [10, 11, 12]


def test_afterok_child_waits_until_its_parent_is_done(tmp_path):
    ex = executor(tmp_path)
    parent = ex.submit(write_time, tmp_path / "parent_done", "parent", 6.0)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{parent.job_id}"})
    child = ex.submit(write_time, tmp_path / "child_ran", "child")
    wait_until(lambda: slurm("squeue", "-h", "-j", parent.job_id, "-o", "%T") == "RUNNING", 60, "the parent to run")
    assert slurm("squeue", "-h", "-j", child.job_id, "-o", "%T %r") == "PENDING Dependency"
    assert (parent.result(), child.result()) == ("parent", "child")
    assert float((tmp_path / "child_ran").read_text()) >= float((tmp_path / "parent_done").read_text())
    assert final_states(child.job_id) == ["COMPLETED"]


def test_afterok_child_of_a_failed_parent_is_cancelled_and_never_runs(tmp_path):
    ex = executor(tmp_path)
    parent = ex.submit(fail, "forced failure")
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{parent.job_id}"})
    child = ex.submit(write_time, tmp_path / "child_ran", "child")
    with pytest.raises(FailedJobError):
        parent.result()
    assert final_states(parent.job_id) == ["FAILED"]
    assert final_states(child.job_id) == ["CANCELLED"]  # before result(), which would wait forever on a pending child
    with pytest.raises(UncompletedJobError):
        child.result()
    assert not (tmp_path / "child_ran").exists()


def test_checkpointable_job_signalled_usr2_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    log, total = tmp_path / "steps.log", 16
    job = executor(tmp_path).submit(CheckpointedCounter(), log, total, 0.5)
    wait_until(lambda: len(counter_log(log)) >= 4, 90, "4 steps before the signal")
    slurm("scancel", "--signal=USR2", job.job_id)  # what preemption or a near time limit sends to submitit
    assert job.result() == total
    assert_resumed_once_from_checkpoint(log, total)
    assert "this job is preempted" in job.stderr()
    assert final_states(job.job_id, count=2) == ["REQUEUED", "COMPLETED"]


def test_urgent_partition_preempts_a_debug_job_which_requeues_and_resumes(tmp_path):
    node_cpus = int(slurm("sinfo", "-h", "-p", "debug", "-o", "%c"))
    log, total = tmp_path / "steps.log", 16
    victim = executor(tmp_path, cpus_per_task=node_cpus).submit(CheckpointedCounter(), log, total, 0.5)
    wait_until(lambda: len(counter_log(log)) >= 4, 90, "4 steps before preemption")
    urgent = executor(tmp_path, slurm_partition="urgent", cpus_per_task=node_cpus).submit(
        write_time, tmp_path / "urgent_ran", "urgent")
    assert urgent.result() == "urgent"
    assert victim.result() == total
    rows = assert_resumed_once_from_checkpoint(log, total)
    urgent_ran = float((tmp_path / "urgent_ran").read_text())
    last_before, first_after = max(at for r, _, at in rows if r == 0), min(at for r, _, at in rows if r == 1)
    assert last_before < urgent_ran < first_after, "the urgent job did not run in the victim's place"
    assert final_states(victim.job_id, count=2) == ["REQUEUED", "COMPLETED"]
