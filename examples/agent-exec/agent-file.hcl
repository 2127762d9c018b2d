# Vault Agent rendering the token into a file: it logs in with AppRole, reads tooken/creds/app,
# writes the token to /etc/tooken-app/token (mode 0600), keeps the lease renewed, and before the
# lease's max TTL reads a new token and rewrites the file. The app runs on its own, started by
# whatever starts it today.
#
# Caveat: nothing tells the app that the file changed. It must read the file again before each
# use (app.js and app.py do with TOOKEN_TOKEN_FILE=/etc/tooken-app/token); an app that reads
# TOOKEN_TOKEN once at start keeps a token that dies when its lease ends. Use agent-exec.hcl for
# such an app.
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=agent-file.hcl

auto_auth {
  method "approle" {
    config = {
      role_id_file_path                   = "/etc/tooken-app/role-id"
      secret_id_file_path                 = "/etc/tooken-app/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}

template {
  contents    = "{{ with secret \"tooken/creds/app\" }}{{ .Data.token }}{{ end }}"
  destination = "/etc/tooken-app/token"
  perms       = "0600"
}
