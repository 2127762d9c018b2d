package tooken

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// oldVersion writes what the previous version of the engine left in a
// mount's storage: flat issued/<key> records (JSON as that version wrote
// them, state pending -> confirmed in place), leases whose internal data
// names no record, and revoke queue entries without a record key.
type oldVersion struct {
	t   *testing.T
	e   *testEnv
	srv *tookentest.Server
}

// record writes a flat record of role in state, created age ago; with
// token, the POST of its key has reached Tooken. It returns the key and the
// token (nil without).
func (o oldVersion) record(state string, age time.Duration, token bool) (string, *tookenapi.Token) {
	o.t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	key := tookenapi.NewIdempotencyKey()
	exp := now.Add(time.Hour)
	body := tookenapi.CreateTokenRequest{Name: "old-" + key[:8], Scopes: []string{"deployments:write"}, ExpiresAt: &exp,
		Metadata: map[string]string{metaRole: "r", metaMountUUID: testMountUUID, metaMountAccessor: testMountAccessor, metaIssueKey: key}}
	var tok *tookenapi.Token
	if token {
		var err error
		if tok, err = o.e.client().CreateToken(context.Background(), body, key); err != nil {
			o.t.Fatal(err)
		}
	}
	raw := map[string]any{"key": key, "state": state, "role": "r", "body": body, "created_at": now.Add(-age)}
	if tok != nil && state != issueStatePending {
		raw["token_id"] = tok.ID
	}
	buf, err := json.Marshal(raw)
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.e.storage.Storage.Put(context.Background(), &logical.StorageEntry{Key: issuedPrefix + key, Value: buf}); err != nil {
		o.t.Fatal(err)
	}
	return key, tok
}

// lease is the lease the previous version answered for a confirmed record.
func (o oldVersion) lease(key string, tok *tookenapi.Token) *logical.Secret {
	return &logical.Secret{
		LeaseOptions: logical.LeaseOptions{TTL: time.Hour, IssueTime: time.Now()},
		InternalData: map[string]any{
			"secret_type": secretTokenType, internalTokenID: tok.ID, internalIssueKey: key, internalRole: "r",
			internalExpiresAt: tok.ExpiresAt.Format(time.RFC3339), internalIssuedAt: tok.CreatedAt.Format(time.RFC3339),
		},
	}
}

// A mount written by the previous version is rolled back correctly after
// the upgrade: its unfinished reads are finished, its leases revoke their
// tokens and records (before and after the records are moved), its queue
// drains, tidy accounts for its leased tokens and finds its abandoned one.
func TestIssuance_UpgradeFromFlatRecords(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s", "max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "max_live_tokens": 10})
	old := oldVersion{t: t, e: e, srv: srv}

	leasedKey, leasedTok := old.record(issueStateConfirmed, time.Minute, true)
	earlyKey, earlyTok := old.record(issueStateConfirmed, time.Minute, true)
	_, afterPOST := old.record(issueStatePending, time.Minute, true)  // died after its POST
	beforeKey, _ := old.record(issueStatePending, time.Minute, false) // died before it
	abandonedKey, abandonedTok := old.record(issueStateAbandoned, time.Hour, true)
	queuedKey, queuedTok := old.record(issueStateConfirmed, time.Minute, true)
	if err := putQueueEntry(context.Background(), e.storage.Storage, &revokeQueueEntry{TokenID: queuedTok.ID, IssueKey: queuedKey, Role: "r", ExpiresAt: *queuedTok.ExpiresAt, QueuedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st := must(t)(e.read("tidy/status")).Data
	if st["pending_records"] != int64(2) || st["abandoned_records"] != int64(1) || st["confirmed_records"] != int64(3) {
		t.Errorf("status before the move: %v", st)
	}

	// A lease of the previous version revoked before the records moved.
	must(t)(e.revoke(old.lease(earlyKey, earlyTok)))
	e.shiftClock(2 * time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]string{"revoked lease": earlyTok.ID, "died after its POST": afterPOST.ID, "queued revoke": queuedTok.ID} {
		if tok, _ := srv.Token(id); tok.State == "live" {
			t.Errorf("%s: token still live", name)
		}
	}
	if tok, _ := srv.Token(leasedTok.ID); tok.State != "live" {
		t.Error("the rollback killed a leased token")
	}
	keys := e.issuanceKeys()
	slices.Sort(keys)
	want := []string{"live/r/" + leasedKey, "pending/" + abandonedKey}
	if !slices.Equal(keys, want) {
		t.Errorf("records after the first run: %v, want %v (the died-before-POST %s finished)", keys, want, beforeKey)
	}
	// The count knows the leased token and the abandoned one.
	if _, refused := readCapped(t, e, "r"); refused {
		t.Fatal("refused under the limit")
	}
	if n, _ := e.b.issued.liveCount("r"); n != 3 {
		t.Errorf("live count %d, want 3 (leased, abandoned, new)", n)
	}

	// Tidy accounts for the old lease's token and revokes the abandoned one.
	e.shiftClock(10 * time.Minute)
	got := must(t)(e.write("tidy", map[string]any{"safety_age": "2m", "revoke_orphans": true})).Data
	if got["orphans_revoked"] != int64(1) || got["accounted"] != int64(2) {
		t.Errorf("tidy: %v", got)
	}
	if tok, _ := srv.Token(abandonedTok.ID); tok.State == "live" {
		t.Error("tidy left the abandoned token live")
	}
	// The old lease, its record now moved, still revokes token and record.
	must(t)(e.revoke(old.lease(leasedKey, leasedTok)))
	if tok, _ := srv.Token(leasedTok.ID); tok.State == "live" {
		t.Error("the old lease's revoke left its token live")
	}
	for _, k := range e.issuanceKeys() {
		if strings.Contains(k, leasedKey) || strings.Contains(k, abandonedKey) {
			t.Errorf("record %s left", k)
		}
	}
}

// racingStorage runs hook once, right after the first Get of key.
type racingStorage struct {
	logical.Storage
	key  string
	hook func()
}

func (r *racingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	e, err := r.Storage.Get(ctx, key)
	if r.hook != nil && key == r.key {
		h := r.hook
		r.hook = nil
		h()
	}
	return e, err
}

// A lease revoked while its flat record is being moved leaves no record:
// here the revoke runs after the move has read the flat record and before
// it writes the live copy. The move reads the flat key again after writing
// the copy, and deletes the copy since the flat key is gone.
func TestIssuance_MoveRacesWithRevoke(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	old := oldVersion{t: t, e: e, srv: srv}
	key, tok := old.record(issueStateConfirmed, time.Minute, true)
	base := e.storage.Storage
	e.storage.Storage = &racingStorage{Storage: base, key: issuedPrefix + key, hook: func() {
		req := e.request(logical.RevokeOperation, "creds/r", nil)
		req.Storage = base
		req.Secret = old.lease(key, tok)
		if _, err := e.b.HandleRequest(context.Background(), req); err != nil {
			t.Errorf("revoke during the move: %v", err)
		}
	}}
	if err := e.b.prepareIssuance(context.Background(), e.storage); err != nil {
		t.Fatal(err)
	}
	if keys := e.issuanceKeys(); len(keys) != 0 {
		t.Errorf("records left: %v", keys)
	}
	if up, _ := srv.Token(tok.ID); up.State == "live" {
		t.Error("token live after its lease's revoke")
	}
}
