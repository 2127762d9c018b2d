package e2e

// Custody of the root secret and waits with a ceiling, on a real Vault: the stored secret is only
// ever sent to the URL it was stored for, a 404 from a URL that is not a Tooken API does not make
// a revoke "done", and a Tooken that asks to wait an hour or a day neither hangs a creds read nor
// freezes the revoke queue.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// captureServer is a tiny HTTP listener that records the Authorization header of every request
// and answers 404: a URL someone points the engine at to collect its secret.
type captureServer struct {
	URL   string
	mu    sync.Mutex
	auths []string
}

func startCaptureServer(t *testing.T) *captureServer {
	t.Helper()
	c := &captureServer{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.auths = append(c.auths, r.Header.Get("Authorization"))
		c.mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(ts.Close)
	c.URL = ts.URL
	return c
}

func (c *captureServer) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.auths...)
}

// unrelatedCA writes a PEM CA certificate that signed nothing and returns its path.
func unrelatedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "unrelated CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRootSecretStaysWithItsURL: after rotate-root nobody but Vault knows the root secret, and no
// config write sends it anywhere else. Pointing url (or ca_cert) elsewhere without the token is
// refused with a 400 before anything is sent, also with verify_connection=false (whose next creds
// read would otherwise send it); with a token for the new URL, that URL gets that token only. A
// capture server records every Authorization header it receives: none authenticates at Tooken.
func TestRootSecretStaysWithItsURL(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	v.MustRun(t, "write", "-f", "tooken/rotate-root")
	capture := startCaptureServer(t)
	const rule = "token: required when url or ca_cert changes: the stored root secret is only sent to the URL it was stored for"

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"url", []string{"url=" + capture.URL + "/v1"}},
		{"url unverified", []string{"url=" + capture.URL + "/v1", "verify_connection=false"}},
		{"ca_cert", []string{"ca_cert=@" + unrelatedCA(t)}},
		{"ca_cert unverified", []string{"ca_cert=@" + unrelatedCA(t), "verify_connection=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := v.Run(t, Run{}, append([]string{"write", "tooken/config"}, tc.args...)...)
			if err == nil || !strings.Contains(errOut, "Code: 400") || !strings.Contains(errOut, rule) {
				t.Fatalf("want a 400 with %q, got err=%v\n%s%s", rule, err, out, errOut)
			}
			// The next creds read still goes to the URL the secret was stored for.
			v.ReadWorkingCreds(t, e, "tooken", "r", "", "creds after a refused url change")
		})
	}
	if got := capture.seen(); len(got) != 0 {
		t.Fatalf("the capture server received %d requests from refused writes", len(got))
	}
	if got := configField(t, v, "url"); got != e.URL {
		t.Fatalf("url = %v after refused writes, want %s", got, e.URL)
	}

	// With a token for it the URL may change: it gets that token, never the stored one.
	other := "tok_test_" + randomAlnum(30)
	v.MustRun(t, "write", "tooken/config", "url="+capture.URL+"/v1", "verify_connection=false", "token="+other)
	if _, _, err := v.Run(t, Run{}, "read", "tooken/creds/r"); err == nil {
		t.Fatal("creds read through the capture server succeeded")
	}
	seen := capture.seen()
	if len(seen) == 0 {
		t.Fatal("the capture server received nothing: the test proves nothing")
	}
	for _, auth := range seen {
		if auth != "Bearer "+other {
			t.Errorf("the capture server received an Authorization header other than the new token's (valid at Tooken: %v)",
				e.SecretValid(t, strings.TrimPrefix(auth, "Bearer ")))
		}
	}
	assertNoSecrets(t, []string{v.LogPath}, []string{e.RootSecret})
}

