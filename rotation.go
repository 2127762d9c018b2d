package tooken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Root credential rotation: the protocol and the schedule.
//
// One rotation, under rootRotation.mu (one at a time per mount; across a
// cluster only the active node rotates: rotate-root is forwarded and the
// periodic function skips standbys and performance secondaries):
//
//  1. Finish any rotation a dead attempt left (its WAL entry), or refuse.
//  2. PutWAL(rotate_root){idempotency key, root token id, grace, start}.
//  3. POST /tokens/{root}/rotate {previous_secret_ttl: grace} with that key,
//     authenticated with the stored secret.
//  4. Store the config with the new secret (seal-wrapped), and the key.
//  5. Swap the client's secret, then DeleteWAL.
//
// A failure before 3 changes nothing. A definitive refusal at 3 deletes the
// WAL entry. Anything else (outcome unknown, answer lost, storage failure,
// process death) leaves the WAL entry, and the rollback rolls FORWARD: it
// replays step 3 with the same key and body, which the contract answers with
// the first answer, secret included, as long as some secret of the same token
// is accepted (the old one is, for the grace), then does 4.

const (
	walKindRotateRoot = "rotate_root"

	defaultRotationGrace = time.Hour
	minRotationGrace     = 10 * time.Second
	maxRotationGrace     = 24 * time.Hour // the contract's previous_secret_ttl limit, 86400 s
	// Below this, a process death in the middle of a rotation may not be
	// recovered before the old secret dies: the WAL rollback needs
	// walRollbackMinAge + Vault's rollback interval (1 min) + a call.
	safeRotationGrace = 5 * time.Minute

	minRotationPeriod = time.Minute
	minWindowLength   = 5 * time.Minute

	rotationBackoffBase = time.Minute
	rotationBackoffMax  = time.Hour

	// upstreamIdempotencyWindow is how long Tooken replays an answer. After
	// it (plus margin) a pending rotation is given up.
	upstreamIdempotencyWindow = 24 * time.Hour
	rotationGiveUpAfter       = upstreamIdempotencyWindow + time.Hour
)

// rotationConfig is the rotation part of tookenConfig (embedded, so its JSON
// fields sit beside the others in the stored config).
type rotationConfig struct {
	RotationPeriod time.Duration `json:"rotation_period,omitempty"`
	RotationWindow string        `json:"rotation_window,omitempty"`
	RotationGrace  time.Duration `json:"rotation_grace,omitempty"` // 0 = defaultRotationGrace

	// State, written together with the secret.
	SecretSetAt             time.Time  `json:"secret_set_at,omitempty"`
	LastRotated             *time.Time `json:"last_rotated,omitempty"`
	LastRotationKey         string     `json:"last_rotation_key,omitempty"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`

	// Status of failed attempts, cleared by a success or a new token.
	RotationFailures    int        `json:"rotation_failures,omitempty"`
	LastRotationError   string     `json:"last_rotation_error,omitempty"`
	LastRotationErrorAt *time.Time `json:"last_rotation_error_at,omitempty"`
	RotationRetryAt     *time.Time `json:"rotation_retry_at,omitempty"`
}

func (r *rotationConfig) grace() time.Duration {
	if r.RotationGrace <= 0 {
		return defaultRotationGrace
	}
	return r.RotationGrace
}

