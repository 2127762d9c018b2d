package tooken

import (
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// durationKey is a response key whose value is a duration.
func durationKey(k string) bool {
	for _, suffix := range []string{"ttl", "_timeout", "_age", "_period", "_grace", "duration"} {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

// timeKey is a response key whose value is a point in time.
func timeKey(k string) bool {
	return strings.HasSuffix(k, "_at") || k == "last_rotated" || k == "next_rotation"
}

var wholeSecondUTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// checkReadBack checks that every duration in data (nested maps included)
// is a whole number of seconds and every time RFC 3339 UTC in whole seconds
// (or null), as in Vault's builtin engines.
func checkReadBack(t *testing.T, what string, data map[string]any) {
	t.Helper()
	for k, v := range data {
		switch {
		case durationKey(k):
			if _, ok := v.(int64); !ok {
				t.Errorf("%s: %s = %#v, want whole seconds (int64)", what, k, v)
			}
		case timeKey(k):
			if s, ok := v.(string); v != nil && (!ok || !wholeSecondUTC.MatchString(s)) {
				t.Errorf("%s: %s = %#v, want RFC 3339 UTC in whole seconds", what, k, v)
			}
		}
		if m, ok := v.(map[string]any); ok {
			checkReadBack(t, what+"."+k, m)
		}
	}
}

// Every answer reads durations back as whole seconds and times as RFC 3339
// UTC in whole seconds: config, roles, creds, rotate-root, tidy, tidy/status.
func TestResponses_DurationsAndTimes(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rotation_period": "24h"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
	creds := must(t)(e.read("creds/r"))
	must(t)(e.revoke(lease(creds)))
	answers := map[string]*logical.Response{
		"creds":       creds,
		"roles/r":     must(t)(e.read("roles/r")),
		"rotate-root": must(t)(e.write("rotate-root", nil)),
		"tidy":        must(t)(e.write("tidy", map[string]any{"safety_age": "1h"})),
		"tidy/status": must(t)(e.read("tidy/status")),
		"config":      must(t)(e.read(configPath)),
	}
	for what, resp := range answers {
		if resp == nil || len(resp.Data) == 0 {
			t.Fatalf("%s: no data", what)
		}
		checkReadBack(t, what, resp.Data)
	}
	for what, key := range map[string]string{"tidy": "duration", "tidy/status": "last_tidy", "config": "rotation_grace", "roles/r": "max_ttl"} {
		if _, ok := answers[what].Data[key]; !ok {
			t.Errorf("%s has no %s", what, key)
		}
	}
}

// The config read shows the id that the mount's tokens carry.
func TestResponses_MountIdentity(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	creds := must(t)(e.read("creds/r"))
	tok, ok := srv.Token(creds.Data["token_id"].(string))
	if !ok {
		t.Fatal("token not found upstream")
	}
	id := must(t)(e.read(configPath)).Data["mount_uuid"]
	if id == "" || id != tok.Metadata[metaMountUUID] {
		t.Errorf("config mount_uuid %v, token's vault_mount_uuid %q", id, tok.Metadata[metaMountUUID])
	}
}
