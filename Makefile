# HiredisKit — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
SWIFT ?= swift
APT_PACKAGES := libhiredis-dev redis-server redis-sentinel redis-tools pkg-config
# The TLS suite: hiredis 1.x's libhiredis_ssl is built against libssl-dev; openssl makes the certificates.
TLS_APT_PACKAGES := libssl-dev openssl
PID_DIR := $(or $(TMPDIR),/tmp)/hiredis-kit-test-pids
# A crashed test binary can leave redis-server children holding its output pipe, so that
# `swift test` would wait for ever: a deadline turns that into a failure (seconds).
TEST_TIMEOUT ?= 840

# `make chaos`: seconds of fault injection, and the schedule's seed (random when empty).
# CLUSTER=1: against a Redis Cluster (3 primaries + replicas), with primary kills and slot migrations.
DURATION ?= 120
SEED ?=
CLUSTER ?=
# `make test` ends with a short chaos run.
TEST_CHAOS_DURATION ?= 20
# `make fuzz`: seconds each libFuzzer target runs; `make test` runs each for TEST_FUZZ_SECONDS.
FUZZ_SECONDS ?= 120
TEST_FUZZ_SECONDS ?= 30

.PHONY: all deps tls-deps browser-deps build test test-hiredis1 test-tls bench bench-compare demo example chaos fuzz docs clean docker-test kill-strays

all: build

## deps: install hiredis and Redis from the distribution when missing (idempotent)
deps:
	@missing=""; \
	pkg-config --exists hiredis 2>/dev/null || missing="yes"; \
	for tool in redis-server redis-sentinel redis-cli redis-benchmark; do \
	  command -v $$tool >/dev/null 2>&1 || missing="yes"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing $(APT_PACKAGES)"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else \
	  echo "deps: hiredis $$(pkg-config --modversion hiredis), $$(redis-server --version | cut -d' ' -f3)"; \
	fi

## tls-deps: what the TLS suite needs besides deps (idempotent)
tls-deps: deps
	@missing=""; \
	for package in $(TLS_APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

## browser-deps: headless Chromium for the dashboard's browser test (idempotent; the test is skipped without it)
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing chromium"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null) || \
	    echo "browser-deps: chromium could not be installed; the browser test will be skipped"; \
	fi

## build: debug build of every target
build: deps
	$(SWIFT) build

## test: the whole suite against throwaway redis-server processes (REDIS_URL: use that server), then the TLS suites, docs and samples, the example service, a short chaos run and the fuzzers
test: deps browser-deps
	@set -o pipefail; status=0; \
	$(SWIFT) build --build-tests || exit $$?; \
	timeout --kill-after=10 $(TEST_TIMEOUT) $(SWIFT) test --skip-build --disable-xctest || status=$$?; \
	$(MAKE) --no-print-directory kill-strays; \
	[ $$status -eq 0 ] || exit $$status; \
	$(MAKE) --no-print-directory test-tls || exit $$?; \
	$(MAKE) --no-print-directory docs || exit $$?; \
	$(MAKE) --no-print-directory example || exit $$?; \
	$(MAKE) --no-print-directory chaos DURATION=$(TEST_CHAOS_DURATION) || exit $$?; \
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

## test-hiredis1: the same suite linked against hiredis 1.x (sources from PyPI's hiredis sdist)
test-hiredis1: deps
	@status=0; scripts/test-hiredis1.sh || status=$$?; $(MAKE) --no-print-directory kill-strays; exit $$status

## test-tls: the TLS suites (TLS in their names), linked against hiredis 1.x with libhiredis_ssl built here
test-tls: tls-deps
	@status=0; HIREDISKIT_REQUIRE_TLS=1 TEST_FILTER=TLS scripts/test-hiredis1.sh || status=$$?; \
	$(MAKE) --no-print-directory kill-strays; exit $$status

# Kills redis-server processes that a crashed test run left behind.
kill-strays:
	@if [ -d "$(PID_DIR)" ]; then \
	  for f in "$(PID_DIR)"/*; do \
	    [ -f "$$f" ] || continue; pid=$$(sed -n 1p "$$f"); dir=$$(sed -n 2p "$$f"); \
	    if kill -0 "$$pid" 2>/dev/null && grep -q redis /proc/$$pid/cmdline 2>/dev/null; then \
	      kill -CONT "$$pid"; kill -9 "$$pid"; echo "killed stray redis-server $$pid"; \
	    fi; \
	    case "$$dir" in */hiredis-kit-redis-*) rm -rf "$$dir";; esac; rm -f "$$f"; \
	  done; \
	fi

