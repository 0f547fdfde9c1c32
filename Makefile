# Mailmon: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Also the sources compiled by setup.py (monitor/native.py): an edit recompiles them.
NATIVE := $(shell $(PYTHON) monitor/native.py)
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py mypyc.ini $(NATIVE) | cksum | cut -d' ' -f1)

.PHONY: run test lint bench install clean docs

$(STAMP): pyproject.toml setup.py mypyc.ini $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mailmon serve --first-run

test: $(STAMP)
	scripts/install-test-deps.sh
	$(BIN)/ruff check monitor tests bench dashboards
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff check monitor tests bench dashboards
	$(BIN)/mypy

# The generated part of docs/configuration.md (every key of the config schema).
docs: $(STAMP)
	$(BIN)/python -m monitor.config_doc

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache *__mypyc*.so
	find monitor -name '*.so' -delete
