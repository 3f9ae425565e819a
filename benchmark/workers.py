"""The local executor's warm workers: processes that import the harness once, then run job after job.

A worker (``python -m patchbench.benchmark.workers``) receives jobs over a pipe from the ``patchbench`` process
that started it (the controller), runs each one (:class:`jobs.PretrainJob` or :func:`jobs.eval_job`) in its main
thread, so that the job's own SIGINT/SIGTERM handlers work, with the job's stdout and stderr redirected at the
file-descriptor level to the job's log files, and answers with the job's outcome. Datasets stay loaded between
jobs (each source caches its splits per process), and ``shapes`` is generated once per machine
(``datasets/cache.py``).

A worker dies with its controller (:func:`jobs.die_with_controller`). It starts with SIGINT ignored: Ctrl-C reaches
a running job through the job's own handler, and the controller decides for everything else. :class:`WorkerPool`
is the controller's side: it starts the workers (``default_workers`` of them unless told otherwise, with the CPUs
this process may use split between them as torch threads), hands them jobs, and reports each job's outcome,
including the death of its worker (SIGKILL, the out-of-memory killer); a dead worker is replaced by a fresh one
when the next job needs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path

import torch

from .jobs import PretrainJob, die_with_controller, eval_job

STOP_WAIT_S = 5.0  # how long a worker may take to exit once its pipe is closed, before it is killed


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which also reflects cgroup cpusets and ``taskset``)."""
    return len(os.sched_getaffinity(0))


def default_workers() -> int:
    """One worker per usable CPU, each with one torch thread."""
    return usable_cpus()


def threads_per_worker(workers: int) -> int:
    """The usable CPUs split between ``workers`` workers (at least one thread each)."""
    return max(1, usable_cpus() // workers)


def last_line(err: BaseException) -> str:
    """The last line of an exception's message (its type when it has none)."""
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


@dataclass(frozen=True)
class Job:
    """One stage of one run (``pretrain`` or an evaluation), and the log files its output goes to."""

    job_id: str
    run_path: str
    stage: str
    attempt: int
    stdout: Path
    stderr: Path


@dataclass(frozen=True)
class Outcome:
    """How a job ended, in ``worker_pid``: ``error`` (its exception, one line) or ``exit_code`` (its worker's when
    the worker died while running it; negative: killed by that signal), both None when it succeeded; ``elapsed_s``
    from hand-over to outcome, as the controller saw it."""

    job: Job
    worker_pid: int
    error: str | None = None
    exit_code: int | None = None
    elapsed_s: float = 0.0


# --- the worker process -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _output_to(stdout: Path, stderr: Path):
    """File descriptors 1 and 2 (so also C extensions and child processes) appended to these files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        for fd, path in ((1, stdout), (2, stderr)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
            os.close(target)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def run_job(job: Job) -> str | None:
    """Run ``job`` in this process, its output in its log files; return its exception in one line, or None."""
    with _output_to(job.stdout, job.stderr):
        try:
            if job.stage == "pretrain":
                PretrainJob()(job.run_path, job.attempt)
            else:
                eval_job(job.run_path, job.stage, job.attempt)
        except Exception as err:  # the job recorded its failure in the ledger; the traceback goes to its log
            traceback.print_exc()
            return last_line(err)
    return None


def serve(connection: Connection, threads: int) -> None:
    """A worker's life: run each job received until the controller closes the pipe (this module's imports, done
    once, bring in torch, the methods, the training loop and the evaluations)."""
    die_with_controller()
    torch.set_num_threads(threads)
    connection.send(("ready", None))
    while True:
        try:
            job = connection.recv()
        except EOFError:  # the controller is done with this worker
            return
        connection.send(("ended", run_job(job)))


# --- the controller's side ----------------------------------------------------------------------------------------

@dataclass(eq=False)
class Worker:
    process: subprocess.Popen
    connection: Connection
    ready: bool = False
    job: Job | None = None
    handed_over: float = 0.0
    jobs_run: int = 0


class WorkerStartFailed(RuntimeError):
    """A worker exited before it could take jobs (an import error, say); its error went to this run's stderr."""


