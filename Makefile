# vault-plugin-secrets-tooken: build, run and test.
#
#   make dev    start the Tooken emulator and a Vault dev server with the plugin mounted at tooken/
#   make test   gofmt check + go vet + unit tests (-race) + end-to-end tests against a real Vault 1.14.1
#               (one e2e test: make test-e2e GOTESTFLAGS=-run=TestCLIWorkflow)
#   make release VERSION=v1.2.3
#               the plugin for linux and darwin on amd64 and arm64 in dist/, with that version's
#               dist/vault-plugin-secrets-tooken_v1.2.3_SHA256SUMS; other versions' files stay
#   make clean  stops a make dev playground, removes bin/, dist/ (every version), .dev/, coverage*
#
# A Vault binary comes from scripts/vault.sh (VAULT_BIN, else `vault` 1.14.x on PATH, else a one-time
# build of v1.14.1 into ~/.cache/vault-plugin-secrets-tooken/; ~5 minutes the first time).

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

MODULE     := github.com/tooken/vault-plugin-secrets-tooken
VERSION    ?= v0.1.0-dev
PLUGIN     := vault-plugin-secrets-tooken
BIN_DIR    := $(CURDIR)/bin
PLUGIN_BIN := $(BIN_DIR)/$(PLUGIN)
SERVER_BIN := $(BIN_DIR)/tooken-server
LDFLAGS    := -X $(MODULE).Version=$(VERSION)
GO         ?= go
E2E_TIMEOUT ?= 30m
DIST_DIR   := $(CURDIR)/dist
PLATFORMS  ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

.PHONY: all build plugin server vault dev dev-stop release test test-unit test-e2e bench fmt fmt-check vet clean

all: build

build: plugin server

plugin:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PLUGIN_BIN) ./cmd/$(PLUGIN)

server:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(SERVER_BIN) ./cmd/tooken-server

# Prints the path of a Vault v1.14.1 binary, building it once if needed.
vault:
	@scripts/vault.sh

dev: build
	@VERSION='$(VERSION)' scripts/dev.sh

dev-stop:
	@scripts/dev.sh stop

# One static binary per OS/arch, named vault-plugin-secrets-tooken_<version>_<os>_<arch> (the file
# name is the -command of `vault plugin register`, so versions sit side by side in one
# plugin_directory), and the version's checksums, vault-plugin-secrets-tooken_<version>_SHA256SUMS
# (the -sha256 of each; one file per version, as HashiCorp's releases name them). Only this
# version's files are replaced: the binaries and sums of other versions stay in dist/, as an upgrade
# and a roll-back need both. The version is stamped into the binary (Vault shows it as the mount's
# running_plugin_version); scripts/stampedversion reads it back from each binary, and the recipe
# fails unless it is $(VERSION) and the sums verify. -w drops DWARF; the symbol table stays
# (stampedversion needs it).
SUMS := $(PLUGIN)_$(VERSION)_SHA256SUMS

release:
	@[[ '$(VERSION)' =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$$ ]] || \
		{ echo "release: VERSION=$(VERSION) is not a semantic version like v1.2.3"; exit 1; }
	$(GO) build -o '$(BIN_DIR)/stampedversion' ./scripts/stampedversion
	@mkdir -p '$(DIST_DIR)'
	rm -f '$(DIST_DIR)/$(PLUGIN)_$(VERSION)_'*
	@files=(); for p in $(PLATFORMS); do \
		name='$(PLUGIN)_$(VERSION)_'$${p%/*}_$${p#*/}; out='$(DIST_DIR)/'$$name; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -ldflags '-w $(LDFLAGS)' \
			-o "$$out" ./cmd/$(PLUGIN); \
		got=$$('$(BIN_DIR)/stampedversion' "$$out"); \
		[[ $$got == '$(VERSION)' ]] || { echo "release: dist/$$name carries version '$$got', want $(VERSION)"; exit 1; }; \
		echo "release: dist/$$name (version $$got)"; files+=("$$name"); \
	done; \
	cd '$(DIST_DIR)' && if command -v sha256sum >/dev/null; then sum='sha256sum'; else sum='shasum -a 256'; fi && \
		$$sum "$${files[@]}" >'$(SUMS)' && $$sum -c --quiet '$(SUMS)' && \
		echo "release: dist/$(SUMS) verifies:" && cat '$(SUMS)'
	@others=$$(cd '$(DIST_DIR)' && ls | grep -v '^$(PLUGIN)_$(VERSION)_' || true); \
		[[ -z $$others ]] || echo "release: kept in dist/ (other versions):" $$others

test: fmt-check vet test-unit test-e2e

# Every package, with the race detector. The e2e package is compiled and vetted here but its tests
# skip (TOOKEN_E2E=0): they run once, below, with the binaries they need.
test-unit:
	CGO_ENABLED=1 TOOKEN_E2E=0 $(GO) test -race ./...

test-e2e: build
	@vault_bin=$$(scripts/vault.sh) && \
	echo "e2e: VAULT_BIN=$$vault_bin" && \
	VAULT_BIN="$$vault_bin" TOOKEN_PLUGIN_BIN='$(PLUGIN_BIN)' TOOKEN_SERVER_BIN='$(SERVER_BIN)' \
	TOOKEN_PLUGIN_VERSION='$(VERSION)' \
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v $(GOTESTFLAGS) ./e2e/

# The engine's cost in one run, with the machine: in-process ratios against a baseline, and through
# one Vault 1.14.1 the throughput and CPU per operation of Vault, the plugin and the emulator beside
# KV-v2, SSH OTP and a no-op plugin, plus the scale rows (idle CPU and RSS at 100,000 leases,
# revocation storms, 100 mounts). scripts/bench.sh lists the knobs; the full run takes ~12 minutes
# on 2 cores (it prints how long), BENCH_QUICK=1 about a minute; BENCH_VAULT=0 skips Vault.
bench:
	@GO='$(GO)' scripts/bench.sh

fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l .); if [[ -n $$out ]]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Stops a make dev playground (saying what it stopped), then removes every output: bin/ (builds),
# dist/ (the release binaries and sums of every version), .dev/ (the playground's logs and state).
clean:
	@scripts/dev.sh stop || true
	@echo "clean: removing bin/ (builds), dist/ (release binaries and sums, every version), .dev/ (make dev logs and state), coverage*"
	@rm -rf $(BIN_DIR) $(DIST_DIR) .dev coverage*
