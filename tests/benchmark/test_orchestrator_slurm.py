"""The orchestrator on the local Slurm cluster (benchmark/slurm/local-cluster.sh): the acceptance scenarios of the
SLURM executor, with tiny budgets (pico backbone, one to three epochs on digits)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from test_slurm_cluster import wait_until

from patchbench.benchmark.cli import main
from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.orchestrator import cell_state, plan
from patchbench.benchmark.store import RunDir

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

MATRIX = """\
name: {name}
fixed:
  dataset: digits
  backbone: {{size: pico, patch_size: 4}}
  budget: {{epochs: {epochs}, batch_size: 64}}
  evaluations: {{knn: {{k: [5, 10]}}}}
vary:
  methods: [dino]
  references: {references}
  seeds: {seeds}
{ablations}methods:
  dino:
    view_kwargs: {{n_local: 2}}
    objective_kwargs: {{out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}}
    optim: {{warmup_epochs: 0}}
slurm: {{partition: debug, cpus_per_task: 1, mem: 1G, time: 60}}
runtime: {{device: cpu, log_every: 1}}
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Jobs and in-process runs compute with one thread each (the same float summation order everywhere)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write(tmp_path: Path, name: str, epochs: int = 1, references: str = "[]", seeds: str = "[0]",
          ablations: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MATRIX.format(name=name, epochs=epochs, references=references, seeds=seeds, ablations=ablations))
    return path


def states(path: Path, out: Path) -> dict[str, dict]:
    matrix = load_matrix(path)
    _, statuses = plan(matrix, out)
    return {f"{c.spec.label} {c.spec.seed}": statuses[c.spec.run_id] for c in matrix.cells}


def sacct(job_id: str, fields: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", fields, "-j", job_id], capture_output=True, text=True,
                         check=True).stdout
    return out.strip().splitlines()[-1].split("|")


