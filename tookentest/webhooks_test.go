package tookentest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type receiver struct {
	mu     sync.Mutex
	events []Event
	bad    int
	raws   []string
	fail   int // answer 500 to the next fail deliveries
}

func (rc *receiver) handler(secret string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if rc.fail > 0 {
			rc.fail--
			w.WriteHeader(500)
			return
		}
		if !VerifySignature([]byte(secret), body, r.Header.Get(SignatureHeader)) {
			rc.bad++
			w.WriteHeader(400)
			return
		}
		var e Event
		if err := json.Unmarshal(body, &e); err != nil {
			rc.bad++
			return
		}
		rc.events = append(rc.events, e)
		rc.raws = append(rc.raws, string(body))
	}
}

func (rc *receiver) wait(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		got := append([]Event(nil), rc.events...)
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWebhooks(t *testing.T) {
	const secret = "whsec_test"
	rc := &receiver{fail: 1} // the first delivery fails once and is retried
	hook := httptest.NewServer(rc.handler(secret))
	defer hook.Close()
	clk := newClock()
	s := newTestServer(t, Options{WebhookURLs: []string{hook.URL}, WebhookSecret: secret, Now: clk.Now})
	root := s.RootSecret()

	c := mustCreate(t, s, root, tok("w", "billing:read"))
	wantStatus(t, do(t, s, "POST", "/v1/tokens/"+c.id+"/rotate", root, nil), 200)
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+c.id, root, nil), 204)
	e := mustCreate(t, s, root, map[string]any{"name": "e", "scopes": []string{"billing:read"}, "expires_at": clk.Now().Add(time.Minute).Format(time.RFC3339)})
	clk.Advance(time.Minute) // the sweeper notices within a second

	got := rc.wait(t, 5)
	want := []struct{ typ, id string }{{"token.created", c.id}, {"token.rotated", c.id}, {"token.revoked", c.id}, {"token.created", e.id}, {"token.expired", e.id}}
	for i, w := range want {
		if got[i].Type != w.typ || got[i].Data.ID != w.id || !strings.HasPrefix(got[i].ID, "evt_") || got[i].CreatedAt == "" {
			t.Fatalf("event %d: %+v, want %s %s", i, got[i], w.typ, w.id)
		}
	}
	rc.mu.Lock()
	for _, raw := range rc.raws {
		if strings.Contains(raw, "tok_") || strings.Contains(raw, "secret") {
			t.Errorf("payload carries a secret: %s", raw)
		}
	}
	bad := rc.bad
	rc.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d deliveries failed verification", bad)
	}
	// Expired only once, even when the token is touched again.
	wantErr(t, do(t, s, "GET", "/v1/tokens/"+e.id, root, nil), 404, "not_found")
	time.Sleep(1500 * time.Millisecond)
	if n := len(rc.wait(t, 5)); n != 5 {
		t.Fatalf("%d events", n)
	}
	if got := s.Counters(); got["webhooks_delivered"] != 5 || got["expired"] != 1 {
		t.Fatalf("counters %v", got)
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	sig := Sign([]byte("k"), body)
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != 7+64 {
		t.Fatal(sig)
	}
	for name, tc := range map[string]struct {
		secret, body, header string
		want                 bool
	}{
		"valid":        {"k", string(body), sig, true},
		"other secret": {"j", string(body), sig, false},
		"other body":   {"k", `{"id":"evt_2"}`, sig, false},
		"no prefix":    {"k", string(body), strings.TrimPrefix(sig, "sha256="), false},
		"not hex":      {"k", string(body), "sha256=zz", false},
		"empty":        {"k", string(body), "", false},
	} {
		if got := VerifySignature([]byte(tc.secret), []byte(tc.body), tc.header); got != tc.want {
			t.Errorf("%s: %v", name, got)
		}
	}
}

func TestWebhookSecretGenerated(t *testing.T) {
	s := newTestServer(t, Options{WebhookURLs: []string{"http://127.0.0.1:1/"}})
	if !validSecretFormat(s.WebhookSecret()) {
		t.Fatal("no generated webhook secret")
	}
}
