# Two entry points a new machine needs: `make demo` and `make test`. Both create .venv and install
# eigenloop plus every service under services/ (a new service joins by having a pyproject there).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := $(wildcard services/*/pyproject.toml)
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck contracts bench clean

$(STAMP): pyproject.toml $(SERVICES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,local]" $(foreach s,$(SERVICES),-e $(dir $(s)))
	touch $@

setup: $(STAMP)

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

contracts: setup
	$(BIN)/python scripts/generate_contracts.py

test: lint typecheck
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/toolenv_overhead.py
	$(BIN)/python benchmarks/domains.py
	$(BIN)/python benchmarks/user_sim_scaling.py

clean:
	rm -rf $(VENV) .eigenloop .pytest_cache .mypy_cache .ruff_cache
