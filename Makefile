# SmartLinks Autopilot: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPA := .tools/bin/opa
COVERAGE_THRESHOLD ?= 90
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: run test venv tools system-deps db bootstrap serve lint format typecheck policy-check pytest \
        bench-decisions bench-regret bench-redirect bench-autopilot bench-ledger bench-treasury \
        bench-policy-activation bench-policy-impact clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

$(OPA): opa/install.sh
	bash opa/install.sh

.tools/bin/stripe-mock: scripts/install-stripe-mock.sh
	bash scripts/install-stripe-mock.sh

tools: $(OPA) .tools/bin/stripe-mock

## System packages the tests use (PostgreSQL server, Chromium); installed only when missing.
system-deps:
	@bash scripts/system-deps.sh

db: venv
	$(BIN)/smartlinks db upgrade

bootstrap: db
	$(BIN)/smartlinks bootstrap

## One command runs the product: OPA sidecar + server on SQLite at http://127.0.0.1:8000
run: venv tools bootstrap
	$(BIN)/smartlinks serve

## One command runs every test: linters, types, Rego checks, then pytest on SQLite and PostgreSQL.
test: venv tools system-deps lint typecheck policy-check pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(OPA) fmt -w rego

typecheck: venv
	$(BIN)/mypy

policy-check: tools
	$(OPA) fmt --fail -l rego
	$(OPA) check --strict rego
	$(OPA) test rego --coverage --threshold $(COVERAGE_THRESHOLD) --format json > /tmp/smartlinks-opa-coverage.json \
	  || { $(OPA) test -v rego; exit 1; }
	@$(BIN)/python -c "import json; c=json.load(open('/tmp/smartlinks-opa-coverage.json')); print(f'opa test: all passed, coverage {c[\"coverage\"]:.1f}% (threshold $(COVERAGE_THRESHOLD)%)')"
	@# Regal when it can be installed (scripts/install-regal.sh); advisory unless REGAL_STRICT=1.
	@if bash scripts/install-regal.sh; then \
	  .tools/bin/regal lint rego || { [ "$(REGAL_STRICT)" = "1" ] && exit 1 || echo "regal: findings above are advisory (REGAL_STRICT=1 makes them fail)"; }; \
	else echo "regal: not installed, lint skipped"; fi

pytest: venv tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Policy lifecycle: activation/rollback to enforcement against OPA's default polling; impact analysis of 10,000 decisions.
bench-policy-activation: venv tools
	$(BIN)/python bench/policy_activation.py $(BENCH_ARGS)

bench-policy-impact: venv tools
	$(BIN)/python bench/policy_impact.py $(BENCH_ARGS)

bench-decisions: venv tools
	$(BIN)/python bench/decisions.py $(BENCH_ARGS)

bench-regret: venv tools
	$(BIN)/python bench/regret.py $(BENCH_ARGS)

bench-redirect: venv tools
	$(BIN)/python bench/redirect.py $(BENCH_ARGS)

bench-autopilot: venv tools
	$(BIN)/python bench/autopilot.py $(BENCH_ARGS)

bench-ledger: venv tools
	$(BIN)/python bench/ledger.py $(BENCH_ARGS)

bench-treasury: venv tools
	$(BIN)/python bench/treasury.py $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
