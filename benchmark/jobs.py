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

Interruption (Ctrl-C, SIGTERM; submitit's own handler would ignore SIGTERM): pretraining checkpoints at the next
batch boundary and an evaluation stops at once; the stage is recorded as ``failed: interrupted`` and the job exits
with an error, so the next ``run`` resumes it. Each job holds its stage's lock (``store.RunDir.lock``) for its
lifetime. On the local executor a job, and the worker process that runs it (``workers.py``), dies with the
``patchbench`` process that started it (:func:`die_with_controller`), so no trainer outlives an interrupted or killed
``run``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import threading
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
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONTROLLER_ENV = "PATCHBENCH_CONTROLLER_PID"  # set by the orchestrator for the local executor's workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class JobInterrupted(Exception):
    """The job stopped on SIGINT or SIGTERM (after checkpointing, for pretraining)."""


_dies_with: str | None = None  # the controller PID this process already dies with


def die_with_controller() -> None:
    """Kill this process (SIGKILL) when the ``patchbench`` process in ``$PATCHBENCH_CONTROLLER_PID`` ends: a pidfd
    watched by a thread, and ``PR_SET_PDEATHSIG`` (a local worker is that process's child). Called by each local
    worker (``workers.py``) and by every job it runs; a second call in a process does nothing."""
    global _dies_with
    pid = os.environ.get(CONTROLLER_ENV)
    if not pid or pid == _dies_with:
        return
    _dies_with = pid
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    try:
        watched = os.pidfd_open(int(pid))
    except ProcessLookupError:  # the controller died before this job got here
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        select.select([watched], [], [])  # a pidfd turns readable when its process ends
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-controller", daemon=True).start()


@contextlib.contextmanager
def on_interrupt(handler: Callable[[int, Any], None]):
    """``handler`` for SIGINT and SIGTERM while the body runs, off SLURM (where SIGTERM means scancel or the end of
    the time limit, and submitit's handlers stay) and in the main thread only."""
    if threading.current_thread() is not threading.main_thread() or "SLURM_JOB_ID" in os.environ:
        yield
        return
    previous = {s: signal.getsignal(s) for s in INTERRUPT_SIGNALS}
    for s in INTERRUPT_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def threads_from_allocation() -> None:
    """Run torch on the CPUs SLURM allocated (``--cpus-per-task``): without CPU binding (``TaskPlugin=task/none``)
    torch would start one thread per CPU of the node in every job, and jobs sharing a node would oversubscribe it."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        torch.set_num_threads(int(cpus))


def job_context() -> dict[str, Any]:
    """Where and as what this job runs: SLURM/submitit job id, restart count, host, GPU."""
    context: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
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
        self.interrupted: str | None = None  # the name of the SIGINT / SIGTERM received
        self.submitit_handler: Callable | None = None
        current = signal.getsignal(PREEMPT_SIGNAL)
        if callable(current):  # only inside a submitit job (on SLURM)
            self.submitit_handler = current
            signal.signal(PREEMPT_SIGNAL, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: checkpointing at the next batch boundary", flush=True)
        self.requested = True

    def interrupt(self, signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: checkpointing at the next batch boundary, then stopping",
              flush=True)
        self.interrupted = signal.Signals(signum).name

    def __call__(self) -> bool:
        return self.requested or self.interrupted is not None

    def hand_over(self) -> None:
        """submitit's handler: on rank 0 it calls :meth:`PretrainJob.checkpoint`, requeues the job and exits."""
        if self.submitit_handler is not None:
            self.submitit_handler(PREEMPT_SIGNAL, None)
        raise SystemExit(0)  # other ranks (and a handler that declined): the requeue restarts every task


def _failure(err: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(err, JobInterrupted):
        return "interrupted", {"message": str(err)}
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
        die_with_controller()
        threads_from_allocation()
        run = RunDir(Path(run_path))
        spec = run.read_spec()
        ddp.init_from_submitit()
        main = ddp.rank() == 0
        with run.lock("pretrain") if main else contextlib.nullcontext():
            return self._pretrain(run, spec, attempt, main)

    def _pretrain(self, run: RunDir, spec, attempt: int, main: bool) -> str:
        context = job_context()
        if main:
            run.set_stage_state("pretrain", "running", attempt, **context)
        preemption = DeferredPreemption()
        started = time.time()
        try:
            with on_interrupt(preemption.interrupt):
                summary = pretrain(spec, run, stop=preemption)
        except Preempted as stopped:
            if preemption.interrupted:
                message = f"{preemption.interrupted}: {stopped}"
                if main:
                    run.set_stage_state("pretrain", "failed", attempt, reason="interrupted", message=message, **context)
                raise JobInterrupted(message) from None
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


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise JobInterrupted(f"{signal.Signals(signum).name}: stopped")


def eval_job(run_path: str, evaluation: str, attempt: int) -> str:
    """Run ``evaluation`` on the run in ``run_path`` and write its result record."""
    die_with_controller()
    threads_from_allocation()
    run = RunDir(Path(run_path))
    spec = run.read_spec()
    with run.lock(evaluation):
        context = job_context()
        run.set_stage_state(evaluation, "running", attempt, **context)
        started = time.time()
        try:
            with on_interrupt(_raise_interrupted):
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
