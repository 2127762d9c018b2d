package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

func TestTidy_ReportThenRevoke(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "max_ttl": "1h"})
	ctx := context.Background()
	c := e.client()

	// 110 leases (more than one page of 100), one queued for revocation.
	var leases []*logical.Response
	for i := 0; i < 110; i++ {
		leases = append(leases, must(t)(e.read("creds/r")))
	}
	e.b.queue.revokeBudget = 100 * time.Millisecond
	srv.SetDown(true)
	must(t)(e.revoke(lease(leases[0])))
	srv.SetDown(false)

	// Orphans: a token of this mount with no record, and one whose record
	// was abandoned by rollback. Not orphans: another mount's token, a
	// pending record's token.
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	mk := func(mountUUID, key string) string {
		tok, err := c.CreateToken(ctx, tookenapi.CreateTokenRequest{Name: "x", Scopes: []string{"deployments:write"}, ExpiresAt: &exp,
			Metadata: map[string]string{metaMountUUID: mountUUID, metaIssueKey: key, metaRole: "r"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		return tok.ID
	}
	orphan := mk(testMountUUID, "no-such-record")
	abandoned := e.pendingRecord("r", time.Hour)
	abandoned.State = issueStateAbandoned
	if err := putIssuance(ctx, e.storage, abandoned); err != nil {
		t.Fatal(err)
	}
	abandonedTok, err := c.CreateToken(ctx, abandoned.Body, abandoned.Key)
	if err != nil {
		t.Fatal(err)
	}
	other := mk("other_accessor", "k")
	pending := e.pendingRecord("r", 0)
	if _, err := c.CreateToken(ctx, pending.Body, pending.Key); err != nil {
		t.Fatal(err)
	}

	tidy := func(data map[string]any) map[string]any {
		t.Helper()
		return must(t)(e.write("tidy", data)).Data
	}
	// Young: nothing reported with the default safety age (1h).
	got := tidy(nil)
	if got["upstream_scanned"] != int64(113) || got["accounted"] != int64(111) || got["too_young"] != int64(2) || got["orphans_found"] != int64(0) {
		t.Errorf("default safety age: %v", got)
	}
	// A safety age shorter than a creds read can take is refused: with
	// max_retries=0 and the default 30s request_timeout, 30s + 30s + 15s.
	resp, err := e.write("tidy", map[string]any{"safety_age": "0s", "revoke_orphans": true})
	mustUserError(t, resp, err, "safety_age: must be at least 75s")
	// Ten minutes on, every token is older than the shortest safety age:
	// only the records decide. Report only.
	e.shiftClock(10 * time.Minute)
	got = tidy(map[string]any{"safety_age": "75s"})
	if got["orphans_found"] != int64(2) || got["orphans_revoked"] != int64(0) {
		t.Errorf("report: %v", got)
	}
	if tr, _ := srv.Token(orphan); tr.State != "live" {
		t.Error("report-only tidy revoked a token")
	}
	// Revoke.
	got = tidy(map[string]any{"safety_age": "75s", "revoke_orphans": true})
	if got["orphans_found"] != int64(2) || got["orphans_revoked"] != int64(2) {
		t.Errorf("revoke: %v", got)
	}
	for _, id := range []string{orphan, abandonedTok.ID} {
		if tr, _ := srv.Token(id); tr.State == "live" {
			t.Errorf("orphan %s still live", id)
		}
	}
	if tr, _ := srv.Token(other); tr.State != "live" {
		t.Error("tidy touched another mount's token")
	}
	if e.issuance(abandoned.Key) != nil {
		t.Error("abandoned record not deleted with its orphan")
	}
	if n := len(issuedLive(srv)); n != 112 { // 110 leases' tokens (one queued), pending, other
		t.Errorf("live after tidy: %d, want 112", n)
	}
	for _, l := range leases[1:] {
		if tr, _ := srv.Token(l.Data["token_id"].(string)); tr.State != "live" {
			t.Fatal("tidy revoked a lease's token")
		}
	}

	st := must(t)(e.read("tidy/status")).Data
	if st["queue_length"] != int64(1) || st["pending_records"] != int64(1) || st["orphans_found"] != int64(2) || st["orphans_revoked"] != int64(2) || st["last_tidy"] == nil {
		t.Errorf("status: %v", st)
	}

	// Records whose token has expired are collected.
	e.shiftClock(2 * time.Hour)
	got = tidy(map[string]any{"safety_age": "24h"})
	if got["records_collected"] != int64(111) { // 110 confirmed (one of them queued) + 1 pending
		t.Errorf("collected: %v", got)
	}
}

func TestTidy_BadInput(t *testing.T) {
	e := getTestBackend(t)
	resp, err := e.write("tidy", nil)
	mustUserError(t, resp, err, "not configured")
	resp, err = e.write("tidy", map[string]any{"safety_age": "nope"})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Error("bad safety_age accepted")
	}
	st := must(t)(e.read("tidy/status")).Data
	if st["last_tidy"] != nil || st["queue_length"] != int64(0) {
		t.Errorf("status before any tidy: %v", st)
	}
}

// A second tidy while one runs is refused with 409, and runs once the first
// has finished.
func TestTidy_OneAtATime(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)

	// Tooken answers the first tidy's list slowly, so that it is still running.
	srv.AddFault(tookentest.Fault{Method: "GET", Path: "/v1/tokens", Count: 1, Latency: 2 * time.Second})
	first := make(chan error, 1)
	go func() {
		_, err := e.write("tidy", nil)
		first <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Faults()) > 0 { // the slow answer has begun: the first tidy holds the lock
		if time.Now().After(deadline) {
			t.Fatal("the first tidy never reached Tooken")
		}
		time.Sleep(10 * time.Millisecond)
	}

	_, err := e.write("tidy", nil)
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) || coded.Code() != http.StatusConflict || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second tidy: err = %v, want 409 already running", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first tidy: %v", err)
	}
	if _, err := e.write("tidy", nil); err != nil {
		t.Fatalf("tidy after the first finished: %v", err)
	}
}

