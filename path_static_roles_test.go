package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// Every field read back, with its default, after valid creates.
func TestStaticRoles_Fields(t *testing.T) {
	cases := []struct {
		name  string
		data  map[string]any
		check map[string]any
		warn  string
	}{
		{name: "defaults", data: map[string]any{"rotation_period": "24h"}, check: map[string]any{
			"rotation_period": int64(86400), "rotation_schedule": "", "rotation_window": "", "rotation_grace": int64(300),
			"skip_import_rotation": false, "description": "", "rotation_failures": 0, "last_rotation_error": "", "last_rotation_error_at": nil,
		}},
		{name: "schedule, window, grace, description", data: map[string]any{
			"rotation_schedule": "0 3 * * *", "rotation_window": "02:00-04:00", "rotation_grace": "2h", "description": "the API server, prod",
		}, check: map[string]any{
			"rotation_period": int64(0), "rotation_schedule": "0 3 * * *", "rotation_window": "02:00-04:00", "rotation_grace": int64(7200), "description": "the API server, prod",
		}},
		{name: "grace 0 warns", data: map[string]any{"rotation_grace": 0}, check: map[string]any{"rotation_grace": int64(0)}, warn: "rotation_grace 0s is below 1m"},
		{name: "grace at the contract's limit", data: map[string]any{"rotation_grace": 86400}, check: map[string]any{"rotation_grace": int64(86400)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newStaticEnv(t, nil)
			id, _ := e.appToken("api-server-prod", "deployments:write", "billing:read")
			resp := e.mustImport("api", id, tc.data)
			if tc.warn != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tc.warn) {
				t.Fatalf("warnings %v, want %q", resp.Warnings, tc.warn)
			}
			got := must(t)(e.read(staticRolesPath + "api")).Data
			for k, v := range tc.check {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			if got["token_id"] != id || got["name"] != "api-server-prod" || fmt.Sprint(got["scopes"]) != "[deployments:write billing:read]" {
				t.Errorf("the token as Tooken describes it: %v", got)
			}
			for _, k := range []string{"last_rotated", "next_rotation", "previous_secret_expires_at"} {
				parseRFC3339(t, got[k])
			}
			if _, ok := got["token"]; ok {
				t.Fatal("a read answers the token")
			}
			if keys := must(t)(e.list(staticRolesPath)).Data["keys"]; fmt.Sprint(keys) != "[api]" {
				t.Fatalf("list = %v", keys)
			}
		})
	}
}

