# Two commands do all the set-up: `make run` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAKEHOUSE ?= lakehouse
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_SCALE_ARGS ?=
# The Databricks LTS ML runtimes and serverless environment of constraints/*.txt: one for test-runtime,
# all for test-runtimes.
RUNTIME ?= 18
RUNTIMES ?= 15.4 16.4 17.3 18 serverless-5

.PHONY: run test test-fast test-runtime test-runtimes lint bench bench-scale wheel notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed-local: setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[local]"
	touch $@

$(VENV)/.installed-test: setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[local,test]"
	touch $@ $(VENV)/.installed-local

## run: the whole loop on the embedded default, through the two notebooks: ingest the shipped sample
## into a local lakehouse folder (Delta tables), train and register a champion, batch score
run: $(VENV)/.installed-local
	DIABETES_SPARK_HOME=$(LAKEHOUSE) $(BIN)/diabetes-spark demo

## test: the whole test suite, slow end-to-end tests included
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff's lint rules and formatting check, then mypy's type check (settings in pyproject.toml); CI runs it before the tests
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test-fast: skip the tests marked slow
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## test-runtime: one Databricks LTS ML runtime (RUNTIME=15.4, 16.4, 17.3 or 18) or serverless environment
## (RUNTIME=serverless-5): its packages (constraints/<leg>.txt) in .venvs/dbr-RUNTIME or .venvs/serverless-5,
## the wheel installed as a job's %pip install does (fails if a runtime package moves), then the core tests
test-runtime: $(VENV)/.installed-test
	$(BIN)/python tests/runtimes.py $(RUNTIME) $(PYTEST_ARGS)

## test-runtimes: the same for every runtime in RUNTIMES, with a table of timings and results
test-runtimes: $(VENV)/.installed-test
	$(BIN)/python tests/runtimes.py $(RUNTIMES) $(PYTEST_ARGS)

## bench: the performance runs (not part of make test); writes BENCHMARKS.md and benchmarks/out/
bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

## bench-scale: Spark against pandas + scikit-learn from 1e6 to 1e8 rows, each under a memory cap of a cgroup it
## creates and removes (needs root); writes its section of BENCHMARKS.md (not part of make test)
bench-scale: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.scale $(BENCH_SCALE_ARGS)

## wheel: build dist/diabetes_spark-<version>-py3-none-any.whl
wheel: $(VENV)/.installed-test
	$(BIN)/python -m build --wheel --outdir dist .

## notebooks: regenerate the notebooks' parameter tables and widget cells from params.py
notebooks: $(VENV)/.installed-local
	$(BIN)/python tests/make_notebooks.py

clean:
	rm -rf build dist *.egg-info $(LAKEHOUSE) spark-warehouse .pytest_cache
