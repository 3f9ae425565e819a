"""Per-job overhead of the local executor: the warm workers (``workers.py``) against one fresh process per job
through submitit's LocalExecutor, on the same small matrix, side by side in one run.

    python -m patchbench.benchmark.local_overhead [--seeds 2] [--threads 1] [--keep DIR]

Both paths run the same jobs one after another (pretraining, then k-NN, of DINO and of the raw-pixels reference on
``digits`` and ``shapes``), with the same torch threads. A job's overhead is its wall time as the orchestrator sees
it (from handing the job over to learning its outcome) minus the job's own time (the ``wall_s`` the job writes in
its ledger: from its start to its outcome, dataset loading included). The workers' start-up (one import per
worker, once per ``run``) is timed apart. The ``shapes`` cache is filled before the clock starts, so both paths
read it from disk (a fresh process reads it once per job, a worker once). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import submitit
from tabulate import tabulate

from patchbench.datasets import build_dataset

from .jobs import CONTROLLER_ENV, PretrainJob, eval_job
from .matrix import load_matrix
from .orchestrator import LOCAL_POLL_S, prepare, stages, submission_folder
from .store import RunDir, run_dir
from .workers import Outcome, WorkerPool

MATRIX = """\
name: overhead
fixed:
  backbone: {{size: pico, patch_size: 4}}
  budget: {{epochs: 1, batch_size: 256}}
  evaluations: {{knn: {{k: [5]}}}}
vary:
  datasets: [digits, shapes]
  methods: [dino]
  references: [raw-pixels]
  seeds: {seeds}
methods:
  dino:
    view_kwargs: {{n_local: 2}}
    objective_kwargs: {{out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}}
runtime: {{device: cpu}}
"""


def own_time(run: RunDir, stage: str) -> float:
    return run.stage_state(stage)["wall_s"]


def through_workers(jobs: list[tuple[RunDir, str]], root: Path, threads: int) -> tuple[float, list[float]]:
    """(seconds until the worker is ready, each job's seen wall time) with one warm worker."""
    started = time.monotonic()
    env = {**os.environ, CONTROLLER_ENV: str(os.getpid())}  # the worker dies with this process, as with ``run``
    with WorkerPool(1, threads, env, submission_folder(root)) as pool:
        while not all(w.ready for w in pool.workers):
            pool.wait(LOCAL_POLL_S)
        startup = time.monotonic() - started
        seen = []
        for run, stage in jobs:
            job = pool.assign(str(run.path), stage, run.next_attempt(stage))
            run.add_submission(stage, job.job_id, "local", str(job.stderr.parent))
            pool.start(job)
            outcomes: list[Outcome] = []
            while not outcomes:
                outcomes = pool.wait(LOCAL_POLL_S)
            assert outcomes[0].error is None and outcomes[0].exit_code is None, (run.path, stage, outcomes[0])
            seen.append(outcomes[0].elapsed_s)
    return startup, seen


def through_submitit(jobs: list[tuple[RunDir, str]], root: Path, threads: int) -> list[float]:
    """Each job's seen wall time, one fresh process per job (submitit's LocalExecutor, polled every
    ``LOCAL_POLL_S``)."""
    folder = submission_folder(root) / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    seen = []
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the job processes inherit it
    for run, stage in jobs:
        started = time.monotonic()
        attempt = run.next_attempt(stage)
        job = (executor.submit(PretrainJob(), str(run.path), attempt) if stage == "pretrain"
               else executor.submit(eval_job, str(run.path), stage, attempt))
        run.add_submission(stage, job.job_id, "local", str(folder))
        while not job.done():
            time.sleep(LOCAL_POLL_S)
        job.result()
        seen.append(time.monotonic() - started)
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per cell (2: 12 jobs per path)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every job, on both paths")
    parser.add_argument("--keep", default=None, help="write the two results folders here (default: a temporary one)")
    args = parser.parse_args(argv)
    source = build_dataset("shapes")
    source.load("train"), source.load("test")  # fills the dataset cache before the clock starts
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "m.yaml").write_text(MATRIX.format(seeds=list(range(args.seeds))))
        matrix = load_matrix(work / "m.yaml")
        plans = {}
        for name in ("workers", "submitit"):
            prepare(matrix, work / name)
            plans[name] = [(run_dir(work / name, c.spec), stage) for c in matrix.cells for stage in stages(c.spec)]
        startup, warm = through_workers(plans["workers"], work / "workers", args.threads)
        fresh = through_submitit(plans["submitit"], work / "submitit", args.threads)
        own = {name: [own_time(run, stage) for run, stage in jobs] for name, jobs in plans.items()}
    overheads = {"workers": [s - o for s, o in zip(warm, own["workers"])],
                 "submitit": [s - o for s, o in zip(fresh, own["submitit"])]}
    rows = [[f"{run.path.name}", stage, f"{warm[i]:.2f}", f"{own['workers'][i]:.2f}",
             f"{overheads['workers'][i]:.2f}", f"{fresh[i]:.2f}", f"{own['submitit'][i]:.2f}",
             f"{overheads['submitit'][i]:.2f}"] for i, (run, stage) in enumerate(plans["workers"])]
    print(f"{len(rows)} jobs per path, {args.threads} torch thread(s) per job, {len(os.sched_getaffinity(0))} "
          f"usable CPUs; worker start-up (once per run): {startup:.2f} s")
    print(tabulate(rows, headers=["run", "stage", "workers: seen (s)", "own (s)", "overhead (s)",
                                  "submitit: seen (s)", "own (s)", "overhead (s)"], tablefmt="github"))
    seen = {"workers": warm, "submitit": fresh}
    summary = [[name, f"{statistics.median(v):.2f}", f"{statistics.mean(v):.2f}", f"{max(v):.2f}",
                f"{sum(seen[name]):.1f}"] for name, v in overheads.items()]
    print(tabulate(summary, headers=["path", "median overhead (s)", "mean (s)", "max (s)", "all jobs, seen (s)"],
                   tablefmt="github"))
    ratio = statistics.mean(overheads["submitit"]) / max(statistics.mean(overheads["workers"]), 1e-9)
    print(f"mean per-job overhead, submitit / workers: {ratio:.0f}x")

if __name__ == "__main__":
    main()
