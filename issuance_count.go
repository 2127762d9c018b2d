package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// Live token counts per role, for max_live_tokens.
//
// A role's tokens alive at once are its live records plus its pending ones
// (a crashed read's token may live until the rollback finishes it). The
// count is learnt once per backend instance, the first time a role with a
// limit is read: one List of issued/live/<role>/ (role names hold no "/"),
// plus the pending records this node knows of, which the start-up pass has
// read (issuance_prepare.go). From then on it moves in memory with every
// change of the role's records: a creds read reserves a slot before its
// pending write and frees it when that read leaves nothing behind; a revoke,
// a drained queue entry, a finished rollback or tidy frees the slot when it
// deletes the last record of a key. No storage round trip is added to a
// creds read. Only the active node counts: creds reads are forwarded to it.

// errLiveTokenLimit is a creds read refused by max_live_tokens.
var errLiveTokenLimit = errors.New("max_live_tokens reached")

// roleCount is one role's live token count.
type roleCount struct {
	// changes is held shared by every change of the role's records (storage
	// write or delete together with the count it moves) and exclusively by
	// the count's load, so that the load never sees a change half done.
	changes sync.RWMutex
	loaded  bool // guarded by issuanceRecords.mu
	n       int  // guarded by issuanceRecords.mu; meaningful once loaded
}

// roleCountLocked is role's count, made on first use (r.mu held).
func (r *issuanceRecords) roleCountLocked(role string) *roleCount {
	rc := r.roles[role]
	if rc == nil {
		rc = &roleCount{}
		r.roles[role] = rc
	}
	return rc
}

// changing holds role's count open for a change of its records; the caller
// calls done when the storage call and the count move are both over.
func (r *issuanceRecords) changing(role string) (done func()) {
	r.mu.Lock()
	rc := r.roleCountLocked(role)
	r.mu.Unlock()
	rc.changes.RLock()
	return rc.changes.RUnlock
}

// adjustLocked moves role's count by delta when it is loaded (r.mu held).
func (r *issuanceRecords) adjustLocked(role string, delta int) {
	if rc := r.roles[role]; rc != nil && rc.loaded {
		rc.n = max(rc.n+delta, 0)
	}
}

// liveCount is role's count; ok is false when it is not loaded.
func (r *issuanceRecords) liveCount(role string) (n int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rc := r.roles[role]
	if rc == nil || !rc.loaded {
		return 0, false
	}
	return rc.n, true
}

// loadCount learns role's count from storage once: its live records plus
// the pending records of the role this node knows of (not confirmed: a
// confirmed one is among the live records). The start-up pass must be done,
// so that every pending record of an earlier process is known.
func (b *tookenBackend) loadCount(ctx context.Context, s logical.Storage, role string) error {
	r := b.issued
	r.mu.Lock()
	rc := r.roleCountLocked(role)
	r.mu.Unlock()
	rc.changes.Lock()
	defer rc.changes.Unlock()
	r.mu.Lock()
	loaded := rc.loaded
	r.mu.Unlock()
	if loaded {
		return nil
	}
	keys, err := listLive(ctx, s, role)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(keys)
	for _, p := range r.pending {
		if p.role == role {
			n++
		}
	}
	rc.n, rc.loaded = n, true
	return nil
}

// startIssuance begins a creds read of role under key: it marks the key in
// flight and takes a slot of the role's count. With a limit (max > 0) it
// first makes sure the count is known, and refuses with errLiveTokenLimit
// when the role has max tokens alive. end is called when the request is over.
func (b *tookenBackend) startIssuance(ctx context.Context, s logical.Storage, role, key string, limit int) (end func(), err error) {
	r := b.issued
	if limit > 0 {
		if err := b.prepareIssuance(ctx, s); err != nil {
			return nil, err
		}
		if err := b.loadCount(ctx, s, role); err != nil {
			return nil, err
		}
	}
	done := r.changing(role)
	defer done()
	r.mu.Lock()
	rc := r.roles[role]
	if limit > 0 && rc.n >= limit {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: role %q has %d tokens alive, its limit", errLiveTokenLimit, role, rc.n)
	}
	p := r.holdLocked(key)
	p.role = role
	r.adjustLocked(role, +1)
	r.mu.Unlock()
	return r.ender(p), nil
}

// liveTokenLimitError is what a caller refused by max_live_tokens sees: a
// 429, Vault's status for a lease count quota, with the role and the limit.
func liveTokenLimitError(role string, limit int) error {
	return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf(
		"max_live_tokens: role %q already has %d live tokens, its limit; revoke some of its leases (vault lease revoke -prefix <mount>/creds/%s) or raise the role's max_live_tokens", role, limit, role))
}
