package tooken

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

func TestRoles_CRUD(t *testing.T) {
	e := getTestBackend(t)

	// Minimal role: defaults.
	e.writeRole("min", map[string]any{"scopes": "deployments:write"})
	resp := must(t)(e.read("roles/min"))
	want := map[string]any{
		"scopes":        []string{"deployments:write"},
		"ttl":           int64(0),
		"max_ttl":       int64(0),
		"name_template": defaultNameTemplate,
		"metadata":      map[string]string{},
		"description":   "",

		"identity_metadata": []string{},
		"max_live_tokens":   int64(0),

		"allow_token_management": false,
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Errorf("minimal role:\n got %#v\nwant %#v", resp.Data, want)
	}

	// Every field.
	full := map[string]any{
		"scopes":        []string{"deployments:write", "billing:read", "deployments:write"},
		"ttl":           "1h",
		"max_ttl":       "24h",
		"name_template": "ci-{{ .RoleName }}-{{ random 6 }}",
		"metadata":      map[string]any{"team": "platform", "env": "prod"},
		"description":   "CI deploys",

		"identity_metadata": "repository, run_id,repository",
		"max_live_tokens":   5,
	}
	e.writeRole("full", full)
	resp = must(t)(e.read("roles/full"))
	want = map[string]any{
		"scopes":        []string{"deployments:write", "billing:read"}, // de-duplicated
		"ttl":           int64(3600),
		"max_ttl":       int64(86400),
		"name_template": "ci-{{ .RoleName }}-{{ random 6 }}",
		"metadata":      map[string]string{"team": "platform", "env": "prod"},
		"description":   "CI deploys",

		"identity_metadata": []string{"repository", "run_id"}, // trimmed, de-duplicated
		"max_live_tokens":   int64(5),

		"allow_token_management": false,
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
		{"allow_token_management", true, true},
		{"scopes", "tokens:read", []string{"tokens:read"}},
		{"name_template", "", defaultNameTemplate},
		{"metadata", map[string]any{"a": "b"}, map[string]string{"a": "b"}},
		{"metadata", []string{"k1=v1", "k2=v2"}, map[string]string{"k1": "v1", "k2": "v2"}},
		{"description", "changed", "changed"},
		{"identity_metadata", []string{"workflow"}, []string{"workflow"}},
		{"identity_metadata", "", []string{}},
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

func manyScopes(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("r%d:read", i)
	}
	return strings.Join(s, ",")
}

func manyKeys(n int) map[string]any {
	md := make(map[string]any, n)
	for i := 0; i < n; i++ {
		md[fmt.Sprintf("k%d", i)] = "v"
	}
	return md
}

func TestRoles_BadInput(t *testing.T) {
	tooMany := map[string]any{}
	for i := 0; i < 17; i++ {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}
	var identityKeys []string
	for i := range 30 {
		identityKeys = append(identityKeys, fmt.Sprintf("key%d", i))
	}
	cases := []struct {
		name     string
		existing map[string]any // written first, if any
		data     map[string]any
		want     []string
	}{
		{"no scopes on create", nil, map[string]any{"ttl": "1h"}, []string{"scopes: required"}},
		{"empty scopes", nil, map[string]any{"scopes": ""}, []string{"scopes: required, at least one scope"}},
		{"empty scopes on update", map[string]any{"scopes": "a:read"}, map[string]any{"scopes": []string{}}, []string{"scopes: required, at least one scope"}},
		{"scope without action", nil, map[string]any{"scopes": "deployments"}, []string{"scopes: invalid scope", `"deployments"`}},
		{"scope upper case", nil, map[string]any{"scopes": "Deployments:write"}, []string{"scopes: invalid scope", `"Deployments:write"`}},
		{"scope three parts", nil, map[string]any{"scopes": "a:b:c"}, []string{"scopes: invalid scope"}},
		{"scope leading digit", nil, map[string]any{"scopes": "a:1b"}, []string{"scopes: invalid scope"}},
		{"ttl over max_ttl", nil, map[string]any{"scopes": "a:read", "ttl": "2h", "max_ttl": "1h"}, []string{"ttl:", "max_ttl"}},
		{"ttl over stored max_ttl", map[string]any{"scopes": "a:read", "max_ttl": "1h"}, map[string]any{"ttl": "2h"}, []string{"ttl:", "max_ttl"}},
		{"max_ttl under stored ttl", map[string]any{"scopes": "a:read", "ttl": "1h"}, map[string]any{"max_ttl": "30m"}, []string{"ttl:", "max_ttl"}},
		{"negative ttl", nil, map[string]any{"scopes": "a:read", "ttl": "-1s"}, []string{"ttl: expected a duration", "(0 or more)", `got "-1s"`}},
		{"negative max_ttl", nil, map[string]any{"scopes": "a:read", "max_ttl": -10}, []string{"max_ttl: expected a duration", "(0 or more)"}},
		{"unparsable ttl", nil, map[string]any{"scopes": "a:read", "ttl": "forever"}, []string{"ttl: expected a duration"}},
		{"unparsable max_ttl", nil, map[string]any{"scopes": "a:read", "max_ttl": "1 fortnight"}, []string{"max_ttl: expected a duration"}},
		{"template does not parse", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .RoleName "}, []string{"name_template:"}},
		{"template unknown field", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .Nope }}"}, []string{"name_template:"}},
		{"template unknown function", nil, map[string]any{"scopes": "a:read", "name_template": "{{ explode }}"}, []string{"name_template:"}},
		{"template renders spaces", nil, map[string]any{"scopes": "a:read", "name_template": "my token {{ .RoleName }}"}, []string{"name_template: renders", "not a valid Tooken name"}},
		{"template renders too long", nil, map[string]any{"scopes": "a:read", "name_template": strings.Repeat("x", 129)}, []string{"name_template: renders"}},
		{"template renders empty", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .DisplayName }}"}, []string{"name_template: renders"}},
		{"template bad random", nil, map[string]any{"scopes": "a:read", "name_template": "x{{ random 0 }}"}, []string{"name_template:", "random"}},
		{"template range", nil, map[string]any{"scopes": "a:read", "name_template": "{{ range 30000000 }}{{ uuid }}{{ end }}"}, []string{"name_template:", "range is not allowed"}},
		{"template range behind a branch on the caller", nil, map[string]any{"scopes": "a:read", "name_template": `{{ if eq .DisplayName "token" "userpass-alice" "" }}ok{{ else }}{{ range 1000000000 }}{{ end }}x{{ end }}`}, []string{"name_template:", "range is not allowed"}},
		{"template html", nil, map[string]any{"scopes": "a:read", "name_template": "x{{ .RoleName | html }}"}, []string{"name_template:", `function "html" is not allowed`}},
		{"template empty without identity", nil, map[string]any{"scopes": "a:read", "name_template": "{{ .AliasMetadata.repository }}"}, []string{"name_template: renders"}},
		{"identity_metadata over the limit", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"a": "1", "b": "2"}, "identity_metadata": "k1,k2,k3,k4,k5,k6,k7,k8,k9,k10,k11,k12,k13,k14,k15"}, []string{"identity_metadata: at most 14 keys with the role's 2 metadata keys"}},
		{"identity_metadata over the limit by itself", nil, map[string]any{"scopes": "a:read", "identity_metadata": identityKeys}, []string{"identity_metadata: at most 16 keys"}},
		{"identity_metadata reserved key", nil, map[string]any{"scopes": "a:read", "identity_metadata": "vault_role"}, []string{`identity_metadata: key "vault_role"`, "reserved"}},
		{"identity_metadata key too long", nil, map[string]any{"scopes": "a:read", "identity_metadata": strings.Repeat("k", 41)}, []string{"identity_metadata: key", "longer than 40"}},
		{"identity_metadata key also in metadata", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"team": "x"}, "identity_metadata": "team"}, []string{`identity_metadata: key "team" is also in metadata`}},
		{"identity_metadata over the limit on update", map[string]any{"scopes": "a:read", "identity_metadata": "k1,k2,k3,k4,k5,k6,k7,k8,k9,k10"}, map[string]any{"metadata": map[string]any{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7"}}, []string{"identity_metadata: at most 9 keys"}},
		{"too many metadata keys", nil, map[string]any{"scopes": "a:read", "metadata": tooMany}, []string{"metadata: at most 16 keys"}},
		{"metadata key too long", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{strings.Repeat("k", 41): "v"}}, []string{"metadata: key", "longer than 40"}},
		{"metadata value too long", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"k": strings.Repeat("v", 501)}}, []string{"metadata: value", "longer than 500"}},
		{"metadata reserved key", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"vault_role": "x"}}, []string{"metadata: key \"vault_role\"", "reserved"}},
		{"negative max_live_tokens", nil, map[string]any{"scopes": "a:read", "max_live_tokens": -1}, []string{"max_live_tokens: must be 0 (no limit) to 1000000"}},
		{"max_live_tokens too large", nil, map[string]any{"scopes": "a:read", "max_live_tokens": 1000001}, []string{"max_live_tokens:"}},
		{"role name too long", nil, map[string]any{"scopes": "a:read"}, []string{"name: at most 500"}},
		{"max_ttl 1s", nil, map[string]any{"scopes": "a:read", "max_ttl": "1s"}, []string{"max_ttl: at least 10s"}},
		{"max_ttl 2s", nil, map[string]any{"scopes": "a:read", "max_ttl": "2"}, []string{"max_ttl: at least 10s"}},
		{"max_ttl 9s on update", map[string]any{"scopes": "a:read"}, map[string]any{"max_ttl": "9s"}, []string{"max_ttl: at least 10s"}},
		{"51 scopes", nil, map[string]any{"scopes": manyScopes(51)}, []string{"scopes: at most 50 (Tooken's limit), got 51"}},
		{"scope over 100 characters", nil, map[string]any{"scopes": "a:" + strings.Repeat("b", 99)}, []string{"scopes: invalid scope", "at most 100 characters"}},
		{"many bad scopes listed briefly", nil, map[string]any{"scopes": "A:x,B:x,C:x,D:x,E:x,F:x,G:x"}, []string{`"A:x", "B:x", "C:x", "D:x", "E:x" and 2 more`}},
		{"description too long", nil, map[string]any{"scopes": "a:read", "description": strings.Repeat("d", 1001)}, []string{"description: at most 1000 characters, got 1001"}},
		{"metadata value of 501 characters", nil, map[string]any{"scopes": "a:read", "metadata": map[string]any{"k": strings.Repeat("é", 501)}}, []string{`metadata: value of "k" is longer than 500`}},
		{"metadata key given twice", nil, map[string]any{"scopes": "a:read", "metadata": "team=a,team=b"}, []string{`metadata: key "team" is given twice`}},
		{"metadata across repeats twice", nil, map[string]any{"scopes": "a:read", "metadata": []any{"team=a", "team=b"}}, []string{`metadata: key "team" is given twice`}},
		{"metadata without pairs", nil, map[string]any{"scopes": "a:read", "metadata": "team"}, []string{"metadata: expected key=value pairs"}},
		{"metadata huge map", nil, map[string]any{"scopes": "a:read", "metadata": manyKeys(100000)}, []string{"metadata: at most 16 keys", "got 100000"}},
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
			e.writeRole("ok", map[string]any{"scopes": ok, "allow_token_management": true})
		})
	}
	t.Run("not held", func(t *testing.T) {
		resp, err := e.write("roles/bad", map[string]any{"scopes": "deployments:write,billing:write,admin:read"})
		mustUserError(t, resp, err, "scopes: the root token does not hold billing:write, admin:read")
		if r, _ := readRole(t.Context(), e.storage, "bad"); r != nil {
			t.Error("role stored")
		}
	})

	// The root's scopes are checked with every other field: one write
	// reports every problem.
	t.Run("with other problems", func(t *testing.T) {
		resp, err := e.write("roles/new2", map[string]any{"scopes": "billing:write,nope:read", "ttl": "2h", "max_ttl": "1h", "metadata": "vault_a=1"})
		mustUserError(t, resp, err, "ttl: 2h cannot exceed max_ttl 1h", "scopes: the root token does not hold billing:write, nope:read", `metadata: key "vault_a" uses the prefix "vault_"`)
	})
	t.Run("a typo gets the closest scope the root holds", func(t *testing.T) {
		resp, err := e.write("roles/typo", map[string]any{"scopes": "deployment:wrte,billing:red"})
		mustUserError(t, resp, err, "does not hold deployment:wrte, billing:red (did you mean deployments:write for deployment:wrte, billing:read for billing:red?)",
			"it holds tokens:write, deployments:write, billing:read (R:write implies R:read)")
	})

	// Without a verified root, scopes cannot be checked: accepted with a warning.
	must(t)(e.write(configPath, map[string]any{"verify_connection": false, "token": "tok_test_abcdefghijklmnopqrstuvwxyz"}))
	resp := must(t)(e.write("roles/unchecked", map[string]any{"scopes": "admin:write"}))
	if resp == nil || len(resp.Warnings) == 0 {
		t.Error("no warning for unchecked scopes")
	}

	// Nor on a mount without a config.
	resp = must(t)(getTestBackend(t).write("roles/early", map[string]any{"scopes": "admin:write"}))
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "the mount has no config yet, so scopes are not checked") {
		t.Errorf("warnings %v, want one saying the scopes are not checked", resp)
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

// Metadata from the CLI: comma-separated pairs in one argument, the argument
// repeated, both, or an object over the API. Lengths count characters.
func TestRoles_MetadataForms(t *testing.T) {
	e := getTestBackend(t)
	for name, tc := range map[string]struct {
		in   any
		want map[string]string
	}{
		"comma-separated":     {"team=platform,env=dev", map[string]string{"team": "platform", "env": "dev"}},
		"repeated":            {[]any{"team=platform", "env=dev"}, map[string]string{"team": "platform", "env": "dev"}},
		"repeated and commas": {[]any{"team=platform,env=dev", "tier=1"}, map[string]string{"team": "platform", "env": "dev", "tier": "1"}},
		"object":              {map[string]any{"team": "platform", "note": "a,b=c"}, map[string]string{"team": "platform", "note": "a,b=c"}},
		"comma in a value":    {"note=a, b,team=x", map[string]string{"note": "a, b", "team": "x"}},
		"spaces around":       {" team = platform , env=dev ", map[string]string{"team": "platform", "env": "dev"}},
		"= in a value":        {"url=https://x.example/?a=b", map[string]string{"url": "https://x.example/?a=b"}},
		"empty clears":        {"", map[string]string{}},
		"300 é is 300 chars":  {"k=" + strings.Repeat("é", 300), map[string]string{"k": strings.Repeat("é", 300)}},
		"40 character key":    {strings.Repeat("ü", 40) + "=v", map[string]string{strings.Repeat("ü", 40): "v"}},
	} {
		t.Run(name, func(t *testing.T) {
			must(t)(e.write("roles/r", map[string]any{"scopes": "a:read", "metadata": tc.in}))
			got := must(t)(e.read("roles/r")).Data["metadata"]
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("metadata %#v, want %#v", got, tc.want)
			}
		})
	}
}

