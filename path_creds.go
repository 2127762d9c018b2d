package tooken

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

func pathCreds(b *tookenBackend) *framework.Path {
	return &framework.Path{
		Pattern: "creds/" + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeString,
				Description: "Name of the role to issue a token for.",
				Required:    true,
			},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: fmt.Sprintf("Lifetime of this token, at least %s and at most the role's max_ttl (capped by the mount's max lease TTL): the token expires upstream then, and the lease ends with it. Default: the role's ttl for the lease and its max_ttl for the token.", humanDuration(minTokenLifetime)),
			},
			"scopes": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Scopes of this token: a subset of the role's (R:write covers R:read). Default: the role's scopes.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathCredsRead,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "generate",
					OperationSuffix: "credentials",
				},
				Summary:   "Issue a new Tooken token for the role, under a lease.",
				Responses: credsResponses(b),
				// Creates a token upstream: a standby must not do it itself.
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathCredsHelpSyn,
		HelpDescription: pathCredsHelpDesc,
	}
}

// credsRequest is one creds read: the role, narrowed by the request's ttl and
// scopes, and the requester's identity when the role uses it.
type credsRequest struct {
	roleName string
	role     *cachedRole
	scopes   []string      // the token's scopes: the role's, or the subset asked for
	maxTTL   time.Duration // the token's lifetime upstream, the lease's limit
	ttl      time.Duration // the lease TTL asked for (then also maxTTL); 0 = the role's ttl
	identity callerIdentity
}

// narrowCreds applies a creds read's ttl and scopes to the role. A bad value
// is the caller's mistake: the message names the field (every problem at
// once), and nothing is created.
func (b *tookenBackend) narrowCreds(d *framework.FieldData, roleName string, role *cachedRole) (*credsRequest, string) {
	cr := &credsRequest{roleName: roleName, role: role, scopes: role.entry.Scopes, maxTTL: b.effectiveMaxTTL(role.entry)}
	// Before anything is created: the mount may have been tuned below what
	// a token needs since the role was written.
	if cr.maxTTL < minTokenLifetime {
		return cr, fmt.Sprintf("max_ttl: tokens of role %q would live %s (its max_ttl capped by the mount's max lease TTL), less than the %s a token needs; raise the mount's max lease TTL (vault secrets tune -max-lease-ttl)", roleName, humanDuration(cr.maxTTL), humanDuration(minTokenLifetime))
	}
	if err := role.entry.tokenManagementError(); err != nil {
		// A role stored by an earlier version, which did not ask.
		return cr, fmt.Sprintf("%v; role %q was written by an earlier version of the engine, which did not ask: write the role again with allow_token_management=true to keep issuing these creds", err, roleName)
	}
	var problems []string
	if v, ok := d.GetOk("ttl"); ok {
		switch ttl := time.Duration(v.(int)) * time.Second; {
		case ttl < minTokenLifetime:
			problems = append(problems, fmt.Sprintf("ttl: %s is too short; ask for at least %s, or leave it out for the role's", humanDuration(ttl), humanDuration(minTokenLifetime)))
		case ttl > cr.maxTTL:
			problems = append(problems, fmt.Sprintf("ttl: %s is longer than role %q allows (%s, its max_ttl capped by the mount's max lease TTL); ask for at most that", humanDuration(ttl), roleName, humanDuration(cr.maxTTL)))
		default:
			cr.maxTTL, cr.ttl = ttl, ttl
		}
	}
	if v, ok := d.GetOk("scopes"); ok {
		scopes, problem := narrowScopes(v.([]string), role.entry.Scopes, roleName)
		if problem != "" {
			problems = append(problems, problem)
		}
		cr.scopes = scopes
	}
	return cr, strings.Join(problems, "; ")
}

