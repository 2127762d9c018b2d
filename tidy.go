package tooken

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Tidy: find the upstream tokens of this mount that nothing accounts for.
//
// It pages through the mount's tokens upstream (100 a page) and decides on
// each one against storage as it is when it decides: no snapshot of the
// records is taken before listing (a creds read finishing in between would
// look like an orphan). Then it walks the records role by role to collect
// those whose token has expired. Memory: one page of tokens, and the keys of
// one role's live records.

const (
	defaultTidySafetyAge = time.Hour
	tidyPageSize         = 100
	tidyMaxPages         = 10000 // a million tokens
	maxReportedOrphans   = 100
)

// tidyState is this node's tidy: one run at a time, and the last run's
// status (in memory, for tidy/status).
type tidyState struct {
	running sync.Mutex // held by the run in progress
	last    lastRun[tidyStatus]

	callTimeout time.Duration // of each revoke of an orphan
}

func newTidyState() *tidyState {
	return &tidyState{callTimeout: defaultUpstreamCallTimeout}
}

// lastRun is what the last run of tidy, the rollback or the queue drain
// did, kept in memory for tidy/status.
type lastRun[T any] struct {
	mu sync.Mutex
	v  T
}

func (l *lastRun[T]) set(v T) {
	l.mu.Lock()
	l.v = v
	l.mu.Unlock()
}

func (l *lastRun[T]) get() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v
}

// tidyStatus is the last tidy run, kept in memory (tidy/status).
type tidyStatus struct {
	LastRunAt        time.Time `json:"last_run_at"` // whole seconds, as every time read back
	Duration         int64     `json:"duration"`    // seconds, as every duration read back
	SafetyAge        int64     `json:"safety_age"`  // seconds
	RevokeOrphans    bool      `json:"revoke_orphans"`
	UpstreamScanned  int       `json:"upstream_scanned"`  // tokens of this mount seen upstream
	Accounted        int       `json:"accounted"`         // with an issuance record or queued
	TooYoung         int       `json:"too_young"`         // unaccounted but younger than safety_age
	OrphansFound     int       `json:"orphans_found"`     // unaccounted and older than safety_age
	OrphansRevoked   int       `json:"orphans_revoked"`   // of those, revoked now
	Orphans          []string  `json:"orphans"`           // their ids (at most 100)
	RecordsCollected int       `json:"records_collected"` // expired issuance records deleted
	Error            string    `json:"error,omitempty"`
}

// tidyRun is one tidy pass: its options and the status it fills in.
type tidyRun struct {
	client *tookenapi.Client
	at     secretDestination // client's destination
	// queued: the revoke queue held entries when the run started, so a
	// token that its live record accounts for may be queued (its lease
	// revoked): its queue entry is read too.
	queued bool
	s      logical.Storage
	safety time.Duration
	revoke bool
	start  time.Time
	st     *tidyStatus
}

// runTidy lists this mount's tokens upstream (metadata vault_mount_uuid)
// and reports those that no issuance record, running creds read or revoke
// queue entry accounts for and that are older than safety; it revokes them
// when asked. Then it deletes the issuance records whose token has expired.
func (b *tookenBackend) runTidy(ctx context.Context, s logical.Storage, mountUUID string, safety time.Duration, revoke bool) (*tidyStatus, error) {
	start := b.now()
	st := &tidyStatus{LastRunAt: start.UTC().Truncate(time.Second), SafetyAge: int64(safety / time.Second), RevokeOrphans: revoke, Orphans: []string{}}
	defer func() { st.Duration = int64(b.now().Sub(start).Round(time.Second) / time.Second) }()

	client, at, err := b.getClientAt(ctx, s)
	if err != nil {
		return st, err
	}
	// The previous version's records must be in the current layout first:
	// tidy looks for a token's records at the current keys only.
	if err := b.prepareIssuance(ctx, s); err != nil {
		return st, err
	}
	queued, err := listQueue(ctx, s)
	if err != nil {
		return st, err
	}
	run := &tidyRun{client: client, at: at, queued: len(queued) > 0, s: s, safety: safety, revoke: revoke, start: start, st: st}
	cursor := ""
	for page := 0; page < tidyMaxPages; page++ {
		list, err := client.ListTokens(ctx, tookenapi.ListOptions{Limit: tidyPageSize, Cursor: cursor})
		if err != nil {
			return st, upstreamError("tidy: listing tokens", err)
		}
		for i := range list.Data {
			if list.Data[i].Metadata[metaMountUUID] != mountUUID {
				continue
			}
			if err := b.tidyToken(ctx, run, &list.Data[i]); err != nil {
				return st, err
			}
		}
		if list.NextCursor == nil || *list.NextCursor == "" {
			break
		}
		cursor = *list.NextCursor
	}
	if err := b.collectExpired(ctx, run); err != nil {
		return st, err
	}
	if revoke {
		b.retryAbandoned(ctx, s)
	}
	b.Logger().Info("tidy done", "upstream_scanned", st.UpstreamScanned, "orphans_found", st.OrphansFound, "orphans_revoked", st.OrphansRevoked, "records_collected", st.RecordsCollected)
	return st, nil
}

