# One entry point for developers and CI. Every target works on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format bench chaos clean

install: $(STAMP)

# Reinstall only when the project's metadata changed, so repeated runs are instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/metrica-bridge demo

# Two workers: most of the suite waits on brokers, service processes and leases, not on the CPU
# (docs/decisions.md, "The suite runs on two workers").
TEST_WORKERS ?= 2

test: install lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format services tests
	$(BIN)/ruff check --fix services tests

bench: install
	$(BIN)/python -m benchmarks.run

chaos: install
	$(BIN)/python -m pytest -q -m slow tests/chaos --chaos-long

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info services/*.egg-info
