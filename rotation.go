package tooken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// The rotation protocol: how the engine gives a Tooken token that it manages
// a new secret without ever losing custody of it. It rotates any managed
// token through a rotationTarget: the root (rotation_root.go), which
// authenticates its own rotation, and each static role's token
// (static_rotation.go), whose rotation the root authenticates.
//
// One rotation, under the target's lock (one at a time per target; across a
// cluster only the active node rotates: the paths that rotate are forwarded
// and the periodic function skips standbys and performance secondaries):
//
//  1. Finish any rotation of the target that a dead attempt left (its WAL
//     entry), or refuse.
//  2. PutWAL{idempotency key, token id, grace, start, target}.
//  3. POST /tokens/{id}/rotate {previous_secret_ttl: grace} with that key,
//     authenticated as the target says (the root by itself).
//  4. The target stores the new secret with the key, and switches to it.
//  5. DeleteWAL.
//
// A failure before 3 changes nothing. A definitive refusal at 3 deletes the
// WAL entry. Anything else (outcome unknown, answer lost, storage failure,
// process death) leaves the WAL entry, and the rollback rolls FORWARD: it
// replays step 3 with the same key and body, which the contract answers with
// the first answer, secret included, as long as the secret it is
// authenticated with is accepted (for the root, the old one is, for the
// grace; for a token the root rotates, the root's is, whatever happened to
// the token's own secret), checks that the replayed secret works, then does 4.

const (
	// defaultRotationGrace is the grace of a new config: enough for the
	// recovery below with the default request_timeout and max_retries, with
	// margin; every minute more keeps a rotated-away secret working longer.
	defaultRotationGrace = 5 * time.Minute
	// legacyRotationGrace is the grace of a config that an earlier version
	// stored without one: its default then. A write stores it explicitly.
	legacyRotationGrace = time.Hour
	maxRotationGrace    = 24 * time.Hour // the contract's previous_secret_ttl limit, 86400 s

	// vaultRollbackInterval is how often Vault calls a mount's rollback
	// (the periodic function, then the WAL rollback): one minute, fixed in
	// the server.
	vaultRollbackInterval = time.Minute
	// maxRotationCallBudget caps the rotate call of a rotation, or of its
	// replay, with all its attempts, whatever request_timeout and
	// max_retries are: the grace must cover it (minRotationGrace).
	maxRotationCallBudget = time.Minute
	// rotationCheckBudget is the rest of a rotation after the rotate call:
	// checking a replayed secret (GET /tokens/self, with the new secret,
	// which needs no grace) and storing it.
	rotationCheckBudget = 30 * time.Second
	// rotationRecoveryMargin covers the restart of a killed plugin and the
	// scheduling of the rollback.
	rotationRecoveryMargin = 30 * time.Second

	// upstreamIdempotencyWindow is how long Tooken replays an answer. After
	// it (plus margin) a pending rotation is given up.
	upstreamIdempotencyWindow = 24 * time.Hour
	rotationGiveUpAfter       = upstreamIdempotencyWindow + time.Hour

	// rotationRecoveryDelay is about how long the WAL rollback takes to
	// finish an interrupted rotation.
	rotationRecoveryDelay = 2*walRollbackMinAge + time.Minute
)

// minRotationGrace is the shortest grace with which a rotation cut short
// after Tooken rotated (the plugin killed, the answer lost) can always be
// finished while Vault comes back within the grace. The recovery replays
// the rotate call authenticated with the previous secret, which must still
// work then: the WAL entry becomes old enough for the rollback after
// walRollbackMinAge, Vault's next rollback comes within one interval (the
// periodic function finishes interrupted rotations first), the replay takes
// at most callBudget, plus a margin for the restart. A call that started
// earlier in the same process is over before the entry is old enough
// (callBudget <= walRollbackMinAge).
func minRotationGrace(callBudget time.Duration) time.Duration {
	return walRollbackMinAge + vaultRollbackInterval + callBudget + rotationRecoveryMargin
}

