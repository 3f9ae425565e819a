"""Every shipped matrix parses and expands into valid, distinct cells."""

from pathlib import Path

import pytest

from patchbench.benchmark.matrix import load_matrix

MATRICES = sorted((Path(__file__).resolve().parents[1] / "benchmark" / "matrices").glob("*.yaml"))


@pytest.mark.parametrize("path", MATRICES, ids=[p.stem for p in MATRICES])
def test_shipped_matrix_expands(path):
    matrix = load_matrix(path)
    specs = matrix.specs
    assert matrix.name == path.stem
    assert len({s.run_id for s in specs}) == len(specs)


def test_demo_matrix_cells():
    specs = load_matrix(MATRICES[[p.stem for p in MATRICES].index("demo")]).specs
    cells = {(s.method, s.dataset, s.seed) for s in specs}
    methods = ("dino", "patchwise", "ibot", "selfpatch", "gtsa", "aps", "random-init", "random-init-patches",
               "raw-pixels")
    assert cells == {(m, d, s) for m in methods for d in ("shapes", "digits") for s in (0, 1)}
