package tooken

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// otherMountUUID is the backend UUID of a second mount of the engine on the
// same Tooken account.
const otherMountUUID = "0f0e0d0c-1a2b-4c3d-8e4f-5a6b7c8d9e0f"

// operatorToken creates a token at srv as its bootstrap root, the way an
// operator made it before Vault managed it, and returns it with its secret.
func operatorToken(t *testing.T, srv *tookentest.Server, req tookenapi.CreateTokenRequest) *tookenapi.Token {
	t.Helper()
	c, err := tookenapi.New(tookenapi.Options{BaseURL: srv.URL(), Secret: srv.RootSecret()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok, err := c.CreateToken(context.Background(), req, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// patchMetadata changes token id's metadata at srv as the bootstrap root
// (an operator's PATCH): set is merged, remove deleted.
func patchMetadata(t *testing.T, srv *tookentest.Server, id string, set map[string]string, remove ...string) {
	t.Helper()
	c, err := tookenapi.New(tookenapi.Options{BaseURL: srv.URL(), Secret: srv.RootSecret()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.UpdateToken(context.Background(), id, tookenapi.UpdateTokenRequest{Metadata: set, RemoveMetadata: remove}); err != nil {
		t.Fatal(err)
	}
}

// secondMount is another mount of the engine (its own backend UUID and
// storage) on srv's Tooken, configured with secret as its root and a role r.
func secondMount(t *testing.T, srv *tookentest.Server, secret string) *testEnv {
	t.Helper()
	e := getTestBackend(t, func(c *logical.BackendConfig) { c.BackendUUID = otherMountUUID })
	must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": secret}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	return e
}

// markOf is token id's vault_custody metadata at srv ("" without one).
func markOf(t *testing.T, srv *tookentest.Server, id string) string {
	t.Helper()
	rec, ok := srv.Token(id)
	if !ok {
		t.Fatalf("Tooken has no token %s", id)
	}
	return rec.Metadata[metaCustody]
}

// rotationsAt counts the rotations of token id that srv carried out (a
// replay answered from its idempotency store is not one).
func rotationsAt(srv *tookentest.Server, id string) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Path == "/v1/tokens/"+id+"/rotate" && r.Status == 200 && !r.Replayed {
			n++
		}
	}
	return n
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

// works tells whether Tooken accepts secret now.
func works(srv *tookentest.Server, secret string) bool {
	_, ok := srv.Authenticate(secret)
	return ok
}

// "After set-up nobody but Vault knows the root secret": a static role of
// one mount cannot take the root token of another mount on the same Tooken
// account, although its root could rotate it (tokens:write and every scope
// of it). The other mount's root carries its custody mark since its config
// write; the import is refused, nothing is stored or rotated, and the other
// mount keeps working.
func TestCustody_StaticRoleRefusesAnotherMountsRoot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	a := getTestBackend(t)
	a.configure(srv, nil)
	bRoot := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "mount-b-root", Scopes: []string{"tokens:write", "deployments:write"}})
	b := secondMount(t, srv, bRoot.Secret)
	must(t)(b.write(rotateRootPath, nil)) // only Vault knows mount b's root secret now
	must(t)(b.read("creds/r"))
	if got, want := markOf(t, srv, bRoot.ID), "root:"+otherMountUUID; got != want {
		t.Fatalf("mount b's root carries %s %q, want %q", metaCustody, got, want)
	}
	rotations := rotationsAt(srv, bRoot.ID)

	resp, err := a.write(staticRolesPath+"steal", map[string]any{"token_id": bRoot.ID, "rotation_period": "1h", "rotation_grace": 0})
	if err == nil && resp != nil && !resp.IsError() {
		stolen, _ := must(t)(a.read(staticCredsPath + "steal")).Data["token"].(string)
		rec, ok := srv.Authenticate(stolen)
		t.Fatalf("mount a imported mount b's root token %s as a static role: static-creds/steal serves a secret that Tooken accepts as %s (ok=%v); mount b's creds read afterwards: %s",
			bRoot.ID, rec.ID, ok, outcome(b.read("creds/r")))
	}
	mustUserError(t, resp, err, "token_id: "+bRoot.ID, "the root token of another mount", otherMountUUID, "a static role cannot take it", "PATCH /tokens/"+bRoot.ID)
	if r, _ := readStaticRole(context.Background(), a.storage, "steal"); r != nil {
		t.Fatal("the refused import stored a role")
	}
	if n := rotationsAt(srv, bRoot.ID); n != rotations {
		t.Fatalf("the refused import rotated mount b's root (%d rotations, %d before)", n, rotations)
	}
	must(t)(b.read("creds/r"))
}

// "A token is never revoked, nor its secret changed, while its lease
// lives": a static role cannot take a token that creds issued, this
// mount's or another's (it carries vault_mount_uuid and vault_issue_key).
// The lease holder's secret keeps working and nothing is stored.
func TestCustody_StaticRoleRefusesACredsToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	other := secondMount(t, srv, operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "mount-b-root", Scopes: []string{"tokens:write", "deployments:write"}}).Secret)

	for name, tc := range map[string]struct {
		mount *testEnv
		want  string
	}{
		"this mount's":    {e, `was issued by creds of role "r" of this mount`},
		"another mount's": {other, `was issued by creds of role "r" of another mount (mount_uuid "` + otherMountUUID + `")`},
	} {
		t.Run(name, func(t *testing.T) {
			creds := must(t)(tc.mount.read("creds/r"))
			id, secret := creds.Data["token_id"].(string), creds.Data["token"].(string)
			resp, err := e.write(staticRolesPath+"taken", map[string]any{"token_id": id, "rotation_period": "1h", "rotation_grace": 0})
			if err == nil && resp != nil && !resp.IsError() {
				t.Fatalf("a static role took custody of creds token %s; the lease holder's secret still works: %v", id, works(srv, secret))
			}
			mustUserError(t, resp, err, "token_id: "+id, tc.want, "belongs to a Vault lease")
			if !works(srv, secret) || rotationsAt(srv, id) != 0 {
				t.Fatalf("the refused import changed creds token %s: secret works %v, rotations %d", id, works(srv, secret), rotationsAt(srv, id))
			}
			if r, _ := readStaticRole(context.Background(), e.storage, "taken"); r != nil {
				t.Fatal("the refused import stored a role")
			}
			if _, has := mustToken(t, srv, id).Metadata[metaCustody]; has {
				t.Fatal("the refused import marked the creds token")
			}
		})
	}
}

