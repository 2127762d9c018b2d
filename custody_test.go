package tooken

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// captureServer records the Authorization header of every request it gets,
// and answers with handler (nil: 404 to everything).
type captureServer struct {
	*httptest.Server
	mu    sync.Mutex
	auths []string
}

func newCaptureServer(t *testing.T, handler http.Handler) *captureServer {
	t.Helper()
	c := &captureServer{}
	if handler == nil {
		handler = http.NotFoundHandler()
	}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.auths = append(c.auths, r.Header.Get("Authorization"))
		c.mu.Unlock()
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// seen is every Authorization header received so far.
func (c *captureServer) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.auths...)
}

func (c *captureServer) sawSecret(secret string) bool {
	for _, a := range c.seen() {
		if strings.Contains(a, secret) {
			return true
		}
	}
	return false
}

// A write that points the engine at another url or CA must carry the token
// again; without it the write is refused before anything is sent, whatever
// verify_connection says, and the stored secret never reaches the new URL
// (not by the write, not by a later creds read).
func TestCustody_URLChangeNeedsToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	must(t)(e.write("rotate-root", nil)) // from now on only Vault knows the root secret
	stored, _ := readConfig(context.Background(), e.storage)
	capture := newCaptureServer(t, nil)

	const rule = "token: required when url or ca_cert changes: the stored root secret is only sent to the URL it was stored for"
	refused := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"url alone", map[string]any{"url": capture.URL + "/v1"}, []string{rule}},
		{"url, verify_connection=false", map[string]any{"url": capture.URL + "/v1", "verify_connection": false}, []string{rule}},
		{"ca_cert alone", map[string]any{"ca_cert": otherCA(t)}, []string{rule}},
		{"ca_cert, verify_connection=false", map[string]any{"ca_cert": otherCA(t), "verify_connection": false}, []string{rule}},
		{"same host, another path", map[string]any{"url": srv.URL() + "2"}, []string{rule}},
		{"url and a bad field: both named", map[string]any{"url": capture.URL + "/v1", "max_retries": 99}, []string{rule, "max_retries"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			srv.ResetRequests()
			e.storage.reset()
			resp, err := e.write(configPath, tc.data)
			mustUserError(t, resp, err, tc.want...)
			if n := e.storage.puts.Load(); n != 0 {
				t.Errorf("%d storage writes", n)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("%d requests to Tooken during a refused write", n)
			}
			must(t)(e.read("creds/r")) // still from the stored URL
		})
	}
	if got := capture.seen(); len(got) != 0 {
		t.Errorf("the capture server got %d requests", len(got))
	}
	if after, _ := readConfig(context.Background(), e.storage); after.URL != stored.URL || after.Token != stored.Token || after.CACert != stored.CACert {
		t.Error("a refused write changed the config")
	}

	// The same URL spelled another way is the same destination.
	for _, same := range []string{srv.URL() + "/", strings.Replace(srv.URL(), "http://", "HTTP://", 1), " " + srv.URL() + "\n"} {
		must(t)(e.write(configPath, map[string]any{"url": same}))
	}

	// With a token for it, the new URL gets that token, never the stored one.
	other := "tok_test_" + strings.Repeat("N", 30)
	must(t)(e.write(configPath, map[string]any{"url": capture.URL + "/v1", "token": other, "verify_connection": false}))
	_, _ = e.read("creds/r")
	if capture.sawSecret(stored.Token) {
		t.Fatal("the stored root secret reached the new URL")
	}
	if !capture.sawSecret(other) {
		t.Error("the new URL did not get the new token (the test proves nothing)")
	}
}

