package tooken

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// vaultRevokeAttempts is how many times Vault's expiration manager tries a
// revoke before it marks the lease irrevocable (vault/expiration.go,
// maxRevokeAttempts).
const vaultRevokeAttempts = 6

// chaosFaults are injected on every Tooken call the engine makes.
func chaosFaults(srv *tookentest.Server) {
	for _, f := range []tookentest.Fault{
		{Method: http.MethodPost, Path: "/v1/tokens", Drop: true, Probability: 0.05},
		{Method: http.MethodPost, Path: "/v1/tokens", Status: 503, Probability: 0.05},
		{Method: http.MethodPost, Path: "/v1/tokens", Status: 500, Probability: 0.03},
		{Method: http.MethodPost, Path: "/v1/tokens", Status: 429, RetryAfter: 1, Probability: 0.01},
		{Method: http.MethodPost, Path: "/v1/tokens", Latency: 20 * time.Millisecond, Probability: 0.05},
		{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Drop: true, Probability: 0.05},
		{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 503, Probability: 0.15},
		{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 429, RetryAfter: 1, Probability: 0.02},
		{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Latency: 20 * time.Millisecond, Probability: 0.05},
	} {
		srv.AddFault(f)
	}
}

// chaosLeases is the emulated Vault's lease table.
type chaosLeases struct {
	mu          sync.Mutex
	live        map[string]*logical.Secret // token id -> lease
	irrevocable []string
}

func (l *chaosLeases) add(s *logical.Secret) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live[s.InternalData[internalTokenID].(string)] = s
}

func (l *chaosLeases) remove(id string, irrevocable bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.live, id)
	if irrevocable {
		l.irrevocable = append(l.irrevocable, id)
	}
}

func (l *chaosLeases) all() []*logical.Secret {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*logical.Secret, 0, len(l.live))
	for _, s := range l.live {
		out = append(out, s)
	}
	return out
}