func mustToken(t *testing.T, srv *tookentest.Server, id string) tookentest.TokenRecord {
	t.Helper()
	rec, ok := srv.Token(id)
	if !ok {
		t.Fatalf("Tooken has no token %s", id)
	}
	return rec
}

// The mark is one metadata key merged into the token's own metadata: an
// import and the root's config write keep every other key, a delete of the
// static role removes the mark only (and another mount may then take the
// token). A token with Tooken's 20 keys and no mark cannot be marked: its
// import is refused and nothing changes; such a root is stored with a
// warning.
func TestCustody_MarksKeepTheTokensMetadata(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	root := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "vault-root", Scopes: []string{"tokens:write", "deployments:write"}, Metadata: map[string]string{"purpose": "vault"}})
	e := getTestBackend(t)
	must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": root.Secret}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	if md := mustToken(t, srv, root.ID).Metadata; md["purpose"] != "vault" || md[metaCustody] != "root:"+testMountUUID || len(md) != 2 {
		t.Fatalf("root's metadata after the config write: %v", md)
	}

	app := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "app", Scopes: []string{"deployments:write"}, Metadata: map[string]string{"team": "api", "env": "prod"}})
	must(t)(e.write(staticRolesPath+"app", map[string]any{"token_id": app.ID, "rotation_period": "1h"}))
	want := map[string]string{"team": "api", "env": "prod", metaCustody: "static:" + testMountUUID + ":app"}
	if md := mustToken(t, srv, app.ID).Metadata; fmt.Sprint(md) != fmt.Sprint(want) {
		t.Fatalf("metadata after the import: %v, want %v", md, want)
	}
	resp := must(t)(e.del(staticRolesPath + "app"))
	delete(want, metaCustody)
	if md := mustToken(t, srv, app.ID).Metadata; fmt.Sprint(md) != fmt.Sprint(want) {
		t.Fatalf("metadata after the delete: %v, want %v (warnings %v)", md, want, resp.Warnings)
	}
	other := secondMount(t, srv, operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "mount-b-root", Scopes: []string{"tokens:write", "deployments:write"}}).Secret)
	must(t)(other.write(staticRolesPath+"app", map[string]any{"token_id": app.ID, "rotation_period": "1h"}))
	if got := markOf(t, srv, app.ID); got != "static:"+otherMountUUID+":app" {
		t.Fatalf("mark after the other mount's import: %q", got)
	}

	full := map[string]string{}
	for i := range maxMetadataKeys {
		full[fmt.Sprintf("k%02d", i)] = "v"
	}
	crowded := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "crowded", Scopes: []string{"deployments:write"}, Metadata: full})
	r, err := e.write(staticRolesPath+"crowded", map[string]any{"token_id": crowded.ID, "rotation_period": "1h"})
	mustUserError(t, r, err, "token_id: "+crowded.ID, "20 metadata keys", "remove one of its metadata keys")
	if got, _ := readStaticRole(context.Background(), e.storage, "crowded"); got != nil || rotationsAt(srv, crowded.ID) != 0 || len(mustToken(t, srv, crowded.ID).Metadata) != maxMetadataKeys {
		t.Fatalf("the refused import changed something: role %v, rotations %d", got, rotationsAt(srv, crowded.ID))
	}

	crowdedRoot := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "crowded-root", Scopes: []string{"tokens:write", "deployments:write"}, Metadata: full})
	r = must(t)(e.write(configPath, map[string]any{"token": crowdedRoot.Secret}))
	if r == nil || !containsAll(strings.Join(r.Warnings, "\n"), crowdedRoot.ID, "could not be marked", "20 metadata keys") {
		t.Fatalf("config write of a root with 20 metadata keys: %v", r)
	}
	must(t)(e.read("creds/r"))
}

