# `make test` and `make quickstart` bootstrap .venv from nothing; the stamp makes reruns skip the install.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-fast test-gpu test-lmeval lint quickstart fuzz clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: lint
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check flare tests benchmarks

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

# the CUDA tier (tests/gpu, marker gpu): skipped, not failed, where torch sees no GPU
test-gpu: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m gpu

# the standing fuzz check at full size: 10,000 generated hostile inputs (tests/fuzz, seed FUZZ_SEED);
# per-target counts of accepted and refused cases go to FUZZ_REPORT (docs/reliability.md records a run)
FUZZ_CASES ?= 10000
FUZZ_SEED ?= 40
FUZZ_REPORT ?= fuzz-report.json
fuzz: $(STAMP)
	rm -f $(FUZZ_REPORT)
	FLARE_FUZZ_EXAMPLES=$(FUZZ_CASES) FLARE_FUZZ_SEED=$(FUZZ_SEED) FLARE_FUZZ_REPORT=$(FUZZ_REPORT) \
		$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/fuzz

# the lm-evaluation-harness backend's tests (tests/integrations skip them without the lmeval extra)
test-lmeval: $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[lmeval]'
	$(VENV)/bin/python -m pytest -q tests/integrations

quickstart: $(STAMP)
	$(VENV)/bin/python -m flare.study.quickstart

clean:
	rm -rf $(VENV) .pytest_cache
