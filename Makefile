# The two commands the README starts with. Everything installs into .venv from PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 150
# `make demo EXAMPLE=redis-streams` (or rabbitmq) runs that example (needs Debian's redis-server
# or rabbitmq-server); unset, the demo runs nats-multi (or $DOCKTOR_CONFIG).
EXAMPLE ?=

.PHONY: demo test test-fast lint clean

$(BIN)/docktor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

demo: $(BIN)/docktor
	$(BIN)/docktor demo --duration $(DURATION) $(if $(EXAMPLE),--example $(EXAMPLE))

# Two pytest processes: first the quick tests (no dev server, NATS, Redis or dockerd), so they
# fail fast, then those that start Temporal, NATS, Redis and dockerd.
test: $(BIN)/docktor
	scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q tests/unit tests/workflow tests/replay
	$(BIN)/python -m pytest -q tests/integration tests/faults tests/e2e

# The unit and workflow tests on two cores: no Temporal dev server, NATS, Redis or dockerd (a
# test that asks for one fails here), only the time-skipping test server; without the tests marked slow.
test-fast: $(BIN)/docktor
	DOCKTOR_TEST_FAST=1 $(BIN)/python -m pytest tests/unit tests/workflow -m "not slow" -q -n 2

lint: $(BIN)/docktor
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .docktor .pytest_cache
