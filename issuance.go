package tooken

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Issuance records: issued/<issue_key>. The key is also the POST's
// Idempotency-Key and the token's vault_issue_key metadata.
//
// A creds read writes the record "pending" (with the exact create body)
// before the POST and "confirmed" (with the token id) after the answer: two
// storage writes and nothing else. The lease revoke deletes it. A pending
// record that outlives a request (crash, lost answer, failed confirm) is
// finished by rollbackPending: replay the POST with the same key and body,
// revoke what it names, delete the record.
const (
	issueStatePending   = "pending"
	issueStateConfirmed = "confirmed"
	// abandoned: rollback gave up (bounded attempts). Kept for tidy, which
	// reports (and may revoke) the token and collects the record once its
	// expires_at has passed.
	issueStateAbandoned = "abandoned"
)

// Defaults of the orphan guard; the tests shorten them.
const (
	defaultRollbackMinAge      = 2 * time.Minute
	maxRollbackMinAge          = time.Hour
	defaultMaxRollbackAttempts = 10
	defaultRevokeBudget        = 10 * time.Second
	defaultRetryBase           = 30 * time.Second
	defaultRetryMax            = 10 * time.Minute
	defaultMaxRevokeQueue      = 100000
	defaultDrainBudget         = 45 * time.Second // Vault calls the periodic func about once a minute
	defaultDrainRate           = 20               // DELETE /tokens/{id} per second, well under Tooken's 100/s
	defaultUpstreamCallTimeout = 15 * time.Second
	maxLastErrorLen            = 300
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

// retryState is the backoff of work that the periodic func retries (the
// rollback of an issuance record, a queued revoke). Its fields sit inline in
// the stored JSON.
type retryState struct {
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
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

// orphanGuard is the in-memory side of the issue-6 bookkeeping, one per mount.
type orphanGuard struct {
	mu        sync.Mutex
	inFlight  map[string]struct{}  // issue keys of creds requests running on this node
	claimed   map[string]struct{}  // issue keys being rolled back now
	confirmed map[string]time.Time // issue keys known confirmed -> expires_at
	scanned   bool                 // one full read of issued/ done since start
	queueLen  int                  // revoke queue length, as last counted (+ enqueued since)
	queueNext map[string]time.Time // token id -> next attempt, for the queue entries this node wrote
	pauseTill time.Time            // honour Retry-After across drains

	periodicMu sync.Mutex // one periodic run at a time
	tidyMu     sync.Mutex // one tidy at a time
	statusMu   sync.Mutex
	status     tidyStatus
	lastDrain  drainReport
	lastRoll   rollbackReport

	limiter *rate.Limiter

	// mountUUID is the mount's backend UUID (BackendConfig), stable for the
	// mount's life: every token carries it as vault_mount_uuid metadata, and
	// tidy finds this mount's tokens by it. (The mount accessor would read
	// better, but Vault 1.14 sets req.MountAccessor only after the backend
	// call returns.)
	mountUUID string

	// Knobs (unexported: tests shorten them).
	maxRollbackAttempts int
	revokeBudget        time.Duration
	retryBase, retryMax time.Duration
	maxQueue            int
	drainBudget         time.Duration
	callTimeout         time.Duration
	now                 func() time.Time
}

func newOrphanGuard() *orphanGuard {
	return &orphanGuard{
		inFlight:            make(map[string]struct{}),
		claimed:             make(map[string]struct{}),
		confirmed:           make(map[string]time.Time),
		queueNext:           make(map[string]time.Time),
		limiter:             rate.NewLimiter(defaultDrainRate, defaultDrainRate),
		maxRollbackAttempts: defaultMaxRollbackAttempts,
		revokeBudget:        defaultRevokeBudget,
		retryBase:           defaultRetryBase,
		retryMax:            defaultRetryMax,
		maxQueue:            defaultMaxRevokeQueue,
		drainBudget:         defaultDrainBudget,
		callTimeout:         defaultUpstreamCallTimeout,
		now:                 time.Now,
	}
}

// begin marks a creds request's key in flight on this node: rollback leaves
// it alone until end.
func (g *orphanGuard) begin(key string) {
	g.mu.Lock()
	g.inFlight[key] = struct{}{}
	g.mu.Unlock()
}

func (g *orphanGuard) end(key string) {
	g.mu.Lock()
	delete(g.inFlight, key)
	g.mu.Unlock()
}

func (g *orphanGuard) isInFlight(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.inFlight[key]
	return ok
}

// claim reserves a key for rollback; false while a request (or another
// rollback) holds it.
func (g *orphanGuard) claim(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.inFlight[key]; ok {
		return false
	}
	if _, ok := g.claimed[key]; ok {
		return false
	}
	g.claimed[key] = struct{}{}
	return true
}

func (g *orphanGuard) release(key string) {
	g.mu.Lock()
	delete(g.claimed, key)
	g.mu.Unlock()
}

func (g *orphanGuard) markConfirmed(key string, expiresAt time.Time) {
	g.mu.Lock()
	g.confirmed[key] = expiresAt
	g.mu.Unlock()
}

func (g *orphanGuard) forget(key string) {
	g.mu.Lock()
	delete(g.confirmed, key)
	g.mu.Unlock()
}

func (g *orphanGuard) isConfirmed(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.confirmed[key]
	return ok
}

// retryDelay is the wait before attempt n+1 (n >= 1): exponential, capped.
func (g *orphanGuard) retryDelay(attempts int) time.Duration {
	d := g.retryBase
	for i := 1; i < attempts && d < g.retryMax; i++ {
		d *= 2
	}
	return min(d, g.retryMax)
}

// recordFailure counts a failed attempt of r at now, and sets when to try
// again.
func (g *orphanGuard) recordFailure(r *retryState, err error, now time.Time) {
	r.Attempts++
	r.LastError = truncateErr(err)
	r.NextAttempt = now.Add(g.retryDelay(r.Attempts))
}

// revokeGone revokes a token within timeout; nil when Tooken confirms it is
// dead (204, or 404: already gone).
func revokeGone(ctx context.Context, client *tookenapi.Client, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := client.RevokeToken(ctx, id); err != nil && !errors.Is(err, tookenapi.ErrNotFound) {
		return err
	}
	return nil
}

func truncateErr(err error) string {
	s := err.Error()
	if len(s) > maxLastErrorLen {
		s = s[:maxLastErrorLen] + "..."
	}
	return s
}

func newIssuanceRecord(key, role string, body tookenapi.CreateTokenRequest, now time.Time) *issuanceRecord {
	return &issuanceRecord{Key: key, State: issueStatePending, Role: role, Body: body, CreatedAt: now}
}

// dropIssuance deletes a record whose token is dead (or was never created).
// Best effort: a record left behind is finished by rollback or collected by
// tidy once expired.
func (b *tookenBackend) dropIssuance(ctx context.Context, s logical.Storage, key string) {
	if key == "" {
		return
	}
	b.guard.forget(key)
	if err := deleteIssuance(ctx, s, key); err != nil {
		b.Logger().Warn("could not delete an issuance record; rollback or tidy will", "issue_key", key, "error", err)
	}
}

// cleanupContext is a context for clean-up that must outlive the request.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
}

// rollbackReport counts what one rollback pass did.
type rollbackReport struct {
	Pending   int `json:"pending"`   // pending records seen
	Finished  int `json:"finished"`  // pending records finished (token revoked or never created)
	Failed    int `json:"failed"`    // attempts that failed (retried later)
	Abandoned int `json:"abandoned"` // records given up on (total abandoned seen)
	Collected int `json:"collected"` // expired records deleted
}

// rollbackPending finishes the pending records older than the min age that
// no request on this node holds. It reads every record once after start and
// then only the records it does not know as confirmed.
func (b *tookenBackend) rollbackPending(ctx context.Context, s logical.Storage) (rollbackReport, error) {
	var rep rollbackReport
	g := b.guard
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return rep, err
	}
	if cfg == nil {
		return rep, nil
	}
	keys, err := listIssuance(ctx, s)
	if err != nil {
		return rep, err
	}
	g.mu.Lock()
	full := !g.scanned
	g.mu.Unlock()

	p := &rollbackPass{now: g.now(), minAge: cfg.effectiveRollbackMinAge(), full: full}
	for _, key := range keys {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err := b.rollbackKey(ctx, s, p, key, &rep); err != nil {
			return rep, err
		}
	}
	if full {
		g.mu.Lock()
		g.scanned = true
		g.mu.Unlock()
	}
	rep.Collected += b.collectConfirmed(ctx, s, keys, p.now)
	return rep, nil
}

