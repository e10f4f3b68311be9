# The two README commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install ui ui-check run test lint format bench chaos clean

$(BIN)/tradebot: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -e .
	@touch $@

install: $(BIN)/tradebot

# The dashboard (frontend/ -> tradebot/ui/static): built when node/npm exist; without them the API
# still runs and / says how to build it.
UI_PAGE := tradebot/ui/static/index.html
$(UI_PAGE): $(wildcard frontend/src/*) frontend/package-lock.json frontend/build.mjs
	@if command -v npm >/dev/null 2>&1; then \
		(npm ci --prefix frontend --no-audit --no-fund --loglevel=error && npm run --prefix frontend --silent build) \
		|| echo "dashboard build failed (see above); the API runs without it"; \
	else echo "npm not found: dashboard not built; the API runs without it (install node, then: make ui)"; fi

ui: $(UI_PAGE)

ui-check: ui
	npm run --prefix frontend --silent lint
	npm run --prefix frontend --silent test

run: install ui
	$(BIN)/tradebot up

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff format --check tradebot tests manage_symbols.py
	$(BIN)/ruff check tradebot tests manage_symbols.py
	$(BIN)/mypy

format: install
	$(BIN)/ruff format tradebot tests manage_symbols.py
	$(BIN)/ruff check --fix tradebot tests manage_symbols.py

bench: install
	$(BIN)/tradebot bench

chaos: install
	$(BIN)/python -m pytest -m chaos

# Removes what `make install` and the tools built; never the data of `make run` (.tradebot/).
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	@echo "kept .tradebot/ (your data: account, streams, ticks): '.venv/bin/tradebot reset' empties it, 'rm -rf .tradebot' removes it"