// With the root's scopes unknown (verify_connection=false) the contract's
// limits still hold, and a huge list is refused by its count.
func TestRoles_ScopeLimitsWithoutVerifiedRoot(t *testing.T) {
	e := getTestBackend(t)
	must(t)(e.write(configPath, map[string]any{"verify_connection": false, "token": "tok_test_abcdefghijklmnopqrstuvwxyz"}))
	for name, scopes := range map[string]string{
		"51 scopes":     manyScopes(51),
		"100000 scopes": manyScopes(100000),
		"long scope":    "a:" + strings.Repeat("b", 99),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.write("roles/r", map[string]any{"scopes": scopes})
			mustUserError(t, resp, err, "scopes: ")
			if len(resp.Error().Error()) > 300 {
				t.Errorf("message of %d bytes", len(resp.Error().Error()))
			}
			if r, _ := readRole(t.Context(), e.storage, "r"); r != nil {
				t.Fatal("role stored")
			}
		})
	}
	must(t)(e.write("roles/r", map[string]any{"scopes": manyScopes(50) + "," + manyScopes(50)})) // 50 once de-duplicated
	if got := must(t)(e.read("roles/r")).Data["scopes"].([]string); len(got) != 50 {
		t.Errorf("%d scopes stored", len(got))
	}
}

