# Notifi: `make run` runs every role in one process; `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench chaos services migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python supervisor.py --roles all

migrate: $(STAMP)
	$(BIN)/python supervisor.py migrate

services:
	bash .ci/services

test: $(STAMP) services
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Issue 11's figures, embedded and split, as one table; `make bench ARGS=--quick` in under 2 min.
bench: $(STAMP) services
	$(BIN)/python -m bench $(ARGS)

# Fault injection on private Postgres/Redis/broker processes; prints a table per scenario.
chaos: $(STAMP) services
	$(BIN)/python -m bench.chaos $(ARGS)

clean:
	rm -rf $(VENV) .venv-arq .venv-celery .pytest_cache
