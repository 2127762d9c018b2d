package tooken

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Issuance records guard every creds read, in two records kept apart in the
// key space (storage.go), so that periodic work costs what is pending, never
// what is live:
//
//	issued/pending/<key>       written before the POST: role and exact create body
//	issued/live/<role>/<key>   written once the token exists: its id and expiry
//
// The key is also the POST's Idempotency-Key and the token's vault_issue_key
// metadata. A creds read costs these two writes and nothing else; the lease
// revoke deletes the live record (one delete; the lease's internal data names
// it). The pending record of a read that was confirmed is deleted by the next
// periodic run (sweepConfirmed), off the request path: this node keeps the
// keys it confirmed until then, a list bounded by the read rate over one
// period (and by maxUnswept), not by the number of leases. A pending record that was never
// confirmed (crash, lost answer, failed write) is finished by the rollback
// (issuance_rollback.go): replay the POST with the same key and body, revoke
// what it names, delete the record. Per-role counts of live tokens for
// max_live_tokens are in issuance_count.go; the start-up pass that learns
// what is pending and moves the previous version's records is in
// issuance_prepare.go.
const (
	issueStatePending   = "pending"
	issueStateConfirmed = "confirmed" // the previous layout only: live records have no state
	// abandoned: rollback gave up (bounded attempts). The record stays where
	// it is, for tidy, which reports (and may revoke) the token; it is deleted
	// once its expires_at has passed.
	issueStateAbandoned = "abandoned"
)

// Defaults of the rollback; the tests shorten them.
const (
	defaultRollbackMinAge      = 2 * time.Minute
	maxRollbackMinAge          = time.Hour
	defaultMaxRollbackAttempts = 10
	defaultRetryBase           = 30 * time.Second
	defaultRetryMax            = 10 * time.Minute
	// defaultRollbackBudget bounds when a rollback pass may start the
	// upstream work of another record; what it leaves waits for the next
	// run (the drain's budget follows it in the same run).
	defaultRollbackBudget = 15 * time.Second
)

// issuanceRecord is a pending record, stored at issuedPendingPrefix + Key
// (and the previous version's record at issuedPrefix + Key, whose State went
// pending -> confirmed in place). It never holds a secret.
type issuanceRecord struct {
	Key       string                       `json:"key"`
	State     string                       `json:"state"`
	Role      string                       `json:"role"`
	Body      tookenapi.CreateTokenRequest `json:"body"` // the exact POST body: a replay reuses it
	TokenID   string                       `json:"token_id,omitempty"`
	CreatedAt time.Time                    `json:"created_at"`
	// Dest is the Tooken the POST goes to: only there can a replay learn
	// the token, and a revoke kill it. Absent in records of a version that
	// did not record it: the config's destination then.
	Dest       *secretDestination `json:"destination,omitempty"`
	retryState                    // rollback attempts
}

func newIssuanceRecord(key, role string, body tookenapi.CreateTokenRequest, now time.Time) *issuanceRecord {
	return &issuanceRecord{Key: key, State: issueStatePending, Role: role, Body: body, CreatedAt: now}
}

// expiresAt is the upstream expiry the record's token has (or would have).
func (r *issuanceRecord) expiresAt() time.Time {
	if r.Body.ExpiresAt == nil {
		return time.Time{}
	}
	return *r.Body.ExpiresAt
}

// expired tells whether any token of this record is dead upstream by now.
func (r *issuanceRecord) expired(now time.Time) bool {
	return expiredAt(r.expiresAt(), now)
}

func expiredAt(exp, now time.Time) bool { return !exp.IsZero() && !now.Before(exp) }

// liveRecord is stored at issuedLivePrefix + role/key once the token of a
// creds read exists; role and key are in its storage key. It is all tidy
// needs (which token the key made, and until when), so the create body is
// encoded once, in the pending record, not twice.
type liveRecord struct {
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	IssuedAt  time.Time `json:"issued_at"`
}

// issuanceRecords is what this node knows of the mount's issuance records:
// the pending records it knows of (in flight, or left for the rollback), the
// keys of the reads it confirmed whose pending record waits for the sweep,
// and the per-role live counts. Nothing in it grows with the number of live
// leases.
type issuanceRecords struct {
	mu       sync.Mutex
	pending  map[string]*pendingKey  // by issue key; each holds a slot of its role's count
	toSweep  []string                // keys of confirmed reads whose pending record is still stored
	sweeping bool                    // a sweep started by maxUnswept is running
	roles    map[string]*roleCount   // by role (issuance_count.go)
	gen      uint64                  // bumped at each listing of the pending records
	claims   map[string]struct{}     // live record ids (role/key) being deleted by tidy or a late revoke
	last     lastRun[rollbackReport] // the last rollback pass

	prepareMu sync.Mutex  // one start-up pass at a time
	prepared  atomic.Bool // the start-up pass is done (issuance_prepare.go)

	// Settings (tests shorten them).
	maxAttempts int           // rollback attempts before a record is abandoned
	maxUnswept  int           // keys waiting for the sweep before one starts at once
	retry       retryPolicy   // backoff between attempts
	callTimeout time.Duration // of each upstream call of a rollback
	passBudget  time.Duration // of one rollback pass
}

