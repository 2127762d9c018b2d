package tooken

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// A root rotation whose new secret Tooken issued but the engine could not
// make its current one (GET /tokens/self with it failed without Tooken's
// verdict on it: 5xx, timeout, 429; or storing the config failed) leaves the
// engine holding the previous secret, which works for the grace only. Its
// rollback replays the rotation, authenticated by that previous secret; once
// the grace is over, only the new secret can authenticate the replay (the
// same caller to Tooken). So the engine keeps that new secret, as the
// rollback's candidate, where a restart or a fail-over does not lose it:
// under rotationPendingPrefix + the rotation's idempotency key, in storage
// that Vault encrypts and seal-wraps like the config (SealWrapStorage), and
// local like the rotation's WAL entry. Only when storage refuses that too is
// it kept in the process's memory (pendingSecrets). The rollback tries it with
// the same checks as any replayed secret (GET /tokens/self with it must
// answer the rotated token), only at the Tooken it was issued by, and deletes
// it once the rotation settles (finished, moot, or given up).
//
// A static role's rotation needs no such copy: the root authenticates its
// replay, whatever happened to the role's token's own secret.

// keepUnstoredTimeout bounds the storage write of keepUnstored.
const keepUnstoredTimeout = 10 * time.Second

// unstoredSecret is the durable copy of a rotated secret not yet stored as
// the token's current one. Never logged nor answered.
type unstoredSecret struct {
	TokenID string            `json:"token_id"`
	Secret  string            `json:"secret"`
	Dest    secretDestination `json:"destination"` // the Tooken that issued it: the only one it is sent to
}

// pendingSecrets holds, by rotation key, a new secret that Tooken issued but
// that neither the config nor rotationPendingPrefix could store: the last
// resort of the rollback in this process. Lost with the process, by design.
type pendingSecrets struct {
	mu sync.Mutex
	m  map[string]string
}

func (p *pendingSecrets) put(key, secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]string)
	}
	p.m[key] = secret
}

func (p *pendingSecrets) get(key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[key]
}

func (p *pendingSecrets) drop(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// keepUnstored keeps tok's secret, which rotation w gave the
// self-authenticated token st and which is not stored as its current one,
// for the rollback of w: durably, or in memory when storage refuses it.
func (b *tookenBackend) keepUnstored(ctx context.Context, s logical.Storage, st *managedToken, tok *tookenapi.Token, w rotationWAL) {
	if !st.selfAuthenticated {
		return
	}
	// The rotation's budget may be used up (a check that timed out): the
	// write gets its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keepUnstoredTimeout)
	defer cancel()
	err := putUnstoredSecret(ctx, s, w.IdempotencyKey, &unstoredSecret{TokenID: w.TokenID, Secret: tok.Secret, Dest: st.dest})
	if err == nil {
		return
	}
	b.Logger().Warn("could not store the new secret of an unfinished rotation for its rollback; it is kept in memory only, and lost if the plugin restarts before the rollback finishes the rotation",
		"token_id", w.TokenID, "error", err)
	b.pending.put(w.IdempotencyKey, tok.Secret)
}

// unstoredCandidate is the secret that rotation w gave the self-authenticated
// token st and that keepUnstored kept; "" when there is none, or when it was
// issued for another token or by another Tooken than st's (a secret is only
// sent where it was issued). An error means storage could not be read.
func (b *tookenBackend) unstoredCandidate(ctx context.Context, s logical.Storage, st *managedToken, w rotationWAL) (string, error) {
	if !st.selfAuthenticated {
		return "", nil
	}
	u, err := getUnstoredSecret(ctx, s, w.IdempotencyKey)
	switch {
	case err != nil:
		return "", fmt.Errorf("reading the kept secret of the rotation: %w", err)
	case u == nil:
		return b.pending.get(w.IdempotencyKey), nil
	case u.TokenID != w.TokenID || !u.Dest.sameAs(st.dest):
		return "", nil
	}
	return u.Secret, nil
}

// forgetUnstored deletes what keepUnstored kept for the rotation key: the
// rotation settled.
func (b *tookenBackend) forgetUnstored(ctx context.Context, s logical.Storage, key string) error {
	b.pending.drop(key)
	return deleteUnstoredSecret(ctx, s, key)
}
