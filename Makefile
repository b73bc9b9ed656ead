# Tasks for a development checkout (CONTRIBUTING.md). `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help setup check test-fast test bench

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create the virtualenv with the test and dev extras, install the git hooks
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -c requirements.lock -e '.[test,dev]'
	$(VENV)/bin/pre-commit install

check:  ## ruff on src/ tests/ benchmarks/, mypy on src/
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

test-fast:  ## the unit tier: no database, no processes (seconds)
	$(PY) -m pytest tests/unit -q

test:  ## the whole suite (PostgreSQL variants run when MEDIAMILL_TEST_POSTGRES_URL is set)
	$(PY) -m pytest

bench:  ## the benchmarks; they print their figures (not run by CI)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/media.py
	$(PY) benchmarks/api.py