// rotationTarget is one managed Tooken token, as the protocol sees it. Its
// methods are called with the target's lock held.
type rotationTarget interface {
	// what names the token in logs and errors ("root": "root rotation failed").
	what() string
	// lock serialises the rotations of the token, their rollback, and
	// whatever else writes the entry its secret is stored in.
	lock() *sync.Mutex
	// walKind is the kind of its WAL entries; walTarget tells it from the
	// other tokens of that kind (rotationWAL.Target; "" for the root).
	walKind() string
	walTarget() string
	// load reads the token's current state; nil when it is no longer managed.
	load(ctx context.Context, s logical.Storage) (*managedToken, error)
	// notManaged is the error of a rotation asked for while load finds nil.
	notManaged() error
	// store stores tok's secret with the rotation key w.IdempotencyKey as the
	// token's current secret, over the state of st, and switches to it.
	store(ctx context.Context, s logical.Storage, st *managedToken, tok *tookenapi.Token, w rotationWAL) error
	// recordFailure keeps a failed rotation's message where a read shows it,
	// with the schedule's backoff. Best effort.
	recordFailure(ctx context.Context, s logical.Storage, msg string)
	// lockoutHint tells the operator how to give the engine a working secret
	// again, when a rotation can never be finished.
	lockoutHint() string
}

// managedToken is the current state of a managed token, as load finds it.
type managedToken struct {
	tokenID         string        // "" = unknown: only for a self-authenticated token, asked with GET /tokens/self
	lastRotationKey string        // the key of the last rotation stored
	grace           time.Duration // previous_secret_ttl of a rotation
	callBudget      time.Duration // of the rotate call (all its attempts, at most maxRotationCallBudget); grace >= minRotationGrace(callBudget)
	budget          time.Duration // of one whole rotation, however the caller hangs up
	// auth authenticates the rotate call and its replay (the root's
	// secret over the config's connection, for every target).
	auth *tookenapi.Client
	// selfAuthenticated: auth is the managed token itself (the root rotates
	// itself), so a new secret that could not be stored authenticates a
	// replay too. Otherwise auth is another token (the root rotating a
	// static role's token): a rotation never needs the managed token's own
	// secret, and auth being refused is the root's problem, not the end of
	// this rotation.
	selfAuthenticated bool
	// secretSetAt is when the secret the engine holds was stored (zero:
	// unknown); for a self-authenticated token it tells a secret written
	// after a rotation started from the one that rotation rotated away.
	secretSetAt time.Time
	// dest is the Tooken auth talks to: a new secret that could not be
	// stored is kept for it (rotation_pending.go), and sent nowhere else.
	dest secretDestination
	done func() // releases auth
}

// rotationWAL is the WAL entry of one rotation. No secret in it. The JSON of
// the rotate_root entries written by earlier versions reads the same.
type rotationWAL struct {
	IdempotencyKey string    `json:"idempotency_key"`
	TokenID        string    `json:"token_id"`
	GraceSeconds   int64     `json:"grace_seconds"`
	StartedAt      time.Time `json:"started_at"`
	Target         string    `json:"target,omitempty"`
}

func (w rotationWAL) grace() time.Duration { return time.Duration(w.GraceSeconds) * time.Second }

// rotatedAt is when rotation w's answer tok says the token was rotated; when
// it does not say, when w started.
func (w rotationWAL) rotatedAt(tok *tookenapi.Token) time.Time {
	if tok.RotatedAt != nil {
		return tok.RotatedAt.UTC()
	}
	return w.StartedAt
}

func decodeRotationWAL(kind string, data any) (rotationWAL, error) {
	var w rotationWAL
	raw, err := json.Marshal(data)
	if err == nil {
		err = json.Unmarshal(raw, &w)
	}
	if err == nil && (w.IdempotencyKey == "" || w.TokenID == "") {
		err = errors.New("missing idempotency_key or token_id")
	}
	if err != nil {
		return w, fmt.Errorf("decoding a %s WAL entry: %w", kind, err)
	}
	return w, nil
}

// rotationStatus is the status of a managed token's failed rotations, stored
// with the token's state (embedded: its JSON fields sit beside the others)
// and cleared by a success or a new secret.
type rotationStatus struct {
	RotationFailures    int        `json:"rotation_failures,omitempty"`
	LastRotationError   string     `json:"last_rotation_error,omitempty"`
	LastRotationErrorAt *time.Time `json:"last_rotation_error_at,omitempty"`
	RotationRetryAt     *time.Time `json:"rotation_retry_at,omitempty"` // the schedule's backoff
}

func (r *rotationStatus) clearFailures() {
	*r = rotationStatus{}
}

