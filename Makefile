# The two commands a new user runs (see README.md):
#   make demo   set everything up, build pzt, train the quickstart recipe (the main job)
#   make test   set everything up, build, run the whole test suite (what CI runs)
# Builds use libtorch from the project's virtualenv (.venv, torch==2.11.0 from PyPI).

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
CARGO ?= cargo

.PHONY: setup build demo test bench doc lint fmt clean

setup:
	@scripts/bootstrap.sh

build: setup
	$(CARGO) build --release

demo: build
	./target/release/pzt --version
	./target/release/pzt train recipes/quickstart.toml

# The tests write their scratch directories under target/test-tmp (not the system's /tmp),
# emptied before the run and removed after a passing one, so repeated runs leave nothing behind.
TEST_TMP := $(CURDIR)/target/test-tmp

test: setup
	@scripts/bootstrap.sh --dev
	@rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) $(CARGO) test --release -- --test-threads=2
	@rm -rf $(TEST_TMP)

# Dev only (never in CI): the benchmarks side by side with PyTorch (benches/README.md). It
# installs transformers and peft into .venv for the PyTorch side.
bench: build
	@scripts/bootstrap.sh --dev
	@$(VENV)/bin/python -c 'import transformers, peft' 2>/dev/null || \
		$(VENV)/bin/python -m pip install --disable-pip-version-check -q "transformers==5.23.0" "peft==0.21.2"
	benches/run.sh

doc: setup
	$(CARGO) doc --no-deps

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
