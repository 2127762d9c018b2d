#!/usr/bin/env bash
# scripts/dev.sh: a local playground (run through `make dev`, which builds bin/ first).
#
#   scripts/dev.sh          start the Tooken emulator and a Vault dev server, mount the plugin at
#                           tooken/, configure it, create role ci-deploy, read creds once, then wait:
#                           Ctrl-C stops everything it started.
#   DEV_DETACH=1 scripts/dev.sh   same, but return and leave both servers running
#   scripts/dev.sh stop     stop what a previous (detached or crashed) run left behind
#
# Everything lives in .dev/ (logs, pid files, the emulator's root secret and state, example
# policy and Vault Agent config). Ports: VAULT_PORT (8200, cluster port VAULT_PORT+1),
# TOOKEN_PORT (8300), TOOKEN_ADMIN_PORT (8301). Secrets never go into argv or logs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEV_DIR=${DEV_DIR:-$ROOT/.dev}
VAULT_PORT=${VAULT_PORT:-8200}
TOOKEN_PORT=${TOOKEN_PORT:-8300}
TOOKEN_ADMIN_PORT=${TOOKEN_ADMIN_PORT:-8301}
VERSION=${VERSION:-v0.1.0-dev}
PLUGIN=vault-plugin-secrets-tooken
PLUGIN_BIN=${TOOKEN_PLUGIN_BIN:-$ROOT/bin/$PLUGIN}
SERVER_BIN=${TOOKEN_SERVER_BIN:-$ROOT/bin/tooken-server}
PLUGIN_DIR=$DEV_DIR/plugins

