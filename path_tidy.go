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
	tidyPath       = "tidy"
	tidyStatusPath = "tidy/status"
)

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
					Responses:                   dataResponse("What the tidy found.", tidyResponseFields()),
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
					Summary:   "Read the last tidy run and the state of the revoke queue and issuance records.",
					Responses: dataResponse("The last tidy, rollback and queue drain, and the records and queue now.", tidyStatusResponseFields()),
				},
			},
			HelpSynopsis:    pathTidyStatusHelpSyn,
			HelpDescription: pathTidyStatusHelpDesc,
		},
	}
}

// tidyResponseFields are the fields of a tidy's answer (tidyStatus).
func tidyResponseFields() map[string]*framework.FieldSchema {
	count := func(desc string) *framework.FieldSchema {
		return &framework.FieldSchema{Type: framework.TypeInt, Description: desc}
	}
	return map[string]*framework.FieldSchema{
		"last_run_at":       timeField("When the tidy started"),
		"duration":          secondsField("How long it ran"),
		"safety_age":        secondsField("Only tokens older than this counted as orphans"),
		"revoke_orphans":    {Type: framework.TypeBool, Description: "Whether orphans were revoked."},
		"upstream_scanned":  count("Tokens of this mount seen upstream."),
		"accounted":         count("Of those, tokens a lease, a creds read or the revoke queue accounts for."),
		"too_young":         count("Unaccounted tokens younger than safety_age."),
		"orphans_found":     count("Unaccounted tokens older than safety_age."),
		"orphans_revoked":   count("Orphans revoked by this run."),
		"orphans":           {Type: framework.TypeStringSlice, Description: "Ids of the orphans (at most 100)."},
		"records_collected": count("Expired issuance records deleted."),
		"error":             {Type: framework.TypeString, Description: "Why the run stopped early, if it did."},
	}
}

// tidyStatusResponseFields are the fields of a tidy/status read.
func tidyStatusResponseFields() map[string]*framework.FieldSchema {
	count := func(desc string) *framework.FieldSchema {
		return &framework.FieldSchema{Type: framework.TypeInt64, Description: desc}
	}
	return map[string]*framework.FieldSchema{
		"queue_length":      count("Tokens waiting in the revoke queue."),
		"pending_records":   count("Issuance records of creds reads not finished."),
		"abandoned_records": count("Issuance records the rollback gave up on (need an operator)."),
		"confirmed_records": count("Issuance records of live leases."),
		"queued_elsewhere":  count("Revoke queue entries whose token was issued at another url or ca_cert than the config's now, and that the config's Tooken does not know (404, seen by this node's drains): they wait for the config to point to the Tooken that issued them again, or for the token's expiry."),
		"pending_elsewhere": count("Pending records whose create went to another url or ca_cert than the config's now: the rollback finishes them only there; tidy revoke_orphans=true revokes their tokens that the config's Tooken lists."),
		"last_rollback":     {Type: framework.TypeMap, Description: "The last periodic rollback: pending, finished, failed, abandoned, collected, swept."},
		"last_queue_drain":  {Type: framework.TypeMap, Description: "The last revoke queue drain: queued, revoked, dropped, failed, deferred, rate_limited."},
		"last_tidy":         {Type: framework.TypeMap, Description: "The last tidy's answer since the plugin started; null before the first."},
		"last_tidy_run_at":  timeField("When the last tidy started"),
		"orphans_found":     count("Orphans the last tidy found."),
		"orphans_revoked":   count("Orphans the last tidy revoked."),
	}
}

func (b *tookenBackend) pathTidyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	safety := time.Duration(d.Get("safety_age").(int)) * time.Second
	revoke := d.Get("revoke_orphans").(bool)
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), nil
	}
	if least := minTidySafetyAge(cfg); safety < least {
		return logical.ErrorResponse("safety_age: must be at least %ds, the longest a creds read can take with this config ((max_retries+1) x request_timeout + max_retries x %ds + %ds); a token younger than that may belong to a read still running",
			int64(least/time.Second), int64(tookenapi.MaxRetryWait/time.Second), int64((cleanupTimeout+credsReadMargin)/time.Second)), nil
	}
	mountID := b.mountUUID
	if mountID == "" {
		return nil, errors.New("tidy: the mount's backend UUID is unknown")
	}
	if !b.tidy.running.TryLock() {
		return nil, logical.CodedError(http.StatusConflict, "a tidy is already running on this mount: retry when it has finished (see tidy/status)")
	}
	defer b.tidy.running.Unlock()
	st, err := b.runTidy(ctx, req.Storage, mountID, safety, revoke)
	if st != nil && !errors.Is(err, errNotConfigured) {
		if err != nil {
			st.Error = err.Error()
		}
		b.tidy.last.set(*st)
	}
	if errors.Is(err, errNotConfigured) {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: structToMap(st)}, nil
}

