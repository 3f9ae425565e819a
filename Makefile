# patchbench: `make test` and `make demo` set themselves up (virtualenv + install) on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-all demo clean

install: $(STAMP)

# pyproject keeps loose ranges; constraints.txt pins the exact set this project is tested with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# CPU tests, without the ones that need the local Slurm cluster or a GPU.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slurm and not gpu" $(PYTEST_ARGS)

# Everything but GPU tests; `slurm` tests need the local cluster (benchmark/slurm/local-cluster.sh start)
# and skip, naming it, when it is down. .ci/run starts and stops the cluster around this target.
test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/patchbench run benchmark/matrices/demo.yaml --executor local
	$(VENV)/bin/patchbench report results/demo

clean:
	rm -rf $(VENV) results *.egg-info
