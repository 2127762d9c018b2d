package tookentest

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIdempotency(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	body := `{"name":"idem","scopes":["billing:read"],"metadata":{"a":"1","b":"2"}}`

	first := do(t, s, "POST", "/v1/tokens", root, body, "Idempotency-Key", "key-1")
	wantStatus(t, first, 201)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("first answer marked replayed")
	}
	n := len(s.Tokens())

	// Same key, same body (other key order and spacing): the first answer again.
	same := `{ "metadata": {"b":"2","a":"1"}, "scopes": ["billing:read"], "name": "idem" }`
	replay := do(t, s, "POST", "/v1/tokens", root, same, "Idempotency-Key", "key-1")
	wantStatus(t, replay, 201)
	if string(replay.raw) != string(first.raw) || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay differs:\n%s\n%s", first.raw, replay.raw)
	}
	if len(s.Tokens()) != n {
		t.Fatal("replay made a token")
	}
	if replay.header.Get("X-RateLimit-Limit") == "" {
		t.Fatal("replay without rate-limit headers")
	}

	cases := []struct {
		name string
		path string
		body string
		key  string
	}{
		{"other body", "/v1/tokens", `{"name":"idem","scopes":["billing:read"]}`, "key-1"},
		{"other path", "/v1/tokens/" + first.str("id") + "/rotate", `{}`, "key-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, do(t, s, "POST", tc.path, root, tc.body, "Idempotency-Key", tc.key), 422, "idempotency_key_reused", "Idempotency-Key")
			if len(s.Tokens()) != n {
				t.Fatal("a reused key made a token")
			}
			if rec, _ := s.Token(first.str("id")); rec.RotatedAt != nil {
				t.Fatal("a reused key rotated a token")
			}
		})
	}

	// Keys belong to their caller: another caller's same key is a new request.
	other := mustCreate(t, s, root, tok("other", "tokens:write", "billing:read"))
	r := do(t, s, "POST", "/v1/tokens", other.secret, body, "Idempotency-Key", "key-1")
	wantStatus(t, r, 201)
	if r.str("id") == first.str("id") {
		t.Fatal("another caller got the first caller's answer")
	}

	// A bad request is not remembered: fix it and retry with the same key.
	wantErr(t, do(t, s, "POST", "/v1/tokens", root, `{"name":"fix me","scopes":["billing:read"]}`, "Idempotency-Key", "key-2"), 400, "invalid_request")
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, `{"name":"fixed","scopes":["billing:read"]}`, "Idempotency-Key", "key-2"), 201)

	// A refused (403) answer is remembered like a success.
	f1 := do(t, s, "POST", "/v1/tokens", root, `{"name":"x","scopes":["billing:write"]}`, "Idempotency-Key", "key-3")
	wantErr(t, f1, 403, "scope_not_held")
	f2 := do(t, s, "POST", "/v1/tokens", root, `{"name":"x","scopes":["billing:write"]}`, "Idempotency-Key", "key-3")
	if string(f2.raw) != string(f1.raw) || f2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("403 not replayed")
	}

	// Rotate replays carry the same new secret, and keep working after the
	// caller's own rotation (keys belong to the token id).
	rot := mustCreate(t, s, root, tok("rot", "tokens:write", "billing:read"))
	r1 := do(t, s, "POST", "/v1/tokens/self/rotate", rot.secret, `{"previous_secret_ttl":600}`, "Idempotency-Key", "rot-1")
	wantStatus(t, r1, 200)
	r2 := do(t, s, "POST", "/v1/tokens/self/rotate", rot.secret, `{"previous_secret_ttl":600}`, "Idempotency-Key", "rot-1")
	wantStatus(t, r2, 200)
	if r1.str("secret") == "" || string(r1.raw) != string(r2.raw) || r2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("rotate replay differs")
	}
	r3 := do(t, s, "POST", "/v1/tokens/self/rotate", r1.str("secret"), `{"previous_secret_ttl":600}`, "Idempotency-Key", "rot-1")
	if string(r3.raw) != string(r1.raw) {
		t.Fatal("replay with the new secret differs")
	}
	if got := s.Counters()["rotated"]; got != 1 {
		t.Fatalf("rotated %d times", got)
	}

	// After 24 hours the key is forgotten.
	clk.Advance(IdempotencyWindow)
	r = do(t, s, "POST", "/v1/tokens", root, body, "Idempotency-Key", "key-1")
	wantStatus(t, r, 201)
	if r.str("id") == first.str("id") || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("key remembered after 24h")
	}

	// Bad keys.
	for name, key := range map[string]string{"256 chars": strings.Repeat("k", 256), "tab": "a\tb", "non-ascii": "clé"} {
		t.Run(name, func(t *testing.T) {
			before := len(s.Tokens())
			wantErr(t, do(t, s, "POST", "/v1/tokens", root, body, "Idempotency-Key", key), 400, "invalid_request", "Idempotency-Key")
			if len(s.Tokens()) != before {
				t.Fatal("token made")
			}
		})
	}
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, body, "Idempotency-Key", strings.Repeat("k", 255)), 201)
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, body, "Idempotency-Key", " !~"), 201)

	// The request log keeps the key and the replay flag.
	var sawReplay bool
	for _, rec := range s.Requests() {
		if rec.IdempotencyKey == "key-1" && rec.Replayed {
			sawReplay = true
		}
	}
	if !sawReplay {
		t.Fatal("request log lacks the replay")
	}
}

// Two concurrent requests with one key: one is processed, the other gets
// 409 conflict while the first is in flight.
func TestIdempotencyInFlight(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	s.AddFault(Fault{Method: "POST", Path: "/v1/tokens", Count: 1, Latency: 300 * time.Millisecond})
	var wg sync.WaitGroup
	var first resp
	wg.Add(1)
	go func() {
		defer wg.Done()
		first, _ = tryCall(s, "POST", "/v1/tokens", root, tok("slow", "billing:read"), "Idempotency-Key", "k")
	}()
	time.Sleep(100 * time.Millisecond)
	second := do(t, s, "POST", "/v1/tokens", root, tok("slow", "billing:read"), "Idempotency-Key", "k")
	wg.Wait()
	wantStatus(t, first, http.StatusCreated)
	wantErr(t, second, http.StatusConflict, "conflict", "Idempotency-Key")
	third := do(t, s, "POST", "/v1/tokens", root, tok("slow", "billing:read"), "Idempotency-Key", "k")
	if string(third.raw) != string(first.raw) {
		t.Fatal("no replay after the first finished")
	}
	if n := len(s.Tokens()); n != 2 {
		t.Fatalf("%d tokens, want root + 1", n)
	}
}
