# What a GitHub Actions job of the allowed repository may do with its Vault token: read a Tooken
# token of role ci-deploy (optionally narrowed: ttl, scopes). Vault's default policy, which the
# job's token also has, lets it revoke itself (auth/token/revoke-self).
path "tooken/creds/ci-deploy" {
  capabilities = ["read"]
}
