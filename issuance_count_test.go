package tooken

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// readCapped reads creds/<role> and tells whether max_live_tokens refused
// it; any other failure ends the test.
func readCapped(t *testing.T, e *testEnv, role string) (resp *logical.Response, refused bool) {
	t.Helper()
	resp, err := e.read("creds/" + role)
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) && coded.Code() == http.StatusTooManyRequests {
		return nil, true
	}
	return mustOK(t, resp, err), false
}

// liveOfRole counts the live upstream tokens of a role.
func liveOfRole(srv *tookentest.Server, role string) int {
	n := 0
	for _, tok := range issuedLive(srv) {
		if tok.Metadata[metaRole] == role {
			n++
		}
	}
	return n
}

// The cap holds under 50 parallel reads; a refused read answers 429 naming
// the role and the limit, and writes nothing and calls nobody; revokes free
// slots; an uncapped role is not limited.
func TestLiveTokens_CapUnderParallelReads(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 5})
	e.writeRole("free", map[string]any{"scopes": "deployments:write"})
	// Slow creates, so that the reads overlap.
	srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: 50 * time.Millisecond})
	srv.ResetRequests()

	var mu sync.Mutex
	var leases []*logical.Response
	refused := 0
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.read("creds/capped")
			mu.Lock()
			defer mu.Unlock()
			var coded logical.HTTPCodedError
			switch {
			case errors.As(err, &coded) && coded.Code() == http.StatusTooManyRequests:
				refused++
				if msg := err.Error(); !strings.Contains(msg, `max_live_tokens: role "capped" already has 5 live tokens`) {
					t.Errorf("refusal: %q", msg)
				}
			case err == nil && !resp.IsError():
				leases = append(leases, resp)
			default:
				t.Errorf("creds read: %v %v", resp, err)
			}
		}()
	}
	wg.Wait()
	if len(leases) != 5 || refused != 45 {
		t.Fatalf("%d leases, %d refused; want 5 and 45", len(leases), refused)
	}
	if n := len(createRequests(srv)); n != 5 {
		t.Errorf("%d POSTs to Tooken, want 5: a refused read called Tooken", n)
	}
	if n := liveOfRole(srv, "capped"); n != 5 {
		t.Errorf("%d live tokens of the role, want 5", n)
	}
	if n := len(e.issuanceKeys()); n != 10 { // 5 live + their 5 pending records, not swept yet
		t.Errorf("%d issuance records, want 10: a refused read wrote one", n)
	}

	// Revokes free slots, one each.
	must(t)(e.revoke(lease(leases[0])))
	must(t)(e.revoke(lease(leases[1])))
	for i := 0; i < 2; i++ {
		if _, refused := readCapped(t, e, "capped"); refused {
			t.Fatalf("read %d after two revokes refused", i+1)
		}
	}
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("a sixth live token was issued")
	}
	// Another role is not limited.
	for i := 0; i < 8; i++ {
		if _, refused := readCapped(t, e, "free"); refused {
			t.Fatal("a role without max_live_tokens was refused")
		}
	}
	// Raising the limit lets reads through; lowering it below the count
	// refuses them.
	e.writeRole("capped", map[string]any{"max_live_tokens": 6})
	if _, refused := readCapped(t, e, "capped"); refused {
		t.Fatal("refused under the raised limit")
	}
	e.writeRole("capped", map[string]any{"max_live_tokens": 2})
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("issued over the lowered limit")
	}
}

// The count is learnt again from storage by a new process (a plugin
// restart or a fail-over): live records, plus a read that died mid-way,
// whose pending record holds its slot until the rollback has finished it.
func TestLiveTokens_CountSurvivesRestartAndCrash(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s"})
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 3})
	var leases []*logical.Response
	for i := 0; i < 3; i++ {
		resp, _ := readCapped(t, e, "capped")
		leases = append(leases, resp)
	}
	must(t)(e.revoke(lease(leases[0])))

	// A read dies after its POST: pending record and a live token, no lease.
	rec := e.pendingRecord("capped", 0)
	if _, err := e.client().CreateToken(context.Background(), rec.Body, rec.Key); err != nil {
		t.Fatal(err)
	}
	e.b.issued = newIssuanceRecords() // the plugin restarts
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("the restarted plugin issued a fourth live token (2 leases + 1 unfinished read + 1)")
	}
	// 2 live records, the dead read, and the revoked lease's pending record:
	// the first process died before its periodic run deleted it, and a
	// pending record without a live one may be a read that died; it counts
	// until the rollback has finished it (a replay answers the revoked token).
	if n, ok := e.b.issued.liveCount("capped"); !ok || n != 4 {
		t.Errorf("learnt count %d (loaded %v), want 4", n, ok)
	}
	// The rollback kills the dead read's token and frees the slots.
	e.shiftClock(2 * time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := liveOfRole(srv, "capped"); n != 2 {
		t.Fatalf("%d live tokens after the rollback, want the 2 leased", n)
	}
	if _, refused := readCapped(t, e, "capped"); refused {
		t.Fatal("refused although the rollback freed a slot")
	}
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("a fourth live token was issued")
	}
}

// A read that fails leaves its slot free once nothing of it is left: a
// definitive refusal at once, a failed pending write at the next periodic
// run (the write might have landed).
func TestLiveTokens_FailedReadsFreeTheirSlot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s"})
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 1})

	srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Status: 403, Count: 1})
	if _, err := e.read("creds/capped"); err == nil {
		t.Fatal("creds read succeeded through a 403")
	}
	if n, _ := e.b.issued.liveCount("capped"); n != 0 {
		t.Fatalf("count %d after a refused create, want 0", n)
	}

	flaky := e.withFlakyStorage()
	flaky.failPuts(issuedPendingPrefix, 1)
	if _, err := e.read("creds/capped"); err == nil {
		t.Fatal("creds read succeeded without its pending record")
	}
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("the slot of a failed pending write was freed before the rollback looked")
	}
	e.shiftClock(2 * time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if _, refused := readCapped(t, e, "capped"); refused {
		t.Fatal("the slot of a failed pending write is still taken after the rollback")
	}
	if n := liveOfRole(srv, "capped"); n != 1 {
		t.Errorf("%d live tokens, want 1", n)
	}
}

