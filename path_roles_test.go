package tooken

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

func TestRoles_CRUD(t *testing.T) {
	e := getTestBackend(t)

	// Minimal role: defaults.
	e.writeRole("min", map[string]any{"scopes": "deployments:write"})
	resp := must(t)(e.read("roles/min"))
	want := map[string]any{
		"scopes":          []string{"deployments:write"},
		"ttl":             int64(0),
		"max_ttl":         int64(0),
		"name_template":   defaultNameTemplate,
		"metadata":        map[string]string{},
		"description":     "",
		"max_live_tokens": int64(0),
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Errorf("minimal role:\n got %#v\nwant %#v", resp.Data, want)
	}

	// Every field.
	full := map[string]any{
		"scopes":          []string{"deployments:write", "billing:read", "deployments:write"},
		"ttl":             "1h",
		"max_ttl":         "24h",
		"name_template":   "ci-{{ .RoleName }}-{{ random 6 }}",
		"metadata":        map[string]any{"team": "platform", "env": "prod"},
		"description":     "CI deploys",
		"max_live_tokens": 5,
	}
	e.writeRole("full", full)
	resp = must(t)(e.read("roles/full"))
	want = map[string]any{
		"scopes":          []string{"deployments:write", "billing:read"}, // de-duplicated
		"ttl":             int64(3600),
		"max_ttl":         int64(86400),
		"name_template":   "ci-{{ .RoleName }}-{{ random 6 }}",
		"metadata":        map[string]string{"team": "platform", "env": "prod"},
		"description":     "CI deploys",
		"max_live_tokens": int64(5),
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Errorf("full role:\n got %#v\nwant %#v", resp.Data, want)
	}

	// Partial updates keep the other fields, one field at a time.
	updates := []struct {
		field string
		in    any
		out   any
	}{
		{"ttl", "30m", int64(1800)},
		{"max_ttl", "48h", int64(172800)},
		{"scopes", "tokens:read", []string{"tokens:read"}},
		{"name_template", "", defaultNameTemplate},
		{"metadata", map[string]any{"a": "b"}, map[string]string{"a": "b"}},
		{"metadata", []string{"k1=v1", "k2=v2"}, map[string]string{"k1": "v1", "k2": "v2"}},
		{"description", "changed", "changed"},
		{"max_live_tokens", 0, int64(0)},
	}
	for _, u := range updates {
		t.Run("update "+u.field, func(t *testing.T) {
			must(t)(e.write("roles/full", map[string]any{u.field: u.in}))
			got := must(t)(e.read("roles/full")).Data
			want[u.field] = u.out
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %#v\nwant %#v", got, want)
			}
		})
	}

	resp = must(t)(e.list("roles/"))
	if got := resp.Data["keys"]; !reflect.DeepEqual(got, []string{"full", "min"}) {
		t.Errorf("list = %v", got)
	}
	must(t)(e.del("roles/min"))
	if resp, err := e.read("roles/min"); err != nil || resp != nil {
		t.Errorf("read after delete: %v %v", resp, err)
	}
	resp = must(t)(e.list("roles"))
	if got := resp.Data["keys"]; !reflect.DeepEqual(got, []string{"full"}) {
		t.Errorf("list = %v", got)
	}
}

