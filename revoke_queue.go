package tooken

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// The durable revoke queue: revoke-queue/<token_id>. A lease revoke that
// cannot reach Tooken within its budget queues the token id and answers
// success, so that Vault never marks the lease irrevocable for a token the
// plugin can still kill. The periodic func drains the queue at a rate Tooken
// allows (honouring Retry-After), with backoff per entry, until Tooken
// confirms (204 or 404), and drops the entries whose token has expired
// upstream meanwhile.

// Defaults of the revoke queue; the tests shorten them.
const (
	defaultRevokeBudget   = 10 * time.Second
	defaultMaxRevokeQueue = 100000
	// defaultDrainBudget: Vault calls the periodic func about once a
	// minute; with the rollback's budget the run stays under that.
	defaultDrainBudget = 40 * time.Second
	// DELETE /tokens/{id} per second of the drain, and of lease revokes
	// while Tooken's bucket runs low (revokePaced): Tooken's documented
	// limit per caller token (100/s), so that a storm of revokes drains at
	// Tooken's pace. The burst is small: the limiter takes over when
	// Tooken's own burst is spent. Other calls of the mount (creds reads)
	// that find Tooken's bucket empty meanwhile wait out its Retry-After.
	defaultRevokeRate  = 100
	defaultRevokeBurst = 10
	// maxQueuePause caps how long a Retry-After (429, 503) holds the queue:
	// at most half of Vault's rollback interval, so that a drain is never
	// held past the first periodic run after Tooken answers again ("about a
	// minute, however long the outage was"), whatever Tooken asked for. The
	// drain stops at such an answer, and each later run makes one call
	// (GET /tokens/self) before it tries again: Tooken is not flooded.
	maxQueuePause = vaultRollbackInterval / 2
)

// revokeQueueEntry is stored at revokeQueuePrefix + TokenID. No secret.
type revokeQueueEntry struct {
	TokenID   string    `json:"token_id"`
	IssueKey  string    `json:"issue_key,omitempty"`
	Role      string    `json:"role,omitempty"`
	Record    string    `json:"record,omitempty"` // storage key of the issuance record; absent in entries of the previous version
	ExpiresAt time.Time `json:"expires_at"`       // the token's upstream expiry; zero = unknown
	QueuedAt  time.Time `json:"queued_at"`
	// Dest is the Tooken that issued the token, the only one whose answer
	// tells of it; absent in entries of leases that do not record it (the
	// config's destination then).
	Dest       *secretDestination `json:"destination,omitempty"`
	retryState                    // revoke attempts: the first failed one is the lease revoke's
}

func (e *revokeQueueEntry) expired(now time.Time) bool { return expiredAt(e.ExpiresAt, now) }

var errRevokeQueueFull = errors.New("the revoke queue is full")

// revokeQueue is this node's side of the revoke queue: its length and the
// next attempt of the entries it wrote (so that an idle drain reads no
// entry), the Retry-After pause, the rate limiter of lease revokes and
// drains, and settings.
type revokeQueue struct {
	mu        sync.Mutex
	length    int                    // as last listed, plus enqueued since
	next      map[string]time.Time   // token id -> next attempt, for the entries this node wrote
	elsewhere map[string]absenceMark // token id -> where a token issued elsewhere was found unknown
	pauseTill time.Time              // honour Retry-After across drains
	last      lastRun[drainReport]   // the last drain
	revoking  atomic.Int64           // lease revokes on their way to Tooken (revokePaced)
	lowUntil  atomic.Int64           // Unix ns until which lease revokes take turns (paced)

	// Settings (tests shorten them).
	limiter      *rate.Limiter
	revokeBudget time.Duration // of a lease revoke, before it queues the token
	retry        retryPolicy   // backoff of an entry between attempts
	maxLen       int
	drainBudget  time.Duration
	callTimeout  time.Duration // of each DELETE of a drain
}

func newRevokeQueue() *revokeQueue {
	return &revokeQueue{
		next:         make(map[string]time.Time),
		elsewhere:    make(map[string]absenceMark),
		limiter:      rate.NewLimiter(defaultRevokeRate, defaultRevokeBurst),
		revokeBudget: defaultRevokeBudget,
		retry:        retryPolicy{base: defaultRetryBase, max: defaultRetryMax},
		maxLen:       defaultMaxRevokeQueue,
		drainBudget:  defaultDrainBudget,
		callTimeout:  defaultUpstreamCallTimeout,
	}
}