// TestWrongBaseURLQueuesRevokes: with url=http://host:port (no /v1) stored unverified, every
// revoke gets 404 "unrecognized request". That proves nothing: the engine checks GET /tokens/self,
// which is no token object either, so the revokes are queued (the leases go, the tokens stay
// alive and accounted for) instead of being taken as done; once the url is fixed (with the token
// again) the queue drains at the next periodic run.
func TestWrongBaseURLQueuesRevokes(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	var creds []Creds
	for i := 0; i < 3; i++ {
		creds = append(creds, v.ReadCreds(t, "tooken", "r", ""))
	}
	wrong := strings.TrimSuffix(e.URL, "/v1")
	if out, errOut, err := v.Run(t, Run{Stdin: e.RootSecret}, "write", "tooken/config", "url="+wrong, "token=-", "verify_connection=false"); err != nil {
		t.Fatalf("vault write tooken/config url=%s verify_connection=false: %v\n%s%s", wrong, err, out, errOut)
	}
	for _, c := range creds {
		v.MustRun(t, "lease", "revoke", c.LeaseID)
	}
	if n := len(v.LeaseIDs(t, "tooken/creds/r/")); n != 0 {
		t.Errorf("%d leases left after the revokes", n)
	}
	status := readData(t, v, "tooken/tidy/status")
	if fmt.Sprint(status["queue_length"]) != "3" {
		t.Fatalf("tidy/status queue_length = %v, want 3 queued revokes", status["queue_length"])
	}
	for _, c := range creds {
		if st := tokenState(t, e, c.Data.TokenID); st != "live" {
			t.Fatalf("token %s is %q upstream, want live (not revoked through a URL that is not Tooken)", c.Data.TokenID, st)
		}
	}

	v.ConfigureTooken(t, "tooken", e) // url (with /v1) and the token again
	fixed := time.Now()
	for _, c := range creds {
		waitRevoked(t, e, c, 2*time.Minute)
	}
	t.Logf("queue drained %s after the url was fixed", time.Since(fixed).Round(time.Second))
	if n := v.IrrevocableLeases(t); n != 0 {
		t.Errorf("%d irrevocable leases", n)
	}
}

// TestLongRetryAfterIsNotWaited: Tooken answers "503 Retry-After: 3600" to every create. A creds
// read answers a 502 that names Tooken's ask, within seconds (the client waits at most 5s for a
// Retry-After), never a 500 "context canceled" at Vault's request deadline, and leaves no token.
func TestLongRetryAfterIsNotWaited(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens", Status: 503, RetryAfter: 3600})
	start := time.Now()
	out, errOut, err := v.Run(t, Run{}, "read", "tooken/creds/r")
	elapsed := time.Since(start)
	t.Logf("creds read answered in %s: %s", elapsed.Round(time.Millisecond), strings.TrimSpace(errOut))
	if err == nil {
		t.Fatalf("creds read succeeded: %s", out)
	}
	if !strings.Contains(errOut, "Code: 502") || !strings.Contains(errOut, "retry after 1h ") || strings.Contains(errOut, "context canceled") {
		t.Errorf("want a 502 naming Tooken's ask, got: %s", errOut)
	}
	if elapsed > 30*time.Second {
		t.Errorf("the creds read took %s: the Retry-After was waited for", elapsed.Round(time.Second))
	}
	e.ClearFaults(t)
	if live := len(e.LiveTokens(t)); live != 1 {
		t.Errorf("%d live tokens upstream, want only the root", live)
	}
}

// TestRevokeQueueDrainsAMinuteAfterLongRetryAfter: Tooken answers "429 Retry-After: 300" to every
// DELETE. The lease revoke is queued at once (no 5-minute wait); the periodic drain meets the
// 429 and holds the queue, but for at most 30s: once Tooken answers again, the queue drains at
// the next periodic run, about a minute, not after the 5 minutes Tooken asked for (nor a day for
// "Retry-After: 86400").
func TestRevokeQueueDrainsAMinuteAfterLongRetryAfter(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	c := v.ReadCreds(t, "tooken", "r", "")
	e.AddFault(t, tookentest.Fault{Method: "DELETE", Path: "/v1/tokens/", Prefix: true, Status: 429, RetryAfter: 300})
	start := time.Now()
	v.MustRun(t, "lease", "revoke", c.LeaseID)
	t.Logf("lease revoke answered in %s (queued)", time.Since(start).Round(time.Millisecond))
	// The periodic drain meets the 429 too: two DELETEs answered by the fault.
	eventually(t, 2*time.Minute+30*time.Second, "the periodic drain meets the 429", func() (bool, string) {
		n := e.Counter(t, "faults")
		return n >= 2, fmt.Sprintf("%d faulted requests", n)
	})
	if st := tokenState(t, e, c.Data.TokenID); st != "live" {
		t.Fatalf("token is %q during the 429s", st)
	}
	e.ClearFaults(t)
	cleared := time.Now()
	// Vault's periodic run comes once a minute; allow a loaded machine some slack.
	waitRevoked(t, e, c, 100*time.Second)
	t.Logf("queue drained %s after Tooken stopped answering 429 (it had asked for 300s)", time.Since(cleared).Round(time.Second))
}