// validate reports every problem with the rotation fields.
func (r *rotationConfig) validate() error {
	var errs []error
	if r.RotationPeriod < 0 || (r.RotationPeriod > 0 && r.RotationPeriod < minRotationPeriod) {
		errs = append(errs, fmt.Errorf("rotation_period: must be 0 (off) or at least %s", minRotationPeriod))
	}
	if g := r.grace(); g < minRotationGrace || g > maxRotationGrace {
		errs = append(errs, fmt.Errorf("rotation_grace: must be between %s and %s", minRotationGrace, maxRotationGrace))
	}
	if _, err := parseWindow(r.RotationWindow); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// warnings for a config write.
func (r *rotationConfig) warnings() []string {
	var out []string
	if g := r.grace(); g < safeRotationGrace {
		out = append(out, fmt.Sprintf("rotation_grace %s is below %s: if Vault dies in the middle of a rotation, the recovery (which needs the old secret) may come too late and the root secret be lost", g, safeRotationGrace))
	}
	return out
}

// secretChanged records that the operator wrote a new root secret.
func (r *rotationConfig) secretChanged(now time.Time) {
	r.SecretSetAt = now.UTC()
	r.PreviousSecretExpiresAt = nil
	r.clearFailures()
}

func (r *rotationConfig) clearFailures() {
	r.RotationFailures = 0
	r.LastRotationError = ""
	r.LastRotationErrorAt = nil
	r.RotationRetryAt = nil
}

// nextRotation is when the schedule rotates next (zero when it is off): the
// period after the secret was set, no earlier than a backoff retry, moved
// into the window.
func (r *rotationConfig) nextRotation(now time.Time) time.Time {
	if r.RotationPeriod <= 0 {
		return time.Time{}
	}
	due := now
	if !r.SecretSetAt.IsZero() {
		due = r.SecretSetAt.Add(r.RotationPeriod)
	}
	if r.RotationRetryAt != nil && r.RotationRetryAt.After(due) {
		due = *r.RotationRetryAt
	}
	w, _ := parseWindow(r.RotationWindow)
	return w.next(due.UTC())
}

func fmtTimeOrNil(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimeOr(t *time.Time, otherwise string) string {
	if t == nil || t.IsZero() {
		return otherwise
	}
	return t.UTC().Format(time.RFC3339)
}

// rotationResponseData is the rotation part of a config read.
func (r *rotationConfig) rotationResponseData(now time.Time) map[string]any {
	next := r.nextRotation(now)
	out := map[string]any{
		"rotation_period":            int64(r.RotationPeriod / time.Second),
		"rotation_window":            r.RotationWindow,
		"rotation_grace":             int64(r.grace() / time.Second),
		"last_rotated":               fmtTimeOrNil(r.LastRotated),
		"next_rotation":              fmtTimeOrNil(&next),
		"previous_secret_expires_at": fmtTimeOrNil(r.PreviousSecretExpiresAt),
		"rotation_failures":          r.RotationFailures,
		"last_rotation_error":        r.LastRotationError,
		"last_rotation_error_at":     fmtTimeOrNil(r.LastRotationErrorAt),
	}
	return out
}

func rotationFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"rotation_period": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Rotate the root secret this long after it was last set (by rotation or by a config write). 0 (default) turns the schedule off; otherwise at least %s.", minRotationPeriod),
		},
		"rotation_window": {
			Type:        framework.TypeString,
			Description: `Daily UTC window "HH:MM-HH:MM" in which scheduled rotations may run (it may wrap past midnight). Empty (default): any time.`,
		},
		"rotation_grace": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("How long the previous root secret keeps working after a rotation (previous_secret_ttl), %s to %s.", minRotationGrace, maxRotationGrace),
			Default:     int(defaultRotationGrace / time.Second),
		},
	}
}