func TestCustody_NormalizeBaseURL(t *testing.T) {
	same := []string{
		"https://api.tooken.io/v1", "https://API.Tooken.io/v1", "https://api.tooken.io:443/v1",
		"https://api.tooken.io/v1/", "  https://api.tooken.io/v1\n", "HTTPS://api.tooken.io/v1//",
	}
	for _, u := range same {
		if got := normalizeBaseURL(u); got != "https://api.tooken.io/v1" {
			t.Errorf("%q -> %q", u, got)
		}
	}
	differ := []string{
		"http://api.tooken.io/v1", "https://api.tooken.io:8443/v1", "https://api.tooken.io/V1",
		"https://api.tooken.io/v2", "https://api.tooken.io", "https://api.tooken.io.evil.example/v1",
	}
	for _, u := range differ {
		if destinationOf(u, "").sameAs(destinationOf("https://api.tooken.io/v1", "")) {
			t.Errorf("%q counted as the same destination", u)
		}
	}
	if !destinationOf("http://[::1]:80/v1", "").sameAs(destinationOf("http://[::1]/v1", "")) {
		t.Error("IPv6 default port")
	}
	ca := otherCA(t)
	if !destinationOf("https://x/v1", ca).sameAs(destinationOf("https://x/v1", "\n"+ca+"\n")) ||
		destinationOf("https://x/v1", ca).sameAs(destinationOf("https://x/v1", "")) ||
		destinationOf("https://x/v1", ca).sameAs(destinationOf("https://x/v1", otherCA(t))) {
		t.Error("CA fingerprint")
	}
}

// A verification answer that is not a Tooken token object fails the write:
// nothing is stored, never an empty token_id.
func TestCustody_VerificationNeedsATokenObject(t *testing.T) {
	const created = `"created_at": "2026-01-01T00:00:00Z"`
	cases := map[string]struct{ contentType, body string }{
		"200 {}":             {"application/json", `{}`},
		"200 empty":          {"application/json", ``},
		"200 not JSON":       {"application/json", `hello`},
		"200 HTML":           {"text/html", `{"id": "tkn_1a2b3c", "scopes": [], ` + created + `}`},
		"scopes not a list":  {"application/json", `{"id": "tkn_1a2b3c", "scopes": "a:b", ` + created + `}`},
		"no created_at":      {"application/json", `{"id": "tkn_1a2b3c", "scopes": ["a:b"]}`},
		"ill-formed id":      {"application/json", `{"id": "x y", "scopes": ["a:b"], ` + created + `}`},
		"id of wrong type":   {"application/json", `{"id": 12, "scopes": ["a:b"], ` + created + `}`},
		"an error envelope ": {"application/json", `{"error": {"code": "ok"}}`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			fake := newCaptureServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				fmt.Fprint(w, tc.body)
			}))
			e := getTestBackend(t)
			resp, err := e.write(configPath, map[string]any{"url": fake.URL + "/v1", "token": "tok_test_" + strings.Repeat("q", 30)})
			mustUserError(t, resp, err, "url: ", "is not a Tooken API")
			if cfg, _ := readConfig(context.Background(), e.storage); cfg != nil {
				t.Errorf("stored with token_id %q", cfg.TokenID)
			}
		})
	}
}

// Errors from a URL not yet verified say what failed, never what the server
// said, and never which kind of transport failure it was.
func TestCustody_VerificationErrorsSayWhatFailed(t *testing.T) {
	const remote = "internal-banner-4f2a tok_test_EchoedEchoedEchoedEchoed"
	tookenShaped := func(status int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error": {"code": "internal", "message": %q, "request_id": "req_internal"}}`, remote)
		})
	}
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL + "/v1"
	refused.Close()
	closer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	go func() {
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cases := []struct {
		name string
		url  string
		want string
	}{
		{"connection refused", refusedURL, "url: cannot reach " + refusedURL},
		{"connection closed at once", "http://" + closer.Addr().String() + "/v1", "url: cannot reach http://" + closer.Addr().String() + "/v1"},
		{"a 500 with a Tooken-shaped body", newCaptureServer(t, tookenShaped(500)).URL + "/v1", "is unavailable (GET /tokens/self: HTTP 500)"},
		{"a 403 with a Tooken-shaped body", newCaptureServer(t, tookenShaped(403)).URL + "/v1", "is not a Tooken API (GET /tokens/self: HTTP 403)"},
		{"a 404 (no /v1)", newCaptureServer(t, nil).URL, "is not a Tooken API"},
		{"link-local", "http://169.254.169.254/latest", "url: must not be a link-local address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			resp, err := e.write(configPath, map[string]any{"url": tc.url, "token": "tok_test_" + strings.Repeat("q", 30), "max_retries": 0})
			mustUserError(t, resp, err, tc.want)
			msg := resp.Error().Error()
			for _, leak := range []string{"internal-banner", "Echoed", "req_internal", "refused", "EOF", "reset", "dial"} {
				if strings.Contains(msg, leak) {
					t.Errorf("error repeats %q: %s", leak, msg)
				}
			}
		})
	}
}

