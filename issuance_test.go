package tooken

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
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

// issuanceKeys lists every issuance record in storage, whatever its layout,
// by its key under issued/.
func (e *testEnv) issuanceKeys() []string {
	e.t.Helper()
	keys, err := logical.CollectKeysWithPrefix(context.Background(), e.storage.Storage, issuedPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, issuedPrefix)
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
	ctx := context.Background()

	resp := must(t)(e.read("creds/r"))
	key := issueKeyOf(resp)
	secret := resp.Data["token"].(string)
	// The pending record holds the exact body; the live record the token id
	// and expiry; the lease names the live record. Neither holds the secret.
	pending := e.issuance(key)
	if pending == nil || pending.State != issueStatePending || pending.Role != "r" {
		t.Fatalf("pending record after creds = %+v", pending)
	}
	live, err := getLive(ctx, e.storage.Storage, "r", key)
	if err != nil || live == nil || live.TokenID != resp.Data["token_id"] {
		t.Fatalf("live record after creds = %+v, %v", live, err)
	}
	if got := resp.Secret.InternalData[internalRecord]; got != issuedLivePrefix+"r/"+key {
		t.Errorf("lease names record %v", got)
	}
	up, _ := srv.Token(live.TokenID)
	if up.ExpiresAt == nil || !up.ExpiresAt.Equal(live.ExpiresAt) || !up.ExpiresAt.Equal(pending.expiresAt()) ||
		up.Metadata[metaIssueKey] != key || up.Name != pending.Body.Name {
		t.Errorf("records %+v / %+v do not match upstream %+v", pending.Body, live, up)
	}
	if strings.Contains(mustJSON(t, pending), secret) || strings.Contains(mustJSON(t, live), secret) {
		t.Error("a record holds the secret")
	}
	if !slices.Contains(e.b.issued.toSweep, key) || e.b.issued.isInFlight(key) || e.b.issued.pending[key] != nil {
		t.Error("issuance records state after creds: the key should wait for the sweep only")
	}

	// The periodic run deletes the pending record of the confirmed read, and
	// forgets the key: nothing is kept in memory per live lease.
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if keys := e.issuanceKeys(); !slices.Equal(keys, []string{"live/r/" + key}) {
		t.Errorf("records after the sweep: %v", keys)
	}
	if n, m := len(e.b.issued.pending), len(e.b.issued.toSweep); n+m != 0 {
		t.Errorf("%d pending and %d confirmed keys still known after the sweep", n, m)
	}
	if rep := e.b.issued.lastReport(); rep.Swept != 1 {
		t.Errorf("rollback report %+v, want 1 swept", rep)
	}

	must(t)(e.revoke(lease(resp)))
	if keys := e.issuanceKeys(); len(keys) != 0 {
		t.Errorf("records left after revoke: %v", keys)
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
		// The record's CreatedAt is truncated to the second: a clock a second
		// back keeps it younger than rollback_min_age (1s) whatever the
		// fraction of the second it was written in.
		e.shiftClock(-time.Second)
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

// opStorage records the storage calls under issued/: each Get and List with
// what it found.
type opStorage struct {
	logical.Storage
	mu  sync.Mutex
	ops []string // "get issued/...", "list issued/... -> n"
}

func (o *opStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.HasPrefix(key, issuedPrefix) {
		o.mu.Lock()
		o.ops = append(o.ops, "get "+key)
		o.mu.Unlock()
	}
	return o.Storage.Get(ctx, key)
}

func (o *opStorage) List(ctx context.Context, prefix string) ([]string, error) {
	keys, err := o.Storage.List(ctx, prefix)
	if strings.HasPrefix(prefix, issuedPrefix) {
		records := 0 // folders left out
		for _, k := range keys {
			if !strings.HasSuffix(k, "/") {
				records++
			}
		}
		o.mu.Lock()
		o.ops = append(o.ops, fmt.Sprintf("list %s -> %d", prefix, records))
		o.mu.Unlock()
	}
	return keys, err
}

func (o *opStorage) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ops := o.ops
	o.ops = nil
	return ops
}

// recordsTouched is the issuance records a run of storage calls read or
// listed: every Get under issued/, and every key a List under it returned.
func recordsTouched(ops []string) (gets, listed int) {
	for _, op := range ops {
		if strings.HasPrefix(op, "get ") {
			gets++
		}
		if _, n, ok := strings.Cut(op, " -> "); ok {
			listed += must2(strconv.Atoi(n))
		}
	}
	return gets, listed
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A periodic run with nothing pending or due reads and lists no issuance
// record, however many leases are live, and keeps nothing in memory per
// lease; after a restart it reads only the pending records the previous
// process left, once.
func TestIssuance_PeriodicCostIsPending(t *testing.T) {
	for _, leases := range []int{0, 10, 300} {
		t.Run(fmt.Sprintf("%d live leases", leases), func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{RateLimit: -1})
			e := getTestBackend(t)
			e.configure(srv, nil)
			e.writeRole("r", map[string]any{"scopes": "deployments:write"})
			e.writeRole("capped", map[string]any{"scopes": "deployments:write", "max_live_tokens": 1000})
			ops := &opStorage{Storage: e.storage.Storage}
			e.storage.Storage = ops
			for i := 0; i < leases; i++ {
				must(t)(e.read("creds/" + []string{"r", "capped"}[i%2]))
			}
			if err := e.periodic(); err != nil { // sweeps the pending records of the reads
				t.Fatal(err)
			}
			ops.take()
			for run := 1; run <= 2; run++ {
				if err := e.periodic(); err != nil {
					t.Fatal(err)
				}
				if gets, listed := recordsTouched(ops.take()); gets != 0 || listed != 0 {
					t.Errorf("idle run %d: %d records read, %d listed", run, gets, listed)
				}
			}
			if n, m := len(e.b.issued.pending), len(e.b.issued.toSweep); n+m != 0 {
				t.Errorf("%d pending and %d confirmed issue keys kept in memory", n, m)
			}

			// A restarted plugin: its first run reads only what is left
			// pending (here: nothing), its next reads nothing.
			e.b.issued, e.b.queue = newIssuanceRecords(), newRevokeQueue()
			for run := 1; run <= 2; run++ {
				if err := e.periodic(); err != nil {
					t.Fatal(err)
				}
				if gets, listed := recordsTouched(ops.take()); gets != 0 || listed != 0 {
					t.Errorf("run %d after restart: %d records read, %d listed", run, gets, listed)
				}
			}
		})
	}
}