// defaultMaxUnswept bounds toSweep: past it a sweep starts at once rather
// than at the next periodic run (about 64 bytes a key; reached only above
// ~1,700 reads a second).
const defaultMaxUnswept = 100000

// pendingKey is one pending record this node knows of, not confirmed.
type pendingKey struct {
	role      string    // "" until known
	inFlight  bool      // a creds request of this node holds it
	claimed   bool      // the rollback (or tidy) works on it now
	abandoned bool      // the rollback gave up on it
	due       time.Time // the rollback looks at it again from then on (zero: at once)
	settled   uint64    // gen when it last stopped being in flight, or was learned
}

func newIssuanceRecords() *issuanceRecords {
	return &issuanceRecords{
		pending:     make(map[string]*pendingKey),
		roles:       make(map[string]*roleCount),
		claims:      make(map[string]struct{}),
		maxAttempts: defaultMaxRollbackAttempts,
		maxUnswept:  defaultMaxUnswept,
		retry:       retryPolicy{base: defaultRetryBase, max: defaultRetryMax},
		callTimeout: defaultUpstreamCallTimeout,
		passBudget:  defaultRollbackBudget,
	}
}

// begin marks a creds request's key in flight on this node: the rollback
// leaves it alone until the request calls end.
func (r *issuanceRecords) begin(key string) (end func()) {
	r.mu.Lock()
	p := r.holdLocked(key)
	r.mu.Unlock()
	return r.ender(p)
}

// holdLocked is the entry of key, made if needed, marked in flight (r.mu
// held).
func (r *issuanceRecords) holdLocked(key string) *pendingKey {
	p := r.pending[key]
	if p == nil {
		p = &pendingKey{}
		r.pending[key] = p
	}
	p.inFlight = true
	return p
}

// ender is the end of a request that holds p.
func (r *issuanceRecords) ender(p *pendingKey) func() {
	return func() {
		r.mu.Lock()
		p.inFlight = false
		p.settled = r.gen
		r.mu.Unlock()
	}
}

func (r *issuanceRecords) isInFlight(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[key]
	return p != nil && p.inFlight
}

// claim reserves a pending key for the rollback (or tidy); false while a
// request (or another claim) holds it.
func (r *issuanceRecords) claim(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[key]
	if p == nil {
		p = &pendingKey{settled: r.gen}
		r.pending[key] = p
	}
	if p.inFlight || p.claimed {
		return false
	}
	p.claimed = true
	return true
}

func (r *issuanceRecords) release(key string) {
	r.mu.Lock()
	if p := r.pending[key]; p != nil {
		p.claimed = false
	}
	r.mu.Unlock()
}

// setDue notes when the rollback must look at a pending key next.
func (r *issuanceRecords) setDue(key string, due time.Time, abandoned bool) {
	r.mu.Lock()
	if p := r.pending[key]; p != nil {
		p.due, p.abandoned = due, abandoned
	}
	r.mu.Unlock()
}

// claimLive reserves a live record for a deletion whose caller must first
// check that it still exists (tidy's collection, a revoke after expiry), so
// that the record's slot is released once.
func (r *issuanceRecords) claimLive(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.claims[id]; ok {
		return false
	}
	r.claims[id] = struct{}{}
	return true
}

func (r *issuanceRecords) releaseLive(id string) {
	r.mu.Lock()
	delete(r.claims, id)
	r.mu.Unlock()
}

// lastReport is what the last rollback pass did.
func (r *issuanceRecords) lastReport() rollbackReport { return r.last.get() }

// confirmIssuance stores the live record of a creds read whose token exists
// (its second storage write): the read's slot passes to it, and its pending
// record now only waits for the sweep. Past maxUnswept keys waiting, a sweep
// starts at once, in the background.
func (b *tookenBackend) confirmIssuance(ctx context.Context, s logical.Storage, role, key string, rec *liveRecord) error {
	r := b.issued
	done := r.changing(role)
	defer done()
	if err := putLive(ctx, s, role, key, rec); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.pending, key)
	r.toSweep = append(r.toSweep, key)
	start := len(r.toSweep) >= r.maxUnswept && !r.sweeping
	r.sweeping = r.sweeping || start
	r.mu.Unlock()
	if start {
		go b.sweepNow(s)
	}
	return nil
}