// A 404 counts as "already revoked" only from a proven Tooken API. With a
// base URL that is not one (the emulator without /v1, stored with
// verify_connection=false), revokes are queued and pending records kept,
// with every token alive; once the url is fixed (with the token again) the
// queue drains and the rollback finishes.
func TestCustody_404FromAnUnprovenURL(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	var leases []*logical.Secret
	for i := 0; i < 3; i++ {
		l := lease(must(t)(e.read("creds/r")))
		// Leases of an earlier version (no destination recorded, like the
		// pending record): their revokes go to the config's url, whose 404
		// is what this test is about. A lease that records its destination
		// waits for it (TestRevokeQueue_WaitsForTheTookenThatIssuedTheToken).
		delete(l.InternalData, internalDestURL)
		leases = append(leases, l)
	}
	pending := e.pendingRecord("r", time.Hour)

	must(t)(e.write(configPath, map[string]any{"url": srv.AdminURL(), "token": srv.RootSecret(), "verify_connection": false}))
	for _, l := range leases {
		must(t)(e.revoke(l)) // queued, not "already gone"
	}
	for _, shift := range []time.Duration{5 * time.Minute, 10 * time.Minute} { // every backoff over
		e.shiftClock(shift)
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(issuedLive(srv)); n != 3 {
		t.Fatalf("%d tokens live upstream, want 3 (none revoked through the wrong URL)", n)
	}
	if ids := e.queueIDs(); len(ids) != 3 {
		t.Fatalf("queue %v, want the 3 revokes", ids)
	}
	if rec := e.issuance(pending.Key); rec == nil || rec.State != issueStatePending || rec.Attempts == 0 {
		t.Fatalf("pending record after rollbacks through the wrong URL: %+v", rec)
	}
	if q := e.queueEntry(e.queueIDs()[0]); !strings.Contains(q.LastError, "not been proven a Tooken API") {
		t.Errorf("queue entry's last error: %q", q.LastError)
	}

	must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret()}))
	e.shiftClock(20 * time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens live after the url was fixed", len(live))
	}
	if ids := e.queueIDs(); len(ids) != 0 {
		t.Errorf("queue after the url was fixed: %v", ids)
	}
	if keys := e.issuanceKeys(); len(keys) != 0 {
		t.Errorf("issuance records after the url was fixed: %v", keys)
	}
}

// A creds read that meets "503 Retry-After: 3600" answers a 502 naming the
// ask within seconds, not after the request's deadline, and leaves no token.
func TestCustody_CredsDoNotWaitForALongRetryAfter(t *testing.T) {
	for _, status := range []int{503, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{})
			e := getTestBackend(t)
			e.configure(srv, nil)
			e.writeRole("r", map[string]any{"scopes": "deployments:write"})
			srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Status: status, RetryAfter: 3600})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // Vault's request deadline
			defer cancel()
			start := time.Now()
			resp, err := e.b.HandleRequest(ctx, e.request(logical.ReadOperation, "creds/r", nil))
			elapsed := time.Since(start)
			if err == nil {
				t.Fatalf("creds read succeeded: %v", resp)
			}
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway || !strings.Contains(err.Error(), "retry after 1h ") {
				t.Errorf("%v, want a 502 naming the ask", err)
			}
			if elapsed > 30*time.Second {
				t.Errorf("answered after %s", elapsed)
			}
			t.Logf("answered in %s", elapsed.Round(time.Millisecond))
			srv.ClearFaults()
			if live := issuedLive(srv); len(live) != 0 {
				t.Errorf("%d tokens live", len(live))
			}
		})
	}
}

