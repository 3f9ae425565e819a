"""The orchestrator: plan a matrix against its ledger, submit what is missing, follow, resubmit and cancel.

Each cell has stages: ``pretrain`` (none for a reference row) and one per evaluation. A stage's state is the
ledger of its run folder (``store.RunDir``): submissions by the orchestrator, states by the jobs. On SLURM,
pretraining cells go as job arrays, one per resource class, and each evaluation as a job depending
``afterok`` on its cell's pretraining (the cluster cancels it if the pretraining fails); ``run`` returns after
submitting unless told to wait. On the ``local`` executor, cells run in parallel on warm worker processes
(``workers.py``), on ``debug`` one job at a time in this process; on both the orchestrator enforces the same order
itself: a cell's evaluations start after its pretraining succeeded, and are marked cancelled if it failed.

Interrupting a local ``run`` (SIGINT, SIGTERM) asks the running jobs to stop (pretraining checkpoints first), waits
for them, records their stages as ``failed: interrupted`` and raises :class:`RunInterrupted`; the next ``run``
resumes them. Local workers die with the ``run`` process (``jobs.die_with_controller``); a job whose worker dies is
recorded as ``killed``, and so is a stage left ``running`` whose lock no live process holds, the next time the
ledger is read; ``resubmit --failed`` resumes it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit

from .config import RunSpec
from .jobs import CONTROLLER_ENV, PretrainJob, eval_job, on_interrupt
from .matrix import Cell, Matrix
from .store import RunDir, atomic_write_json, describe_holder, inside, run_dir
from .workers import Job, Outcome, WorkerPool, default_workers, last_line, threads_per_worker

EXECUTORS = ("debug", "local", "slurm")
ACTIVE = ("submitted", "running")
SLURM_FAILURES = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "DEADLINE": "timeout", "OUT_OF_MEMORY": "oom",
                  "FAILED": "error", "NODE_FAIL": "error", "BOOT_FAIL": "error", "COMPLETED": "error",
                  "PREEMPTED": "preempted"}
POLL_S = 2.0
LOCAL_POLL_S = 0.1
STOP_GRACE_S = 60.0  # how long an interrupted local job may take to checkpoint before it is killed
RESUMED_BY_RUN = ("interrupted",)  # failure reasons that ``run`` (not only ``resubmit --failed``) resumes

Echo = Callable[[str], None]


def stages(spec: RunSpec) -> list[str]:
    return ([] if spec.is_reference else ["pretrain"]) + list(spec.evaluations)


def stage_status(run: RunDir, stage: str, write: bool = True, settings: dict | None = None) -> dict:
    """A stage's status, corrected from SLURM's accounting for a job that ended without saying so (killed, out of
    memory, cancelled, or an evaluation cancelled because its pretraining failed). An evaluation whose record is
    gone, or was written with other ``settings`` than the matrix now asks for, is ``planned`` again."""
    status = run.stage_status(stage)
    if status["state"] in ACTIVE and status.get("executor") == "slurm":
        job: submitit.SlurmJob[str] = submitit.SlurmJob(folder=status["folder"], job_id=status["job_id"])
        slurm_state = job.state.split()[0] if job.state else "UNKNOWN"
        if slurm_state in SLURM_FAILURES:
            failed = {"state": "failed", "reason": SLURM_FAILURES[slurm_state], "message": f"SLURM state {job.state}"}
            signum = slurm_exit_signal(status["job_id"]) if slurm_state in ("FAILED", "NODE_FAIL") else None
            if signum is not None:
                failed.update(reason="killed", message=f"SLURM state {job.state}: killed by {signal_name(signum)}")
            if write:
                run.set_stage_state(stage, "failed", status["attempt"], reason=failed["reason"],
                                    message=failed["message"], job_id=status["job_id"])
            status = {**status, **failed}
    if (status["state"] == "running" and status.get("executor") in ("local", "debug")
            and status.get("host") == socket.gethostname() and run.holder(stage) is None):
        killed = {"state": "failed", "reason": "killed",
                  "message": f"job process {status.get('pid')} ended without recording an outcome: killed by a "
                             "signal (SIGKILL, the out-of-memory killer, or the death of the run that started it)"}
        if write:
            run.set_stage_state(stage, "failed", status["attempt"], reason="killed", message=killed["message"],
                                pid=status.get("pid"), host=status.get("host"))
        status = {**status, **killed}
    if stage != "pretrain" and status["state"] == "done" and not run.has_record(stage, settings):
        status = {**status, "state": "planned"}  # the record is gone or stale: evaluate again
    return status


def parse_exit_signal(sacct_exit_code: str) -> int | None:
    """The signal of sacct's ``ExitCode`` (``<exit status>:<signal>``, e.g. ``0:9`` for SIGKILL), None if none."""
    first = sacct_exit_code.strip().splitlines()[0] if sacct_exit_code.strip() else ""
    code, _, sig = first.partition(":")
    return int(sig) if sig.isdigit() and int(sig) > 0 else None