// dropPending deletes the pending record of a creds read whose token is dead
// or was never created, and frees its slot. Best effort: a record left
// behind is finished by the rollback.
func (b *tookenBackend) dropPending(ctx context.Context, s logical.Storage, role, key string) {
	r := b.issued
	done := r.changing(role)
	defer done()
	if err := deleteIssuance(ctx, s, key); err != nil {
		b.Logger().Warn("could not delete a pending issuance record; the rollback will", "issue_key", key, "error", err)
		return
	}
	r.mu.Lock()
	if p := r.pending[key]; p != nil {
		r.adjustLocked(p.role, -1)
		delete(r.pending, key)
	}
	r.mu.Unlock()
}

// dropLive deletes the live record of a token that is dead, and frees its
// slot. A record left behind (the error) is collected by tidy once its
// token has expired.
func (b *tookenBackend) dropLive(ctx context.Context, s logical.Storage, role, key string) error {
	r := b.issued
	done := r.changing(role)
	defer done()
	if err := deleteLive(ctx, s, role, key); err != nil {
		b.Logger().Warn("could not delete an issuance record; tidy will once its token has expired", "role", role, "issue_key", key, "error", err)
		return err
	}
	r.mu.Lock()
	r.adjustLocked(role, -1)
	r.mu.Unlock()
	return nil
}

// dropLiveIfPresent is dropLive for a record that may be gone already (its
// token has expired, so tidy may have collected it): it reads the record
// first, under a claim, so that its slot is freed once.
func (b *tookenBackend) dropLiveIfPresent(ctx context.Context, s logical.Storage, role, key string) (dropped bool, err error) {
	r := b.issued
	id := liveID(role, key)
	if !r.claimLive(id) {
		return false, nil // another deletion of it is under way
	}
	defer r.releaseLive(id)
	rec, err := getLive(ctx, s, role, key)
	if err != nil || rec == nil {
		return false, err
	}
	if err := b.dropLive(ctx, s, role, key); err != nil {
		return false, err
	}
	return true, nil
}

// issuanceRef names the issuance record of an issued token: the live record
// of role/key, or, for a lease or queue entry of the previous version, its
// flat record (which the start-up pass may have moved to the live one).
type issuanceRef struct {
	role, key string
	legacy    bool
}

// recordKey is the storage key of the live record, as leases and queue
// entries carry it.
func (ref issuanceRef) recordKey() string {
	if ref.legacy || ref.key == "" {
		return ""
	}
	return issuedLivePrefix + liveID(ref.role, ref.key)
}

// refFor names the record of a lease or queue entry from its role, issue key
// and record key ("" when written by the previous version).
func refFor(role, key, record string) issuanceRef {
	ref := issuanceRef{role: role, key: key}
	ref.legacy = record == "" || record != ref.recordKey()
	return ref
}

// dropRecord deletes the issuance record of a token that is dead (lease
// revoke, queue drain). A record of the previous version is at its flat key
// until the start-up pass moves it: both are deleted, flat first (see
// moveLegacy for why that order). expired says that the token's expires_at
// has passed: tidy may have collected the record already. For a role whose
// live tokens are counted (max_live_tokens), the record is read before it is
// deleted, so that a second revoke of one lease (Vault retries a revoke whose
// lease it could not delete) frees no second slot; and a record that could
// not be deleted is the error, so that the revoke is tried again rather than
// the slot held until the token's expiry.
func (b *tookenBackend) dropRecord(ctx context.Context, s logical.Storage, ref issuanceRef, expired bool) error {
	if ref.key == "" {
		return nil
	}
	if ref.legacy && !b.issued.prepared.Load() {
		if err := deleteLegacy(ctx, s, ref.key); err != nil {
			b.Logger().Warn("could not delete an issuance record; tidy will once its token has expired", "issue_key", ref.key, "error", err)
		}
	}
	if _, counted := b.issued.liveCount(ref.role); counted {
		_, err := b.dropLiveIfPresent(ctx, s, ref.role, ref.key)
		return err
	}
	// Uncounted: a record left behind costs no slot, and tidy collects it
	// once its token has expired.
	if expired {
		_, _ = b.dropLiveIfPresent(ctx, s, ref.role, ref.key)
		return nil
	}
	_ = b.dropLive(ctx, s, ref.role, ref.key)
	return nil
}
