package tooken

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// secretTokenType is the leased secret type of creds.
const secretTokenType = "tooken_token"

// Lease internal data keys, written by the creds path and read by renew and
// revoke. Revoke needs token_id only (the role may be gone).
const (
	internalTokenID   = "token_id"
	internalIssueKey  = "issue_key"
	internalRole      = "role"
	internalRecord    = "record"     // storage key of the issuance record; absent in leases of the previous version
	internalExpiresAt = "expires_at" // RFC 3339: the upstream expiry, the lease's hard limit
	internalIssuedAt  = "issued_at"  // RFC 3339
)

func secretToken(b *tookenBackend) *framework.Secret {
	return &framework.Secret{
		Type: secretTokenType,
		Fields: map[string]*framework.FieldSchema{
			"token": {
				Type:        framework.TypeString,
				Description: "The Tooken secret (Bearer credential).",
			},
			"token_id": {
				Type:        framework.TypeString,
				Description: "The Tooken token id.",
			},
			"name": {
				Type:        framework.TypeString,
				Description: "The token's name.",
			},
			"scopes": {
				Type:        framework.TypeCommaStringSlice,
				Description: "The token's scopes.",
			},
			"expires_at": {
				Type:        framework.TypeString,
				Description: "When the token expires upstream (RFC 3339): the lease's hard limit.",
			},
		},
		Renew:  b.secretTokenRenew,
		Revoke: b.secretTokenRevoke,
	}
}

func internalString(req *logical.Request, key string) string {
	if req.Secret == nil {
		return ""
	}
	s, _ := req.Secret.InternalData[key].(string)
	return s
}

func internalTime(req *logical.Request, key string) (time.Time, error) {
	raw := internalString(req, key)
	if raw == "" {
		return time.Time{}, fmt.Errorf("lease internal data has no %s", key)
	}
	t, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease internal data: %s: %w", key, err)
	}
	return t, nil
}

// secretTokenRenew extends the lease by the role's ttl, up to the token's
// upstream expiry and never beyond it.
func (b *tookenBackend) secretTokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if req.Secret == nil {
		return nil, errors.New("renew: request has no secret")
	}
	roleName := internalString(req, internalRole)
	expiresAt, err := internalTime(req, internalExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	role, err := b.getRole(ctx, req.Storage, roleName)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role %q no longer exists: the lease cannot be renewed (it stays valid until it expires or is revoked)", roleName), nil
	}

	now := time.Now()
	remaining := leaseRemaining(expiresAt, now)
	if remaining <= 0 {
		return logical.ErrorResponse("the lease has reached its max TTL: the token expires upstream at %s", expiresAt.UTC().Format(time.RFC3339)), nil
	}
	ttl := b.leaseTTL(role.entry, remaining)

	// Vault computes the new TTL from the requested increment (or TTL), capped
	// at IssueTime (truncated to the second) + MaxTTL, measured from a
	// truncated "now". Aim that cap one more slack before the upstream expiry
	// so truncation can never carry the lease past it.
	issueTime := req.Secret.IssueTime
	if issueTime.IsZero() {
		if issueTime, err = internalTime(req, internalIssuedAt); err != nil {
			return nil, fmt.Errorf("renew: %w", err)
		}
	}
	maxTTL := expiresAt.Sub(issueTime.Truncate(time.Second)) - 2*leaseSlack
	if maxTTL <= 0 {
		return logical.ErrorResponse("the lease has reached its max TTL: the token expires upstream at %s", expiresAt.UTC().Format(time.RFC3339)), nil
	}

	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = maxTTL
	return resp, nil
}

// secretTokenRevoke revokes the token upstream from the lease's internal data
// alone. A token that is already gone counts as revoked. When Tooken cannot
// be reached within the revoke budget, the token is queued for the periodic
// func and the revoke succeeds (revoke_queue.go).
func (b *tookenBackend) secretTokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	id := internalString(req, internalTokenID)
	if id == "" {
		return nil, errors.New("revoke: lease internal data has no token_id")
	}
	if err := b.revokeLease(ctx, req, id); err != nil {
		return nil, err
	}
	return nil, nil
}