# The allocation counter that hiredis-bench preloads into a child of its own (never into its timing runs).
MALLOC_COUNT_SHIM := .build/libhiredis-malloc-count.so
$(MALLOC_COUNT_SHIM): scripts/malloc-count.c
	@mkdir -p .build
	cc -shared -fPIC -O2 -Wall -Wextra -o $@ $< -ldl

## bench: performance against redis-benchmark in the same run, and allocations per operation (BENCH_ARGS="--quick", "--json out.json")
bench: deps $(MALLOC_COUNT_SHIM)
	$(SWIFT) build -c release --product hiredis-bench
	@status=0; .build/release/hiredis-bench $(BENCH_ARGS) || status=$$?; $(MAKE) --no-print-directory kill-strays; exit $$status

## bench-compare: builds the bench of REF (a git revision, into .build-compare/) and runs it and this tree's alternately, RUNS times each; old/new per shape (REF=HEAD~1, RUNS=3, BENCH_ARGS="--quick --only sequential")
REF ?= HEAD~1
RUNS ?= 3
bench-compare: deps $(MALLOC_COUNT_SHIM)
	$(SWIFT) build -c release --product hiredis-bench
	SWIFT=$(SWIFT) RUNS=$(RUNS) scripts/bench-compare.sh $(REF) $(BENCH_ARGS)

## demo: the library doing its job across processes on a throwaway Redis
demo: deps
	$(SWIFT) build --product hiredis-demo
	@status=0; .build/debug/hiredis-demo || status=$$?; $(MAKE) --no-print-directory kill-strays; exit $$status

## example: the Examples/ Hummingbird service, two instances on a throwaway Redis, driven with curl; checks its claims
example: deps
	SWIFT=$(SWIFT) scripts/example.sh

## chaos: fault-injection soak; verifies nothing lost, no two holders, no hang (DURATION=120, SEED=…, CLUSTER=1)
chaos: deps
	$(SWIFT) build --product hiredis-chaos
	@status=0; timeout --kill-after=10 $$(( $(DURATION) + 180 )) .build/debug/hiredis-chaos --duration $(DURATION) \
	  $(if $(SEED),--seed $(SEED)) $(if $(filter 1 yes true,$(CLUSTER)),--cluster) || status=$$?; \
	$(MAKE) --no-print-directory kill-strays; exit $$status

## fuzz: libFuzzer targets with ASan (URL parsing, command encoding, reply conversion) built into .build-fuzz, each run FUZZ_SECONDS (120); fails on a crash
fuzz: deps
	SWIFT=$(SWIFT) Fuzz/build.sh
	Fuzz/run.sh $(FUZZ_SECONDS)

## docs: DocC for Hiredis, LockKit and QueueKit into .build/docs/<Module>, warnings as errors; fails on an undocumented public symbol
DOC_MODULES := Hiredis LockKit QueueKit
docs:
	@mkdir -p .build/docs
	@set -o pipefail; for module in $(DOC_MODULES); do \
	  $(SWIFT) package --allow-writing-to-directory .build/docs generate-documentation --target $$module \
	    --output-path .build/docs/$$module --disable-indexing --transform-for-static-hosting \
	    --hosting-base-path $$module --warnings-as-errors 2>&1 | grep -v "prohibited flag" || exit 1; \
	done
	python3 scripts/doc-coverage.py $(DOC_MODULES)
	python3 scripts/samples.py --check

## clean: remove build output
clean:
	rm -rf .build .build-* .build_* Examples/.build

## docker-test: the suite in Docker against a Redis container (needs a Docker engine)
docker-test:
	docker compose -f Docker/docker-compose.yml up --build --abort-on-container-exit --exit-code-from tests