// Bad input on create: a 400 naming the field (every field at fault at
// once), the value of a secret never quoted, and nothing stored nor changed
// upstream.
func TestStaticRoles_BadCreate(t *testing.T) {
	secretShaped := "tok_test_" + strings.Repeat("S", 30)
	cases := []struct {
		name string
		// data for static-roles/<role>; "$id" is replaced by the app token's
		// id, "$secret" by its secret, "$other" by another token's secret.
		data map[string]any
		role string
		want []string
	}{
		{name: "no token_id", data: map[string]any{"rotation_period": "1h"}, want: []string{"token_id: required"}},
		{name: "no token_id, and more", data: map[string]any{"rotation_period": "30s", "rotation_grace": 90000}, want: []string{"token_id: required when creating", "rotation_period: must be between", "rotation_grace: must be between"}},
		{name: "a secret as token_id", data: map[string]any{"token_id": secretShaped, "rotation_period": "1h"}, want: []string{"token_id: not a Tooken token id"}},
		{name: "both schedules", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "rotation_schedule": "0 3 * * *"}, want: []string{"exactly one of them"}},
		{name: "no schedule", data: map[string]any{"token_id": "$id"}, want: []string{"one of them is required"}},
		{name: "period too short", data: map[string]any{"token_id": "$id", "rotation_period": "30s"}, want: []string{"rotation_period: must be between 1m and 366d"}},
		{name: "cron not a cron", data: map[string]any{"token_id": "$id", "rotation_schedule": "daily"}, want: []string{"rotation_schedule:"}},
		{name: "cron with a time zone", data: map[string]any{"token_id": "$id", "rotation_schedule": "TZ=UTC"}, want: []string{"rotation_schedule:", "time zones"}},
		{name: "cron never fires", data: map[string]any{"token_id": "$id", "rotation_schedule": "0 0 30 2 *"}, want: []string{"rotation_schedule:", "never fires"}},
		{name: "bad window", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "rotation_window": "25:00-26:00"}, want: []string{"rotation_window:"}},
		{name: "grace above the contract", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "rotation_grace": 86401}, want: []string{"rotation_grace: must be between 0s and 24h"}},
		{name: "grace negative", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "rotation_grace": -1}, want: []string{"rotation_grace"}},
		{name: "description too long", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "description": strings.Repeat("d", 1025)}, want: []string{"description: at most 1024"}},
		{name: "name too long", role: strings.Repeat("n", 129), data: map[string]any{"token_id": "$id", "rotation_period": "1h"}, want: []string{"name: at most 128"}},
		{name: "all at once", data: map[string]any{"token_id": "nope", "rotation_period": "10s", "rotation_window": "x", "rotation_grace": 90000},
			want: []string{"token_id:", "rotation_period:", "rotation_window:", "rotation_grace:"}},
		{name: "skip without token", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "skip_import_rotation": true}, want: []string{"token: required with skip_import_rotation=true"}},
		{name: "skip with a token that is no secret", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "skip_import_rotation": true, "token": "hunter2-private"}, want: []string{"token: not a Tooken secret"}},
		{name: "token without skip", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "token": "$secret"}, want: []string{"token: only with skip_import_rotation=true"}},
		{name: "skip with a dead secret", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "skip_import_rotation": true, "token": secretShaped}, want: []string{"token: Tooken rejects it (401"}},
		{name: "skip with another token's secret", data: map[string]any{"token_id": "$id", "rotation_period": "1h", "skip_import_rotation": true, "token": "$other"}, want: []string{"token: it is a secret of token"}},
		{name: "unknown token", data: map[string]any{"token_id": "tkn_000000000000000000000000", "rotation_period": "1h"}, want: []string{"token_id: Tooken has no token tkn_000000000000000000000000 (404"}},
		{name: "the root itself", data: map[string]any{"token_id": "$root", "rotation_period": "1h"}, want: []string{"token_id:", "is the engine's root token"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newStaticEnv(t, nil)
			id, secret := e.appToken("app")
			_, other := e.appToken("other")
			data := map[string]any{}
			for k, v := range tc.data {
				switch v {
				case "$id":
					v = id
				case "$secret":
					v = secret
				case "$other":
					v = other
				case "$root":
					v = e.rootID
				}
				data[k] = v
			}
			role := tc.role
			if role == "" {
				role = "app"
			}
			before := e.srv.Counters()["rotated"]
			resp, err := e.write(staticRolesPath+role, data)
			mustUserError(t, resp, err, tc.want...)
			msg := resp.Error().Error()
			for _, s := range []string{secretShaped, secret, other, "hunter2-private"} {
				if strings.Contains(msg, s) {
					t.Fatalf("the error quotes a secret: %s", msg)
				}
			}
			e.mustNothingStored()
			if n := e.srv.Counters()["rotated"]; n != before {
				t.Fatalf("a rejected create rotated upstream (%d)", n-before)
			}
			e.mustNoSecretsLogged(secret, other, secretShaped)
		})
	}
}

