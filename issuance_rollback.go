package tooken

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// The periodic rollback of the issuance records (issuance.go).

// rollbackReport counts what one rollback pass did.
type rollbackReport struct {
	Pending   int `json:"pending"`   // pending records seen
	Finished  int `json:"finished"`  // pending records finished (token revoked or never created)
	Failed    int `json:"failed"`    // attempts that failed (retried later)
	Abandoned int `json:"abandoned"` // records given up on (total abandoned seen)
	Collected int `json:"collected"` // expired records deleted
	Swept     int `json:"swept"`     // pending records of confirmed reads deleted
	Elsewhere int `json:"elsewhere"` // pending records whose POST went to another destination than the config's: they wait
}

// rollbackIssuance is the periodic rollback. It deletes the pending records
// of the reads this node confirmed (the sweep), lists the pending records
// that are left, and finishes those older than the min age that no request
// holds. A key it knows is read again only when it is due (its min age,
// backoff or expiry), so a run with nothing pending or due reads no record;
// live records are never listed or read. What it did is kept for
// tidy/status.
func (b *tookenBackend) rollbackIssuance(ctx context.Context, s logical.Storage) (rep rollbackReport, err error) {
	r := b.issued
	defer func() { r.last.set(rep) }()
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil {
		return rep, err
	}
	if err := b.prepareIssuance(ctx, s); err != nil {
		return rep, err
	}
	rep.Swept = b.sweepConfirmed(ctx, s)
	now := b.now()
	due, err := b.learnPending(ctx, s, now)
	if err != nil {
		return rep, err
	}
	rep.Pending, rep.Abandoned = r.pendingCounts()
	p := &rollbackPass{now: now, minAge: cfg.effectiveRollbackMinAge(), deadline: time.Now().Add(r.passBudget)}
	for key, rec := range due {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err := b.rollbackKey(ctx, s, p, key, rec, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// pendingCounts is how many pending keys this node knows of (not
// confirmed), and how many of them are abandoned.
func (r *issuanceRecords) pendingCounts() (pending, abandoned int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending {
		if p.abandoned {
			abandoned++
		} else {
			pending++
		}
	}
	return pending, abandoned
}

// sweepConfirmed deletes the pending records of the reads this node
// confirmed (their live record holds what is left to know), and returns how
// many. A failed delete is tried again at the next run.
func (b *tookenBackend) sweepConfirmed(ctx context.Context, s logical.Storage) int {
	r := b.issued
	r.mu.Lock()
	keys := r.toSweep
	r.toSweep = nil
	r.mu.Unlock()
	failed := deleteAll(ctx, s, keys)
	if len(failed) > 0 {
		r.mu.Lock()
		r.toSweep = append(r.toSweep, failed...)
		r.mu.Unlock()
	}
	if len(keys) >= bigSweep {
		// The Go runtime would keep the memory of the keys for minutes.
		debug.FreeOSMemory()
	}
	return len(keys) - len(failed)
}

// sweepWorkers deletes run at once in a sweep: through an external
// plugin's storage each delete is a round trip to Vault, and one after the
// other they cost about four times the CPU (and the time) they cost when a
// few share the connection.
const sweepWorkers = 16

// bigSweep is the sweep size after which the memory of its keys is given
// back to the system at once.
const bigSweep = 10000

// deleteAll deletes the pending records of keys, sweepWorkers at a time,
// and returns the keys it could not delete.
func deleteAll(ctx context.Context, s logical.Storage, keys []string) (failed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan string)
	for range min(sweepWorkers, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range next {
				err := ctx.Err()
				if err == nil {
					err = deleteIssuance(ctx, s, key)
				}
				if err != nil {
					mu.Lock()
					failed = append(failed, key)
					mu.Unlock()
				}
			}
		}()
	}
	for _, key := range keys {
		next <- key
	}
	close(next)
	wg.Wait()
	return failed
}

// sweepNow is the sweep that confirmIssuance starts past maxUnswept keys; it
// stops with the backend.
func (b *tookenBackend) sweepNow(s logical.Storage) {
	r := b.issued
	n := b.sweepConfirmed(b.stop, s)
	r.mu.Lock()
	r.sweeping = false
	r.mu.Unlock()
	b.Logger().Info("swept the pending records of confirmed creds reads before the periodic run: they passed the in-memory bound", "records", n, "bound", r.maxUnswept)
}

// rollbackPass is the state of one rollback pass.
type rollbackPass struct {
	now    time.Time
	minAge time.Duration
	client *tookenapi.Client // built when first needed
	at     secretDestination // client's destination
	// deadline: no record's upstream work starts after it (each call has
	// its own timeout); the records left wait for the next pass.
	deadline time.Time
}

// rollbackKey handles one pending record that is due: it collects an
// expired abandoned one, notes when a young one or one in backoff is due,
// and finishes the others. rec is the record when just read, else nil. Only
// storage and client-building failures are returned.
func (b *tookenBackend) rollbackKey(ctx context.Context, s logical.Storage, p *rollbackPass, key string, rec *issuanceRecord, rep *rollbackReport) error {
	r := b.issued
	if rec == nil {
		var err error
		if rec, err = getIssuance(ctx, s, key); err != nil {
			return err
		}
		if rec == nil {
			return nil // gone: the next listing forgets it
		}
		r.learnRole(key, rec.Role)
	}
	if rec.State == issueStateAbandoned {
		if rec.expired(p.now) {
			b.collectPending(ctx, s, rec, rep)
			return nil
		}
		r.setDue(key, rec.expiresAt(), true)
		return nil
	}
	if due := rec.CreatedAt.Add(p.minAge); p.now.Before(due) || p.now.Before(rec.NextAttempt) {
		r.setDue(key, later(due, rec.NextAttempt), false)
		return nil
	}
	if time.Now().After(p.deadline) {
		return nil // the next pass
	}
	if p.client == nil {
		var err error
		if p.client, p.at, err = b.getClientAt(ctx, s); err != nil {
			return err
		}
	}
	res, err := b.rollbackRecord(ctx, s, p.client, p.at, key)
	switch {
	case err != nil:
		return err
	case res == rollbackDone:
		rep.Finished++
	case res == rollbackElsewhere:
		rep.Elsewhere++
	default:
		rep.Failed++
	}
	return nil
}

// elsewhereRecheck is how long a pending record whose create went to
// another destination than the config's waits before the rollback reads it
// again (the config may point there again).
const elsewhereRecheck = 5 * time.Minute

// rollbackResult is what rollbackRecord did with a record.
type rollbackResult int

const (
	rollbackNotDone   rollbackResult = iota // failed, or another worker has it
	rollbackDone                            // the record is gone
	rollbackElsewhere                       // its POST went to another destination: it waits
)

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// learnRole fills in the role of a pending key first held without it (a
// request that began before its record was read), and takes its slot.
func (r *issuanceRecords) learnRole(key, role string) {
	done := r.changing(role)
	defer done()
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[key]; p != nil && p.role == "" {
		p.role = role
		r.adjustLocked(role, +1)
	}
}

// collectPending deletes an abandoned record whose token has expired.
func (b *tookenBackend) collectPending(ctx context.Context, s logical.Storage, rec *issuanceRecord, rep *rollbackReport) {
	r := b.issued
	if !r.claim(rec.Key) {
		return
	}
	defer r.release(rec.Key)
	b.dropPending(ctx, s, rec.Role, rec.Key)
	rep.Collected++
}

// rollbackRecord finishes one pending record with undoCreate (through
// client, whose destination is at) and deletes it. A failed attempt is
// recorded with its backoff, and the record is abandoned after maxAttempts.
// A record whose POST went to another destination waits, unattempted: a
// replay here would create a token at this Tooken, and tell nothing of the
// one there. Only a storage failure is returned as an error.
func (b *tookenBackend) rollbackRecord(ctx context.Context, s logical.Storage, client *tookenapi.Client, at secretDestination, key string) (rollbackResult, error) {
	r := b.issued
	if !r.claim(key) {
		return rollbackNotDone, nil
	}
	defer r.release(key)
	// Read again under the claim, and make sure no lease holds the token:
	// the request may have confirmed it meanwhile.
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		if rec == nil && err == nil {
			return rollbackDone, nil
		}
		return rollbackNotDone, err
	}
	if rec.State != issueStatePending {
		return rollbackNotDone, nil
	}
	if live, err := getLive(ctx, s, rec.Role, key); err != nil || live != nil {
		if live != nil {
			r.markConfirmed(key)
		}
		return rollbackNotDone, err
	}
	now := b.now()
	switch {
	case rec.expired(now):
		// Whatever this key created is dead upstream already.
		b.dropPending(ctx, s, rec.Role, key)
		return rollbackDone, nil
	case issuedElsewhere(rec.Dest, at):
		r.setDue(key, minTime(now.Add(elsewhereRecheck), rec.expiresAt()), false)
		return rollbackElsewhere, nil
	}
	tokenID, err := undoCreate(ctx, client, rec.Body, key, r.callTimeout)
	if err == nil {
		b.Logger().Info("rollback finished an unfinished creds request: its token is revoked, or was never created", "role", rec.Role, "token_id", tokenID, "issue_key", key)
		b.dropPending(ctx, s, rec.Role, key)
		return rollbackDone, nil
	}
	if tokenID != "" {
		rec.TokenID = tokenID
	}
	return rollbackNotDone, b.recordRollbackFailure(ctx, s, rec, err, now)
}