// The revoke queue honours Retry-After across drains but never holds for
// longer than half of Vault's rollback interval: whatever Tooken asked for
// (5 minutes, a day), the queue drains at the first periodic run after
// Tooken answers again.
func TestCustody_QueuePauseHasACeiling(t *testing.T) {
	for _, tc := range []struct{ status, retryAfter int }{{429, 300}, {429, 86400}, {503, 3600}} {
		t.Run(fmt.Sprintf("%d Retry-After %d", tc.status, tc.retryAfter), func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{})
			e := getTestBackend(t)
			e.configure(srv, nil)
			e.writeRole("r", map[string]any{"scopes": "deployments:write"})
			resp := must(t)(e.read("creds/r"))
			id := srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: tc.status, RetryAfter: tc.retryAfter})
			must(t)(e.revoke(lease(resp))) // queued at once: the ask is far over the client's ceiling
			if len(e.queueIDs()) != 1 {
				t.Fatal("the revoke was not queued")
			}
			e.shiftClock(time.Minute) // the next periodic run: still refused, the queue pauses
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if rep := e.b.queue.lastReport(); !rep.RateLimited || rep.Revoked != 0 {
				t.Fatalf("drain during the fault: %+v", rep)
			}
			srv.RemoveFault(id)
			e.shiftClock(2 * time.Minute) // the run after Tooken answers again
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if ids := e.queueIDs(); len(ids) != 0 {
				t.Fatalf("queue still holds %v one run after Tooken answers again", ids)
			}
			if _, ok := srv.Authenticate(resp.Data["token"].(string)); ok {
				t.Error("the token still works")
			}
		})
	}
}

// A rollback pass starts no record's upstream work after its budget: with
// Tooken slow, the pass leaves the rest for the next one, and every record
// is finished over a few passes.
func TestCustody_RollbackPassHasABudget(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.b.issued.passBudget = 150 * time.Millisecond
	for i := 0; i < 6; i++ {
		e.pendingRecord("r", time.Hour)
	}
	srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: 100 * time.Millisecond})
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	first := e.b.issued.lastReport()
	if first.Finished == 0 || first.Finished >= 6 || len(e.issuanceKeys()) != 6-first.Finished {
		t.Fatalf("first pass: %+v, %d records left", first, len(e.issuanceKeys()))
	}
	for i := 0; i < 6 && len(e.issuanceKeys()) > 0; i++ {
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
	}
	if keys := e.issuanceKeys(); len(keys) != 0 {
		t.Errorf("records left after the passes: %v", keys)
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens live", len(live))
	}
}

// A create that Tooken carried out but whose answer is not a token object
// (mangled on the way) is "outcome unknown", not a refusal: the engine
// replays it with the same Idempotency-Key, learns the token and revokes
// it. No token is left alive.
func TestCustody_MangledCreateAnswerLeavesNoToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	api := srv.Handler()
	var mangled sync.Once
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/tokens" {
			done := false
			mangled.Do(func() {
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, r) // Tooken creates the token...
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(rec.Code)
				fmt.Fprint(w, `{"id": 42}`) // ...and its answer arrives mangled
				done = true
			})
			if done {
				return
			}
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	e := getTestBackend(t)
	must(t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": srv.RootSecret(), "max_retries": 0}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	resp, err := e.read("creds/r")
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a creds read with a mangled answer succeeded")
	}
	if got := srv.Counters()["created"]; got != 1 {
		t.Fatalf("%d tokens created upstream, want 1 (the test proves nothing)", got)
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens alive after a create whose answer was mangled", len(live))
	}
	if keys := e.issuanceKeys(); len(keys) != 0 {
		t.Errorf("issuance records left: %v", keys)
	}
}