// recordFailure counts a failed rotation at now, with its backoff.
func (r *rotationStatus) recordFailure(msg string, now time.Time) {
	r.RotationFailures++
	r.LastRotationError = msg
	r.LastRotationErrorAt = &now
	retry := now.Add(rotationBackoff(r.RotationFailures))
	r.RotationRetryAt = &retry
}

// errRotationPending matches a rotation error after which the rotation may
// have happened upstream (outcome unknown, or the new secret not stored):
// its WAL entry stays, and the rollback finishes it.
var errRotationPending = errors.New("the rotation is pending")

// rotationError is a failed rotation, with the HTTP status its answer gets
// and, when Tooken gave one, the client error behind it (errors.Is sees
// through to tookenapi.ErrNotFound, ErrForbidden, ...).
type rotationError struct {
	status  int
	msg     string
	cause   error
	pending bool // see errRotationPending
}

func (e *rotationError) Error() string        { return e.msg }
func (e *rotationError) Unwrap() error        { return e.cause }
func (e *rotationError) Is(target error) bool { return target == errRotationPending && e.pending }

func rotationFailed(status int, format string, args ...any) error {
	return &rotationError{status: status, msg: fmt.Sprintf(format, args...)}
}

// rotationFailedBy is rotationFailed caused by the client error cause.
func rotationFailedBy(cause error, status int, format string, args ...any) error {
	return &rotationError{status: status, msg: fmt.Sprintf(format, args...), cause: cause}
}

// rotateLocked runs one rotation of t and returns the rotated token (with its
// secret). The caller holds t.lock().
func (b *tookenBackend) rotateLocked(ctx context.Context, s logical.Storage, t rotationTarget, trigger string) (*tookenapi.Token, error) {
	if err := b.finishPendingRotationsLocked(ctx, s, t); err != nil {
		return nil, err
	}
	st, err := t.load(ctx, s)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, t.notManaged()
	}
	defer st.done()
	// The caller hanging up must not cut a rotation between the upstream
	// change and the storage write.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), st.budget)
	defer cancel()
	tokenID, err := managedTokenID(ctx, t, st)
	if err != nil {
		return nil, err
	}
	w := rotationWAL{
		IdempotencyKey: tookenapi.NewIdempotencyKey(),
		TokenID:        tokenID,
		GraceSeconds:   int64(st.grace / time.Second),
		StartedAt:      b.now().UTC(),
		Target:         t.walTarget(),
	}
	tok, walID, err := b.rotateUpstream(ctx, s, t, st, w)
	if err != nil {
		return nil, err
	}
	if err := checkRotatedSecret(ctx, st.auth, tok); err != nil {
		return nil, b.uncheckedRotation(ctx, s, t, st, tok, w, err)
	}
	if err := t.store(ctx, s, st, tok, w); err != nil {
		b.keepUnstored(ctx, s, st, tok, w)
		return nil, &rotationError{status: http.StatusInternalServerError, pending: true, msg: fmt.Sprintf(
			"%s rotation incomplete: Tooken rotated the %s token %s but storing the new secret failed: %v; the previous secret keeps working until %v and the engine recovers the new one by replaying the rotation within about %s",
			t.what(), t.what(), tokenID, err, fmtTimeOrElse(tok.PreviousSecretExpiresAt, "the grace ends"), humanDuration(rotationRecoveryDelay))}
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		// Harmless: the rollback finds the key stored and stops.
		b.Logger().Warn("could not delete the WAL entry of a finished rotation", "token_id", tokenID, "error", err)
	}
	b.Logger().Info("rotated the "+t.what()+" token", "token_id", tokenID, "trigger", trigger,
		"previous_secret_expires_at", fmtTimeOrNil(tok.PreviousSecretExpiresAt))
	b.warnPreviousSecretOverstays(t, tok, w)
	return tok, nil
}