// A mark of this mount that its storage does not confirm is stale: a static
// role deleted while Tooken was down keeps its mark (the delete warns),
// another mount refuses the token and says how to remove the mark, and this
// mount takes it again under another name.
func TestCustody_StaleMarkOfThisMount(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	app := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "app", Scopes: []string{"deployments:write"}})
	must(t)(e.write(staticRolesPath+"old", map[string]any{"token_id": app.ID, "rotation_period": "1h"}))
	srv.SetDown(true)
	resp := must(t)(e.del(staticRolesPath + "old"))
	srv.SetDown(false)
	if resp == nil || !containsAll(strings.Join(resp.Warnings, "\n"), app.ID, "keeps its vault_custody metadata") {
		t.Fatalf("delete with Tooken down: %v", resp)
	}
	if got := markOf(t, srv, app.ID); got != "static:"+testMountUUID+":old" {
		t.Fatalf("mark %q", got)
	}

	other := secondMount(t, srv, operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "mount-b-root", Scopes: []string{"tokens:write", "deployments:write"}}).Secret)
	r, err := other.write(staticRolesPath+"app", map[string]any{"token_id": app.ID, "rotation_period": "1h"})
	mustUserError(t, r, err, "token_id: "+app.ID, `managed by static role "old" of another mount`, testMountUUID, `{"metadata": {"vault_custody": null}}`)

	must(t)(e.write(staticRolesPath+"new", map[string]any{"token_id": app.ID, "rotation_period": "1h"}))
	if got := markOf(t, srv, app.ID); got != "static:"+testMountUUID+":new" {
		t.Fatalf("mark after the import as new: %q", got)
	}
}

