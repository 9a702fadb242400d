# Every routine task has a name here. `make demo` and `make test` install into $(VENV) when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrsyn-installed
PYTEST_ARGS ?= -q
# pip's torch wheel choice: this pins nothing, pyproject.toml declares ranges.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install demo test test-fast lint format bench clean-outputs help

help:
	@echo "make demo        train and test on the embedded phantom data (installs first if needed)"
	@echo "make test        run the test suite (installs first if needed)"
	@echo "make test-fast   the test suite without the slow (training, subprocess) tests"
	@echo "make lint        ruff check and format check"
	@echo "make bench       speed benchmarks (ratios against bounds measured in the same run)"
	@echo "make format      ruff format and autofix"
	@echo "make install     create $(VENV) and install cxrsyn with its dev extra"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m cxrsyn.train

# pytest exits 5 when it collects no tests: that is a failure here, never a pass.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check cxrsyn tests benchmarks
	$(PY) -m ruff format --check cxrsyn tests benchmarks

format: $(STAMP)
	$(PY) -m ruff format cxrsyn tests benchmarks
	$(PY) -m ruff check --fix cxrsyn tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/real_data.py
	$(PY) benchmarks/generation.py

clean-outputs:
	rm -rf outputs multirun lightning_logs wandb
