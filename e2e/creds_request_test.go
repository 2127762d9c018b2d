package e2e

// What a creds read may ask for, through the real CLI: ttl and scopes narrow one token; and the
// name templates a role may have, bounded.

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// `vault read tooken/creds/<role> ttl=15m scopes=deployments:read` gives a token with exactly that
// lifetime upstream and those scopes, under a lease that ends with it and renews within it;
// every bad value is a 400 naming the field, and nothing is created upstream.
func TestCredsNarrowedCLI(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write,billing:read", "ttl=1h", "max_ttl=24h")

	start := time.Now()
	var c Creds
	v.MustRunJSON(t, &c, "read", "-format=json", "tooken/creds/r", "ttl=15m", "scopes=deployments:read")
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.ExpiresAt == nil {
		t.Fatalf("token %s upstream: %+v", c.Data.TokenID, tok)
	}
	if life := tok.ExpiresAt.Sub(start); life < 15*time.Minute-2*time.Second || life > 15*time.Minute+2*time.Second {
		t.Errorf("the token lives %s upstream, want 15m", life)
	}
	if !slices.Equal(tok.Scopes, []string{"deployments:read"}) || !slices.Equal(c.Data.Scopes, tok.Scopes) {
		t.Errorf("scopes upstream %v, answered %v, want [deployments:read]", tok.Scopes, c.Data.Scopes)
	}
	if d := time.Duration(c.LeaseDuration) * time.Second; d < 15*time.Minute-3*time.Second || d >= 15*time.Minute {
		t.Errorf("lease_duration %s, want just under 15m", d)
	}
	for _, inc := range []string{"1h", "48h"} {
		got, err := leaseRenew(t, v, c.LeaseID, inc)
		if err == nil && time.Now().Add(got).After(*tok.ExpiresAt) {
			t.Errorf("renew -increment=%s: the lease (%s) outlives the token", inc, got)
		}
	}

	// Repeated keys make a list, as the CLI sends them.
	v.MustRunJSON(t, &c, "read", "-format=json", "tooken/creds/r", "scopes=billing:read", "scopes=deployments:read")
	if tok, _ := e.Token(t, c.Data.TokenID); !slices.Equal(tok.Scopes, []string{"billing:read", "deployments:read"}) {
		t.Errorf("scopes upstream %v", tok.Scopes)
	}

	before := len(e.Tokens(t))
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"ttl=25h"}, []string{"ttl: 25h is longer than role \"r\" allows (24h"}},
		{[]string{"ttl=5s"}, []string{"ttl: 5s is too short"}},
		{[]string{"scopes=admin:write"}, []string{"scopes: role \"r\" does not grant admin:write"}},
		{[]string{"scopes=billing:write"}, []string{"does not grant billing:write"}},
		{[]string{"scopes="}, []string{"scopes: empty"}},
		{[]string{"ttl=72h", "scopes=Nope"}, []string{"ttl: 72h", "scopes: invalid scope \"Nope\""}},
	} {
		out, errOut, err := v.Run(t, Run{}, append([]string{"read", "tooken/creds/r"}, tc.args...)...)
		if err == nil || !strings.Contains(errOut, "Code: 400") {
			t.Errorf("vault read tooken/creds/r %s: want a 400, got %v\n%s%s", strings.Join(tc.args, " "), err, out, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("vault read tooken/creds/r %s: %q does not say %q", strings.Join(tc.args, " "), errOut, w)
			}
		}
	}
	if after := len(e.Tokens(t)); after != before {
		t.Errorf("%d tokens created upstream by refused reads", after-before)
	}
}

// The review's two templates (a range of 30 million uuids; a range of a billion behind a branch
// on the caller's display name, which sample renders never take) are refused at once with a
// 400 naming name_template, and nothing is stored. Generous limits, not a timing race: the
// unbounded engine took 28 s and 4.7 GB for the first.
func TestNameTemplateRefusedCLI(t *testing.T) {
	t.Parallel()
	_, v := startTooken(t, VaultOptions{})
	for _, tmpl := range []string{
		`{{ range 30000000 }}{{ uuid }}{{ end }}`,
		`{{ if eq .DisplayName "token" "userpass-alice" "" }}ok{{ else }}{{ range 1000000000 }}{{ end }}x{{ end }}`,
	} {
		start := time.Now()
		out, errOut, err := v.Run(t, Run{}, "write", "tooken/roles/bad", "scopes=deployments:write", "name_template="+tmpl)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("refusing %q took %s", tmpl, d)
		}
		if err == nil || !strings.Contains(errOut, "Code: 400") || !strings.Contains(errOut, "name_template:") ||
			!strings.Contains(errOut, "range is not allowed") {
			t.Errorf("vault write name_template=%q: want a 400 naming name_template, got %v\n%s%s", tmpl, err, out, errOut)
		}
	}
	out, _, err := v.Run(t, Run{}, "read", "-format=json", "tooken/roles/bad")
	var role map[string]any
	if err == nil && json.Unmarshal([]byte(out), &role) == nil {
		t.Errorf("the refused role was stored: %s", out)
	}
}
