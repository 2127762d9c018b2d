package tooken

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

const (
	tidyPath             = "tidy"
	tidyStatusPath       = "tidy/status"
	defaultTidySafetyAge = time.Hour
	tidyPageSize         = 100
	tidyMaxPages         = 10000 // a million tokens
	maxReportedOrphans   = 100
)

// tidyStatus is the last tidy run, kept in memory (tidy/status).
type tidyStatus struct {
	LastRunAt        time.Time `json:"last_run_at"`
	Duration         string    `json:"duration"`
	SafetyAge        string    `json:"safety_age"`
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

func pathTidy(b *tookenBackend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: tidyPath + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixTooken,
			},
			Fields: map[string]*framework.FieldSchema{
				"safety_age": {
					Type:        framework.TypeDurationSecond,
					Description: "Only upstream tokens created longer ago than this count as orphans.",
					Default:     int(defaultTidySafetyAge / time.Second),
				},
				"revoke_orphans": {
					Type:        framework.TypeBool,
					Description: "Revoke the orphans found (default: only report them).",
					Default:     false,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathTidyWrite,
					DisplayAttrs: &framework.DisplayAttributes{
						OperationVerb: "tidy",
					},
					Summary:                     "Find (and optionally revoke) upstream tokens of this mount that no lease accounts for.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathTidyHelpSyn,
			HelpDescription: pathTidyHelpDesc,
		},
		{
			Pattern: tidyStatusPath + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixTooken,
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathTidyStatusRead,
					DisplayAttrs: &framework.DisplayAttributes{
						OperationSuffix: "tidy-status",
					},
					Summary: "Read the last tidy run and the state of the revoke queue and issuance records.",
				},
			},
			HelpSynopsis:    pathTidyStatusHelpSyn,
			HelpDescription: pathTidyStatusHelpDesc,
		},
	}
}

func (b *tookenBackend) pathTidyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	safety := time.Duration(d.Get("safety_age").(int)) * time.Second
	if safety < 0 {
		return logical.ErrorResponse("safety_age: must not be negative"), nil
	}
	revoke := d.Get("revoke_orphans").(bool)
	mountID := b.guard.mountUUID
	if mountID == "" {
		return nil, errors.New("tidy: the mount's backend UUID is unknown")
	}
	g := b.guard
	if !g.tidyMu.TryLock() {
		return nil, logical.CodedError(http.StatusConflict, "a tidy is already running on this mount: retry when it has finished (see tidy/status)")
	}
	defer g.tidyMu.Unlock()
	st, err := b.runTidy(ctx, req.Storage, mountID, safety, revoke)
	if st != nil && !errors.Is(err, errNotConfigured) {
		if err != nil {
			st.Error = err.Error()
		}
		g.statusMu.Lock()
		g.status = *st
		g.statusMu.Unlock()
	}
	if errors.Is(err, errNotConfigured) {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: structToMap(st)}, nil
}

// runTidy lists this mount's tokens upstream (metadata vault_mount_uuid)
// and reports those that neither an issuance record (pending, confirmed) nor
// the revoke queue accounts for and that are older than safety; it revokes
// them when asked. It also deletes issuance records whose token has expired.
func (b *tookenBackend) runTidy(ctx context.Context, s logical.Storage, mountUUID string, safety time.Duration, revoke bool) (*tidyStatus, error) {
	g := b.guard
	start := g.now()
	st := &tidyStatus{LastRunAt: start.UTC(), SafetyAge: safety.String(), RevokeOrphans: revoke, Orphans: []string{}}
	defer func() { st.Duration = g.now().Sub(start).Round(time.Millisecond).String() }()

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
	g := b.guard
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
		if rec.expired(run.start) && !g.isInFlight(key) {
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
	g, st := b.guard, run.st
	st.UpstreamScanned++
	key := tok.Metadata[metaIssueKey]
	rec := run.records[key]
	names := rec != nil && (rec.TokenID == "" || rec.TokenID == tok.ID) // the record is this token's
	_, queued := run.queued[tok.ID]
	if queued || (key != "" && g.isInFlight(key)) || (names && rec.State != issueStateAbandoned) {
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
	if err := revokeGone(ctx, run.client, tok.ID, g.callTimeout); err != nil {
		b.Logger().Warn("tidy: could not revoke an orphan", "token_id", tok.ID, "error", err)
		return
	}
	st.OrphansRevoked++
	if names { // abandoned: its token is dead now
		b.dropIssuance(ctx, run.s, key)
	}
}

func (b *tookenBackend) pathTidyStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	g := b.guard
	g.statusMu.Lock()
	st, roll, drain := g.status, g.lastRoll, g.lastDrain
	g.statusMu.Unlock()

	ids, err := listQueue(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	keys, err := listIssuance(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var pending, abandoned, confirmed int
	for _, key := range keys {
		if g.isConfirmed(key) {
			confirmed++
			continue
		}
		rec, err := getIssuance(ctx, req.Storage, key)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			continue
		}
		switch rec.State {
		case issueStatePending:
			pending++
		case issueStateAbandoned:
			abandoned++
		default:
			confirmed++
		}
	}
	data := map[string]any{
		"queue_length":      int64(len(ids)),
		"pending_records":   int64(pending),
		"abandoned_records": int64(abandoned),
		"confirmed_records": int64(confirmed),
		"last_rollback":     structToMap(&roll),
		"last_queue_drain":  structToMap(&drain),
		"last_tidy":         nil,
		"orphans_found":     int64(st.OrphansFound),
		"orphans_revoked":   int64(st.OrphansRevoked),
		"last_tidy_run_at":  nil,
	}
	if !st.LastRunAt.IsZero() {
		data["last_tidy"] = structToMap(&st)
		data["last_tidy_run_at"] = st.LastRunAt.Format(time.RFC3339)
	}
	return &logical.Response{Data: data}, nil
}

// structToMap turns a JSON-tagged struct into response data, numbers as
// int64 (not json.Number) so that they read naturally.
func structToMap(v any) map[string]any {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil
	}
	for k, val := range m {
		if n, ok := val.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				m[k] = i
			}
		}
	}
	return m
}

const pathTidyHelpSyn = `Find, and optionally revoke, Tooken tokens of this mount that no lease accounts for.`

const pathTidyHelpDesc = `
Lists the upstream tokens this mount created (metadata vault_mount_uuid
equal to the mount's backend UUID, paginated) and compares them with the mount's
issuance records (issued/<issue_key>: one per creds read, deleted when the
lease is revoked) and revoke queue. A token is accounted for when its
vault_issue_key has a pending or confirmed record naming it, or its id is
queued for revocation. The others, when created longer ago than safety_age
(default 1h), are orphans: reported, and revoked when revoke_orphans=true.

Tidy also deletes issuance records whose token has expired upstream. It runs
on the active node, one at a time, and answers what it found; tidy/status
shows the last run.
`

const pathTidyStatusHelpSyn = `Status of tidy, the revoke queue and the issuance records.`

const pathTidyStatusHelpDesc = `
Returns the last tidy run (time, duration, tokens scanned, orphans found and
revoked, records collected), kept in memory since the plugin started, plus
the current revoke queue length, the pending, abandoned and confirmed
issuance records, and what the last periodic rollback and queue drain did.
A non-zero abandoned_records or a queue that does not shrink needs an
operator: see the README, "Guarantees: no orphaned token".
`