// rollbackPass is the state of one rollbackPending pass.
type rollbackPass struct {
	now    time.Time
	minAge time.Duration
	full   bool              // read every record, even those known confirmed
	client *tookenapi.Client // built when first needed
}

// rollbackKey handles one issuance record: it learns a confirmed one,
// collects an expired abandoned one, and finishes a pending one that is due.
// Only storage and client-building failures are returned.
func (b *tookenBackend) rollbackKey(ctx context.Context, s logical.Storage, p *rollbackPass, key string, rep *rollbackReport) error {
	g := b.guard
	if (!p.full && g.isConfirmed(key)) || g.isInFlight(key) {
		return nil
	}
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		return err
	}
	switch rec.State {
	case issueStateConfirmed:
		g.markConfirmed(key, rec.expiresAt())
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
	if p.now.Sub(rec.CreatedAt) < p.minAge || p.now.Before(rec.NextAttempt) {
		return nil
	}
	if p.client == nil {
		if p.client, err = b.getClient(ctx, s); err != nil {
			return err
		}
	}
	done, err := b.rollbackOne(ctx, s, p.client, key)
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
	g := b.guard
	var expired []string
	g.mu.Lock()
	for key, exp := range g.confirmed {
		if _, ok := present[key]; !ok {
			delete(g.confirmed, key)
			continue
		}
		if !exp.IsZero() && now.After(exp) {
			expired = append(expired, key)
		}
	}
	g.mu.Unlock()
	for _, key := range expired {
		b.dropIssuance(ctx, s, key)
	}
	return len(expired)
}

