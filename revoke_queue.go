package tooken

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// The durable revoke queue: revoke-queue/<token_id>. A lease revoke that
// cannot reach Tooken within its budget queues the token id and answers
// success, so that Vault never marks the lease irrevocable for a token the
// plugin can still kill. The periodic func drains the queue at a rate Tooken
// allows (honouring Retry-After), with backoff per entry, until Tooken
// confirms (204 or 404), and drops the entries whose token has expired
// upstream meanwhile.

// revokeQueueEntry is stored at revokeQueuePrefix + TokenID. No secret.
type revokeQueueEntry struct {
	TokenID    string    `json:"token_id"`
	IssueKey   string    `json:"issue_key,omitempty"`
	Role       string    `json:"role,omitempty"`
	ExpiresAt  time.Time `json:"expires_at"` // the token's upstream expiry; zero = unknown
	QueuedAt   time.Time `json:"queued_at"`
	retryState           // revoke attempts: the first failed one is the lease revoke's
}

func (e *revokeQueueEntry) expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

var errRevokeQueueFull = errors.New("the revoke queue is full")

// revokeToken kills a lease's token: DELETE upstream within the revoke
// budget (404 = already gone), then delete its issuance record. When Tooken
// cannot be reached or refuses, the token goes to the revoke queue and the
// revoke succeeds. Only a failure to queue is an error (Vault retries).
func (b *tookenBackend) revokeToken(ctx context.Context, req *logical.Request, id string) error {
	g := b.guard
	issueKey := internalString(req, internalIssueKey)
	role := internalString(req, internalRole)

	client, err := b.getClient(ctx, req.Storage)
	if err != nil && !errors.Is(err, errNotConfigured) {
		return err
	}
	if err == nil {
		if err = revokeGone(ctx, client, id, g.revokeBudget); err == nil {
			b.Logger().Debug("revoked token", "token_id", id, "role", role)
			b.dropIssuance(ctx, req.Storage, issueKey)
			return nil
		}
	}

	var exp time.Time
	if t, terr := internalTime(req, internalExpiresAt); terr == nil {
		exp = t
	}
	now := g.now()
	if !exp.IsZero() && !now.Before(exp) {
		// The token has expired upstream: nothing left to kill.
		b.dropIssuance(ctx, req.Storage, issueKey)
		return nil
	}
	entry := &revokeQueueEntry{TokenID: id, IssueKey: issueKey, Role: role, ExpiresAt: exp, QueuedAt: now}
	g.recordFailure(&entry.retryState, err, now)
	if qerr := b.enqueueRevoke(ctx, req.Storage, entry); qerr != nil {
		return fmt.Errorf("revoke token %s: %v; queueing it for a later revoke failed: %w", id, err, qerr)
	}
	b.Logger().Warn("could not revoke a token now: queued for revocation; it may keep working until the queue drains or it expires",
		"token_id", id, "role", role, "expires_at", exp.Format(time.RFC3339), "error", err)
	return nil
}

func (b *tookenBackend) enqueueRevoke(ctx context.Context, s logical.Storage, e *revokeQueueEntry) error {
	g := b.guard
	g.mu.Lock()
	full := g.queueLen >= g.maxQueue
	g.mu.Unlock()
	if full {
		return fmt.Errorf("%w (%d entries)", errRevokeQueueFull, g.maxQueue)
	}
	if err := putQueueEntry(ctx, s, e); err != nil {
		return err
	}
	g.mu.Lock()
	g.queueLen++
	g.mu.Unlock()
	g.setNext(e.TokenID, e.NextAttempt)
	return nil
}

// setNext remembers when a queue entry is due next, so that an idle drain
// needs no storage read for it.
func (g *orphanGuard) setNext(id string, next time.Time) {
	g.mu.Lock()
	g.queueNext[id] = next
	g.mu.Unlock()
}

// notDue tells, without a storage read, that a queue entry this node wrote
// is not due yet.
func (g *orphanGuard) notDue(id string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	next, ok := g.queueNext[id]
	return ok && now.Before(next)
}

// drainReport counts what one drain did.
type drainReport struct {
	Queued      int  `json:"queued"`   // entries at the start
	Revoked     int  `json:"revoked"`  // confirmed dead by Tooken (204 or 404)
	Dropped     int  `json:"dropped"`  // expired upstream meanwhile
	Failed      int  `json:"failed"`   // attempts that failed (backoff)
	Deferred    int  `json:"deferred"` // not yet due
	RateLimited bool `json:"rate_limited"`
}

