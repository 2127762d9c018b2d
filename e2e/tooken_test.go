package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The engine's workflows in a real Vault 1.14.1 against the emulator binary, through the vault
// CLI: register, mount, configure, roles, creds, renew, revoke, expiry, policies, audit, reload
// and restart, disable.

const appPolicy = `path "tooken/creds/ci-deploy" {
  capabilities = ["read"]
}
`

// ciDeployToken writes the ci-deploy policy (appPolicy) and returns a new token holding only it.
func ciDeployToken(t *testing.T, v *Vault) string {
	t.Helper()
	if out, errOut, err := v.Run(t, Run{Stdin: appPolicy}, "policy", "write", "ci-deploy", "-"); err != nil {
		t.Fatalf("policy write: %v %s %s", err, out, errOut)
	}
	return strings.TrimSpace(v.MustRun(t, "token", "create", "-policy=ci-deploy", "-ttl=1h", "-field=token"))
}

// leaseRenew runs `vault lease renew -increment=...` and returns the granted duration.
func leaseRenew(t *testing.T, v *Vault, leaseID, increment string) (time.Duration, error) {
	t.Helper()
	out, errOut, err := v.Run(t, Run{}, "lease", "renew", "-format=json", "-increment="+increment, leaseID)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(errOut))
	}
	var s struct {
		LeaseDuration int `json:"lease_duration"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("decoding lease renew answer: %v", err)
	}
	return time.Duration(s.LeaseDuration) * time.Second, nil
}

// tokenState returns the emulator's state of a token ("" when unknown).
func tokenState(t *testing.T, e *Emulator, id string) string {
	t.Helper()
	tok, ok := e.Token(t, id)
	if !ok {
		return ""
	}
	return tok.State
}

// waitRevoked waits until the emulator shows the token dead and its secret is refused with 401.
func waitRevoked(t *testing.T, e *Emulator, c Creds, within time.Duration) {
	t.Helper()
	eventually(t, within, "token "+c.Data.TokenID+" revoked upstream", func() (bool, string) {
		st := tokenState(t, e, c.Data.TokenID)
		return st == "revoked" || st == "expired", "state " + st
	})
	if got := e.SelfStatus(t, c.Data.Token); got != 401 {
		t.Fatalf("GET /v1/tokens/self with the revoked secret: status %d, want 401", got)
	}
}

func about(got, want, slack time.Duration) bool {
	d := got - want
	return d >= -slack && d <= slack
}

func readData(t *testing.T, v *Vault, path string) map[string]any {
	t.Helper()
	var s struct {
		Data map[string]any `json:"data"`
	}
	v.MustRunJSON(t, &s, "read", "-format=json", path)
	return s.Data
}

// TestCLIWorkflow: register (sha256 + version), enable, config, role, creds, renew, revoke, all
// through the vault CLI.
func TestCLIWorkflow(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, VaultOptions{})
	secrets := []string{e.RootSecret}

	v.RegisterPlugin(t)
	var info map[string]any
	v.MustRunJSON(t, &info, "plugin", "info", "-format=json", "-version="+v.Bins.PluginVersion, "secret", pluginName)
	if info["version"] != v.Bins.PluginVersion || info["sha256"] != fileSHA256(t, v.Bins.Plugin) {
		t.Errorf("plugin info = %v, want version %s and the binary's sha256", info, v.Bins.PluginVersion)
	}
	v.EnableTooken(t, "tooken")
	var mounts map[string]map[string]any
	v.MustRunJSON(t, &mounts, "secrets", "list", "-detailed", "-format=json")
	if m := mounts["tooken/"]; m == nil || m["type"] != pluginName || m["running_plugin_version"] != v.Bins.PluginVersion {
		t.Errorf("secrets list: tooken/ = %v, want type %s running version %s", m, pluginName, v.Bins.PluginVersion)
	}

	v.ConfigureTooken(t, "tooken", e)
	raw := v.MustRun(t, "read", "-format=json", "tooken/config")
	if strings.Contains(raw, e.RootSecret) {
		t.Fatal("vault read tooken/config shows the root secret")
	}
	cfg := readData(t, v, "tooken/config")
	if cfg["url"] != e.URL {
		t.Errorf("config url = %v, want %s", cfg["url"], e.URL)
	}
	if _, ok := cfg["token"]; ok {
		t.Error("config read has a token field")
	}
	if cfg["token_id"] != e.RootTokenID(t) {
		t.Errorf("config token_id = %v, want the root's %s", cfg["token_id"], e.RootTokenID(t))
	}

	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=2h", "description=CI deploys")
	role := readData(t, v, "tooken/roles/ci-deploy")
	if fmt.Sprint(role["scopes"]) != "[deployments:write]" {
		t.Errorf("role scopes = %v", role["scopes"])
	}
	if list := v.MustRun(t, "list", "tooken/roles"); !strings.Contains(list, "ci-deploy") {
		t.Errorf("vault list tooken/roles = %q", list)
	}

	issued := time.Now()
	c := v.ReadCreds(t, "tooken", "ci-deploy", "")
	secrets = append(secrets, c.Data.Token)
	if !c.Renewable || c.LeaseDuration <= 3500 || c.LeaseDuration > 3600 {
		t.Errorf("creds lease: renewable=%v duration=%ds, want renewable 3600s", c.Renewable, c.LeaseDuration)
	}
	if !strings.HasPrefix(c.LeaseID, "tooken/creds/ci-deploy/") {
		t.Errorf("lease id %q", c.LeaseID)
	}
	if !slices.Equal(c.Data.Scopes, []string{"deployments:write"}) {
		t.Errorf("creds scopes = %v", c.Data.Scopes)
	}
	exp := c.ExpiresAt(t)
	if !about(exp.Sub(issued), 2*time.Hour, time.Minute) {
		t.Errorf("creds expires_at %s is not issue time + max_ttl 2h", exp)
	}
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.State != "live" || tok.Name != c.Data.Name || !slices.Equal(tok.Scopes, []string{"deployments:write"}) {
		t.Fatalf("upstream token = %+v (found %v)", tok, ok)
	}
	if tok.Metadata["vault_role"] != "ci-deploy" {
		t.Errorf("upstream metadata = %v, want vault_role=ci-deploy", tok.Metadata)
	}
	if tok.ExpiresAt == nil || !about(tok.ExpiresAt.Sub(exp), 0, 2*time.Second) {
		t.Errorf("upstream expires_at = %v, want %s", tok.ExpiresAt, exp)
	}
	if got := e.SelfStatus(t, c.Data.Token); got != 200 {
		t.Fatalf("GET /v1/tokens/self with the issued secret: %d, want 200", got)
	}

	// Renew asks for a day; the lease never goes past the token's upstream expiry.
	for i := 0; i < 2; i++ {
		d, err := leaseRenew(t, v, c.LeaseID, "24h")
		if err != nil {
			t.Fatalf("vault lease renew: %v", err)
		}
		if d <= 0 || d > time.Until(exp)+2*time.Second {
			t.Fatalf("renew granted %s, beyond the upstream expiry in %s", d, time.Until(exp).Round(time.Second))
		}
	}

	// Revoke: the token dies upstream; its secret gets 401.
	v.MustRun(t, "lease", "revoke", c.LeaseID)
	waitRevoked(t, e, c, 10*time.Second)

	// Revoke by prefix.
	c2, c3 := v.ReadCreds(t, "tooken", "ci-deploy", ""), v.ReadCreds(t, "tooken", "ci-deploy", "")
	secrets = append(secrets, c2.Data.Token, c3.Data.Token)
	v.MustRun(t, "lease", "revoke", "-prefix", "tooken/creds/ci-deploy")
	waitRevoked(t, e, c2, 10*time.Second)
	waitRevoked(t, e, c3, 10*time.Second)
	if live := e.LiveTokens(t); len(live) != 1 {
		t.Errorf("live tokens upstream after revoking every lease: %d, want 1 (the root)", len(live))
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, secrets)
}

// TestLeaseRenewUpToMaxTTL: renewals stop at max_ttl (the upstream expiry); then Vault revokes the
// lease and the token dies upstream. Renew of a lease whose role is gone does not extend it and
// says why; its revoke works.
func TestLeaseRenewUpToMaxTTL(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "short", "scopes=deployments:write", "ttl=4s", "max_ttl=12s")

	issued := time.Now()
	c := v.ReadCreds(t, "tooken", "short", "")
	exp := c.ExpiresAt(t)
	if !about(exp.Sub(issued), 12*time.Second, 3*time.Second) {
		t.Fatalf("expires_at is %s after issue, want max_ttl 12s", exp.Sub(issued))
	}
	renewed, capped := 0, false
	for time.Now().Before(exp.Add(4 * time.Second)) {
		d, err := leaseRenew(t, v, c.LeaseID, "1h")
		if err != nil {
			if time.Until(exp) > 2*time.Second {
				t.Fatalf("renew failed %s before max_ttl: %v", time.Until(exp).Round(time.Second), err)
			}
			break
		}
		renewed++
		if d > time.Until(exp)+2*time.Second {
			t.Fatalf("renew granted %s with only %s left to the upstream expiry", d, time.Until(exp).Round(time.Second))
		}
		if d < time.Hour {
			capped = true
		}
		time.Sleep(1500 * time.Millisecond)
	}
	if renewed == 0 || !capped {
		t.Fatalf("renewed %d times, capped=%v", renewed, capped)
	}
	waitRevoked(t, e, c, 15*time.Second)
	if _, ok := v.LeaseTTL(t, c.LeaseID); ok {
		t.Error("Vault still knows the lease after max_ttl")
	}

	// Role gone: renew does not extend the lease and says why in one sentence; revoke still
	// reaches Tooken from the lease alone.
	v.WriteRole(t, "tooken", "gone", "scopes=deployments:write", "ttl=1h", "max_ttl=2h")
	g := v.ReadCreds(t, "tooken", "gone", "")
	v.MustRun(t, "delete", "tooken/roles/gone")
	out, errOut, err := v.Run(t, Run{}, "lease", "renew", g.LeaseID)
	t.Logf("renew without role:\n%s%s", out, errOut)
	// The CLI prints warnings on stderr, wrapped at 80 columns.
	said := strings.Join(strings.Fields(errOut), " ")
	if err != nil || !strings.Contains(said, `role "gone" no longer exists, so the lease is not extended: it ends at `) ||
		strings.Contains(said, "&logical") || strings.Contains(said, "%!") {
		t.Errorf("renew without role: %v, answers:\n%s%s", err, out, errOut)
	}
	if ttl, ok := v.LeaseTTL(t, g.LeaseID); !ok || ttl > time.Hour {
		t.Errorf("lease TTL %s after renew without role, want at most the 1h it had", ttl)
	}
	v.MustRun(t, "lease", "revoke", g.LeaseID)
	waitRevoked(t, e, g, 10*time.Second)
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, c.Data.Token, g.Data.Token})
}

// TestLeaseExpiryRevokesUpstream: a lease with a short TTL, never renewed, expires and Vault's
// revocation reaches the emulator within seconds.
func TestLeaseExpiryRevokesUpstream(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "brief", "scopes=deployments:write", "ttl=3s", "max_ttl=1h")

	issued := time.Now()
	c := v.ReadCreds(t, "tooken", "brief", "")
	if c.LeaseDuration != 3 {
		t.Errorf("lease duration %ds, want 3s", c.LeaseDuration)
	}
	if got := e.SelfStatus(t, c.Data.Token); got != 200 {
		t.Fatalf("fresh secret: status %d", got)
	}
	waitRevoked(t, e, c, 20*time.Second)
	tok, _ := e.Token(t, c.Data.TokenID)
	if tok.State != "revoked" {
		t.Errorf("upstream state %q, want revoked (by Vault, long before its own expiry)", tok.State)
	}
	if tok.RevokedAt != nil {
		// revoked_at has a resolution of one second (the API's times are whole seconds).
		late := tok.RevokedAt.Sub(issued.Add(3 * time.Second))
		t.Logf("upstream revoked_at - (issue + ttl) = %s", late.Round(100*time.Millisecond))
		if late > 10*time.Second {
			t.Errorf("revoked %s after the lease ended", late)
		}
	}
	if _, ok := v.LeaseTTL(t, c.LeaseID); ok {
		t.Error("Vault still knows the expired lease")
	}
}

// TestPolicyFencesRoles: a policy on tooken/creds/ci-deploy lets a token read it and nothing else.
func TestPolicyFencesRoles(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=2h")
	v.WriteRole(t, "tooken", "billing", "scopes=billing:read", "ttl=1h", "max_ttl=2h")
	app := ciDeployToken(t, v)

	v.ReadWorkingCreds(t, e, "tooken", "ci-deploy", app, "token read under the policy")

	denied := [][]string{
		{"read", "tooken/creds/billing"},
		{"read", "tooken/config"},
		{"write", "tooken/config", "url=http://127.0.0.1:1/v1"},
		{"delete", "tooken/config"},
		{"read", "tooken/roles/ci-deploy"},
		{"list", "tooken/roles"},
		{"write", "tooken/roles/ci-deploy", "scopes=tokens:write"},
		{"write", "tooken/roles/new", "scopes=deployments:write"},
		{"delete", "tooken/roles/ci-deploy"},
	}
	for _, args := range denied {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			out, errOut, err := v.Run(t, Run{Token: app}, args...)
			if err == nil {
				t.Fatalf("vault %s succeeded under the ci-deploy policy: %s", strings.Join(args, " "), out)
			}
			if !strings.Contains(errOut, "permission denied") {
				t.Errorf("vault %s: want permission denied, got %s", strings.Join(args, " "), errOut)
			}
		})
	}
	if live := e.LiveTokens(t); len(live) != 2 {
		t.Errorf("live tokens upstream: %d, want 2 (root + the one allowed read)", len(live))
	}
	role := readData(t, v, "tooken/roles/ci-deploy")
	if fmt.Sprint(role["scopes"]) != "[deployments:write]" {
		t.Errorf("role changed by a denied write: scopes %v", role["scopes"])
	}
}

// TestNoPlaintextSecretsInAuditOrServerLog: after config, role, creds, renew, revoke, expiry and
// a failed read, neither a file audit device nor the server (and emulator) log holds the root
// secret or an issued secret.
func TestNoPlaintextSecretsInAuditOrServerLog(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, VaultOptions{LogLevel: "trace"})
	audit := v.EnableFileAudit(t)
	setupTooken(t, v, e)
	secrets := []string{e.RootSecret}

	readData(t, v, "tooken/config")
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=2h", "metadata=team=ci")
	v.WriteRole(t, "tooken", "brief", "scopes=deployments:write", "ttl=2s", "max_ttl=1h")
	readData(t, v, "tooken/roles/ci-deploy")
	var creds []Creds
	for i := 0; i < 3; i++ {
		c := v.ReadCreds(t, "tooken", "ci-deploy", "")
		creds = append(creds, c)
		secrets = append(secrets, c.Data.Token)
	}
	brief := v.ReadCreds(t, "tooken", "brief", "")
	secrets = append(secrets, brief.Data.Token)
	if _, err := leaseRenew(t, v, creds[0].LeaseID, "30m"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Run(t, Run{}, "read", "tooken/creds/nope"); err == nil {
		t.Error("creds of an unknown role succeeded")
	}
	// Re-write config (the root secret passes through Vault once more).
	v.ConfigureTooken(t, "tooken", e)
	v.MustRun(t, "lease", "revoke", creds[1].LeaseID)
	waitRevoked(t, e, creds[1], 10*time.Second)
	waitRevoked(t, e, brief, 20*time.Second)
	v.MustRun(t, "lease", "revoke", "-prefix", "tooken/")
	waitRevoked(t, e, creds[0], 10*time.Second)

	if n := countLines(t, audit, "tooken/creds/ci-deploy"); n == 0 {
		t.Fatalf("the audit log has no entry for tooken/creds/ci-deploy:\n%s", tail(audit, 2000))
	}
	if n := countLines(t, audit, "tooken/config"); n == 0 {
		t.Fatal("the audit log has no entry for tooken/config")
	}
	if n := countLines(t, audit, `"token":"hmac-sha256:`); n == 0 {
		t.Fatal("the audit log has no HMAC'd token field")
	}
	assertNoSecrets(t, []string{audit, v.LogPath, e.LogPath}, secrets)
}