// A role with max_live_tokens costs a creds read the same storage round
// trips as a role without, 2 writes, once the role's count is known (its
// first read lists the role's live records once). Its revoke reads the
// record before it deletes it (so that a repeated revoke frees no second
// slot): 1 get and 1 delete, against 1 delete for a role without.
func TestLiveTokens_CapCostsNoStorageRoundTripPerRead(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 3})
	e.writeRole("free", map[string]any{"scopes": "deployments:write"})
	for _, role := range []string{"capped", "free"} {
		first, _ := readCapped(t, e, role) // warms the role's cache and count
		must(t)(e.revoke(lease(first)))
		for i := 0; i < 10; i++ {
			e.storage.reset()
			resp, refused := readCapped(t, e, role)
			if refused {
				t.Fatalf("%s: read %d refused with 1 token live at most", role, i)
			}
			if g, p, d, l := e.storage.gets.Load(), e.storage.puts.Load(), e.storage.deletes.Load(), e.storage.lists.Load(); g != 0 || p != 2 || d != 0 || l != 0 {
				t.Errorf("%s: a creds read made %d gets, %d puts, %d deletes, %d lists; want 2 puts only", role, g, p, d, l)
			}
			e.storage.reset()
			must(t)(e.revoke(lease(resp)))
			wantGets := int64(0)
			if role == "capped" {
				wantGets = 1
			}
			if n, g, d := e.storage.total(), e.storage.gets.Load(), e.storage.deletes.Load(); n != wantGets+1 || g != wantGets || d != 1 {
				t.Errorf("%s: a lease revoke made %d storage round trips (%d gets, %d deletes); want %d gets and 1 delete", role, n, g, d, wantGets)
			}
		}
	}
}

// A second revoke of one lease (Vault retries a revoke whose lease it could
// not delete) frees no second slot: the role never has more live tokens than
// its cap.
func TestLiveTokens_RevokeTwiceFreesOneSlot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 2})
	a, _ := readCapped(t, e, "capped")
	readCapped(t, e, "capped")
	must(t)(e.revoke(lease(a)))
	must(t)(e.revoke(lease(a))) // Vault's retry: Tooken answers 404, counted as revoked
	readCapped(t, e, "capped")
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Error("a third live token was created for a role with max_live_tokens=2")
	}
	if n := liveOfRole(srv, "capped"); n != 2 {
		t.Errorf("%d live tokens upstream, want 2", n)
	}
}

// A revoke whose issuance record cannot be deleted fails, so that Vault
// tries it again, instead of holding the role's slot until the token's
// expiry; the retry frees it.
func TestLiveTokens_RecordDeleteFailureIsRetried(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 1, "max_ttl": "720h"})
	a, _ := readCapped(t, e, "capped")
	flaky := e.withFlakyStorage()
	flaky.setRandom(0, 1) // every delete fails
	if _, err := e.revoke(lease(a)); err == nil {
		t.Error("the revoke succeeded with its issuance record left in storage")
	}
	flaky.setRandom(0, 0)
	if n := liveOfRole(srv, "capped"); n != 0 {
		t.Fatalf("%d live tokens upstream after the revoke, want 0", n)
	}
	must(t)(e.revoke(lease(a))) // Vault's retry
	if _, refused := readCapped(t, e, "capped"); refused {
		t.Error("the role's only slot is still held after the retried revoke")
	}
}

// A pending record the rollback gave up on (Tooken out for all its
// attempts) holds its role's slot; tidy with revoke_orphans=true, which an
// operator runs once Tooken answers again, gives it back to the rollback,
// whose next run finishes it and frees the slot.
func TestLiveTokens_TidyGivesAbandonedRecordsBack(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s", "max_retries": 0})
	e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 1, "max_ttl": "720h"})
	a, _ := readCapped(t, e, "capped")
	must(t)(e.revoke(lease(a)))
	// A restart before the sweep: the read's pending record looks unfinished.
	e.b.issued = newIssuanceRecords()
	e.b.issued.maxAttempts = 1
	srv.SetDown(true)
	e.shiftClock(5 * time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	srv.SetDown(false)
	if st := must(t)(e.read("tidy/status")); st.Data["abandoned_records"] != int64(1) {
		t.Fatalf("tidy/status: abandoned_records %v, want 1", st.Data["abandoned_records"])
	}
	if _, refused := readCapped(t, e, "capped"); !refused {
		t.Fatal("the abandoned record did not count against the cap (the test sets up nothing)")
	}
	must(t)(e.write("tidy", map[string]any{"safety_age": "1h", "revoke_orphans": true}))
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if st := must(t)(e.read("tidy/status")); st.Data["abandoned_records"] != int64(0) || st.Data["pending_records"] != int64(0) {
		t.Errorf("tidy/status after tidy and a periodic run: abandoned %v, pending %v, want 0 and 0", st.Data["abandoned_records"], st.Data["pending_records"])
	}
	if _, refused := readCapped(t, e, "capped"); refused {
		t.Error("the role's slot is still held after tidy and the rollback finished the abandoned record")
	}
	if n := liveOfRole(srv, "capped"); n != 1 {
		t.Errorf("%d live tokens of the role upstream, want 1 (the last read's)", n)
	}
}
