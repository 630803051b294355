# Every target bootstraps what it needs: a fresh clone only needs python3.11 and make.
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
# The packages byte-compiled once, at install: every process a test starts (a `bridge run`,
# a worker) then reads them compiled, even where PYTHONDONTWRITEBYTECODE is set and
# nothing would be written back (an import of the runtime: 1.0-1.4 s from source, 0.4 s).
export UV_COMPILE_BYTECODE := 1
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= examples/newsletter/bridge.yaml

.PHONY: install install-run run dev browser prometheus valgrind bench-count test test-unit test-integration lint format typecheck bench chaos clean schema

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# Two environments from the one lock file, each with its own stamp:
# - `install-run` (make run, make dev): the runtime dependencies and RUN_EXTRAS, no dev
#   group (~55 MB instead of ~870 MB). The examples need `cron` (cron-digest) and
#   `webhooks` (db-changes); add a transport for your own config, e.g.
#   `make run CONFIG=my.yaml RUN_EXTRAS="cron webhooks kafka"`.
#   bridge dev's embedded Kafka and SQS come with the dev group: `make install` once adds
#   them, and `make dev` keeps them.
# - `install` (test, lint, typecheck, ...): every extra and the dev group.
# `uv sync` removes what its set does not name, so the runtime sync is --inexact: run
# after `make test` it keeps the dev packages instead of deleting them, and its set is
# part of the full one, so neither sync undoes the other and both stamps stay valid.
# The run stamp names its extras: other RUN_EXTRAS sync again.
RUN_EXTRAS ?= cron webhooks
empty :=
RUN_STAMP := $(BIN)/.synced-run$(subst $(empty) $(empty),,$(addprefix -,$(sort $(RUN_EXTRAS))))

$(RUN_STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --inexact --no-dev $(addprefix --extra ,$(RUN_EXTRAS))
	touch $@

$(BIN)/.synced-all: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

install-run: $(RUN_STAMP)

install: $(BIN)/.synced-all

run: install-run
	$(BIN)/bridge run -c $(CONFIG)

dev: install-run
	$(BIN)/bridge dev -c $(CONFIG)

# The UI tests drive Debian's chromium through Playwright (Playwright's own download
# needs the internet); install it from the package registry when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# The dashboard and alert tests run a real Prometheus and promtool, from Debian's
# `prometheus` package; install it when it is missing.
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

# `make bench-count` counts instructions per event under valgrind's callgrind
# (bench/instructions.py); install it when it is missing.
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends valgrind; }

# In parallel (pytest-xdist): TEST_WORKERS processes, tests spread as each worker frees up.
# How it stays correct, how to mark a test that must run alone, and why four: docs/dev.md.
TEST_WORKERS ?= 4

test: install browser prometheus
	$(BIN)/python -m compileall -q bridge connectors bench tests
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# The shipped JSON Schema (schema/bridge.schema.json) and the config reference
# (docs/config.md), both generated from the config models; tests fail when stale.
schema: install
	$(BIN)/python -m bridge.app.reference

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

# Instructions per event on the durable path, against BASE if given (a git revision):
# a figure the machine's load does not move (bench/instructions.py; 10-20 minutes).
bench-count: install valgrind
	$(BIN)/python -m bench.instructions $(if $(BASE),--base $(BASE))

# The end-to-end crash tests that `make test` runs at a smaller size (BRIDGE_CHAOS_FULL).
CHAOS_E2E := tests/e2e/test_sqs_e2e.py::test_sigkill_mid_stream_loses_nothing \
	tests/e2e/test_rabbitmq_e2e.py::test_sigkill_mid_stream_loses_nothing \
	tests/e2e/test_rabbitmq_e2e.py::test_broker_connection_loss_and_restart_lose_nothing \
	tests/e2e/test_kafka_crash.py::test_sigkill_mid_stream_then_restart_loses_nothing \
	tests/e2e/test_webhook_crash.py tests/e2e/test_api_crash.py

chaos: install
	BRIDGE_CHAOS_FULL=1 $(BIN)/pytest -q tests/chaos $(CHAOS_E2E) -p no:cacheprovider

clean:
	rm -rf $(VENV) .tools .bridge .pytest_cache .mypy_cache .ruff_cache
