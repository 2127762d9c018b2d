package tooken

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// tlsEmulator serves the emulator over HTTPS; it returns the server and the
// PEM of the certificate that signs it.
func tlsEmulator(t *testing.T) (*tookentest.Server, string, string) {
	t.Helper()
	srv, err := tookentest.NewHandler(tookentest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	return srv, ts.URL + "/v1", caPEM
}

// otherCA is a CA certificate that signed nothing we talk to.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "not the Tooken CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestConfig_WriteRead(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)

	resp, err := e.read(configPath)
	if err != nil || resp != nil {
		t.Fatalf("read before write: %v %v", resp, err)
	}

	must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret()}))
	resp = must(t)(e.read(configPath))
	want := map[string]any{
		"url":               srv.URL(),
		"ca_cert":           "",
		"request_timeout":   int64(30),
		"max_retries":       3,
		"verify_connection": true,
		"token_id":          srv.RootTokenID(),
		"expires_at":        nil,
		"mount_uuid":        testMountUUID,
	}
	for k, v := range want {
		if resp.Data[k] != v {
			t.Errorf("%s = %#v, want %#v", k, resp.Data[k], v)
		}
	}
	if got := strings.Join(resp.Data["scopes"].([]string), ","); got != strings.Join(tookentest.DefaultRootScopes, ",") {
		t.Errorf("scopes = %s", got)
	}
	if _, ok := resp.Data["token"]; ok {
		t.Error("config read returns the token field")
	}
	raw, _ := json.Marshal(resp)
	if strings.Contains(string(raw), srv.RootSecret()) {
		t.Error("config read contains the secret")
	}

	// Partial update keeps the other fields and re-verifies.
	must(t)(e.write(configPath, map[string]any{"max_retries": 5, "request_timeout": "10s"}))
	resp = must(t)(e.read(configPath))
	if resp.Data["max_retries"] != 5 || resp.Data["request_timeout"] != int64(10) ||
		resp.Data["url"] != srv.URL() || resp.Data["token_id"] != srv.RootTokenID() {
		t.Errorf("after partial update: %v", resp.Data)
	}
	cfg, _ := readConfig(context.Background(), e.storage)
	if cfg.Token != srv.RootSecret() {
		t.Error("partial update lost the token")
	}

	// Delete.
	must(t)(e.del(configPath))
	if resp, err := e.read(configPath); err != nil || resp != nil {
		t.Fatalf("read after delete: %v %v", resp, err)
	}
}

func TestConfig_Defaults_NoVerify(t *testing.T) {
	e := getTestBackend(t)
	resp := must(t)(e.write(configPath, map[string]any{
		"token":             "tok_live_abcdefghijklmnopqrstuvwxyz",
		"verify_connection": false,
	}))
	if resp == nil || len(resp.Warnings) == 0 {
		t.Error("no warning for an unverified config")
	}
	resp = must(t)(e.read(configPath))
	if resp.Data["url"] != tookenapi.DefaultBaseURL || resp.Data["request_timeout"] != int64(30) ||
		resp.Data["max_retries"] != 3 || resp.Data["verify_connection"] != false || resp.Data["token_id"] != "" {
		t.Errorf("defaults: %v", resp.Data)
	}
}

func TestConfig_VerifyNoLongerRemembersOldRoot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	// Switching the token without verification forgets the old root's identity.
	must(t)(e.write(configPath, map[string]any{"token": "tok_test_abcdefghijklmnopqrstuvwxyz", "verify_connection": false}))
	resp := must(t)(e.read(configPath))
	if resp.Data["token_id"] != "" || len(resp.Data["scopes"].([]string)) != 0 {
		t.Errorf("stale root identity: %v", resp.Data)
	}
}