// The root must be able to rotate the token: tokens:write and every scope of
// the token (the contract's rule for rotating another token).
func TestStaticRoles_RootLacksScopes(t *testing.T) {
	e := newStaticEnv(t, nil)
	appID, _ := e.appToken("app", "deployments:write")
	// A narrower root: it holds tokens:write and billing:read only.
	narrow, err := e.client().CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: "narrow-root", Scopes: []string{"tokens:write", "billing:read"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	must(t)(e.write(configPath, map[string]any{"token": narrow.Secret}))
	resp, err := e.importRole("app", appID, nil)
	mustUserError(t, resp, err, "token_id: the root token cannot rotate "+appID, "lacks deployments:write")
	e.mustNothingStored()

	// A root without verification (scopes unknown): the engine asks.
	must(t)(e.write(configPath, map[string]any{"verify_connection": false, "url": e.srv.URL() + "/"}))
	if cfg := e.storedConfig(); cfg.TokenID != "" {
		t.Fatalf("the root's id is still known: %s", cfg.TokenID)
	}
	resp, err = e.importRole("app", appID, nil)
	mustUserError(t, resp, err, "lacks deployments:write")
	e.mustNothingStored()
}

func TestStaticRoles_NotConfigured(t *testing.T) {
	e := getTestBackend(t)
	resp, err := e.write(staticRolesPath+"x", map[string]any{"token_id": "tkn_0123", "rotation_period": "1h"})
	mustUserError(t, resp, err, "not configured")
	resp, err = e.read(staticCredsPath + "x")
	mustUserError(t, resp, err, `unknown static role "x"`)
	resp, err = e.write(rotateRolePath+"x", nil)
	mustUserError(t, resp, err, `unknown static role "x"`)
}

// One token, one static role: two roles rotating a token would each kill
// the other's secret.
func TestStaticRoles_OneRolePerToken(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("a", id, nil)
	resp, err := e.importRole("b", id, nil)
	mustUserError(t, resp, err, "token_id: "+id+` is already managed by static role "a"`)
	if e.storedStatic("b") != nil {
		t.Fatal("role b stored")
	}
	// Once a is deleted, b may take it.
	must(t)(e.del(staticRolesPath + "a"))
	e.mustImport("b", id, nil)
}

// Updates change only the fields given; token_id and the import fields
// cannot change.
func TestStaticRoles_Update(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, secret := e.appToken("app")
	e.mustImport("app", id, map[string]any{"skip_import_rotation": true, "token": secret, "description": "d", "rotation_window": "01:00-05:00"})
	rotations := e.rotationsOf(id)

	must(t)(e.write(staticRolesPath+"app", map[string]any{"rotation_schedule": "0 3 * * *"}))
	got := must(t)(e.read(staticRolesPath + "app")).Data
	if got["rotation_schedule"] != "0 3 * * *" || got["rotation_period"] != int64(0) || got["description"] != "d" || got["rotation_window"] != "01:00-05:00" {
		t.Fatalf("after switching to a cron spec: %v", got)
	}
	if next := parseRFC3339(t, got["next_rotation"]); next.UTC().Format("15:04") != "03:00" {
		t.Fatalf("next_rotation %v, want 03:00 UTC", next)
	}
	must(t)(e.write(staticRolesPath+"app", map[string]any{"rotation_period": "2h", "rotation_grace": "1m"}))
	got = must(t)(e.read(staticRolesPath + "app")).Data
	if got["rotation_schedule"] != "" || got["rotation_period"] != int64(7200) || got["rotation_grace"] != int64(60) {
		t.Fatalf("after switching to a period: %v", got)
	}
	// The same import written again is fine (the same secret included).
	must(t)(e.write(staticRolesPath+"app", map[string]any{"token_id": id, "skip_import_rotation": true, "token": secret + "\n"}))

	bad := []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"token_id": "tkn_" + strings.Repeat("0", 24)}, "token_id: cannot change"},
		{map[string]any{"skip_import_rotation": false}, "skip_import_rotation: applies only when the role is created"},
		{map[string]any{"token": "tok_test_" + strings.Repeat("Z", 30)}, "token: the engine holds the token's secret"},
		{map[string]any{"rotation_period": "1h", "rotation_schedule": "0 3 * * *"}, "exactly one of them"},
		{map[string]any{"rotation_grace": 90000, "description": strings.Repeat("x", 2000)}, "rotation_grace:"},
	}
	for _, tc := range bad {
		before := e.storedStatic("app")
		resp, err := e.write(staticRolesPath+"app", tc.data)
		mustUserError(t, resp, err, tc.want)
		if after := e.storedStatic("app"); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("a rejected update changed the role: %v -> %v", before, after)
		}
	}
	if n := e.rotationsOf(id); n != rotations {
		t.Fatalf("updates rotated the token (%d)", n-rotations)
	}
	if e.staticCreds("app", id) != secret {
		t.Fatal("the imported secret changed")
	}
}

// Creating the role rotates the token at once: the secret someone had before
// works only for the grace, and from then on only Vault knows the current one.
func TestStaticRoles_ImportRotates(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, before := e.appToken("api-server-prod")
	resp := e.mustImport("api", id, map[string]any{"rotation_period": "24h", "rotation_grace": "10m"})
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations = %d, want 1", n)
	}
	for _, k := range []string{"token", "secret"} {
		if _, ok := resp.Data[k]; ok {
			t.Fatalf("the create answers %q", k)
		}
	}
	current := e.staticCreds("api", id)
	if current == before {
		t.Fatal("static-creds serves the secret from before the import")
	}
	creds := must(t)(e.read(staticCredsPath + "api")).Data
	if creds["token_id"] != id || creds["name"] != "api-server-prod" || creds["rotation_period"] != int64(86400) {
		t.Fatalf("static-creds: %v", creds)
	}
	if ttl := creds["ttl"].(int64); ttl < 86400-5 || ttl > 86400 {
		t.Fatalf("ttl %d, want about 24h", ttl)
	}
	pe := parseRFC3339(t, creds["previous_secret_expires_at"])
	if d := pe.Sub(e.emuTime.now()); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("previous_secret_expires_at in %s, want 10m", d)
	}
	if _, ok := e.srv.Authenticate(before); !ok {
		t.Fatal("the secret from before the import died before the grace ended")
	}
	e.emuTime.advance(10*time.Minute + 2*time.Second)
	if _, ok := e.srv.Authenticate(before); ok {
		t.Fatal("the secret from before the import works after the grace")
	}
	e.staticCreds("api", id)
	if w := e.staticWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	e.mustNoSecretsLogged(before, current)
}