// paceHold is how long lease revokes keep taking turns after an answer
// showed Tooken's bucket low: answers of concurrent calls arrive in any
// order, and one with room left must not let a herd through.
const paceHold = 2 * time.Second

// paced tells whether a lease revoke must take its turn at the limiter now:
// what Tooken's latest answer left in the caller's bucket, less the revokes
// already on their way, is under a quarter of the bucket, now or within the
// last paceHold.
func (q *revokeQueue) paced(client *tookenapi.Client, now time.Time) bool {
	if limit, remaining, ok := client.RateLimit(); ok && remaining-q.revoking.Load() < limit/4 {
		q.lowUntil.Store(now.Add(paceHold).UnixNano())
		return true
	}
	return now.UnixNano() < q.lowUntil.Load()
}

// setNext remembers when a queue entry is due next.
func (q *revokeQueue) setNext(id string, next time.Time) {
	q.mu.Lock()
	q.next[id] = next
	q.mu.Unlock()
}

// notDue tells, without a storage read, that a queue entry this node wrote
// is not due yet.
func (q *revokeQueue) notDue(id string, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	next, ok := q.next[id]
	return ok && now.Before(next)
}

// sync takes the queue length from a fresh listing and forgets the next
// attempts (and destinations) of entries no longer listed. It returns the
// Retry-After pause in force.
func (q *revokeQueue) sync(ids []string) (pause time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.length = len(ids)
	if len(q.next) > len(ids) || len(q.elsewhere) > 0 {
		listed := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			listed[id] = struct{}{}
		}
		for id := range q.next {
			if _, ok := listed[id]; !ok {
				delete(q.next, id)
			}
		}
		for id := range q.elsewhere {
			if _, ok := listed[id]; !ok {
				delete(q.elsewhere, id)
			}
		}
	}
	return q.pauseTill
}

// absenceMark records that the Tooken at a destination answered 404 to the
// revoke of a queued token issued at another one: the token waits for the
// config to point to the Tooken that issued it, or for its expiry (until;
// zero: unknown). Another DELETE at the same destination would only get the
// same answer.
type absenceMark struct {
	at    secretDestination
	until time.Time
}

// markAbsent notes that the Tooken at at does not know the queued token id,
// issued elsewhere, which expires at until (zero: unknown).
func (q *revokeQueue) markAbsent(id string, at secretDestination, until time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.elsewhere[id] = absenceMark{at: at, until: until}
}

// absentAt tells whether the Tooken at at was found not to know the queued
// token id, which has not expired since.
func (q *revokeQueue) absentAt(id string, at secretDestination, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	m, ok := q.elsewhere[id]
	return ok && m.at.sameAs(at) && (m.until.IsZero() || now.Before(m.until))
}

// waitingElsewhere is how many queued tokens, issued at another destination,
// this node found unknown to the Tooken the config points to (since its
// first drain, which reads every entry).
func (q *revokeQueue) waitingElsewhere() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.elsewhere)
}

// pause holds every drain until the given time (a Retry-After).
func (q *revokeQueue) pause(until time.Time) {
	q.mu.Lock()
	q.pauseTill = until
	q.mu.Unlock()
}

// removed notes that the entry of id is deleted.
func (q *revokeQueue) removed(id string) {
	q.mu.Lock()
	if q.length > 0 {
		q.length--
	}
	delete(q.next, id)
	delete(q.elsewhere, id)
	q.mu.Unlock()
}

// lastReport is what the last drain did.
func (q *revokeQueue) lastReport() drainReport { return q.last.get() }