// narrowScopes checks the scopes a creds read asks for against the role's:
// Tooken's rules for scopes (validateScopes, the count first), and each
// granted by the role (R:write covers R:read). Every problem at once.
func narrowScopes(asked, held []string, roleName string) ([]string, string) {
	if len(asked) > maxScopes {
		return nil, fmt.Sprintf("scopes: at most %d (Tooken's limit), got %d", maxScopes, len(asked))
	}
	scopes := trimmedUnique(asked)
	if len(scopes) == 0 {
		return nil, "scopes: empty; name at least one of the role's scopes, or leave it out for all of them"
	}
	var problems []string
	if err := validateScopes(scopes); err != nil {
		problems = append(problems, err.Error())
	}
	var notHeld []string
	for _, s := range scopes {
		if len(s) <= maxScopeLen && scopeRegex.MatchString(s) && !holdsScope(held, s) {
			notHeld = append(notHeld, s)
		}
	}
	if len(notHeld) > 0 {
		problems = append(problems, fmt.Sprintf("scopes: role %q does not grant %s; ask for a subset of %s", roleName, joinFirst(notHeld, maxReportedScopes), strings.Join(held, ", ")))
	}
	return scopes, strings.Join(problems, "; ")
}

// nameData is what the role's name template renders from.
func (cr *credsRequest) nameData(displayName string) nameTemplateData {
	data := newNameTemplateData(cr.roleName, displayName)
	if cr.role.tmpl.usesIdentity {
		data = data.withIdentity(cr.identity)
	}
	return data
}

// credsResponses are the answers of a creds read: the token, or a refusal
// by the role's max_live_tokens.
func credsResponses(b *tookenBackend) map[int][]framework.Response {
	r := dataResponse("A new token under a renewable lease.", secretToken(b).Fields)
	r[http.StatusTooManyRequests] = []framework.Response{{Description: "The role has max_live_tokens tokens alive: nothing was created."}}
	return r
}

// issuedToken is a token created for a creds read, with its lease limits.
type issuedToken struct {
	token     *tookenapi.Token
	role      string
	issueKey  string
	issuedAt  time.Time
	expiresAt time.Time         // upstream expiry: the lease's hard limit
	ttl       time.Duration     // first lease TTL
	dest      secretDestination // the Tooken that issued it
}

func (b *tookenBackend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("name: unknown role %q", name), nil
	}
	if role.tmplErr != nil {
		return logical.ErrorResponse("name_template: role %q has a stored name_template that this version of the engine refuses (%v); write the role's name_template again", name, role.tmplErr), nil
	}
	cr, problems := b.narrowCreds(d, name, role)
	if problems != "" {
		return logical.ErrorResponse(problems), nil
	}
	if role.usesIdentity() {
		if cr.identity, err = b.callerIdentity(req); err != nil {
			return nil, err
		}
	}

	it, err := b.issueToken(ctx, req, cr)
	switch {
	case err == nil:
	case errors.Is(err, errNotConfigured):
		return logical.ErrorResponse(err.Error()), nil
	case errors.Is(err, tookenapi.ErrScopeNotHeld):
		return logical.ErrorResponse("scopes: the root token does not hold the scopes of role %q (Tooken answered %s); give the root those scopes at Tooken, or change the role's scopes", name, upstreamAnswer(err)), nil
	default:
		return nil, err
	}
	return b.credsResponse(it, cr), nil
}

// credsResponse is the answer of a creds read that issued it: the token and
// its lease, whose internal data names everything renew and revoke need.
func (b *tookenBackend) credsResponse(it *issuedToken, cr *credsRequest) *logical.Response {
	resp := b.Secret(secretTokenType).Response(
		map[string]any{
			"token":      it.token.Secret,
			"token_id":   it.token.ID,
			"name":       it.token.Name,
			"scopes":     it.token.Scopes,
			"expires_at": it.expiresAt.Format(time.RFC3339),
		},
		map[string]any{
			internalTokenID:   it.token.ID,
			internalIssueKey:  it.issueKey,
			internalRole:      it.role,
			internalRecord:    issuanceRef{role: it.role, key: it.issueKey}.recordKey(),
			internalExpiresAt: it.expiresAt.Format(time.RFC3339),
			internalIssuedAt:  it.issuedAt.Format(time.RFC3339),
			internalDestURL:   it.dest.URL,
		},
	)
	if it.dest.CASHA256 != "" {
		resp.Secret.InternalData[internalDestCA] = it.dest.CASHA256
	}
	if cr.ttl > 0 {
		resp.Secret.InternalData[internalTTL] = cr.ttl.String()
	}
	resp.Secret.TTL = it.ttl
	setLeaseEnd(resp.Secret, time.Now().Add(it.ttl))
	resp.Secret.MaxTTL = it.ttl
	if rem := leaseRemaining(it.expiresAt, time.Now()); rem > it.ttl {
		resp.Secret.MaxTTL = rem
	}
	return resp
}

