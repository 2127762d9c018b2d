package tooken

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// How a static role takes custody of a token: the checks made before
// anything is stored (a field at fault gets a 400 naming it), and the import
// itself, with or without a rotation.

// staticLimitProblem tells why the mount cannot take another static role:
// it has the maximum. "" when it can.
func staticLimitProblem(ctx context.Context, s logical.Storage) (string, error) {
	names, err := listStaticRoles(ctx, s)
	if err != nil {
		return "", err
	}
	if len(names) >= maxStaticRoles {
		return fmt.Sprintf("name: this mount has the maximum of %d static roles; delete one first, or use another mount", maxStaticRoles), nil
	}
	return "", nil
}

// verifyStaticToken reads the token that static role name is to manage, as
// the root, and checks that no other custody holds it (custody_mark.go) and
// that the root can rotate it (tokens:write and every scope of the token).
// A caller's problem comes back as a message naming the field; an upstream
// failure as an error. The caller holds the token's lock.
func (b *tookenBackend) verifyStaticToken(ctx context.Context, s logical.Storage, cfg *tookenConfig, tokenID, name string) (*tookenapi.Token, string, error) {
	ctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err != nil {
		return nil, "", err
	}
	defer end()
	tok, err := auth.GetToken(ctx, tokenID)
	switch {
	case errors.Is(err, tookenapi.ErrNotFound):
		return nil, fmt.Sprintf("token_id: Tooken has no token %s (404 not_found): it does not exist, or was revoked or expired; check the id", tokenID), nil
	case errors.Is(err, tookenapi.ErrForbidden):
		return nil, fmt.Sprintf("token_id: the root token may not read %s (%v): rotating it needs tokens:write and every scope of the token", tokenID, err), nil
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return nil, "Tooken rejects the engine's root secret (401 unauthorized): write a working one to config first", nil
	case err != nil:
		return nil, "", upstreamError("reading token "+tokenID+" from Tooken", err)
	}
	rootScopes, rootID := cfg.Scopes, cfg.TokenID
	if rootID == "" {
		// A config stored without verification: ask.
		self, err := auth.Self(ctx)
		if err != nil {
			return nil, "", upstreamError("reading the root token from Tooken", err)
		}
		rootScopes, rootID = self.Scopes, self.ID
	}
	conflict, err := b.custodyHolder(ctx, s, tok, rootID, staticCustody(b.mountUUID, name))
	switch {
	case err != nil:
		return nil, "", err
	case conflict != nil:
		return nil, conflict.staticImportMessage(tokenID), nil
	}
	if missing := missingScopes(rootScopes, append([]string{"tokens:write"}, tok.Scopes...)); len(missing) > 0 {
		return nil, fmt.Sprintf("token_id: the root token cannot rotate %s: it lacks %s (rotating another token needs tokens:write and every scope of that token); give the root those scopes at Tooken", tokenID, strings.Join(missing, ", ")), nil
	}
	return tok, "", nil
}

// claimStatic marks tok as static role name's (custody_mark.go), as the root,
// and returns the token as Tooken then describes it. A caller's problem
// comes back as a message naming the field; an upstream failure as an error.
func (b *tookenBackend) claimStatic(ctx context.Context, s logical.Storage, cfg *tookenConfig, tok *tookenapi.Token, name string) (*tookenapi.Token, string, error) {
	ctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err != nil {
		return nil, "", err
	}
	defer end()
	marked, err := claimCustody(ctx, auth, tok, staticCustody(b.mountUUID, name))
	switch {
	case errors.Is(err, errMetadataFull):
		return nil, fmt.Sprintf("token_id: %s: %v as in this static role's custody; remove one of its metadata keys at Tooken and write again", tok.ID, err), nil
	case errors.Is(err, tookenapi.ErrForbidden), errors.Is(err, tookenapi.ErrScopeNotHeld):
		return nil, fmt.Sprintf("token_id: the root token may not update %s (%v): marking it as in this static role's custody needs tokens:write and every scope of the token", tok.ID, err), nil
	case err != nil:
		return nil, "", upstreamError("marking token "+tok.ID+" as in this static role's custody (PATCH /tokens/{id})", err)
	}
	return marked, "", nil
}

// releaseStatic removes static role name's mark from token tokenID, as the
// root, when the config still points to the Tooken r was written for. Best
// effort: it returns a warning for the caller when the mark may be left.
func (b *tookenBackend) releaseStatic(ctx context.Context, s logical.Storage, name string, r *staticRoleEntry) string {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil || !r.Dest.sameAs(cfg.destination()) {
		return ""
	}
	cctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err == nil {
		err = releaseCustody(cctx, auth, r.TokenID, staticCustody(b.mountUUID, name))
		end()
	}
	if err == nil {
		return ""
	}
	b.Logger().Warn("static role: removing its custody mark from the token failed", "role", name, "token_id", r.TokenID, "error", err)
	return fmt.Sprintf("token %s keeps its %s metadata naming this role (removing it failed: %v): another mount of this engine refuses the token until it is removed at Tooken", r.TokenID, metaCustody, err)
}

