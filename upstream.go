package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// defaultUpstreamCallTimeout bounds one upstream call of background work
// (rollback, queue drain, tidy).
const defaultUpstreamCallTimeout = 15 * time.Second

// revokeUpstream revokes a token within timeout. nil means Tooken confirms
// that it is dead: 204, or 404 (already gone counts as revoked). The client
// takes either only from a base URL proven a Tooken API (it proves it
// first, with GET /tokens/self), and no other 2xx: a 404 or 2xx from
// anything else (a base URL without /v1, a proxy, a catch-all front that
// answers 200 to every path) is an error like an outage, and the revoke is
// retried or queued.
func revokeUpstream(ctx context.Context, client *tookenapi.Client, id string, timeout time.Duration) error {
	return revokeIssuedAt(ctx, client, id, timeout, true)
}

// issuedElsewhere tells whether d, the destination a token or its create
// was recorded with (nil: not recorded, the config's then), is another than
// at.
func issuedElsewhere(d *secretDestination, at secretDestination) bool {
	return d != nil && !d.sameAs(at)
}

// errNotIssuedHere: the Tooken the config points to answers 404 to the
// revoke of a token issued at another destination (url or ca_cert). It says
// nothing of the Tooken that issued the token, where it may live on.
var errNotIssuedHere = errors.New("unknown to the Tooken the config points to (404), which did not issue it")

// revokeIssuedAt is revokeUpstream of a token that the client's Tooken
// issued (issuedHere), or that was issued at another destination than the
// client's: a url alias, a renewed CA of the same Tooken, or really another
// Tooken. The DELETE carries the root's secret to the config's url only, as
// every call does. For a token issued elsewhere only a 204 counts: token ids
// are random, so Tooken revoking it proves that it lived there; a 404 says
// nothing of the Tooken that issued it, and is errNotIssuedHere.
func revokeIssuedAt(ctx context.Context, client *tookenapi.Client, id string, timeout time.Duration, issuedHere bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := client.RevokeToken(ctx, id)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, tookenapi.ErrNotFound):
		return err
	case issuedHere:
		return nil
	}
	return fmt.Errorf("token %s is %w", id, errNotIssuedHere)
}

// undoCreate makes sure that the POST /tokens sent with key and body leaves
// no token alive: it replays the POST (same Idempotency-Key, same body, so
// Tooken answers with the token the first one created, or creates the one it
// never did) and revokes the token of the answer, each call within timeout.
// nil means nothing of it lives upstream; tokenID names the token when the
// replay told it. The in-request clean-up of a failed creds read and the
// periodic rollback both use it.
func undoCreate(ctx context.Context, client *tookenapi.Client, body tookenapi.CreateTokenRequest, key string, timeout time.Duration) (tokenID string, err error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	tok, err := client.CreateToken(cctx, body, key)
	cancel()
	switch {
	case err == nil && tok.ID != "":
		return tok.ID, revokeUpstream(ctx, client, tok.ID, timeout)
	case err == nil:
		return "", errors.New("replay answered without a token id")
	case createdNothing(err):
		// The key never created a token (e.g. 403, or a 400 for an
		// expires_at now in the past: nothing can be alive).
		return "", nil
	}
	return "", err
}

// createdNothing tells whether a create error proves that the key created
// nothing: a definitive 4xx that is not "in flight", "reused", "rate
// limited" or "unauthorized" (a broken root may recover and then the replay
// tells). A 404 from a base URL not proven a Tooken API is no APIError
// (tookenapi.ErrNotProven), so it proves nothing either.
func createdNothing(err error) bool {
	if errors.Is(err, tookenapi.ErrOutcomeUnknown) || errors.Is(err, tookenapi.ErrConflict) || errors.Is(err, tookenapi.ErrRateLimited) ||
		errors.Is(err, tookenapi.ErrUnauthorized) || errors.Is(err, tookenapi.ErrIdempotencyKeyReused) {
		return false
	}
	var apiErr *tookenapi.APIError
	return errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500
}

// upstreamError turns a client error into the error a Vault caller sees:
// 502 for upstream failures, so that they are not mistaken for Vault's own,
// saying what Tooken answered and what to do (upstreamProblem). Vault core
// prints such an error (any error a plugin returns, as opposed to a 400
// error response) under its own "1 error occurred:" line, so the text is one
// self-contained sentence or two.
func upstreamError(what string, err error) error {
	switch {
	case errors.Is(err, tookenapi.ErrScopeNotHeld), errors.Is(err, errNotConfigured):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	}
	return logical.CodedError(http.StatusBadGateway, what+": "+upstreamProblem(err))
}