// TestPluginReloadAndVaultRestart: `vault plugin reload` and a restart of a Vault with file
// storage keep config, roles and leases working.
func TestPluginReloadAndVaultRestart(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startVault(t, VaultOptions{})
	setupTooken(t, v, e)
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=2h")
	rootID := e.RootTokenID(t)
	a := v.ReadCreds(t, "tooken", "ci-deploy", "")
	before := v.PluginPIDs()

	v.MustRun(t, "plugin", "reload", "-plugin="+pluginName)
	b := v.ReadCreds(t, "tooken", "ci-deploy", "")
	after := v.PluginPIDs()
	t.Logf("plugin processes before reload %v, after %v", before, after)
	if len(before) == 0 || len(after) == 0 || slices.Equal(before, after) {
		t.Errorf("vault plugin reload did not restart the plugin process (before %v, after %v)", before, after)
	}
	// Config, role and the lease are all still there and working.
	kept := func(after string, c Creds) {
		t.Helper()
		if cfg := readData(t, v, "tooken/config"); cfg["token_id"] != rootID || cfg["url"] != e.URL {
			t.Errorf("config after %s: %v", after, cfg)
		}
		if role := readData(t, v, "tooken/roles/ci-deploy"); fmt.Sprint(role["scopes"]) != "[deployments:write]" {
			t.Errorf("role after %s: %v", after, role)
		}
		if _, err := leaseRenew(t, v, c.LeaseID, "30m"); err != nil {
			t.Fatalf("renew after %s: %v", after, err)
		}
	}
	kept("reload", a)

	v.Restart(t)
	kept("restart", b)
	v.MustRun(t, "lease", "revoke", a.LeaseID)
	waitRevoked(t, e, a, 10*time.Second)
	c := v.ReadWorkingCreds(t, e, "tooken", "ci-deploy", "", "creds after restart")
	v.MustRun(t, "lease", "revoke", "-prefix", "tooken/")
	waitRevoked(t, e, b, 10*time.Second)
	waitRevoked(t, e, c, 10*time.Second)
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, a.Data.Token, b.Data.Token, c.Data.Token})
}