// warnPreviousSecretOverstays logs a warning when the rotate answer tok does
// not say that the previous secret stops working within the grace asked for
// (w): previous_secret_expires_at missing, or later than the grace after the
// answer's rotated_at (Tooken's clock, as the expiry; the engine's clock
// when the answer has none).
// The rotation is kept all the same: the new secret passed its check, and
// refusing it would leave the engine holding the previous secret, the very
// one that may live on; nothing the engine can do shortens it, short of
// revoking the token. The operator learns that the old secret may outlive
// the grace (rotate again, or revoke the token, if it leaked).
func (b *tookenBackend) warnPreviousSecretOverstays(t rotationTarget, tok *tookenapi.Token, w rotationWAL) {
	from := b.now()
	if tok.RotatedAt != nil && !tok.RotatedAt.IsZero() {
		from = *tok.RotatedAt
	}
	limit := from.Add(w.grace() + time.Second)
	pe := tok.PreviousSecretExpiresAt
	if pe != nil && !pe.IsZero() && !pe.After(limit) {
		return
	}
	b.Logger().Warn("Tooken's rotate answer does not say that the previous "+t.what()+" secret stops working within the grace asked for: it may keep working longer",
		"token_id", w.TokenID, "rotation_grace", w.grace().String(), "previous_secret_expires_at", fmtTimeOrNil(pe))
}

// checkRotatedSecret checks that the secret of a rotate answer works before
// it replaces the one the engine holds: GET /tokens/self authenticated by
// the new secret itself (any token may read itself), over the same
// connection, must answer the rotated token. A secret that Tooken does not
// accept (an answer altered on its way, a broken Tooken) would otherwise be
// stored over the previous secret, the only one that still works, and only
// for the grace.
func checkRotatedSecret(ctx context.Context, auth *tookenapi.Client, tok *tookenapi.Token) error {
	self, err := auth.WithSecret(tok.Secret).Self(ctx)
	if err == nil && self.ID != tok.ID {
		err = errAnotherTokensSecret
	}
	if err != nil {
		return fmt.Errorf("checking the new secret (GET /tokens/self with it): %w", err)
	}
	return nil
}

// errAnotherTokensSecret: GET /tokens/self with a rotated secret answers
// another token than the one rotated.
var errAnotherTokensSecret = errors.New("the new secret belongs to another token")

// uncheckedRotation is the error of a rotation whose new secret failed its
// check (checkRotatedSecret): the engine keeps the previous secret and the
// WAL entry, and the rollback replays the rotation (Tooken answers a replay
// with the first answer, secret included), storing its secret once it
// passes the check. A secret that may be genuine (the check itself failed:
// anything but Tooken refusing it, 401, or naming another token) is kept
// for a replay after the previous secret died (keepUnstored).
func (b *tookenBackend) uncheckedRotation(ctx context.Context, s logical.Storage, t rotationTarget, st *managedToken, tok *tookenapi.Token, w rotationWAL, err error) error {
	if !errors.Is(err, tookenapi.ErrUnauthorized) && !errors.Is(err, errAnotherTokensSecret) {
		b.keepUnstored(ctx, s, st, tok, w)
	}
	return &rotationError{status: http.StatusBadGateway, pending: true, cause: err, msg: fmt.Sprintf(
		"%s rotation unconfirmed: Tooken rotated the %s token %s, but %v; the engine keeps the previous secret, which works until %s, and replays the rotation (same Idempotency-Key) within about %s to recover a new secret that works; if that fails: %s",
		t.what(), t.what(), w.TokenID, err, fmtTimeOrElse(tok.PreviousSecretExpiresAt, w.StartedAt.Add(w.grace()).Format(time.RFC3339)),
		rotationRecoveryDelay, t.lockoutHint())}
}

// managedTokenID is the managed token's id: from its state, or from GET
// /tokens/self when it authenticates as itself and its id is not stored (a
// root stored without verification).
func managedTokenID(ctx context.Context, t rotationTarget, st *managedToken) (string, error) {
	if st.tokenID != "" || !st.selfAuthenticated {
		return st.tokenID, nil
	}
	self, err := st.auth.Self(ctx)
	if err != nil {
		return "", rotationFailed(http.StatusBadGateway, "%s rotation failed: reading the %s token (GET /tokens/self): %s; nothing was changed", t.what(), t.what(), upstreamProblem(err))
	}
	return self.ID, nil
}