// applyRotationFields copies the rotation fields given in a config write.
func applyRotationFields(r *rotationConfig, d *framework.FieldData) {
	if v, ok := d.GetOk("rotation_period"); ok {
		r.RotationPeriod = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("rotation_window"); ok {
		r.RotationWindow = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("rotation_grace"); ok {
		r.RotationGrace = time.Duration(v.(int)) * time.Second
	}
}

// dailyWindow is a daily UTC window [start, end), as offsets from midnight;
// end < start wraps past midnight. The zero value (always) has all false.
type dailyWindow struct {
	set        bool
	start, end time.Duration
}

func parseWindow(s string) (dailyWindow, error) {
	if s == "" {
		return dailyWindow{}, nil
	}
	bad := fmt.Errorf(`rotation_window: %q is not a daily UTC window "HH:MM-HH:MM"`, s)
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return dailyWindow{}, bad
	}
	start, err1 := parseClock(strings.TrimSpace(a))
	end, err2 := parseClock(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return dailyWindow{}, bad
	}
	w := dailyWindow{set: true, start: start, end: end}
	if w.length() < minWindowLength {
		return dailyWindow{}, fmt.Errorf("rotation_window: %q must be at least %s long", s, minWindowLength)
	}
	return w, nil
}

func parseClock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

func (w dailyWindow) length() time.Duration {
	l := w.end - w.start
	if l <= 0 {
		l += 24 * time.Hour
	}
	return l
}

func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func (w dailyWindow) contains(t time.Time) bool {
	if !w.set {
		return true
	}
	off := t.UTC().Sub(midnight(t))
	if w.start < w.end {
		return off >= w.start && off < w.end
	}
	return off >= w.start || off < w.end
}

// next is the first instant at or after t inside the window.
func (w dailyWindow) next(t time.Time) time.Time {
	if w.contains(t) {
		return t
	}
	s := midnight(t).Add(w.start)
	if s.Before(t) {
		s = s.Add(24 * time.Hour)
	}
	return s
}

// rootRotation is the backend's in-memory rotation state.
type rootRotation struct {
	// mu: one rotation (or rotation rollback, or config write) at a time.
	mu sync.Mutex
	// The fields below are guarded by mu.
	// pending holds, by idempotency key, a new secret that Tooken issued but
	// that could not be stored: a last resort for the rollback when the old
	// secret has died meanwhile. Lost with the process, by design.
	pending map[string]string
	// retryAt is the in-memory copy of the schedule backoff, in case the
	// failure status could not be stored either.
	retryAt time.Time

	// now is the clock (tests replace it); nil = time.Now.
	now func() time.Time
}

func (r *rootRotation) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// rotateWAL is the WAL entry of one rotation. No secret in it.
type rotateWAL struct {
	IdempotencyKey string    `json:"idempotency_key"`
	TokenID        string    `json:"token_id"`
	GraceSeconds   int64     `json:"grace_seconds"`
	StartedAt      time.Time `json:"started_at"`
}

// rotationError is a failed rotation, with the HTTP status its answer gets.
type rotationError struct {
	status int
	msg    string
}

func (e *rotationError) Error() string { return e.msg }

func rotationFailed(status int, format string, args ...any) error {
	return &rotationError{status: status, msg: fmt.Sprintf(format, args...)}
}

// rotationContext is the budget of one rotation: the caller hanging up must
// not cut a rotation between the upstream change and the storage write.
func rotationContext(ctx context.Context, cfg *tookenConfig) (context.Context, context.CancelFunc) {
	budget := time.Duration(cfg.MaxRetries+1)*cfg.RequestTimeout + 30*time.Second
	return context.WithTimeout(context.WithoutCancel(ctx), budget)
}

// rotateRootLocked runs one rotation and returns the config it stored (the
// rotated token's id, last_rotated, previous_secret_expires_at). The caller
// holds b.rot.mu.
func (b *tookenBackend) rotateRootLocked(ctx context.Context, s logical.Storage, trigger string) (*tookenConfig, error) {
	if err := b.finishPendingRotationsLocked(ctx, s); err != nil {
		return nil, err
	}
	cfg, err := readConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errNotConfigured
	}
	ctx, cancel := rotationContext(ctx, cfg)
	defer cancel()

	client, err := tookenapi.New(cfg.clientOptions(b.Logger()))
	if err != nil {
		return nil, fmt.Errorf("building Tooken client: %w", err)
	}
	defer client.Close()
	tokenID, err := rootTokenID(ctx, client, cfg)
	if err != nil {
		return nil, err
	}
	w := rotateWAL{
		IdempotencyKey: tookenapi.NewIdempotencyKey(),
		TokenID:        tokenID,
		GraceSeconds:   int64(cfg.grace() / time.Second),
		StartedAt:      b.rot.clock().UTC(),
	}
	tok, walID, err := b.rotateUpstream(ctx, s, client, w)
	if err != nil {
		return nil, err
	}

	newCfg, err := b.storeRotatedLocked(ctx, s, cfg, tok, w)
	if err != nil {
		if b.rot.pending == nil {
			b.rot.pending = make(map[string]string)
		}
		b.rot.pending[w.IdempotencyKey] = tok.Secret
		return nil, fmt.Errorf("root rotation incomplete: Tooken rotated the root token %s but storing the new secret failed: %w; the previous secret keeps working until %v and the engine recovers the new one by replaying the rotation within about %s",
			tokenID, err, fmtTimeOr(tok.PreviousSecretExpiresAt, "the grace ends"), rotationRecoveryDelay)
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		// Harmless: the rollback finds the key in the config and stops.
		b.Logger().Warn("could not delete the WAL entry of a finished root rotation", "token_id", tokenID, "error", err)
	}
	b.Logger().Info("rotated the root token", "token_id", tokenID, "trigger", trigger,
		"previous_secret_expires_at", fmtTimeOrNil(tok.PreviousSecretExpiresAt))
	return newCfg, nil
}

