package tookentest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCreate(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	now := clk.Now()
	rfc := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }

	r := do(t, s, "POST", "/v1/tokens", root, map[string]any{
		"name": "ci-deploy", "scopes": []string{"tokens:read", "deployments:write", "tokens:read"},
		"expires_at": rfc(time.Hour), "metadata": map[string]string{"vault_role": "ci"},
	})
	wantStatus(t, r, http.StatusCreated)
	id, secret := r.str("id"), r.str("secret")
	if !validTokenID(id) || !validSecretFormat(secret) || !strings.HasPrefix(secret, "tok_test_") || len(secret) != 9+32 {
		t.Fatalf("id %q secret format %v", id, validSecretFormat(secret))
	}
	if got := fmt.Sprint(r.obj["scopes"]); got != "[tokens:read deployments:write]" {
		t.Errorf("scopes %s (duplicates are dropped, order kept)", got)
	}
	if r.str("expires_at") != rfc(time.Hour) || r.str("created_at") != now.Format(time.RFC3339) {
		t.Errorf("times %s", r.raw)
	}
	for _, k := range []string{"rotated_at", "last_used_at"} {
		if v, ok := r.obj[k]; !ok || v != nil {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
	rec, ok := s.Token(id)
	if !ok || rec.CreatedBy != s.RootTokenID() || rec.State != stateLive || rec.Metadata["vault_role"] != "ci" {
		t.Fatalf("record %+v", rec)
	}
	if got, ok := s.Authenticate(secret); !ok || got.ID != id {
		t.Fatal("new secret does not authenticate")
	}
	// The secret is shown once: never in get or list.
	g := do(t, s, "GET", "/v1/tokens/"+id, root, nil)
	wantStatus(t, g, http.StatusOK)
	if _, has := g.obj["secret"]; has || strings.Contains(string(g.raw), secret) {
		t.Fatalf("get shows the secret: %s", g.raw)
	}
	// No expiry and no metadata: expires_at null, metadata {}.
	r = do(t, s, "POST", "/v1/tokens", root, tok("never", "billing:read"))
	wantStatus(t, r, http.StatusCreated)
	if v, ok := r.obj["expires_at"]; !ok || v != nil {
		t.Errorf("expires_at %v", v)
	}
	if md, ok := r.obj["metadata"].(map[string]any); !ok || len(md) != 0 {
		t.Errorf("metadata %v", r.obj["metadata"])
	}
	// Exactly 366 days ahead and a 128-character name are accepted.
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, map[string]any{
		"name": strings.Repeat("a", 128), "scopes": []string{"billing:read"}, "expires_at": rfc(MaxExpiresAhead),
	}), http.StatusCreated)
}

