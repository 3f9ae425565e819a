"""The collapse flag of the train summary (DINO paper §5.3: the student–teacher KL goes to 0).

A run whose teacher and student outputs are forced to the uniform distribution (temperatures of 100) is flagged; a
healthy run is not; an objective that returns no ``kl`` diagnostic gets "not measured", a warning, and no
teacher-momentum column when it has no teacher.
"""

from __future__ import annotations

import json
import math

import pytest

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.store import RunDir
from patchbench.benchmark.train import COLLAPSE_KL, NOT_MEASURED, pretrain

HEAD = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}


def train(tmp_path, name, method, **objective_kwargs):
    spec = make_spec(matrix="collapse", method=method, dataset="digits", seed=0, image_size=32,
                     backbone={"size": "pico"}, budget={"epochs": 1, "batch_size": 128},
                     view_kwargs={"n_local": 2} if method == "dino" else {}, objective_kwargs=objective_kwargs,
                     runtime={"device": "cpu", "log_every": 5})
    run = RunDir(tmp_path / name)
    run.write_spec(spec)
    return pretrain(spec, run), run


@pytest.mark.slow
def test_uniform_outputs_are_flagged_and_a_healthy_run_is_not(tmp_path):
    healthy, _ = train(tmp_path, "healthy", "dino", **HEAD)
    uniform, _ = train(tmp_path, "uniform", "dino", **HEAD, teacher_temp=100.0, warmup_teacher_temp=100.0,
                       student_temp=100.0)
    assert healthy["collapsed"] is False and healthy["final"]["kl"] > 10 * COLLAPSE_KL
    assert uniform["collapsed"] is True and uniform["final"]["kl"] < COLLAPSE_KL
    # the uniform teacher's entropy is log K
    assert uniform["final"]["teacher_entropy"] == pytest.approx(math.log(64), rel=1e-4)


@pytest.mark.slow
def test_an_objective_without_diagnostics_is_not_measured(tmp_path, capsys):
    summary, run = train(tmp_path, "aps", "aps", hidden_dim=32, out_dim=16)
    assert summary["collapsed"] == NOT_MEASURED
    assert "collapse not measured: objective 'aps' returns no 'kl'" in capsys.readouterr().err
    rows = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert rows and all("momentum" not in row and "kl" not in row for row in rows)  # APS has no teacher
    assert json.loads(run.train_summary.read_text())["collapsed"] == NOT_MEASURED
