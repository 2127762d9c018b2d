package tookenapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

const testUserAgent = "tookenapi-test/1"

func testClient(t *testing.T, url, secret string, maxRetries int) *Client {
	t.Helper()
	c, err := New(Options{BaseURL: url, Secret: secret, MaxRetries: maxRetries, Timeout: 5 * time.Second, UserAgent: testUserAgent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newEmulator(t testing.TB, opts tookentest.Options) *tookentest.Server {
	t.Helper()
	s := tookentest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// headerRecorder sits in front of the emulator and records request headers
// and new connections.
type headerRecorder struct {
	mu      sync.Mutex
	headers []http.Header
	conns   atomic.Int64
}

func recordHeaders(t *testing.T, srv *tookentest.Server) (*headerRecorder, string) {
	t.Helper()
	rec := &headerRecorder{}
	api := srv.Handler()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.headers = append(rec.headers, r.Header.Clone())
		rec.mu.Unlock()
		api.ServeHTTP(w, r)
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rec.conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return rec, ts.URL + "/v1"
}

func TestClient_TypedErrors(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	c := testClient(t, srv.URL(), srv.RootSecret(), 0)
	ctx := context.Background()

	_, err := c.GetToken(ctx, "tkn_doesnotexist")
	var apiErr *APIError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Code != "not_found" || apiErr.RequestID == "" {
		t.Errorf("get unknown: %#v", err)
	}
	if err := c.RevokeToken(ctx, "tkn_doesnotexist"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}

	_, err = c.CreateToken(ctx, CreateTokenRequest{Name: "x", Scopes: []string{"admin:write"}}, "")
	if !errors.Is(err, ErrScopeNotHeld) || !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "admin:write") {
		t.Errorf("scope not held: %v", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("a definitive 403 marked outcome unknown")
	}

	key := NewIdempotencyKey()
	if _, err := c.CreateToken(ctx, CreateTokenRequest{Name: "a", Scopes: []string{"billing:read"}}, key); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateToken(ctx, CreateTokenRequest{Name: "b", Scopes: []string{"billing:read"}}, key)
	if !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Errorf("key reuse: %v", err)
	}

	srv.AddFault(tookentest.Fault{Method: http.MethodGet, Path: "/v1/tokens/self", Status: 429, RetryAfter: 2, Count: 1})
	_, err = c.Self(ctx)
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter != 2*time.Second || !errors.Is(err, ErrRateLimited) {
		t.Errorf("rate limited: %#v", err)
	}

	bad := testClient(t, srv.URL(), "tok_test_"+strings.Repeat("x", 32), 0)
	if _, err := bad.Self(ctx); !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), "xxxxxxxx") {
		t.Errorf("unauthorized: %v", err)
	}
}

func TestClient_HeadersAndKeepAlive(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	rec, url := recordHeaders(t, srv)
	c := testClient(t, url, srv.RootSecret(), 3)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		tok, err := c.CreateToken(ctx, CreateTokenRequest{Name: fmt.Sprintf("t%d", i), Scopes: []string{"billing:read"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RevokeToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n := rec.conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 sequential requests, want 1 (keep-alive)", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	keys := map[string]bool{}
	for _, h := range rec.headers {
		if ua := h.Get("User-Agent"); ua != testUserAgent {
			t.Errorf("User-Agent %q", ua)
		}
		if h.Get("Authorization") != "Bearer "+srv.RootSecret() {
			t.Error("bad Authorization")
		}
		if k := h.Get("Idempotency-Key"); k != "" {
			keys[k] = true
		}
	}
	if len(keys) != 10 {
		t.Errorf("%d distinct Idempotency-Keys for 10 POSTs", len(keys))
	}
}

func TestClient_ContextHonoured(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	c := testClient(t, srv.URL(), srv.RootSecret(), 5)

	srv.AddFault(tookentest.Fault{Latency: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Self(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("slow answer: %v after %s", err, time.Since(start))
	}
	srv.ClearFaults()

	// Retries stop when the context ends.
	srv.AddFault(tookentest.Fault{Status: 503})
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Self(ctx)
	if err == nil || time.Since(start) > time.Second {
		t.Errorf("outage: %v after %s", err, time.Since(start))
	}
}

func TestClient_RetriesBounded(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	for _, maxRetries := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(maxRetries), func(t *testing.T) {
			c := testClient(t, srv.URL(), srv.RootSecret(), maxRetries)
			srv.ResetRequests()
			srv.AddFault(tookentest.Fault{Status: 502})
			_, err := c.Self(context.Background())
			srv.ClearFaults()
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 502 || !errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("err %v", err)
			}
			if n := len(srv.Requests()); n != maxRetries+1 {
				t.Errorf("%d attempts, want %d", n, maxRetries+1)
			}
		})
	}
	// 501 and 4xx are not retried.
	c := testClient(t, srv.URL(), srv.RootSecret(), 3)
	srv.ResetRequests()
	srv.AddFault(tookentest.Fault{Status: 400})
	_, err := c.Self(context.Background())
	srv.ClearFaults()
	if err == nil || len(srv.Requests()) != 1 {
		t.Errorf("400 retried: %v, %d attempts", err, len(srv.Requests()))
	}
}

func TestClient_SetSecret(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	c := testClient(t, srv.URL(), srv.RootSecret(), 0)
	ctx := context.Background()
	other, err := c.CreateToken(ctx, CreateTokenRequest{Name: "other", Scopes: []string{"tokens:read"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	c.SetSecret(other.Secret)
	self, err := c.Self(ctx)
	if err != nil || self.ID != other.ID {
		t.Fatalf("after SetSecret: %v %v", self, err)
	}
	// Concurrent swaps and calls: the race detector has its say.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if i%2 == 0 {
					c.SetSecret(srv.RootSecret())
				} else if _, err := c.Self(ctx); err != nil {
					t.Error(err)
				}
			}
		}(i)
	}
	wg.Wait()
}

// WithSecret calls as another token over the same connections; each client
// keeps its own secret.
func TestClient_WithSecret(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	rec, url := recordHeaders(t, srv)
	c := testClient(t, url, srv.RootSecret(), 0)
	ctx := context.Background()
	other, err := c.CreateToken(ctx, CreateTokenRequest{Name: "other", Scopes: []string{"tokens:read"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	d := c.WithSecret(other.Secret)
	if !d.UsesSecret(other.Secret) || d.UsesSecret(srv.RootSecret()) || !c.UsesSecret(srv.RootSecret()) {
		t.Fatal("UsesSecret does not tell the clients' secrets apart")
	}
	for i := 0; i < 3; i++ {
		if self, err := d.Self(ctx); err != nil || self.ID != other.ID {
			t.Fatalf("derived client: %v %v", self, err)
		}
		if self, err := c.Self(ctx); err != nil || self.ID != srv.RootTokenID() {
			t.Fatalf("original client after WithSecret: %v %v", self, err)
		}
	}
	d.SetSecret("tok_test_" + strings.Repeat("z", 30))
	if _, err := c.Self(ctx); err != nil {
		t.Fatalf("SetSecret on the derived client changed the original: %v", err)
	}
	if n := rec.conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential calls of both clients, want 1 (one transport)", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, h := range rec.headers {
		if ua := h.Get("User-Agent"); ua != testUserAgent {
			t.Errorf("derived client User-Agent %q", ua)
		}
	}
}

// ListTokens, UpdateToken and RotateToken are used by later work.
func TestClient_ListUpdateRotate(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	c := testClient(t, srv.URL(), srv.RootSecret(), 0)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := c.CreateToken(ctx, CreateTokenRequest{Name: fmt.Sprintf("list-%d", i), Scopes: []string{"billing:read"}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.ListTokens(ctx, ListOptions{Limit: 2, NamePrefix: "list-"})
	if err != nil || len(page.Data) != 2 || page.NextCursor == nil {
		t.Fatalf("page 1: %+v %v", page, err)
	}
	page2, err := c.ListTokens(ctx, ListOptions{Limit: 2, NamePrefix: "list-", Cursor: *page.NextCursor})
	if err != nil || len(page2.Data) != 1 {
		t.Fatalf("page 2: %+v %v", page2, err)
	}
	id := page.Data[0].ID

	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	tok, err := c.UpdateToken(ctx, id, UpdateTokenRequest{ExpiresAt: &exp, Metadata: map[string]string{"a": "b"}})
	if err != nil || tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(exp) || tok.Metadata["a"] != "b" {
		t.Fatalf("update: %v %v", tok, err)
	}
	// Metadata merges: a key set, another removed, the rest kept.
	if _, err := c.UpdateToken(ctx, id, UpdateTokenRequest{Metadata: map[string]string{"c": "d"}}); err != nil {
		t.Fatal(err)
	}
	tok, err = c.UpdateToken(ctx, id, UpdateTokenRequest{Metadata: map[string]string{"e": "f"}, RemoveMetadata: []string{"a"}})
	if err != nil || len(tok.Metadata) != 2 || tok.Metadata["c"] != "d" || tok.Metadata["e"] != "f" {
		t.Fatalf("merged update: %v %v", tok.Metadata, err)
	}

	key := NewIdempotencyKey()
	rot, err := c.RotateToken(ctx, srv.RootTokenID(), time.Minute, key)
	if err != nil || rot.Secret == "" || rot.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotate: %v %v", rot, err)
	}
	again, err := c.RotateToken(ctx, srv.RootTokenID(), time.Minute, key)
	if err != nil || again.Secret != rot.Secret {
		t.Fatalf("rotate replay: %v", err)
	}
	c.SetSecret(rot.Secret)
	if _, err := c.Self(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClient_TokenStringHidesSecret(t *testing.T) {
	tok := &Token{ID: "tkn_1", Name: "n", Secret: "tok_test_SUPERSECRETSUPERSECRET123"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{tok, *tok} {
			if s := fmt.Sprintf(f, v); strings.Contains(s, "SUPERSECRET") {
				t.Errorf("%s prints the secret: %s", f, s)
			}
		}
	}
}

func TestClient_BadURL(t *testing.T) {
	for _, u := range []string{"", "api.tooken.io", "https://user:pass@api.tooken.io/v1", "https://api.tooken.io/v1?token=x", "gopher://x/v1"} {
		if _, err := New(Options{BaseURL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// No secret (the root's or an issued one) ever reaches a log line or an error.
// A server that echoes the secret in an error answer: the client's error
// (quoted in responses, logs and stored status) must not repeat it.
func TestClient_ErrorAnswerRedacted(t *testing.T) {
	const secret = "tok_live_abcdefghijklmnopqrstuvwxyz0123"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error": {"code": "unauthorized", "message": "unknown secret %s", "request_id": "req_1"}}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	}))
	t.Cleanup(ts.Close)
	c := testClient(t, ts.URL+"/v1", secret, 0)
	_, err := c.Self(context.Background())
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("want unauthorized, got %v", err)
	}
	if strings.Contains(err.Error(), "abcdefghij") || !strings.Contains(err.Error(), "unknown secret [redacted secret]") {
		t.Errorf("error = %q", err)
	}
}
