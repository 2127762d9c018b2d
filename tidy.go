package tooken

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Tidy: find the upstream tokens of this mount that nothing accounts for.

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
	mu      sync.Mutex // guards last
	last    tidyStatus

	callTimeout time.Duration // of each revoke of an orphan
}

func newTidyState() *tidyState {
	return &tidyState{callTimeout: defaultUpstreamCallTimeout}
}

func (t *tidyState) setLast(st tidyStatus) {
	t.mu.Lock()
	t.last = st
	t.mu.Unlock()
}

func (t *tidyState) lastStatus() tidyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
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

// runTidy lists this mount's tokens upstream (metadata vault_mount_uuid)
// and reports those that neither an issuance record (pending, confirmed) nor
// the revoke queue accounts for and that are older than safety; it revokes
// them when asked. It also deletes issuance records whose token has expired.
func (b *tookenBackend) runTidy(ctx context.Context, s logical.Storage, mountUUID string, safety time.Duration, revoke bool) (*tidyStatus, error) {
	start := b.now()
	st := &tidyStatus{LastRunAt: start.UTC().Truncate(time.Second), SafetyAge: int64(safety / time.Second), RevokeOrphans: revoke, Orphans: []string{}}
	defer func() { st.Duration = int64(b.now().Sub(start).Round(time.Second) / time.Second) }()

	client, err := b.getClient(ctx, s)
	if err != nil {
		return st, err
	}
	run := &tidyRun{client: client, s: s, safety: safety, revoke: revoke, start: start, st: st}
	if err := b.loadTidyAccounts(ctx, run); err != nil {
		return st, err
	}
	cursor := ""
	for page := 0; page < tidyMaxPages; page++ {
		list, err := client.ListTokens(ctx, tookenapi.ListOptions{Limit: tidyPageSize, Cursor: cursor})
		if err != nil {
			return st, upstreamError("tidy: listing tokens", err)
		}
		for i := range list.Data {
			if list.Data[i].Metadata[metaMountUUID] == mountUUID {
				b.tidyToken(ctx, run, &list.Data[i])
			}
		}
		if list.NextCursor == nil || *list.NextCursor == "" {
			break
		}
		cursor = *list.NextCursor
	}
	b.Logger().Info("tidy done", "upstream_scanned", st.UpstreamScanned, "orphans_found", st.OrphansFound, "orphans_revoked", st.OrphansRevoked, "records_collected", st.RecordsCollected)
	return st, nil
}

// tidyRun is one tidy pass: its options, what accounts for a token, and the
// status it fills in.
type tidyRun struct {
	client  *tookenapi.Client
	s       logical.Storage
	safety  time.Duration
	revoke  bool
	start   time.Time
	records map[string]*issuanceRecord // by issue key, not expired
	queued  map[string]struct{}        // token ids in the revoke queue
	st      *tidyStatus
}

// loadTidyAccounts reads the issuance records (deleting the expired ones)
// and the revoke queue.
func (b *tookenBackend) loadTidyAccounts(ctx context.Context, run *tidyRun) error {
	keys, err := listIssuance(ctx, run.s)
	if err != nil {
		return err
	}
	run.records = make(map[string]*issuanceRecord, len(keys))
	for _, key := range keys {
		rec, err := getIssuance(ctx, run.s, key)
		if err != nil {
			return err
		}
		if rec == nil {
			continue
		}
		if rec.expired(run.start) && !b.issued.isInFlight(key) {
			b.dropIssuance(ctx, run.s, key)
			run.st.RecordsCollected++
			continue
		}
		run.records[key] = rec
	}
	ids, err := listQueue(ctx, run.s)
	if err != nil {
		return err
	}
	run.queued = make(map[string]struct{}, len(ids))
	for _, id := range ids {
		run.queued[id] = struct{}{}
	}
	return nil
}

// tidyToken classifies one upstream token of this mount: accounted for, too
// young, or an orphan (reported, and revoked when asked).
func (b *tookenBackend) tidyToken(ctx context.Context, run *tidyRun, tok *tookenapi.Token) {
	st := run.st
	st.UpstreamScanned++
	key := tok.Metadata[metaIssueKey]
	rec := run.records[key]
	names := rec != nil && (rec.TokenID == "" || rec.TokenID == tok.ID) // the record is this token's
	_, queued := run.queued[tok.ID]
	if queued || (key != "" && b.issued.isInFlight(key)) || (names && rec.State != issueStateAbandoned) {
		st.Accounted++
		return
	}
	if run.start.Sub(tok.CreatedAt) < run.safety {
		st.TooYoung++
		return
	}
	st.OrphansFound++
	if len(st.Orphans) < maxReportedOrphans {
		st.Orphans = append(st.Orphans, tok.ID)
	}
	b.Logger().Warn("tidy: upstream token of this mount that no lease accounts for", "token_id", tok.ID, "role", tok.Metadata[metaRole], "issue_key", key, "revoke", run.revoke)
	if !run.revoke {
		return
	}
	if err := revokeUpstream(ctx, run.client, tok.ID, b.tidy.callTimeout); err != nil {
		b.Logger().Warn("tidy: could not revoke an orphan", "token_id", tok.ID, "error", err)
		return
	}
	st.OrphansRevoked++
	if names { // abandoned: its token is dead now
		b.dropIssuance(ctx, run.s, key)
	}
}
