# The two README commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench chaos clean

$(BIN)/tradebot: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -e .
	@touch $@

install: $(BIN)/tradebot

run: install
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
