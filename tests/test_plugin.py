"""An external method plugin, pip-installed as its own package, is listed and passes the contract tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "patchbench-byol"


@pytest.mark.slow
def test_external_plugin_is_listed_and_passes_contract_tests(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(PLUGIN)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    patchbench = [sys.executable, "-m", "patchbench.benchmark.cli"]

    listed = subprocess.run([*patchbench, "methods"], env=env, capture_output=True, text=True, check=True).stdout
    assert any(line.startswith("| byol ") for line in listed.splitlines()), listed

    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_contract.py"), "-k", "byol"],
                              env=env, capture_output=True, text=True, cwd=ROOT)
    assert contract.returncode == 0, contract.stdout[-3000:]
    assert "4 passed" in contract.stdout, contract.stdout[-3000:]

    # without the plugin on the path, it is not there
    plain = subprocess.run([*patchbench, "methods"], capture_output=True, text=True, check=True).stdout
    assert "byol" not in plain