// minTidySafetyAge is the shortest safety_age tidy accepts: the longest a
// creds read can run with cfg, from its pending write (before the token
// exists) to its end. Tidy decides on each token against storage as it is,
// which already accounts for a read in flight; the margin also covers a read
// still running on a node that has just lost leadership.
func minTidySafetyAge(cfg *tookenConfig) time.Duration {
	return credsReadBudget(cfg)
}

func (b *tookenBackend) pathTidyStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	st, roll, drain := b.tidy.last.get(), b.issued.lastReport(), b.queue.lastReport()

	ids, err := listQueue(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	counts, err := b.countRecords(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	data := map[string]any{
		"queue_length":      int64(len(ids)),
		"pending_records":   int64(counts.pending),
		"abandoned_records": int64(counts.abandoned),
		"confirmed_records": int64(counts.confirmed),
		"queued_elsewhere":  int64(b.queue.waitingElsewhere()),
		"pending_elsewhere": int64(counts.elsewhere),
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

// recordCounts counts the issuance records by what they stand for.
type recordCounts struct {
	pending, abandoned, confirmed int
	elsewhere                     int // pending (or abandoned) records of another destination than the config's
}

// countRecords counts the issuance records from storage, so that any node
// can answer: the pending records are read (a pending record whose live
// record exists is a confirmed read not swept yet), the live records only
// listed, one role at a time, and records of the previous layout not moved
// yet are read.
func (b *tookenBackend) countRecords(ctx context.Context, s logical.Storage) (c recordCounts, err error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return c, err
	}
	var at secretDestination
	if cfg != nil {
		at = cfg.destination()
	}
	keys, err := listIssuance(ctx, s)
	if err != nil {
		return c, err
	}
	for _, key := range keys {
		rec, err := getIssuance(ctx, s, key)
		if err != nil || rec == nil {
			if err != nil {
				return c, err
			}
			continue
		}
		elsewhere := cfg != nil && issuedElsewhere(rec.Dest, at)
		if rec.State == issueStateAbandoned {
			c.abandoned++
			c.elsewhere += btoi(elsewhere)
			continue
		}
		live, err := getLive(ctx, s, rec.Role, key)
		if err != nil {
			return c, err
		}
		if live == nil {
			c.pending++
			c.elsewhere += btoi(elsewhere)
		}
	}
	roles, err := listLiveRoles(ctx, s)
	if err != nil {
		return c, err
	}
	for _, role := range roles {
		keys, err := listLive(ctx, s, role)
		if err != nil {
			return c, err
		}
		c.confirmed += len(keys)
	}
	return b.countLegacy(ctx, s, c)
}

// btoi is 1 for true.
func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// countLegacy adds the records of the previous layout to c.
func (b *tookenBackend) countLegacy(ctx context.Context, s logical.Storage, c recordCounts) (recordCounts, error) {
	keys, err := listLegacy(ctx, s)
	if err != nil {
		return c, err
	}
	for _, key := range keys {
		rec, err := getLegacy(ctx, s, key)
		if err != nil {
			return c, err
		}
		switch {
		case rec == nil:
		case rec.State == issueStatePending:
			c.pending++
		case rec.State == issueStateAbandoned:
			c.abandoned++
		default:
			c.confirmed++
		}
	}
	return c, nil
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
operator: make Tooken reachable and the root secret valid (vault read
<mount>/config shows last_rotation_error), then run tidy with
revoke_orphans=true. More in "Guarantees: no orphaned token" of
https://github.com/tooken/vault-plugin-secrets-tooken#guarantees-no-orphaned-token
`
