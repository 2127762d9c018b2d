#!/usr/bin/env bash
# scripts/dev.sh: a local playground (run through `make dev`, which builds bin/ first).
#
#   scripts/dev.sh          start the Tooken emulator and a Vault dev server, mount the plugin at
#                           tooken/, configure it, create role ci-deploy, read creds once, make token
#                           partner1 at the emulator (for the static-role recipe it prints), then
#                           wait: Ctrl-C stops everything it started and exits 0.
#   DEV_DETACH=1 scripts/dev.sh   same, but return and leave both servers running
#   scripts/dev.sh stop     stop a running playground: a foreground run elsewhere is asked to stop
#                           (it stops its servers and exits 0), then whatever a detached or crashed
#                           run left behind is stopped (it says so when nothing was running)
#
# A second start while one runs takes over: the first is asked to stop (quietly, exit 0) and the
# second starts afresh. A server that dies on its own ends the run with exit 1, naming the server
# and the path of its log. Everything lives in .dev/ (logs, pid files, the emulator's root secret and
# state, example policy and Vault Agent config). Ports: VAULT_PORT (8200, cluster port
# VAULT_PORT+1), TOOKEN_PORT (8300), TOOKEN_ADMIN_PORT (8301). Secrets never go into argv or logs.
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
# rel PATH: PATH as the user sees it from the repository root.
rel() { printf '%s' "${1#"$ROOT"/}"; }

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	[[ ! -r /proc/$1/stat ]] || [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# runs PID PATTERN: PID is alive and its command line contains PATTERN (a pid file may be stale,
# and its number reused by another process).
runs() {
	[[ $1 =~ ^[0-9]+$ ]] && alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stopped counts what stop_pid and stop_owner stopped (make dev-stop says when it was nothing).
stopped=0

# stop_pid NAME: stop the process recorded in $DEV_DIR/NAME.pid if it is still the one we started.
stop_pid() {
	local name=$1 file=$DEV_DIR/$1.pid pid i
	[[ -f $file ]] || return 0
	pid=$(<"$file")
	if runs "$pid" "$2"; then
		stopped=$((stopped + 1))
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
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

# stop_owner: ask a run of this script that is waiting in the foreground (its pid in dev.pid) to
# stop, and wait for it (30 s at most). It is asked through its waiter (waiter.pid), whose end it
# is watching, or directly while it is still starting; either way it stops its own servers and
# exits 0, so its terminal shows no error.
stop_owner() {
	local owner waiter i
	[[ -f $DEV_DIR/dev.pid ]] || return 0
	owner=$(<"$DEV_DIR/dev.pid")
	if [[ $owner == "$$" ]] || ! runs "$owner" dev.sh; then
		return 0
	fi
	say "another make dev is running (pid $owner): asking it to stop"
	stopped=$((stopped + 1))
	waiter=$(cat "$DEV_DIR/waiter.pid" 2>/dev/null || true)
	if runs "$waiter" dev.sh; then
		kill -TERM "$waiter" 2>/dev/null || true
	else
		kill -TERM "$owner" 2>/dev/null || true
	fi
	for ((i = 0; i < 300; i++)); do
		alive "$owner" || return 0
		sleep 0.1
	done
	printf 'dev.sh: pid %s did not stop in 30s; stopping its servers directly\n' "$owner" >&2
}

if [[ ${1:-start} == stop ]]; then
	stop_owner
	stop_all
	((stopped > 0)) || say "nothing to stop: no playground is running (pid files in $(rel "$DEV_DIR"))"
	exit 0
fi
[[ ${1:-start} == start ]] || die "usage: scripts/dev.sh [start|stop]"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# show_log NAME: the path of a server's log and its last lines, on stderr.
show_log() {
	local log=$DEV_DIR/$1.log
	printf 'dev.sh: %s log: %s\n' "$1" "$(rel "$log")" >&2
	[[ -s $log ]] && tail -n 15 "$log" | sed 's/^/    /' >&2
	return 0
}

# wait_for NAME SECONDS CMD...: retry CMD until it succeeds; fail, showing server NAME's log, when
# the server dies or SECONDS pass.
wait_for() {
	local name=$1 secs=$2 pid i
	shift 2
	pid=$(<"$DEV_DIR/$name.pid")
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		if ! alive "$pid"; then
			show_log "$name"
			die "$name exited while starting"
		fi
		sleep 0.1
	done
	show_log "$name"
	die "$name did not come up within ${secs}s"
}

[[ -x $PLUGIN_BIN ]] || die "$PLUGIN_BIN is missing: run 'make build' (or 'make dev')"
[[ -x $SERVER_BIN ]] || die "$SERVER_BIN is missing: run 'make build' (or 'make dev')"

# A run in the foreground elsewhere is asked to stop; what a detached or crashed run left is
# stopped. Only then is .dev/ cleared (below), so the other run's pid files stay its own until then.
stop_owner
stop_all

# Each port with what it is for: the dev cluster port is not set on its own.
for p in "$VAULT_PORT:Vault's API port, VAULT_PORT" "$((VAULT_PORT + 1)):Vault's cluster port, VAULT_PORT+1" \
	"$TOOKEN_PORT:the emulator's API port, TOOKEN_PORT" "$TOOKEN_ADMIN_PORT:the emulator's admin port, TOOKEN_ADMIN_PORT"; do
	port_busy "${p%%:*}" && die "port ${p%%:*} on 127.0.0.1 (${p#*:}) is in use: free it or pick others (VAULT_PORT, whose cluster port is VAULT_PORT+1, TOOKEN_PORT, TOOKEN_ADMIN_PORT)"
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
	say "stopping Vault and the emulator"
	stop_all
	rm -f "$DEV_DIR/dev.pid" "$DEV_DIR/waiter.pid"
}
if [[ -z ${DEV_DETACH:-} ]]; then
	echo $$ >"$DEV_DIR/dev.pid"
	trap cleanup EXIT
	# Interrupted while starting: stop and fail. Asked to stop (make dev-stop, a new make dev): stop.
	trap 'echo; exit 130' INT
	trap 'exit 0' TERM
fi

say "starting the Tooken emulator on 127.0.0.1:$TOOKEN_PORT (admin 127.0.0.1:$TOOKEN_ADMIN_PORT), log $(rel "$DEV_DIR/tooken-server.log")"
# setsid: the servers get no Ctrl-C of their own; the trap below stops them in order.
setsid "$SERVER_BIN" --listen "127.0.0.1:$TOOKEN_PORT" --admin-listen "127.0.0.1:$TOOKEN_ADMIN_PORT" \
	--root-secret-file "$DEV_DIR/root-secret" --state "$DEV_DIR/tooken-state.json" \
	>"$DEV_DIR/tooken-server.log" 2>&1 </dev/null &
echo $! >"$DEV_DIR/tooken-server.pid"
disown $! # no job notices from bash ("Killed ..."): wait_until_done reports a dead server itself
wait_for tooken-server 20 grep -q 'listening on' "$DEV_DIR/tooken-server.log"
[[ -s $DEV_DIR/root-secret ]] || die "the emulator did not write its root secret to .dev/root-secret"

say "starting vault server -dev on 127.0.0.1:$VAULT_PORT, log $(rel "$DEV_DIR/vault.log")"
# HOME points into .dev so that the dev server's token helper does not touch ~/.vault-token.
HOME=$DEV_DIR setsid "$VAULT" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$VAULT_PORT" \
	-dev-plugin-dir="$PLUGIN_DIR" -log-level=info >"$DEV_DIR/vault.log" 2>&1 </dev/null &
echo $! >"$DEV_DIR/vault.pid"
disown $!

export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" VAULT_TOKEN=root
unset VAULT_NAMESPACE VAULT_CACERT VAULT_FORMAT || true
v() { printf '$ vault %s\n' "$*"; "$VAULT" "$@"; }
wait_for vault 30 "$VAULT" status

echo
v plugin register -sha256="$SHA256" -version="$VERSION" secret "$PLUGIN"
v secrets enable -path=tooken -plugin-version="$VERSION" "$PLUGIN"
printf '$ vault write tooken/config url=http://127.0.0.1:%s/v1 token=- < .dev/root-secret\n' "$TOOKEN_PORT"
tr -d '\r\n' <"$DEV_DIR/root-secret" | "$VAULT" write tooken/config "url=http://127.0.0.1:$TOOKEN_PORT/v1" token=-
v write tooken/roles/ci-deploy scopes=deployments:write ttl=1h max_ttl=24h
v read tooken/creds/ci-deploy

# A token that exists before Vault manages it, for the static-role recipe below: made at the
# emulator's admin API (as Tooken's operator would in its console), so that the recipe works
# whatever became of the root secret (rotate-root). Only its id is kept.
ADMIN_URL="http://127.0.0.1:$TOOKEN_ADMIN_PORT"
PARTNER_ID=$(curl -sf -X POST "$ADMIN_URL/admin/tokens" -d '{"name":"partner1","scopes":["deployments:write"]}' |
	grep -o '"id":"tkn_[0-9a-f]*"' | cut -d'"' -f4) || PARTNER_ID=
[[ -n $PARTNER_ID ]] || die "the emulator's admin API did not make token partner1 (curl is needed)"

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
    (admin API http://127.0.0.1:$TOOKEN_ADMIN_PORT/admin/tokens). Logs: $(rel "$DEV_DIR/vault.log"), $(rel "$DEV_DIR/tooken-server.log")

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

  # A static role: Vault takes custody of token partner1 ($PARTNER_ID, made at the emulator),
  # rotates it at once and then daily, and serves its current secret:
  vault write tooken/static-roles/partner1 token_id=$PARTNER_ID rotation_period=24h
  vault read tooken/static-creds/partner1
  vault write -f tooken/rotate-role/partner1   # rotate now; the previous secret works for 5m
  # Another token to import (the answer has its id and secret):
  curl -s -X POST '$ADMIN_URL/admin/tokens' -d '{"name":"partner2","scopes":["deployments:write"]}'

  curl -s '$ADMIN_URL/admin/tokens?state=live'   # what the emulator holds

TXT

if [[ -n ${DEV_DETACH:-} ]]; then
	say "left running (DEV_DETACH=1); stop with: make dev-stop"
	exit 0
fi

# wait_until_done: wait until Ctrl-C, a request to stop (make dev-stop, or make dev started again
# elsewhere: they signal the waiter) or the end of a server, then exit (the EXIT trap stops the
# servers). With a terminal the waiter runs as a job of its own (set -m) that holds the terminal, so
# Ctrl-C reaches only the waiter, not make nor this script: make then sees this script end with 0
# and reports no error. (A TERM sent to this script itself takes effect once the waiter ends.)
wait_until_done() {
	local vault_pid tooken_pid st name pid
	vault_pid=$(<"$DEV_DIR/vault.pid")
	tooken_pid=$(<"$DEV_DIR/tooken-server.pid")
	if [[ -t 0 ]]; then set -m; fi
	set +e
	# The waiter must be a plain foreground command, its stderr the terminal: job control gives
	# it the terminal only then.
	(
		trap 'exit 130' INT
		trap 'exit 143' TERM
		echo "$BASHPID" >"$DEV_DIR/waiter.pid"
		# Said only now that the waiter holds the terminal: from here Ctrl-C ends the run with 0.
		say "Press Ctrl-C to stop Vault and the emulator."
		while alive "$vault_pid" && alive "$tooken_pid"; do sleep 0.5; done
		exit 1
	)
	st=$?
	set +m
	set -e
	rm -f "$DEV_DIR/waiter.pid"
	case $st in
	130) echo && exit 0 ;;
	143) say "asked to stop (by make dev-stop, or by make dev started again)" && exit 0 ;;
	esac
	for name in vault tooken-server; do
		pid=$(<"$DEV_DIR/$name.pid")
		if ! alive "$pid"; then
			printf 'dev.sh: %s (pid %s) exited unexpectedly\n' "$name" "$pid" >&2
			show_log "$name"
		fi
	done
	exit 1
}

wait_until_done