// queueRevoke queues the revoke of token id, which cause kept from being
// revoked now, with its issuance record ref, expiry and the destination it
// was created at (nil: not recorded).
func (b *tookenBackend) queueRevoke(ctx context.Context, s logical.Storage, id string, ref issuanceRef, exp time.Time, dest *secretDestination, cause error) error {
	now := b.now()
	entry := &revokeQueueEntry{TokenID: id, IssueKey: ref.key, Role: ref.role, Record: ref.recordKey(), ExpiresAt: exp, QueuedAt: now, Dest: dest}
	b.queue.retry.recordFailure(&entry.retryState, cause, now)
	return b.enqueueRevoke(ctx, s, entry)
}

// enqueueRevoke stores a queue entry, unless the queue is full.
func (b *tookenBackend) enqueueRevoke(ctx context.Context, s logical.Storage, e *revokeQueueEntry) error {
	q := b.queue
	q.mu.Lock()
	full := q.length >= q.maxLen
	q.mu.Unlock()
	if full {
		return fmt.Errorf("%w (%d entries)", errRevokeQueueFull, q.maxLen)
	}
	if err := putQueueEntry(ctx, s, e); err != nil {
		return err
	}
	q.mu.Lock()
	q.length++
	q.next[e.TokenID] = e.NextAttempt
	q.mu.Unlock()
	return nil
}

// drainReport counts what one drain did.
type drainReport struct {
	Queued      int  `json:"queued"`   // entries at the start
	Revoked     int  `json:"revoked"`  // confirmed dead by Tooken (204 or 404)
	Dropped     int  `json:"dropped"`  // expired upstream meanwhile
	Failed      int  `json:"failed"`   // attempts that failed (backoff)
	Deferred    int  `json:"deferred"` // not yet due
	RateLimited bool `json:"rate_limited"`
	// Elsewhere counts the entries whose token was issued at another
	// destination than the config's and that the config's Tooken does not
	// know (404): they wait for the config to point to the Tooken that
	// issued them, or for their expiry.
	Elsewhere int `json:"elsewhere"`
}

// drainRevokeQueue is the periodic drain: it works through the due entries
// of the queue within the drain budget, at the limiter's rate, pausing on a
// 429 for its Retry-After. Storage failures are logged and retried at the
// next drain. What it did is kept for tidy/status.
func (b *tookenBackend) drainRevokeQueue(ctx context.Context, s logical.Storage) (rep drainReport, err error) {
	q := b.queue
	defer func() {
		rep.Elsewhere = q.waitingElsewhere()
		q.last.set(rep)
	}()
	ids, err := listQueue(ctx, s)
	if err != nil {
		return rep, err
	}
	pause := q.sync(ids)
	rep.Queued = len(ids)
	if len(ids) == 0 {
		return rep, nil
	}
	client, at, err := b.getClientAt(ctx, s)
	if err != nil {
		return rep, err
	}
	if b.now().Before(pause) {
		rep.Deferred = len(ids)
		rep.RateLimited = true
		return rep, nil
	}
	dctx, cancel := context.WithTimeout(ctx, q.drainBudget)
	defer cancel()
	// Backoff is for outages. When Tooken answers again (GET /tokens/self,
	// one call a run), the first entry is tried whatever its backoff, and
	// while tries work the rest are too: the queue of a long outage drains at
	// the first periodic run after it, not when the entries' backoffs end. A
	// try that fails (Tooken answers, its DELETEs do not) puts the rest back
	// on their backoff.
	force := b.tookenAnswers(dctx, client)
	for i, id := range ids {
		called, ok, stop := b.drainOne(dctx, s, queueClient{client, at}, id, force, &rep)
		if called {
			force = ok
		}
		if stop {
			rep.Deferred += len(ids) - i - 1 // the rest waits for the next drain
			break
		}
	}
	return rep, nil
}

// tookenAnswers tells whether Tooken answers the root token now.
func (b *tookenBackend) tookenAnswers(ctx context.Context, client *tookenapi.Client) bool {
	ctx, cancel := context.WithTimeout(ctx, b.queue.callTimeout)
	defer cancel()
	_, err := client.Self(ctx)
	return err == nil
}

// queueClient is the client a drain revokes with, and its destination.
type queueClient struct {
	*tookenapi.Client
	at secretDestination
}

