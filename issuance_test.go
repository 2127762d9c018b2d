package tooken

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

var errInjected = errors.New("injected storage failure")

// flakyStorage fails storage writes on demand: the next n Puts of a key
// prefix, and/or Puts and Deletes at random with a probability.
type flakyStorage struct {
	logical.Storage
	mu       sync.Mutex
	failNext map[string]int // key prefix -> Puts still to fail
	putP     float64
	delP     float64
	rng      *rand.Rand
	failed   int
}

func newFlakyStorage(s logical.Storage) *flakyStorage {
	return &flakyStorage{Storage: s, failNext: map[string]int{}, rng: rand.New(rand.NewPCG(1, 2))}
}

func (f *flakyStorage) failPuts(prefix string, n int) {
	f.mu.Lock()
	f.failNext[prefix] = n
	f.mu.Unlock()
}

func (f *flakyStorage) setRandom(putP, delP float64) {
	f.mu.Lock()
	f.putP, f.delP = putP, delP
	f.mu.Unlock()
}

func (f *flakyStorage) fail(key string, p float64, isPut bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if isPut {
		for prefix, n := range f.failNext {
			if n > 0 && strings.HasPrefix(key, prefix) {
				f.failNext[prefix] = n - 1
				f.failed++
				return true
			}
		}
	}
	if p > 0 && f.rng.Float64() < p {
		f.failed++
		return true
	}
	return false
}

func (f *flakyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	f.mu.Lock()
	p := f.putP
	f.mu.Unlock()
	if f.fail(e.Key, p, true) {
		return errInjected
	}
	return f.Storage.Put(ctx, e)
}

func (f *flakyStorage) Delete(ctx context.Context, key string) error {
	f.mu.Lock()
	p := f.delP
	f.mu.Unlock()
	if f.fail(key, p, false) {
		return errInjected
	}
	return f.Storage.Delete(ctx, key)
}

// withFlakyStorage puts a flakyStorage under the env's counting storage.
func (e *testEnv) withFlakyStorage() *flakyStorage {
	f := newFlakyStorage(e.storage.Storage)
	e.storage.Storage = f
	return f
}

// periodic runs the backend's periodic func as Vault's rollback manager does.
func (e *testEnv) periodic() error {
	return e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil))
}

// shiftClock moves the backend's clock d ahead of real time.
func (e *testEnv) shiftClock(d time.Duration) {
	e.b.clock = func() time.Time { return time.Now().Add(d) }
}