def slurm_exit_signal(job_id: str) -> int | None:
    """The signal that ended a SLURM job, from the accounting (``sacct``); None when unknown."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "ExitCode"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_exit_signal(out)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def cell_state(statuses: dict[str, dict]) -> str:
    """One word (or ``failed: reason``) for a cell: failed wins, then running, submitted, planned; else done."""
    for stage, status in statuses.items():
        if status["state"] == "failed":
            return f"failed: {status['reason']}" + ("" if stage == "pretrain" or len(statuses) == 1 else f" ({stage})")
    for state in ("running", "submitted", "planned"):
        if any(s["state"] == state for s in statuses.values()):
            return state
    return "done"


@dataclass
class Plan:
    """What to submit: per cell, its pretraining (or not) and which evaluations."""

    pretrain: list[Cell] = field(default_factory=list)
    evaluate: list[tuple[Cell, list[str]]] = field(default_factory=list)
    running_pretrain: dict[str, str] = field(default_factory=dict)  # run id → SLURM job id still pending/running
    submitted: int = 0  # jobs actually submitted (off SLURM, evaluations of a failed pretraining are not)

    @property
    def n_jobs(self) -> int:
        return len(self.pretrain) + sum(len(e) for _, e in self.evaluate)

    def stages_of(self, cell: Cell) -> list[str]:
        run_id = cell.spec.run_id
        evals = next((e for c, e in self.evaluate if c.spec.run_id == run_id), [])
        return (["pretrain"] if any(c.spec.run_id == run_id for c in self.pretrain) else []) + list(evals)


def plan(matrix: Matrix, root: Path, which: str = "missing", write: bool = True) -> tuple[Plan, dict[str, dict]]:
    """The jobs to submit and every cell's stage statuses. ``which``: ``missing`` (never submitted, or
    interrupted on a local executor) or ``failed``. Stages active on SLURM are never submitted twice."""
    result, statuses = Plan(), {}
    for cell in matrix.cells:
        run = run_dir(root, cell.spec)
        st = {stage: stage_status(run, stage, write, cell.spec.evaluations.get(stage)) for stage in stages(cell.spec)}
        statuses[cell.spec.run_id] = st

        def wanted(status: dict) -> bool:
            if which == "failed":
                return status["state"] == "failed"
            return (status["state"] == "planned" or status.get("reason") in RESUMED_BY_RUN
                    or (status["state"] in ACTIVE and status.get("executor") != "slurm"))

        pretrain = "pretrain" in st and wanted(st["pretrain"])
        pretrain_ok = "pretrain" not in st or st["pretrain"]["state"] in ("done", *ACTIVE) or pretrain
        evals = [s for s in cell.spec.evaluations if pretrain_ok and (
            wanted(st[s]) or (pretrain and st[s]["state"] != "done"))]
        if pretrain:
            result.pretrain.append(cell)
        elif "pretrain" in st and st["pretrain"]["state"] in ACTIVE:
            result.running_pretrain[cell.spec.run_id] = st["pretrain"]["job_id"]
        if evals:
            result.evaluate.append((cell, evals))
    return result, statuses


def prepare(matrix: Matrix, root: Path) -> None:
    """Write each cell's spec (unless unchanged) and the matrix declaration (for ``report``'s fairness check)."""
    for cell in matrix.cells:
        run = run_dir(root, cell.spec)
        if not run.spec_file.exists() or run.read_spec() != cell.spec:
            run.write_spec(cell.spec)
    atomic_write_json(inside(root, root / "matrix.json"), matrix.declaration())


def submission_folder(root: Path) -> Path:
    """A fresh folder per submission for the jobs' logs (and submitit's pickles): job ids restart when a cluster's
    state is wiped, so never share one."""
    return inside(root, root / "submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


def submit_slurm(todo: Plan, root: Path, name: str, echo: Echo) -> list[submitit.Job]:
    """Pretraining arrays (one per resource class), then evaluations ``afterok`` their cell's pretraining."""
    folder = submission_folder(root) / "%j"
    jobs, pretrain_ids = [], {}
    classes: dict = defaultdict(list)
    for cell in todo.pretrain:
        classes[cell.pretrain].append(cell)
    for resources, cells in classes.items():
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(name=f"{name}-pretrain", slurm_array_parallelism=len(cells),
                                   **resources.executor_parameters())
        runs = [run_dir(root, c.spec) for c in cells]
        attempts = [r.next_attempt("pretrain") for r in runs]
        array = executor.map_array(PretrainJob(), [str(r.path) for r in runs], attempts)
        for cell, run, job in zip(cells, runs, array):
            run.add_submission("pretrain", job.job_id, "slurm", str(folder))
            pretrain_ids[cell.spec.run_id] = job.job_id
        jobs.extend(array)
        echo(f"submitted pretraining array {array[0].job_id.split('_')[0]} ({len(cells)} cells)")
    for cell, evals in todo.evaluate:
        run = run_dir(root, cell.spec)
        for evaluation in evals:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params = cell.evaluate.executor_parameters()
            parent = pretrain_ids.get(cell.spec.run_id) or todo.running_pretrain.get(cell.spec.run_id)
            if parent is not None:
                params["slurm_additional_parameters"] = {"dependency": f"afterok:{parent}"}
            executor.update_parameters(name=f"{name}-{evaluation}", **params)
            job = executor.submit(eval_job, str(run.path), evaluation, run.next_attempt(evaluation))
            run.add_submission(evaluation, job.job_id, "slurm", str(folder))
            jobs.append(job)
    if todo.evaluate:
        echo(f"submitted {sum(len(e) for _, e in todo.evaluate)} evaluation jobs")
    return jobs


