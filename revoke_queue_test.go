package tooken

import (
	"context"
	"net/http"
	"strings"
	"sync"
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

// deletes counts the DELETE calls in the emulator's request log.
func deletes(srv *tookentest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == http.MethodDelete {
			n++
		}
	}
	return n
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
			rq := e.b.queue
			rq.revokeBudget = 500 * time.Millisecond
			rq.retry = retryPolicy{base: time.Minute, max: time.Minute}

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

			// Tooken still failing, nothing due: the drain waits out the
			// backoff; once warm, an idle run reads no storage (where Tooken
			// answers but its DELETEs fail, one entry is tried: 1 Get, 1 Put).
			tc.outage(srv)
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if len(e.queueIDs()) != 3 {
				t.Fatal("drained while Tooken still fails")
			}
			e.storage.reset()
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if g, p := e.storage.gets.Load(), e.storage.puts.Load(); g > 1 || p > 1 || (tc.name == "emulator down" && g+p != 0) {
				t.Errorf("idle periodic run: %d Gets, %d Puts", g, p)
			}
			// Tooken is back: the next drain kills every token at once,
			// though every entry still has backoff to go.
			srv.SetDown(false)
			srv.ClearFaults()
			e.shiftClock(31 * time.Second) // past the 429 case's Retry-After (30s), before the entries' backoff (1m) ends
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
	rq := e.b.queue
	rq.revokeBudget = 200 * time.Millisecond
	rq.retry = retryPolicy{base: time.Minute, max: 4 * time.Minute}

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
	if n := deletes(srv); n != 1 {
		t.Errorf("%d calls, want 1 (stop at the 429)", n)
	}
	if err := e.periodic(); err != nil { // within Retry-After: no call
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 2 { // the probe and the 429'd DELETE of the run before
		t.Errorf("%d calls within Retry-After, want none", n-2)
	}
	e.shiftClock(10 * time.Minute) // past the tokens' expiry: dropped without a call
	srv.ResetRequests()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := deletes(srv); n != 0 || len(e.queueIDs()) != 0 {
		t.Errorf("expired entries: %d calls, queue %v", n, e.queueIDs())
	}

	// The rate: 3 due entries at 2/s (burst 1) take at least a second.
	rq.limiter = rate.NewLimiter(2, 1)
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
	rq := e.b.queue
	rq.maxLen = 2
	rq.revokeBudget = 200 * time.Millisecond
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
	rq.maxLen = 100
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

// After a long outage every queued entry backs off for minutes; the first
// drain once Tooken is back kills them all anyway: GET /tokens/self probes
// Tooken and, when it answers, the entries are tried whatever their backoff.
// During the outage that probe is the only call of a drain.
func TestRevokeQueue_DrainsAtOnceWhenTookenIsBack(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "24h"})
	rq := e.b.queue
	rq.revokeBudget = 200 * time.Millisecond
	rq.retry = retryPolicy{base: time.Minute, max: 10 * time.Minute}

	var ids []string
	for i := 0; i < 5; i++ {
		resp := must(t)(e.read("creds/r"))
		ids = append(ids, resp.Data["token_id"].(string))
		srv.SetDown(true)
		must(t)(e.revoke(lease(resp)))
		srv.SetDown(false)
	}
	srv.SetDown(true)

	// A long outage: every entry fails a few times and backs off further.
	shift := time.Duration(0)
	for round := 0; round < 4; round++ {
		shift += 11 * time.Minute
		e.shiftClock(shift)
		must(t)(nil, e.periodic())
	}
	now := time.Now().Add(shift)
	for _, id := range ids {
		if q := e.queueEntry(id); q == nil || q.Attempts < 3 || q.NextAttempt.Sub(now) < 5*time.Minute {
			t.Fatalf("entry %s after the outage: %+v, want several attempts and a next attempt minutes away", id, q)
		}
	}
	// Nothing is due: a drain during the outage makes exactly one call.
	srv.ResetRequests()
	shift += time.Minute
	e.shiftClock(shift)
	must(t)(nil, e.periodic())
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("a drain during the outage made %d calls, want 1 (the probe, GET /tokens/self)", n)
	}

	// Tooken is back; every entry still has minutes of backoff to go.
	srv.SetDown(false)
	shift += time.Minute
	e.shiftClock(shift)
	must(t)(nil, e.periodic())
	if q := e.queueIDs(); len(q) != 0 {
		t.Errorf("queue after the first drain with Tooken back: %v, want empty", q)
	}
	for _, id := range ids {
		if tr, _ := srv.Token(id); tr.State != "revoked" {
			t.Errorf("token %s is %s, want revoked", id, tr.State)
		}
	}
}

