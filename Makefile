# The README's commands. Every target sets up .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CFG_HASH := $(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-12)
BASE_STAMP := $(VENV)/.base-$(CFG_HASH)
TEST_STAMP := $(VENV)/.test-$(CFG_HASH)
PYTEST_WORKERS ?= 2
QUICK ?=
# The suite, as `make test` and `make test-lowest` run it.
SUITE := -n $(PYTEST_WORKERS) --dist loadfile --durations=30 tests --nbmake notebooks

.PHONY: venv test test-lowest demo bench notebooks clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BASE_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[serving]"
	touch $@

$(TEST_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(BASE_STAMP)

venv: $(TEST_STAMP)

# loadfile: each test file runs on one worker (the timm parity subprocess and the exported
# models are module fixtures, built once). Notebooks run in SMOKE mode through nbmake.
test: $(TEST_STAMP)
	SMOKE=1 $(PY) -m pytest $(SUITE)

# The same suite on the lowest versions setup.cfg allows (tests/constraints-lowest.txt), in a
# virtual environment of its own. Not part of `make test` (it doubles CI's time); run it when a
# lower bound or the constraints change.
LOWEST_VENV := .venv-lowest
LOWEST_PY := $(LOWEST_VENV)/bin/python
LOWEST_STAMP := $(LOWEST_VENV)/.test-$(shell cat setup.cfg pyproject.toml \
	tests/constraints-lowest.txt | sha256sum | cut -c1-12)

$(LOWEST_PY):
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_PY) -m pip install --quiet --upgrade pip

$(LOWEST_STAMP): setup.cfg pyproject.toml tests/constraints-lowest.txt | $(LOWEST_PY)
	$(LOWEST_PY) -m pip install --quiet -c tests/constraints-lowest.txt -e ".[test]"
	touch $@

test-lowest: $(LOWEST_STAMP)
	SMOKE=1 $(LOWEST_PY) -m pytest $(SUITE)

demo: $(BASE_STAMP)
	$(VENV)/bin/lambda-keras demo

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.run $(if $(QUICK),--quick)

notebooks: $(TEST_STAMP)
	SMOKE=0 $(PY) notebooks/run_notebooks.py --inplace notebooks/*.ipynb

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build *.egg-info