// rotationRecoveryDelay is about how long the WAL rollback takes to finish an
// interrupted rotation.
const rotationRecoveryDelay = 2*walRollbackMinAge + time.Minute

// rootTokenID is the root token's id: from the config, or from GET
// /tokens/self when the config was stored without verification.
func rootTokenID(ctx context.Context, client *tookenapi.Client, cfg *tookenConfig) (string, error) {
	if cfg.TokenID != "" {
		return cfg.TokenID, nil
	}
	self, err := client.Self(ctx)
	if err != nil {
		return "", rotationFailed(http.StatusBadGateway, "root rotation failed: reading the root token (GET /tokens/self): %v; nothing was changed", err)
	}
	return self.ID, nil
}

// rotateUpstream writes the WAL entry of w, then rotates the root token
// upstream with w's key and grace. It returns the new token (with its secret)
// and the WAL entry's id. When Tooken refuses, nothing changed: the entry is
// deleted. When the outcome is unknown the entry stays, for the rollback.
func (b *tookenBackend) rotateUpstream(ctx context.Context, s logical.Storage, client *tookenapi.Client, w rotateWAL) (*tookenapi.Token, string, error) {
	walID, err := framework.PutWAL(ctx, s, walKindRotateRoot, w)
	if err != nil {
		return nil, "", fmt.Errorf("root rotation failed: writing its WAL entry: %w; nothing was changed", err)
	}
	grace := time.Duration(w.GraceSeconds) * time.Second
	tok, err := client.RotateToken(ctx, w.TokenID, grace, w.IdempotencyKey)
	if err == nil && (tok.Secret == "" || tok.ID != w.TokenID) {
		err = tookenapi.OutcomeUnknown(errors.New("Tooken's answer has no secret or another token id"))
	}
	switch {
	case err == nil:
		return tok, walID, nil
	case errors.Is(err, tookenapi.ErrOutcomeUnknown):
		return nil, "", rotationFailed(http.StatusBadGateway, "root rotation outcome unknown: %v; the current root secret keeps working at least until %s, and the engine finishes the rotation by replaying the same request (same Idempotency-Key) within about %s",
			err, w.StartedAt.Add(grace).Format(time.RFC3339), rotationRecoveryDelay)
	}
	// Tooken refused: nothing changed upstream.
	if derr := framework.DeleteWAL(ctx, s, walID); derr != nil {
		b.Logger().Warn("could not delete the WAL entry of a refused root rotation (harmless: its rollback replays the refusal)", "token_id", w.TokenID, "error", derr)
	}
	return nil, "", rotationFailed(http.StatusBadGateway, "root rotation failed: %v; nothing changed upstream: the current root secret is unchanged and keeps working", err)
}

