# What the app's Vault Agent may do: read a Tooken token of role app (optionally narrowed: ttl,
# scopes). Agent renews the lease and revokes nothing; the default policy lets it renew.
path "tooken/creds/app" {
  capabilities = ["read"]
}
