package tooken

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Issuance records: issued/<issue_key>. The key is also the POST's
// Idempotency-Key and the token's vault_issue_key metadata.
//
// A creds read writes the record "pending" (with the exact create body)
// before the POST and "confirmed" (with the token id) after the answer: two
// storage writes and nothing else. The lease revoke deletes it. A pending
// record that outlives a request (crash, lost answer, failed confirm) is
// finished by rollbackIssuance: replay the POST with the same key and body,
// revoke what it names, delete the record (undoCreate).
const (
	issueStatePending   = "pending"
	issueStateConfirmed = "confirmed"
	// abandoned: rollback gave up (bounded attempts). Kept for tidy, which
	// reports (and may revoke) the token and collects the record once its
	// expires_at has passed.
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

// issuanceRecord is stored at issuedPrefix + Key. It never holds a secret.
type issuanceRecord struct {
	Key        string                       `json:"key"`
	State      string                       `json:"state"`
	Role       string                       `json:"role"`
	Body       tookenapi.CreateTokenRequest `json:"body"` // the exact POST body: a replay reuses it
	TokenID    string                       `json:"token_id,omitempty"`
	CreatedAt  time.Time                    `json:"created_at"`
	retryState                              // rollback attempts
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
	exp := r.expiresAt()
	return !exp.IsZero() && !now.Before(exp)
}

// issuanceRecords is what this node knows of the mount's issuance records,
// so that the periodic rollback reads storage only for records it does not
// know as confirmed, and never touches a record a request is working on.
type issuanceRecords struct {
	mu        sync.Mutex
	inFlight  map[string]struct{}  // issue keys of creds requests running on this node
	claimed   map[string]struct{}  // issue keys being rolled back now
	confirmed map[string]time.Time // issue keys known confirmed -> expires_at
	scanned   bool                 // one full read of issued/ done since start
	last      rollbackReport       // the last rollback pass

	// Settings (tests shorten them).
	maxAttempts int           // rollback attempts before a record is abandoned
	retry       retryPolicy   // backoff between attempts
	callTimeout time.Duration // of each upstream call of a rollback
	passBudget  time.Duration // of one rollback pass
}

func newIssuanceRecords() *issuanceRecords {
	return &issuanceRecords{
		inFlight:    make(map[string]struct{}),
		claimed:     make(map[string]struct{}),
		confirmed:   make(map[string]time.Time),
		maxAttempts: defaultMaxRollbackAttempts,
		retry:       retryPolicy{base: defaultRetryBase, max: defaultRetryMax},
		callTimeout: defaultUpstreamCallTimeout,
		passBudget:  defaultRollbackBudget,
	}
}

// begin marks a creds request's key in flight on this node: rollback leaves
// it alone until the request calls end.
func (r *issuanceRecords) begin(key string) (end func()) {
	r.mu.Lock()
	r.inFlight[key] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.inFlight, key)
		r.mu.Unlock()
	}
}

func (r *issuanceRecords) isInFlight(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.inFlight[key]
	return ok
}

// claim reserves a key for rollback; false while a request (or another
// rollback) holds it.
func (r *issuanceRecords) claim(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.inFlight[key]; ok {
		return false
	}
	if _, ok := r.claimed[key]; ok {
		return false
	}
	r.claimed[key] = struct{}{}
	return true
}

func (r *issuanceRecords) release(key string) {
	r.mu.Lock()
	delete(r.claimed, key)
	r.mu.Unlock()
}

func (r *issuanceRecords) markConfirmed(key string, expiresAt time.Time) {
	r.mu.Lock()
	r.confirmed[key] = expiresAt
	r.mu.Unlock()
}

func (r *issuanceRecords) forget(key string) {
	r.mu.Lock()
	delete(r.confirmed, key)
	r.mu.Unlock()
}

func (r *issuanceRecords) isConfirmed(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.confirmed[key]
	return ok
}

// lastReport is what the last rollback pass did.
func (r *issuanceRecords) lastReport() rollbackReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// dropIssuance deletes a record whose token is dead (or was never created).
// Best effort: a record left behind is finished by rollback or collected by
// tidy once expired.
func (b *tookenBackend) dropIssuance(ctx context.Context, s logical.Storage, key string) {
	if key == "" {
		return
	}
	b.issued.forget(key)
	if err := deleteIssuance(ctx, s, key); err != nil {
		b.Logger().Warn("could not delete an issuance record; rollback or tidy will", "issue_key", key, "error", err)
	}
}

// rollbackReport counts what one rollback pass did.
type rollbackReport struct {
	Pending   int `json:"pending"`   // pending records seen
	Finished  int `json:"finished"`  // pending records finished (token revoked or never created)
	Failed    int `json:"failed"`    // attempts that failed (retried later)
	Abandoned int `json:"abandoned"` // records given up on (total abandoned seen)
	Collected int `json:"collected"` // expired records deleted
}

// rollbackIssuance is the periodic rollback: it finishes the pending
// records older than the min age that no request on this node holds. It
// reads every record once after start and then only the records it does not
// know as confirmed. What it did is kept for tidy/status.
func (b *tookenBackend) rollbackIssuance(ctx context.Context, s logical.Storage) (rep rollbackReport, err error) {
	r := b.issued
	defer func() {
		r.mu.Lock()
		r.last = rep
		r.mu.Unlock()
	}()
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil {
		return rep, err
	}
	keys, err := listIssuance(ctx, s)
	if err != nil {
		return rep, err
	}
	r.mu.Lock()
	full := !r.scanned
	r.mu.Unlock()

	p := &rollbackPass{now: b.now(), minAge: cfg.effectiveRollbackMinAge(), full: full, deadline: time.Now().Add(r.passBudget)}
	for _, key := range keys {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err := b.rollbackKey(ctx, s, p, key, &rep); err != nil {
			return rep, err
		}
	}
	if full {
		r.mu.Lock()
		r.scanned = true
		r.mu.Unlock()
	}
	rep.Collected += b.collectConfirmed(ctx, s, keys, p.now)
	return rep, nil
}