// revokeLease kills a lease's token: revokeUpstream within the revoke budget,
// then delete its issuance record (one delete). When Tooken cannot be reached
// or refuses, the token goes to the revoke queue and the revoke succeeds. Only
// a failure to queue is an error (Vault retries).
func (b *tookenBackend) revokeLease(ctx context.Context, req *logical.Request, id string) error {
	role := internalString(req, internalRole)
	ref := refFor(role, internalString(req, internalIssueKey), internalString(req, internalRecord))
	var exp time.Time
	if t, terr := internalTime(req, internalExpiresAt); terr == nil {
		exp = t
	}

	client, err := b.getClient(ctx, req.Storage)
	if err != nil && !errors.Is(err, errNotConfigured) {
		return err
	}
	if err == nil {
		if err = b.revokePaced(ctx, client, id); err == nil {
			b.dropRecord(ctx, req.Storage, ref, expiredAt(exp, b.now()))
			return nil
		}
	}

	now := b.now()
	if expiredAt(exp, now) {
		// The token has expired upstream: nothing left to kill.
		b.dropRecord(ctx, req.Storage, ref, true)
		return nil
	}
	entry := &revokeQueueEntry{TokenID: id, IssueKey: ref.key, Role: role, Record: ref.recordKey(), ExpiresAt: exp, QueuedAt: now}
	b.queue.retry.recordFailure(&entry.retryState, err, now)
	if qerr := b.enqueueRevoke(ctx, req.Storage, entry); qerr != nil {
		return fmt.Errorf("revoke token %s: %v; queueing it for a later revoke failed: %w", id, err, qerr)
	}
	b.Logger().Warn("could not revoke a token now: queued for revocation; it may keep working until the queue drains or it expires",
		"token_id", id, "role", role, "expires_at", exp.Format(time.RFC3339), "error", err)
	return nil
}

// revokePaced is the DELETE of a lease revoke, within the revoke budget. It
// first waits its turn at the revoke queue's limiter (Tooken's documented
// pace, which the drain shares) while Tooken's bucket runs low (revokeQueue.
// paced). So when Vault revokes many leases at once (revoke -prefix, leases
// ending together; its expiration workers run 200 revokes concurrently)
// Tooken's burst is used and then the revokes take turns here, instead of
// all reaching Tooken, being refused with 429 and ending in the queue; one
// that Tooken refused all the same takes its turn again after Tooken's
// Retry-After. While Tooken has room, nothing waits. A revoke whose turn
// would come after its budget fails at once, and is queued.
func (b *tookenBackend) revokePaced(ctx context.Context, client *tookenapi.Client, id string) error {
	ctx, cancel := context.WithTimeout(ctx, b.queue.revokeBudget)
	defer cancel()
	q := b.queue
	for {
		if q.paced(client, time.Now()) {
			if err := q.limiter.Wait(ctx); err != nil {
				return fmt.Errorf("waiting for a turn at Tooken's rate limit: %w", err)
			}
		}
		err := q.revokeCounted(ctx, client, id)
		var rl *tookenapi.RateLimitError
		if !errors.As(err, &rl) {
			return err
		}
		// Refused for the rate after the client's retries: Tooken's bucket
		// is empty, so revokes take turns, and this one tries again after
		// Tooken's Retry-After if that fits in its budget.
		q.lowUntil.Store(time.Now().Add(paceHold).UnixNano())
		if dl, _ := ctx.Deadline(); time.Until(dl) <= rl.RetryAfter {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(rl.RetryAfter):
		}
	}
}

// revokeCounted is revokeUpstream, counted among the revokes on their way.
func (q *revokeQueue) revokeCounted(ctx context.Context, client *tookenapi.Client, id string) error {
	q.revoking.Add(1)
	defer q.revoking.Add(-1)
	return revokeUpstream(ctx, client, id, q.revokeBudget)
}