class RunInterrupted(Exception):
    """``run`` stopped on SIGINT or SIGTERM after its running jobs stopped; ``code`` is the exit status to use."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.code = 128 + signum


class InProcess:
    """The ``debug`` executor: one job at a time, run in this process by submitit's DebugExecutor (so a debugger
    and prints work as in a script), with the same interface as :class:`workers.WorkerPool`."""

    def __init__(self, folder: Path):
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster="debug")
        self.jobs: dict[str, submitit.Job] = {}
        self.queued: Job | None = None

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def has_room(self) -> bool:
        return self.queued is None

    def assign(self, run_path: str, stage: str, attempt: int) -> Job:
        job = (self.executor.submit(PretrainJob(), run_path, attempt) if stage == "pretrain"
               else self.executor.submit(eval_job, run_path, stage, attempt))
        self.jobs[job.job_id] = job
        return Job(job.job_id, run_path, stage, attempt, job.paths.stdout, job.paths.stderr)

    def start(self, job: Job) -> None:
        self.queued = job

    def wait(self, timeout: float) -> list[Outcome]:
        """Run the queued job here; its outcome. submitit writes no log for an in-process job, so a failure's
        traceback is written to the job's stderr file, and every failure points at a file."""
        job, self.queued = self.queued, None
        if job is None:
            return []
        started = time.monotonic()
        err = self.jobs.pop(job.job_id).exception()
        if err is not None and not job.stderr.exists():
            job.stderr.parent.mkdir(parents=True, exist_ok=True)
            job.stderr.write_text("".join(traceback.format_exception(err)))
        return [Outcome(job, os.getpid(), error=None if err is None else last_line(err),
                        elapsed_s=time.monotonic() - started)]

    def signal_busy(self, signum: int) -> None:
        """Nothing to do: the job runs in this process, and its own handlers got the signal."""