// A role write's cost per scope stays flat as the list grows (ns/scope at
// 1k and 100k scopes: a ratio near 1 is linear; the de-duplication was
// quadratic).
func BenchmarkRoleWriteScopes(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := getTestBackend(b, withQuietLogger())
			data := map[string]any{"scopes": manyScopes(n)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := e.write("roles/r", data)
				if err != nil || !resp.IsError() {
					b.Fatalf("%v %v", resp, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/scope")
		})
	}
}

// "Nobody but Vault knows the root" and "every token dies with its lease":
// a role with tokens:* scopes makes the creds holder an administrator of
// the Tooken account (with tokens:write it can revoke the root, which locks
// the engine out, and create tokens that outlive its lease). Such a role is
// refused unless allow_token_management=true, which stores it with a
// warning saying so; creds may then ask for those scopes. A role stored by
// an earlier version with tokens:* and no opt-in gets a warning on read,
// and its creds are refused, creating nothing.
func TestRoles_TokenManagementNeedsOptIn(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	for _, scopes := range []string{"tokens:write", "tokens:read,deployments:write"} {
		resp, err := e.write("roles/admin", map[string]any{"scopes": scopes, "ttl": "10m", "max_ttl": "1h"})
		mustUserError(t, resp, err, "scopes: tokens:", "allow_token_management=true")
		if r, _ := readRole(t.Context(), e.storage, "admin"); r != nil {
			t.Fatalf("scopes %s without allow_token_management: role stored", scopes)
		}
	}

	resp := must(t)(e.write("roles/admin", map[string]any{"scopes": "tokens:write,deployments:write", "allow_token_management": true, "ttl": "10m", "max_ttl": "1h"}))
	if resp == nil || !containsAll(strings.Join(resp.Warnings, "\n"), "allow_token_management", "tokens:write", "revoke any token", "root", "outlive the lease") {
		t.Fatalf("role with tokens:write: warnings %v", resp)
	}
	if got := must(t)(e.read("roles/admin")).Data["allow_token_management"]; got != true {
		t.Fatalf("allow_token_management reads %v", got)
	}
	creds := must(t)(e.handle(e.request(logical.ReadOperation, "creds/admin", map[string]any{"scopes": "tokens:write"})))
	if fmt.Sprint(creds.Data["scopes"]) != "[tokens:write]" {
		t.Fatalf("creds scopes %v", creds.Data["scopes"])
	}

	// As an earlier version stored it.
	if err := putRole(t.Context(), e.storage, "legacy", &roleEntry{Scopes: []string{"tokens:write"}}); err != nil {
		t.Fatal(err)
	}
	read := must(t)(e.read("roles/legacy"))
	if !containsAll(strings.Join(read.Warnings, "\n"), "allow_token_management=true", "creds of this role are refused") {
		t.Fatalf("read of a legacy tokens:write role: warnings %v", read.Warnings)
	}
	created := srv.Counters()["created"]
	r, err := e.read("creds/legacy")
	mustUserError(t, r, err, "scopes: tokens:write", `role "legacy" was written by an earlier version`, "allow_token_management=true")
	if n := srv.Counters()["created"]; n != created {
		t.Fatalf("a refused creds read created %d tokens", n-created)
	}
	must(t)(e.write("roles/legacy", map[string]any{"allow_token_management": true}))
	must(t)(e.read("creds/legacy"))
}
