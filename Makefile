# Two commands set everything up: `make run` starts the collector, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

# checkov gets a virtual environment of its own: its bc-python-hcl2 dependency installs a
# module named hcl2 that would replace python-hcl2 in the main one.
CHECKOV_VENV := $(VENV)-checkov
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==3.3.30"

run: $(VENV)/.installed
	$(BIN)/collector serve

test: $(VENV)/.installed-dev $(CHECKOV_VENV)/bin/checkov
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

schemas: $(VENV)/.installed
	$(BIN)/collector schemas

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache
