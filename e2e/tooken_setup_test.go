package e2e

// This engine inside a Vault: register, mount and configure it, write roles, read creds, and
// put creds reads under load.

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// RegisterPlugin registers the plugin in the catalog with its sha256 and version, as users do.
func (v *Vault) RegisterPlugin(t testing.TB) {
	t.Helper()
	v.InstallPlugin(t, Plugin{Name: pluginName, Version: v.Bins.PluginVersion})
}

// EnablePlugin mounts the secrets plugin name at mount, at version ("" = the unversioned one).
func (v *Vault) EnablePlugin(t testing.TB, mount, name, version string) {
	t.Helper()
	args := []string{"secrets", "enable", "-path=" + mount}
	if version != "" {
		args = append(args, "-plugin-version="+version)
	}
	v.MustRun(t, append(args, name)...)
}

// EnableTooken mounts the registered plugin (at its version) at mount.
func (v *Vault) EnableTooken(t testing.TB, mount string) {
	t.Helper()
	v.EnablePlugin(t, mount, pluginName, v.Bins.PluginVersion)
}

// ConfigureTooken writes mount/config with the emulator's URL and root secret (sent on stdin:
// never in argv).
func (v *Vault) ConfigureTooken(t testing.TB, mount string, e *Emulator) {
	t.Helper()
	out, errOut, err := v.Run(t, Run{Stdin: e.RootSecret}, "write", mount+"/config", "url="+e.URL, "token=-")
	if err != nil {
		t.Fatalf("%s: vault write %s/config: %v\n%s%s", v.Name, mount, err, out, errOut)
	}
}

// setupTooken registers, mounts (at tooken/) and configures the plugin against e.
func setupTooken(t testing.TB, v *Vault, e *Emulator) {
	t.Helper()
	v.RegisterPlugin(t)
	v.EnableTooken(t, "tooken")
	v.ConfigureTooken(t, "tooken", e)
}

// startTooken starts an emulator and a dev Vault with the plugin registered, mounted at tooken/
// and configured against it: the start of most tests.
func startTooken(t testing.TB, opts VaultOptions) (*Emulator, *Vault) {
	t.Helper()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, opts)
	setupTooken(t, v, e)
	return e, v
}

// WriteRole writes mount/roles/name with key=value arguments.
func (v *Vault) WriteRole(t testing.TB, mount, name string, kv ...string) {
	t.Helper()
	v.MustRun(t, append([]string{"write", mount + "/roles/" + name}, kv...)...)
}

// Creds is the answer of `vault read -format=json tooken/creds/<role>`.
type Creds struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	Data          struct {
		Token     string   `json:"token"`
		TokenID   string   `json:"token_id"`
		Name      string   `json:"name"`
		Scopes    []string `json:"scopes"`
		ExpiresAt string   `json:"expires_at"`
	} `json:"data"`
}

// ExpiresAt parses Data.ExpiresAt.
func (c Creds) ExpiresAt(t testing.TB) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, c.Data.ExpiresAt)
	if err != nil {
		t.Fatalf("creds expires_at %q: %v", c.Data.ExpiresAt, err)
	}
	return ts
}

// ReadCreds runs `vault read -format=json mount/creds/role` with token ("" = root).
func (v *Vault) ReadCreds(t testing.TB, mount, role, token string) Creds {
	t.Helper()
	out, errOut, err := v.Run(t, Run{Token: token}, "read", "-format=json", mount+"/creds/"+role)
	if err != nil {
		t.Fatalf("%s: vault read %s/creds/%s: %v\n%s", v.Name, mount, role, err, errOut)
	}
	var c Creds
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("decoding creds: %v", err)
	}
	if c.Data.Token == "" || c.Data.TokenID == "" || c.LeaseID == "" {
		t.Fatalf("creds answer lacks token, token_id or lease_id (fields: token_id=%q name=%q lease_id=%q)",
			c.Data.TokenID, c.Data.Name, c.LeaseID)
	}
	return c
}

// ReadWorkingCreds reads creds (token "" = root) and fails the test, saying what, unless the
// issued secret works upstream (GET /v1/tokens/self answers 200).
func (v *Vault) ReadWorkingCreds(t testing.TB, e *Emulator, mount, role, token, what string) Creds {
	t.Helper()
	c := v.ReadCreds(t, mount, role, token)
	if got := e.SelfStatus(t, c.Data.Token); got != http.StatusOK {
		t.Fatalf("%s: status %d", what, got)
	}
	return c
}

// mountIDOf returns the vault_mount_uuid metadata (the mount's backend UUID) the engine put on a
// token it issued: tidy and the orphan tests find the mount's tokens by it.
func mountIDOf(t testing.TB, e *Emulator, c Creds) string {
	t.Helper()
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.Metadata["vault_mount_uuid"] == "" {
		t.Fatalf("token %s has no vault_mount_uuid metadata: %+v", c.Data.TokenID, tok.Metadata)
	}
	return tok.Metadata["vault_mount_uuid"]
}

// CredsLoad starts n goroutines that read path (e.g. "tooken/creds/ci") back to back with the
// root token, each read bounded by timeout, and hands every answer to each (called from those
// goroutines at once). stop ends the loops and waits for the reads in flight.
func (v *Vault) CredsLoad(path string, n int, timeout time.Duration, each func(*api.Secret, error)) (stop func()) {
	l := startLoad(n, func(int) bool {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		s, err := v.Client.Logical().ReadWithContext(ctx, path)
		cancel()
		each(s, err)
		return true
	})
	return l.Stop
}