func (e *testEnv) issuance(key string) *issuanceRecord {
	e.t.Helper()
	rec, err := getIssuance(context.Background(), e.storage.Storage, key)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *testEnv) issuanceKeys() []string {
	e.t.Helper()
	keys, err := e.storage.Storage.List(context.Background(), issuedPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// pendingRecord writes a pending record as a creds request would before its
// POST, created age ago, and returns it.
func (e *testEnv) pendingRecord(role string, age time.Duration) *issuanceRecord {
	e.t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	exp := now.Add(time.Hour)
	key := tookenapi.NewIdempotencyKey()
	body := tookenapi.CreateTokenRequest{
		Name:      "pending-" + key[:8],
		Scopes:    []string{"deployments:write"},
		ExpiresAt: &exp,
		Metadata:  map[string]string{metaRole: role, metaMountUUID: testMountUUID, metaIssueKey: key},
	}
	rec := newIssuanceRecord(key, role, body, now.Add(-age))
	if err := putIssuance(context.Background(), e.storage.Storage, rec); err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *testEnv) client() *tookenapi.Client {
	e.t.Helper()
	c, err := e.b.getClient(context.Background(), e.storage)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func issueKeyOf(resp *logical.Response) string {
	s, _ := resp.Secret.InternalData[internalIssueKey].(string)
	return s
}

func TestIssuance_Lifecycle(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})

	resp := must(t)(e.read("creds/r"))
	key := issueKeyOf(resp)
	rec := e.issuance(key)
	if rec == nil || rec.State != issueStateConfirmed || rec.TokenID != resp.Data["token_id"] {
		t.Fatalf("record after creds = %+v", rec)
	}
	// The record holds the exact body: the upstream token's expires_at and
	// metadata, never the secret.
	up, _ := srv.Token(rec.TokenID)
	if up.ExpiresAt == nil || !up.ExpiresAt.Equal(rec.expiresAt()) || up.Metadata[metaIssueKey] != key || up.Name != rec.Body.Name {
		t.Errorf("record body %+v does not match upstream %+v", rec.Body, up)
	}
	if strings.Contains(mustJSON(t, rec), resp.Data["token"].(string)) {
		t.Error("the record holds the secret")
	}
	if !e.b.issued.isConfirmed(key) || e.b.issued.isInFlight(key) {
		t.Error("issuance records state after creds")
	}
	must(t)(e.revoke(lease(resp)))
	if e.issuance(key) != nil {
		t.Error("record left after revoke")
	}
	if e.b.issued.isConfirmed(key) {
		t.Error("the issuance records still know the key after revoke")
	}
}

// Every crash point of a creds read ends, after rollback, with no live token
// and no record.
func TestIssuance_CrashPoints(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	flaky := e.withFlakyStorage()
	ctx := context.Background()

	rollback := func(t *testing.T) {
		t.Helper()
		e.shiftClock(2 * time.Second)
		defer e.shiftClock(0)
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T) {
		t.Helper()
		if live := issuedLive(srv); len(live) != 0 {
			t.Errorf("live tokens: %+v", live)
		}
		if keys := e.issuanceKeys(); len(keys) != 0 {
			t.Errorf("records left: %v", keys)
		}
	}

	t.Run("pending write fails: nothing created", func(t *testing.T) {
		srv.ResetRequests()
		flaky.failPuts(issuedPrefix, 1)
		_, err := e.read("creds/r")
		if err == nil || !strings.Contains(err.Error(), "recording the issuance") {
			t.Fatalf("err = %v", err)
		}
		if n := len(createRequests(srv)); n != 0 {
			t.Errorf("%d POSTs", n)
		}
		check(t)
	})
	t.Run("crash after the pending write, before the POST", func(t *testing.T) {
		e.pendingRecord("r", 0)
		rollback(t) // the replay creates the token now, then kills it
		check(t)
	})
	t.Run("crash after the POST, before the confirm", func(t *testing.T) {
		rec := e.pendingRecord("r", 0)
		tok, err := e.client().CreateToken(ctx, rec.Body, rec.Key)
		if err != nil {
			t.Fatal(err)
		}
		e.shiftClock(0)
		if err := e.periodic(); err != nil { // too young: left alone
			t.Fatal(err)
		}
		if up, _ := srv.Token(tok.ID); up.State != "live" || e.issuance(rec.Key) == nil {
			t.Fatal("rollback touched a record younger than the min age")
		}
		rollback(t)
		if up, _ := srv.Token(tok.ID); up.State == "live" {
			t.Error("the token created before the crash is still live")
		}
		check(t)
	})
	t.Run("confirm fails: revoked at once", func(t *testing.T) {
		flaky.failPuts(issuedPrefix, 0)
		var n int
		flaky.Storage = &onNthPut{Storage: flaky.Storage, n: 2, prefix: issuedPrefix, count: &n}
		defer func() { flaky.Storage = flaky.Storage.(*onNthPut).Storage }()
		_, err := e.read("creds/r")
		if err == nil || !strings.Contains(err.Error(), "confirming the issuance") {
			t.Fatalf("err = %v", err)
		}
		check(t)
	})
	t.Run("confirm fails and the revoke fails: rollback finishes", func(t *testing.T) {
		var n int
		flaky.Storage = &onNthPut{Storage: flaky.Storage, n: 2, prefix: issuedPrefix, count: &n}
		id := srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Path: "/v1/tokens/", Prefix: true, Status: 503})
		_, err := e.read("creds/r")
		flaky.Storage = flaky.Storage.(*onNthPut).Storage
		srv.ClearFaults()
		_ = id
		if err == nil {
			t.Fatal("creds read succeeded")
		}
		if len(issuedLive(srv)) != 1 || len(e.issuanceKeys()) != 1 {
			t.Fatalf("want the token live and its pending record, got %d live, records %v", len(issuedLive(srv)), e.issuanceKeys())
		}
		rollback(t)
		check(t)
	})
	t.Run("answer lost and the clean-up replay fails: rollback finishes", func(t *testing.T) {
		srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Drop: true}) // every attempt, clean-up replays included
		_, err := e.read("creds/r")
		srv.ClearFaults()
		if err == nil {
			t.Fatal("creds read succeeded")
		}
		if len(issuedLive(srv)) != 1 {
			t.Fatalf("want the dropped answer's token live, got %d", len(issuedLive(srv)))
		}
		rollback(t)
		check(t)
	})
	t.Run("definitive refusal: record dropped", func(t *testing.T) {
		srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Status: 403, Count: 1})
		_, _ = e.read("creds/r")
		srv.ClearFaults()
		check(t)
	})
}

// onNthPut fails the n-th Put under prefix (counted in *count).
type onNthPut struct {
	logical.Storage
	n      int
	prefix string
	count  *int
	mu     sync.Mutex
}

func (o *onNthPut) Put(ctx context.Context, e *logical.StorageEntry) error {
	if strings.HasPrefix(e.Key, o.prefix) {
		o.mu.Lock()
		*o.count++
		hit := *o.count == o.n
		o.mu.Unlock()
		if hit {
			return errInjected
		}
	}
	return o.Storage.Put(ctx, e)
}

