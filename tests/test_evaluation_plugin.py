"""An external evaluation plugin, pip-installed as its own package, is listed and passes the contract tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "patchbench-ncm"


@pytest.mark.slow
def test_external_evaluation_is_listed_and_passes_contract_tests(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(PLUGIN)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    patchbench = [sys.executable, "-m", "patchbench.benchmark.cli"]

    listed = subprocess.run([*patchbench, "evaluations"], env=env, capture_output=True, text=True, check=True).stdout
    names = [line.split("|")[1].strip() for line in listed.splitlines()[2:]]
    assert names == ["dense", "knn", "linear", "ncm"], listed

    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_evaluation_contract.py"), "-k", "ncm"],
                              env=env, capture_output=True, text=True, cwd=ROOT)
    assert contract.returncode == 0, contract.stdout[-3000:]
    assert "1 passed" in contract.stdout, contract.stdout[-3000:]

    plain = subprocess.run([*patchbench, "evaluations"], capture_output=True, text=True, check=True).stdout
    assert "ncm" not in plain


def test_builtin_evaluations_are_listed(capsys):
    from patchbench.benchmark.cli import main

    assert main(["evaluations"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) >= {"knn", "linear", "dense"}
    assert "| patches " in rows["dense"] and "| masks " in rows["dense"] and "| labels " in rows["linear"]


def test_duplicate_names_and_incomplete_declarations_are_refused():
    from dataclasses import dataclass

    from patchbench.benchmark.evaluations import Evaluation, register_evaluation
    from patchbench.methods import RegistryError

    @dataclass(frozen=True)
    class Settings:
        pass

    class Again(Evaluation):
        settings_class, reads, needs, description = Settings, "global", frozenset(), "a second knn"

        def run(self, inputs):
            raise AssertionError

    with pytest.raises(RegistryError, match="evaluation 'knn' is already registered"):
        register_evaluation("knn")(Again)

    class NoReads(Evaluation):
        settings_class, needs, description = Settings, frozenset(), "reads nothing"

        def run(self, inputs):
            raise AssertionError

    with pytest.raises(TypeError, match="evaluation 'incomplete' .* does not declare 'reads'"):
        register_evaluation("incomplete")(NoReads)
