# patchbench: `make test` and `make demo` set themselves up (virtualenv + install) on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lint typecheck test test-cpu demo demo-full clean

install: $(STAMP)

# pyproject keeps loose ranges; constraints.txt pins the exact set this project is tested with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# CPU tests, without the ones that need the local Slurm cluster or a GPU.
# The test command (CI runs it through .ci/run): every test but the GPU ones. `slurm` tests need the local
# cluster (benchmark/slurm/local-cluster.sh start; .ci/run starts and stops it) and skip, naming it, when it is down.
test: lint typecheck
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

# ruff, configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy on the package, configured in pyproject.toml; it reads the package through build/lint/patchbench, links to
# the package folders under their import names.
typecheck: $(STAMP)
	mkdir -p build/lint/patchbench
	for d in methods datasets benchmark reports; do ln -sfn ../../../$$d build/lint/patchbench/$$d; done
	$(VENV)/bin/mypy

# The quick CPU suite, without the Slurm tests.
test-cpu: $(STAMP)
	$(PY) -m pytest -q -m "not slurm and not gpu" $(PYTEST_ARGS)

# DINO and Patch-Wise against the reference rows, under 10 minutes on 2 cores; demo-full: all six methods.
demo: $(STAMP)
	$(VENV)/bin/patchbench run benchmark/matrices/demo.yaml --executor local
	$(VENV)/bin/patchbench report results/demo

demo-full: $(STAMP)
	$(VENV)/bin/patchbench run benchmark/matrices/demo-full.yaml --executor local
	$(VENV)/bin/patchbench report results/demo-full

clean:
	rm -rf $(VENV) results *.egg-info