func TestIssuance_RollbackSkipsInFlightAndYoung(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "60s"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})

	young := e.pendingRecord("r", 30*time.Second)
	old := e.pendingRecord("r", 2*time.Minute)
	held := e.pendingRecord("r", 2*time.Minute)
	end := e.b.issued.begin(held.Key) // a running request on this node holds it
	for _, r := range []*issuanceRecord{young, old, held} {
		if _, err := e.client().CreateToken(context.Background(), r.Body, r.Key); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if e.issuance(old.Key) != nil {
		t.Error("old pending record not rolled back")
	}
	if e.issuance(young.Key) == nil || e.issuance(held.Key) == nil {
		t.Error("rollback touched a young or in-flight record")
	}
	if n := len(issuedLive(srv)); n != 2 {
		t.Errorf("%d live tokens, want 2 (young, held)", n)
	}
	end()
	e.shiftClock(time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(issuedLive(srv)); n != 0 || len(e.issuanceKeys()) != 0 {
		t.Errorf("%d live tokens, records %v", n, e.issuanceKeys())
	}
}

// The periodic rollback and queue drain write storage and call Tooken: a
// performance standby (read-only storage) leaves them to the active node.
func TestIssuance_PeriodicSkipsStandby(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	rec := e.pendingRecord("r", time.Minute)
	if _, err := e.client().CreateToken(context.Background(), rec.Body, rec.Key); err != nil {
		t.Fatal(err)
	}
	queued, err := e.client().CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: "queued", Scopes: []string{"deployments:write"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := putQueueEntry(context.Background(), e.storage.Storage, &revokeQueueEntry{TokenID: queued.ID, QueuedAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}

	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	srv.ResetRequests()
	e.storage.reset()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("a standby called Tooken %d times", n)
	}
	if n := e.storage.puts.Load() + e.storage.deletes.Load(); n != 0 {
		t.Errorf("a standby wrote storage %d times", n)
	}
	if n := len(issuedLive(srv)); n != 2 {
		t.Fatalf("%d live tokens, want 2", n)
	}

	e.sys.ReplicationStateVal = 0
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(issuedLive(srv)); n != 0 || e.issuance(rec.Key) != nil {
		t.Errorf("the active node left %d live tokens (record %v)", n, e.issuance(rec.Key))
	}
}

// Rollback is bounded: while Tooken refuses, attempts back off and the
// record is abandoned after maxRollbackAttempts; an expired record is
// dropped without a call.
func TestIssuance_RollbackBounded(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s", "max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	r := e.b.issued
	r.maxAttempts = 3
	r.retry = retryPolicy{base: time.Minute, max: time.Minute}

	rec := e.pendingRecord("r", time.Hour)
	srv.SetDown(true)
	shift := time.Duration(0)
	for i := 1; i <= 3; i++ {
		e.shiftClock(shift)
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
		got := e.issuance(rec.Key)
		if got == nil || got.Attempts != i {
			t.Fatalf("after round %d: %+v", i, got)
		}
		// Not due again before the backoff.
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
		if e.issuance(rec.Key).Attempts != i {
			t.Fatal("retried before the backoff")
		}
		shift += 2 * time.Minute
	}
	if got := e.issuance(rec.Key); got.State != issueStateAbandoned || got.LastError == "" {
		t.Fatalf("want abandoned with an error, got %+v", got)
	}
	srv.SetDown(false)
	srv.ResetRequests()
	e.shiftClock(shift)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d upstream calls for an abandoned record", n)
	}
	if !strings.Contains(e.logs.String(), "rollback gives up") {
		t.Error("giving up is not logged")
	}
	// Past its expires_at the record is collected.
	e.shiftClock(2 * time.Hour)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if e.issuance(rec.Key) != nil {
		t.Error("expired abandoned record not collected")
	}

	// A pending record past its expiry: dropped without a replay.
	exp := e.pendingRecord("r", 0)
	e.shiftClock(2 * time.Hour)
	srv.ResetRequests()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if e.issuance(exp.Key) != nil || len(srv.Requests()) != 0 {
		t.Errorf("expired pending record: record %v, %d calls", e.issuance(exp.Key), len(srv.Requests()))
	}
}

// After start, the periodic func reads every record once, then only the ones
// it does not know as confirmed.
func TestIssuance_PeriodicStorageCost(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	for i := 0; i < 10; i++ {
		must(t)(e.read("creds/r"))
	}
	e.b.issued, e.b.queue = newIssuanceRecords(), newRevokeQueue() // a restarted plugin
	e.storage.reset()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if g := e.storage.gets.Load(); g != 10 {
		t.Errorf("first run: %d Gets, want 10", g)
	}
	e.storage.reset()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if g, p := e.storage.gets.Load(), e.storage.puts.Load(); g != 0 || p != 0 {
		t.Errorf("second run: %d Gets, %d Puts, want 0", g, p)
	}
}

func TestIssuance_RollbackMinAgeConfig(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	if got := must(t)(e.read(configPath)).Data["rollback_min_age"]; got != int64(120) {
		t.Errorf("default rollback_min_age = %v, want 120", got)
	}
	must(t)(e.write(configPath, map[string]any{"rollback_min_age": "5s"}))
	if got := must(t)(e.read(configPath)).Data["rollback_min_age"]; got != int64(5) {
		t.Errorf("rollback_min_age = %v, want 5", got)
	}
	resp, err := e.write(configPath, map[string]any{"rollback_min_age": "2h"})
	mustUserError(t, resp, err, "rollback_min_age")
	resp, err = e.write(configPath, map[string]any{"rollback_min_age": "-1s"})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Error("negative rollback_min_age accepted")
	}
}
