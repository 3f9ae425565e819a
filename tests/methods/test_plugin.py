"""External plugins (a method, an evaluation), each pip-installed as its own package, are listed and pass the
contract tests; the teacher-less example of docs/plugins.md trains as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    assert "5 passed" in contract_tests("methods/test_contract.py", "byol", env)
    assert "byol" not in listed_names("methods")  # without the plugin on the path, it is not there


@pytest.mark.slow
def test_external_evaluation_is_listed_and_passes_contract_tests(tmp_path):
    env = install_example("patchbench-ncm", tmp_path)
    assert listed_names("evaluations", env) == ["copydetect", "dense", "knn", "linear", "ncm", "retrieval"]
    assert "1 passed" in contract_tests("benchmark/test_evaluation_contract.py", "ncm", env)
    assert "ncm" not in listed_names("evaluations")


RUN_DOC_EXAMPLE = """
import sys
from pathlib import Path

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.store import RunDir
from patchbench.benchmark.train import pretrain
from patchbench.methods import build_method, MethodChoice, BackboneConfig

exec(sys.argv[1], {"__name__": "patchbench_simclr"})
method = build_method(MethodChoice("simclr"), BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
assert method.teacher is None and method.ema_pairs() == [] and method.view.n_local == 0
spec = make_spec(matrix="doc", method="simclr", dataset="digits", seed=0, image_size=32, backbone={"size": "pico"},
                 budget={"epochs": 1, "batch_size": 128}, objective_kwargs={"hidden_dim": 64, "out_dim": 32},
                 runtime={"device": "cpu", "log_every": 5})
assert spec.optim.weight_decay == 1e-6 and spec.optim.lr == 5e-4
run = RunDir(Path(sys.argv[2]))
run.write_spec(spec)
summary = pretrain(spec, run)
print("SUMMARY", summary["collapsed"], sorted(summary["final"]))
"""


@pytest.mark.slow
def test_the_teacher_less_example_of_the_plugin_docs_trains(tmp_path):
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## A teacher-less example")[1]
    code = section.split("```python\n")[1].split("```")[0]
    done = subprocess.run([sys.executable, "-c", RUN_DOC_EXAMPLE, code, str(tmp_path / "run")], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "SUMMARY not measured ['loss', 'lr', 'wd', 'z_std']" in done.stdout, done.stdout[-2000:]
    assert "collapse not measured: objective 'simclr' returns no 'kl'" in done.stderr


BROKEN_PLUGIN = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "patchbench-broken"
version = "0.1.0"

[project.entry-points."patchbench.methods"]
broken = "patchbench_broken"

[tool.setuptools]
py-modules = ["patchbench_broken"]
""",
    "patchbench_broken.py": 'raise ImportError("needs the package frobnicate, which is not installed")\n',
}

IN_ONE_PROCESS = """
from patchbench.benchmark.cli import main
from patchbench.methods import METHODS, RegistryError
main(["methods"])
main(["methods"])
try:
    METHODS.get("brokn")
except RegistryError as err:
    print("ERROR", err)
"""

@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_named_with_its_error_on_every_read(tmp_path):
    source = tmp_path / "patchbench-broken"
    source.mkdir()
    for name, text in BROKEN_PLUGIN.items():
        (source / name).write_text(text)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source), str(ROOT / "examples" / "patchbench-byol")], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    expected = ("plugin 'broken' (patchbench_broken, entry point group patchbench.methods) failed to import and "
                "registers nothing: ImportError: needs the package frobnicate, which is not installed")
    for _ in range(2):  # two consecutive commands
        done = subprocess.run([*PATCHBENCH, "methods"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert expected in done.stderr
        names = [line.split("|")[1].strip() for line in done.stdout.splitlines()[2:]]
        assert names == ["aps", "byol", "dino", "gtsa", "ibot", "patchwise", "selfpatch"]  # the others still work
    # two reads in one process: the second is not silent; an unknown name's error names the broken plugin too
    done = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(expected) == 2
    assert sum(line.startswith("| byol ") for line in done.stdout.splitlines()) == 2
    error = done.stdout.split("ERROR ")[1]
    assert error.startswith("unknown method 'brokn'.") and expected in error
