package tooken

// Helpers of the review findings' tests.

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// rootCreate creates a token at srv as its bootstrap root and returns it
// (with its secret).
func rootCreate(t *testing.T, srv *tookentest.Server, name string, scopes ...string) *tookenapi.Token {
	t.Helper()
	c, err := tookenapi.New(tookenapi.Options{BaseURL: srv.URL(), Secret: srv.RootSecret()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok, err := c.CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: name, Scopes: scopes}, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// otherMount is a second mount of the engine (its own backend and storage)
// configured with secret as its root, on the same Tooken as srv.
func otherMount(t *testing.T, srv *tookentest.Server, secret string) *testEnv {
	t.Helper()
	e := getTestBackend(t, func(c *logical.BackendConfig) { c.BackendUUID = "0f0e0d0c-other-mount" })
	must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": secret}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	return e
}