@dataclass
class WorkerPool:
    """Up to ``size`` workers of ``threads`` torch threads each, started with ``env`` (which names the controller,
    ``jobs.CONTROLLER_ENV``), running jobs whose logs go to ``log_folder``."""

    size: int
    threads: int
    env: dict[str, str]
    log_folder: Path
    workers: list[Worker] = field(default_factory=list)

    def __enter__(self) -> WorkerPool:
        """Start every worker now, so that they import while the first jobs are prepared."""
        self.log_folder.mkdir(parents=True, exist_ok=True)
        self.workers = [self._spawn() for _ in range(self.size)]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self) -> Worker:
        ours, theirs = Pipe()
        with _sigint_ignored():
            process = subprocess.Popen(
                [sys.executable, "-m", "patchbench.benchmark.workers", str(theirs.fileno()), str(self.threads)],
                pass_fds=(theirs.fileno(),), env={**self.env, "OMP_NUM_THREADS": str(self.threads)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        return Worker(process, ours)

    @property
    def busy(self) -> list[Worker]:
        return [w for w in self.workers if w.job is not None]

    def has_room(self) -> bool:
        return len(self.busy) < self.size

    def assign(self, run_path: str, stage: str, attempt: int) -> Job:
        """Reserve a free worker for a job (a fresh one in place of a worker that died); :meth:`start` hands the
        job over."""
        worker = next((w for w in self.workers if w.job is None), None)
        if worker is None:
            worker = self._spawn()
            self.workers.append(worker)
        worker.jobs_run += 1
        job_id = f"{worker.process.pid}_{worker.jobs_run}"
        worker.job = Job(job_id, run_path, stage, attempt, self.log_folder / f"{job_id}_log.out",
                         self.log_folder / f"{job_id}_log.err")
        return worker.job

    def start(self, job: Job) -> None:
        worker = next(w for w in self.workers if w.job is job)
        worker.handed_over = time.monotonic()
        try:
            worker.connection.send(job)
        except OSError:  # the worker died while idle: its end of the pipe is closed; wait() reports it
            pass

    def wait(self, timeout: float) -> list[Outcome]:
        """The outcomes of jobs that ended within ``timeout`` seconds (possibly none)."""
        outcomes = []
        by_connection = {w.connection: w for w in self.workers}
        for connection in wait(list(by_connection), timeout):
            assert isinstance(connection, Connection)  # wait() returns some of the connections it was given
            worker = by_connection[connection]
            try:
                kind, error = connection.recv()
            except (EOFError, OSError):
                outcomes.extend(self._buried(worker))
                continue
            if kind == "ready":
                worker.ready = True
                continue
            assert worker.job is not None  # a worker reports an outcome only for the job it was handed
            outcomes.append(Outcome(worker.job, worker.process.pid, error=error,
                                    elapsed_s=time.monotonic() - worker.handed_over))
            worker.job = None
        return outcomes

    def _buried(self, worker: Worker) -> list[Outcome]:
        """Remove a worker whose pipe closed (it died); the outcome of the job it was running, if any."""
        self.workers.remove(worker)
        worker.connection.close()
        try:
            code = worker.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
        if not worker.ready and code > 0:
            raise WorkerStartFailed(f"a local worker process exited with status {code} before it could take jobs "
                                    "(its error is above)")
        if worker.job is None:
            return []
        return [Outcome(worker.job, worker.process.pid, exit_code=code,
                        elapsed_s=time.monotonic() - worker.handed_over)]

    def signal_busy(self, signum: int) -> None:
        """Send ``signum`` to every worker running a job."""
        for worker in self.busy:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def close(self) -> None:
        """Close every worker's pipe (an idle worker exits), kill those that do not exit in time, reap them."""
        for worker in self.workers:
            worker.connection.close()
            if worker.job is not None:  # a job still running when the run itself fails: it dies with the run
                worker.process.kill()
        for worker in self.workers:
            try:
                worker.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.workers.clear()


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while a worker starts: an ignored signal stays ignored across exec, and Python then installs
    no KeyboardInterrupt handler, so Ctrl-C leaves the worker alone (a job installs its own handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