say() { printf '==> %s\n' "$*"; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

# stop_pid NAME: stop the process recorded in $DEV_DIR/NAME.pid if it is still the one we started.
stop_pid() {
	local name=$1 file=$DEV_DIR/$1.pid pid i
	[[ -f $file ]] || return 0
	pid=$(<"$file")
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			printf 'dev.sh: %s (pid %s) did not stop in 10s; killing it\n' "$name" "$pid" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		printf 'dev.sh: stopped %s (pid %s)\n' "$name" "$pid" >&2
	fi
	rm -f "$file"
}

# Plugin processes are Vault's children; Vault stops them on a clean shutdown. If Vault died hard,
# stop any process still running this dev plugin binary (matched by its exact path).
stop_orphan_plugins() {
	local exe p
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		if [[ $exe == "$PLUGIN_DIR/$PLUGIN" ]]; then
			kill -TERM "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

stop_all() {
	stop_pid agent " agent"
	stop_pid vault " server -dev"
	stop_pid tooken-server "tooken-server"
	stop_orphan_plugins
}

if [[ ${1:-start} == stop ]]; then
	stop_all
	exit 0
fi
[[ ${1:-start} == start ]] || die "usage: scripts/dev.sh [start|stop]"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESC SECONDS CMD...: retry CMD until it succeeds.
wait_for() {
	local desc=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	die "$desc did not come up within ${secs}s"
}

[[ -x $PLUGIN_BIN ]] || die "$PLUGIN_BIN is missing: run 'make build' (or 'make dev')"
[[ -x $SERVER_BIN ]] || die "$SERVER_BIN is missing: run 'make build' (or 'make dev')"

# A previous run may have left things running (DEV_DETACH=1, or a crash): stop them first.
stop_all

for p in "$VAULT_PORT" "$((VAULT_PORT + 1))" "$TOOKEN_PORT" "$TOOKEN_ADMIN_PORT"; do
	port_busy "$p" && die "port $p on 127.0.0.1 is in use: free it or pick others (VAULT_PORT, TOOKEN_PORT, TOOKEN_ADMIN_PORT)"
done

say "getting a Vault binary (scripts/vault.sh; the first build takes ~5 minutes)"
VAULT=$("$ROOT/scripts/vault.sh")
say "$("$VAULT" version)"

# A dev Vault keeps its leases in memory, so the emulator starts afresh too (no orphaned tokens).
rm -rf "$DEV_DIR"
mkdir -p "$PLUGIN_DIR"
chmod 700 "$DEV_DIR"
cp "$PLUGIN_BIN" "$PLUGIN_DIR/$PLUGIN"
SHA256=$(sha256sum "$PLUGIN_DIR/$PLUGIN" | cut -d' ' -f1)

cleanup() {
	trap - INT TERM EXIT
	echo
	say "stopping"
	stop_all
}
if [[ -z ${DEV_DETACH:-} ]]; then
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
fi

say "starting the Tooken emulator on 127.0.0.1:$TOOKEN_PORT (admin 127.0.0.1:$TOOKEN_ADMIN_PORT), log .dev/tooken-server.log"
# setsid: the servers get no Ctrl-C of their own; the trap below stops them in order.
setsid "$SERVER_BIN" --listen "127.0.0.1:$TOOKEN_PORT" --admin-listen "127.0.0.1:$TOOKEN_ADMIN_PORT" \
	--root-secret-file "$DEV_DIR/root-secret" --state "$DEV_DIR/tooken-state.json" \
	>"$DEV_DIR/tooken-server.log" 2>&1 </dev/null &
echo $! >"$DEV_DIR/tooken-server.pid"
wait_for "the Tooken emulator" 20 grep -q 'listening on' "$DEV_DIR/tooken-server.log"
[[ -s $DEV_DIR/root-secret ]] || die "the emulator did not write its root secret to .dev/root-secret"

say "starting vault server -dev on 127.0.0.1:$VAULT_PORT, log .dev/vault.log"
# HOME points into .dev so that the dev server's token helper does not touch ~/.vault-token.
HOME=$DEV_DIR setsid "$VAULT" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$VAULT_PORT" \
	-dev-plugin-dir="$PLUGIN_DIR" -log-level=info >"$DEV_DIR/vault.log" 2>&1 </dev/null &
echo $! >"$DEV_DIR/vault.pid"

export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" VAULT_TOKEN=root
unset VAULT_NAMESPACE VAULT_CACERT VAULT_FORMAT || true
v() { printf '$ vault %s\n' "$*"; "$VAULT" "$@"; }
wait_for "Vault" 30 "$VAULT" status

echo
v plugin register -sha256="$SHA256" -version="$VERSION" secret "$PLUGIN"
v secrets enable -path=tooken -plugin-version="$VERSION" "$PLUGIN"
printf '$ vault write tooken/config url=http://127.0.0.1:%s/v1 token=- < .dev/root-secret\n' "$TOOKEN_PORT"
tr -d '\r\n' <"$DEV_DIR/root-secret" | "$VAULT" write tooken/config "url=http://127.0.0.1:$TOOKEN_PORT/v1" token=-
v write tooken/roles/ci-deploy scopes=deployments:write ttl=1h max_ttl=24h
v read tooken/creds/ci-deploy

# Examples for what comes next: a policy fencing an app to one role, and a Vault Agent config.
cat >"$DEV_DIR/ci-deploy-policy.hcl" <<HCL
# Lets a token read creds for role ci-deploy, and nothing else under tooken/.
path "tooken/creds/ci-deploy" {
  capabilities = ["read"]
}
HCL
v policy write ci-deploy "$DEV_DIR/ci-deploy-policy.hcl" >/dev/null
(umask 077 && "$VAULT" token create -policy=ci-deploy -period=24h -field=token >"$DEV_DIR/agent-token")
cat >"$DEV_DIR/agent.hcl" <<HCL
# vault agent -config=.dev/agent.hcl: renders a ci-deploy token into .dev/ci-deploy.token and
# renews or replaces it before its lease ends.
pid_file = "$DEV_DIR/agent.pid"

vault {
  address = "$VAULT_ADDR"
}

auto_auth {
  method "token_file" {
    config = {
      token_file_path = "$DEV_DIR/agent-token"
    }
  }
}

template {
  contents    = "{{ with secret \"tooken/creds/ci-deploy\" }}{{ .Data.token }}{{ end }}"
  destination = "$DEV_DIR/ci-deploy.token"
  perms       = "0600"
}
HCL

cat <<TXT

==> Ready. Vault $VAULT_ADDR (root token "root"), Tooken emulator http://127.0.0.1:$TOOKEN_PORT/v1
    (admin API http://127.0.0.1:$TOOKEN_ADMIN_PORT/admin/tokens). Logs: .dev/vault.log, .dev/tooken-server.log

In another terminal:

  export PATH="$(dirname "$VAULT"):\$PATH"
  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root
  vault read tooken/creds/ci-deploy            # a fresh Tooken token under a 1h lease (max 24h)
  vault lease revoke <lease_id>                # the token dies upstream at once
  vault list tooken/roles

  # An app fenced to one role (policy "ci-deploy" = .dev/ci-deploy-policy.hcl, already written):
  VAULT_TOKEN=\$(vault token create -policy=ci-deploy -field=token) vault read tooken/creds/ci-deploy

  # Vault Agent renders the token into .dev/ci-deploy.token and keeps it fresh:
  vault agent -config=.dev/agent.hcl

  curl -s http://127.0.0.1:$TOOKEN_ADMIN_PORT/admin/tokens?state=live   # what the emulator holds

TXT

if [[ -n ${DEV_DETACH:-} ]]; then
	say "left running (DEV_DETACH=1); stop with: make dev-stop"
	exit 0
fi

say "Press Ctrl-C to stop Vault and the emulator."
set +e
wait -n "$(<"$DEV_DIR/vault.pid")" "$(<"$DEV_DIR/tooken-server.pid")"
status=$?
say "a server exited unexpectedly (status $status); see .dev/vault.log and .dev/tooken-server.log"
exit 1
