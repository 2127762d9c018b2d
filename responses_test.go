package tooken

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// durationKey is a response key whose value is a duration.
func durationKey(k string) bool {
	for _, suffix := range []string{"ttl", "_timeout", "_age", "_period", "_grace", "duration"} {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

// timeKey is a response key whose value is a point in time.
func timeKey(k string) bool {
	return strings.HasSuffix(k, "_at") || k == "last_rotated" || k == "next_rotation"
}

var wholeSecondUTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// checkReadBack checks that every duration in data (nested maps included)
// is a whole number of seconds and every time RFC 3339 UTC in whole seconds
// (or null), as in Vault's builtin engines.
func checkReadBack(t *testing.T, what string, data map[string]any) {
	t.Helper()
	for k, v := range data {
		switch {
		case durationKey(k):
			if _, ok := v.(int64); !ok {
				t.Errorf("%s: %s = %#v, want whole seconds (int64)", what, k, v)
			}
		case timeKey(k):
			if s, ok := v.(string); v != nil && (!ok || !wholeSecondUTC.MatchString(s)) {
				t.Errorf("%s: %s = %#v, want RFC 3339 UTC in whole seconds", what, k, v)
			}
		}
		if m, ok := v.(map[string]any); ok {
			checkReadBack(t, what+"."+k, m)
		}
	}
}

// Every answer reads durations back as whole seconds and times as RFC 3339
// UTC in whole seconds: config, roles, creds, rotate-root, tidy, tidy/status.
func TestResponses_DurationsAndTimes(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rotation_period": "24h"})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
	creds := must(t)(e.read("creds/r"))
	must(t)(e.revoke(lease(creds)))
	answers := map[string]*logical.Response{
		"creds":       creds,
		"roles/r":     must(t)(e.read("roles/r")),
		"rotate-root": must(t)(e.write("rotate-root", nil)),
		"tidy":        must(t)(e.write("tidy", map[string]any{"safety_age": "1h"})),
		"tidy/status": must(t)(e.read("tidy/status")),
		"config":      must(t)(e.read(configPath)),
	}
	for what, resp := range answers {
		if resp == nil || len(resp.Data) == 0 {
			t.Fatalf("%s: no data", what)
		}
		checkReadBack(t, what, resp.Data)
	}
	for what, key := range map[string]string{"tidy": "duration", "tidy/status": "last_tidy", "config": "rotation_grace", "roles/r": "max_ttl"} {
		if _, ok := answers[what].Data[key]; !ok {
			t.Errorf("%s has no %s", what, key)
		}
	}
}

// The config read shows the id that the mount's tokens carry.
func TestResponses_MountIdentity(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	creds := must(t)(e.read("creds/r"))
	tok, ok := srv.Token(creds.Data["token_id"].(string))
	if !ok {
		t.Fatal("token not found upstream")
	}
	id := must(t)(e.read(configPath)).Data["mount_uuid"]
	if id == "" || id != tok.Metadata[metaMountUUID] {
		t.Errorf("config mount_uuid %v, token's vault_mount_uuid %q", id, tok.Metadata[metaMountUUID])
	}
}

// openAPIDoc is the mount's OpenAPI document as Vault asks for it.
func openAPIDoc(t *testing.T, e *testEnv) *framework.OASDocument {
	t.Helper()
	e.sys.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "1.14.1"}
	resp, err := e.handle(&logical.Request{Operation: logical.HelpOperation, Storage: e.storage,
		Data: map[string]any{"requestResponsePrefix": "tooken"}})
	if err != nil {
		t.Fatal(err)
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok {
		t.Fatalf("no OpenAPI document: %#v", resp.Data)
	}
	return doc
}

// Every operation has a request schema where it takes fields and declared
// responses with a schema where it answers data, inline (Vault 1.14 drops
// "$ref"), and nothing but path captures is required.
func TestResponses_OpenAPISchemas(t *testing.T) {
	e := getTestBackend(t)
	doc := openAPIDoc(t, e)
	withBody := map[string]bool{"/config": true, "/roles/{name}": true, "/tidy": true, "/static-roles/{name}": true}
	withData := map[string]bool{"/config get": true, "/roles/{name} get": true, "/roles/ get": true, "/creds/{name} get": true,
		"/rotate-root post": true, "/tidy post": true, "/tidy/status get": true,
		"/static-roles/{name} get": true, "/static-roles/{name} post": true, "/static-roles/ get": true,
		"/static-creds/{name} get": true, "/rotate-role/{name} post": true}
	seen := 0
	for path, item := range doc.Paths {
		for method, op := range map[string]*framework.OASOperation{"get": item.Get, "post": item.Post, "delete": item.Delete} {
			if op == nil {
				continue
			}
			seen++
			what := path + " " + method
			if method == "post" && withBody[path] {
				checkInlineSchema(t, what+" request", op.RequestBody)
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", what)
			}
			for code, r := range op.Responses {
				if r.Description == "" || r.Description == "OK" || r.Description == "empty body" {
					t.Errorf("%s %d: default response %q", what, code, r.Description)
				}
			}
			if withData[what] {
				if r := op.Responses[200]; r == nil {
					t.Errorf("%s: no 200 response", what)
				} else {
					checkInlineSchema(t, what+" response", &framework.OASRequestBody{Content: r.Content})
				}
			}
		}
		for _, p := range item.Parameters {
			if p.In != "path" && p.Required {
				t.Errorf("%s: parameter %s required", path, p.Name)
			}
		}
	}
	if seen != 17 {
		t.Errorf("%d operations in the document", seen)
	}
	raw, _ := json.Marshal(doc.Paths)
	if strings.Contains(string(raw), "$ref") {
		t.Error("a schema reference is left in the paths")
	}
}

func checkInlineSchema(t *testing.T, what string, body *framework.OASRequestBody) {
	t.Helper()
	if body == nil || body.Content["application/json"] == nil || body.Content["application/json"].Schema == nil {
		t.Errorf("%s: no schema", what)
		return
	}
	s := body.Content["application/json"].Schema
	if s.Ref != "" || len(s.Properties) == 0 {
		t.Errorf("%s: schema %+v", what, s)
	}
	if len(s.Required) != 0 {
		t.Errorf("%s: required %v (only path captures are required)", what, s.Required)
	}
}
