package tookentest

import (
	"math"
	"strconv"
	"testing"
	"time"
)

func TestRateLimit(t *testing.T) {
	s := newTestServer(t, Options{RateLimit: 0.01, Burst: 3})
	root := s.RootSecret()
	other := mustCreate(t, s, root, tok("other", "tokens:read")) // root: 1 used
	for i := 2; i >= 1; i-- {
		r := do(t, s, "GET", "/v1/tokens/self", root, nil)
		wantStatus(t, r, 200)
		if got := r.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(i-1) {
			t.Fatalf("remaining %s, want %d", got, i-1)
		}
		if r.header.Get("X-RateLimit-Limit") != "3" {
			t.Fatalf("limit %s", r.header.Get("X-RateLimit-Limit"))
		}
		reset, err := strconv.ParseInt(r.header.Get("X-RateLimit-Reset"), 10, 64)
		if err != nil || reset < time.Now().Unix()+100 { // 1 token per 100 s
			t.Fatalf("reset %s", r.header.Get("X-RateLimit-Reset"))
		}
	}
	before := len(s.Tokens())
	r := do(t, s, "POST", "/v1/tokens", root, tok("x", "billing:read"))
	wantErr(t, r, 429, "rate_limited")
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 100 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if r.header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatal("remaining on 429")
	}
	if len(s.Tokens()) != before {
		t.Fatal("a rate-limited create made a token")
	}
	if s.Counters()["rate_limited"] != 1 {
		t.Fatal("counter")
	}
	// Another caller has its own bucket.
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", other.secret, nil), 200)
	// Unauthenticated answers carry the headers too.
	r = do(t, s, "GET", "/v1/tokens", "", nil)
	wantErr(t, r, 401, "unauthorized")
	if r.header.Get("X-RateLimit-Limit") != "3" || r.header.Get("X-RateLimit-Remaining") != "3" || r.header.Get("X-RateLimit-Reset") == "" {
		t.Fatalf("401 headers %v", r.header)
	}

	// SetRateLimit refills every bucket.
	s.SetRateLimit(1000, 50)
	r = do(t, s, "GET", "/v1/tokens/self", root, nil)
	wantStatus(t, r, 200)
	if r.header.Get("X-RateLimit-Limit") != "50" || r.header.Get("X-RateLimit-Remaining") != "49" {
		t.Fatalf("after SetRateLimit: %v", r.header)
	}
	if rps, burst := s.RateLimit(); rps != 1000 || burst != 50 {
		t.Fatal(rps, burst)
	}
	// Unlimited.
	s.SetRateLimit(-1, 0)
	for i := 0; i < 300; i++ {
		r = do(t, s, "GET", "/v1/tokens/self", root, nil)
		wantStatus(t, r, 200)
	}
	if r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(math.MaxInt32) {
		t.Fatalf("unlimited remaining %s", r.header.Get("X-RateLimit-Remaining"))
	}
	// Defaults.
	s.SetRateLimit(0, 0)
	if rps, burst := s.RateLimit(); rps != DefaultRateLimit || burst != DefaultBurst {
		t.Fatal(rps, burst)
	}
	r = do(t, s, "GET", "/v1/tokens/self", root, nil)
	if r.header.Get("X-RateLimit-Limit") != "200" {
		t.Fatal(r.header)
	}
}