func TestConfig_TLS(t *testing.T) {
	srv, url, caPEM := tlsEmulator(t)
	e := getTestBackend(t)

	resp, err := e.write(configPath, map[string]any{"url": url, "token": srv.RootSecret(), "ca_cert": otherCA(t)})
	mustUserError(t, resp, err, "ca_cert:")
	resp, err = e.write(configPath, map[string]any{"url": url, "token": srv.RootSecret()})
	mustUserError(t, resp, err, "ca_cert:")
	if cfg, _ := readConfig(context.Background(), e.storage); cfg != nil {
		t.Fatal("config stored after a failed verification")
	}

	must(t)(e.write(configPath, map[string]any{"url": url, "token": srv.RootSecret(), "ca_cert": caPEM}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	resp = must(t)(e.read("creds/r"))
	if _, ok := srv.Token(resp.Data["token_id"].(string)); !ok {
		t.Error("token not created over TLS")
	}
}

func TestConfig_BadInput(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	notTooken := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notTooken.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/v1"
	dead.Close()
	goodSecret := srv.RootSecret()
	unknownSecret := "tok_test_" + strings.Repeat("Z", 32)

	cases := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"no token on create", map[string]any{"url": srv.URL()}, []string{"token: required"}},
		{"malformed token", map[string]any{"url": srv.URL(), "token": "hunter2-secret"}, []string{"token: not a Tooken secret"}},
		{"token of whitespace only", map[string]any{"url": srv.URL(), "token": " \n"}, []string{"token: required"}},
		{"token with a bad prefix", map[string]any{"url": srv.URL(), "token": "tok_prod_hunter2hunter2hunter2hunter2"}, []string{"token: not a Tooken secret"}},
		{"token too short (19 after the prefix)", map[string]any{"url": srv.URL(), "token": "tok_live_hunter2hunter2hunte"}, []string{"token: not a Tooken secret"}},
		{"token with a character outside [A-Za-z0-9]", map[string]any{"url": srv.URL(), "token": "tok_test_hunter2hunter2hunter2-hunter2"}, []string{"token: not a Tooken secret"}},
		{"token with inner whitespace", map[string]any{"url": srv.URL(), "token": "tok_test_hunter2hunter2 hunter2hunter2"}, []string{"token: not a Tooken secret"}},
		{"two tokens on two lines", map[string]any{"url": srv.URL(), "token": goodSecret + "\n" + goodSecret}, []string{"token: not a Tooken secret"}},
		{"unknown token", map[string]any{"url": srv.URL(), "token": unknownSecret}, []string{"token:", "401"}},
		{"unparsable url", map[string]any{"url": "://nope", "token": goodSecret}, []string{"url:"}},
		{"bad scheme", map[string]any{"url": "ftp://example.com/v1", "token": goodSecret}, []string{"url: scheme"}},
		{"no scheme, with a port", map[string]any{"url": "127.0.0.1:18310/v1", "token": goodSecret}, []string{"url: has no scheme: start it with https:// (or http:// for a local emulator)"}},
		{"no scheme", map[string]any{"url": "api.tooken.io/v1", "token": goodSecret}, []string{"url: has no scheme"}},
		{"every problem of a first write", map[string]any{"url": "api.tooken.io/v1", "max_retries": 11}, []string{"url: has no scheme", "token: required when creating the config", "max_retries: must be between 0 and 10"}},
		{"user info in url", map[string]any{"url": "http://user:pw@127.0.0.1/v1", "token": goodSecret}, []string{"url: must not contain user information"}},
		{"unreachable url", map[string]any{"url": deadURL, "token": goodSecret, "max_retries": 0}, []string{"url: cannot reach"}},
		{"not a Tooken server", map[string]any{"url": notTooken.URL + "/v1", "token": goodSecret}, []string{"url:", "is not a Tooken API"}},
		{"ca_cert not PEM", map[string]any{"url": srv.URL(), "token": goodSecret, "ca_cert": "not a cert"}, []string{"ca_cert:"}},
		{"negative request_timeout", map[string]any{"url": srv.URL(), "token": goodSecret, "request_timeout": "-5s"}, []string{"request_timeout"}},
		{"unparsable request_timeout", map[string]any{"url": srv.URL(), "token": goodSecret, "request_timeout": "soon"}, []string{"request_timeout"}},
		{"zero request_timeout", map[string]any{"url": srv.URL(), "token": goodSecret, "request_timeout": 0}, []string{"request_timeout: must be greater than zero"}},
		{"negative max_retries", map[string]any{"url": srv.URL(), "token": goodSecret, "max_retries": -1}, []string{"max_retries"}},
		{"too many max_retries", map[string]any{"url": srv.URL(), "token": goodSecret, "max_retries": 11}, []string{"max_retries"}},
		{"unparsable max_retries", map[string]any{"url": srv.URL(), "token": goodSecret, "max_retries": "many"}, []string{"max_retries"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			resp, err := e.write(configPath, tc.data)
			mustUserError(t, resp, err, tc.want...)
			if msg := resp.Error().Error(); strings.Contains(msg, goodSecret) || strings.Contains(msg, "hunter2") || strings.Contains(msg, unknownSecret) {
				t.Errorf("error reveals a secret: %s", msg)
			}
			if e.storage.puts.Load() != 0 {
				t.Error("something was stored")
			}
		})
	}

	// A bad update leaves the stored config as it was.
	t.Run("bad update keeps config", func(t *testing.T) {
		e := getTestBackend(t)
		e.configure(srv, nil)
		before, _ := readConfig(context.Background(), e.storage)
		e.storage.reset()
		for _, data := range []map[string]any{
			{"token": unknownSecret},
			{"url": deadURL, "max_retries": 0},
			{"max_retries": 99},
		} {
			resp, err := e.write(configPath, data)
			mustUserError(t, resp, err)
		}
		if e.storage.puts.Load() != 0 {
			t.Error("a rejected update was stored")
		}
		after, _ := readConfig(context.Background(), e.storage)
		if after.Token != before.Token || after.URL != before.URL || after.MaxRetries != before.MaxRetries {
			t.Error("config changed")
		}
	})
}

