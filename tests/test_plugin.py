"""External plugins (a method, an evaluation), each pip-installed as its own package, are listed and pass the
contract tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATCHBENCH = [sys.executable, "-m", "patchbench.benchmark.cli"]


def install_example(name: str, tmp_path: Path) -> dict[str, str]:
    """pip-install ``examples/<name>`` into a folder of its own; the environment that puts it on the path."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT / "examples" / name)], check=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def listed_names(command: str, env: dict[str, str] | None = None) -> list[str]:
    """The first column of ``patchbench <command>``'s table."""
    out = subprocess.run([*PATCHBENCH, command], env=env, capture_output=True, text=True, check=True).stdout
    return [line.split("|")[1].strip() for line in out.splitlines()[2:]]


def contract_tests(test_file: str, name: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / test_file), "-k", name], env=env, capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


@pytest.mark.slow
def test_external_plugin_is_listed_and_passes_contract_tests(tmp_path):
    env = install_example("patchbench-byol", tmp_path)
    assert "byol" in listed_names("methods", env)
    assert "4 passed" in contract_tests("test_contract.py", "byol", env)
    assert "byol" not in listed_names("methods")  # without the plugin on the path, it is not there


@pytest.mark.slow
def test_external_evaluation_is_listed_and_passes_contract_tests(tmp_path):
    env = install_example("patchbench-ncm", tmp_path)
    assert listed_names("evaluations", env) == ["dense", "knn", "linear", "ncm"]
    assert "1 passed" in contract_tests("test_evaluation_contract.py", "ncm", env)
    assert "ncm" not in listed_names("evaluations")