// A storm of lease revokes against Tooken's rate limit (100/s, burst 200),
// 200 at a time as Vault's expiration workers run them: each revoke waits
// its turn at the engine's limiter instead of being refused with 429 and
// queued; every token dies at once, the queue stays empty.
func TestRevoke_StormAtTookensPace(t *testing.T) {
	if testing.Short() {
		t.Skip("storm test skipped in -short mode")
	}
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	const leases, workers = 600, 200
	todo := make(chan *logical.Secret, leases)
	for i := 0; i < leases; i++ {
		todo <- lease(must(t)(e.read("creds/r")))
	}
	close(todo)
	srv.SetRateLimit(100, 200)
	must(t)(e.revoke(<-todo)) // the plugin learns the limit from Tooken's answer
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range todo {
				if _, err := e.revoke(s); err != nil {
					t.Errorf("revoke: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if ids := e.queueIDs(); len(ids) != 0 {
		t.Errorf("%d revokes queued: they should have waited their turn", len(ids))
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens live after the storm", len(live))
	}
	t.Logf("Tooken refused %d calls with 429 during the storm", srv.Counters()["rate_limited"])
}

// A token lives at the Tooken that issued it. After the config points to
// another Tooken (url and token written together, as the custody rule
// asks), the revoke of a lease issued at the first is never counted done at
// the second (whose proven 404 says nothing of it): the revoke is queued,
// the drain sends the second no other DELETE, tidy/status counts it, and
// once the config points to the first again the drain revokes it there. A
// lease issued by an earlier version, which does not record where, is
// revoked at the config's Tooken.
func TestRevokeQueue_WaitsForTheTookenThatIssuedTheToken(t *testing.T) {
	first := newEmulator(t, tookentest.Options{RateLimit: -1})
	second := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(first, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	resp := must(t)(e.read("creds/r"))
	secret := resp.Data["token"].(string)

	wresp, err := e.write(configPath, map[string]any{"url": second.URL(), "token": second.RootSecret()})
	must(t)(wresp, err)
	if wresp == nil || !strings.Contains(strings.Join(wresp.Warnings, " "), "url changed from "+first.URL()) {
		t.Errorf("the url change does not warn about the tokens issued at the first Tooken: %v", wresp)
	}
	second.ResetRequests()
	must(t)(e.revoke(lease(resp)))
	if works(first, secret) && len(e.queueIDs()) == 0 {
		t.Fatalf("the lease revoke succeeded and queued nothing, but its token still works at the Tooken that issued it (%s); "+
			"the DELETE went to %s, whose 404 counted as revoked", first.URL(), second.URL())
	}
	e.shiftClock(time.Hour)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := deletes(second); n != 1 || len(e.queueIDs()) != 1 {
		t.Fatalf("after a drain: %d DELETEs at the second Tooken, %d queue entries; want only the revoke's (answered 404) and the entry kept", n, len(e.queueIDs()))
	}
	st := must(t)(e.read("tidy/status")).Data
	if st["queued_elsewhere"] != int64(1) {
		t.Errorf("tidy/status queued_elsewhere = %v, want 1", st["queued_elsewhere"])
	}

	must(t)(e.write(configPath, map[string]any{"url": first.URL(), "token": first.RootSecret()}))
	e.shiftClock(time.Hour + 10*time.Minute) // past the entry's recheck, before the token's expiry
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if works(first, secret) || len(e.queueIDs()) != 0 {
		t.Fatalf("with the config back at the first Tooken: token alive %v, %d queue entries", works(first, secret), len(e.queueIDs()))
	}

	// A lease of an earlier version (no destination recorded).
	e.shiftClock(0)
	old := must(t)(e.read("creds/r"))
	delete(old.Secret.InternalData, internalDestURL)
	delete(old.Secret.InternalData, internalDestCA)
	must(t)(e.revoke(lease(old)))
	if works(first, old.Data["token"].(string)) || len(e.queueIDs()) != 0 {
		t.Fatal("a lease without a recorded destination was not revoked at the config's Tooken")
	}
}

// The same Tooken with only its CA bundle renewed (same url): the leases
// issued before stay revocable. The revoke goes to the config's url and
// counts done on Tooken's 204 (token ids are random: the token lived there).
func TestRevokeQueue_CAOnlyChangeKeepsLeasesRevocable(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"ca_cert": otherCA(t)})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "720h"})
	resp := must(t)(e.read("creds/r"))
	secret := resp.Data["token"].(string)

	w := must(t)(e.write(configPath, map[string]any{"ca_cert": otherCA(t), "token": srv.RootSecret()}))
	if w == nil || !strings.Contains(strings.Join(w.Warnings, " "), "ca_cert changed (same url") {
		t.Errorf("the ca_cert change does not warn saying that the url is the same: %v", w)
	}
	srv.ResetRequests()
	must(t)(e.revoke(lease(resp)))
	for i := 0; i < 3; i++ {
		e.shiftClock(time.Duration(i+1) * 10 * time.Minute)
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
	}
	e.shiftClock(2 * time.Hour)
	tidy, err := e.write("tidy", map[string]any{"revoke_orphans": true, "safety_age": "180s"})
	t.Logf("tidy: %v %v", tidy, err)
	if works(srv, secret) {
		t.Fatalf("lease revoked (Vault says ok), %d DELETEs sent, queue %v, but the token works at the same Tooken (same url) until its expiry (30 days)", deletes(srv), e.queueIDs())
	}
	if ids := e.queueIDs(); len(ids) != 0 {
		t.Errorf("queue entries left for a revoked token: %v", ids)
	}
}