// The check of a static role every 3 minutes marks a token that carries no
// mark (a role imported by an earlier version). A token that another
// custody has marked since (another mount's import racing this one's, or a
// hand-made PATCH) is no longer managed: no rotation, static-creds and
// rotate-role answer 400 saying why, a write of the role is refused while
// the other mark stays, and takes the token back once it is gone.
func TestCustody_CheckMarksAndLosesCustody(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "1h"})
	ours := "static:" + testMountUUID + ":app"
	checks := func(until func() bool) {
		t.Helper()
		for range 6 {
			e.emuTime.advance(time.Minute)
			e.periodicRun()
			if until() {
				return
			}
		}
		t.Fatal("six minutes of periodic runs did not get there")
	}

	patchMetadata(t, e.srv, id, nil, metaCustody) // as an earlier version left it
	checks(func() bool { return markOf(t, e.srv, id) == ours })

	theirs := "static:" + otherMountUUID + ":thief"
	patchMetadata(t, e.srv, id, map[string]string{metaCustody: theirs})
	checks(func() bool { return e.storedStatic("app").CustodyLostAt != nil })
	rotations := e.rotationsOf(id)
	read := must(t)(e.read(staticRolesPath + "app"))
	if read.Data["next_rotation"] != nil || !containsAll(strings.Join(read.Warnings, "\n"), id, `managed by static role "thief" of another mount`, "stopped rotating") {
		t.Fatalf("read of a role whose token another custody took: %v %v", read.Data, read.Warnings)
	}
	r, err := e.read(staticCredsPath + "app")
	mustUserError(t, r, err, `static role "app"`, "another mount", "static-creds answers an error")
	r, err = e.rotateRole("app")
	mustUserError(t, r, err, `static role "app"`, "another custody holds the token")
	e.emuTime.advance(2 * time.Hour)
	e.periodicRun()
	if n := e.rotationsOf(id); n != rotations {
		t.Fatalf("%d rotations of a token in another custody", n-rotations)
	}
	r, err = e.write(staticRolesPath+"app", map[string]any{"description": "again"})
	mustUserError(t, r, err, "token_id: "+id, "another mount", "PATCH /tokens/"+id)
	if markOf(t, e.srv, id) != theirs {
		t.Fatal("the refused write changed the other custody's mark")
	}

	patchMetadata(t, e.srv, id, nil, metaCustody)
	must(t)(e.write(staticRolesPath+"app", map[string]any{"description": "again"}))
	if markOf(t, e.srv, id) != ours || e.storedStatic("app").CustodyLostAt != nil {
		t.Fatalf("the write did not take the token back: mark %q", markOf(t, e.srv, id))
	}
	e.staticCreds("app", id)
	must(t)(e.rotateRole("app"))
}

// "Rotation never locks Vault out for any accepted config": a config stored
// without verification whose secret is a static role's token is accepted
// (nothing can be checked), but its rotation is refused before anything
// changes upstream, and the static role keeps working. A root configured by
// an earlier version (no mark) gets its mark at its next rotation.
func TestCustody_RootRotationChecksCustody(t *testing.T) {
	e := newStaticEnv(t, nil)
	patchMetadata(t, e.srv, e.rootID, nil, metaCustody)
	must(t)(e.rotate())
	if got := markOf(t, e.srv, e.rootID); got != "root:"+testMountUUID {
		t.Fatalf("the root after a rotation carries %q", got)
	}

	id, _ := e.appToken("ops", "tokens:write", "deployments:write")
	e.mustImport("ops", id, map[string]any{"rotation_grace": 0})
	opsSecret := e.staticCreds("ops", id)
	must(t)(e.write(configPath, map[string]any{"token": opsSecret, "verify_connection": false}))
	rotations := e.rotationsOf(id)
	resp, err := e.rotate()
	var coded logical.HTTPCodedError
	if err == nil || !containsAll(err.Error(), "root rotation refused", id, `managed by static role "ops" of this mount`, "nothing was changed") || !errors.As(err, &coded) || coded.Code() != 409 {
		t.Fatalf("rotate-root of a static role's token: %v %v", resp, err)
	}
	if n := e.rotationsOf(id); n != rotations || !works(e.srv, opsSecret) {
		t.Fatalf("the refused rotation changed the static role's token: %d rotations, secret works %v", n-rotations, works(e.srv, opsSecret))
	}
	if msg := e.storedConfig().LastRotationError; !strings.Contains(msg, "root rotation refused") {
		t.Fatalf("last_rotation_error %q", msg)
	}
	e.staticCreds("ops", id)
}

// A mark is metadata that any token with tokens:write may have written:
// what a refusal quotes of it is shortened and never a secret.
func TestCustody_MarkValuesQuotedSafely(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	secret := srv.RootSecret()
	for name, mark := range map[string]string{
		"a role name holding a secret": "static:" + otherMountUUID + ":" + secret,
		"a mount holding a secret":     "root:" + secret,
		"an unknown mark":              secret + strings.Repeat("x", 10000),
	} {
		t.Run(name, func(t *testing.T) {
			app := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "app", Scopes: []string{"deployments:write"}, Metadata: map[string]string{metaCustody: mark[:min(len(mark), maxMetadataValueLen)]}})
			resp, err := e.write(staticRolesPath+"app", map[string]any{"token_id": app.ID, "rotation_period": "1h"})
			mustUserError(t, resp, err, "token_id: "+app.ID)
			// Not even a part of the secret long enough to be one.
			if msg := resp.Error().Error(); strings.Contains(msg, secret[:24]) || len(msg) > 1000 {
				t.Fatalf("the refusal quotes the mark unsafely (%d bytes): %s", len(msg), msg)
			}
		})
	}
}
