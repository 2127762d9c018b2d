#!/usr/bin/env bash
# Vault set-up for examples/agent-exec: a Tooken role for the app, a policy that allows reading
# its creds, and an AppRole login for the app's Vault Agent, whose role id and secret id go to
# APP_DIR (mode 0600), where agent-exec.hcl and agent-file.hcl read them.
#
# Run it with VAULT_ADDR and a VAULT_TOKEN that may configure Vault, and the vault CLI on PATH:
#
#   sudo mkdir -p /etc/tooken-app && ./setup.sh
#
# Settings (environment):
#   APP_DIR      where the AppRole files go (default /etc/tooken-app)
#   SCOPES, TTL, MAX_TTL  of the Tooken role (default deployments:read, 1h, 24h): Agent renews
#                every TTL and restarts the app with a new token once every MAX_TTL
#
# The names (the engine at tooken/, role app, policy tooken-app, AppRole role app) are the ones
# app-policy.hcl and the Agent configurations use.
set -euo pipefail

APP_DIR=${APP_DIR:-/etc/tooken-app}
SCOPES=${SCOPES:-deployments:read}
TTL=${TTL:-1h}
MAX_TTL=${MAX_TTL:-24h}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

vault write tooken/roles/app scopes="$SCOPES" ttl="$TTL" max_ttl="$MAX_TTL"
vault policy write tooken-app "$here/app-policy.hcl"

if ! vault auth list -format=json | grep -q '"approle/"'; then
  vault auth enable approle
fi
# The app's Vault token is renewed by Agent for up to 30 days; a new login after that.
vault write auth/approle/role/app token_policies=tooken-app token_ttl=1h token_max_ttl=720h

umask 077
vault read -field=role_id auth/approle/role/app/role-id > "$APP_DIR/role-id"
vault write -f -field=secret_id auth/approle/role/app/secret-id > "$APP_DIR/secret-id"
