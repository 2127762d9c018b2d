package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// rootTarget is the root token as a rotationTarget: it authenticates its own
// rotation, its secret and rotation state live in the config, and the
// config-write lock serialises its rotations with config writes.
type rootTarget struct {
	b *tookenBackend
	// cfg is the config as load read it, and then as store stored it.
	cfg *tookenConfig
}

// rootRotation is the root's target for one rotation or rollback.
func (b *tookenBackend) rootRotation() *rootTarget { return &rootTarget{b: b} }

func (t *rootTarget) what() string      { return "root" }
func (t *rootTarget) lock() *sync.Mutex { return &t.b.configMu }
func (t *rootTarget) walKind() string   { return walKindRotateRoot }
func (t *rootTarget) walTarget() string { return "" }
func (t *rootTarget) notManaged() error { return errNotConfigured }
func (t *rootTarget) lockoutHint() string {
	return "the engine no longer holds a working root secret: " + rootSecretFix + " (" + docsURL + "#when-tookens-side-was-changed-by-hand-or-the-root-is-lost)"
}

// load reads the config from storage: the root's secret and rotation state.
func (t *rootTarget) load(ctx context.Context, s logical.Storage) (*managedToken, error) {
	cfg, err := readConfig(ctx, s)
	if err != nil || cfg == nil {
		return nil, err
	}
	auth, done, err := t.b.connect(ctx, s, cfg)
	if err != nil {
		return nil, err
	}
	t.cfg = cfg
	return &managedToken{
		tokenID:         cfg.TokenID,
		lastRotationKey: cfg.LastRotationKey,
		// A config stored by an earlier version may have a shorter grace
		// than the recovery needs: rotate with the minimum then.
		grace:             max(cfg.grace(), cfg.minRotationGrace()),
		callBudget:        cfg.rotationCallBudget(),
		budget:            cfg.rotationCallBudget() + rotationCheckBudget,
		auth:              auth,
		selfAuthenticated: true,
		secretSetAt:       cfg.SecretSetAt,
		dest:              cfg.destination(),
		done:              done,
	}, nil
}

// store stores the config with the rotated token's secret and installs it in
// the cache and the client.
func (t *rootTarget) store(ctx context.Context, s logical.Storage, _ *managedToken, tok *tookenapi.Token, w rotationWAL) error {
	newCfg := *t.cfg
	newCfg.Token = tok.Secret
	newCfg.TokenID = tok.ID
	if tok.Scopes != nil {
		newCfg.Scopes = tok.Scopes
	}
	newCfg.ExpiresAt = tok.ExpiresAt
	rotatedAt := w.rotatedAt(tok)
	newCfg.SecretSetAt = t.b.now().UTC()
	newCfg.LastRotated = &rotatedAt
	newCfg.LastRotationKey = w.IdempotencyKey
	newCfg.PreviousSecretExpiresAt = tok.PreviousSecretExpiresAt
	newCfg.clearFailures()
	if err := putConfig(ctx, s, &newCfg); err != nil {
		return err
	}
	t.cfg = &newCfg
	t.b.installConfig(&newCfg)
	return nil
}

// recordFailure stores the failure status and the schedule backoff in the
// config (best effort).
func (t *rootTarget) recordFailure(ctx context.Context, s logical.Storage, msg string) {
	cfg, err := readConfig(ctx, s)
	if err != nil || cfg == nil {
		return
	}
	c := *cfg
	c.recordFailure(msg, t.b.now().UTC())
	if err := putConfig(ctx, s, &c); err != nil {
		t.b.Logger().Warn("could not store the root rotation failure status", "error", err)
		return
	}
	t.b.installConfig(&c)
}

// rootCall is a client authenticated by the root over cfg's connection
// (b.connect), with ctx bounded by the budget of one call of a rotation
// (rotationCallBudget); end releases both.
func (b *tookenBackend) rootCall(ctx context.Context, s logical.Storage, cfg *tookenConfig) (context.Context, *tookenapi.Client, func(), error) {
	auth, done, err := b.connect(ctx, s, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.rotationCallBudget())
	return ctx, auth, func() { cancel(); done() }, nil
}

// rotateRoot rotates the root now and returns the config it stored. The
// caller holds configMu. A failure is logged and recorded in the config.
func (b *tookenBackend) rotateRoot(ctx context.Context, s logical.Storage, trigger string) (*tookenConfig, error) {
	t := b.rootRotation()
	if err := b.checkRootCustody(ctx, s); err != nil {
		b.Logger().Error(trigger+" root rotation refused", "error", err)
		t.recordFailure(ctx, s, err.Error())
		return nil, err
	}
	if _, err := b.rotateLocked(ctx, s, t, trigger); err != nil {
		if !errors.Is(err, errNotConfigured) {
			b.Logger().Error(trigger+" root rotation failed", "error", err)
			t.recordFailure(ctx, s, err.Error())
		}
		return nil, err
	}
	return t.cfg, nil
}

// rotateRootIfDue is the scheduled rotation, called by the periodic function.
func (b *tookenBackend) rotateRootIfDue(ctx context.Context, s logical.Storage) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil || !rootRotationDue(cfg, b.now()) {
		return
	}
	if !b.configMu.TryLock() {
		return // a rotation or a config write is running
	}
	defer b.configMu.Unlock()
	// Check again on fresh storage, under the lock.
	if cfg, err = readConfig(ctx, s); err != nil || cfg == nil || !rootRotationDue(cfg, b.now()) {
		return
	}
	_, _ = b.rotateRoot(ctx, s, "scheduled")
}

// rootRotationDue tells whether the schedule rotates the root at now.
func rootRotationDue(cfg *tookenConfig, now time.Time) bool {
	if cfg.RotationPeriod <= 0 {
		return false
	}
	w, _ := parseWindow(cfg.RotationWindow)
	return !now.Before(cfg.nextRotation(now)) && w.contains(now)
}

// checkRootCustody is a root rotation's first step: it reads the root token
// (GET /tokens/self) and refuses the rotation when another custody holds it
// (custody_mark.go: a creds lease, a static role, another mount's root),
// since rotating it would kill that custody's secret, or that custody's
// rotations the root's. This also covers a config stored without
// verification, and a root configured by an earlier version, which it marks
// as this mount's when it carries no mark. The caller holds configMu. When
// the root cannot be read, it lets the rotation go on (and report its own
// failure): the check never stops a rotation it cannot judge.
func (b *tookenBackend) checkRootCustody(ctx context.Context, s logical.Storage) error {
	cfg, err := b.getConfig(ctx, s) // the cache is current under configMu
	if err != nil || cfg == nil {
		return err
	}
	cctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err != nil {
		return err
	}
	defer end()
	self, err := auth.Self(cctx)
	if err != nil {
		return nil
	}
	want := rootCustody(b.mountUUID)
	conflict, err := b.custodyHolder(ctx, s, self, "", want)
	switch {
	case err != nil:
		return err
	case conflict != nil:
		return rotationFailed(http.StatusConflict, "%s", conflict.withHint(fmt.Sprintf(
			"root rotation refused: the root token %s %s: rotating it would kill that custody's secret (two custodies of one token lock each other out); nothing was changed: write a root token of this mount's own to config (vault write <mount>/config token=...)",
			self.ID, conflict.holder)))
	}
	if _, err := claimCustody(cctx, auth, self, want); err != nil {
		b.Logger().Warn("could not mark the root token as this mount's (its "+metaCustody+" metadata): another mount of this engine cannot tell that it holds it", "token_id", self.ID, "error", err)
	}
	return nil
}
