package tooken

// Findings of an adversarial review, each a test that fails on the engine as
// it stands. Every test says, in its comment, the promise it holds the
// engine to; the message of a failure says what happened instead.

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// Promise: "after set-up nobody but Vault knows the root Tooken secret", and
// a static role is "not the root itself". A static role of one mount may
// take custody of the root token of another mount on the same Tooken (its
// root can rotate it: tokens:write and every scope of it). The import
// rotates it with rotation_grace=0: the other mount is locked out at once,
// and whoever may read static-creds of the first mount now holds the other
// mount's root secret. Nothing upstream tells the engine that the token is
// another mount's root; the engine could mark its root (metadata) and refuse
// to import a token so marked.
func TestReview_StaticRoleTakesAnotherMountsRoot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	a := getTestBackend(t)
	a.configure(srv, nil)
	bRoot := rootCreate(t, srv, "mount-b-root", "tokens:write", "deployments:write")
	b := otherMount(t, srv, bRoot.Secret)
	must(t)(b.write(rotateRootPath, nil)) // only Vault knows mount b's root secret now
	must(t)(b.read("creds/r"))

	resp, err := a.write(staticRolesPath+"steal", map[string]any{"token_id": bRoot.ID, "rotation_period": "1h", "rotation_grace": 0})
	if err == nil && resp != nil && resp.IsError() {
		return // refused: what the promise needs
	}
	stolen, _ := must(t)(a.read(staticCredsPath + "steal")).Data["token"].(string)
	rec, ok := srv.Authenticate(stolen)
	t.Fatalf("mount a imported mount b's root token %s as a static role (err=%v): static-creds/steal now serves a secret that "+
		"Tooken accepts as %s (ok=%v); mount b's creds read afterwards: %s",
		bRoot.ID, err, rec.ID, ok, outcome(b.read("creds/r")))
}

// Promise: a token is never revoked (nor its secret changed) while its lease
// lives. A static role may take custody of a token that creds issued (this
// mount's or another's; it carries vault_mount_uuid and vault_issue_key
// metadata): the import rotates it, so the lease holder's secret stops
// working while the lease lives (at once with rotation_grace=0), the
// operator reading static-creds gets a secret of a token cut for someone
// else, and the lease's revoke later kills the static role's token.
func TestReview_StaticRoleTakesACredsToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	creds := must(t)(e.read("creds/r"))
	id, secret := creds.Data["token_id"].(string), creds.Data["token"].(string)

	resp, err := e.write(staticRolesPath+"taken", map[string]any{"token_id": id, "rotation_period": "1h", "rotation_grace": 0})
	if err == nil && resp != nil && resp.IsError() {
		return
	}
	_, stillWorks := srv.Authenticate(secret)
	t.Fatalf("a static role took custody of creds token %s (err=%v); the lease holder's secret still works: %v", id, err, stillWorks)
}

// Promise: "one token, one static role: two would each kill the other's
// secret". The check (staticClaimProblem) and the claim (putStaticTokenOwner)
// are not atomic: they run under the lock of the role's name, not of the
// token, around a call to Tooken. Two creates of different names for one
// token at once both pass the check, both import, both rotate.
func TestReview_TwoStaticRolesOnOneTokenRace(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	tok := rootCreate(t, srv, "shared", "deployments:write")
	srv.AddFault(tookentest.Fault{Method: http.MethodGet, Path: "/v1/tokens/" + tok.ID, Latency: 300 * time.Millisecond})

	var wg sync.WaitGroup
	results := make([]string, 2)
	for i, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.write(staticRolesPath+name, map[string]any{"token_id": tok.ID, "rotation_period": "1h"})
			switch {
			case err != nil:
				results[i] = "error: " + err.Error()
			case resp != nil && resp.IsError():
				results[i] = "refused: " + resp.Error().Error()
			default:
				results[i] = "imported"
			}
		}()
	}
	wg.Wait()
	if results[0] == "imported" && results[1] == "imported" {
		a, _ := readStaticRole(context.Background(), e.storage, "a")
		b, _ := readStaticRole(context.Background(), e.storage, "b")
		t.Fatalf("two static roles manage token %s (a: %s, b: %s); Tooken rotated it %d times; "+
			"static-creds/a works: %v, static-creds/b works: %v (the periodic check then rotates each again in turn)",
			tok.ID, a.TokenID, b.TokenID, srv.Counters()["rotated"], works(srv, a.Secret), works(srv, b.Secret))
	}
	t.Logf("results: %v", results)
}

