#!/usr/bin/env bash
# Vault set-up for examples/github-actions/deploy.yml: a jwt auth method that trusts GitHub's OIDC
# tokens, a role that lets in only one repository's main branch, a policy that allows reading
# tooken/creds/ci-deploy, and the Tooken role whose tokens are named and tagged after the job.
#
# Run it with VAULT_ADDR and a VAULT_TOKEN that may configure Vault, and the vault CLI on PATH:
#
#   REPOSITORY=acme/web ./setup.sh
#
# Settings (environment):
#   REPOSITORY   the repository allowed to log in, OWNER/NAME (required)
#   REF          the git ref allowed (default refs/heads/main: no pull request, no other branch)
#   AUDIENCE     the aud the job's token must carry: the workflow's jwtGithubAudience
#                (default https://vault.example.com)
#   SCOPES, TTL, MAX_TTL  of the Tooken role (default deployments:write, 15m, 1h)
#   JWT_VALIDATION_PUBKEY a PEM public key file to check tokens with instead of GitHub's OIDC
#                discovery document (for a Vault without Internet access, or a test)
#
# The names (the jwt auth method at jwt-github/, its role ci-deploy, the engine at tooken/, its
# role ci-deploy, policy ci-deploy) are the ones deploy.yml and ci-deploy-policy.hcl use. The
# script writes them all, replacing what has the same name: `make dev` and the README create a
# Tooken role ci-deploy (ttl 1h, max_ttl 24h) and a policy ci-deploy; after this script that role's
# tokens live 15m (at most 1h) and are named after the job. It says so when it replaces one.
set -euo pipefail

: "${REPOSITORY:?set REPOSITORY to the repository allowed to log in, OWNER/NAME}"
REF=${REF:-refs/heads/main}
AUDIENCE=${AUDIENCE:-https://vault.example.com}
SCOPES=${SCOPES:-deployments:write}
TTL=${TTL:-15m}
MAX_TTL=${MAX_TTL:-1h}
ISSUER=https://token.actions.githubusercontent.com
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The jwt auth method, trusting tokens GitHub Actions signs.
if ! vault auth list -format=json | grep -q '"jwt-github/"'; then
  vault auth enable -path=jwt-github jwt
fi
if [[ -n ${JWT_VALIDATION_PUBKEY:-} ]]; then
  vault write auth/jwt-github/config jwt_validation_pubkeys=@"$JWT_VALIDATION_PUBKEY" bound_issuer="$ISSUER"
else
  vault write auth/jwt-github/config oidc_discovery_url="$ISSUER" bound_issuer="$ISSUER"
fi

# replacing WHAT: say on stderr that WHAT, which exists, is being replaced.
replacing() { printf 'setup.sh: replacing the existing %s\n' "$1" >&2; }

# Who may read what.
if vault policy read ci-deploy >/dev/null 2>&1; then
  replacing "policy ci-deploy with $here/ci-deploy-policy.hcl (read tooken/creds/ci-deploy only)"
fi
vault policy write ci-deploy "$here/ci-deploy-policy.hcl"

# The jwt role: a job of REPOSITORY on REF, with a token minted for AUDIENCE. user_claim is the
# repository: one Vault entity per repository (entities are never deleted, so not one per run).
# The claims worth tracing land in the entity alias's metadata, where the Tooken role reads them.
# The Vault token lives 15 minutes (at most an hour): the job's Tooken token cannot outlive it.
vault write auth/jwt-github/role/ci-deploy - <<JSON
{
  "role_type": "jwt",
  "user_claim": "repository",
  "bound_audiences": ["$AUDIENCE"],
  "bound_claims_type": "string",
  "bound_claims": {"repository": "$REPOSITORY", "ref": "$REF"},
  "claim_mappings": {
    "repository": "repository",
    "run_id": "run_id",
    "run_attempt": "run_attempt",
    "workflow": "workflow",
    "job_workflow_ref": "job_workflow_ref",
    "ref": "ref",
    "sha": "sha",
    "actor": "actor"
  },
  "token_policies": ["ci-deploy"],
  "token_ttl": "15m",
  "token_max_ttl": "1h"
}
JSON

# The Tooken role: its tokens are named after the repository and the run, and carry the job's
# claims as metadata, in Tooken's dashboard and audit log.
if vault read tooken/roles/ci-deploy >/dev/null 2>&1; then
  replacing "Tooken role tooken/roles/ci-deploy: from now on scopes=$SCOPES ttl=$TTL max_ttl=$MAX_TTL, tokens named after the job (gh-<repository>-run<run id>-...)"
fi
vault write tooken/roles/ci-deploy \
  scopes="$SCOPES" ttl="$TTL" max_ttl="$MAX_TTL" \
  name_template='gh-{{ .AliasMetadata.repository | truncate 60 }}-run{{ .AliasMetadata.run_id }}-{{ random 6 }}' \
  identity_metadata=repository,run_id,run_attempt,workflow,job_workflow_ref,ref,sha,actor
