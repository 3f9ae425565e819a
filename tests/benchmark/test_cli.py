"""The command line as a user runs it: listings, bad input refused with one clear message, a tiny matrix end to end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from patchbench.benchmark.cli import main
from patchbench.methods import OBJECTIVES, Objective, register_objective


@pytest.fixture(scope="module", autouse=True)
def objective_needing_masks():
    """An objective whose requirements no registered view strategy meets (removed afterwards)."""
    if "needs-masks" not in OBJECTIVES:
        @register_objective("needs-masks")
        class NeedsMasks(Objective):
            requires = frozenset({"masks"})

            def loss(self, student, teacher, views, progress, substep=0):
                return {"loss": torch.zeros(())}
    yield


def write_matrix(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(textwrap.dedent(body))
    return path


TINY = """\
name: tiny
fixed:
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 1, batch_size: 64}
vary:
  methods: [dino]
  references: [random-init, raw-pixels]
  datasets: [digits]
  seeds: [0]
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
    optim: {warmup_epochs: 0}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchbench.benchmark.cli", *args], capture_output=True, text=True)


def test_methods_and_datasets_listings(capsys, tmp_path):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "| dino " in out and "multicrop" in out and "Caron et al." in out
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "embedded" in rows["shapes"] and "| yes " in rows["digits"]
    assert "| no " in rows["cifar10"] and str(tmp_path / "cifar-10-batches-py") in rows["cifar10"]


@pytest.mark.parametrize("edit, message", [
    (("methods: [dino]", "methods: [dinoo]"), "unknown method 'dinoo'. Did you mean 'dino'?"),
    (("datasets: [digits]", "datasets: [digitz]"), "unknown dataset 'digitz'. Did you mean 'digits'?"),
    (("datasets: [digits]", "datasets: [cifar10]"), "dataset 'cifar10': files not found at"),
    (("  budget:", "  budgett:"), "unknown key 'budgett'. Did you mean 'budget'?"),
    (("    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}", "    objective: needs-masks"),
     "objective 'needs-masks' cannot be paired with view strategy 'multicrop': it needs view metadata ['masks']"),
])
def test_bad_input_fails_before_anything_runs(tmp_path, capsys, edit, message):
    matrix = write_matrix(tmp_path, TINY.replace(*edit))
    assert main(["run", str(matrix), "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("patchbench: error: ") and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_user_error_exit_code_and_no_traceback_from_the_shell(tmp_path):
    matrix = write_matrix(tmp_path, TINY.replace("methods: [dino]", "methods: [nope]"))
    result = run_cli("run", str(matrix), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("patchbench: error: unknown method 'nope'")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_matrix_end_to_end_then_nothing_reruns(tmp_path, capsys):
    matrix = write_matrix(tmp_path, TINY)
    out = tmp_path / "results"
    assert main(["run", str(matrix), "--executor", "debug", "--out", str(out)]) == 0
    assert "tiny: 4 jobs submitted, 3/3 cells done, 0 failed" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("| dino ", "| random-init ", "| raw-pixels "):
        assert row in table
    assert "digits knn top1_k20" in table
    assert (out / "report" / "tables" / "main.csv").exists()
    assert main(["run", str(matrix), "--executor", "debug", "--out", str(out)]) == 0
    assert "tiny: 0 jobs submitted, 3/3 cells done, 0 failed" in capsys.readouterr().out