// skip_import_rotation=true stores the given secret (trimmed) without
// rotating, and a restart never rotates it before the schedule says so.
func TestStaticRoles_ImportWithoutRotation(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, secret := e.appToken("partner-integration")
	resp := e.mustImport("partner", id, map[string]any{"rotation_period": "24h", "skip_import_rotation": true, "token": "  " + secret + "\n"})
	if resp.Data["skip_import_rotation"] != true {
		t.Fatalf("create answer: %v", resp.Data)
	}
	if got := e.staticCreds("partner", id); got != secret {
		t.Fatal("static-creds does not serve the imported secret")
	}
	if n := e.srv.Counters()["rotated"]; n != 0 {
		t.Fatalf("an import without rotation rotated (%d)", n)
	}
	for range 3 {
		e.restart()
		e.emuTime.advance(time.Hour)
		e.periodicRun()
	}
	if n := e.srv.Counters()["rotated"]; n != 0 {
		t.Fatalf("a restart rotated a role imported without rotation (%d)", n)
	}
	// The schedule counts from the import.
	e.emuTime.advance(21*time.Hour + time.Minute)
	e.periodicRun()
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations after 24h = %d, want 1", n)
	}
	if e.staticCreds("partner", id) == secret {
		t.Fatal("static-creds still serves the imported secret after the rotation")
	}
	e.mustNoSecretsLogged(secret)
}

// Delete stops the management and says that the token stays live upstream.
func TestStaticRoles_Delete(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	secret := e.staticCreds("app", id)
	resp := must(t)(e.del(staticRolesPath + "app"))
	if resp == nil || !containsAll(strings.Join(resp.Warnings, "\n"), id, "stays live upstream") {
		t.Fatalf("delete warnings: %v", resp)
	}
	if _, ok := e.srv.Authenticate(secret); !ok {
		t.Fatal("deleting the static role killed the token")
	}
	e.mustNothingStored()
	r, err := e.read(staticCredsPath + "app")
	mustUserError(t, r, err, `unknown static role "app"`)
	// Nothing is scheduled for it any more.
	e.emuTime.advance(2 * time.Hour)
	e.srv.ResetRequests()
	e.periodicRun()
	for _, req := range e.srv.Requests() {
		if strings.Contains(req.Path, id) {
			t.Fatalf("a deleted role's token was called: %+v", req)
		}
	}
}

// A read and static-creds on a role with an import rotation not finished,
// and on a missing role.
func TestStaticCreds_Errors(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Status: 503})
	resp, err := e.importRole("app", id, nil)
	if err == nil || !strings.Contains(err.Error(), "outcome unknown") || !strings.Contains(err.Error(), "static-creds answers once it is finished") {
		t.Fatalf("import with the rotation's outcome unknown: %v %v", resp, err)
	}
	_, err = e.read(staticCredsPath + "app")
	var coded logical.HTTPCodedError
	if err == nil || !strings.Contains(err.Error(), "has no secret yet") || !errors.As(err, &coded) || coded.Code() != 503 {
		t.Fatalf("static-creds before the import is finished: %v", err)
	}
	// The rollback finishes the import.
	e.srv.ClearFaults()
	e.rollback(true)
	e.staticCreds("app", id)
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations = %d, want 1", n)
	}
}

