package tooken

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

func (e *testEnv) queueIDs() []string {
	e.t.Helper()
	ids, err := e.storage.Storage.List(context.Background(), revokeQueuePrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

func (e *testEnv) queueEntry(id string) *revokeQueueEntry {
	e.t.Helper()
	q, err := getQueueEntry(context.Background(), e.storage.Storage, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return q
}

// A revoke that cannot reach Tooken queues the token and succeeds; the
// periodic func drains the queue once Tooken is back.
func TestRevokeQueue_OutageThenDrain(t *testing.T) {
	cases := []struct {
		name   string
		outage func(srv *tookentest.Server)
	}{
		{"emulator down", func(srv *tookentest.Server) { srv.SetDown(true) }},
		{"503 on every DELETE", func(srv *tookentest.Server) {
			srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 503})
		}},
		{"answers slower than the budget", func(srv *tookentest.Server) {
			srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 503, Latency: 300 * time.Millisecond})
		}},
		{"429 beyond the budget", func(srv *tookentest.Server) {
			srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 429, RetryAfter: 30})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{})
			e := getTestBackend(t)
			e.configure(srv, map[string]any{"max_retries": 1})
			e.writeRole("r", map[string]any{"scopes": "deployments:write"})
			g := e.b.guard
			g.revokeBudget = 500 * time.Millisecond
			g.retryBase, g.retryMax = time.Minute, time.Minute

			var secrets []string
			for i := 0; i < 3; i++ {
				resp := must(t)(e.read("creds/r"))
				secrets = append(secrets, resp.Data["token"].(string))
				tc.outage(srv)
				start := time.Now()
				must(t)(e.revoke(lease(resp))) // success: queued
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("revoke took %s", d)
				}
				srv.SetDown(false)
				srv.ClearFaults()
			}
			ids := e.queueIDs()
			if len(ids) != 3 {
				t.Fatalf("queue = %v, want 3 entries", ids)
			}
			q := e.queueEntry(ids[0])
			if q.IssueKey == "" || q.ExpiresAt.IsZero() || q.Attempts != 1 || q.LastError == "" {
				t.Errorf("queue entry %+v", q)
			}
			if len(issuedLive(srv)) != 3 {
				t.Fatal("tokens should still be live while queued")
			}
			if !strings.Contains(e.logs.String(), "queued for revocation") {
				t.Error("queueing is not logged")
			}

			// Not due yet: nothing happens; once warm, without a storage read.
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if len(e.queueIDs()) != 3 {
				t.Fatal("drained before the backoff")
			}
			e.storage.reset()
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if g, p := e.storage.gets.Load(), e.storage.puts.Load(); g != 0 || p != 0 {
				t.Errorf("idle periodic run: %d Gets, %d Puts", g, p)
			}
			// Due: every token dies, entries and records go.
			e.shiftClock(2 * time.Minute)
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if ids := e.queueIDs(); len(ids) != 0 {
				t.Errorf("queue after drain: %v", ids)
			}
			if live := issuedLive(srv); len(live) != 0 {
				t.Errorf("live after drain: %+v", live)
			}
			for i, s := range secrets {
				if _, ok := srv.Authenticate(s); ok {
					t.Errorf("secret #%d still works", i)
				}
			}
			if keys := e.issuanceKeys(); len(keys) != 0 {
				t.Errorf("records after drain: %v", keys)
			}
		})
	}
}

// The drain backs off per entry while Tooken fails, honours Retry-After,
// respects its rate, and drops entries whose token has expired upstream.
func TestRevokeQueue_DrainBackoffAndExpiry(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1m", "max_ttl": "10m"})
	g := e.b.guard
	g.revokeBudget = 200 * time.Millisecond
	g.retryBase, g.retryMax = time.Minute, 4*time.Minute

	var ids []string
	srv.SetDown(true)
	for i := 0; i < 4; i++ {
		srv.SetDown(false)
		resp := must(t)(e.read("creds/r"))
		srv.SetDown(true)
		ids = append(ids, resp.Data["token_id"].(string))
		must(t)(e.revoke(lease(resp)))
	}
	// Still down: attempts grow, next attempt backs off (1m, 2m, 4m...).
	e.shiftClock(61 * time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	q := e.queueEntry(ids[0])
	if q.Attempts != 2 || q.NextAttempt.Sub(time.Now()) < 2*time.Minute {
		t.Errorf("after a failed drain: %+v", q)
	}
	// Back up, but rate limited: the drain stops at the 429 and waits its
	// Retry-After before calling again.
	srv.SetDown(false)
	srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 429, RetryAfter: 30, Count: 1})
	srv.ResetRequests()
	e.shiftClock(4 * time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d calls, want 1 (stop at the 429)", n)
	}
	if err := e.periodic(); err != nil { // within Retry-After: no call
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d calls within Retry-After, want 1", n)
	}
	e.shiftClock(10 * time.Minute) // past the tokens' expiry: dropped without a call
	srv.ResetRequests()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 0 || len(e.queueIDs()) != 0 {
		t.Errorf("expired entries: %d calls, queue %v", n, e.queueIDs())
	}

	// The rate: 3 due entries at 2/s (burst 1) take at least a second.
	g.limiter = rate.NewLimiter(2, 1)
	e.shiftClock(0)
	var fresh []string
	for i := 0; i < 3; i++ {
		resp := must(t)(e.read("creds/r"))
		fresh = append(fresh, resp.Data["token_id"].(string))
		srv.SetDown(true)
		must(t)(e.revoke(lease(resp)))
		srv.SetDown(false)
	}
	e.shiftClock(5 * time.Minute) // due, past the Retry-After pause, before expiry
	start := time.Now()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("3 revokes at 2/s took %s", d)
	}
	if len(e.queueIDs()) != 0 {
		t.Errorf("queue %v", e.queueIDs())
	}
	// (The first four are still live in the emulator, whose clock did not
	// move: the plugin dropped them as expired by its own clock.)
	for _, id := range fresh {
		if tr, _ := srv.Token(id); tr.State == "live" {
			t.Errorf("token %s still live", id)
		}
	}
}

// The queue is bounded: past maxQueue a revoke fails (Vault retries it) rather
// than growing storage without limit; a failed queue write fails too.
func TestRevokeQueue_Bound(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	g := e.b.guard
	g.maxQueue = 2
	g.revokeBudget = 200 * time.Millisecond
	flaky := e.withFlakyStorage()

	var leases []*logical.Response
	for i := 0; i < 4; i++ {
		leases = append(leases, must(t)(e.read("creds/r")))
	}
	srv.SetDown(true)
	must(t)(e.revoke(lease(leases[0])))
	must(t)(e.revoke(lease(leases[1])))
	_, err := e.revoke(lease(leases[2]))
	if err == nil || !strings.Contains(err.Error(), "revoke queue is full") {
		t.Errorf("third revoke: %v", err)
	}
	g.maxQueue = 100
	flaky.failPuts(revokeQueuePrefix, 1)
	_, err = e.revoke(lease(leases[3]))
	if err == nil || !strings.Contains(err.Error(), "queueing it for a later revoke failed") {
		t.Errorf("revoke with a failing queue write: %v", err)
	}
	// Vault retries them; once Tooken is back they succeed directly.
	srv.SetDown(false)
	must(t)(e.revoke(lease(leases[2])))
	must(t)(e.revoke(lease(leases[3])))
	e.shiftClock(time.Hour)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if len(issuedLive(srv)) != 0 || len(e.queueIDs()) != 0 {
		t.Errorf("live %d, queue %v", len(issuedLive(srv)), e.queueIDs())
	}
}
