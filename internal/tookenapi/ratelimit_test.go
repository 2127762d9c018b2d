package tookenapi

import (
	"context"
	"testing"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// RateLimit is what Tooken's latest answer said of the caller's bucket.
func TestClient_RateLimit(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: 100, Burst: 200})
	c := testClient(t, srv.URL(), srv.RootSecret(), 3)
	if _, _, ok := c.RateLimit(); ok {
		t.Fatal("a rate limit known before any answer")
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := c.Self(ctx); err != nil {
			t.Fatal(err)
		}
	}
	limit, remaining, ok := c.RateLimit()
	if !ok || limit != 200 || remaining < 190 || remaining > 197 {
		t.Errorf("after 3 calls: limit %d, remaining %d, ok %v; want 200 and about 197", limit, remaining, ok)
	}
	// Each attempt's answer counts, a refused one too: an injected 429
	// answered at once (no retry), with the headers of the bucket.
	srv.SetRateLimit(100, 50)
	c0 := testClient(t, srv.URL(), srv.RootSecret(), 0)
	srv.AddFault(tookentest.Fault{Path: "/v1/tokens/self", Status: 429, Count: 1})
	if _, err := c0.Self(ctx); err == nil {
		t.Fatal("the injected 429 did not reach the client")
	}
	if limit, _, ok := c0.RateLimit(); !ok || limit != 50 {
		t.Errorf("after a 429: limit %d, ok %v; want 50", limit, ok)
	}
	// Another secret is another caller, with a bucket of its own.
	if _, _, ok := c.WithSecret("tok_test_" + "aaaaaaaaaaaaaaaaaaaaaaaa").RateLimit(); ok {
		t.Error("WithSecret shares the rate limit of another caller")
	}
}