// rotateUpstream writes the WAL entry of w, then rotates the token upstream
// with w's key and grace. It returns the new token (with its secret) and the
// WAL entry's id. When Tooken refuses, nothing changed: the entry is
// deleted. When the outcome is unknown the entry stays, for the rollback.
func (b *tookenBackend) rotateUpstream(ctx context.Context, s logical.Storage, t rotationTarget, st *managedToken, w rotationWAL) (*tookenapi.Token, string, error) {
	walID, err := framework.PutWAL(ctx, s, t.walKind(), w)
	if err != nil {
		return nil, "", fmt.Errorf("%s rotation failed: writing its WAL entry: %w; nothing was changed", t.what(), err)
	}
	tok, err := rotateCall(ctx, st.auth, w, st.callBudget)
	if errors.Is(err, errBadRotateAnswer) {
		err = tookenapi.OutcomeUnknown(err)
	}
	switch {
	case err == nil:
		return tok, walID, nil
	case errors.Is(err, tookenapi.ErrOutcomeUnknown):
		return nil, "", &rotationError{status: http.StatusBadGateway, cause: err, pending: true, msg: fmt.Sprintf(
			"%s rotation outcome unknown: %s; the current %s secret keeps working at least until %s, and the engine finishes the rotation by replaying the same request (same Idempotency-Key) within about %s",
			t.what(), upstreamOutcome(err), t.what(), w.StartedAt.Add(w.grace()).Format(time.RFC3339), humanDuration(rotationRecoveryDelay))}
	}
	// Tooken refused: nothing changed upstream.
	if derr := framework.DeleteWAL(ctx, s, walID); derr != nil {
		b.Logger().Warn("could not delete the WAL entry of a refused rotation (harmless: its rollback replays the refusal)", "token_id", w.TokenID, "error", derr)
	}
	return nil, "", rotationFailedBy(err, http.StatusBadGateway, "%s rotation failed: %s", t.what(), refusedRotation(t.what(), err))
}

// finishPendingRotationsLocked rolls forward every WAL entry of t (left by a
// dead or failed attempt: none runs, we hold the lock). It fails when one
// cannot be finished yet; a new rotation must not start then.
func (b *tookenBackend) finishPendingRotationsLocked(ctx context.Context, s logical.Storage, t rotationTarget) error {
	pending, err := pendingRotations(ctx, s, t, 0)
	if err != nil {
		return err
	}
	for _, p := range pending {
		if err := b.rollForwardLocked(ctx, s, t, p.w); err != nil {
			return rotationFailedBy(err, http.StatusConflict, "a previous %s rotation (started %s) is not finished yet: %v; retry later (the current %s secret is unchanged)", t.what(), p.w.StartedAt.Format(time.RFC3339), err, t.what())
		}
		if err := framework.DeleteWAL(ctx, s, p.id); err != nil {
			return fmt.Errorf("deleting a finished rotation's WAL entry: %w", err)
		}
	}
	return nil
}

// finishInterruptedRotations is the periodic function's first step: it
// rolls forward the WAL entries of t that Vault's WAL rollback would take
// (at least walRollbackMinAge old). Vault runs the WAL rollback after the
// periodic function, in the same request; done here first, the recovery of
// an interrupted rotation does not wait behind the rest of the periodic work,
// so that minRotationGrace holds. Failures are logged: the WAL rollback and
// the next run try again.
func (b *tookenBackend) finishInterruptedRotations(ctx context.Context, s logical.Storage, t rotationTarget) {
	if !t.lock().TryLock() {
		return // a rotation runs: it finishes what it finds first
	}
	defer t.lock().Unlock()
	pending, err := pendingRotations(ctx, s, t, walRollbackMinAge)
	if err != nil {
		b.Logger().Warn("cannot list the WAL entries of interrupted rotations", "error", err)
		return
	}
	for _, p := range pending {
		if err := b.rollForwardLocked(ctx, s, t, p.w); err != nil {
			b.Logger().Warn("an interrupted "+t.what()+" rotation cannot be finished yet; retrying at the next rollback", "token_id", p.w.TokenID, "error", err)
			continue
		}
		if err := framework.DeleteWAL(ctx, s, p.id); err != nil {
			b.Logger().Warn("could not delete a finished rotation's WAL entry (harmless: its rollback finds the key stored)", "error", err)
		}
	}
}

// pendingRotation is a WAL entry of an unfinished rotation.
type pendingRotation struct {
	id string
	w  rotationWAL
}