// tidyToken classifies one upstream token of this mount: accounted for, too
// young, or an orphan (reported, and revoked when asked). Only storage
// failures are returned.
func (b *tookenBackend) tidyToken(ctx context.Context, run *tidyRun, tok *tookenapi.Token) error {
	st := run.st
	st.UpstreamScanned++
	acc, err := b.accountFor(ctx, run, tok)
	if err != nil {
		return err
	}
	if acc.accounted {
		st.Accounted++
		return nil
	}
	if run.start.Sub(tok.CreatedAt) < run.safety {
		st.TooYoung++
		return nil
	}
	revoked := false
	if run.revoke {
		gone, err := b.revokeOrphan(ctx, run, tok)
		if gone || err == nil { // dead now at the Tooken that lists it
			b.settleOrphan(ctx, run, acc)
		}
		if gone { // a lease revoke (or the queue) killed it since the listing
			st.Accounted++
			return nil
		}
		revoked = err == nil
	}
	st.OrphansFound++
	if len(st.Orphans) < maxReportedOrphans {
		st.Orphans = append(st.Orphans, tok.ID)
	}
	b.Logger().Warn("tidy: upstream token of this mount that no lease accounts for", "token_id", tok.ID, "role", tok.Metadata[metaRole], "issue_key", tok.Metadata[metaIssueKey], "revoked", revoked)
	if revoked {
		st.OrphansRevoked++
	}
	return nil
}

// settleOrphan deletes what waited for an orphan's token, once the Tooken
// that lists it has revoked it (or no longer knows it): its stale pending
// record and its queue entry.
func (b *tookenBackend) settleOrphan(ctx context.Context, run *tidyRun, acc tidyAccount) {
	if rec := acc.stale; rec != nil && b.issued.claim(rec.Key) {
		b.dropPending(ctx, run.s, rec.Role, rec.Key)
		b.issued.release(rec.Key)
	}
	if acc.queued != nil {
		b.finishQueued(ctx, run.s, acc.queued)
	}
}

// revokeOrphan revokes a token tidy found unaccounted for. gone says that
// Tooken no longer knew it (404): it died since it was listed, a lease
// revoke most likely, and was no orphan. A failure is logged and returned.
func (b *tookenBackend) revokeOrphan(ctx context.Context, run *tidyRun, tok *tookenapi.Token) (gone bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, b.tidy.callTimeout)
	defer cancel()
	err = run.client.RevokeToken(cctx, tok.ID)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, tookenapi.ErrNotFound):
		return true, nil
	}
	b.Logger().Warn("tidy: could not revoke an orphan", "token_id", tok.ID, "error", err)
	return false, err
}

// tidyAccount is what accountFor found for an upstream token.
type tidyAccount struct {
	accounted bool
	// stale is the token's pending record when it is no account: the
	// rollback gave up on it (abandoned), or its create went to another
	// destination than the config's, the only one where the rollback
	// finishes it, while the listing shows the token living at the
	// config's Tooken.
	stale *issuanceRecord
	// queued is the token's revoke queue entry when it is no account: its
	// token recorded as issued at another destination, while the listing
	// shows it living at the config's Tooken. Its lease is revoked.
	queued *revokeQueueEntry
}

// accountFor tells whether something accounts for an upstream token of this
// mount, reading storage now: a creds read of this node holding its key, its
// pending record, its live record, or a queue entry of its id. The order
// cannot miss a token whose records move while it looks: a pending record is
// deleted only after its live record is stored (the sweep) or its token is
// dead (rollback, a failed read's clean-up), and a live record only after
// the token is dead or queued (revoke). Records and entries of another
// destination than the config's account for nothing: the listing proves
// that the token lives at the config's Tooken.
func (b *tookenBackend) accountFor(ctx context.Context, run *tidyRun, tok *tookenapi.Token) (tidyAccount, error) {
	var acc tidyAccount
	live, err := b.pendingOrLive(ctx, run, tok, &acc)
	switch {
	case err != nil || acc.accounted:
		return acc, err
	case live && !run.queued:
		acc.accounted = true
		return acc, nil
	}
	q, err := getQueueEntry(ctx, run.s, tok.ID)
	switch {
	case err != nil:
		return acc, err
	case q != nil && issuedElsewhere(q.Dest, run.at):
		// Its lease is revoked (queued): the live record, kept until the
		// token dies, accounts for nothing either.
		acc.queued = q
	case q != nil || live:
		acc.accounted = true
	}
	return acc, nil
}