func TestCreateBadInput(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	now := clk.Now()
	rfc := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	manyKeys := map[string]string{}
	for i := 0; i < 21; i++ {
		manyKeys[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name    string
		body    any
		hdr     []string
		mention string
	}{
		{"malformed json", `{"name": "x",`, nil, "malformed JSON"},
		{"syntax error", `{"name" "x"}`, nil, "malformed JSON"},
		{"trailing data", `{"name":"x","scopes":["billing:read"]} {}`, nil, "after the top-level object"},
		{"array body", `[1,2]`, nil, "JSON object"},
		{"null body", `null`, nil, "JSON object"},
		{"string body", `"x"`, nil, "JSON object"},
		{"empty body", ``, nil, "name is required"},
		{"unknown field", `{"name":"x","scopes":["billing:read"],"secret":"y"}`, nil, `unknown field "secret"`},
		{"field case differs", `{"Name":"x","scopes":["billing:read"]}`, nil, `unknown field "Name"`},
		{"name missing", map[string]any{"scopes": []string{"billing:read"}}, nil, "name"},
		{"name null", `{"name":null,"scopes":["billing:read"]}`, nil, "name must be a string"},
		{"name number", `{"name":5,"scopes":["billing:read"]}`, nil, "name must be a string, got a number"},
		{"name empty", tok("", "billing:read"), nil, "name"},
		{"name too long", tok(strings.Repeat("a", 129), "billing:read"), nil, "name"},
		{"name bad char", tok("ci deploy", "billing:read"), nil, "name"},
		{"name slash", tok("ci/deploy", "billing:read"), nil, "name"},
		{"name unicode", tok("cí", "billing:read"), nil, "name"},
		{"scopes missing", map[string]any{"name": "x"}, nil, "scopes is required"},
		{"scopes empty", `{"name":"x","scopes":[]}`, nil, "scopes must not be empty"},
		{"scopes null", `{"name":"x","scopes":null}`, nil, "scopes must be an array"},
		{"scopes string", `{"name":"x","scopes":"billing:read"}`, nil, "scopes must be an array"},
		{"scopes numbers", `{"name":"x","scopes":[1]}`, nil, "scopes must be an array of strings"},
		{"scope no colon", tok("x", "billing"), nil, `"billing" is not a valid scope`},
		{"scope upper", tok("x", "Billing:read"), nil, "not a valid scope"},
		{"scope empty action", tok("x", "billing:"), nil, "not a valid scope"},
		{"scope empty resource", tok("x", ":read"), nil, "not a valid scope"},
		{"scope digit first", tok("x", "1billing:read"), nil, "not a valid scope"},
		{"scope two colons", tok("x", "a:b:c"), nil, "not a valid scope"},
		{"scope space", tok("x", "billing: read"), nil, "not a valid scope"},
		{"scope too long", tok("x", "a:"+strings.Repeat("b", 99)), nil, "not a valid scope"},
		{"too many scopes", tok("x", strings.Split(strings.Repeat("billing:read,", 51), ",")[:51]...), nil, "at most 50"},
		{"expires past", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "expires_at": rfc(-time.Second)}, nil, "expires_at must be in the future"},
		{"expires now", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "expires_at": rfc(0)}, nil, "expires_at must be in the future"},
		{"expires too far", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "expires_at": rfc(MaxExpiresAhead + time.Second)}, nil, "366 days"},
		{"expires not rfc3339", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "expires_at": "tomorrow"}, nil, "expires_at"},
		{"expires number", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "expires_at": 1234}, nil, "expires_at must be an RFC 3339"},
		{"metadata array", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": []string{"a"}}, nil, "metadata must be an object"},
		{"metadata number value", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]any{"a": 1}}, nil, "metadata.a must be a string"},
		{"metadata null value", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]any{"a": nil}}, nil, "metadata.a must be a string"},
		{"metadata 21 keys", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": manyKeys}, nil, "at most 20 keys"},
		{"metadata long key", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]string{strings.Repeat("k", 41): "v"}}, nil, "longer than 40"},
		{"metadata empty key", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]string{"": "v"}}, nil, "must not be empty"},
		{"metadata long value", map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]string{"k": strings.Repeat("v", 501)}}, nil, "metadata.k is longer than 500"},
		{"body too large", `{"name":"x","scopes":["billing:read"],"metadata":{"k":"` + strings.Repeat("v", MaxBodyBytes) + `"}}`, nil, "larger than 65536 bytes"},
		{"wrong content type", `{"name":"x","scopes":["billing:read"]}`, []string{"Content-Type", "text/plain"}, "Content-Type"},
		{"idempotency key too long", tok("x", "billing:read"), []string{"Idempotency-Key", strings.Repeat("k", 256)}, "Idempotency-Key"},
		{"idempotency key control char", tok("x", "billing:read"), []string{"Idempotency-Key", "a\tb"}, "Idempotency-Key"},
		{"query parameter", tok("x", "billing:read"), []string{}, ""},
	}
	before := len(s.Tokens())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/tokens"
			if tc.name == "query parameter" {
				path += "?limit=1"
				tc.mention = "no query parameters"
			}
			r := do(t, s, "POST", path, root, tc.body, tc.hdr...)
			wantErr(t, r, http.StatusBadRequest, "invalid_request", tc.mention)
			if got := len(s.Tokens()); got != before {
				t.Fatalf("a rejected create left %d tokens, want %d", got, before)
			}
		})
	}
	// Limits themselves are accepted: 20 keys, 40-char key, 500-char value.
	md := map[string]string{strings.Repeat("k", 40): strings.Repeat("v", 500)}
	for i := 0; i < 19; i++ {
		md[fmt.Sprintf("k%d", i)] = "v"
	}
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": md}), http.StatusCreated)
	// Multi-byte characters count as one each.
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, map[string]any{"name": "x", "scopes": []string{"billing:read"}, "metadata": map[string]string{"é": strings.Repeat("é", 500)}}), http.StatusCreated)
	// A charset parameter is fine.
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, tok("x", "billing:read"), "Content-Type", "application/json; charset=utf-8"), http.StatusCreated)
}

