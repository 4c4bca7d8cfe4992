# soustitre: build, set up, test and run. `make help` lists the targets.
#
# Every recipe runs from this Makefile's directory, so `make -C path/to/soustitre test` works from
# anywhere; relative paths in variables (DEMO, BENCH_CORPUS...) are relative to it too.
# Needs GNU make and bash. Paths containing spaces are not supported.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

CARGO ?= cargo
CARGO_FLAGS ?= --release --locked
BIN := target/release/soustitre

# `make transcribe-demo` plays this recording in real time; e.g. `make transcribe-demo DEMO=x.wav ARGS='--lang fr'`.
# `make run` serves the demo room; e.g. `make run SERVE_ARGS='--listen 0.0.0.0:8080'`.
SERVE_ARGS ?=
DEMO ?= ../shared/corpus/dev/meetings/en_3spk/meeting.wav
ARGS ?= --realtime --lang en --events out/demo.jsonl --vtt out/demo.vtt
BENCH_CORPUS ?= ../shared/corpus/dev
BENCH_ARGS ?= --json out/bench.json
# Extra arguments for the test runner, e.g. `make test TEST_ARGS=vad` (a filter).
TEST_ARGS ?=

# Stamps: setup.sh runs again when it changes or when the ONNX Runtime library is gone; models
# are fetched again when the binary or the mirror's manifest is newer than the last fetch.
SETUP_STAMP := .local/.setup-stamp
ORT_LIB := .local/lib/libonnxruntime.so
MODELS_STAMP := models/cache/.fetch-stamp
MIRROR := $(or $(SOUSTITRE_MODEL_MIRROR),../shared/models)
MODEL_MANIFEST := $(if $(filter /%,$(MIRROR)),$(MIRROR),$(ROOT)/$(MIRROR))/MANIFEST.toml
# The WHEP server of tests/sfu_whep.rs (janus-whep-server from npm, pinned by package-lock.json),
# installed beside its fixture; npm ci writes the hidden lockfile used as the stamp.
WHEP_FIXTURE := tests/fixtures/whep
WHEP_STAMP := $(WHEP_FIXTURE)/node_modules/.package-lock.json

.PHONY: transcribe-demo bench-fanout bench-sfu image-check
.PHONY: help setup system models build run test lint fmt bench clean distclean whep-server FORCE

help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## /{printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: system build $(ROOT)/$(MODELS_STAMP) $(ROOT)/$(WHEP_STAMP) ## install everything, build, fetch and verify the models

system: $(ROOT)/$(SETUP_STAMP) ## only the system side: Debian packages, ONNX Runtime, Python scorer deps

$(ROOT)/$(SETUP_STAMP): $(ROOT)/scripts/setup.sh $(if $(wildcard $(ROOT)/$(ORT_LIB)),,FORCE)
	cd $(ROOT) && bash scripts/setup.sh
	mkdir -p $(@D) && touch $@

build: $(ROOT)/$(BIN) ## cargo build --release --locked

# Always asks cargo (it knows when nothing changed and then leaves the file's time alone).
$(ROOT)/$(BIN): $(ROOT)/$(SETUP_STAMP) FORCE
	cd $(ROOT) && $(CARGO) build $(CARGO_FLAGS)

$(ROOT)/$(MODELS_STAMP): $(ROOT)/$(BIN) $(wildcard $(MODEL_MANIFEST))
	cd $(ROOT) && $(BIN) models fetch --all
	mkdir -p $(@D) && touch $@

whep-server: $(ROOT)/$(WHEP_STAMP) ## only the WHEP test server (npm ci in tests/fixtures/whep)

$(ROOT)/$(WHEP_STAMP): $(ROOT)/$(WHEP_FIXTURE)/package.json $(ROOT)/$(WHEP_FIXTURE)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm (Node.js >= 18.18) is needed for the WHEP test server: apt-get install nodejs npm" >&2; exit 1; }
	cd $(ROOT)/$(WHEP_FIXTURE) && npm ci --no-audit --no-fund
	touch $@

models: build ## fetch all model bundles again from the mirror, checking every sha256
	cd $(ROOT) && $(BIN) models fetch --all
	mkdir -p $(ROOT)/$(@D) && touch $(ROOT)/$(MODELS_STAMP)

run: setup ## start the caption service with a demo room and print its viewer URL (Ctrl-C stops)
	cd $(ROOT) && $(BIN) serve --demo $(SERVE_ARGS)

transcribe-demo: setup ## caption DEMO in real time on the terminal (ARGS='...' to change the options)
	cd $(ROOT) && mkdir -p out && $(BIN) transcribe $(DEMO) $(ARGS)

# Tests build in release (the inference-heavy ones crawl in debug), so they share target/release
# with `make build` and `make lint`. nextest does not run doc tests: those go first, so that the
# last summary in the log is the one of the real test run.
test: setup ## run the tests (nextest if installed, else cargo test), release profile
	cd $(ROOT) && if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) test $(CARGO_FLAGS) --doc $(TEST_ARGS) && \
	  $(CARGO) nextest run $(CARGO_FLAGS) $(TEST_ARGS); \
	else \
	  $(CARGO) test $(CARGO_FLAGS) $(TEST_ARGS); \
	fi

lint: system ## rustfmt check and clippy with warnings as errors
	cd $(ROOT) && $(CARGO) fmt --all -- --check
	cd $(ROOT) && $(CARGO) clippy $(CARGO_FLAGS) --all-targets -- -D warnings

fmt: ## format the sources in place
	cd $(ROOT) && $(CARGO) fmt --all

bench: setup ## benchmark on the dev corpus, writes out/bench.json
	cd $(ROOT) && mkdir -p out && $(BIN) bench $(BENCH_CORPUS) $(BENCH_ARGS)

bench-fanout: setup ## caption delivery benchmark (100 rooms x 100 clients), writes out/fanout.json
	cd $(ROOT) && mkdir -p out && $(BIN) bench-fanout --json out/fanout.json $(FANOUT_ARGS)

bench-sfu: setup ## end-to-end latency and CPU per track through a real Janus (root), writes out/sfu_janus.json
	cd $(ROOT) && mkdir -p out && $(CARGO) bench --locked --bench sfu_janus -- --json out/sfu_janus.json $(SFU_BENCH_ARGS)

image-check: setup ## build the Dockerfile's runtime stage in a chroot (mmdebstrap, root) and run the image
	command -v mmdebstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap
	cd $(ROOT) && python3 scripts/image_check.py --mirror $(MIRROR)

clean: ## remove build outputs (target/, out/)
	cd $(ROOT) && $(CARGO) clean && rm -rf out

distclean: clean ## also remove .local/ (ONNX Runtime, stamps), models/cache/ and the WHEP test server
	cd $(ROOT) && rm -rf .local models/cache $(WHEP_FIXTURE)/node_modules

FORCE:
