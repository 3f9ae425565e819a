"""Every shipped matrix on embedded data parses and expands into valid, distinct cells (the papers' matrices, which
read on-disk datasets, expand against fixtures in test_paper_matrices.py)."""

from pathlib import Path

import pytest

from patchbench.benchmark.matrix import load_matrix

ON_DISK = {"patchwise-cifar10", "imagenet100-comparison", "coco-selfpatch-gtsa", "ablation-patchwise-imagenet100"}
MATRICES = sorted(p for p in (Path(__file__).resolve().parents[2] / "benchmark" / "matrices").glob("*.yaml")
                  if p.stem not in ON_DISK)


@pytest.mark.parametrize("path", MATRICES, ids=[p.stem for p in MATRICES])
def test_shipped_matrix_expands(path):
    matrix = load_matrix(path)
    specs = matrix.specs
    assert matrix.name == path.stem
    assert len({s.run_id for s in specs}) == len(specs)


REFERENCES = ("random-init", "random-init-patches", "raw-pixels")
SIX_METHODS = ("dino", "patchwise", "ibot", "selfpatch", "gtsa", "aps")


@pytest.mark.parametrize("name, methods, seeds", [("demo", ("dino", "patchwise"), (0, 1)),
                                                  ("demo-full", SIX_METHODS, (0, 1)),
                                                  ("embedded-compare", SIX_METHODS, (0, 1, 2))])
def test_demo_and_comparison_cells(name, methods, seeds):
    """The demo, its full version and the comparison: digits, the reference rows, the dense probe on shapes."""
    specs = load_matrix(MATRICES[[p.stem for p in MATRICES].index(name)]).specs
    cells = {(s.method, s.dataset, s.seed) for s in specs}
    assert cells == {(m, "digits", s) for m in (*methods, *REFERENCES) for s in seeds}
    assert all(s.evaluations["dense"]["dataset"] == "shapes" for s in specs)
