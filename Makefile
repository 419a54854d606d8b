# The one gate (STYLE.md §7): developers and CI run `make check` and `make test`.
# CI runs `.ci/run`, which is `make test` with CI=true.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k ledger -x'`.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv system-deps run test check fmt clean

help:
	@echo "make venv         create $(VENV) and install emeterai[dev] (editable)"
	@echo "make system-deps  install poppler-utils, qpdf, zbar-tools, libnss3-tools if missing"
	@echo "make run          emeterai init, then a worker and the server on http://127.0.0.1:8000"
	@echo "make check        ruff format --check, ruff check, mypy"
	@echo "make fmt          ruff format, ruff check --fix"
	@echo "make test         check + pytest against SQLite and PostgreSQL"
	@echo "make clean        remove $(VENV) and caches (keeps var/)"

venv: $(VENV)/.installed

# Rebuilt whenever pyproject.toml changes (new dependency, new entry point).
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "emeterai needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) -V 2>&1)." \
		       "Use e.g. 'make PYTHON=python3.12 ...'." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

system-deps:
	@scripts/ensure-system-deps.sh

# Payments run against the channel sandbox when developing locally.
run: export EMETERAI_PAYMENTS_SANDBOX := 1
# One background worker runs bulk jobs (and hourly retention) beside the server; it stops
# with it.
run: venv
	$(BIN)/emeterai init
	@trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/emeterai worker --processes 1 & worker=$$!; \
	$(BIN)/emeterai serve --host 127.0.0.1 --port 8000

test: venv system-deps
	scripts/run-tests.sh $(PYTEST_ARGS)

check: venv
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
	find src tests -type d \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