// "One token, one static role: two would each kill the other's secret".
// Two creates of different names for one token at once (300 ms of latency
// on the token's GET widens the window between the check and the claim):
// the token's lock makes them run one after the other, so one imports and
// the other is refused naming the first, and the token is rotated once.
func TestStaticRoles_ConcurrentCreatesOfOneToken(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	tok := operatorToken(t, srv, tookenapi.CreateTokenRequest{Name: "shared", Scopes: []string{"deployments:write"}})
	srv.AddFault(tookentest.Fault{Method: http.MethodGet, Path: "/v1/tokens/" + tok.ID, Latency: 300 * time.Millisecond})

	var wg sync.WaitGroup
	names := []string{"a", "b"}
	resps := make([]*logical.Response, 2)
	errs := make([]error, 2)
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = e.write(staticRolesPath+name, map[string]any{"token_id": tok.ID, "rotation_period": "1h"})
		}()
	}
	wg.Wait()
	imported := -1
	for i := range names {
		if errs[i] == nil && resps[i] != nil && !resps[i].IsError() {
			if imported >= 0 {
				a, _ := readStaticRole(context.Background(), e.storage, "a")
				b, _ := readStaticRole(context.Background(), e.storage, "b")
				t.Fatalf("two static roles manage token %s; Tooken rotated it %d times; static-creds/a works: %v, static-creds/b works: %v",
					tok.ID, rotationsAt(srv, tok.ID), works(srv, a.Secret), works(srv, b.Secret))
			}
			imported = i
		}
	}
	if imported < 0 {
		t.Fatalf("neither create imported the token: %s; %s", outcome(resps[0], errs[0]), outcome(resps[1], errs[1]))
	}
	winner, loser := names[imported], names[1-imported]
	mustUserError(t, resps[1-imported], errs[1-imported], "token_id: "+tok.ID, fmt.Sprintf("is already managed by static role %q", winner), "delete that role first")
	if r, _ := readStaticRole(context.Background(), e.storage, loser); r != nil {
		t.Fatalf("the refused create stored role %s", loser)
	}
	if owner, _ := readStaticTokenOwner(context.Background(), e.storage, tok.ID); owner == nil || owner.Role != winner {
		t.Fatalf("owner record %+v, want %s", owner, winner)
	}
	if n := rotationsAt(srv, tok.ID); n != 1 {
		t.Fatalf("Tooken rotated the token %d times, want 1", n)
	}
	if got := markOf(t, srv, tok.ID); got != "static:"+testMountUUID+":"+winner {
		t.Fatalf("mark %q", got)
	}
	secret := dataString(must(t)(e.read(staticCredsPath+winner)), "token")
	if rec, ok := srv.Authenticate(secret); !ok || rec.ID != tok.ID {
		t.Fatalf("static-creds/%s does not work", winner)
	}
}

// description is counted in characters, as the README says: 1024 of
// several bytes each fit; 1025 are refused, naming the field and the count.
func TestStaticRoles_DescriptionInCharacters(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	long := strings.Repeat("é", maxStaticDescriptionLen)
	e.mustImport("app", id, map[string]any{"description": long})
	if got := dataString(must(t)(e.read(staticRolesPath+"app")), "description"); got != long {
		t.Fatalf("description read back: %d characters", len([]rune(got)))
	}
	resp, err := e.write(staticRolesPath+"app", map[string]any{"description": long + "é"})
	mustUserError(t, resp, err, "description: at most 1024 characters, got 1025")
}

// static-creds does not serve the secret of a token whose known expires_at
// has passed (it is dead upstream; the next check marks it gone), and its
// ttl never points past that expiry, so that Vault Agent reads again then.
func TestStaticCreds_ExpiredToken(t *testing.T) {
	e := newStaticEnv(t, nil)
	exp := e.emuTime.now().Add(30 * time.Minute).UTC().Truncate(time.Second)
	tok, err := e.client().CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: "app", Scopes: []string{"deployments:write"}, ExpiresAt: &exp}, "")
	if err != nil {
		t.Fatal(err)
	}
	e.mustImport("app", tok.ID, map[string]any{"rotation_period": "1h"})
	resp := must(t)(e.read(staticCredsPath + "app"))
	if ttl := resp.Data["ttl"].(int64); ttl > int64(30*time.Minute/time.Second) || ttl < int64(29*time.Minute/time.Second) {
		t.Fatalf("ttl %d, want about the 30 minutes left before the token expires", ttl)
	}
	e.emuTime.advance(31 * time.Minute)
	r, err := e.read(staticCredsPath + "app")
	mustUserError(t, r, err, `static role "app"`, "token "+tok.ID+" expired upstream at "+exp.Format(time.RFC3339), "no longer serves its secret")
}

// The short-grace warning comes with the write that sets the grace (or
// creates the role with it), not with every later update of another field.
func TestStaticRoles_ShortGraceWarnedOnce(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, secret := e.appToken("app")
	resp := must(t)(e.write(staticRolesPath+"app", map[string]any{"token_id": id, "skip_import_rotation": true, "token": secret, "rotation_period": "24h", "rotation_grace": "1s"}))
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "rotation_grace 1s is below 1m") {
		t.Fatalf("create with a 1s grace: warnings %q", resp.Warnings)
	}
	resp = must(t)(e.write(staticRolesPath+"app", map[string]any{"rotation_schedule": "0 3 * * *"}))
	if len(resp.Warnings) != 0 {
		t.Errorf("an update of the schedule repeats %q", resp.Warnings)
	}
	resp = must(t)(e.write(staticRolesPath+"app", map[string]any{"rotation_grace": "2s"}))
	if len(resp.Warnings) != 1 {
		t.Errorf("an update of the grace to 2s: warnings %q", resp.Warnings)
	}
}
