package tookenapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// fakeServer answers every request with status, content type and body, and
// counts the requests.
func fakeServer(t *testing.T, status int, contentType, body string) (url string, calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/v1", calls
}

// A Retry-After longer than MaxRetryWait (or past the deadline) is not
// waited for: the call fails at once with the server's ask; a short one is
// honoured.
func TestClient_RetryAfterCeiling(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	cases := []struct {
		name       string
		fault      tookentest.Fault
		deadline   time.Duration
		wantCalls  int
		wantAsk    time.Duration
		wantErr    error
		minElapsed time.Duration
	}{
		{"503 asking for an hour", tookentest.Fault{Status: 503, RetryAfter: 3600}, 0, 1, time.Hour, ErrOutcomeUnknown, 0},
		{"429 asking for a day", tookentest.Fault{Status: 429, RetryAfter: 86400}, 0, 1, 24 * time.Hour, ErrRateLimited, 0},
		{"429 asking for just over the ceiling", tookentest.Fault{Status: 429, RetryAfter: int(MaxRetryWait/time.Second) + 1}, 0, 1, MaxRetryWait + time.Second, ErrRateLimited, 0},
		{"429 asking for past the deadline", tookentest.Fault{Status: 429, RetryAfter: 2}, time.Second, 1, 2 * time.Second, ErrRateLimited, 0},
		{"503 asking for a second is honoured", tookentest.Fault{Status: 503, RetryAfter: 1, Count: 1}, 0, 2, 0, nil, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testClient(t, srv.URL(), srv.RootSecret(), 3)
			srv.ResetRequests()
			tc.fault.Method, tc.fault.Path = http.MethodGet, "/v1/tokens/self"
			id := srv.AddFault(tc.fault)
			defer srv.RemoveFault(id)
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			start := time.Now()
			_, err := c.Self(ctx)
			elapsed := time.Since(start)
			if n := len(srv.Requests()); n != tc.wantCalls {
				t.Errorf("%d attempts, want %d", n, tc.wantCalls)
			}
			if elapsed < tc.minElapsed {
				t.Errorf("answered after %s, before the server's ask (%s)", elapsed, tc.minElapsed)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("short Retry-After not honoured: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if ask, ok := RetryAfter(err); !ok || ask != tc.wantAsk {
				t.Errorf("RetryAfter(err) = %s %v, want %s", ask, ok, tc.wantAsk)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("retry after %ds", int64(tc.wantAsk/time.Second))) {
				t.Errorf("error does not name the ask: %v", err)
			}
		})
	}
}

// A 2xx answer that is not a Tooken token object is a failed call
// (ErrInvalidAnswer, outcome unknown: the server took it) that never quotes
// the body, and proves nothing.
func TestClient_InvalidAnswers(t *testing.T) {
	const now = `"created_at": "2026-01-01T00:00:00Z"`
	cases := map[string]struct{ contentType, body string }{
		"empty object":        {"application/json", `{}`},
		"no body":             {"application/json", ``},
		"not JSON":            {"application/json", `<html>tok_test_abcdefghijklmnopqrstuvwxyz</html>`},
		"HTML content type":   {"text/html", `{"id": "tkn_1a2b", "scopes": [], ` + now + `}`},
		"no content type":     {"", `{"id": "tkn_1a2b", "scopes": [], ` + now + `}`},
		"id missing":          {"application/json", `{"scopes": ["a:b"], ` + now + `}`},
		"id ill-formed":       {"application/json", `{"id": "../../admin", "scopes": ["a:b"], ` + now + `}`},
		"id not a string":     {"application/json", `{"id": 7, "scopes": ["a:b"], ` + now + `}`},
		"no created_at":       {"application/json", `{"id": "tkn_1a2b", "scopes": ["a:b"]}`},
		"scopes not a list":   {"application/json", `{"id": "tkn_1a2b", "scopes": "a:b", ` + now + `}`},
		"scopes missing":      {"application/json", `{"id": "tkn_1a2b", ` + now + `}`},
		"a JSON list instead": {"application/json", `[]`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			url, _ := fakeServer(t, http.StatusOK, tc.contentType, tc.body)
			c := testClient(t, url, "tok_test_"+strings.Repeat("s", 30), 0)
			_, err := c.Self(context.Background())
			if !errors.Is(err, ErrInvalidAnswer) || !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v, want ErrInvalidAnswer and ErrOutcomeUnknown", err)
			}
			if strings.Contains(err.Error(), "tok_test_") || strings.Contains(err.Error(), "admin") {
				t.Errorf("error quotes the answer: %v", err)
			}
			if c.Proven() {
				t.Error("an invalid answer proved the URL")
			}
		})
	}
	t.Run("a valid token object proves the URL", func(t *testing.T) {
		url, _ := fakeServer(t, http.StatusOK, "application/json; charset=utf-8", `{"id": "tkn_1a2b", "scopes": [], `+now+`}`)
		c := testClient(t, url, "tok_test_"+strings.Repeat("s", 30), 0)
		if c.Proven() {
			t.Fatal("a new client is proven")
		}
		if _, err := c.Self(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !c.Proven() || !c.WithSecret("tok_test_"+strings.Repeat("o", 30)).Proven() {
			t.Error("a valid token object did not prove the URL (for the client and those it derives)")
		}
	})
}

