"""Run a matrix through a submitit executor on this machine (``debug``: in-process, ``local``: subprocesses).

Each cell's pretraining job runs before its evaluation job; a cell already done is skipped, a cell whose
pretraining finished is only evaluated, and an interrupted pretraining resumes from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import submitit

from .config import RunSpec
from .jobs import eval_job, pretrain_job
from .store import RunDir, run_dir

EXECUTORS = ("debug", "local")


def cell_status(run: RunDir, spec: RunSpec) -> str:
    """'done', 'pretrained' (evaluation missing) or 'todo'."""
    if run.state().get("state") == "done" and run.has_record("knn"):
        return "done"
    if spec.is_reference or run.train_summary.exists():
        return "pretrained"
    return "todo"


def make_executor(kind: str, folder: Path, name: str) -> submitit.Executor:
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    executor.update_parameters(timeout_min=24 * 60, name=name)
    return executor


def run_matrix(specs: list[RunSpec], results_root: Path, executor_kind: str,
               echo: Callable[[str], None] = print) -> dict[str, int]:
    """Run every cell not yet done; return counts of cells by outcome."""
    counts = {"skipped": 0, "done": 0, "failed": 0}
    for i, spec in enumerate(specs, 1):
        run = run_dir(results_root, spec)
        label = f"[{i}/{len(specs)}] {spec.method} {spec.dataset} seed {spec.seed} ({spec.run_id})"
        if not run.spec_file.exists():
            run.write_spec(spec)
        status = cell_status(run, spec)
        if status == "done":
            echo(f"{label}: done, skipped")
            counts["skipped"] += 1
            continue
        executor = make_executor(executor_kind, run.path / "submitit", f"{spec.method}-{spec.run_id}")
        try:
            if status == "todo":
                echo(f"{label}: pretraining")
                if executor.submit(pretrain_job, str(run.path)).result() == "diverged":
                    echo(f"{label}: failed (diverged): {run.state().get('message')}")
                    counts["failed"] += 1
                    continue
            echo(f"{label}: evaluating")
            executor.submit(eval_job, str(run.path)).result()
            counts["done"] += 1
        except Exception as err:  # FailedJobError, UncompletedJobError, or the job's own exception (debug)
            last_line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            echo(f"{label}: failed: {last_line} (log under {run.path / 'submitit'})")
            counts["failed"] += 1
    return counts