// A process that dies before its periodic run leaves the pending records of
// the reads it confirmed: the next process reads each once (it and its live
// record), deletes it, and forgets it; it never reads a live record of a
// read that was swept.
func TestIssuance_RestartSweepsWhatWasLeft(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	for i := 0; i < 20; i++ {
		must(t)(e.read("creds/r"))
	}
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	var unswept []*logical.Response
	for i := 0; i < 5; i++ {
		unswept = append(unswept, must(t)(e.read("creds/r")))
	}
	ops := &opStorage{Storage: e.storage.Storage}
	e.storage.Storage = ops
	e.b.issued = newIssuanceRecords() // killed before its run
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	gets, _ := recordsTouched(ops.take())
	if gets != 2*len(unswept) {
		t.Errorf("first run after restart: %d records read, want %d (each unswept pending record and its live one)", gets, 2*len(unswept))
	}
	if keys := e.issuanceKeys(); len(keys) != 25 || slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "pending/") }) {
		t.Errorf("records after the first run: %v, want the 25 live ones", keys)
	}
	if n := len(issuedLive(srv)); n != 25 {
		t.Errorf("%d live tokens, want 25: the rollback killed a leased one", n)
	}
	ops.take() // the test's own listing
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if gets, listed := recordsTouched(ops.take()); gets != 0 || listed != 0 {
		t.Errorf("second run: %d records read, %d listed", gets, listed)
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

// The keys waiting for the sweep are bounded: past maxUnswept a sweep
// starts at once, without waiting for the periodic run.
func TestIssuance_UnsweptBound(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	e.b.issued.maxUnswept = 10
	for i := 0; i < 25; i++ {
		must(t)(e.read("creds/r"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.b.issued.mu.Lock()
		waiting, sweeping := len(e.b.issued.toSweep), e.b.issued.sweeping
		e.b.issued.mu.Unlock()
		pending := 0
		for _, k := range e.issuanceKeys() {
			if strings.HasPrefix(k, "pending/") {
				pending++
			}
		}
		if !sweeping && waiting < 10 && pending == waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys wait for the sweep, %d pending records stored, sweeping %v", waiting, pending, sweeping)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(issuedLive(srv)); n != 25 {
		t.Errorf("%d live tokens, want 25", n)
	}
}

// A creds read cut short after its POST leaves a pending record naming the
// Tooken it posted to. After the config points to another Tooken, the
// rollback does not replay it there (a replay would create a token at the
// new Tooken and say nothing of the one at the first): the record waits,
// tidy/status counts it, and once the config points back the rollback
// finishes it where the token lives.
func TestIssuance_RollbackWaitsForTheTookenItPostedTo(t *testing.T) {
	first := newEmulator(t, tookentest.Options{RateLimit: -1})
	second := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(first, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
	rec := e.pendingRecord("r", time.Hour)
	rec.Dest = &secretDestination{URL: normalizeBaseURL(first.URL())}
	if err := putIssuance(context.Background(), e.storage.Storage, rec); err != nil {
		t.Fatal(err)
	}
	tok, err := e.client().CreateToken(context.Background(), rec.Body, rec.Key) // the POST of the read that died
	if err != nil {
		t.Fatal(err)
	}

	must(t)(e.write(configPath, map[string]any{"url": second.URL(), "token": second.RootSecret()}))
	second.ResetRequests()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(createRequests(second)); n != 0 || e.issuance(rec.Key) == nil {
		t.Fatalf("the rollback sent %d POSTs to the second Tooken, record kept: %v", n, e.issuance(rec.Key) != nil)
	}
	if up, _ := first.Token(tok.ID); up.State != "live" {
		t.Fatalf("the first Tooken's token is %s", up.State)
	}
	st := must(t)(e.read("tidy/status")).Data
	if st["pending_elsewhere"] != int64(1) {
		t.Errorf("tidy/status pending_elsewhere = %v, want 1", st["pending_elsewhere"])
	}
	if roll, _ := st["last_rollback"].(map[string]any); roll == nil || fmt.Sprint(roll["elsewhere"]) != "1" {
		t.Errorf("tidy/status last_rollback = %v, want elsewhere 1", st["last_rollback"])
	}

	must(t)(e.write(configPath, map[string]any{"url": first.URL(), "token": first.RootSecret()}))
	e.shiftClock(10 * time.Minute) // past the record's recheck
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if up, _ := first.Token(tok.ID); up.State == "live" || e.issuance(rec.Key) != nil {
		t.Fatalf("with the config back: token %s, record kept %v", up.State, e.issuance(rec.Key) != nil)
	}
}
