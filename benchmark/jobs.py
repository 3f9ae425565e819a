"""The jobs the orchestrator submits: pretraining and one evaluation of a run folder, each keeping its stage state.

Both rebuild everything from disk (the spec is read from ``spec.yaml``), so they pickle for any submitit executor.
A failing job records ``failed`` with its reason (diverged, oom, timeout, error) and then raises, so SLURM sees a
failed job and cancels the evaluations that depend on it (``afterok``).

Preemption and time limits (submitit ``docs/checkpointing.md``): :class:`PretrainJob` is a
``submitit.helpers.Checkpointable``. submitit's handler of the preemption signal (USR2) would checkpoint and requeue
from inside the signal handler, at an arbitrary point of a training step; instead the job defers it
(:class:`DeferredPreemption`): the handler only sets a flag, the training loop saves a checkpoint at the next batch
boundary and stops, and then submitit's own handler is called to requeue the job, which resumes from that
checkpoint (``train.py`` resumes exactly).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import submitit
import torch

from . import ddp
from .evaluate import evaluate
from .provenance import provenance
from .store import RunDir
from .train import Diverged, Preempted, pretrain

PREEMPT_SIGNAL = signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]  # submitit's default


def job_context() -> dict[str, Any]:
    """Where and as what this job runs: SLURM/submitit job id, restart count, host, GPU."""
    context: dict[str, Any] = {"host": socket.gethostname(),
                               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        env = submitit.JobEnvironment()
        context.update(job_id=str(env.job_id), tasks=env.num_tasks, nodes=env.num_nodes)
    except RuntimeError:
        pass
    if "SLURM_JOB_ID" in os.environ:
        context.update(slurm_job_id=os.environ["SLURM_JOB_ID"],
                       restarts=int(os.environ.get("SLURM_RESTART_COUNT", 0)))
    return context


class DeferredPreemption:
    """Replaces submitit's handler of the preemption signal by a flag; :meth:`hand_over` calls it later."""

    def __init__(self) -> None:
        self.requested = False
        self.submitit_handler: Callable | None = None
        current = signal.getsignal(PREEMPT_SIGNAL)
        if callable(current):  # only inside a submitit job (slurm or local executor)
            self.submitit_handler = current
            signal.signal(PREEMPT_SIGNAL, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: checkpointing at the next batch boundary", flush=True)
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def hand_over(self) -> None:
        """submitit's handler: on rank 0 it calls :meth:`PretrainJob.checkpoint`, requeues the job and exits."""
        if self.submitit_handler is not None:
            self.submitit_handler(PREEMPT_SIGNAL, None)
        raise SystemExit(0)  # other ranks (and a handler that declined): the requeue restarts every task


def _failure(err: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(err, Diverged):
        return "diverged", {"step": err.step, "epoch": err.epoch, "message": str(err)}
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "oom", {"message": str(err)}
    if isinstance(err, submitit.core.utils.UncompletedJobError):  # submitit: "timed-out too many times"
        return "timeout", {"message": str(err)}
    return "error", {"message": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


class PretrainJob(submitit.helpers.Checkpointable):
    """Pretrain the run in ``run_path``; requeued on preemption (``checkpoint`` resubmits the same call)."""

    def __call__(self, run_path: str, attempt: int) -> str:
        run = RunDir(Path(run_path))
        spec = run.read_spec()
        ddp.init_from_submitit()
        main = ddp.rank() == 0
        context = job_context()
        if main:
            run.set_stage_state("pretrain", "running", attempt, **context)
        preemption = DeferredPreemption()
        started = time.time()
        try:
            summary = pretrain(spec, run, stop=preemption)
        except Preempted as stopped:
            print(f"preempted: {stopped}; requeueing", flush=True)
            try:
                preemption.hand_over()
            except submitit.core.utils.UncompletedJobError as err:  # not requeued: timed out too many times
                if main:
                    run.set_stage_state("pretrain", "failed", attempt, reason="timeout", message=str(err), **context)
                raise
        except Exception as err:
            if main:
                reason, info = _failure(err)
                run.set_stage_state("pretrain", "failed", attempt, reason=reason, **context, **info)
            raise
        if main:
            run.set_stage_state("pretrain", "done", attempt, wall_s=time.time() - started,
                                images_per_s=summary.get("images_per_s"), provenance=provenance(), **context)
        return "pretrained"


def eval_job(run_path: str, evaluation: str, attempt: int) -> str:
    """Run ``evaluation`` on the run in ``run_path`` and write its result record."""
    run = RunDir(Path(run_path))
    spec = run.read_spec()
    context = job_context()
    run.set_stage_state(evaluation, "running", attempt, **context)
    started = time.time()
    try:
        record = evaluate(spec, run, evaluation)
        record["provenance"]["jobs"] = {stage: subs[-1]["job_id"] for stage, subs in run.submissions().items()}
        record["provenance"]["gpu"] = context["gpu"]
        run.write_record(record)
    except Exception as err:
        reason, info = _failure(err)
        run.set_stage_state(evaluation, "failed", attempt, reason=reason, **context, **info)
        raise
    run.set_stage_state(evaluation, "done", attempt, wall_s=time.time() - started, **context)
    return "done"
