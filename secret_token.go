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
	// internalLeaseEnd is when the lease ends as last granted (RFC 3339,
	// rounded down), written by the creds read and every renewal: a renewal
	// that must not extend the lease keeps it there. Leases from before it
	// was written fall back to their issue time + TTL.
	internalLeaseEnd = "lease_end"
	// internalTTL is the ttl a creds read asked for (a Go duration), the
	// lease's renewal increment then; absent, the role's ttl is.
	internalTTL = "ttl"
	// internalDestURL and internalDestCA are the destination of the
	// Tooken that issued the token (custody.go: its normalised url and CA
	// fingerprint, no secret): its revoke must go there. Leases from
	// before they were written have neither: the config's destination is
	// taken for theirs.
	internalDestURL = "destination_url"
	internalDestCA  = "destination_ca_sha256"
)

// leaseDestination is the destination a lease's token was issued at; nil
// for a lease that does not record it.
func leaseDestination(req *logical.Request) *secretDestination {
	d := secretDestination{URL: internalString(req, internalDestURL), CASHA256: internalString(req, internalDestCA)}
	if d.URL == "" {
		return nil
	}
	return &d
}

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

// secretTokenRenew extends the lease by the role's ttl (the ttl its creds
// read asked for, if any; or the increment asked for), up to the token's upstream expiry and never beyond it. When
// the role is gone, or the upstream expiry is reached, the lease is not
// extended and a warning says why: an error would reach the caller through
// Vault 1.14 as "failed to renew entry: resp: &logical.Response{...}".
func (b *tookenBackend) secretTokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if req.Secret == nil {
		return nil, errors.New("renew: request has no secret")
	}
	roleName := internalString(req, internalRole)
	expiresAt, err := internalTime(req, internalExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
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
	issueTime = issueTime.Truncate(time.Second)
	role, err := b.getRole(ctx, req.Storage, roleName)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return notExtended(req, issueTime, expiresAt, fmt.Sprintf("role %q no longer exists, so the lease is not extended", roleName)), nil
	}

	now := time.Now()
	remaining := leaseRemaining(expiresAt, now)
	maxTTL := expiresAt.Sub(issueTime) - 2*leaseSlack
	if remaining <= 0 || maxTTL <= 0 {
		return notExtended(req, issueTime, expiresAt, "the lease has reached its max TTL (the token expires upstream at "+expiresAt.UTC().Format(time.RFC3339)+"), so it is not extended"), nil
	}
	ttl := b.leaseTTL(role.entry, remaining)
	if asked, err := time.ParseDuration(internalString(req, internalTTL)); err == nil && asked > 0 {
		ttl = min(asked, remaining)
	}

	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = maxTTL
	granted := ttl
	if inc := req.Secret.Increment; inc > 0 {
		granted = inc
	}
	capAt := issueTime.Add(maxTTL)
	if mountMax := b.System().MaxLeaseTTL(); mountMax > 0 && issueTime.Add(mountMax).Before(capAt) {
		capAt = issueTime.Add(mountMax)
	}
	setLeaseEnd(resp.Secret, minTime(now.Add(granted), capAt))
	return resp, nil
}

// notExtended answers a renewal that must not extend the lease: Vault caps
// the lease at its current end (issue time + MaxTTL), and the warning says
// why and when it ends. A lease already at its end gets Vault's own
// "past the max TTL, cannot renew".
func notExtended(req *logical.Request, issueTime, expiresAt time.Time, why string) *logical.Response {
	end := leaseEnd(req)
	if limit := expiresAt.Add(-leaseSlack); end.After(limit) {
		end = limit
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = max(time.Until(end).Truncate(time.Second), time.Second)
	resp.Secret.MaxTTL = max(end.Sub(issueTime), time.Second)
	resp.AddWarning(fmt.Sprintf("%s: it ends at %s unless revoked sooner", why, end.UTC().Format(time.RFC3339)))
	return resp
}

// leaseEnd is when the lease ends as last granted: its lease_end, else
// (a lease issued before lease_end was recorded) its issue time + TTL.
func leaseEnd(req *logical.Request) time.Time {
	if t, err := internalTime(req, internalLeaseEnd); err == nil {
		return t
	}
	return req.Secret.IssueTime.Add(req.Secret.TTL).Truncate(time.Second)
}

// setLeaseEnd records when the lease ends, rounded down to the second.
func setLeaseEnd(s *logical.Secret, end time.Time) {
	if s.InternalData == nil {
		s.InternalData = map[string]any{}
	}
	s.InternalData[internalLeaseEnd] = end.UTC().Truncate(time.Second).Format(time.RFC3339)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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

// revokeLease kills a lease's token: its DELETE within the revoke budget,
// then delete its issuance record (one delete). A token the lease records as
// issued at another destination than the config's (its url or ca_cert
// changed since) is revoked through the config's Tooken all the same, and
// counts done only when that Tooken revokes it (revokeIssuedAt). When Tooken
// cannot be reached or refuses, or does not know a token issued elsewhere,
// the token goes to the revoke queue and the revoke succeeds. Only a failure
// to queue is an error (Vault retries).
func (b *tookenBackend) revokeLease(ctx context.Context, req *logical.Request, id string) error {
	role := internalString(req, internalRole)
	ref := refFor(role, internalString(req, internalIssueKey), internalString(req, internalRecord))
	var exp time.Time
	if t, terr := internalTime(req, internalExpiresAt); terr == nil {
		exp = t
	}

	dest := leaseDestination(req)
	client, at, err := b.getClientAt(ctx, req.Storage)
	if err != nil && !errors.Is(err, errNotConfigured) {
		return err
	}
	if err == nil {
		if err = b.revokePaced(ctx, client, id, !issuedElsewhere(dest, at)); err == nil {
			if derr := b.dropRecord(ctx, req.Storage, ref, expiredAt(exp, b.now())); derr != nil {
				return fmt.Errorf("token %s is revoked, but its issuance record could not be deleted (Vault retries the revoke): %w", id, derr)
			}
			return nil
		}
	}

	now := b.now()
	if expiredAt(exp, now) {
		// The token has expired upstream: nothing left to kill.
		if derr := b.dropRecord(ctx, req.Storage, ref, true); derr != nil {
			return fmt.Errorf("token %s has expired, but its issuance record could not be deleted (Vault retries the revoke): %w", id, derr)
		}
		return nil
	}
	if qerr := b.queueRevoke(ctx, req.Storage, id, ref, exp, dest, err); qerr != nil {
		return fmt.Errorf("revoke token %s: %v; queueing it for a later revoke failed: %w", id, err, qerr)
	}
	if errors.Is(err, errNotIssuedHere) {
		b.queue.markAbsent(id, at, exp)
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
func (b *tookenBackend) revokePaced(ctx context.Context, client *tookenapi.Client, id string, issuedHere bool) error {
	ctx, cancel := context.WithTimeout(ctx, b.queue.revokeBudget)
	defer cancel()
	q := b.queue
	for {
		if q.paced(client, time.Now()) {
			if err := q.limiter.Wait(ctx); err != nil {
				return fmt.Errorf("waiting for a turn at Tooken's rate limit: %w", err)
			}
		}
		err := q.revokeCounted(ctx, client, id, issuedHere)
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

// revokeCounted is revokeIssuedAt, counted among the revokes on their way.
func (q *revokeQueue) revokeCounted(ctx context.Context, client *tookenapi.Client, id string, issuedHere bool) error {
	q.revoking.Add(1)
	defer q.revoking.Add(-1)
	return revokeIssuedAt(ctx, client, id, q.revokeBudget, issuedHere)
}
