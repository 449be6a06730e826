# Emporium — common tasks. `make` alone lists them.
SHELL := bash
.DEFAULT_GOAL := help

# The services that exist so far, in start order.
SERVICES := user inventory payment order edge

# Development-only bootstrap admin for `make run` (see README: "First admin").
export EMPORIUM_USER__ADMIN_EMAIL ?= admin@emporium.local
export EMPORIUM_USER__ADMIN_PASSWORD ?= admin-password

.PHONY: help run build test fmt lint bench openapi proto-lint proto-breaking smoke demo deny certs observability-check \
        deploy-check compose-up compose-down compose-run chaos screenshots

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

build: ## Build every crate and binary
	cargo build --workspace --bins

run: build ## Run all services on localhost (gRPC 50051.., admin 9091..; SQLite under data/) and the edge (REST on http://localhost:8080, admin 9095); Ctrl-C stops them
	EMPORIUM_DEV_MODE=true EMPORIUM_SERVER__TRUSTED_PROXIES='["127.0.0.1/32", "::1/128"]' tools/run-services $(SERVICES)

demo: ## Run the narrated end-to-end story against the running stack (start it first with `make run`)
	cargo run -q -p emporium-cli -- demo

certs: ## Dev CA + one mTLS certificate per service into certs/ (git-ignored, never in an image); FORCE=1 replaces them
	cargo run -q -p emporium-cli -- dev-certs --out certs $(if $(FORCE),--force)

test: ## Run the whole test suite (PostgreSQL tests need PostgreSQL installed; see README)
	cargo test --workspace

screenshots: ## Run the storefront's browser test and save its screens as docs/img/storefront-*.png (needs chromium and chromium-driver)
	EMPORIUM_REQUIRE_CHROMIUM=1 EMPORIUM_SCREENSHOTS=$(CURDIR)/docs/img cargo test -p emporium-edge --test browser

fmt: ## Format the code
	cargo fmt --all

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

deny: ## cargo-deny: licenses, bans, sources, advisories (offline snapshot; installs cargo-deny)
	tools/deny

bench: ## Measure: every scenario against a bare tonic server (release build, pinned CPUs, medians of 3); rewrites docs/performance.md and docs/img/performance.svg (BENCH_ARGS=--smoke for a quick pass)
	tools/bench

openapi: ## Rewrite docs/api/openapi.json from the contracts (the edge's /openapi.json) and validate it
	EMPORIUM_UPDATE_OPENAPI=1 cargo test -q -p emporium-edge --test api the_served_openapi_document_is_the_committed_one
	tools/check-openapi

proto-lint: ## buf lint the contracts (installs buf from npm on first use)
	tools/buf lint

proto-breaking: ## buf breaking against the previous commit
	tools/buf breaking --against '.git#ref=HEAD~1'

observability-check: ## Validate deploy/ collector, Prometheus and Grafana files; every dashboard metric must exist in the code
	tools/check-observability

smoke: build ## Start the user service and call it with buf curl through reflection
	tools/smoke

deploy-check: ## Check deploy/ offline: kustomize + Kubernetes schemas + policy tests, compose, Dockerfile, CI workflow
	tools/check-deploy

compose-up: ## Start the compose stack (development secrets made if missing), wait until healthy, print what to open
	tools/compose up

compose-down: ## Stop the compose stack; data volumes are kept unless WIPE=1
	tools/compose down $(if $(WIPE),--wipe)

compose-run: ## As CI: local images, the compose stack for real, demo, a killed service, teardown (root; no registry needed)
	tools/compose-run

# The chaos run's binaries carry the test failpoints: built apart (target/chaos)
# so they never replace the ones `make run` and the images use.
CHAOS_TARGET ?= target/chaos
CHAOS_SEED ?= 1
CHAOS_SECONDS ?= 120
chaos: ## Chaos: the four binaries under load while killed, paused and failed, then every invariant checked (CHAOS_SEED, CHAOS_SECONDS, CHAOS_ARGS=--postgres)
	cargo build --target-dir $(CHAOS_TARGET) -p emporium-user -p emporium-inventory -p emporium-payment -p emporium-order -p emporium-testkit --bins
	$(CHAOS_TARGET)/debug/emporium-chaos --bin-dir $(CHAOS_TARGET)/debug --seed $(CHAOS_SEED) --seconds $(CHAOS_SECONDS) $(CHAOS_ARGS)
