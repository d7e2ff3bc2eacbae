# Two entry points (see README): `make repro` and `make test`. Both set up what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test lint system-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian's packages, where apt is available: Fashion-MNIST (else prepare downloads the official files),
# PostgreSQL (the team-server test starts one) and Chromium (the MLflow UI test drives it); the tests that
# need a missing one are skipped, saying why.
system-packages:
	@missing=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium chromium-driver"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq $$missing) >/dev/null || \
	  echo "note: could not install$$missing; without dataset-fashion-mnist the prepare stage tries the official download, without postgresql or chromium their tests are skipped"; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq $$missing) >/dev/null || true; \
	fi

# The stages run `python -m ...`: the venv's python must come first on PATH.
repro: system-packages $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: system-packages $(STAMP)
	$(BIN)/ruff check common papers tests benchmarks
	$(BIN)/ruff format --check common papers tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check common papers tests benchmarks