func TestRoles_BadInput(t *testing.T) {
	tooMany := map[string]any{}
	for i := 0; i < 17; i++ {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name     string
		existing map[string]any // written first, if any
		data     map[string]any
		want     []string
	}{
		{"no scopes on create", nil, map[string]any{"ttl": "1h"}, []string{"scopes: required"}},
		{"empty scopes", nil, map[string]any{"scopes": ""}, []string{"scopes: at least one"}},
		{"empty scopes on update", map[string]any{"scopes": "a:read"}, map[string]any{"scopes": []string{}}, []string{"scopes: at least one"}},
		{"scope without action", nil, map[string]any{"scopes": "deployments"}, []string{"scopes: invalid scope", `"deployments"`}},
		{"scope upper case", nil, map[string]any{"scopes": "Deployments:write"}, []string{"scopes: invalid scope", `"Deployments:write"`}},
		{"scope three parts", nil, map[string]any{"scopes": "a:b:c"}, []string{"scopes: invalid scope"}},
		{"scope leading digit", nil, map[string]any{"scopes": "a:1b"}, []string{"scopes: invalid scope"}},
		{"ttl over max_ttl", nil, map[string]any{"scopes": "a:read", "ttl": "2h", "max_ttl": "1h"}, []string{"ttl:", "max_ttl"}},
		{"ttl over stored max_ttl", map[string]any{"scopes": "a:read", "max_ttl": "1h"}, map[string]any{"ttl": "2h"}, []string{"ttl:", "max_ttl"}},
		{"max_ttl under stored ttl", map[string]any{"scopes": "a:read", "ttl": "1h"}, map[string]any{"max_ttl": "30m"}, []string{"ttl:", "max_ttl"}},
		{"negative ttl", nil, map[string]any{"scopes": "a:read", "ttl": "-1s"}, []string{`"ttl"`, "negative"}},
		{"negative max_ttl", nil, map[string]any{"scopes": "a:read", "max_ttl": -10}, []string{`"max_ttl"`, "negative"}},
		{"unparsable ttl", nil, map[string]any{"scopes": "a:read", "ttl": "forever"}, []string{`"ttl"`}},
		{"unparsable max_ttl", nil, map[string]any{"scopes": "a:read", "max_ttl": "1 fortnight"}, []string{`"max_ttl"`}},
		{"template does not parse", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .RoleName "}, []string{"name_template:"}},
		{"template unknown field", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .Nope }}"}, []string{"name_template:"}},
		{"template unknown function", nil, map[string]any{"scopes": "a:read", "name_template": "{{ explode }}"}, []string{"name_template:"}},
		{"template renders spaces", nil, map[string]any{"scopes": "a:read", "name_template": "my token {{ .RoleName }}"}, []string{"name_template: renders", "not a valid Tooken name"}},
		{"template renders too long", nil, map[string]any{"scopes": "a:read", "name_template": strings.Repeat("x", 129)}, []string{"name_template: renders"}},
		{"template renders empty", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .DisplayName }}"}, []string{"name_template: renders"}},
		{"template bad random", nil, map[string]any{"scopes": "a:read", "name_template": "x{{ random 0 }}"}, []string{"name_template:", "random"}},
		{"too many metadata keys", nil, map[string]any{"scopes": "a:read", "metadata": tooMany}, []string{"metadata: at most 16 keys"}},
		{"metadata key too long", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{strings.Repeat("k", 41): "v"}}, []string{"metadata: key", "longer than 40"}},
		{"metadata value too long", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"k": strings.Repeat("v", 501)}}, []string{"metadata: value", "longer than 500"}},
		{"metadata reserved key", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"vault_role": "x"}}, []string{"metadata: key \"vault_role\"", "reserved"}},
		{"negative max_live_tokens", nil, map[string]any{"scopes": "a:read", "max_live_tokens": -1}, []string{"max_live_tokens: must be 0 (no limit) to 1000000"}},
		{"max_live_tokens too large", nil, map[string]any{"scopes": "a:read", "max_live_tokens": 1000001}, []string{"max_live_tokens:"}},
		{"role name too long", nil, map[string]any{"scopes": "a:read"}, []string{"name: at most 500"}},
		{"several problems at once", nil, map[string]any{"scopes": "BAD", "ttl": "2h", "max_ttl": "1h"}, []string{"scopes:", "ttl:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			if tc.existing != nil {
				e.writeRole("r", tc.existing)
			}
			before, _ := readRole(t.Context(), e.storage, "r")
			e.storage.reset()
			path := "roles/r"
			if strings.HasPrefix(tc.name, "role name") {
				path = "roles/" + strings.Repeat("n", 501)
			}
			resp, err := e.write(path, tc.data)
			mustUserError(t, resp, err, tc.want...)
			if n := e.storage.puts.Load(); n != 0 {
				t.Errorf("%d storage writes", n)
			}
			after, _ := readRole(t.Context(), e.storage, "r")
			if !reflect.DeepEqual(before, after) {
				t.Errorf("role changed: %#v -> %#v", before, after)
			}
		})
	}
}