// verifyImportSecret checks with GET /tokens/self, at the config's url, that
// secret works and belongs to tokenID. The messages never quote the secret.
func (b *tookenBackend) verifyImportSecret(ctx context.Context, s logical.Storage, cfg *tookenConfig, tokenID, secret string) (string, error) {
	ctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err != nil {
		return "", err
	}
	defer end()
	self, err := auth.WithSecret(secret).Self(ctx)
	switch {
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return "token: Tooken rejects it (401 unauthorized): it is not a working secret (give the token's current secret, or leave skip_import_rotation false to let the engine rotate it)", nil
	case err != nil:
		return "", upstreamError("checking the token's secret (GET /tokens/self)", err)
	case self.ID != tokenID:
		return fmt.Sprintf("token: it is a secret of token %s, not of token_id %s; give the current secret of %s", self.ID, tokenID, tokenID), nil
	}
	return "", nil
}

// importSecretProblem checks the token field against skip_import_rotation on
// create: required with true, refused with false.
func importSecretProblem(skip bool, secret string, given bool) error {
	switch {
	case skip && secret == "":
		return errors.New("token: required with skip_import_rotation=true (the token's current secret; token=- reads it from stdin)")
	case !skip && given:
		return errors.New("token: only with skip_import_rotation=true (otherwise the engine rotates the token at once and never needs its current secret)")
	case skip && !secretRegex.MatchString(secret):
		// Never echo the value.
		return errors.New("token: not a Tooken secret (expected tok_live_ or tok_test_ followed by at least 20 letters or digits)")
	}
	return nil
}

// updateSecretProblem checks the token field on update: the engine holds
// the token's secret; giving it again (the same import written twice) is
// fine, another one is refused.
func updateSecretProblem(stored *staticRoleEntry, secret string, given bool) error {
	if !given {
		return nil
	}
	if stored.SkipImportRotation && subtle.ConstantTimeCompare([]byte(secret), []byte(stored.Secret)) == 1 {
		return nil
	}
	return errors.New("token: the engine holds the token's secret since the role was created and does not take another (rotate-role/<name> gives the token a new one)")
}

// importStatic stores the new role r of t with the secret it was given, or,
// without one, stores it and rotates the token at once so that only Vault
// knows its secret. The caller holds t's lock. A refused rotation stores
// nothing (the role is removed again); one whose outcome is unknown leaves
// the role without a secret, which the rollback gives it. It returns a
// response for the caller when the import did not complete.
func (b *tookenBackend) importStatic(ctx context.Context, s logical.Storage, t *staticTarget, r *staticRoleEntry) (*logical.Response, error) {
	if err := putStaticTokenOwner(ctx, s, r.TokenID, t.name); err != nil {
		return nil, err
	}
	if err := putStaticRole(ctx, s, t.name, r); err != nil {
		return nil, err
	}
	t.role = r
	if r.Secret != "" {
		return nil, nil
	}
	_, err := b.rotateLocked(ctx, s, t, "import")
	var re *rotationError
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, errRotationPending) && errors.As(err, &re):
		b.Logger().Error("static role import rotation is not finished", "role", t.name, "error", err)
		t.recordFailure(ctx, s, err.Error())
		return nil, logical.CodedError(re.status, re.msg+"; static-creds answers once it is finished")
	}
	// Nothing changed upstream: store nothing (and createStaticRole removes
	// the custody mark again).
	if derr := errors.Join(deleteStaticRole(ctx, s, t.name), deleteStaticTokenOwner(ctx, s, r.TokenID)); derr != nil {
		return nil, fmt.Errorf("%w; and removing the role again failed: %w", err, derr)
	}
	t.role = nil
	switch {
	case errors.Is(err, tookenapi.ErrNotFound), errors.Is(err, tookenapi.ErrForbidden):
		return logical.ErrorResponse("token_id: Tooken refuses to rotate %s: %v; nothing was stored", r.TokenID, errors.Unwrap(err)), nil
	case errors.As(err, &re):
		return nil, logical.CodedError(re.status, re.msg+"; nothing was stored")
	}
	return nil, err
}

// staticRotationResponse maps a rotate-role error onto the caller's answer.
func staticRotationResponse(err error) (*logical.Response, error) {
	var re *rotationError
	switch {
	case staticUnmanaged(err), errors.Is(err, errStaticCustodyLost):
		return logical.ErrorResponse(err.Error()), nil
	case errors.Is(err, tookenapi.ErrNotFound):
		return logical.ErrorResponse("token_id: Tooken no longer knows the token (404 not_found: it was revoked or expired); delete this static role"), nil
	case errors.As(err, &re):
		return nil, logical.CodedError(re.status, re.msg)
	}
	return nil, err
}

// errStaticBusy is rotate-role's answer while the role is locked.
func errStaticBusy(name string) error {
	return logical.CodedError(http.StatusConflict, fmt.Sprintf("a rotation of static role %q (or a write of it) is running: retry in a moment", name))
}