class InterruptGuard:
    """While a local ``run`` runs: SIGINT/SIGTERM are noted and passed on as SIGTERM to the running jobs (their own
    handlers checkpoint and stop); jobs still running ``STOP_GRACE_S`` later are killed."""

    def __init__(self, runner: WorkerPool | InProcess) -> None:
        self.runner = runner
        self.received: int | None = None
        self.deadline = float("inf")

    def __call__(self, signum: int, frame) -> None:
        first = self.received is None
        self.received = signum
        if first:
            self.deadline = time.monotonic() + STOP_GRACE_S
            self.runner.signal_busy(signal.SIGTERM)


def record_failure(run: RunDir, outcome: Outcome, interrupted: int | None) -> str:
    """The failure of a job: what the job recorded itself, else what its end says (interrupted by this run; its
    worker died: killed; else the error). Returns the reason."""
    stage, attempt = outcome.job.stage, outcome.job.attempt
    status = run.stage_status(stage)
    if status["state"] == "failed":
        return status["reason"]
    message: str | None
    if interrupted is not None:
        reason, message = "interrupted", f"{signal.Signals(interrupted).name}: stopped before it could checkpoint"
    elif outcome.exit_code is not None:
        code = outcome.exit_code
        how = f"killed by {signal_name(-code)}" if code < 0 else f"exited with status {code}"
        if code == -signal.SIGKILL:
            how += " (the out-of-memory killer, or a user)"
        reason = "killed" if code < 0 else "error"
        message = f"worker process {outcome.worker_pid} {how} before the job recorded an outcome"
    else:
        reason, message = "error", outcome.error
    run.set_stage_state(stage, "failed", attempt, reason=reason, message=message)
    return reason


def run_here(todo: Plan, root: Path, kind: str, echo: Echo, workers: int | None = None) -> int:
    """Run the plan on this machine: on ``local``, cells in parallel on warm worker processes (``workers.py``;
    ``workers`` of them, default ``workers.default_workers``, at most one per cell), on ``debug`` one job at a
    time in this process. Each cell runs its pretraining, then (only if it succeeded) its evaluations. Returns how
    many jobs ran; raises :class:`RunInterrupted` on SIGINT/SIGTERM once the running jobs stopped."""
    cells = list({c.spec.run_id: c for c in [*todo.pretrain, *(c for c, _ in todo.evaluate)]}.values())
    folder = submission_folder(root)
    if kind == "local":
        size = min(workers or default_workers(), len(cells))
        runner: WorkerPool | InProcess = WorkerPool(size, threads_per_worker(size),
                                                    {**os.environ, CONTROLLER_ENV: str(os.getpid())}, folder)
    else:
        runner = InProcess(folder)
    guard = InterruptGuard(runner)
    with on_interrupt(guard), runner:
        return _run_cells(cells, todo, root, kind, runner, guard, echo)


@dataclass
class _Running:
    """The cell of a job handed to the runner, and the cell's stages still to run after it."""

    label: str
    run: RunDir
    later: list[str]