// rollbackOne finishes one pending record: replay the POST with its key and
// body, revoke the token it names, delete the record. It reports done when
// the record is gone; a failed attempt is recorded with its backoff, and the
// record is abandoned after maxRollbackAttempts. Only a storage failure is
// returned as an error.
func (b *tookenBackend) rollbackOne(ctx context.Context, s logical.Storage, client *tookenapi.Client, key string) (bool, error) {
	g := b.guard
	if !g.claim(key) {
		return false, nil
	}
	defer g.release(key)
	// Read again under the claim: the request may have confirmed it meanwhile.
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		return rec == nil && err == nil, err
	}
	if rec.State != issueStatePending {
		if rec.State == issueStateConfirmed {
			g.markConfirmed(key, rec.expiresAt())
		}
		return false, nil
	}
	now := g.now()
	if rec.expired(now) {
		// Whatever this key created is dead upstream already.
		b.dropIssuance(ctx, s, key)
		return true, nil
	}
	cctx, cancel := context.WithTimeout(ctx, g.callTimeout)
	tok, err := client.CreateToken(cctx, rec.Body, key)
	cancel()
	switch {
	case err == nil && tok.ID != "":
		if err = revokeGone(ctx, client, tok.ID, g.callTimeout); err == nil {
			b.Logger().Info("rollback revoked the token of an unfinished creds request", "role", rec.Role, "token_id", tok.ID, "issue_key", key)
			b.dropIssuance(ctx, s, key)
			return true, nil
		}
		rec.TokenID = tok.ID
	case err == nil:
		err = errors.New("replay answered without a token id")
	case definitivelyNothing(err):
		// The key never created a token (e.g. 403, or a 400 for an
		// expires_at now in the past: nothing can be alive).
		b.Logger().Info("rollback: the unfinished creds request created no token", "role", rec.Role, "issue_key", key, "error", err)
		b.dropIssuance(ctx, s, key)
		return true, nil
	}
	g.recordFailure(&rec.retryState, err, now)
	if rec.Attempts >= g.maxRollbackAttempts {
		rec.State = issueStateAbandoned
		b.Logger().Error("rollback gives up on an unfinished creds request: a token may live upstream until its expiry; tidy reports it",
			"role", rec.Role, "issue_key", key, "token_id", rec.TokenID, "expires_at", rec.expiresAt().Format(time.RFC3339), "attempts", rec.Attempts, "error", err)
	} else {
		b.Logger().Warn("rollback of an unfinished creds request failed; will retry", "role", rec.Role, "issue_key", key, "attempts", rec.Attempts, "error", err)
	}
	if perr := putIssuance(ctx, s, rec); perr != nil {
		return false, fmt.Errorf("recording a rollback attempt: %w", perr)
	}
	return false, nil
}

// definitivelyNothing tells whether a create error proves that the key
// created nothing: a definitive 4xx that is not "in flight", "reused",
// "rate limited" or "unauthorized" (a broken root may recover and then the
// replay tells).
func definitivelyNothing(err error) bool {
	if errors.Is(err, tookenapi.ErrOutcomeUnknown) || errors.Is(err, tookenapi.ErrConflict) || errors.Is(err, tookenapi.ErrRateLimited) ||
		errors.Is(err, tookenapi.ErrUnauthorized) || errors.Is(err, tookenapi.ErrIdempotencyKeyReused) {
		return false
	}
	var apiErr *tookenapi.APIError
	return errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500
}

// periodicOrphanWork is the issue-6 share of the periodic func: rollback of
// pending records, then the revoke queue. One run at a time.
func (b *tookenBackend) periodicOrphanWork(ctx context.Context, s logical.Storage) error {
	g := b.guard
	if !g.periodicMu.TryLock() {
		return nil
	}
	defer g.periodicMu.Unlock()
	rr, rerr := b.rollbackPending(ctx, s)
	g.statusMu.Lock()
	g.lastRoll = rr
	g.statusMu.Unlock()
	dr, derr := b.drainRevokeQueue(ctx, s)
	g.statusMu.Lock()
	g.lastDrain = dr
	g.statusMu.Unlock()
	if errors.Is(rerr, errNotConfigured) {
		rerr = nil
	}
	if errors.Is(derr, errNotConfigured) {
		derr = nil
	}
	return errors.Join(rerr, derr)
}

// effectiveRollbackMinAge is rollback_min_age with its default.
func (c *tookenConfig) effectiveRollbackMinAge() time.Duration {
	if c == nil || c.RollbackMinAge <= 0 {
		return defaultRollbackMinAge
	}
	return c.RollbackMinAge
}
