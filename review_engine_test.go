package tooken

// Findings of an adversarial review, each a test that fails on the engine as
// it stands. Every test says, in its comment, the promise it holds the
// engine to; the message of a failure says what happened instead.

import (
	"testing"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// Promise: "revoke (or expiry) of the lease calls DELETE /tokens/{id}";
// a token "already gone upstream (404) counts as revoked". After the config
// points to another Tooken (url and token written together, as the custody
// rule asks), the revoke of a lease issued at the first one goes to the
// second, whose proven 404 makes it "done": the lease and its record go, and
// the token lives on at the Tooken that issued it until its expires_at,
// invisible to tidy (which lists the new Tooken). The lease should carry
// the destination it was issued at, and a revoke elsewhere should not count.
func TestReview_RevokeAfterURLChangeGoesToTheWrongTooken(t *testing.T) {
	first := newEmulator(t, tookentest.Options{RateLimit: -1})
	second := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(first, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	resp := must(t)(e.read("creds/r"))
	secret := resp.Data["token"].(string)

	must(t)(e.write(configPath, map[string]any{"url": second.URL(), "token": second.RootSecret()}))
	must(t)(e.revoke(lease(resp)))
	if works(first, secret) && len(e.queueIDs()) == 0 {
		t.Fatalf("the lease revoke succeeded and queued nothing, but its token still works at the Tooken that issued it (%s); "+
			"the DELETE went to %s, whose 404 counted as revoked", first.URL(), second.URL())
	}
}