def _run_cells(cells: list[Cell], todo: Plan, root: Path, kind: str, runner: WorkerPool | InProcess,
               guard: InterruptGuard, echo: Echo) -> int:
    running: dict[str, _Running] = {}
    waiting = list(reversed(cells))
    stopped: list[str] = []  # what became of each job running when the run was interrupted
    ran = 0

    def start(label: str, run: RunDir, stages_todo: list[str]) -> None:
        nonlocal ran
        stage, *later = stages_todo
        held = run.holder(stage)
        if held is not None:
            echo(f"{label}: skipped: {describe_holder(run, stage, held)}")
            return
        echo(f"{label}: {'pretraining' if stage == 'pretrain' else stage}")
        job = runner.assign(str(run.path), stage, run.next_attempt(stage))
        run.add_submission(stage, job.job_id, kind, str(job.stderr.parent))
        runner.start(job)
        running[job.job_id] = _Running(label, run, later)
        ran += 1

    while True:
        while waiting and runner.has_room() and guard.received is None and not stopped:
            cell = waiting.pop()
            spec = cell.spec
            start(f"[{len(cells) - len(waiting)}/{len(cells)}] {spec.label} {spec.dataset} seed {spec.seed} "
                  f"({spec.run_id})", run_dir(root, spec), todo.stages_of(cell))
        if not running:
            break
        if time.monotonic() > guard.deadline:
            runner.signal_busy(signal.SIGKILL)
        for outcome in runner.wait(LOCAL_POLL_S):
            entry = running.pop(outcome.job.job_id)
            stage, run, log = outcome.job.stage, entry.run, outcome.job.stderr
            ended_badly = outcome.error is not None or outcome.exit_code is not None
            if not ended_badly or run.stage_status(stage)["state"] == "done":  # done, even if its worker died after
                echo(f"{entry.label}: {stage} done in {outcome.elapsed_s:.1f} s")
                if guard.received is not None or stopped:
                    stopped.append(f"{entry.label}: {stage} finished before it could stop")
                elif entry.later:
                    start(entry.label, run, entry.later)
                continue
            reason = record_failure(run, outcome, guard.received)
            if guard.received is not None or reason == "interrupted":
                what = "stopped and recorded as interrupted" if reason == "interrupted" else f"failed: {reason}"
                stopped.append(f"{entry.label}: {signal.Signals(guard.received or signal.SIGINT).name} received; "
                               f"{stage} {what} (log: {log})")
                continue
            echo(f"{entry.label}: {stage} failed: {reason}: {run.stage_status(stage).get('message', outcome.error)} "
                 f"(log: {log})")
            if stage == "pretrain":
                for evaluation in entry.later:
                    run.set_stage_state(evaluation, "failed", run.next_attempt(evaluation), reason="cancelled",
                                        message="its pretraining failed")
    if guard.received is not None or stopped:
        signum = guard.received or signal.SIGINT
        raise RunInterrupted("\n".join(stopped or [f"{signal.Signals(signum).name} received"])
                             + "\nrun the same command again to resume", signum)
    return ran


def wait(jobs: list[submitit.Job], echo: Echo, timeout_s: float | None = None) -> None:
    """Block until every job has ended (done, failed or cancelled)."""
    started = time.monotonic()
    pending = list(jobs)
    while pending:
        pending = [j for j in pending if not j.done()]
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{len(pending)} jobs still running after {timeout_s:.0f} s")
        if pending:
            time.sleep(POLL_S)
    echo(f"all {len(jobs)} jobs ended after {time.monotonic() - started:.0f} s")


def submit(matrix: Matrix, root: Path, kind: str, which: str = "missing", wait_for_jobs: bool = False,
           echo: Echo = print, workers: int | None = None) -> Plan:
    """Submit (or run, off SLURM) the ``which`` part of the matrix; return what was submitted. ``workers``: the
    local executor's worker processes (default ``workers.default_workers``)."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
    prepare(matrix, root)
    todo, _ = plan(matrix, root, which)
    if todo.n_jobs == 0:
        return todo
    if kind == "slurm":
        jobs = submit_slurm(todo, root, matrix.name, echo)
        todo.submitted = len(jobs)
        if wait_for_jobs:
            wait(jobs, echo)
    else:
        todo.submitted = run_here(todo, root, kind, echo, workers)
    return todo


def cancel(matrix: Matrix, root: Path, echo: Echo = print) -> int:
    """Cancel every job of the matrix still pending or running on SLURM; return how many."""
    cancelled = 0
    for cell in matrix.cells:
        run = run_dir(root, cell.spec)
        for stage in stages(cell.spec):
            status = stage_status(run, stage)
            if status["state"] in ACTIVE and status.get("executor") == "slurm":
                submitit.SlurmJob(folder=status["folder"], job_id=status["job_id"]).cancel(check=False)
                run.set_stage_state(stage, "failed", status["attempt"], reason="cancelled",
                                    message="cancelled by patchbench cancel", job_id=status["job_id"])
                echo(f"cancelled {stage} of {cell.spec.label} {cell.spec.dataset} seed {cell.spec.seed}: "
                     f"job {status['job_id']}")
                cancelled += 1
    return cancelled
