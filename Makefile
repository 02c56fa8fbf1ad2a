# The two commands the README starts with. Everything installs into .venv from PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 150
# `make demo EXAMPLE=redis-streams` runs that example (needs Debian's redis-server); unset,
# the demo runs nats-multi (or $DOCKTOR_CONFIG).
EXAMPLE ?=

.PHONY: demo test lint clean

$(BIN)/docktor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

demo: $(BIN)/docktor
	$(BIN)/docktor demo --duration $(DURATION) $(if $(EXAMPLE),--example $(EXAMPLE))

test: $(BIN)/docktor
	scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q

lint: $(BIN)/docktor
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .docktor .pytest_cache
