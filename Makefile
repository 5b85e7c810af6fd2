# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "tollgate needs Python 3.11 or newer (set PYTHON=python3.11)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/tollgate demo

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check sidecar adapters events projections tests bench
	$(BIN)/ruff format --check sidecar adapters events projections tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format sidecar adapters events projections tests bench
	$(BIN)/ruff check --fix sidecar adapters events projections tests bench

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