// pendingRotations lists the rotation WAL entries of t at least minAge old
// (by their creation time, as Vault's WAL rollback measures it).
func pendingRotations(ctx context.Context, s logical.Storage, t rotationTarget, minAge time.Duration) ([]pendingRotation, error) {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("listing WAL entries: %w", err)
	}
	var out []pendingRotation
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return nil, fmt.Errorf("reading WAL entry: %w", err)
		}
		if entry == nil || entry.Kind != t.walKind() || time.Since(time.Unix(entry.CreatedAt, 0)) < minAge {
			continue
		}
		w, err := decodeRotationWAL(entry.Kind, entry.Data)
		if err != nil {
			return nil, err
		}
		if w.Target == t.walTarget() {
			out = append(out, pendingRotation{id: id, w: w})
		}
	}
	return out, nil
}

// rollbackRotation is the WALRollback of a rotation entry of t. nil lets the
// framework delete the entry; an error keeps it for the next rollback.
func (b *tookenBackend) rollbackRotation(ctx context.Context, req *logical.Request, t rotationTarget, w rotationWAL) error {
	if !b.WriteSafeReplicationState() {
		return errors.New("not the active node of the primary: the rotation is finished there")
	}
	if !t.lock().TryLock() {
		return fmt.Errorf("a %s rotation is running: retry at the next rollback", t.what())
	}
	defer t.lock().Unlock()
	return b.rollForwardLocked(ctx, req.Storage, t, w)
}

// rollForwardLocked finishes the rotation of w: it replays it with the same
// key and body and stores the secret of the answer. nil means the entry is
// settled (finished, moot, or given up with a clear error), and the secret
// kept for it is deleted; an error means "not yet" (Tooken unreachable, the
// original still in flight, the kept secret not deleted).
func (b *tookenBackend) rollForwardLocked(ctx context.Context, s logical.Storage, t rotationTarget, w rotationWAL) error {
	if err := b.rollForward(ctx, s, t, w); err != nil {
		return err
	}
	return b.forgetUnstored(ctx, s, w.IdempotencyKey)
}

// rollForward is rollForwardLocked but for the kept secret.
func (b *tookenBackend) rollForward(ctx context.Context, s logical.Storage, t rotationTarget, w rotationWAL) error {
	st, err := t.load(ctx, s)
	if err != nil {
		return err
	}
	log := b.Logger().With("token_id", w.TokenID, "started_at", w.StartedAt.Format(time.RFC3339))
	switch {
	case st == nil:
		log.Info(t.what() + " rotation WAL entry dropped: the token is no longer managed (its config or role was deleted)")
		return nil
	case st.lastRotationKey == w.IdempotencyKey:
		st.done()
		return nil // the rotation finished; only the WAL delete was lost
	case st.tokenID != "" && st.tokenID != w.TokenID:
		st.done()
		log.Info(t.what() + " rotation WAL entry dropped: another token is managed now")
		return nil
	case st.selfAuthenticated && st.secretSetAt.After(w.StartedAt):
		// The operator wrote a secret since the rotation started: of
		// another token, or of the same one rotated by hand since (the
		// replay, authenticated by it, would be answered the rotated secret,
		// alive only for the grace of the operator's own rotation). The
		// engine never brings back a secret the operator replaced.
		st.done()
		log.Info(t.what() + " rotation WAL entry dropped: the config was written after the rotation started")
		return nil
	}
	defer st.done()
	if b.now().Sub(w.StartedAt) > rotationGiveUpAfter {
		b.rotationLockout(ctx, s, t, log, fmt.Sprintf("%s rotation started %s could not be confirmed for more than %s", t.what(), w.StartedAt.Format(time.RFC3339), humanDuration(rotationGiveUpAfter)))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), st.budget)
	defer cancel()
	switch replaced, err := secretReplaced(ctx, t, st, w); {
	case err != nil:
		return err
	case replaced:
		log.Info(t.what() + " rotation WAL entry dropped: the stored root token is another token than the rotated one")
		return nil
	}
	return b.replayAndStore(ctx, s, t, st, w, log)
}

