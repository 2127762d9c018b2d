package tookentest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	clk := newClock()
	s1 := NewServer(Options{StatePath: path, Now: clk.Now})
	root, rootID := s1.RootSecret(), s1.RootTokenID()
	keep := mustCreate(t, s1, root, map[string]any{"name": "keep", "scopes": []string{"billing:read"}, "metadata": map[string]string{"a": "b"},
		"expires_at": clk.Now().Add(48 * time.Hour).Format(time.RFC3339)})
	rot := mustCreate(t, s1, root, tok("rot", "billing:read"))
	r := do(t, s1, "POST", "/v1/tokens/"+rot.id+"/rotate", root, map[string]any{"previous_secret_ttl": 3600})
	wantStatus(t, r, 200)
	rotNew := r.str("secret")
	gone := mustCreate(t, s1, root, tok("gone", "billing:read"))
	wantStatus(t, do(t, s1, "DELETE", "/v1/tokens/"+gone.id, root, nil), 204)
	before := s1.Tokens()
	s1.Close()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{root, keep.secret, rot.secret, rotNew, gone.secret} {
		if strings.Contains(string(raw), sec) {
			t.Fatal("a plaintext secret is in the state file")
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}

	s2 := newTestServer(t, Options{StatePath: path, Now: clk.Now})
	if s2.RootTokenID() != rootID || s2.RootSecret() != "" {
		t.Fatalf("root %s secret known %v", s2.RootTokenID(), s2.RootSecret() != "")
	}
	after := s2.Tokens()
	if fmt.Sprintf("%+v", after) != fmt.Sprintf("%+v", before) {
		t.Fatalf("tokens differ after restart:\n%+v\n%+v", before, after)
	}
	for name, tc := range map[string]struct {
		secret string
		ok     bool
	}{"root": {root, true}, "keep": {keep.secret, true}, "rotated": {rotNew, true}, "in grace": {rot.secret, true}, "revoked": {gone.secret, false}} {
		if _, ok := s2.Authenticate(tc.secret); ok != tc.ok {
			t.Errorf("%s: authenticates %v", name, ok)
		}
	}
	// New tokens list before the old ones.
	n := mustCreate(t, s2, root, tok("new", "billing:read"))
	ids := listIDs(t, do(t, s2, "GET", "/v1/tokens", root, nil))
	if len(ids) != 4 || ids[0] != n.id || ids[3] != rootID {
		t.Fatalf("list after restart %v", ids)
	}
	// The grace ends on time after the restart.
	clk.Advance(time.Hour)
	if _, ok := s2.Authenticate(rot.secret); ok {
		t.Fatal("old secret outlived its grace")
	}
	s2.Close()

	// The right root secret may be given again; a wrong one is refused.
	s3, err := NewHandler(Options{StatePath: path, RootSecret: root, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if s3.RootSecret() != root || s3.RootTokenID() != rootID {
		t.Fatal("root secret not taken")
	}
	s3.Close()
	if _, err := NewHandler(Options{StatePath: path, RootSecret: "tok_test_" + strings.Repeat("x", 32)}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong root secret: %v", err)
	}
}

func TestStateBadFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":     "{",
		"version":      `{"version":2,"tokens":[]}`,
		"bad hash":     `{"version":1,"root_id":"tkn_000000000000000000000000","tokens":[{"seq":1,"id":"tkn_000000000000000000000000","secret_sha256":"zz"}]}`,
		"bad id":       `{"version":1,"tokens":[{"seq":1,"id":"x","secret_sha256":"` + strings.Repeat("0", 64) + `"}]}`,
		"missing root": `{"version":1,"root_id":"tkn_000000000000000000000001","tokens":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := NewHandler(Options{StatePath: path}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestOptionsErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"bad root scope":  {RootScopes: []string{"tokens"}},
		"bad root secret": {RootSecret: "secret"},
		"short secret":    {RootSecret: "tok_test_abc"},
	} {
		if _, err := NewHandler(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	s, err := NewHandler(Options{RootSecret: "tok_live_" + strings.Repeat("a", 20), RootScopes: []string{"tokens:read"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.URL() != "" || s.RootSecret() != "tok_live_"+strings.Repeat("a", 20) {
		t.Fatal("NewHandler")
	}
	rec, ok := s.Token(s.RootTokenID())
	if !ok || fmt.Sprint(rec.Scopes) != "[tokens:read]" || rec.CreatedBy != "" || rec.Name != "root" {
		t.Fatalf("%+v", rec)
	}
}
