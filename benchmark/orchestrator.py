"""The orchestrator: plan a matrix against its ledger, submit what is missing, follow, resubmit and cancel.

Each cell has stages: ``pretrain`` (none for a reference row) and one per evaluation. A stage's state is the
ledger of its run folder (``store.RunDir``): submissions by the orchestrator, states by the jobs. On SLURM,
pretraining cells go as job arrays, one per resource class, and each evaluation as a job depending
``afterok`` on its cell's pretraining (the cluster cancels it if the pretraining fails); ``run`` returns after
submitting unless told to wait. On the ``local`` and ``debug`` executors the orchestrator enforces the same order
itself: a cell's evaluations start after its pretraining succeeded, and are marked cancelled if it failed.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit

from .config import RunSpec
from .jobs import PretrainJob, eval_job
from .matrix import Cell, Matrix
from .store import RunDir, atomic_write_json, run_dir

EXECUTORS = ("debug", "local", "slurm")
ACTIVE = ("submitted", "running")
SLURM_FAILURES = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "DEADLINE": "timeout", "OUT_OF_MEMORY": "oom",
                  "FAILED": "error", "NODE_FAIL": "error", "BOOT_FAIL": "error", "COMPLETED": "error",
                  "PREEMPTED": "cancelled"}
POLL_S = 2.0
LOCAL_POLL_S = 0.1

Echo = Callable[[str], None]


def stages(spec: RunSpec) -> list[str]:
    return ([] if spec.is_reference else ["pretrain"]) + list(spec.evaluations)


def stage_status(run: RunDir, stage: str, write: bool = True, settings: dict | None = None) -> dict:
    """A stage's status, corrected from SLURM's accounting for a job that ended without saying so (killed, out of
    memory, cancelled, or an evaluation cancelled because its pretraining failed). An evaluation whose record is
    gone, or was written with other ``settings`` than the matrix now asks for, is ``planned`` again."""
    status = run.stage_status(stage)
    if status["state"] in ACTIVE and status.get("executor") == "slurm":
        job = submitit.SlurmJob(folder=status["folder"], job_id=status["job_id"])
        slurm_state = job.state.split()[0] if job.state else "UNKNOWN"
        if slurm_state in SLURM_FAILURES:
            failed = {"state": "failed", "reason": SLURM_FAILURES[slurm_state], "message": f"SLURM state {job.state}"}
            if write:
                run.set_stage_state(stage, "failed", status["attempt"], reason=failed["reason"],
                                    message=failed["message"], job_id=status["job_id"])
            status = {**status, **failed}
    if stage != "pretrain" and status["state"] == "done" and not run.has_record(stage, settings):
        status = {**status, "state": "planned"}  # the record is gone or stale: evaluate again
    return status


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
            return status["state"] == "planned" or (status["state"] in ACTIVE and status.get("executor") != "slurm")

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
    atomic_write_json(root / "matrix.json", matrix.declaration())


def submitit_folder(root: Path) -> Path:
    """A fresh folder per submission (job ids restart when a cluster's state is wiped: never share one)."""
    return root / "submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}" / "%j"


def submit_slurm(todo: Plan, root: Path, name: str, echo: Echo) -> list[submitit.Job]:
    """Pretraining arrays (one per resource class), then evaluations ``afterok`` their cell's pretraining."""
    folder = submitit_folder(root)
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


def _outcome(job: submitit.Job) -> BaseException | None:
    while isinstance(job, submitit.LocalJob) and not job.done():  # finer than submitit's 1 s wait loop
        time.sleep(LOCAL_POLL_S)
    try:
        return job.exception()
    except submitit.core.utils.UncompletedJobError as err:
        return err


def run_here(todo: Plan, root: Path, kind: str, name: str, echo: Echo) -> int:
    """Run the plan on this machine, cell by cell: pretraining, then (only if it succeeded) the evaluations.
    Returns how many jobs ran."""
    ran = 0
    folder = submitit_folder(root)
    cells = list({c.spec.run_id: c for c in [*todo.pretrain, *(c for c, _ in todo.evaluate)]}.values())
    for i, cell in enumerate(cells, 1):
        run, spec = run_dir(root, cell.spec), cell.spec
        label = f"[{i}/{len(cells)}] {spec.label} {spec.dataset} seed {spec.seed} ({spec.run_id})"
        executor = submitit.AutoExecutor(folder=folder, cluster=kind)
        executor.update_parameters(timeout_min=cell.pretrain.timeout_min(), name=f"{name}-{spec.run_id}")
        evals = todo.stages_of(cell)
        if "pretrain" in evals:
            evals.remove("pretrain")
            echo(f"{label}: pretraining")
            attempt = run.next_attempt("pretrain")
            job = executor.submit(PretrainJob(), str(run.path), attempt)
            run.add_submission("pretrain", job.job_id, kind, str(folder))
            ran += 1
            err = _outcome(job)
            if err is not None:
                status = run.stage_status("pretrain")
                if status["state"] != "failed":  # died without recording why
                    run.set_stage_state("pretrain", "failed", attempt, reason="error", message=_last_line(err))
                reason = run.stage_status("pretrain")["reason"]
                echo(f"{label}: failed: {reason}: {_last_line(err)} (log under {folder.parent})")
                for evaluation in evals:
                    run.set_stage_state(evaluation, "failed", run.next_attempt(evaluation), reason="cancelled",
                                        message="its pretraining failed")
                continue
        for evaluation in evals:
            echo(f"{label}: {evaluation}")
            attempt = run.next_attempt(evaluation)
            job = executor.submit(eval_job, str(run.path), evaluation, attempt)
            run.add_submission(evaluation, job.job_id, kind, str(folder))
            ran += 1
            err = _outcome(job)
            if err is not None:
                if run.stage_status(evaluation)["state"] != "failed":
                    run.set_stage_state(evaluation, "failed", attempt, reason="error", message=_last_line(err))
                echo(f"{label}: {evaluation} failed: {_last_line(err)}")
    return ran


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


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
           echo: Echo = print) -> Plan:
    """Submit (or run, off SLURM) the ``which`` part of the matrix; return what was submitted."""
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
        todo.submitted = run_here(todo, root, kind, matrix.name, echo)
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
