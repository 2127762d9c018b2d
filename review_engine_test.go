package tooken

// Findings of an adversarial review, each a test that fails on the engine as
// it stands. Every test says, in its comment, the promise it holds the
// engine to; the message of a failure says what happened instead.

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

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

// Promise: an error "never repeats the value", "a secret never appears in
// an error message or an audit entry", and "every loop over user-controlled
// input has a bound". The request layer reports every field name it does
// not know, each quoted as given (unbounded, unredacted) and each followed
// by the list of the path's fields, all joined into one answer (and so into
// the audit log's error field, which Vault does not HMAC): a secret pasted
// as a field name is repeated, a name of a megabyte is repeated whole, and
// a body of many short unknown keys comes back some 20 times larger (a
// creds read's query string does the same for a caller who may only read
// creds).
func TestReview_UnknownFieldNamesEchoed(t *testing.T) {
	e := getTestBackend(t)
	t.Run("secret-shaped and huge names", func(t *testing.T) {
		secret := "tok_test_" + strings.Repeat("S", 30)
		huge := strings.Repeat("k", 1<<20)
		resp, err := e.write(configPath, map[string]any{secret: "x", huge: "y"})
		if err != nil {
			t.Fatal(err)
		}
		msg := resp.Error().Error()
		if strings.Contains(msg, secret) || len(msg) > 64<<10 {
			t.Fatalf("the answer (%d bytes) repeats the unknown field names: contains the secret-shaped name: %v", len(msg), strings.Contains(msg, secret))
		}
	})
	t.Run("many unknown fields", func(t *testing.T) {
		data, in := map[string]any{}, 0
		for i := range 50000 {
			k := "f" + strconv.Itoa(i)
			data[k] = ""
			in += len(k) + 4 // "k":"" plus a comma, as JSON
		}
		resp, err := e.handle(e.request(logical.ReadOperation, "creds/r", data))
		if err != nil {
			t.Fatal(err)
		}
		if out := len(resp.Error().Error()); out > 64<<10 {
			t.Fatalf("a creds read with %d unknown query fields (%d KiB) answered an error of %d KiB", len(data), in>>10, out>>10)
		}
	})
}