// TestStaticRoleCannotTakeAnotherMountsRoot: "after set-up nobody but Vault knows the root Tooken
// secret", through a real Vault. Two mounts share one Tooken account, each with its own root, and
// other/ has rotated its root (only Vault knows it). A delegated operator whose policy allows only
// static roles and static-creds on tooken/ tries to import other/'s root token as a static role
// with rotation_grace=0 (the root of tooken/ could rotate it: tokens:write and every scope of
// it). The import is refused with a 400 naming token_id and the custody that holds the token (its
// vault_custody metadata, set by other/'s config write); no role is stored, the token is not
// rotated, and other/ keeps working.
func TestStaticRoleCannotTakeAnotherMountsRoot(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	otherRoot := createToken(t, e, "other-mount-root", "tokens:write", "deployments:write")
	v.EnableTooken(t, "other")
	if out, errOut, err := v.Run(t, Run{Stdin: otherRoot.Secret}, "write", "other/config", "url="+e.URL, "token=-"); err != nil {
		t.Fatalf("configuring other/: %v\n%s%s", err, out, errOut)
	}
	v.MustRun(t, "write", "-f", "other/rotate-root")
	v.WriteRole(t, "other", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	v.ReadWorkingCreds(t, e, "other", "r", "", "other/ before the import")
	otherUUID, _ := readData(t, v, "other/config")["mount_uuid"].(string)
	if rec, _ := e.Token(t, otherRoot.ID); rec.Metadata["vault_custody"] != "root:"+otherUUID {
		t.Fatalf("other/'s root carries vault_custody %q, want root:%s", rec.Metadata["vault_custody"], otherUUID)
	}
	rotations := rotationsOf(t, e, otherRoot.ID)

	policy := `path "tooken/static-roles/*" { capabilities = ["create", "update", "read"] }
path "tooken/static-creds/*" { capabilities = ["read"] }
`
	if out, errOut, err := v.Run(t, Run{Stdin: policy}, "policy", "write", "static-ops", "-"); err != nil {
		t.Fatalf("policy write: %v\n%s%s", err, out, errOut)
	}
	ops := strings.TrimSpace(v.MustRun(t, "token", "create", "-policy=static-ops", "-field=token"))

	out, errOut, err := v.Run(t, Run{Token: ops}, "write", "tooken/static-roles/steal",
		"token_id="+otherRoot.ID, "rotation_period=1h", "rotation_grace=0")
	if err == nil {
		stolen := v.readStaticCreds(t, "steal", ops).Data.Token
		_, otherErr, otherFailed := v.Run(t, Run{}, "read", "other/creds/r")
		t.Fatalf("an operator with only static-roles and static-creds on tooken/ holds other/'s root secret: Tooken takes it for %s "+
			"(other/'s root is %s); other/'s creds read afterwards failed=%v: %s (import answered %s)",
			e.TokenIDOf(t, stolen), otherRoot.ID, otherFailed != nil, oneLine(otherErr), oneLine(out))
	}
	said := oneLine(errOut)
	for _, want := range []string{"Code: 400", "token_id: " + otherRoot.ID, "the root token of another mount", otherUUID, "a static role cannot take it"} {
		if !strings.Contains(said, want) {
			t.Errorf("the refusal %q does not say %q", said, want)
		}
	}
	if out, _, err := v.Run(t, Run{Token: ops}, "read", "tooken/static-roles/steal"); err == nil && strings.TrimSpace(out) != "" {
		t.Errorf("the refused import stored a role: %s", oneLine(out))
	}
	if n := rotationsOf(t, e, otherRoot.ID); n != rotations {
		t.Errorf("the refused import rotated other/'s root (%d rotations, %d before)", n, rotations)
	}
	v.ReadWorkingCreds(t, e, "other", "r", "", "other/ after the refused import")
}