func TestRoles_ScopesHeldByRoot(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{}) // tokens:write, deployments:write, billing:read
	e := getTestBackend(t)
	e.configure(srv, nil)

	for _, ok := range []string{"deployments:write", "deployments:read", "tokens:read", "billing:read", "tokens:write,billing:read"} {
		t.Run("held "+ok, func(t *testing.T) {
			e.writeRole("ok", map[string]any{"scopes": ok})
		})
	}
	t.Run("not held", func(t *testing.T) {
		resp, err := e.write("roles/bad", map[string]any{"scopes": "deployments:write,billing:write,admin:read"})
		mustUserError(t, resp, err, "scopes: the root token does not hold billing:write, admin:read")
		if r, _ := readRole(t.Context(), e.storage, "bad"); r != nil {
			t.Error("role stored")
		}
	})

	// Without a verified root, scopes cannot be checked: accepted with a warning.
	must(t)(e.write(configPath, map[string]any{"verify_connection": false, "token": "tok_test_abcdefghijklmnopqrstuvwxyz"}))
	resp := must(t)(e.write("roles/unchecked", map[string]any{"scopes": "admin:write"}))
	if resp == nil || len(resp.Warnings) == 0 {
		t.Error("no warning for unchecked scopes")
	}
}

func TestRoles_Warnings(t *testing.T) {
	e := getTestBackend(t) // mount max 48h
	resp := must(t)(e.write("roles/r", map[string]any{"scopes": "a:read", "max_ttl": "72h"}))
	if resp == nil || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "max_ttl") {
		t.Errorf("want a max_ttl warning, got %v", resp)
	}
}

func TestNameTemplate(t *testing.T) {
	tmpl, err := parseNameTemplate("")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		role, display string
		wantPrefix    string
	}{
		{"ci-deploy", "token", "vault-ci-deploy-token-"},
		{"ci", "oidc-alice@example.com", "vault-ci-oidc-alice-example.com-"},
		{"ci", "", "vault-ci-"},
		{strings.Repeat("r", 100), strings.Repeat("d", 100), "vault-" + strings.Repeat("r", 50) + "-" + strings.Repeat("d", 50) + "-"},
		{"ci", "ünïcode name", "vault-ci--n-code-name-"},
	}
	for _, tc := range cases {
		t.Run(tc.role+"/"+tc.display, func(t *testing.T) {
			name, err := tmpl.render(newNameTemplateData(tc.role, tc.display))
			if err != nil {
				t.Fatal(err)
			}
			if !tokenNameRegex.MatchString(name) {
				t.Errorf("invalid name %q", name)
			}
			if !strings.HasPrefix(name, tc.wantPrefix) || len(name) != len(tc.wantPrefix)+8 {
				t.Errorf("name %q, want %q + 8 random", name, tc.wantPrefix)
			}
		})
	}

	// A custom template whose data makes it too long is cut at 128.
	long, err := parseNameTemplate("{{ .DisplayName }}")
	if err != nil {
		t.Fatal(err)
	}
	name, err := long.render(newNameTemplateData("r", strings.Repeat("a", 300)))
	if err != nil || len(name) != maxTokenNameLen {
		t.Errorf("long name %d %v", len(name), err)
	}
	if _, err := long.render(newNameTemplateData("r", "")); err == nil {
		t.Error("empty name accepted")
	}

	// Two renders differ (random suffix).
	a, _ := tmpl.render(newNameTemplateData("r", "d"))
	b, _ := tmpl.render(newNameTemplateData("r", "d"))
	if a == b {
		t.Errorf("names not random: %s", a)
	}
}