// A 404 counts as ErrNotFound only from a proven Tooken API: the client
// proves the URL first, with one GET /tokens/self.
func TestClient_NotFoundNeedsProof(t *testing.T) {
	t.Run("a server that answers 404 to everything", func(t *testing.T) {
		url, calls := fakeServer(t, http.StatusNotFound, "application/json", `{"error": {"code": "not_found", "message": "no"}}`)
		c := testClient(t, url, "tok_test_"+strings.Repeat("s", 30), 0)
		err := c.RevokeToken(context.Background(), "tkn_1a2b")
		if errors.Is(err, ErrNotFound) || !errors.Is(err, ErrNotProven) {
			t.Fatalf("err = %v, want ErrNotProven and not ErrNotFound", err)
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			t.Errorf("the error unwraps to the 404 answer: %v", apiErr)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("%d calls, want the DELETE and one GET /tokens/self", n)
		}
		if _, err := c.Self(context.Background()); !errors.Is(err, ErrNotProven) || errors.Is(err, ErrNotFound) {
			t.Errorf("GET /tokens/self answered 404: %v", err)
		}
	})
	t.Run("the emulator at its root (no /v1)", func(t *testing.T) {
		srv := newEmulator(t, tookentest.Options{})
		c := testClient(t, srv.AdminURL(), srv.RootSecret(), 0)
		if err := c.RevokeToken(context.Background(), srv.RootTokenID()); !errors.Is(err, ErrNotProven) {
			t.Fatalf("err = %v, want ErrNotProven", err)
		}
		if _, ok := srv.Authenticate(srv.RootSecret()); !ok {
			t.Fatal("the root died")
		}
	})
	t.Run("a proven Tooken API", func(t *testing.T) {
		srv := newEmulator(t, tookentest.Options{})
		c := testClient(t, srv.URL(), srv.RootSecret(), 0)
		srv.ResetRequests()
		if err := c.RevokeToken(context.Background(), "tkn_"+strings.Repeat("0", 24)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if err := c.RevokeToken(context.Background(), "tkn_"+strings.Repeat("1", 24)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if n := len(srv.Requests()); n != 3 {
			t.Errorf("%d calls, want 2 DELETEs and one proof", n)
		}
	})
}

// A revoke is done only when the API answers 204 No Content from a proven
// Tooken API: a catch-all server's 2xx (a single-page app answering 200
// text/html to every path, a gateway's 202, even a 204) proves nothing of
// the token, nor of the URL.
func TestClient_RevokeNeeds204FromAProvenURL(t *testing.T) {
	for name, tc := range map[string]struct {
		status      int
		contentType string
		body        string
		want        []error
		calls       int64 // the DELETE, and GET /tokens/self when a 204 needs the proof
	}{
		"200 text/html":        {http.StatusOK, "text/html", "<html>welcome</html>", []error{ErrInvalidAnswer, ErrOutcomeUnknown}, 1},
		"202 application/json": {http.StatusAccepted, "application/json", `{}`, []error{ErrInvalidAnswer, ErrOutcomeUnknown}, 1},
		"204 from anything":    {http.StatusNoContent, "", "", []error{ErrNotProven}, 2},
	} {
		t.Run(name, func(t *testing.T) {
			url, calls := fakeServer(t, tc.status, tc.contentType, tc.body)
			c := testClient(t, url, "tok_test_"+strings.Repeat("s", 30), 0)
			err := c.RevokeToken(context.Background(), "tkn_1a2b")
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			if errors.Is(err, ErrNotFound) || err == nil {
				t.Errorf("err = %v: counts as revoked", err)
			}
			if n := calls.Load(); n != tc.calls {
				t.Errorf("%d calls, want %d", n, tc.calls)
			}
			if c.Proven() {
				t.Error("the answer proved the URL")
			}
		})
	}
	t.Run("a Tooken API, proven once by the first revoke", func(t *testing.T) {
		srv := newEmulator(t, tookentest.Options{})
		c := testClient(t, srv.URL(), srv.RootSecret(), 0)
		var ids []string
		for _, name := range []string{"a", "b"} {
			tok, err := c.CreateToken(context.Background(), CreateTokenRequest{Name: name, Scopes: []string{"deployments:read"}}, "")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tok.ID)
		}
		c = testClient(t, srv.URL(), srv.RootSecret(), 0) // not proven
		srv.ResetRequests()
		for _, id := range ids {
			if err := c.RevokeToken(context.Background(), id); err != nil {
				t.Fatalf("revoke %s: %v", id, err)
			}
			if rec, _ := srv.Token(id); rec.State != "revoked" {
				t.Fatalf("token %s is %q after its revoke", id, rec.State)
			}
		}
		if n := len(srv.Requests()); n != 3 {
			t.Errorf("%d calls, want 2 DELETEs and one proof", n)
		}
	})
}

// Before a URL is proven, a transport failure says "cannot reach" and
// nothing finer (refused, reset, EOF, timeout read the same); the cause
// stays available to errors.Is / errors.As.
func TestClient_UnprovenTransportErrorsAreCoarse(t *testing.T) {
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL + "/v1"
	refused.Close()

	eof, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eof.Close() })
	go func() {
		for {
			conn, err := eof.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()

	for name, url := range map[string]string{"refused": refusedURL, "closed at once": "http://" + eof.Addr().String() + "/v1"} {
		t.Run(name, func(t *testing.T) {
			c := testClient(t, url, "tok_test_"+strings.Repeat("s", 30), 0)
			_, err := c.Self(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if want := "tooken: GET /tokens/self: cannot reach the server"; err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
		})
	}
	t.Run("the cause is kept", func(t *testing.T) {
		c := testClient(t, refusedURL, "tok_test_"+strings.Repeat("s", 30), 0)
		_, err := c.Self(context.Background())
		if !IsUnreachable(err) {
			t.Errorf("IsUnreachable(%v) = false", err)
		}
	})
}

// Link-local addresses (cloud metadata services) are never called: refused
// in the URL, and at dial time after name resolution.
func TestClient_LinkLocalRefused(t *testing.T) {
	for _, u := range []string{
		"http://169.254.169.254/v1", "https://169.254.0.1:8443/v1", "http://[fe80::1]/v1",
		"http://[fe80::1%25eth0]/v1", "http://[::ffff:169.254.169.254]/v1",
	} {
		if _, err := ParseBaseURL(u); err == nil || !strings.Contains(err.Error(), "link-local") {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8300/v1", "https://10.0.0.1/v1", "https://api.tooken.io/v1", "http://[::1]:8300/v1"} {
		if _, err := ParseBaseURL(u); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for addr, refused := range map[string]bool{
		"169.254.169.254:80": true, "[fe80::1]:443": true, "[::ffff:169.254.1.1]:80": true,
		"127.0.0.1:8300": false, "10.1.2.3:443": false,
	} {
		if err := refuseLinkLocal("tcp", addr, nil); errors.Is(err, ErrForbiddenAddress) != refused {
			t.Errorf("dial %s: %v", addr, err)
		}
	}
}
