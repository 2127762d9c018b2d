package tooken

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// A static role's token as the rotation protocol's second target: the root
// authenticates its rotation (rotating another token needs tokens:write and
// every scope of that token), so a rotation, and the recovery of one that
// was interrupted, never needs the token's own secret. Its secret and
// rotation state live in the role's entry; the role's lock serialises its
// rotations with its writes, its checks and the rollback of its WAL entries.

// errStaticRoleUnknown: the static role does not exist (any more).
var errStaticRoleUnknown = errors.New("unknown static role")

// staticDestinationError: the config points to another Tooken (url, or CA
// that authenticates it) than the one the role was written for. The role's
// secret is never sent there.
type staticDestinationError struct {
	name         string
	role, config secretDestination
}

func (e *staticDestinationError) Error() string {
	now := "the config's url is now " + e.config.URL
	if e.config.URL == e.role.URL {
		now = "the config's ca_cert changed since"
	}
	return fmt.Sprintf("static role %q was written for the Tooken at %s, but %s: the engine does not send the role's secret there, and neither rotates nor checks its token until the role is written again (vault write <mount>/static-roles/%s)",
		e.name, e.role.URL, now, e.name)
}

// staticTarget is one static role's token as a rotationTarget, for one
// rotation, check or rollback. It holds a reference to the role's lock
// until release.
type staticTarget struct {
	b    *tookenBackend
	name string
	lk   *roleLock
	// role is the role as load read it, then as store stored it.
	role *staticRoleEntry
	// periodFrom is what the schedule counts from after this rotation;
	// zero: when the rotation started.
	periodFrom time.Time
	// why, when set, is why the rotation is made (an out-of-band change):
	// a successful one records it as last_rotation_error instead of
	// clearing that, a failed one says it before its error.
	why string
}

func (b *tookenBackend) staticTarget(name string) *staticTarget {
	return &staticTarget{b: b, name: name, lk: b.static.locks.acquire(name)}
}

func (t *staticTarget) release() { t.b.static.locks.release(t.name, t.lk) }

func (t *staticTarget) what() string      { return fmt.Sprintf("static role %q", t.name) }
func (t *staticTarget) lock() *sync.Mutex { return &t.lk.Mutex }
func (t *staticTarget) walKind() string   { return walKindRotateStatic }
func (t *staticTarget) walTarget() string { return t.name }
func (t *staticTarget) notManaged() error {
	return fmt.Errorf("name: %w %q", errStaticRoleUnknown, t.name)
}

func (t *staticTarget) lockoutHint() string {
	return fmt.Sprintf("a new rotation gives the token a secret that the engine holds again: write rotate-role/%s (the root authenticates it: the lost secret is not needed)", t.name)
}