// The CLI's token=- and token=@file pass the secret with its trailing
// newline: surrounding whitespace is trimmed before the format check and the
// verification, and the trimmed secret is what is stored.
func TestConfig_TokenTrimmed(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	if !secretRegex.MatchString(srv.RootSecret()) {
		t.Fatalf("the emulator's generated secret (%d characters) does not match the contract's format", len(srv.RootSecret()))
	}
	cases := []struct {
		name, token string
		verify      bool
	}{
		{"token=- (trailing newline)", srv.RootSecret() + "\n", true},
		{"token=@file (CRLF)", srv.RootSecret() + "\r\n", true},
		{"surrounding spaces and tabs", " \t" + srv.RootSecret() + " \n", true},
		{"unverified, trailing newline", "tok_live_abcdefghijklmnopqrstuvwxyz\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": tc.token, "verify_connection": tc.verify}))
			cfg, err := readConfig(context.Background(), e.storage)
			if err != nil || cfg == nil {
				t.Fatalf("config not stored: %v", err)
			}
			if cfg.Token != strings.TrimSpace(tc.token) {
				t.Errorf("stored token has %d characters, want %d (trimmed)", len(cfg.Token), len(strings.TrimSpace(tc.token)))
			}
			if tc.verify && cfg.TokenID != srv.RootTokenID() {
				t.Errorf("token_id = %q, want %q", cfg.TokenID, srv.RootTokenID())
			}
		})
	}

	// An update that sets only the token trims it too.
	e := getTestBackend(t)
	e.configure(srv, nil)
	must(t)(e.write(configPath, map[string]any{"token": srv.RootSecret() + "\n"}))
	if cfg, _ := readConfig(context.Background(), e.storage); cfg.Token != srv.RootSecret() {
		t.Error("update stored an untrimmed token")
	}
}

func TestConfig_DeleteThenCreds(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	must(t)(e.read("creds/r"))
	must(t)(e.del(configPath))
	resp, err := e.read("creds/r")
	mustUserError(t, resp, err, "not configured")
}

func TestConfig_WarnsWithoutTokensWrite(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RootScopes: []string{"deployments:write"}})
	e := getTestBackend(t)
	resp := must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret()}))
	if resp == nil || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "tokens:write") {
		t.Errorf("want a tokens:write warning, got %v", resp)
	}
}

// "Rotation never locks Vault out for any accepted config": a config write
// refuses as root a token that another custody holds. A static role's token
// (read from static-creds) would lose its secret at the role's next rotation
// (grace 0 here); a creds token dies with its lease; another mount's root
// is rotated by that mount. The stored config is unchanged and keeps
// working; rotate-role/ops afterwards leaves creds working.
func TestConfig_RootHeldByAnotherCustody(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	e.writeRole("admin", map[string]any{"scopes": "tokens:write,deployments:write", "allow_token_management": true})
	ops := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "ops", Scopes: []string{"tokens:write", "deployments:write"}})
	must(t)(e.write(staticRolesPath+"ops", map[string]any{"token_id": ops.ID, "rotation_period": "1h", "rotation_grace": 0}))
	opsSecret := must(t)(e.read(staticCredsPath + "ops")).Data["token"].(string)
	creds := must(t)(e.read("creds/admin"))
	bRoot := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "mount-b-root", Scopes: []string{"tokens:write", "deployments:write"}})
	secondMount(t, srv, bRoot.Secret)

	for name, tc := range map[string]struct {
		secret string
		want   []string
	}{
		"a static role's token": {opsSecret, []string{"token: its token " + ops.ID, `is already managed by static role "ops" of this mount`}},
		"a creds token":         {creds.Data["token"].(string), []string{"token: its token " + creds.Data["token_id"].(string), `was issued by creds of role "admin"`}},
		"another mount's root":  {bRoot.Secret, []string{"token: its token " + bRoot.ID, "the root token of another mount", otherMountUUID, "PATCH /tokens/" + bRoot.ID}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.write(configPath, map[string]any{"token": tc.secret})
			if err == nil && resp != nil && !resp.IsError() {
				must(t)(e.write(rotateRolePath+"ops", nil))
				stored, _ := readConfig(context.Background(), e.storage)
				t.Fatalf("config accepted %s as root; after rotate-role/ops the stored root works: %v; creds read: %s",
					name, works(srv, stored.Token), outcome(e.read("creds/r")))
			}
			mustUserError(t, resp, err, append(tc.want, "give this mount a root token of its own")...)
			if stored, _ := readConfig(context.Background(), e.storage); stored.Token != srv.RootSecret() {
				t.Fatal("the refused write changed the stored root")
			}
		})
	}
	must(t)(e.write(rotateRolePath+"ops", nil))
	must(t)(e.read("creds/r"))

	// A root stored without the check (verify_connection=false) only gets
	// a warning when a later write verifies it: refusing would not undo it.
	opsSecret = must(t)(e.read(staticCredsPath + "ops")).Data["token"].(string) // rotated above
	must(t)(e.write(configPath, map[string]any{"token": opsSecret, "verify_connection": false}))
	resp := must(t)(e.write(configPath, map[string]any{"verify_connection": true}))
	if resp == nil || !containsAll(strings.Join(resp.Warnings, "\n"), ops.ID, `static role "ops"`, "refuses to rotate it") {
		t.Fatalf("verifying a stored root that a static role holds: %v", resp)
	}
	if got := markOf(t, srv, ops.ID); got != "static:"+testMountUUID+":ops" {
		t.Fatalf("the static role's mark became %q", got)
	}
}