// secretReplaced tells, for a self-authenticated token whose id is not
// stored (a root written with verify_connection=false) and whose secret is
// not known to be written after w started (rollForward drops w then), whether
// the secret stored now is another token's than the one w rotated: a config
// of an earlier version does not say when its secret was written. Then w is
// moot: replaying it authenticated by that other token would not be a
// replay to Tooken (another caller) but a new rotation of w's token, whose
// secret would then be stored over the one the operator wrote. GET
// /tokens/self tells. When Tooken refuses the stored secret the replay goes
// on, and may recover the secret w rotated to. An error means "not yet"
// (Tooken unreachable).
func secretReplaced(ctx context.Context, t rotationTarget, st *managedToken, w rotationWAL) (bool, error) {
	if st.tokenID != "" || !st.selfAuthenticated {
		return false, nil
	}
	self, err := st.auth.Self(ctx)
	switch {
	case err == nil:
		return self.ID != w.TokenID, nil
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return false, nil
	}
	return false, fmt.Errorf("reading the %s token (GET /tokens/self) to tell whether it is the one the rotation rotated: %w", t.what(), err)
}

// replayAndStore replays the rotation of w with each secret that may
// authenticate it (the stored one first, then, for a self-authenticated
// token, the new one kept when it could not be stored: keepUnstored) and
// stores the first replayed secret that works. When none can be replayed it
// drops the entry if the stored secret still works, and records a lockout
// otherwise.
func (b *tookenBackend) replayAndStore(ctx context.Context, s logical.Storage, t rotationTarget, st *managedToken, w rotationWAL, log hclog.Logger) error {
	candidates := []*tookenapi.Client{st.auth}
	kept, err := b.unstoredCandidate(ctx, s, st, w)
	if err != nil {
		return err
	}
	if kept != "" && !st.auth.UsesSecret(kept) {
		candidates = append(candidates, st.auth.WithSecret(kept))
	}
	storedAlive, replayedRefused := false, false
	var lastErr error
	for i, auth := range candidates {
		res, err := replayRotation(ctx, auth, w, st.callBudget)
		if res.unchecked != nil {
			b.keepUnstored(ctx, s, st, res.unchecked, w)
		}
		if err != nil {
			return fmt.Errorf("replaying the %s rotation: %w", t.what(), err)
		}
		if res.tok != nil {
			return b.storeReplayed(ctx, s, t, st, res.tok, w, log)
		}
		lastErr = res.err
		storedAlive = storedAlive || (i == 0 && res.accepted)
		replayedRefused = replayedRefused || res.replayed
	}
	switch {
	case storedAlive && replayedRefused && st.selfAuthenticated:
		// Tooken replays the rotation (so it happened) with a secret that
		// it refuses, and the stored secret, which it accepts, predates the
		// rotation (rollForward drops the entry of a secret written since):
		// that is the previous secret, alive for the grace only.
		// Keep replaying until then (an answer altered on its way may come
		// intact); once the grace ends Tooken refuses the stored secret and
		// the entry ends as a lockout, below.
		return fmt.Errorf("replaying the %s rotation: %w; the stored secret is the one it rotated away, which works until the grace ends (about %s)",
			t.what(), lastErr, w.StartedAt.Add(w.grace()).Format(time.RFC3339))
	case storedAlive:
		// Tooken answered the replay, authenticated, with a refusal: the
		// rotation never happened, or its secret is no longer the current one.
		log.Warn(t.what()+" rotation WAL entry dropped: Tooken refuses its replay, authenticated by a token it accepts", "error", lastErr)
		t.recordFailure(ctx, s, fmt.Sprintf("%s rotation started %s could not be finished: %v", t.what(), w.StartedAt.Format(time.RFC3339), lastErr))
		return nil
	case !st.selfAuthenticated:
		// The root, which authenticates the replay, is refused: wait until
		// it works again (a root rotation keeps its id, which the replay
		// is keyed by) or the entry is given up.
		return fmt.Errorf("replaying the %s rotation: the root secret is refused: %w", t.what(), lastErr)
	}
	b.rotationLockout(ctx, s, t, log, fmt.Sprintf("%s rotation started %s could not be finished: Tooken rejects the stored root secret and the replay (%v)", t.what(), w.StartedAt.Format(time.RFC3339), lastErr))
	return nil
}

// storeReplayed stores tok, the checked secret of a replay of w, as t's
// current secret; when that fails it keeps tok's secret for the next
// rollback (keepUnstored).
func (b *tookenBackend) storeReplayed(ctx context.Context, s logical.Storage, t rotationTarget, st *managedToken, tok *tookenapi.Token, w rotationWAL, log hclog.Logger) error {
	if err := t.store(ctx, s, st, tok, w); err != nil {
		b.keepUnstored(ctx, s, st, tok, w)
		return fmt.Errorf("storing the recovered %s secret: %w", t.what(), err)
	}
	log.Info("finished an interrupted "+t.what()+" rotation", "previous_secret_expires_at", fmtTimeOrNil(tok.PreviousSecretExpiresAt))
	b.warnPreviousSecretOverstays(t, tok, w)
	return nil
}

