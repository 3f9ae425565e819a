"""Evaluations in matrices: an evaluation added to a finished matrix evaluates the existing runs from their cached
features without pretraining again; changed settings evaluate again; restrictions and evaluation datasets."""

from __future__ import annotations

import json
import textwrap

import pytest

from patchbench.benchmark.cli import main
from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.orchestrator import plan
from patchbench.benchmark.store import run_dir

MATRIX = """\
name: evals
fixed:
  dataset: digits
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 1, batch_size: 128}
  evaluations:
EVALUATIONS
vary:
  methods: [dino]
  references: [random-init]
  seeds: [0]
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
runtime: {device: cpu}
"""


def write(tmp_path, evaluations: str):
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX.replace("EVALUATIONS", textwrap.indent(textwrap.dedent(evaluations), "    ")))
    return path


def feature_files(out):
    return {p: p.stat().st_mtime_ns for p in out.glob("*/features/*.npy")}


@pytest.mark.slow
def test_adding_an_evaluation_evaluates_from_the_cache_and_never_pretrains_again(tmp_path, capsys):
    out = tmp_path / "results"
    first = write(tmp_path, "knn: {k: [5]}")
    assert main(["run", str(first), "--executor", "debug", "--out", str(out)]) == 0
    assert "evals: 3 jobs submitted, 2/2 cells done" in capsys.readouterr().out
    cached = feature_files(out)
    assert len(cached) == 4  # (dino, random-init) × (train, test) global features

    added = write(tmp_path, "knn: {k: [5]}\nlinear: {epochs: 3}")
    todo, _ = plan(load_matrix(added), out, write=False)
    assert todo.pretrain == [] and sorted(e for _, evals in todo.evaluate for e in evals) == ["linear", "linear"]
    assert main(["run", str(added), "--executor", "debug", "--out", str(out)]) == 0
    assert "evals: 2 jobs submitted, 2/2 cells done" in capsys.readouterr().out
    assert feature_files(out) == cached  # linear read the features knn extracted
    for cell in load_matrix(added).cells:
        run = run_dir(out, cell.spec)
        record = json.loads((run.results / "linear.json").read_text())
        assert record["probe_hparams"]["settings"]["epochs"] == 3 and "top1" in record["metrics"]
        if not cell.spec.is_reference:
            assert [s["attempt"] for s in run.submissions()["pretrain"]] == [1]

    changed = write(tmp_path, "knn: {k: [5, 7]}\nlinear: {epochs: 3}")  # new settings: knn again, nothing else
    todo, _ = plan(load_matrix(changed), out, write=False)
    assert todo.pretrain == [] and sorted(e for _, evals in todo.evaluate for e in evals) == ["knn", "knn"]
    assert main(["run", str(changed), "--executor", "debug", "--out", str(out)]) == 0
    capsys.readouterr()
    record = json.loads((run_dir(out, load_matrix(changed).cells[0].spec).results / "knn.json").read_text())
    assert set(record["metrics"]) == {"top1_k5", "top1_k7"}
    assert feature_files(out) == cached


def test_restricted_and_cross_dataset_evaluations_resolve_per_cell(tmp_path):
    path = write(tmp_path, "knn: {}\ndense: {pretrained_on: [shapes]}\nlinear: {dataset: shapes}")
    text = path.read_text().replace("  dataset: digits\n", "")
    text = text.replace("  seeds: [0]", "  seeds: [0]\n  datasets: [digits, shapes]")
    path.write_text(text)
    cells = {(c.spec.method, c.spec.dataset): c.spec for c in load_matrix(path).cells}
    assert set(cells[("dino", "digits")].evaluations) == {"knn", "linear"}
    assert set(cells[("dino", "shapes")].evaluations) == {"knn", "dense", "linear"}
    assert cells[("dino", "digits")].evaluations["linear"]["dataset"] == "shapes"
    assert cells[("dino", "digits")].evaluations["knn"]["dataset"] == "digits"
    assert cells[("dino", "shapes")].evaluations["dense"]["epochs"] == 5  # the protocol's default, resolved
