# Two entry points, both self-installing on a fresh machine:
#   make quickstart   every stage on the built-in Geant4 reference, report in runs/
#                     (make quickstart-lensing, make quickstart-weak-lensing: the same for
#                     strong lensing and for weak-lensing convergence maps)
#   make test         the test suite (slow tests: make test-slow)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart quickstart-lensing quickstart-weak-lensing test test-slow lint install

install: $(STAMP)

# torch is pinned to the CPU wheel here (a bare `torch` pulls a multi-GB CUDA build); pyproject.toml
# accepts any torch>=2.4 so GPU machines keep their own build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# `surrogate run` exits 1 for a FAIL verdict: the run completed and its report says why, so the
# quickstart succeeds; a bad input or a crash (exit 2 or more) still fails it.
quickstart: $(STAMP)
	$(BIN)/surrogate run configs/calorimeter/quickstart.yaml || [ $$? -eq 1 ]

# The second domain: strong gravitational lensing (lenstronomy reference, conditional image GAN).
quickstart-lensing: $(STAMP)
	$(BIN)/surrogate run configs/strong_lensing/quickstart.yaml || [ $$? -eq 1 ]

# The third domain: weak-lensing convergence maps conditioned on (Omega_m, sigma_8) (pyccl reference).
quickstart-weak-lensing: $(STAMP)
	$(BIN)/surrogate run configs/weak_lensing/quickstart.yaml || [ $$? -eq 1 ]

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check surrogate tests pipelines benchmarks
	$(BIN)/mypy
