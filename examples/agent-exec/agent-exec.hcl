# Vault Agent as the app's process supervisor: it logs in with AppRole, reads tooken/creds/app,
# starts the app with the token in its environment (TOOKEN_TOKEN), keeps the lease renewed, and
# before the lease's max TTL reads a new token and restarts the app with it (SIGTERM, then a new
# process). The app never sees a dead token and never has to re-read anything.
#
#   VAULT_ADDR=https://vault.example.com:8200 vault agent -config=agent-exec.hcl
#
# The AppRole files are what setup.sh writes to /etc/tooken-app; the app lives in /opt/tooken-app.
# For the Python app: command = ["python3", "/opt/tooken-app/app.py"].

auto_auth {
  method "approle" {
    config = {
      role_id_file_path                   = "/etc/tooken-app/role-id"
      secret_id_file_path                 = "/etc/tooken-app/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}

# Give up (and stop the app) if Vault stays unreachable, rather than run on a token that is about
# to die.
template_config {
  exit_on_retry_failure = true
}

env_template "TOOKEN_TOKEN" {
  contents             = "{{ with secret \"tooken/creds/app\" }}{{ .Data.token }}{{ end }}"
  error_on_missing_key = true
}

exec {
  command                   = ["node", "/opt/tooken-app/app.js"]
  restart_on_secret_changes = "always"
  restart_stop_signal       = "SIGTERM"
}
