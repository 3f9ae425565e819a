"""The orchestrator off SLURM: matrix validation and expansion, the fairness check, the ledger, status, dry-run,
and the order the local executors enforce (evaluations after their pretraining; cancelled when it fails)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from patchbench.benchmark.cli import main
from patchbench.benchmark.config import ConfigError, make_spec
from patchbench.benchmark.fairness import check_fair, check_results_folder
from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.orchestrator import cell_state, plan
from patchbench.benchmark.resources import parse_mem_gb, parse_time_min
from patchbench.benchmark.store import RunDir, run_dir

MATRIX = """\
name: orch
fixed:
  dataset: digits
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 1, batch_size: 64}
  evaluations: {knn: {k: [5]}}
vary:
  methods: [dino]
  references: [raw-pixels]
  seeds: [0, 1]
  ablations:
    base: {}
    blowup: {optim: {lr: 1.0e+30}}
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
    optim: {warmup_epochs: 0}
slurm: {partition: debug, cpus_per_task: 1, mem: 1G, time: "1:30:00", eval: {time: 10}}
runtime: {device: cpu, log_every: 1}
"""


def write(tmp_path: Path, body: str = MATRIX, *edits: tuple[str, str]) -> Path:
    for old, new in edits:
        assert old in body, old
        body = body.replace(old, new)
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_expansion_cells_resources_and_labels(tmp_path):
    matrix = load_matrix(write(tmp_path))
    cells = {(c.spec.label, c.spec.seed) for c in matrix.cells}
    assert cells == {(m, s) for m in ("dino/base", "dino/blowup", "raw-pixels") for s in (0, 1)}
    blowup = next(c for c in matrix.cells if c.spec.ablation == "blowup")
    assert blowup.spec.optim.lr == 1e30 and blowup.spec.optim.warmup_epochs == 0  # override on top of the section
    assert blowup.pretrain.timeout_min() == 90 and blowup.evaluate.timeout_min() == 10
    assert blowup.pretrain.executor_parameters()["slurm_partition"] == "debug"
    assert len({c.spec.run_id for c in matrix.cells}) == 6


@pytest.mark.parametrize("edits, message", [
    ((("vary:", "varyy:"),), "unknown key 'varyy'. Did you mean 'vary'?"),
    ((("  seeds: [0, 1]", "  sedes: [0, 1]"),), "vary: unknown key 'sedes'. Did you mean 'seeds'?"),
    ((("  seeds: [0, 1]", "  seeds: [0, 1]\n  datasets: [shapes]"),),
     "'dataset' is both fixed (fixed.dataset) and varied (vary.datasets); keep one of them"),
    ((("methods: [dino]", "methods: [dinno]"),), "unknown method 'dinno'. Did you mean 'dino'?"),
    ((("references: [raw-pixels]", "references: [raw-pixel]"),), "unknown reference 'raw-pixel'. Did you mean"),
    ((("dataset: digits", "dataset: digitz"),), "unknown dataset 'digitz'. Did you mean 'digits'?"),
    ((("dataset: digits", "dataset: cifar10"),), "dataset 'cifar10': files not found at"),
    ((("blowup: {optim:", "blowup: {optimm:"),), "vary.ablations.blowup: unknown key 'optimm'. Did you mean 'optim'?"),
    ((("blowup: {optim: {lr: 1.0e+30}}", "blowup: {optim: {warmup_epochs: 0}}"),),
     "cells 'dino/base' and 'dino/blowup' (digits, seed 0) resolve to the same run"),
    ((("{knn: {k: [5]}}", "{knnn: {}}"),), "unknown evaluation 'knnn'. Did you mean 'knn'?"),
    ((("{knn: {k: [5]}}", "{knn: {kk: [5]}}"),), "fixed.evaluations.knn: unknown key 'kk'. Did you mean 'k'?"),
    ((("{knn: {k: [5]}}", "{dense: {}}"),),
     "fixed.evaluations: evaluation 'dense' needs masks, which dataset 'digits' does not provide (it provides "
     "copies, labels, retrieval). Evaluate on a dataset that does (e.g. dense: {dataset: NAME})"),
    ((("{knn: {k: [5]}}", "{linear: {dataset: voc2012}}"),), "dataset 'voc2012': files not found at"),
    ((("{knn: {k: [5]}}", "{knn: {pretrained_on: shapes}}"),),
     "fixed.evaluations.knn.pretrained_on must be a list of dataset names"),
    ((("cpus_per_task: 1", "cpu_per_task: 1"),), "slurm: unknown key 'cpu_per_task'. Did you mean 'cpus_per_task'?"),
    ((('time: "1:30:00"', "time: soon"),), "slurm.time 'soon': give minutes"),
    ((("mem: 1G", "mem: lots"),), "slurm.mem 'lots'"),
    ((("    view_kwargs: {n_local: 2}", "    view_kwargs: {n_locals: 2}"),), "n_locals"),
])
def test_malformed_matrix_is_refused_with_one_message(tmp_path, capsys, edits, message):
    path = write(tmp_path, MATRIX, *edits)
    out = tmp_path / "out"
    assert main(["run", str(path), "--executor", "slurm", "--out", str(out), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("patchbench: error: ") and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists()


def test_time_and_memory_parsing():
    assert [parse_time_min(v) for v in (30, "0:30:00", "2:00:00", "1-00:00:30")] == [30, 30, 120, 1441]
    assert [parse_mem_gb(v) for v in (8, "16G", "512M", "1T")] == [8.0, 16.0, 0.5, 1024.0]


def spec(**changes):
    base = dict(matrix="m", method="dino", dataset="digits", seed=0, image_size=32, backbone={"size": "pico"},
                budget={"epochs": 2, "batch_size": 64})
    return make_spec(**{**base, **changes})


def test_fairness_refuses_an_undeclared_difference_and_accepts_a_declared_one():
    with pytest.raises(ConfigError, match=r"differ on 'budget.epochs' \(2 vs 3\), which is held fixed"):
        check_fair([spec(), spec(seed=1, budget={"epochs": 3, "batch_size": 64})], {})
    check_fair([spec(), spec(budget={"epochs": 3, "batch_size": 64}, ablation="longer")],
               {"longer": {"budget": {"epochs": 3}}})
    # per-method settings and the seed are declared axes; references carry no budget
    check_fair([spec(optim={"lr": 1.0}), spec(seed=1), spec(method="raw-pixels")], {})


def test_report_refuses_stale_runs_with_another_budget(tmp_path, capsys):
    for s in (spec(), spec(seed=1, budget={"epochs": 3, "batch_size": 64})):
        run = run_dir(tmp_path, s)
        run.write_spec(s)
        (run.results).mkdir(parents=True)
        (run.results / "knn.json").write_text("{}")
    with pytest.raises(ConfigError, match="budget.epochs"):
        check_results_folder(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "unfair comparison" in capsys.readouterr().err


def test_ledger_states_follow_submissions_and_attempts(tmp_path):
    run = RunDir(tmp_path)
    assert run.stage_status("pretrain")["state"] == "planned"
    run.add_submission("pretrain", "7_0", "slurm", "f")
    assert run.stage_status("pretrain") | {"time": 0} == {"attempt": 1, "job_id": "7_0", "executor": "slurm",
                                                          "folder": "f", "time": 0, "state": "submitted"}
    run.set_stage_state("pretrain", "failed", 1, reason="diverged")
    assert run.stage_status("pretrain")["state"] == "failed"
    assert run.next_attempt("pretrain") == 2
    run.add_submission("pretrain", "9_0", "slurm", "f")  # a resubmission: the old failure no longer counts
    assert run.stage_status("pretrain")["state"] == "submitted" and run.stage_status("pretrain")["job_id"] == "9_0"
    with pytest.raises(ValueError, match="needs a reason"):
        run.set_stage_state("pretrain", "failed", 2, reason="bad luck")
    assert cell_state({"pretrain": {"state": "failed", "reason": "oom"}, "knn": {"state": "planned"}}) == "failed: oom"
    assert cell_state({"pretrain": {"state": "done"}, "knn": {"state": "running"}}) == "running"


def test_dry_run_lists_cells_jobs_and_arrays_per_resource_class(tmp_path, capsys):
    path = write(tmp_path, MATRIX,
                 ("    optim: {warmup_epochs: 0}", "    optim: {warmup_epochs: 0}\n    slurm: {mem: 2G}"))
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("| planned ") == 6 and out.count("pretrain + knn") == 4
    assert "10 jobs would be submitted: 4 pretraining (1 array on SLURM), 6 evaluations" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["debug", "local"])
def test_local_executors_order_and_cancel_evaluations_then_resubmit_only_failed(tmp_path, capsys, executor):
    path = write(tmp_path, MATRIX, ("seeds: [0, 1]", "seeds: [0]"),
                 *([("    base: {}\n", "")] if executor == "local" else []))
    out = tmp_path / "out"
    assert main(["run", str(path), "--executor", executor, "--out", str(out)]) == 1
    matrix = load_matrix(path)
    _, statuses = plan(matrix, out)
    by_label = {c.spec.label: statuses[c.spec.run_id] for c in matrix.cells}
    assert cell_state(by_label["dino/blowup"]) == "failed: diverged"
    assert by_label["dino/blowup"]["knn"]["reason"] == "cancelled" and "job_id" not in by_label["dino/blowup"]["knn"]
    assert cell_state(by_label["raw-pixels"]) == "done"
    if executor == "debug":
        base = by_label["dino/base"]
        assert cell_state(base) == "done" and base["knn"]["time"] > base["pretrain"]["time"]
        record = json.loads((out / next(c.spec.run_id for c in matrix.cells if c.spec.label == "dino/base")
                             / "results" / "knn.json").read_text())
        assert record["method"] == "dino/base" and set(record["provenance"]["jobs"]) == {"pretrain", "knn"}
    capsys.readouterr()

    assert main(["run", str(path), "--executor", executor, "--out", str(out)]) == 1  # failed cells are left alone
    assert "0 jobs submitted" in capsys.readouterr().out
    pixels = next(c for c in matrix.cells if c.spec.label == "raw-pixels")
    (out / pixels.spec.run_id / "results" / "knn.json").unlink()  # half-finished: only the lost record is missing
    todo, _ = plan(matrix, out)
    assert todo.pretrain == [] and [(c.spec.label, s) for c, s in todo.evaluate] == [("raw-pixels", ["knn"])]
    assert main(["run", str(path), "--executor", executor, "--out", str(out)]) == 1
    assert "1 job submitted" in capsys.readouterr().out
    todo, _ = plan(matrix, out, "failed")
    assert [(c.spec.label, s) for c, s in todo.evaluate] == [("dino/blowup", ["knn"])]
    assert [c.spec.label for c in todo.pretrain] == ["dino/blowup"]
    assert main(["resubmit", str(path), "--failed", "--executor", executor, "--out", str(out)]) == 1
    assert "1 job submitted" in capsys.readouterr().out  # the pretraining; its evaluation is cancelled again
    blowup = next(c for c in matrix.cells if c.spec.label == "dino/blowup")
    assert RunDir(out / blowup.spec.run_id).stage_status("pretrain")["attempt"] == 2
    assert main(["status", str(path), "--out", str(out)]) == 0
    assert "failed: diverged" in capsys.readouterr().out


@pytest.mark.slow
def test_local_executor_runs_a_healthy_cell_to_its_evaluation(tmp_path, capsys):
    """Pretraining and k-NN of one healthy cell, each in its own process, as `make demo` runs them."""
    path = write(tmp_path, MATRIX, ("seeds: [0, 1]", "seeds: [0]"), ("  references: [raw-pixels]\n", ""),
                 ("    blowup: {optim: {lr: 1.0e+30}}\n", ""))
    out = tmp_path / "out"
    assert main(["run", str(path), "--executor", "local", "--out", str(out)]) == 0
    assert "2 jobs submitted" in capsys.readouterr().out
    matrix = load_matrix(path)
    [cell] = matrix.cells
    _, statuses = plan(matrix, out)
    status = statuses[cell.spec.run_id]
    assert cell_state(status) == "done" and status["knn"]["time"] > status["pretrain"]["time"]
    run = RunDir(out / cell.spec.run_id)
    summary = json.loads(run.train_summary.read_text())
    assert summary["steps"] == 1347 // 64 and summary["collapsed"] in (True, False)
    record = json.loads((run.path / "results" / "knn.json").read_text())
    assert record["method"] == "dino/base" and set(record["provenance"]["jobs"]) == {"pretrain", "knn"}
    accuracies = [v for k, v in record["metrics"].items() if k.startswith("top1")]
    assert accuracies and all(0.1 < a <= 1.0 for a in accuracies)  # above chance on 10 digit classes
    assert main(["run", str(path), "--executor", "local", "--out", str(out)]) == 0  # finished: nothing to submit
    assert "0 jobs submitted" in capsys.readouterr().out