// pendingOrLive is accountFor's look at the token's creds read: in flight
// or pending (acc.accounted), a stale pending record (acc.stale), and
// whether its live record names it.
func (b *tookenBackend) pendingOrLive(ctx context.Context, run *tidyRun, tok *tookenapi.Token, acc *tidyAccount) (live bool, err error) {
	key, role := tok.Metadata[metaIssueKey], tok.Metadata[metaRole]
	if key == "" {
		return false, nil
	}
	if b.issued.isInFlight(key) {
		acc.accounted = true
		return false, nil
	}
	rec, err := getIssuance(ctx, run.s, key)
	if err != nil {
		return false, err
	}
	if rec != nil && (rec.TokenID == "" || rec.TokenID == tok.ID) {
		if rec.State != issueStateAbandoned && !issuedElsewhere(rec.Dest, run.at) {
			acc.accounted = true
			return false, nil
		}
		acc.stale = rec
	}
	if role == "" || (acc.stale != nil && acc.stale.State == issueStateAbandoned) {
		return false, nil
	}
	l, err := getLive(ctx, run.s, role, key)
	if err != nil {
		return false, err
	}
	return l != nil && l.TokenID == tok.ID, nil
}

// collectExpired deletes the issuance records whose token has expired
// upstream: live records whose lease Vault lost (or whose delete failed),
// and pending records the rollback has not finished. The pending records of
// reads this node confirmed are swept first. It walks the live records one
// role at a time.
func (b *tookenBackend) collectExpired(ctx context.Context, run *tidyRun) error {
	b.sweepConfirmed(ctx, run.s)
	if err := b.collectExpiredPending(ctx, run); err != nil {
		return err
	}
	roles, err := listLiveRoles(ctx, run.s)
	if err != nil {
		return err
	}
	for _, role := range roles {
		keys, err := listLive(ctx, run.s, role)
		if err != nil {
			return err
		}
		for _, key := range keys {
			if err := ctx.Err(); err != nil {
				return err
			}
			rec, err := getLive(ctx, run.s, role, key)
			if err != nil {
				return err
			}
			if rec != nil && expiredAt(rec.ExpiresAt, run.start) && b.dropped(ctx, run.s, role, key) {
				run.st.RecordsCollected++
			}
		}
	}
	return nil
}

// collectExpiredPending deletes the pending records whose token has expired,
// that no request or rollback holds and that no live record follows (that of
// a confirmed read is the sweep's).
func (b *tookenBackend) collectExpiredPending(ctx context.Context, run *tidyRun) error {
	keys, err := listIssuance(ctx, run.s)
	if err != nil {
		return err
	}
	r := b.issued
	for _, key := range keys {
		if !r.claim(key) {
			continue
		}
		err := b.collectPendingKey(ctx, run, key)
		r.release(key)
		if err != nil {
			return err
		}
	}
	return nil
}

// collectPendingKey is collectExpiredPending for one key it holds.
func (b *tookenBackend) collectPendingKey(ctx context.Context, run *tidyRun, key string) error {
	rec, err := getIssuance(ctx, run.s, key)
	if err != nil || rec == nil || !rec.expired(run.start) {
		return err
	}
	if live, err := getLive(ctx, run.s, rec.Role, key); err != nil || live != nil {
		return err
	}
	b.dropPending(ctx, run.s, rec.Role, key)
	run.st.RecordsCollected++
	return nil
}

// dropped deletes an expired live record for tidy, and tells whether it did.
func (b *tookenBackend) dropped(ctx context.Context, s logical.Storage, role, key string) bool {
	ok, _ := b.dropLiveIfPresent(ctx, s, role, key)
	return ok
}

// retryAbandoned gives the pending records the rollback gave up on back to
// it, with their attempts reset: tidy with revoke_orphans=true is what an
// operator runs once Tooken answers again, and a record whose token never
// lived (or died) is one tidy cannot see upstream, yet it counts against
// its role's max_live_tokens until it is finished. The next periodic run
// replays and revokes them as any pending record.
func (b *tookenBackend) retryAbandoned(ctx context.Context, s logical.Storage) {
	r := b.issued
	r.mu.Lock()
	var keys []string
	for key, p := range r.pending {
		if p.abandoned {
			keys = append(keys, key)
		}
	}
	r.mu.Unlock()
	for _, key := range keys {
		if !r.claim(key) {
			continue
		}
		rec, err := getIssuance(ctx, s, key)
		if err == nil && rec != nil && rec.State == issueStateAbandoned {
			rec.State, rec.retryState = issueStatePending, retryState{}
			if err = putIssuance(ctx, s, rec); err == nil {
				r.setDue(key, time.Time{}, false)
			}
		}
		if err != nil {
			b.Logger().Warn("tidy: could not give an abandoned issuance record back to the rollback", "issue_key", key, "error", err)
		}
		r.release(key)
	}
}