// storeRotatedLocked stores cfg with the rotated token's secret and installs
// it in the cache and the client. cfg is not modified.
func (b *tookenBackend) storeRotatedLocked(ctx context.Context, s logical.Storage, cfg *tookenConfig, tok *tookenapi.Token, w rotateWAL) (*tookenConfig, error) {
	now := b.rot.clock().UTC()
	newCfg := *cfg
	newCfg.Token = tok.Secret
	newCfg.TokenID = tok.ID
	if tok.Scopes != nil {
		newCfg.Scopes = tok.Scopes
	}
	newCfg.ExpiresAt = tok.ExpiresAt
	rotatedAt := w.StartedAt
	if tok.RotatedAt != nil {
		rotatedAt = tok.RotatedAt.UTC()
	}
	newCfg.SecretSetAt = now
	newCfg.LastRotated = &rotatedAt
	newCfg.LastRotationKey = w.IdempotencyKey
	newCfg.PreviousSecretExpiresAt = tok.PreviousSecretExpiresAt
	newCfg.clearFailures()
	if err := putConfig(ctx, s, &newCfg); err != nil {
		return nil, err
	}
	delete(b.rot.pending, w.IdempotencyKey)
	b.rot.retryAt = time.Time{}
	b.installConfig(&newCfg)
	return &newCfg, nil
}

// installConfig makes cfg the cached config and switches the client, if
// built, to its secret: requests in flight keep the old secret (still valid
// for the grace), new ones and retries use the new one.
func (b *tookenBackend) installConfig(cfg *tookenConfig) {
	b.lock.Lock()
	defer b.lock.Unlock()
	b.configGen++
	b.config = cfg
	b.configLoaded = true
	if b.client != nil {
		b.client.SetSecret(cfg.Token)
	}
}

// finishPendingRotationsLocked rolls forward every rotation WAL entry (left
// by a dead or failed attempt: none runs, we hold the lock). It fails when
// one cannot be finished yet; a new rotation must not start then.
func (b *tookenBackend) finishPendingRotationsLocked(ctx context.Context, s logical.Storage) error {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return fmt.Errorf("listing WAL entries: %w", err)
	}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return fmt.Errorf("reading WAL entry: %w", err)
		}
		if entry == nil || entry.Kind != walKindRotateRoot {
			continue
		}
		w, err := decodeRotateWAL(entry.Data)
		if err != nil {
			return err
		}
		if err := b.rollbackRotationLocked(ctx, s, w); err != nil {
			return rotationFailed(http.StatusConflict, "a previous root rotation (started %s) is not finished yet: %v; retry later (the current root secret is unchanged)", w.StartedAt.Format(time.RFC3339), err)
		}
		if err := framework.DeleteWAL(ctx, s, id); err != nil {
			return fmt.Errorf("deleting a finished rotation's WAL entry: %w", err)
		}
	}
	return nil
}

func decodeRotateWAL(data any) (rotateWAL, error) {
	var w rotateWAL
	raw, err := json.Marshal(data)
	if err == nil {
		err = json.Unmarshal(raw, &w)
	}
	if err == nil && (w.IdempotencyKey == "" || w.TokenID == "") {
		err = errors.New("missing idempotency_key or token_id")
	}
	if err != nil {
		return w, fmt.Errorf("decoding a %s WAL entry: %w", walKindRotateRoot, err)
	}
	return w, nil
}

// rollbackRotateRoot is the WALRollback of a rotate_root entry. nil lets the
// framework delete the entry; an error keeps it for the next rollback.
func (b *tookenBackend) rollbackRotateRoot(ctx context.Context, req *logical.Request, data any) error {
	w, err := decodeRotateWAL(data)
	if err != nil {
		b.Logger().Error("dropping an unreadable root rotation WAL entry", "error", err)
		return nil
	}
	if !b.WriteSafeReplicationState() {
		return errors.New("not the active node of the primary: the rotation is finished there")
	}
	if !b.rot.mu.TryLock() {
		return errors.New("a root rotation is running: retry at the next rollback")
	}
	defer b.rot.mu.Unlock()
	return b.rollbackRotationLocked(ctx, req.Storage, w)
}