// drainOne works on one queue entry, and counts what it did in rep; with
// force it ignores the entry's backoff. An entry whose token was issued at
// another destination than the client's is revoked through the client all
// the same, but counts done only on its 204 (revokeIssuedAt); once that
// Tooken answered 404 it waits, without another DELETE there. It reports
// whether it called Tooken, whether that call worked, and stop when the
// drain must end here (budget spent, rate limited).
func (b *tookenBackend) drainOne(ctx context.Context, s logical.Storage, client queueClient, id string, force bool, rep *drainReport) (called, ok, stop bool) {
	q := b.queue
	// Neither check reads storage: an idle drain reads no entry, and one
	// while Tooken answers (force) skips the entries that wait for the
	// Tooken that issued them, however many.
	if q.absentAt(id, client.at, b.now()) || (!force && q.notDue(id, b.now())) {
		rep.Deferred++
		return false, false, false
	}
	e, err := getQueueEntry(ctx, s, id)
	if err != nil {
		if ctx.Err() != nil {
			rep.Deferred++
			return false, false, true
		}
		b.Logger().Warn("revoke queue: cannot read an entry", "token_id", id, "error", err)
		rep.Failed++
		return false, false, false
	}
	if e == nil {
		return false, false, false
	}
	now := b.now()
	if e.expired(now) {
		if b.finishQueued(ctx, s, e) {
			rep.Dropped++
		}
		return false, false, false
	}
	if !force && now.Before(e.NextAttempt) {
		q.setNext(id, e.NextAttempt)
		rep.Deferred++
		return false, false, false
	}
	if err := q.limiter.Wait(ctx); err != nil {
		rep.Deferred++
		return false, false, true
	}
	err = revokeIssuedAt(ctx, client.Client, e.TokenID, q.callTimeout, !issuedElsewhere(e.Dest, client.at))
	if errors.Is(err, errNotIssuedHere) {
		q.markAbsent(id, client.at, e.ExpiresAt)
		rep.Deferred++
		return true, true, false
	}
	if err != nil {
		rep.Failed++
		if b.retryQueued(ctx, s, e, err, now) {
			rep.RateLimited = true
			return true, false, true
		}
		return true, false, ctx.Err() != nil
	}
	if b.finishQueued(ctx, s, e) {
		rep.Revoked++
		b.Logger().Info("revoke queue: token revoked", "token_id", e.TokenID, "role", e.Role, "attempts", e.Attempts+1)
	}
	return true, true, false
}

// retryQueued records a failed revoke of a queue entry with its backoff; a
// 429, or a 503 with Retry-After, pauses the whole queue for its Retry-After
// (at least a second, at most maxQueuePause), and retryQueued then reports
// true.
func (b *tookenBackend) retryQueued(ctx context.Context, s logical.Storage, e *revokeQueueEntry, err error, now time.Time) (rateLimited bool) {
	q := b.queue
	q.retry.recordFailure(&e.retryState, err, now)
	ask, asked := tookenapi.RetryAfter(err)
	if asked || errors.Is(err, tookenapi.ErrRateLimited) {
		wait := min(max(ask, time.Second), maxQueuePause)
		q.pause(now.Add(wait))
		e.NextAttempt = now.Add(wait)
		rateLimited = true
	}
	if perr := putQueueEntry(ctx, s, e); perr != nil {
		b.Logger().Warn("revoke queue: cannot record an attempt", "token_id", e.TokenID, "error", perr)
	} else {
		q.setNext(e.TokenID, e.NextAttempt)
	}
	return rateLimited
}

// finishQueued deletes a queue entry whose token is dead, and its issuance
// record. It reports whether the entry is gone.
// The record goes first: an entry whose record could not be deleted stays,
// and the next drain finishes it (its token's revoke answers 404 then).
func (b *tookenBackend) finishQueued(ctx context.Context, s logical.Storage, e *revokeQueueEntry) bool {
	if err := b.dropRecord(ctx, s, refFor(e.Role, e.IssueKey, e.Record), e.expired(b.now())); err != nil {
		return false
	}
	if err := deleteQueueEntry(ctx, s, e.TokenID); err != nil {
		b.Logger().Warn("revoke queue: cannot delete a finished entry; the next drain will", "token_id", e.TokenID, "error", err)
		return false
	}
	b.queue.removed(e.TokenID)
	return true
}