// TestSecretsDisableRevokesEveryToken: disabling the mount revokes every token it issued; only
// the root stays live upstream.
func TestSecretsDisableRevokesEveryToken(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=2h")
	v.WriteRole(t, "tooken", "billing", "scopes=billing:read", "ttl=1h", "max_ttl=2h")
	var issued []Creds
	for i := 0; i < 5; i++ {
		role := "ci-deploy"
		if i%2 == 1 {
			role = "billing"
		}
		issued = append(issued, v.ReadCreds(t, "tooken", role, ""))
	}
	if live := e.LiveTokens(t); len(live) != 6 {
		t.Fatalf("live tokens upstream: %d, want 6 (root + 5)", len(live))
	}
	v.MustRun(t, "secrets", "disable", "tooken")
	rootID := e.RootTokenID(t)
	eventually(t, 15*time.Second, "only the root token is live upstream", func() (bool, string) {
		live := e.LiveTokens(t)
		return len(live) == 1 && live[0].ID == rootID, fmt.Sprintf("%d live", len(live))
	})
	for _, c := range issued {
		if got := e.SelfStatus(t, c.Data.Token); got != 401 {
			t.Errorf("secret of %s after disable: status %d, want 401", c.Data.TokenID, got)
		}
	}
	if got := e.SelfStatus(t, e.RootSecret); got != 200 {
		t.Errorf("root secret after disable: status %d, want 200", got)
	}
}