// TestChaos issues creds through the backend while Tooken fails in every way
// the contract allows and storage writes fail at random; it revokes every
// lease as Vault would (6 attempts, then irrevocable) and lets rollback and
// the revoke queue run. Then: upstream live tokens of the mount = live
// leases = 0, and no lease is irrevocable.
//
//	go test -race -run TestChaos -v .   (TOOKEN_CHAOS_CREDS=N to change the 1000)
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	want := 1000
	if v, err := strconv.Atoi(os.Getenv("TOOKEN_CHAOS_CREDS")); err == nil && v > 0 {
		want = v
	}
	start := time.Now()
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 2, "request_timeout": "2s", "rollback_min_age": "1s"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
	q, r := e.b.queue, e.b.issued
	q.revokeBudget = time.Second
	q.retry = retryPolicy{base: 20 * time.Millisecond, max: 200 * time.Millisecond}
	r.retry = q.retry
	q.callTimeout, r.callTimeout = 2*time.Second, 2*time.Second
	q.drainBudget = 20 * time.Second
	q.limiter = rate.NewLimiter(rate.Inf, 1)
	flaky := e.withFlakyStorage()
	ctx := context.Background()

	leases := &chaosLeases{live: map[string]*logical.Secret{}}
	var credsOK, credsFailed, revokeCalls, revokeFailed atomic.Int64
	var rolledBack, drained, maxPending, maxQueued int
	periodic := func() error {
		pending, queued := chaosBacklog(t, e)
		maxPending, maxQueued = max(maxPending, pending), max(maxQueued, queued)
		err := e.periodic()
		rolledBack += r.lastReport().Finished
		drained += q.lastReport().Revoked + q.lastReport().Dropped
		return err
	}

	// revokeLikeVault calls the secret's revoke through HandleRequest up to
	// 6 times; a lease whose revoke never succeeds is irrevocable.
	revokeLikeVault := func(s *logical.Secret) {
		id := s.InternalData[internalTokenID].(string)
		for attempt := 1; attempt <= vaultRevokeAttempts; attempt++ {
			revokeCalls.Add(1)
			req := e.request(logical.RevokeOperation, "creds/r", nil)
			req.Secret = s
			resp, err := e.b.HandleRequest(ctx, req)
			if err == nil && (resp == nil || !resp.IsError()) {
				leases.remove(id, false)
				return
			}
			revokeFailed.Add(1)
			time.Sleep(time.Duration(attempt) * 5 * time.Millisecond)
		}
		leases.remove(id, true)
	}

	// Phase 1: creds under faults; about a third revoked at once.
	chaosFaults(srv)
	flaky.setRandom(0.1, 0.1)
	const workers = 16
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for credsOK.Load() < int64(want) {
				resp, err := e.b.HandleRequest(ctx, e.request(logical.ReadOperation, "creds/r", nil))
				if err != nil || resp == nil || resp.IsError() || resp.Secret == nil {
					credsFailed.Add(1)
					continue
				}
				credsOK.Add(1)
				s := lease(resp)
				leases.add(s)
				if rng.IntN(3) == 0 {
					revokeLikeVault(s)
				}
			}
		}(w)
	}
	wg.Wait()
	phase1 := time.Since(start)

	// Quiet: Tooken and storage recover; rollback and the queue run until
	// nothing is pending. Then upstream live tokens of the mount = leases.
	settle := func(what string) (rounds int) {
		t.Helper()
		srv.ClearFaults()
		flaky.setRandom(0, 0)
		for rounds = 1; rounds <= 50; rounds++ {
			e.shiftClock(time.Duration(rounds) * 2 * time.Second) // past min age and backoff
			if err := periodic(); err != nil {
				t.Logf("%s: periodic: %v", what, err)
			}
			pending, queued := chaosBacklog(t, e)
			if pending == 0 && queued == 0 {
				return rounds
			}
		}
		pending, queued := chaosBacklog(t, e)
		t.Fatalf("%s: not quiet after 50 periodic rounds: %d pending records, %d queued revokes", what, pending, queued)
		return rounds
	}
	// A few periodic rounds still under faults first.
	for i := 1; i <= 3; i++ {
		e.shiftClock(time.Duration(i) * 2 * time.Second)
		_ = periodic()
	}
	rounds1 := settle("after creds")
	mine := func() int {
		n := 0
		for _, tr := range srv.LiveTokens() {
			if tr.Metadata[metaMountUUID] == testMountUUID {
				n++
			}
		}
		return n
	}
	held := len(leases.all())
	if up := mine(); up != held {
		t.Errorf("after creds and rollback: %d live upstream tokens of the mount, %d live leases", up, held)
	}
	t.Logf("after creds: %d live leases = %d live upstream tokens (rollback rounds %d)", held, mine(), rounds1)

	// Phase 2: revoke every remaining lease under faults, as Vault would on
	// expiry or revoke -prefix.
	e.shiftClock(0)
	chaosFaults(srv)
	flaky.setRandom(0.1, 0.1)
	todo := leases.all()
	var next atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(todo) {
					return
				}
				revokeLikeVault(todo[i])
			}
		}()
	}
	wg.Wait()
	rounds2 := settle("after revokes")

	up, live := mine(), len(leases.all())
	leases.mu.Lock()
	irrevocable := len(leases.irrevocable)
	leases.mu.Unlock()
	c := srv.Counters()
	t.Logf("creds: %d ok, %d failed; revoke calls %d (%d failed, retried); leases live %d, irrevocable %d; upstream live tokens of the mount %d",
		credsOK.Load(), credsFailed.Load(), revokeCalls.Load(), revokeFailed.Load(), live, irrevocable, up)
	t.Logf("pending records finished by rollback %d (backlog peak %d); queued revokes drained %d (queue peak %d)", rolledBack, maxPending, drained, maxQueued)
	t.Logf("emulator: requests %d, created %d, revoked %d, replayed %d, faults %d, dropped %d, rate_limited %d; storage failures injected %d; periodic rounds %d+%d",
		c["requests"], c["created"], c["revoked"], c["replayed"], c["faults"], c["dropped"], c["rate_limited"], flaky.failed, rounds1, rounds2)
	fmt.Printf("CHAOS SUMMARY: creds_ok=%d creds_failed=%d upstream_live=%d live_leases=%d irrevocable=%d rolled_back=%d queued_drained=%d storage_failures=%d faults=%d elapsed=%s (creds phase %s)\n",
		credsOK.Load(), credsFailed.Load(), up, live, irrevocable, rolledBack, drained, flaky.failed, c["faults"], time.Since(start).Round(time.Millisecond), phase1.Round(time.Millisecond))
	if up != 0 || live != 0 || irrevocable != 0 {
		t.Errorf("want 0 upstream live tokens, 0 live leases, 0 irrevocable; got %d, %d, %d", up, live, irrevocable)
	}
	if credsOK.Load() < int64(want) {
		t.Errorf("only %d creds issued", credsOK.Load())
	}
}

// chaosBacklog counts pending (or abandoned) issuance records and queued
// revokes.
func chaosBacklog(t *testing.T, e *testEnv) (pending, queued int) {
	t.Helper()
	ctx := context.Background()
	c, err := e.b.countRecords(ctx, e.storage.Storage)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := e.storage.Storage.List(ctx, revokeQueuePrefix)
	if err != nil {
		t.Fatal(err)
	}
	return c.pending + c.abandoned, len(ids)
}