// Entries whose token the config's Tooken does not know (issued at another
// one) are not read again by the drains while the config points there, even
// while Tooken answers (when the drain ignores backoffs): with up to 100,000
// entries, reading them would spend the drain's budget before the entries
// of the config's Tooken.
func TestRevokeQueue_EntriesWaitingElsewhereAreNotReadAgain(t *testing.T) {
	first := newEmulator(t, tookentest.Options{RateLimit: -1})
	second := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(first, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	var leases []*logical.Secret
	for i := 0; i < 50; i++ {
		leases = append(leases, lease(must(t)(e.read("creds/r"))))
	}
	must(t)(e.write(configPath, map[string]any{"url": second.URL(), "token": second.RootSecret()}))
	for _, l := range leases {
		must(t)(e.revoke(l))
	}
	must(t)(nil, e.periodic())
	e.storage.reset()
	second.ResetRequests()
	must(t)(nil, e.periodic())
	t.Logf("storage gets in a drain right after the previous one: %d (50 entries waiting elsewhere)", e.storage.gets.Load())
	if e.storage.gets.Load() >= 50 {
		t.Fatalf("every elsewhere entry was read again")
	}
	if n := deletes(second); n != 0 {
		t.Fatalf("the drain sent %d DELETEs to the Tooken that answered 404 already", n)
	}
	if n := len(e.queueIDs()); n != 50 {
		t.Fatalf("queue entries = %d, want the 50 kept", n)
	}
}