// effectiveMaxTTL is the lifetime of a token of this role: the role's max_ttl
// capped by the mount's max lease TTL, and never beyond Tooken's 366 days.
func (b *tookenBackend) effectiveMaxTTL(role *roleEntry) time.Duration {
	maxTTL := b.System().MaxLeaseTTL()
	if role.MaxTTL > 0 && (maxTTL <= 0 || role.MaxTTL < maxTTL) {
		maxTTL = role.MaxTTL
	}
	if maxTTL <= 0 || maxTTL > maxUpstreamTTL {
		maxTTL = maxUpstreamTTL
	}
	return maxTTL
}

// leaseSlack keeps every lease end at least this far before the upstream
// expiry, so that Vault's lease (which starts a moment after the token) never
// outlives the token.
const leaseSlack = time.Second

// leaseRemaining is how long a lease may still run for a token expiring at
// expiresAt, in whole seconds; <= 0 when none.
func leaseRemaining(expiresAt, now time.Time) time.Duration {
	return (expiresAt.Sub(now) - leaseSlack).Truncate(time.Second)
}

// issueToken creates the upstream token for a creds read, guarded by its
// issuance records (issuance.go): the pending record with the exact create
// body before the POST, the live record with the token id after it. Those
// are the two storage writes of a creds read. On failure it leaves no token
// behind that nobody will revoke: a definitive error means nothing was
// created; when the outcome is unknown (answer lost, 5xx, timeout) it
// replays the POST with the same Idempotency-Key to learn the token and
// revokes it; whatever it cannot finish stays pending and the periodic
// rollback finishes it. A role with max_live_tokens refuses the read before
// anything is written once the role has that many tokens alive.
func (b *tookenBackend) issueToken(ctx context.Context, req *logical.Request, cr *credsRequest) (*issuedToken, error) {
	client, dest, err := b.getClientAt(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	roleName := cr.roleName
	now := time.Now().UTC().Truncate(time.Second)
	name, err := cr.role.tmpl.render(cr.nameData(req.DisplayName))
	if err != nil {
		return nil, fmt.Errorf("rendering the name of a token for role %q: %w", roleName, err)
	}
	key := tookenapi.NewIdempotencyKey()
	body := b.createBody(req, cr, name, key, now.Add(cr.maxTTL))

	// The key stays in flight until the request is over, so that the
	// rollback never kills a token this request is about to hand out.
	limit := cr.role.entry.MaxLiveTokens
	end, err := b.startIssuance(ctx, req.Storage, roleName, key, limit)
	if errors.Is(err, errLiveTokenLimit) {
		return nil, liveTokenLimitError(roleName, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("creating a token for role %q: %w", roleName, err)
	}
	defer end()
	// Storage write 1: the pending record, before anything exists upstream.
	// If it fails it may still have landed: the slot stays taken until the
	// rollback has looked.
	rec := newIssuanceRecord(key, roleName, body, now)
	rec.Dest = &dest
	if err := putIssuance(ctx, req.Storage, rec); err != nil {
		return nil, fmt.Errorf("creating a token for role %q: recording the issuance: %w", roleName, err)
	}
	tok, err := b.createIssued(ctx, req.Storage, client, roleName, key, body)
	if err != nil {
		return nil, err
	}
	it, err := b.leaseFor(tok, cr, *body.ExpiresAt)
	if err != nil {
		b.revokeIssued(ctx, req.Storage, client, failedIssueOf(tok, key, roleName, dest, *body.ExpiresAt), false)
		return nil, err
	}
	it.role, it.issueKey, it.issuedAt, it.dest = roleName, key, now, dest

	// Storage write 2: the live record. If it fails the lease will never
	// exist: revoke at once; if that fails too, the pending record stays and
	// the rollback finishes it.
	if err := b.confirmIssuance(ctx, req.Storage, roleName, key, &liveRecord{TokenID: tok.ID, ExpiresAt: it.expiresAt, IssuedAt: now}); err != nil {
		b.revokeIssued(ctx, req.Storage, client, failedIssue{id: tok.ID, key: key, role: roleName, dest: dest, expiresAt: it.expiresAt}, true)
		return nil, fmt.Errorf("creating a token for role %q: confirming the issuance: %w", roleName, err)
	}
	// No log line for a read that worked: a plugin's logger writes every
	// level to Vault (which filters after decoding), a cost per read in both
	// processes; Vault's audit log records each read.
	return it, nil
}

// createIssued sends the POST of a creds read whose pending record is
// stored. On failure it cleans up: a definitive refusal created nothing (the
// pending record is dropped); an unknown outcome is undone now if it can be,
// else by the rollback.
func (b *tookenBackend) createIssued(ctx context.Context, s logical.Storage, client *tookenapi.Client, roleName, key string, body tookenapi.CreateTokenRequest) (*tookenapi.Token, error) {
	tok, err := client.CreateToken(ctx, body, key)
	if err == nil {
		return tok, nil
	}
	if errors.Is(err, tookenapi.ErrOutcomeUnknown) {
		b.cleanUpFailedCreate(ctx, s, client, body, key, roleName)
	} else {
		b.dropPending(ctx, s, roleName, key)
	}
	return nil, upstreamError(fmt.Sprintf("creating a token for role %q", roleName), err)
}

// createBody is the POST /tokens body of a creds read: its scopes, the role's
// metadata, the identity metadata it copies and the engine's own keys, and
// the upstream expiry.
func (b *tookenBackend) createBody(req *logical.Request, cr *credsRequest, name, key string, expiresAt time.Time) tookenapi.CreateTokenRequest {
	role := cr.role.entry
	md := make(map[string]string, len(role.Metadata)+len(role.IdentityMetadata)+numPluginMetadataKey)
	maps.Copy(md, cr.identity.tokenMetadata(role.IdentityMetadata))
	maps.Copy(md, role.Metadata)
	md[metaRole] = cr.roleName
	if b.mountUUID != "" {
		md[metaMountUUID] = b.mountUUID
	}
	if req.MountAccessor != "" {
		md[metaMountAccessor] = req.MountAccessor
	}
	md[metaIssueKey] = key
	return tookenapi.CreateTokenRequest{
		Name:      name,
		Scopes:    cr.scopes,
		ExpiresAt: &expiresAt,
		Metadata:  md,
	}
}

// leaseFor checks Tooken's answer to a create and works out the lease: the
// upstream expiry (the one asked for, or Tooken's if earlier) and the first
// lease TTL (the ttl asked for, else the role's), which ends before it. An
// error means the token cannot be handed out (the caller revokes it).
func (b *tookenBackend) leaseFor(tok *tookenapi.Token, cr *credsRequest, expiresAt time.Time) (*issuedToken, error) {
	roleName, maxTTL := cr.roleName, cr.maxTTL
	if tok.Secret == "" || tok.ID == "" {
		return nil, logical.CodedError(http.StatusBadGateway, fmt.Sprintf("creating a token for role %q: Tooken's answer has no token id or secret", roleName))
	}
	if err := checkAnsweredExpiry(tok.ExpiresAt, expiresAt); err != nil {
		return nil, logical.CodedError(http.StatusBadGateway, fmt.Sprintf("creating a token for role %q: %v; the engine revokes the token and hands out none", roleName, err))
	}
	if tok.ExpiresAt.Before(expiresAt) {
		expiresAt = tok.ExpiresAt.UTC()
	}
	limit := min(maxTTL, leaseRemaining(expiresAt, time.Now()))
	ttl := min(cr.ttl, limit)
	if cr.ttl == 0 {
		ttl = b.leaseTTL(cr.role.entry, limit)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("creating a token for role %q: its max TTL (%s) leaves no time for a lease", roleName, humanDuration(maxTTL))
	}
	return &issuedToken{token: tok, expiresAt: expiresAt, ttl: ttl}, nil
}

// checkAnsweredExpiry checks the expires_at of a create answer (answered)
// against the one the engine asked for: every token it hands out must end
// upstream no later than its lease's max TTL, and the answer is the only
// word of it. An answer without expires_at (a Tooken or proxy that drops
// it: the token may never expire) or with a later one does not keep that
// promise; its token must not be handed out.
func checkAnsweredExpiry(answered *time.Time, asked time.Time) error {
	switch {
	case answered == nil || answered.IsZero():
		return fmt.Errorf("Tooken's answer has no expires_at (asked for %s), so the token may outlive its lease", asked.UTC().Format(time.RFC3339))
	case answered.After(asked):
		return fmt.Errorf("Tooken's answer has expires_at %s, later than the %s asked for, so the token would outlive its lease", answered.UTC().Format(time.RFC3339), asked.UTC().Format(time.RFC3339))
	}
	return nil
}

// leaseTTL is the role's ttl, the mount's default lease TTL when unset, at
// most limit.
func (b *tookenBackend) leaseTTL(role *roleEntry, limit time.Duration) time.Duration {
	ttl := role.TTL
	if ttl <= 0 {
		ttl = b.System().DefaultLeaseTTL()
	}
	if ttl <= 0 || ttl > limit {
		ttl = limit
	}
	return ttl
}

// failedIssue is the token of a creds read that failed after its create.
type failedIssue struct {
	id, key, role string            // token id ("": the answer named none), issue key, role
	dest          secretDestination // the Tooken that issued it
	expiresAt     time.Time         // its upstream expiry; zero: unknown (Tooken's answer did not keep the one asked for)
}

// failedIssueOf is the token of Tooken's answer tok to a create that asked
// for expiry asked: its expiry is unknown when the answer does not keep it
// (the token may outlive it).
func failedIssueOf(tok *tookenapi.Token, key, role string, dest secretDestination, asked time.Time) failedIssue {
	f := failedIssue{id: tok.ID, key: key, role: role, dest: dest, expiresAt: asked}
	if checkAnsweredExpiry(tok.ExpiresAt, asked) != nil {
		f.expiresAt = time.Time{}
	}
	return f
}

// revokeIssued revokes the token of a creds read that failed after the
// create (404 counts as done), even when the request's context is over, and
// deletes its issuance records once the token is dead (or when the answer
// named no token: id ""). confirmTried says that the live record's write
// was tried: it may have landed, so it is deleted first (otherwise a
// failed revoke would leave a token that looks leased). A pending record
// left behind is finished by the rollback, or dropped at the expiry it
// asked for: a token whose expiry is unknown, or whose live record is
// left, is queued for revocation too.
func (b *tookenBackend) revokeIssued(ctx context.Context, s logical.Storage, client *tookenapi.Client, f failedIssue, confirmTried bool) {
	ctx = context.WithoutCancel(ctx)
	liveLeft := false
	if confirmTried {
		if err := deleteLive(ctx, s, f.role, f.key); err != nil {
			b.Logger().Warn("could not delete the live record of a failed creds request", "role", f.role, "issue_key", f.key, "error", err)
			liveLeft = true
		}
	}
	if f.id != "" {
		if err := revokeUpstream(ctx, client, f.id, cleanupTimeout); err != nil {
			b.Logger().Warn("could not revoke the token of a failed creds request", "role", f.role, "token_id", f.id, "error", err)
			if liveLeft || f.expiresAt.IsZero() {
				b.queueFailedCreate(ctx, s, f, err)
			}
			return
		}
		b.Logger().Info("revoked the token of a failed creds request", "role", f.role, "token_id", f.id)
	}
	b.dropPending(ctx, s, f.role, f.key)
}

// cleanUpFailedCreate is the in-request clean-up of a create whose outcome
// is unknown: undoCreate, again while the original is still in flight (409)
// and once more after another failure, within cleanupTimeout. It deletes the
// issuance record when nothing is left; otherwise the periodic rollback
// finishes the job.
func (b *tookenBackend) cleanUpFailedCreate(ctx context.Context, s logical.Storage, client *tookenapi.Client, body tookenapi.CreateTokenRequest, key, roleName string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var err error
	for attempt := 0; ; attempt++ {
		var tokenID string
		if tokenID, err = undoCreate(ctx, client, body, key, cleanupTimeout); err == nil {
			b.dropPending(ctx, s, roleName, key)
			return
		}
		inFlight := errors.Is(err, tookenapi.ErrConflict)
		if tokenID != "" || (inFlight && attempt >= maxCleanupInFlightWaits) || (!inFlight && attempt >= maxCleanupRounds) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(tookenapi.Backoff(200*time.Millisecond, 2*time.Second, attempt)):
			continue
		}
		break
	}
	b.Logger().Warn("could not clean up after a failed token creation now: the periodic rollback will",
		"role", roleName, "issue_key", key, "error", err)
}

// credsReadBudget is the longest a creds read can run with cfg from its
// pending write to its end: every attempt of the create with the waits
// between them, the clean-up of a failed one, and credsReadMargin.
func credsReadBudget(cfg *tookenConfig) time.Duration {
	attempts := time.Duration(cfg.MaxRetries+1)*cfg.RequestTimeout + time.Duration(cfg.MaxRetries)*tookenapi.MaxRetryWait
	return attempts + cleanupTimeout + credsReadMargin
}

// credsReadMargin is added to a creds read's budget for what the budget does
// not see: the clocks of Vault and Tooken (a token's created_at is Tooken's),
// scheduling on a loaded node.
const credsReadMargin = 30 * time.Second

const (
	// cleanupTimeout bounds the in-request clean-up of a failed creation.
	cleanupTimeout          = 15 * time.Second
	maxCleanupRounds        = 1  // extra replays after an indefinite failure
	maxCleanupInFlightWaits = 10 // replays while the original is still in flight
)

const pathCredsHelpSyn = `Issue a Tooken token for a role.`

const pathCredsHelpDesc = `
Reading creds/<role> creates a new Tooken token with the role's scopes and
metadata, the requester's identity metadata listed in the role's
identity_metadata, and the engine's vault_role, vault_mount_uuid,
vault_mount_accessor (when Vault passes it) and vault_issue_key; it returns
token (the secret), token_id, name, scopes and expires_at under a renewable
lease.

The lease TTL is the role's ttl (the mount's default when unset). The token
expires upstream at issue time + the role's max_ttl (capped by the mount's max
lease TTL and 366 days): renewals extend the lease up to that point and no
further. Revoking the lease, or its expiry, revokes the token upstream.

Two fields narrow one token: ttl (at least 10s, at most that max) becomes
both its upstream lifetime and its lease, renewals included; scopes (a
subset of the role's, R:write covering R:read) become its scopes. For
example: vault read tooken/creds/ci-deploy ttl=15m scopes=deployments:read.
A value outside those bounds is refused, and nothing is created.
`

// queueFailedCreate queues the revoke of a failed creds read's token that
// its pending record does not guard: its live record could not be deleted
// (the rollback takes a pending record with a live one for a lease's, so it
// would not kill that token), or Tooken's answer did not keep the expiry
// asked for (the record is dropped at that expiry, which the token may
// outlive). The entry records where the token was issued, and its expiry
// (the drain drops it then; zero: unknown, only Tooken's answer ends it).
func (b *tookenBackend) queueFailedCreate(ctx context.Context, s logical.Storage, f failedIssue, cause error) {
	dest := f.dest
	if err := b.queueRevoke(ctx, s, f.id, issuanceRef{role: f.role, key: f.key}, f.expiresAt, &dest, cause); err != nil {
		b.Logger().Error("could not queue the revoke of a failed creds request's token; it lives until its expires_at", "role", f.role, "token_id", f.id, "error", err)
	}
}