def test_demo_shaped_matrix_runs_end_to_end_and_a_second_run_submits_nothing(tmp_path, capsys):
    path = write(tmp_path, "demo-slurm", references="[random-init, raw-pixels]", seeds="[0, 1]")
    out = tmp_path / "results"
    assert main(["run", str(path), "--executor", "slurm", "--wait", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "submitted pretraining array" in printed and "(2 cells)" in printed
    assert "8 jobs submitted, 6/6 cells done, 0 failed" in printed

    assert main(["status", str(path), "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.count("| done ") == 6 and "6 done" in status
    cells = states(path, out)
    pretrain_ids = sorted(cells[f"dino {s}"]["pretrain"]["job_id"] for s in (0, 1))
    array = pretrain_ids[0].split("_")[0]
    assert pretrain_ids == [f"{array}_0", f"{array}_1"]  # one array for the two cells of one resource class
    for seed in (0, 1):  # each evaluation started after its own pretraining ended (afterok)
        _, pretrain_end = sacct(cells[f"dino {seed}"]["pretrain"]["job_id"], "Start,End")
        eval_start, _ = sacct(cells[f"dino {seed}"]["knn"]["job_id"], "Start,End")
        assert eval_start >= pretrain_end

    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("| dino ", "| random-init ", "| raw-pixels "):
        assert row in table
    assert "digits knn top1_k10" in table

    ledger = {run.name: (run / "jobs.json").read_text() for run in out.iterdir() if (run / "jobs.json").exists()}
    assert main(["run", str(path), "--executor", "slurm", "--wait", "--out", str(out)]) == 0
    assert "0 jobs submitted, 6/6 cells done" in capsys.readouterr().out
    assert ledger == {name: (out / name / "jobs.json").read_text() for name in ledger}


def test_preempted_pretraining_resumes_from_its_checkpoint_and_matches_an_uninterrupted_cpu_run(tmp_path, capsys):
    epochs, steps_per_epoch = 3, 1347 // 64
    path = write(tmp_path, "preempt", epochs=epochs)
    out = tmp_path / "slurm"
    assert main(["run", str(path), "--executor", "slurm", "--out", str(out)]) == 0  # returns after submitting
    cell = load_matrix(path).cells[0]
    run = RunDir(out / cell.spec.run_id)
    job_id = run.stage_status("pretrain")["job_id"]
    def logged() -> bool:
        return run.train_log.exists() and len(run.train_log.read_text().splitlines()) >= 5

    wait_until(logged, 120, "the pretraining to log five steps")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_until(lambda: cell_state({s: run.stage_status(s) for s in ("pretrain", "knn")}) in ("done",)
               or run.stage_status("pretrain")["state"] == "failed", 300, "the cell to finish")
    assert run.stage_status("pretrain")["state"] == "done" and run.stage_status("knn")["state"] == "done"
    assert run.stage_status("pretrain")["restarts"] >= 1

    folder = Path(run.stage_status("pretrain")["folder"].replace("%j", job_id))
    log = (folder / f"{job_id}_0_log.out").read_text()
    assert "received SIGUSR2" in log and "preempted: stopped on request" in log
    resumed = re.search(r"resumed from checkpoint at epoch (\d+), batch (\d+) \(step (\d+)\)", log)
    assert resumed, log
    epoch, batch, step = map(int, resumed.groups())
    assert 0 <= epoch < epochs and 5 <= step < epochs * steps_per_epoch and step == epoch * steps_per_epoch + batch
    rows = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(epochs * steps_per_epoch))  # every step once: total = budget
    assert torch.load(run.checkpoint, weights_only=False)["epoch"] == epochs

    reference = tmp_path / "cpu"
    assert main(["run", str(path), "--executor", "debug", "--out", str(reference)]) == 0
    uninterrupted = RunDir(reference / cell.spec.run_id)
    assert [json.loads(line) for line in uninterrupted.train_log.read_text().splitlines()] == rows
    def record(r):
        return json.loads((r.results / "knn.json").read_text())["metrics"]

    assert record(run) == record(uninterrupted)


def test_diverged_cell_fails_its_evaluation_is_cancelled_and_only_it_is_resubmitted(tmp_path, capsys):
    ablations = "  ablations:\n    base: {}\n    blowup: {optim: {lr: 1.0e+30}}\n"
    path = write(tmp_path, "diverge", references="[raw-pixels]", ablations=ablations)
    out = tmp_path / "results"
    assert main(["run", str(path), "--executor", "slurm", "--wait", "--out", str(out)]) == 1
    cells = states(path, out)
    assert cell_state(cells["dino/blowup 0"]) == "failed: diverged"
    assert cells["dino/blowup 0"]["knn"]["state"] == "failed" and cells["dino/blowup 0"]["knn"]["reason"] == "cancelled"
    assert sacct(cells["dino/blowup 0"]["knn"]["job_id"], "State")[0].startswith("CANCELLED")
    assert cell_state(cells["dino/base 0"]) == "done" and cell_state(cells["raw-pixels 0"]) == "done"
    capsys.readouterr()
    assert main(["status", str(path), "--out", str(out)]) == 0
    assert "failed: diverged" in capsys.readouterr().out

    ledgers = {label: json.loads((out / load_run_id(path, label) / "jobs.json").read_text()) for label in cells}
    assert main(["resubmit", str(path), "--failed", "--executor", "slurm", "--wait", "--out", str(out)]) == 1
    assert "2 jobs submitted" in capsys.readouterr().out
    after = {label: json.loads((out / load_run_id(path, label) / "jobs.json").read_text()) for label in cells}
    assert after["dino/base 0"] == ledgers["dino/base 0"] and after["raw-pixels 0"] == ledgers["raw-pixels 0"]
    assert [len(after["dino/blowup 0"][s]) for s in ("pretrain", "knn")] == [2, 2]
    again = states(path, out)["dino/blowup 0"]
    assert cell_state(again) == "failed: diverged" and again["pretrain"]["attempt"] == 2


def load_run_id(path: Path, label: str) -> str:
    return next(c.spec.run_id for c in load_matrix(path).cells if f"{c.spec.label} {c.spec.seed}" == label)


def test_cancel_stops_pending_and_running_jobs(tmp_path, capsys):
    path = write(tmp_path, "cancel", epochs=3)
    out = tmp_path / "results"
    assert main(["run", str(path), "--executor", "slurm", "--out", str(out)]) == 0
    assert main(["cancel", str(path), "--out", str(out)]) == 0
    assert "2 jobs cancelled" in capsys.readouterr().out
    cell = states(path, out)["dino 0"]
    assert [(cell[s]["state"], cell[s]["reason"]) for s in ("pretrain", "knn")] == [("failed", "cancelled")] * 2
    for stage in ("pretrain", "knn"):
        wait_until(lambda: sacct(cell[stage]["job_id"], "State")[0].startswith("CANCELLED"), 30, f"{stage} cancelled")
    assert main(["run", str(path), "--executor", "slurm", "--out", str(out)]) == 0
    assert "0 jobs submitted" in capsys.readouterr().out


def test_two_task_pretraining_job_trains_data_parallel_through_submitit(tmp_path):
    """One SLURM job, two tasks (gloo on CPU): submitit's distributed environment, DDP, rank 0 writes."""
    import submitit

    from patchbench.benchmark.jobs import PretrainJob

    path = write(tmp_path, "ddp")
    cell = load_matrix(path).cells[0]
    spec = cell.spec.__class__(**{**cell.spec.__dict__, "backbone": cell.spec.backbone.__class__(
        **{**cell.spec.backbone.__dict__, "drop_path_rate": 0.0})})  # stochastic depth is drawn per rank
    parallel, single = RunDir(tmp_path / "parallel"), RunDir(tmp_path / "single")
    for run in (parallel, single):
        run.write_spec(spec)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=60, slurm_partition="debug", nodes=1, tasks_per_node=2, cpus_per_task=1,
                               mem_gb=1)
    job = executor.submit(PretrainJob(), str(parallel.path), 1)
    PretrainJob()(str(single.path), 1)  # meanwhile, the same run in this process
    assert job.results() == ["pretrained", "pretrained"]  # one result per task
    assert parallel.stage_state("pretrain")["tasks"] == 2
    assert json.loads(parallel.train_summary.read_text())["world_size"] == 2
    def losses(run):
        return [json.loads(line)["loss"] for line in run.train_log.read_text().splitlines()]

    assert losses(parallel) == pytest.approx(losses(single), rel=1e-4, abs=1e-5)
    one, two = (torch.load(r.checkpoint, weights_only=False)["method"] for r in (single, parallel))
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