// replayResult is what replaying a rotation with one secret gave.
type replayResult struct {
	tok      *tookenapi.Token // the replayed answer, its secret checked to work; nil otherwise
	accepted bool             // Tooken accepted the secret the replay was made with
	replayed bool             // Tooken answered the rotation, but refuses the answer's secret
	err      error            // why tok is nil
	// unchecked is a replayed answer whose check failed without Tooken's
	// verdict on its secret (5xx, timeout): the secret may be genuine.
	unchecked *tookenapi.Token
}

// errBadRotateAnswer: Tooken's answer to a rotate call has no secret, or
// is of another token.
var errBadRotateAnswer = errors.New("Tooken's answer has no secret or another token id")

// rotateCall is POST /tokens/{id}/rotate of w (a rotation or its replay),
// all its attempts within callBudget (0: maxRotationCallBudget). An answer
// without a secret or of another token is errBadRotateAnswer.
func rotateCall(ctx context.Context, auth *tookenapi.Client, w rotationWAL, callBudget time.Duration) (*tookenapi.Token, error) {
	if callBudget <= 0 || callBudget > maxRotationCallBudget {
		callBudget = maxRotationCallBudget
	}
	ctx, cancel := context.WithTimeout(ctx, callBudget)
	defer cancel()
	tok, err := auth.RotateToken(ctx, w.TokenID, w.grace(), w.IdempotencyKey)
	if err == nil && (tok.Secret == "" || tok.ID != w.TokenID) {
		return nil, errBadRotateAnswer
	}
	return tok, err
}

// replayRotation replays the rotation of w authenticated by auth, and checks
// that the replayed secret works. An error means "not yet" (Tooken
// unreachable, rate limiting, the original still in flight).
func replayRotation(ctx context.Context, auth *tookenapi.Client, w rotationWAL, callBudget time.Duration) (replayResult, error) {
	tok, err := rotateCall(ctx, auth, w, callBudget)
	switch {
	case err == nil:
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return replayResult{err: err}, nil // this secret is dead
	case notYet(err):
		return replayResult{}, err
	default:
		// A definitive answer to an authenticated call: this secret works.
		return replayResult{accepted: true, err: err}, nil
	}

	// The replayed secret may be stale (rotated by hand since) or altered
	// on its way: check it before it replaces anything.
	err = checkRotatedSecret(ctx, auth, tok)
	switch {
	case err == nil:
		return replayResult{tok: tok, accepted: true}, nil
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return replayResult{accepted: true, replayed: true, err: errors.New("Tooken does not accept the secret of the replayed answer (the token was rotated since, or the answer was altered on its way)")}, nil
	case errors.Is(err, errAnotherTokensSecret):
		return replayResult{}, fmt.Errorf("replayed: %w", err)
	default:
		return replayResult{unchecked: tok}, fmt.Errorf("replayed: %w", err)
	}
}

// notYet tells whether a replay error may go away by itself: Tooken
// unreachable or limiting, the original still in flight, time out, or a 404
// from a base URL not proven a Tooken API (which says nothing of the token).
func notYet(err error) bool {
	return errors.Is(err, tookenapi.ErrOutcomeUnknown) || errors.Is(err, tookenapi.ErrRateLimited) || errors.Is(err, tookenapi.ErrConflict) ||
		errors.Is(err, tookenapi.ErrNotProven) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || tookenapi.IsUnreachable(err)
}

// rotationLockout records a rotation that can never finish, loudly, once.
func (b *tookenBackend) rotationLockout(ctx context.Context, s logical.Storage, t rotationTarget, log hclog.Logger, what string) {
	msg := what + "; " + t.lockoutHint()
	log.Error(msg)
	t.recordFailure(ctx, s, msg)
}

// fmtTimeOrElse is t in RFC 3339, or otherwise when t is unset.
func fmtTimeOrElse(t *time.Time, otherwise string) string {
	if t == nil || t.IsZero() {
		return otherwise
	}
	return t.UTC().Format(time.RFC3339)
}
