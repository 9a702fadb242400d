# Every routine task has a name here. `make demo` and `make test` install into $(VENV) when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrsyn-installed
# -n auto: one pytest worker per core (pytest-xdist); session fixtures are built once per worker
PYTEST_ARGS ?= -q -n auto --dist worksteal
# pip's torch wheel choice: this pins nothing, pyproject.toml declares ranges.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install demo test test-fast test-min lint format bench experiments studies notebooks clean-outputs help

help:
	@echo "make demo        the crop ablation on phantom stand-ins (2 arms x 3 seeds) and its report"
	@echo "make test        run the test suite (installs first if needed)"
	@echo "make test-fast   the test suite without the slow (training, subprocess) tests"
	@echo "make test-min    the generation and data tests on the lowest versions pyproject.toml allows"
	@echo "make lint        ruff check and format check"
	@echo "make bench       speed benchmarks (ratios against bounds measured in the same run)"
	@echo "make experiments rerun every study in experiments/ on phantom stand-ins, refresh their results"
	@echo "make studies     write experiments/README.md and the W&B sweep files from conf/experiment/"
	@echo "make notebooks   execute the notebooks on phantom outputs and save them with their outputs"
	@echo "make format      ruff format and autofix"
	@echo "make install     create $(VENV) and install cxrsyn with its dev extra"

# torch's CUDA libraries come from PyPI (several GB): a download cut off mid-way is retried by pip
# (--resume-retries) and then the whole step up to three times; wheels already fetched stay in pip's cache.
RETRY = for try in 1 2 3; do echo '$(1)'; $(1) && break; test $$try -lt 3 || exit 1; \
	echo "make install: the pip step above failed (try $$try of 3; usually a cut download), retrying in 30 s" >&2; sleep 30; done

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(call RETRY,$(PIP_INSTALL) --upgrade pip setuptools wheel)
	@$(call RETRY,$(PIP_INSTALL) --resume-retries 20 -e ".[dev]")
	@touch $(STAMP)

install: $(STAMP)

# A new folder per demo; resume a crashed one with: make demo DEMO_DIR=<its folder> DEMO_ARGS=ckpt_path=last
DEMO_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DIR ?= outputs/demo/crop_ablation_$(DEMO_STAMP)
demo: $(STAMP)
	$(PY) -m cxrsyn.train +experiment=crop_ablation source=phantom hydra.sweep.dir=$(DEMO_DIR) $(DEMO_ARGS)
	$(PY) -m cxrsyn.report $(DEMO_DIR)

# Phantom results of every study, written to experiments/<study>/phantom/ (report.json records the commits,
# overrides and config hashes). crop_ablation runs at the demo's settings, so tests/training/test_demo_drift.py
# can compare seed 0 with it; the other studies at smaller settings (PHANTOM_ARGS).
# every study in conf/experiment/ (the one list of studies)
STUDIES ?= $(basename $(notdir $(wildcard conf/experiment/*.yaml)))
PHANTOM_ARGS ?= datamodule.image_size=64 trainer.max_steps=48 seed=0,1
DEMO_SETTINGS_STUDIES ?= crop_ablation
experiments: $(STAMP)
	@for study in $(STUDIES); do \
	  args="$(PHANTOM_ARGS)"; \
	  case " $(DEMO_SETTINGS_STUDIES) " in *" $$study "*) args="";; esac; \
	  dir=outputs/experiments/$$study; rm -rf $$dir; \
	  $(PY) -m cxrsyn.train +experiment=$$study source=phantom hydra.sweep.dir=$$dir $$args || exit 1; \
	  rm -rf experiments/$$study/phantom; \
	  $(PY) -m cxrsyn.report $$dir --out experiments/$$study/phantom || exit 1; \
	  echo "python -m cxrsyn.train +experiment=$$study source=phantom $$args" > experiments/$$study/phantom/COMMAND; \
	  echo "python -m cxrsyn.report <sweep dir> --out experiments/$$study/phantom" >> experiments/$$study/phantom/COMMAND; \
	done

# The notebooks executed on phantom outputs and saved with their (downsampled) outputs
notebooks: $(STAMP)
	$(PY) notebooks/execute.py

# experiments/README.md (the table of studies) and every wandb_sweep.yaml, from conf/experiment/*.yaml
studies: $(STAMP)
	$(PY) -m cxrsyn.core.studies --write

# pytest exits 5 when it collects no tests: that is a failure here, never a pass.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

# The floors of the generation and data stack, proven: $(MIN_VENV) is a venv that sees $(VENV)'s packages
# (a .pth file) and holds only these packages, at exactly their pyproject.toml floors, which shadow the
# newer ones (tests/min_versions.py). Not part of .ci/run; rerun after changing a floor.
MIN_VENV ?= .venv-min
MIN_PACKAGES ?= google-genai pydicom diffusers kaggle
MIN_TESTS ?= tests/generate tests/data
test-min: $(STAMP)
	$(PY) tests/min_versions.py --venv $(MIN_VENV) $(MIN_PACKAGES)
	$(MIN_VENV)/bin/python tests/min_versions.py --check $(MIN_PACKAGES)
	@PYTHONPATH=$(CURDIR) $(MIN_VENV)/bin/python -m pytest $(PYTEST_ARGS) -p no:cacheprovider $(MIN_TESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check cxrsyn tests benchmarks notebooks/execute.py
	$(PY) -m ruff format --check cxrsyn tests benchmarks notebooks/execute.py

format: $(STAMP)
	$(PY) -m ruff format cxrsyn tests benchmarks
	$(PY) -m ruff check --fix cxrsyn tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/real_data.py
	$(PY) benchmarks/generation.py

clean-outputs:
	rm -rf outputs multirun lightning_logs wandb