// rollbackRotationLocked finishes the rotation of w: it replays it with the
// same key and body and stores the secret of the answer. nil means the entry
// is settled (finished, moot, or given up with a clear error); an error means
// "not yet" (Tooken unreachable, the original still in flight).
func (b *tookenBackend) rollbackRotationLocked(ctx context.Context, s logical.Storage, w rotateWAL) error {
	cfg, err := readConfig(ctx, s)
	if err != nil {
		return err
	}
	log := b.Logger().With("token_id", w.TokenID, "started_at", w.StartedAt.Format(time.RFC3339))
	switch {
	case cfg == nil:
		log.Info("root rotation WAL entry dropped: the config was deleted")
		return nil
	case cfg.LastRotationKey == w.IdempotencyKey:
		return nil // the rotation finished; only the WAL delete was lost
	case cfg.TokenID != "" && cfg.TokenID != w.TokenID:
		log.Info("root rotation WAL entry dropped: the config now holds another root token")
		return nil
	}
	if b.rot.clock().Sub(w.StartedAt) > rotationGiveUpAfter {
		b.rotationLockout(ctx, s, log, fmt.Sprintf("root rotation started %s could not be confirmed for more than %s", w.StartedAt.Format(time.RFC3339), rotationGiveUpAfter))
		return nil
	}
	ctx, cancel := rotationContext(ctx, cfg)
	defer cancel()

	// The stored secret first, then the one a failed store kept in memory.
	candidates := []string{cfg.Token}
	if p := b.rot.pending[w.IdempotencyKey]; p != "" && p != cfg.Token {
		candidates = append(candidates, p)
	}
	storedAlive := false
	var lastErr error
	for i, secret := range candidates {
		res, err := b.replayRotation(ctx, cfg, secret, w)
		if err != nil {
			return err
		}
		if res.tok != nil {
			if _, err := b.storeRotatedLocked(ctx, s, cfg, res.tok, w); err != nil {
				return fmt.Errorf("storing the recovered root secret: %w", err)
			}
			log.Info("finished an interrupted root rotation", "previous_secret_expires_at", fmtTimeOrNil(res.tok.PreviousSecretExpiresAt))
			return nil
		}
		lastErr = res.err
		if i == 0 && res.accepted {
			storedAlive = true
		}
	}
	if storedAlive {
		log.Warn("root rotation WAL entry dropped: it cannot be replayed, but the stored root secret is accepted", "error", lastErr)
		return nil
	}
	b.rotationLockout(ctx, s, log, fmt.Sprintf("root rotation started %s could not be finished: Tooken rejects the stored root secret and the replay (%v)", w.StartedAt.Format(time.RFC3339), lastErr))
	return nil
}

// replayResult is what replaying a rotation with one secret gave.
type replayResult struct {
	tok      *tookenapi.Token // the replayed answer, its secret checked to work; nil otherwise
	accepted bool             // Tooken accepted the secret the replay was made with
	err      error            // why tok is nil
}

// replayRotation replays the rotation of w authenticated with secret, and
// checks that the replayed secret works. An error means "not yet" (Tooken
// unreachable, rate limiting, the original still in flight).
func (b *tookenBackend) replayRotation(ctx context.Context, cfg *tookenConfig, secret string, w rotateWAL) (replayResult, error) {
	c := *cfg
	c.Token = secret
	client, err := tookenapi.New(c.clientOptions(b.Logger()))
	if err != nil {
		return replayResult{}, err
	}
	defer client.Close()
	tok, err := client.RotateToken(ctx, w.TokenID, time.Duration(w.GraceSeconds)*time.Second, w.IdempotencyKey)
	if err == nil && (tok.Secret == "" || tok.ID != w.TokenID) {
		err = errors.New("Tooken's answer has no secret or another token id")
	}
	switch {
	case err == nil:
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return replayResult{err: err}, nil // this secret is dead
	case errors.Is(err, tookenapi.ErrOutcomeUnknown), errors.Is(err, tookenapi.ErrRateLimited), errors.Is(err, tookenapi.ErrConflict),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), tookenapi.IsUnreachable(err):
		return replayResult{}, fmt.Errorf("replaying the root rotation: %w", err)
	default:
		// A definitive answer to an authenticated call: this secret works.
		return replayResult{accepted: true, err: err}, nil
	}

	// The replayed secret may be stale (rotated by hand since): check it
	// before it replaces anything.
	switch err := b.checkRootSecret(ctx, &c, tok.Secret, w.TokenID); {
	case err == nil:
		return replayResult{tok: tok, accepted: true}, nil
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return replayResult{accepted: true, err: errors.New("the replayed answer's secret is no longer accepted (the root was rotated since)")}, nil
	default:
		return replayResult{}, fmt.Errorf("checking the replayed root secret: %w", err)
	}
}