func TestScopes(t *testing.T) {
	s := newTestServer(t, Options{RootScopes: []string{"tokens:write", "deployments:write", "billing:read"}})
	root := s.RootSecret()
	writer := mustCreate(t, s, root, tok("writer", "tokens:write", "billing:read"))
	reader := mustCreate(t, s, root, tok("reader", "tokens:read"))
	billing := mustCreate(t, s, root, tok("billing", "billing:read"))

	cases := []struct {
		name    string
		secret  string
		scopes  []string
		status  int
		code    string
		mention []string
	}{
		{"subset", root, []string{"tokens:read", "billing:read"}, 201, "", nil},
		{"write implies read", root, []string{"deployments:read"}, 201, "", nil},
		{"same scopes", writer.secret, []string{"tokens:write", "billing:read"}, 201, "", nil},
		{"read does not imply write", root, []string{"billing:write"}, 403, "scope_not_held", []string{"billing:write"}},
		{"unknown resource", root, []string{"admin:read", "tokens:read", "users:write"}, 403, "scope_not_held", []string{"admin:read", "users:write"}},
		{"escalation by writer", writer.secret, []string{"deployments:write"}, 403, "scope_not_held", []string{"deployments:write"}},
		{"reader cannot create", reader.secret, []string{"tokens:read"}, 403, "forbidden", []string{"tokens:write"}},
		{"billing cannot create", billing.secret, []string{"billing:read"}, 403, "forbidden", []string{"tokens:write"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.Tokens())
			r := do(t, s, "POST", "/v1/tokens", tc.secret, tok("x", tc.scopes...))
			if tc.status == 201 {
				wantStatus(t, r, 201)
				if len(s.Tokens()) != before+1 {
					t.Fatal("no token made")
				}
				return
			}
			wantErr(t, r, tc.status, tc.code, tc.mention...)
			if len(s.Tokens()) != before {
				t.Fatal("a refused create made a token")
			}
		})
	}

	// tokens:read is needed to get or list; tokens:write implies it.
	for _, tc := range []struct {
		name   string
		secret string
		method string
		path   string
		status int
		code   string
	}{
		{"reader lists", reader.secret, "GET", "/v1/tokens", 200, ""},
		{"writer lists", writer.secret, "GET", "/v1/tokens", 200, ""},
		{"billing cannot list", billing.secret, "GET", "/v1/tokens", 403, "forbidden"},
		{"reader gets another", reader.secret, "GET", "/v1/tokens/" + writer.id, 200, ""},
		{"billing cannot get another", billing.secret, "GET", "/v1/tokens/" + writer.id, 403, "forbidden"},
		{"billing gets self", billing.secret, "GET", "/v1/tokens/self", 200, ""},
		{"billing gets own id", billing.secret, "GET", "/v1/tokens/" + billing.id, 200, ""},
		{"reader cannot update", reader.secret, "PATCH", "/v1/tokens/" + billing.id, 403, "forbidden"},
		{"reader cannot update self", reader.secret, "PATCH", "/v1/tokens/self", 403, "forbidden"},
		{"reader cannot revoke", reader.secret, "DELETE", "/v1/tokens/" + billing.id, 403, "forbidden"},
		{"reader cannot revoke self", reader.secret, "DELETE", "/v1/tokens/" + reader.id, 403, "forbidden"},
		{"reader cannot rotate another", reader.secret, "POST", "/v1/tokens/" + billing.id + "/rotate", 403, "forbidden"},
		{"writer cannot rotate a stronger token", writer.secret, "POST", "/v1/tokens/" + s.RootTokenID() + "/rotate", 403, "scope_not_held"},
		{"writer cannot update a stronger token", writer.secret, "PATCH", "/v1/tokens/" + s.RootTokenID(), 403, "scope_not_held"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.method == "PATCH" {
				body = map[string]any{"metadata": map[string]string{"x": "y"}}
			}
			r := do(t, s, tc.method, tc.path, tc.secret, body)
			if tc.status == 200 {
				wantStatus(t, r, 200)
				return
			}
			wantErr(t, r, tc.status, tc.code)
		})
	}
	// Nothing above changed a token.
	for _, rec := range s.Tokens() {
		if rec.State != stateLive || rec.RotatedAt != nil || len(rec.Metadata) != 0 {
			t.Errorf("token %s changed: %+v", rec.Name, rec)
		}
	}
	// The writer may revoke a stronger token (removing access is no escalation).
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+reader.id, writer.secret, nil), 204)
}

func TestValidScope(t *testing.T) {
	for s, want := range map[string]bool{
		"tokens:read": true, "a_b.c-d:x9": true, "a:b": true, "z9:y_": true,
		"tokens": false, "Tokens:read": false, "tokens:Read": false, ":read": false, "tokens:": false,
		"_a:b": false, "a:-b": false, "a:b:c": false, "a :b": false, "": false, "é:a": false,
	} {
		if ValidScope(s) != want {
			t.Errorf("ValidScope(%q) = %v", s, !want)
		}
	}
}