// rollbackPass is the state of one rollback pass.
type rollbackPass struct {
	now    time.Time
	minAge time.Duration
	full   bool              // read every record, even those known confirmed
	client *tookenapi.Client // built when first needed
	// deadline: no record's upstream work starts after it (each call has
	// its own timeout); the records left wait for the next pass.
	deadline time.Time
}

// rollbackKey handles one issuance record: it learns a confirmed one,
// collects an expired abandoned one, and finishes a pending one that is due.
// Only storage and client-building failures are returned.
func (b *tookenBackend) rollbackKey(ctx context.Context, s logical.Storage, p *rollbackPass, key string, rep *rollbackReport) error {
	r := b.issued
	if (!p.full && r.isConfirmed(key)) || r.isInFlight(key) {
		return nil
	}
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		return err
	}
	switch rec.State {
	case issueStateConfirmed:
		r.markConfirmed(key, rec.expiresAt())
		return nil
	case issueStateAbandoned:
		rep.Abandoned++
		if rec.expired(p.now) {
			b.dropIssuance(ctx, s, key)
			rep.Collected++
		}
		return nil
	}
	rep.Pending++
	if p.now.Sub(rec.CreatedAt) < p.minAge || p.now.Before(rec.NextAttempt) || time.Now().After(p.deadline) {
		return nil
	}
	if p.client == nil {
		if p.client, err = b.getClient(ctx, s); err != nil {
			return err
		}
	}
	done, err := b.rollbackRecord(ctx, s, p.client, key)
	switch {
	case err != nil:
		return err
	case done:
		rep.Finished++
	default:
		rep.Failed++
	}
	return nil
}

// collectConfirmed deletes the records known confirmed whose token has
// expired upstream (their lease is gone: it never outlives the token), and
// forgets the keys no longer listed (deleted elsewhere). It returns how many
// records it deleted.
func (b *tookenBackend) collectConfirmed(ctx context.Context, s logical.Storage, listed []string, now time.Time) int {
	present := make(map[string]struct{}, len(listed))
	for _, key := range listed {
		present[key] = struct{}{}
	}
	r := b.issued
	var expired []string
	r.mu.Lock()
	for key, exp := range r.confirmed {
		if _, ok := present[key]; !ok {
			delete(r.confirmed, key)
			continue
		}
		if !exp.IsZero() && now.After(exp) {
			expired = append(expired, key)
		}
	}
	r.mu.Unlock()
	for _, key := range expired {
		b.dropIssuance(ctx, s, key)
	}
	return len(expired)
}

// rollbackRecord finishes one pending record with undoCreate and deletes it.
// It reports done when the record is gone; a failed attempt is recorded with
// its backoff, and the record is abandoned after maxAttempts. Only a storage
// failure is returned as an error.
func (b *tookenBackend) rollbackRecord(ctx context.Context, s logical.Storage, client *tookenapi.Client, key string) (bool, error) {
	r := b.issued
	if !r.claim(key) {
		return false, nil
	}
	defer r.release(key)
	// Read again under the claim: the request may have confirmed it meanwhile.
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		return rec == nil && err == nil, err
	}
	if rec.State != issueStatePending {
		if rec.State == issueStateConfirmed {
			r.markConfirmed(key, rec.expiresAt())
		}
		return false, nil
	}
	now := b.now()
	if rec.expired(now) {
		// Whatever this key created is dead upstream already.
		b.dropIssuance(ctx, s, key)
		return true, nil
	}
	tokenID, err := undoCreate(ctx, client, rec.Body, key, r.callTimeout)
	if err == nil {
		b.Logger().Info("rollback finished an unfinished creds request: its token is revoked, or was never created", "role", rec.Role, "token_id", tokenID, "issue_key", key)
		b.dropIssuance(ctx, s, key)
		return true, nil
	}
	if tokenID != "" {
		rec.TokenID = tokenID
	}
	return false, b.recordRollbackFailure(ctx, s, rec, err, now)
}

// recordRollbackFailure stores a failed rollback attempt with its backoff,
// and abandons the record after maxAttempts.
func (b *tookenBackend) recordRollbackFailure(ctx context.Context, s logical.Storage, rec *issuanceRecord, err error, now time.Time) error {
	r := b.issued
	r.retry.recordFailure(&rec.retryState, err, now)
	if rec.Attempts >= r.maxAttempts {
		rec.State = issueStateAbandoned
		b.Logger().Error("rollback gives up on an unfinished creds request: a token may live upstream until its expiry; tidy reports it",
			"role", rec.Role, "issue_key", rec.Key, "token_id", rec.TokenID, "expires_at", rec.expiresAt().Format(time.RFC3339), "attempts", rec.Attempts, "error", err)
	} else {
		b.Logger().Warn("rollback of an unfinished creds request failed; will retry", "role", rec.Role, "issue_key", rec.Key, "attempts", rec.Attempts, "error", err)
	}
	if perr := putIssuance(ctx, s, rec); perr != nil {
		return fmt.Errorf("recording a rollback attempt: %w", perr)
	}
	return nil
}
