#!/usr/bin/env bash
# scripts/vault.sh: print the path of a Vault v1.14.1 binary on stdout (and nothing else).
#
# Order of preference:
#   1. $VAULT_BIN, when set (must be executable);
#   2. a `vault` on PATH whose `vault version` is 1.14.x;
#   3. a binary built earlier into the cache folder;
#   4. otherwise build v1.14.1 from the Go module proxy into
#      ${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-tooken/vault-1.14.1/vault
#      (VAULT_CACHE_DIR overrides the folder), in a throwaway Go module outside this repository.
#
# Why v1.14.1: it is the last Vault release under MPL-2.0 (later ones are under BUSL): never build
# a later one. No Vault code is committed here; the build copies what it needs into the cache.
# Vault's module root is package main, so `go build github.com/hashicorp/vault` gives the server.
# Each build step below says why it is needed. Progress goes to stderr. The first build takes
# ~5 minutes on 2 cores, downloads ~2.8 GB of modules and needs ~5 GB of Go module and build cache;
# later runs print the cached binary at once.
set -euo pipefail

VAULT_VERSION=1.14.1
# Vault's own go.mod replaces its api and sdk modules with the copies in its repository, but `replace`
# lines of a dependency are ignored, so the versions that shipped with 1.14.1 must be pinned here.
# Without the sdk pin the build picks a newer sdk and fails with
# "undefined: certutil.ParseBasicConstraintExtension".
API_PIN=v1.9.2
SDK_PIN=v0.9.2

log() { printf 'vault.sh: %s\n' "$*" >&2; }
die() { printf 'vault.sh: error: %s\n' "$*" >&2; exit 1; }

# works BIN: true when BIN runs and reports a 1.14.x version.
works() {
	local out
	out=$("$1" version 2>/dev/null) || return 1
	[[ $out == "Vault v1.14."* ]]
}

if [[ -n ${VAULT_BIN:-} ]]; then
	[[ -x $VAULT_BIN ]] || die "VAULT_BIN=$VAULT_BIN is not an executable file"
	works "$VAULT_BIN" || log "warning: VAULT_BIN=$VAULT_BIN does not report Vault v1.14.x; using it anyway"
	printf '%s\n' "$VAULT_BIN"
	exit 0
fi

if onpath=$(command -v vault 2>/dev/null); then
	if works "$onpath"; then
		printf '%s\n' "$onpath"
		exit 0
	fi
	log "ignoring $onpath on PATH: it is not Vault v1.14.x ($("$onpath" version 2>/dev/null | head -n1 || true))"
fi

CACHE_DIR=${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-tooken/vault-$VAULT_VERSION}
BIN=$CACHE_DIR/vault

if [[ -x $BIN ]] && works "$BIN"; then
	printf '%s\n' "$BIN"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "no Vault binary found and no Go toolchain to build one: install Go, or set VAULT_BIN to a Vault v$VAULT_VERSION binary"
mkdir -p "$CACHE_DIR" || die "cannot create cache folder $CACHE_DIR"

# One build at a time (make dev and make test may both ask at once).
exec 9>"$CACHE_DIR/.lock"
if command -v flock >/dev/null 2>&1; then
	if ! flock -n 9; then
		log "another build of Vault is running; waiting for it..."
		flock 9
	fi
	if [[ -x $BIN ]] && works "$BIN"; then
		printf '%s\n' "$BIN"
		exit 0
	fi
fi

log "building Vault v$VAULT_VERSION from the Go module proxy into $CACHE_DIR"
log "(first build: ~5 minutes on 2 cores, ~5 GB of Go module and build cache; later runs reuse it)"

WORK=$CACHE_DIR/build
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

# Build with this machine's Go: never download a toolchain; ignore the caller's module settings.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0

log "step 1/4: fetching github.com/hashicorp/vault/sdk@$SDK_PIN"
sdkdir=$(go mod download -json "github.com/hashicorp/vault/sdk@$SDK_PIN" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') ||
	die "go mod download github.com/hashicorp/vault/sdk@$SDK_PIN failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
[[ -n $sdkdir && -d $sdkdir ]] || die "could not locate sdk@$SDK_PIN in the module cache"

# sdk v0.9.2 panics at Vault's first request on its managed-keys paths ("Pattern managed-keys/...
# defines a CreateOperation but no ExistenceCheck"): that check was tagged from sdk's main branch,
# not from the 1.14 release branch the server was built with. A copy of the sdk with that one block
# removed replaces the module (the module cache itself stays untouched).
log "step 2/4: patching a copy of sdk@$SDK_PIN (drop the CreateOperation/ExistenceCheck panic)"
cp -R "$sdkdir" sdk
chmod -R u+w sdk
awk '
	skip == 0 && /Detect the coding error of attempting to define a CreateOperation without defining an ExistenceCheck/ { skip = 1; depth = 0; next }
	skip == 1 {
		n = gsub(/\{/, "{"); m = gsub(/\}/, "}")
		depth += n - m
		if (depth <= 0 && m > 0) { skip = 2 }
		next
	}
	{ print }
' sdk/framework/backend.go >sdk/framework/backend.go.new
mv sdk/framework/backend.go.new sdk/framework/backend.go
if grep -q 'but no ExistenceCheck' sdk/framework/backend.go; then
	die "patching sdk/framework/backend.go failed: the ExistenceCheck panic is still there"
fi

# godebug x509negativeserial=1: an old dependency of Vault embeds a CA certificate with a negative
# serial number, which Go 1.23 and later reject; without it the binary panics at start-up with
# "failed to parse CA certificate".
cat >go.mod <<GOMOD
module vault-build.local/vault

go 1.21

godebug x509negativeserial=1

require (
	github.com/hashicorp/vault v$VAULT_VERSION
	github.com/hashicorp/vault/api $API_PIN
	github.com/hashicorp/vault/sdk $SDK_PIN
)

replace github.com/hashicorp/vault/sdk => ./sdk
GOMOD

log "step 3/4: resolving Vault v$VAULT_VERSION dependencies (downloads ~2.8 GB the first time)"
go mod download github.com/hashicorp/vault >&2 || die "go mod download github.com/hashicorp/vault@v$VAULT_VERSION failed"

log "step 4/4: compiling (this is the long part)"
start=$(date +%s)
if ! go build -trimpath -o vault.new github.com/hashicorp/vault >&2; then
	die "go build github.com/hashicorp/vault@v$VAULT_VERSION failed (see above); work dir kept in $WORK"
fi
mv vault.new "$BIN"
works "$BIN" || die "built $BIN but '$BIN version' does not report v$VAULT_VERSION"
log "built $("$BIN" version) in $(( $(date +%s) - start ))s: $BIN"
cd /
rm -rf "$WORK"
printf '%s\n' "$BIN"