// Tidy never revokes a token whose lease exists or is being created, even
// when every token is older than safety_age: with 50 creds readers running
// (some revoking at once) and the periodic rollback sweeping, repeated
// tidies with revoke_orphans=true kill exactly the planted orphans.
func TestTidy_NeverRevokesLiveLeasesUnderLoad(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "max_ttl": "24h"})
	// Creates answer after 0 to 20 ms, so that reads are caught in every
	// step when tidy looks.
	for _, l := range []time.Duration{5, 10, 20} {
		srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: l * time.Millisecond, Probability: 0.3})
	}
	ctx := context.Background()
	exp := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	var planted []string
	for i := 0; i < 5; i++ {
		tok, err := e.client().CreateToken(ctx, tookenapi.CreateTokenRequest{Name: "orphan", Scopes: []string{"deployments:write"}, ExpiresAt: &exp,
			Metadata: map[string]string{metaMountUUID: testMountUUID, metaIssueKey: tookenapi.NewIdempotencyKey(), metaRole: "r"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		planted = append(planted, tok.ID)
	}
	e.shiftClock(time.Hour) // every token is an hour old to tidy: only the records protect them

	var mu sync.Mutex
	held := map[string]bool{} // token id -> lease held
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := e.read("creds/r")
				if err != nil || resp.IsError() {
					t.Errorf("creds read: %v %v", resp, err)
					return
				}
				id := resp.Data["token_id"].(string)
				mu.Lock()
				held[id] = true
				mu.Unlock()
				if (w+i)%3 == 0 {
					must(t)(e.revoke(lease(resp)))
					mu.Lock()
					held[id] = false
					mu.Unlock()
				}
			}
		}(w)
	}
	revoked := int64(0)
	for round := 0; round < 8; round++ {
		if err := e.periodic(); err != nil {
			t.Error(err)
		}
		got := must(t)(e.write("tidy", map[string]any{"safety_age": "30m", "revoke_orphans": true})).Data
		revoked += got["orphans_revoked"].(int64)
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	leased, killed := 0, 0
	for id, h := range held {
		if !h {
			continue
		}
		leased++
		if tok, _ := srv.Token(id); tok.State != "live" {
			killed++
		}
	}
	t.Logf("%d leases held, %d reads in all; tidy revoked %d", leased, len(held), revoked)
	if killed != 0 {
		t.Errorf("tidy revoked %d of %d live leases' tokens", killed, leased)
	}
	if revoked != int64(len(planted)) {
		t.Errorf("tidy revoked %d tokens, want the %d planted orphans", revoked, len(planted))
	}
	for _, id := range planted {
		if tok, _ := srv.Token(id); tok.State == "live" {
			t.Errorf("planted orphan %s still live", id)
		}
	}
}

