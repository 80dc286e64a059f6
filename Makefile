# One venv, two set-up commands: `make reproduce` (the main job) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export EGEO_DATA_ROOT ?= $(SHARED_DATA)
endif
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install test test-fast reproduce check figures bench bench-theory clean study-quick report-quick theory-results \
	theory-results-heavy

install: $(STAMP)

# Reinstalls only when the project's requirements change (the stamp is newer than pyproject/constraints otherwise).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

check: $(STAMP)
	$(PY) -m theory check --out results/theory/claims.json

reproduce: check theory-results study-quick figures report-quick

# The quick study (empirics/presets/quick.toml): every run trained afresh, then summary.json and the report.
study-quick: $(STAMP)
	$(PY) -m empirics study quick --rerun

# Regenerate the quick report from saved results (after the figures, so it links them).
report-quick: $(STAMP)
	$(PY) -m empirics report quick

# Every JSON the theory figures read (results/theory/*.json, committed so `make figures` works on a clean clone).
theory-results: $(STAMP)
	$(PY) -m theory results --out results/theory

# The slow theory results (plain Monte Carlo tube, randomised rank-r search): minutes each, outside `make reproduce`.
theory-results-heavy: $(STAMP)
	$(PY) -m theory results --out results/theory --only tube_plain rank_r_search

figures: $(STAMP)
	$(PY) paper_figs/make_all.py

bench-theory: $(STAMP)
	$(PY) benchmarks/theory_certification.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Caches and the --tiny smoke results only: results/ holds committed studies and the theory JSON the figures read.
clean:
	rm -rf .pytest_cache .hypothesis results/tiny build $(STAMP)
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
