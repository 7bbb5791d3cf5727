# make demo: run the pipeline on a generated sample.  make test: run the test suite.
# make lint: ruff (lint and format) and mypy (the Ray-free packages and runtime/).  make fast: the
# fast tier (Ray-free: a test that starts Ray there fails).
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 is the tested pair (any pair that imports together works).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test fast lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) jobs/demo.py demo-out

# One process: with two (pytest-xdist, the fast tier beside the Ray tests) CI's run was no faster
# on 2 cores, and the load made timing-sensitive fault tests flaky.
test: install
	YOLO_OFFLINE=1 $(PY) -m pytest -q -ra

fast: install
	YOLO_OFFLINE=1 $(PY) -m pytest -q -ra -n 2 -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf demo-out .pytest_cache