// checkRootSecret checks with GET /tokens/self that secret authenticates as
// the root token tokenID, over cfg's connection.
func (b *tookenBackend) checkRootSecret(ctx context.Context, cfg *tookenConfig, secret, tokenID string) error {
	c := *cfg
	c.Token = secret
	client, err := tookenapi.New(c.clientOptions(b.Logger()))
	if err != nil {
		return err
	}
	defer client.Close()
	self, err := client.Self(ctx)
	if err == nil && self.ID != tokenID {
		err = errors.New("the replayed secret belongs to another token")
	}
	return err
}

// rotationLockout records a rotation that can never finish, loudly, once.
func (b *tookenBackend) rotationLockout(ctx context.Context, s logical.Storage, log hclog.Logger, what string) {
	msg := what + `; the engine no longer holds a working root secret: write a working root secret with "vault write <mount>/config token=..." (see README, Root credential rotation)`
	log.Error(msg)
	b.recordRotationFailure(ctx, s, msg)
}

// recordRotationFailure stores the failure status and the schedule backoff
// (best effort; the backoff is also kept in memory). Caller holds b.rot.mu.
func (b *tookenBackend) recordRotationFailure(ctx context.Context, s logical.Storage, msg string) {
	now := b.rot.clock().UTC()
	cfg, err := readConfig(ctx, s)
	if err != nil || cfg == nil {
		b.rot.retryAt = now.Add(rotationBackoffBase)
		return
	}
	c := *cfg
	c.RotationFailures++
	c.LastRotationError = msg
	c.LastRotationErrorAt = &now
	wait := rotationBackoffMax
	if n := c.RotationFailures - 1; n < 10 {
		wait = min(rotationBackoffBase<<n, rotationBackoffMax)
	}
	retry := now.Add(wait)
	c.RotationRetryAt = &retry
	b.rot.retryAt = retry
	if err := putConfig(ctx, s, &c); err != nil {
		b.Logger().Warn("could not store the root rotation failure status", "error", err)
		return
	}
	b.installConfig(&c)
}

// rotateRootIfDue is the scheduled rotation, called by the periodic function.
// It logs its own failures and records them (with backoff) in the config.
func (b *tookenBackend) rotateRootIfDue(ctx context.Context, req *logical.Request) {
	if !b.WriteSafeReplicationState() {
		return // performance standby or secondary: the active primary rotates
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil || cfg == nil || cfg.RotationPeriod <= 0 {
		return
	}
	now := b.rot.clock()
	w, _ := parseWindow(cfg.RotationWindow)
	if now.Before(cfg.nextRotation(now)) || !w.contains(now) {
		return
	}
	if !b.rot.mu.TryLock() {
		return // a rotation is running
	}
	defer b.rot.mu.Unlock()
	if now.Before(b.rot.retryAt) {
		return
	}
	// Check again on fresh storage, under the lock.
	if cfg, err = readConfig(ctx, req.Storage); err != nil || cfg == nil || cfg.RotationPeriod <= 0 || now.Before(cfg.nextRotation(now)) {
		return
	}
	if _, err := b.rotateRootLocked(ctx, req.Storage, "schedule"); err != nil {
		b.Logger().Error("scheduled root rotation failed", "error", err)
		b.recordRotationFailure(ctx, req.Storage, err.Error())
	}
}