// markConfirmed notes that key's live record exists: the sweep deletes its
// pending record, and the slot stays with the live one.
func (r *issuanceRecords) markConfirmed(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[key]; p != nil {
		r.adjustLocked(p.role, -1)
		delete(r.pending, key)
		r.toSweep = append(r.toSweep, key)
	}
}

// recordRollbackFailure stores a failed rollback attempt with its backoff,
// and abandons the record after maxAttempts.
func (b *tookenBackend) recordRollbackFailure(ctx context.Context, s logical.Storage, rec *issuanceRecord, err error, now time.Time) error {
	r := b.issued
	r.retry.recordFailure(&rec.retryState, err, now)
	abandon := rec.Attempts >= r.maxAttempts
	if abandon {
		rec.State = issueStateAbandoned
		b.Logger().Error("rollback gives up on an unfinished creds request: a token may live upstream until its expiry; tidy reports it",
			"role", rec.Role, "issue_key", rec.Key, "token_id", rec.TokenID, "expires_at", rec.expiresAt().Format(time.RFC3339), "attempts", rec.Attempts, "error", err)
	} else {
		b.Logger().Warn("rollback of an unfinished creds request failed; will retry", "role", rec.Role, "issue_key", rec.Key, "attempts", rec.Attempts, "error", err)
	}
	if perr := putIssuance(ctx, s, rec); perr != nil {
		return fmt.Errorf("recording a rollback attempt: %w", perr)
	}
	if abandon {
		r.setDue(rec.Key, rec.expiresAt(), true)
	} else {
		r.setDue(rec.Key, rec.NextAttempt, false)
	}
	return nil
}