// A lease whose revoke was queued (Tooken down) before a ca_cert renewal:
// tidy lists its token at the config's Tooken, so the queue entry, recorded
// at the old destination, accounts for nothing: tidy revoke_orphans=true
// revokes the token and finishes the entry.
func TestTidy_RevokesAListedTokenQueuedAtAnotherDestination(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"ca_cert": otherCA(t)})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "720h"})
	resp := must(t)(e.read("creds/r"))
	secret := resp.Data["token"].(string)
	srv.SetDown(true)
	must(t)(e.revoke(lease(resp)))
	srv.SetDown(false)
	if len(e.queueIDs()) != 1 {
		t.Fatalf("queue = %v, want the revoke queued", e.queueIDs())
	}
	must(t)(e.write(configPath, map[string]any{"ca_cert": otherCA(t), "token": srv.RootSecret()}))
	e.shiftClock(2 * time.Hour)
	st := must(t)(e.write("tidy", map[string]any{"revoke_orphans": true, "safety_age": "1h"})).Data
	if works(srv, secret) {
		t.Fatalf("tidy left alive a token it listed whose lease is revoked: %v", st)
	}
	if fmt.Sprint(st["orphans_revoked"]) != "1" || len(e.queueIDs()) != 0 {
		t.Fatalf("tidy: orphans_revoked = %v, queue %v; want 1 and empty", st["orphans_revoked"], e.queueIDs())
	}
}

// A creds read whose answer was lost, and whose clean-up could not revoke
// the token, leaves a pending record (the token lives upstream) for the
// rollback, which finishes it only at the
// destination its create went to. After a ca_cert renewal tidy lists the
// token at the config's Tooken: the record accounts for nothing, and tidy
// revoke_orphans=true revokes the token and deletes the record.
func TestTidy_RevokesAListedTokenPendingAtAnotherDestination(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"ca_cert": otherCA(t), "max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "720h"})
	srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Drop: true, Count: 1})
	del := srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 503}) // the clean-up's revoke
	if resp, err := e.read("creds/r"); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("creds read succeeded with its answer dropped")
	}
	srv.RemoveFault(del)
	live := issuedLive(srv)
	if len(live) != 1 {
		t.Fatalf("live tokens upstream = %d, want the one whose answer was lost", len(live))
	}
	keys, _ := listIssuance(t.Context(), e.storage)
	if len(keys) != 1 {
		t.Fatalf("pending records = %v, want 1", keys)
	}
	must(t)(e.write(configPath, map[string]any{"ca_cert": otherCA(t), "token": srv.RootSecret()}))
	e.shiftClock(2 * time.Hour)
	st := must(t)(e.write("tidy", map[string]any{"revoke_orphans": true, "safety_age": "1h"})).Data
	if n := len(issuedLive(srv)); n != 0 || fmt.Sprint(st["orphans_revoked"]) != "1" {
		t.Fatalf("after tidy: %d live tokens, status %v; want the token revoked as an orphan", n, st)
	}
	if keys, _ := listIssuance(t.Context(), e.storage); len(keys) != 0 {
		t.Fatalf("pending records left: %v", keys)
	}
}