// read is the role and the config, from storage (the config from its cache).
// The role is nil when it does not exist.
func (t *staticTarget) read(ctx context.Context, s logical.Storage) (*staticRoleEntry, *tookenConfig, error) {
	role, err := readStaticRole(ctx, s, t.name)
	if err != nil || role == nil {
		return nil, nil, err
	}
	cfg, err := t.b.getConfig(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	return role, cfg, nil
}

// load reads the role and authenticates its rotation with the root, over
// the config's connection, as long as that still is the Tooken the role was
// written for.
func (t *staticTarget) load(ctx context.Context, s logical.Storage) (*managedToken, error) {
	role, cfg, err := t.read(ctx, s)
	switch {
	case err != nil || role == nil:
		return nil, err
	case cfg == nil:
		return nil, errNotConfigured
	case !role.Dest.sameAs(cfg.destination()):
		return nil, &staticDestinationError{name: t.name, role: role.Dest, config: cfg.destination()}
	}
	auth, done, err := t.b.connect(ctx, s, cfg)
	if err != nil {
		return nil, err
	}
	t.role = role
	return &managedToken{
		tokenID:         role.TokenID,
		lastRotationKey: role.LastRotationKey,
		grace:           role.RotationGrace,
		callBudget:      cfg.rotationCallBudget(),
		budget:          cfg.rotationCallBudget() + rotationCheckBudget,
		auth:            auth,
		done:            done,
	}, nil
}

// store stores the rotated token's secret and what Tooken said of the token
// in the role, over the role as load read it.
func (t *staticTarget) store(ctx context.Context, s logical.Storage, _ *managedToken, tok *tookenapi.Token, w rotationWAL) error {
	r := *t.role
	now := t.b.now().UTC()
	r.Secret = tok.Secret
	r.learn(tok)
	rotatedAt := w.rotatedAt(tok)
	r.LastRotated = &rotatedAt
	r.LastRotationKey = w.IdempotencyKey
	r.PreviousSecretExpiresAt = tok.PreviousSecretExpiresAt
	r.PeriodFrom = w.StartedAt
	if !t.periodFrom.IsZero() {
		r.PeriodFrom = t.periodFrom
	}
	r.clearFailures()
	if t.why != "" {
		r.LastRotationError = t.why + "; Vault rotated it again at " + now.Format(time.RFC3339) + ", so that the secret it serves works"
		r.LastRotationErrorAt = &now
	}
	if err := putStaticRole(ctx, s, t.name, &r); err != nil {
		return err
	}
	t.role = &r
	// Also after a rollback finished the rotation (an import's included).
	t.b.static.changed(t.name, &r, now)
	return nil
}

// learn records what Tooken says of the token: name, scopes, expiry and
// rotated_at (the token exists, so it is not gone).
func (r *staticRoleEntry) learn(tok *tookenapi.Token) {
	r.Name = tok.Name
	if tok.Scopes != nil {
		r.Scopes = tok.Scopes
	}
	r.ExpiresAt = tok.ExpiresAt
	r.UpstreamRotatedAt = tok.RotatedAt
	r.GoneAt = nil
}

// recordFailure stores the failure status and the schedule's backoff in the
// role (best effort).
func (t *staticTarget) recordFailure(ctx context.Context, s logical.Storage, msg string) {
	r, err := readStaticRole(ctx, s, t.name)
	if err != nil || r == nil {
		return
	}
	r.recordFailure(msg, t.b.now().UTC())
	if err := putStaticRole(ctx, s, t.name, r); err != nil {
		t.b.Logger().Warn("could not store a static role's rotation failure status", "role", t.name, "error", err)
		return
	}
	t.role = r
	t.b.static.changed(t.name, r, t.b.now()) // the backoff moves the next rotation
}

// rotateStatic rotates the role's token now; the caller holds t's lock and
// has checked that the role holds its token (a token in another custody is
// never rotated: its schedule and checks stop, rotate-role refuses it). A
// failure is logged and recorded in the role; Tooken answering 404 (the
// token was revoked or expired) marks the role's token gone.
func (b *tookenBackend) rotateStatic(ctx context.Context, s logical.Storage, t *staticTarget, trigger string) error {
	_, err := b.rotateLocked(ctx, s, t, trigger)
	switch {
	case err == nil:
	case staticUnmanaged(err):
		// Nothing to record: the role's read and static-creds say it.
	case errors.Is(err, tookenapi.ErrNotFound):
		b.markStaticGone(ctx, s, t)
	default:
		b.Logger().Error(trigger+" static role rotation failed", "role", t.name, "error", err)
		msg := err.Error()
		if t.why != "" {
			msg = t.why + "; rotating it again failed: " + msg
		}
		t.recordFailure(ctx, s, msg)
	}
	return err
}

// staticUnmanaged tells whether err refused a rotation because the engine
// does not manage the role's token now: the role unknown, no config, or the
// config pointing to another Tooken than the role's.
func staticUnmanaged(err error) bool {
	var changed *staticDestinationError
	return errors.Is(err, errStaticRoleUnknown) || errors.Is(err, errNotConfigured) || errors.As(err, &changed)
}

// rotateStaticIfDue is a scheduled rotation: it rotates the role's token
// when storage confirms that it is due. The caller holds t's lock. An error
// means storage could not be read.
func (b *tookenBackend) rotateStaticIfDue(ctx context.Context, s logical.Storage, t *staticTarget) error {
	role, cfg, err := t.read(ctx, s)
	if err != nil || role == nil || cfg == nil || !role.managed(cfg.destination()) {
		return err
	}
	now := b.now().UTC()
	due := role.nextRotation()
	if due.After(now) {
		return nil
	}
	t.periodFrom = role.schedule().anchor(due, now)
	_ = b.rotateStatic(ctx, s, t, "scheduled")
	return nil
}

// checkStatic reads the role's token upstream, as the root, and acts on what
// changed outside Vault: a token rotated there is rotated again (the secret
// the engine holds no longer works); a token revoked or expired marks the
// role gone; a new name, scopes or expiry is recorded. A check that fails
// (Tooken unreachable, the root refused) changes nothing: the next one
// comes one interval later. The caller holds t's lock. An error means
// storage could not be read.
func (b *tookenBackend) checkStatic(ctx context.Context, s logical.Storage, t *staticTarget) error {
	role, cfg, err := t.read(ctx, s)
	if err != nil || role == nil || cfg == nil || !role.managed(cfg.destination()) {
		return err
	}
	auth, done, err := b.connect(ctx, s, cfg)
	if err != nil {
		return err
	}
	defer done()
	cctx, cancel := context.WithTimeout(ctx, defaultUpstreamCallTimeout)
	tok, err := auth.GetToken(cctx, role.TokenID)
	cancel()
	switch {
	case errors.Is(err, tookenapi.ErrNotFound):
		b.markStaticGone(ctx, s, t)
	case err != nil:
		b.Logger().Debug("static role: checking its token upstream failed; the next check comes later", "role", t.name, "token_id", role.TokenID, "error", err)
	case b.staticCustodyLost(ctx, s, t, cfg, auth, tok):
	case !sameTime(tok.RotatedAt, role.UpstreamRotatedAt):
		b.repairStatic(ctx, s, t, tok)
	default:
		return b.learnStatic(ctx, s, t.name, role, tok)
	}
	return nil
}

// staticCustodyLost checks, at a check, that the role's token is still in
// the role's custody (custody_mark.go). Another custody's mark (a mount that
// marked it since, or a race of two mounts' imports: the last mark wins)
// ends the role's management of the token, and it reports true. A token
// without the role's mark (imported by an earlier version) gets it, under
// the background rate limit; a failure is logged and retried at the next
// check.
func (b *tookenBackend) staticCustodyLost(ctx context.Context, s logical.Storage, t *staticTarget, cfg *tookenConfig, auth *tookenapi.Client, tok *tookenapi.Token) bool {
	want := staticCustody(b.mountUUID, t.name)
	conflict, err := b.custodyHolder(ctx, s, tok, cfg.TokenID, want)
	switch {
	case err != nil:
		b.Logger().Warn("static role: checking its token's custody failed; the next check comes later", "role", t.name, "error", err)
		return false
	case conflict != nil:
		b.markStaticLost(ctx, s, t, conflict)
		return true
	case tok.Metadata[metaCustody] == want.value() || b.static.limiter.Wait(ctx) != nil:
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, defaultUpstreamCallTimeout)
	defer cancel()
	if _, err := claimCustody(cctx, auth, tok, want); err != nil {
		b.Logger().Warn("static role: marking its token as in the role's custody failed; the next check tries again", "role", t.name, "token_id", tok.ID, "error", err)
	}
	return false
}

// markStaticLost records that another custody holds the role's token: the
// engine stops rotating and checking it and static-creds answers an error,
// until the role is deleted, or written again once that custody let go.
func (b *tookenBackend) markStaticLost(ctx context.Context, s logical.Storage, t *staticTarget, conflict *custodyConflict) {
	r, err := readStaticRole(ctx, s, t.name)
	if err != nil || r == nil || r.CustodyLostAt != nil {
		return
	}
	now := b.now().UTC()
	r.CustodyLostAt = &now
	msg := conflict.withHint(fmt.Sprintf("token %s %s since %s: the engine stopped rotating and checking it, and static-creds answers an error (two custodies of one token lock each other out); delete this static role, or write it again once that custody has let the token go",
		r.TokenID, conflict.holder, now.Format(time.RFC3339)))
	if b.storeStaticStopped(ctx, s, t, r, now, msg, "is in another custody") {
		b.Logger().Error("static role: its token is in another custody now; the engine stopped managing it", "role", t.name, "token_id", r.TokenID)
	}
}

// storeStaticStopped stores role r, whose management the caller ended at now
// (its GoneAt or CustodyLostAt set) for the reason msg, and takes it out of
// the schedule. A failure to store is logged (the token "is ..." what) and
// reported false.
func (b *tookenBackend) storeStaticStopped(ctx context.Context, s logical.Storage, t *staticTarget, r *staticRoleEntry, now time.Time, msg, what string) bool {
	r.LastRotationError = msg
	r.LastRotationErrorAt = &now
	r.RotationRetryAt = nil
	if err := putStaticRole(ctx, s, t.name, r); err != nil {
		b.Logger().Warn("could not store that a static role's token "+what, "role", t.name, "error", err)
		return false
	}
	b.static.changed(t.name, r, now) // out of the schedule
	return true
}

// errStaticCustodyLost matches the error of a rotation refused because
// another custody holds the role's token.
var errStaticCustodyLost = errors.New("another custody holds the token")

// staticCustodyLostError is the error of rotating role r (nil: unknown)
// while another custody holds its token; nil when none does.
func staticCustodyLostError(name string, r *staticRoleEntry) error {
	if r == nil || r.CustodyLostAt == nil {
		return nil
	}
	return fmt.Errorf("static role %q: %w: %s", name, errStaticCustodyLost, r.LastRotationError)
}

// learnStatic stores what Tooken says of the role's token when it differs
// from what the role holds.
func (b *tookenBackend) learnStatic(ctx context.Context, s logical.Storage, name string, role *staticRoleEntry, tok *tookenapi.Token) error {
	r := *role
	r.learn(tok)
	if r.Name == role.Name && slices.Equal(r.Scopes, role.Scopes) && sameTime(r.ExpiresAt, role.ExpiresAt) {
		return nil
	}
	return putStaticRole(ctx, s, name, &r)
}

// repairStatic handles a token whose rotated_at upstream is not the one the
// role recorded. When an interrupted rotation of the engine's own explains
// it, finishing that rotation is all there is to do; otherwise the token was
// rotated outside Vault and the secret the engine holds may be dead: it
// rotates the token again (the root authenticates it) and records the
// out-of-band change in last_rotation_error.
func (b *tookenBackend) repairStatic(ctx context.Context, s logical.Storage, t *staticTarget, tok *tookenapi.Token) {
	if err := b.finishPendingRotationsLocked(ctx, s, t); err != nil {
		b.Logger().Warn("static role: finishing an interrupted rotation failed", "role", t.name, "error", err)
		return
	}
	role, err := readStaticRole(ctx, s, t.name)
	if err != nil || role == nil || sameTime(tok.RotatedAt, role.UpstreamRotatedAt) {
		return
	}
	t.why = fmt.Sprintf("out-of-band change: token %s was rotated outside Vault (rotated_at %v upstream, %v recorded by Vault)",
		role.TokenID, fmtTimeOrElse(tok.RotatedAt, "unset"), fmtTimeOrElse(role.UpstreamRotatedAt, "unset"))
	b.Logger().Warn("static role: "+t.why+"; rotating it again", "role", t.name, "token_id", role.TokenID)
	t.periodFrom = b.now().UTC()
	_ = b.rotateStatic(ctx, s, t, "out-of-band repair")
}

// markStaticGone records that Tooken no longer knows the role's token
// (revoked, or expired): the engine stops rotating and checking it and
// static-creds answers an error, until the role is deleted. Nothing retries.
func (b *tookenBackend) markStaticGone(ctx context.Context, s logical.Storage, t *staticTarget) {
	r, err := readStaticRole(ctx, s, t.name)
	if err != nil || r == nil || r.GoneAt != nil {
		return
	}
	now := b.now().UTC()
	r.GoneAt = &now
	if b.storeStaticStopped(ctx, s, t, r, now, staticGoneMessage(r.TokenID), "is gone") {
		b.Logger().Warn("static role: its token no longer exists upstream (revoked or expired); the engine stopped managing it", "role", t.name, "token_id", r.TokenID)
	}
}

func staticGoneMessage(tokenID string) string {
	return fmt.Sprintf("token %s no longer exists upstream (Tooken answers 404: it was revoked or expired): the engine stopped rotating and checking it and static-creds answers an error; delete this static role (and import a new token)", tokenID)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}