// drainRevokeQueue works through the due entries of the queue within the
// drain budget, at the limiter's rate, pausing on a 429 for its Retry-After.
// Storage failures are logged and retried at the next drain.
func (b *tookenBackend) drainRevokeQueue(ctx context.Context, s logical.Storage) (drainReport, error) {
	var rep drainReport
	g := b.guard
	ids, err := listQueue(ctx, s)
	if err != nil {
		return rep, err
	}
	pause := g.syncQueue(ids)
	rep.Queued = len(ids)
	if len(ids) == 0 {
		return rep, nil
	}
	client, err := b.getClient(ctx, s)
	if err != nil {
		return rep, err
	}
	if g.now().Before(pause) {
		rep.Deferred = len(ids)
		rep.RateLimited = true
		return rep, nil
	}
	dctx, cancel := context.WithTimeout(ctx, g.drainBudget)
	defer cancel()
	// Backoff is for outages. When Tooken answers again (GET /tokens/self,
	// one call a run), the first entry is tried whatever its backoff, and
	// while tries work the rest are too: the queue of a long outage drains at
	// the first periodic run after it, not when the entries' backoffs end. A
	// try that fails (Tooken answers, its DELETEs do not) puts the rest back
	// on their backoff.
	force := b.tookenAnswers(dctx, client)
	for i, id := range ids {
		called, ok, stop := b.drainOne(dctx, s, client, id, force, &rep)
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
	ctx, cancel := context.WithTimeout(ctx, b.guard.callTimeout)
	defer cancel()
	_, err := client.Self(ctx)
	return err == nil
}

// syncQueue takes the queue length from a fresh listing and forgets the
// next attempts of entries no longer listed. It returns the Retry-After
// pause in force.
func (g *orphanGuard) syncQueue(ids []string) (pause time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queueLen = len(ids)
	if len(g.queueNext) > len(ids) {
		listed := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			listed[id] = struct{}{}
		}
		for id := range g.queueNext {
			if _, ok := listed[id]; !ok {
				delete(g.queueNext, id)
			}
		}
	}
	return g.pauseTill
}

// drainOne works on one queue entry, and counts what it did in rep; with
// force it ignores the entry's backoff. It reports whether it called Tooken,
// whether that call killed the token, and stop when the drain must end here
// (budget spent, rate limited).
func (b *tookenBackend) drainOne(ctx context.Context, s logical.Storage, client *tookenapi.Client, id string, force bool, rep *drainReport) (called, ok, stop bool) {
	g := b.guard
	if !force && g.notDue(id, g.now()) {
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
	now := g.now()
	if e.expired(now) {
		if b.finishQueued(ctx, s, e) {
			rep.Dropped++
		}
		return false, false, false
	}
	if !force && now.Before(e.NextAttempt) {
		g.setNext(id, e.NextAttempt)
		rep.Deferred++
		return false, false, false
	}
	if err := g.limiter.Wait(ctx); err != nil {
		rep.Deferred++
		return false, false, true
	}
	if err := revokeGone(ctx, client, e.TokenID, g.callTimeout); err != nil {
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
// 429 pauses the whole queue for its Retry-After (at least a second), and
// retryQueued then reports true.
func (b *tookenBackend) retryQueued(ctx context.Context, s logical.Storage, e *revokeQueueEntry, err error, now time.Time) (rateLimited bool) {
	g := b.guard
	g.recordFailure(&e.retryState, err, now)
	var rl *tookenapi.RateLimitError
	if errors.As(err, &rl) {
		wait := max(rl.RetryAfter, time.Second)
		g.mu.Lock()
		g.pauseTill = now.Add(wait)
		g.mu.Unlock()
		e.NextAttempt = now.Add(wait)
		rateLimited = true
	}
	if perr := putQueueEntry(ctx, s, e); perr != nil {
		b.Logger().Warn("revoke queue: cannot record an attempt", "token_id", e.TokenID, "error", perr)
	} else {
		g.setNext(e.TokenID, e.NextAttempt)
	}
	return rateLimited
}

// finishQueued deletes a queue entry whose token is dead, and its issuance
// record. It reports whether the entry is gone.
func (b *tookenBackend) finishQueued(ctx context.Context, s logical.Storage, e *revokeQueueEntry) bool {
	if err := deleteQueueEntry(ctx, s, e.TokenID); err != nil {
		b.Logger().Warn("revoke queue: cannot delete a finished entry; the next drain will", "token_id", e.TokenID, "error", err)
		return false
	}
	g := b.guard
	g.mu.Lock()
	if g.queueLen > 0 {
		g.queueLen--
	}
	delete(g.queueNext, e.TokenID)
	g.mu.Unlock()
	b.dropIssuance(ctx, s, e.IssueKey)
	return true
}