// outcome describes a request's answer in a failure message.
func outcome(resp *logical.Response, err error) string {
	switch {
	case err != nil:
		return "error: " + err.Error()
	case resp != nil && resp.IsError():
		return "refused: " + resp.Error().Error()
	}
	return "ok"
}

func works(srv *tookentest.Server, secret string) bool {
	_, ok := srv.Authenticate(secret)
	return ok
}

// Promise: "rotation never locks Vault out for any accepted config". A
// config write accepts as root the secret of a token that a static role of
// the mount manages (read from static-creds). The next rotation of that
// static role (scheduled, rotate-role, or the periodic check's out-of-band
// repair after a rotate-root) gives the token a new secret with the role's
// grace (0 here): the config's root secret dies, the new one sits in the
// static role, and every creds read fails. The static-role import refuses
// the root; the config write does not refuse a managed token.
func TestReview_ConfigRootIsAStaticRolesToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	tok := rootCreate(t, srv, "ops", "tokens:write", "deployments:write")
	must(t)(e.write(staticRolesPath+"ops", map[string]any{"token_id": tok.ID, "rotation_period": "1h", "rotation_grace": 0}))
	opsSecret := must(t)(e.read(staticCredsPath + "ops")).Data["token"].(string)

	resp, err := e.write(configPath, map[string]any{"token": opsSecret})
	if err == nil && resp != nil && resp.IsError() {
		return // refused: the promise holds
	}
	must(t)(e.write(rotateRolePath+"ops", nil))
	stored, _ := readConfig(context.Background(), e.storage)
	t.Fatalf("config accepted the secret of static role ops's token %s as root (err=%v); after rotate-role/ops the stored root works: %v; creds read: %s",
		tok.ID, err, works(srv, stored.Token), outcome(e.read("creds/r")))
}

// Promise: "nobody but Vault knows the root", "rotation never locks Vault
// out", and "every token dies with its lease". A role may hand out
// tokens:write (or tokens:read): a creds holder can then revoke the root
// token (DELETE needs tokens:write only), rotate or revoke every other token
// of the account, and create tokens of its own that outlive its lease by up
// to 366 days, none of which tidy sees. The role write says nothing. A role
// granting tokens:* should be refused unless the operator says so
// explicitly (or at least warned about).
func TestReview_RoleGrantsTokenAdministration(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	resp, err := e.write("roles/admin", map[string]any{"scopes": "tokens:write", "ttl": "10m", "max_ttl": "1h"})
	if err != nil || (resp != nil && (resp.IsError() || len(resp.Warnings) > 0)) {
		return // refused or warned: the operator knows
	}
	creds := must(t)(e.read("creds/admin"))
	c, cerr := tookenapi.New(tookenapi.Options{BaseURL: srv.URL(), Secret: creds.Data["token"].(string)})
	if cerr != nil {
		t.Fatal(cerr)
	}
	defer c.Close()
	far := time.Now().Add(300 * 24 * time.Hour)
	child, childErr := c.CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: "mine", Scopes: []string{"tokens:write"}, ExpiresAt: &far}, "")
	revokeErr := c.RevokeToken(context.Background(), srv.RootTokenID())
	credsErr := outcome(e.read("creds/admin"))
	t.Fatalf("role admin (scopes=tokens:write) stored without a word; its creds minted a token expiring %v (err=%v) and revoked the root (err=%v); "+
		"the engine is locked out: creds read error %v", func() any {
		if child == nil {
			return nil
		}
		return child.ExpiresAt
	}(), childErr, revokeErr, credsErr)
}
