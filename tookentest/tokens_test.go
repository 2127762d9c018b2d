package tookentest

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func listIDs(t *testing.T, r resp) []string {
	t.Helper()
	var ids []string
	data, _ := r.obj["data"].([]any)
	for _, d := range data {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	return ids
}

func TestList(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	var ids []string // newest first
	for i := 0; i < 45; i++ {
		name := fmt.Sprintf("ci-%02d", i)
		if i%3 == 0 {
			name = fmt.Sprintf("web-%02d", i)
		}
		body := tok(name, "billing:read")
		if i == 44 {
			body["expires_at"] = clk.Now().Add(time.Minute).Format(time.RFC3339)
		}
		c := mustCreate(t, s, root, body)
		ids = append([]string{c.id}, ids...)
	}
	// Revoke one, let one expire: both leave the lists.
	revoked := ids[10]
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+revoked, root, nil), 204)
	expired := ids[0]
	clk.Advance(2 * time.Minute)
	var want []string
	for _, id := range ids {
		if id != revoked && id != expired {
			want = append(want, id)
		}
	}
	want = append(want, s.RootTokenID()) // the root is the oldest

	// Default page: 20, newest first.
	r := do(t, s, "GET", "/v1/tokens", root, nil)
	wantStatus(t, r, 200)
	if got := listIDs(t, r); fmt.Sprint(got) != fmt.Sprint(want[:20]) {
		t.Fatalf("first page\n got %v\nwant %v", got, want[:20])
	}
	if r.str("next_cursor") == "" {
		t.Fatal("no next_cursor")
	}

	// Walk every page with limit 7.
	var all []string
	cursor := ""
	for pages := 0; ; pages++ {
		q := url.Values{"limit": {"7"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := do(t, s, "GET", "/v1/tokens?"+q.Encode(), root, nil)
		wantStatus(t, r, 200)
		all = append(all, listIDs(t, r)...)
		if v, ok := r.obj["next_cursor"]; !ok {
			t.Fatal("next_cursor missing")
		} else if v == nil {
			break
		}
		cursor = r.str("next_cursor")
		if pages > 20 {
			t.Fatal("pagination does not end")
		}
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("pages\n got %v\nwant %v", all, want)
	}
	// Exactly one page: next_cursor null.
	r = do(t, s, "GET", fmt.Sprintf("/v1/tokens?limit=%d", len(want)), root, nil)
	if len(listIDs(t, r)) != len(want) || r.obj["next_cursor"] != nil {
		t.Fatalf("full page: %d items, next_cursor %v", len(listIDs(t, r)), r.obj["next_cursor"])
	}
	// limit 100 is allowed.
	wantStatus(t, do(t, s, "GET", "/v1/tokens?limit=100", root, nil), 200)

	// name_prefix, paginated.
	r = do(t, s, "GET", "/v1/tokens?name_prefix=web-&limit=100", root, nil)
	got := listIDs(t, r)
	if len(got) != 15 { // i%3 == 0 for i < 45; the revoked (i=34) and expired (i=44) tokens are not web-
		t.Errorf("name_prefix web-: %d tokens", len(got))
	}
	for _, id := range got {
		rec, _ := s.Token(id)
		if !strings.HasPrefix(rec.Name, "web-") {
			t.Errorf("name_prefix returned %s", rec.Name)
		}
	}
	r = do(t, s, "GET", "/v1/tokens?name_prefix=nomatch", root, nil)
	if data, ok := r.obj["data"].([]any); !ok || len(data) != 0 || r.obj["next_cursor"] != nil {
		t.Errorf("no match: %s", r.raw)
	}

	for _, tc := range []struct{ query, mention string }{
		{"limit=0", "limit"}, {"limit=101", "limit"}, {"limit=-1", "limit"}, {"limit=abc", "limit"},
		{"limit=", "limit"}, {"limit=1.5", "limit"}, {"limit=1&limit=2", "limit"},
		{"cursor=", "cursor"}, {"cursor=abc", "cursor"}, {"cursor=" + url.QueryEscape("dGMxLjA"), "cursor"},
		{"cursor=%%%", "query"}, {"cursor=dGMxLi0x", "cursor"},
		{"name_prefix=" + url.QueryEscape("a b"), "name_prefix"}, {"name_prefix=" + strings.Repeat("a", 129), "name_prefix"},
		{"starting_after=x", `"starting_after"`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			wantErr(t, do(t, s, "GET", "/v1/tokens?"+tc.query, root, nil), 400, "invalid_request", tc.mention)
		})
	}
}

func TestGet(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	live := mustCreate(t, s, root, tok("live", "tokens:read"))
	gone := mustCreate(t, s, root, tok("gone", "tokens:read"))
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+gone.id, root, nil), 204)
	exp := mustCreate(t, s, root, map[string]any{"name": "exp", "scopes": []string{"tokens:read"}, "expires_at": clk.Now().Add(time.Hour).Format(time.RFC3339)})
	clk.Advance(time.Hour)

	r := do(t, s, "GET", "/v1/tokens/"+live.id, root, nil)
	wantStatus(t, r, 200)
	if r.str("id") != live.id || r.str("name") != "live" {
		t.Fatalf("%s", r.raw)
	}
	r = do(t, s, "GET", "/v1/tokens/self", live.secret, nil)
	wantStatus(t, r, 200)
	if r.str("id") != live.id || r.str("last_used_at") != clk.Now().Format(time.RFC3339) {
		t.Fatalf("self: %s", r.raw)
	}
	for name, id := range map[string]string{
		"unknown": "tkn_000000000000000000000000", "revoked": gone.id, "expired": exp.id,
		"malformed": "nope", "uppercase": strings.ToUpper(live.id), "too long": live.id + "0",
	} {
		t.Run(name, func(t *testing.T) {
			wantErr(t, do(t, s, "GET", "/v1/tokens/"+id, root, nil), 404, "not_found", "no such token")
		})
	}
}

func TestUpdate(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	now := clk.Now()
	rfc := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	c := mustCreate(t, s, root, map[string]any{"name": "u", "scopes": []string{"billing:read"},
		"expires_at": rfc(time.Hour), "metadata": map[string]string{"a": "1", "b": "2"}})

	check := func(t *testing.T, expires string, md map[string]string) {
		t.Helper()
		rec, _ := s.Token(c.id)
		got := "null"
		if rec.ExpiresAt != nil {
			got = rec.ExpiresAt.Format(time.RFC3339)
		}
		if got != expires || fmt.Sprint(rec.Metadata) != fmt.Sprint(md) {
			t.Fatalf("state: expires %s metadata %v, want %s %v", got, rec.Metadata, expires, md)
		}
	}

	steps := []struct {
		name    string
		body    any
		status  int
		mention string
		expires string
		md      map[string]string
	}{
		{"expires only", map[string]any{"expires_at": rfc(2 * time.Hour)}, 200, "", rfc(2 * time.Hour), map[string]string{"a": "1", "b": "2"}},
		{"metadata merge", map[string]any{"metadata": map[string]any{"b": "3", "c": "4"}}, 200, "", rfc(2 * time.Hour), map[string]string{"a": "1", "b": "3", "c": "4"}},
		{"metadata null deletes a key", `{"metadata":{"a":null}}`, 200, "", rfc(2 * time.Hour), map[string]string{"b": "3", "c": "4"}},
		{"both", map[string]any{"expires_at": rfc(3 * time.Hour), "metadata": map[string]string{"d": ""}}, 200, "", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"empty object changes nothing", `{}`, 200, "", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"expires in the past", map[string]any{"expires_at": rfc(-time.Hour)}, 400, "expires_at", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"expires too far", map[string]any{"expires_at": rfc(367 * 24 * time.Hour)}, 400, "366 days", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"expires bad", map[string]any{"expires_at": "soon"}, 400, "expires_at", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"metadata bad value", map[string]any{"metadata": map[string]any{"x": true}}, 400, "metadata.x", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"metadata long key", map[string]any{"metadata": map[string]any{strings.Repeat("k", 41): "v"}}, 400, "40", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"metadata over 20 after merge", map[string]any{"metadata": func() map[string]string {
			m := map[string]string{}
			for i := 0; i < 18; i++ {
				m[fmt.Sprint("n", i)] = "v"
			}
			return m
		}()}, 400, "at most 20 keys", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"unknown field", map[string]any{"name": "other"}, 400, `unknown field "name"`, rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"malformed", `{"metadata":`, 400, "malformed JSON", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"valid metadata with bad expiry changes nothing", map[string]any{"metadata": map[string]string{"z": "z"}, "expires_at": rfc(-time.Hour)}, 400, "expires_at", rfc(3 * time.Hour), map[string]string{"b": "3", "c": "4", "d": ""}},
		{"metadata null clears", `{"metadata":null}`, 200, "", rfc(3 * time.Hour), map[string]string{}},
		{"expires null clears", `{"expires_at":null}`, 200, "", "null", map[string]string{}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := do(t, s, "PATCH", "/v1/tokens/"+c.id, root, st.body)
			if st.status == 200 {
				wantStatus(t, r, 200)
				if r.str("id") != c.id {
					t.Fatalf("%s", r.raw)
				}
			} else {
				wantErr(t, r, st.status, "invalid_request", st.mention)
			}
			check(t, st.expires, st.md)
		})
	}
	gone := mustCreate(t, s, root, tok("gone", "billing:read"))
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+gone.id, root, nil), 204)
	wantErr(t, do(t, s, "PATCH", "/v1/tokens/"+gone.id, root, map[string]any{"metadata": map[string]string{"a": "b"}}), 404, "not_found")
	wantErr(t, do(t, s, "PATCH", "/v1/tokens/tkn_000000000000000000000000", root, `{}`), 404, "not_found")
	// The answer of a PATCH never has a secret.
	r := do(t, s, "PATCH", "/v1/tokens/"+c.id, root, `{}`)
	if _, has := r.obj["secret"]; has {
		t.Fatal("secret in PATCH answer")
	}
}

func TestRotate(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	c := mustCreate(t, s, root, tok("r", "billing:read"))

	// Bad input: 400 and the secret is unchanged.
	for _, tc := range []struct{ name, body, mention string }{
		{"negative", `{"previous_secret_ttl":-1}`, "between 0 and 86400"},
		{"too long", `{"previous_secret_ttl":86401}`, "between 0 and 86400"},
		{"fraction", `{"previous_secret_ttl":1.5}`, "integer number of seconds"},
		{"exponent", `{"previous_secret_ttl":1e3}`, "integer number of seconds"},
		{"string duration", `{"previous_secret_ttl":"30s"}`, "got a string"},
		{"bool", `{"previous_secret_ttl":true}`, "previous_secret_ttl"},
		{"huge", `{"previous_secret_ttl":99999999999999999999}`, "previous_secret_ttl"},
		{"unknown field", `{"ttl":30}`, `unknown field "ttl"`},
		{"malformed", `{`, "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, do(t, s, "POST", "/v1/tokens/"+c.id+"/rotate", root, tc.body), 400, "invalid_request", tc.mention)
			if _, ok := s.Authenticate(c.secret); !ok {
				t.Fatal("secret changed")
			}
			if rec, _ := s.Token(c.id); rec.RotatedAt != nil {
				t.Fatal("rotated_at set")
			}
		})
	}

	// Default: no grace, the old secret dies at once.
	r := do(t, s, "POST", "/v1/tokens/"+c.id+"/rotate", root, nil)
	wantStatus(t, r, 200)
	s1 := r.str("secret")
	if !validSecretFormat(s1) || s1 == c.secret || r.str("id") != c.id || r.str("rotated_at") != clk.Now().Format(time.RFC3339) ||
		r.str("previous_secret_expires_at") != clk.Now().Format(time.RFC3339) {
		t.Fatalf("rotate answer %s", r.raw)
	}
	if _, ok := s.Authenticate(c.secret); ok {
		t.Fatal("old secret works after rotate without grace")
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", c.secret, nil), 401, "unauthorized")

	// With grace: the old secret works until previous_secret_expires_at.
	r = do(t, s, "POST", "/v1/tokens/"+c.id+"/rotate", root, map[string]any{"previous_secret_ttl": 60})
	wantStatus(t, r, 200)
	s2 := r.str("secret")
	if r.str("previous_secret_expires_at") != clk.Now().Add(time.Minute).Format(time.RFC3339) {
		t.Fatalf("previous_secret_expires_at %s", r.raw)
	}
	for _, sec := range []string{s1, s2} {
		if rec, ok := s.Authenticate(sec); !ok || rec.ID != c.id {
			t.Fatal("a secret does not work within the grace")
		}
	}
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", s1, nil), 200)
	// A second rotation keeps the first grace (each old secret has its own end).
	clk.Advance(30 * time.Second)
	r = do(t, s, "POST", "/v1/tokens/self/rotate", s2, map[string]any{"previous_secret_ttl": 3600})
	wantStatus(t, r, 200)
	s3 := r.str("secret")
	if rec, _ := s.Token(c.id); rec.PreviousSecrets != 2 {
		t.Fatalf("previous secrets %d", rec.PreviousSecrets)
	}
	clk.Advance(30 * time.Second)
	if _, ok := s.Authenticate(s1); ok {
		t.Fatal("s1 works after its grace")
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", s1, nil), 401, "unauthorized")
	for _, sec := range []string{s2, s3} {
		if _, ok := s.Authenticate(sec); !ok {
			t.Fatal("secret dead within grace")
		}
	}
	// Revoke kills every secret, grace or not.
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+c.id, root, nil), 204)
	for _, sec := range []string{s2, s3} {
		if _, ok := s.Authenticate(sec); ok {
			t.Fatal("secret works after revoke")
		}
	}
	wantErr(t, do(t, s, "POST", "/v1/tokens/"+c.id+"/rotate", root, nil), 404, "not_found")

	// Any token may rotate itself, whatever its scopes; the root too.
	weak := mustCreate(t, s, root, tok("weak", "billing:read"))
	r = do(t, s, "POST", "/v1/tokens/"+weak.id+"/rotate", weak.secret, nil)
	wantStatus(t, r, 200)
	if _, ok := s.Authenticate(r.str("secret")); !ok {
		t.Fatal("self-rotated secret does not work")
	}
	r = do(t, s, "POST", "/v1/tokens/"+s.RootTokenID()+"/rotate", root, map[string]any{"previous_secret_ttl": 10})
	wantStatus(t, r, 200)
	newRoot := r.str("secret")
	if rec, ok := s.Authenticate(newRoot); !ok || rec.ID != s.RootTokenID() {
		t.Fatal("new root secret")
	}
	if rec, _ := s.Token(s.RootTokenID()); rec.RotatedAt == nil {
		t.Fatal("root rotated_at")
	}
}

func TestRevoke(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	c := mustCreate(t, s, root, tok("x", "tokens:write"))
	r := do(t, s, "DELETE", "/v1/tokens/"+c.id, root, nil)
	wantStatus(t, r, 204)
	if len(r.raw) != 0 {
		t.Fatalf("204 with a body: %s", r.raw)
	}
	rec, _ := s.Token(c.id)
	if rec.State != stateRevoked || rec.RevokedAt == nil {
		t.Fatalf("%+v", rec)
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", c.secret, nil), 401, "unauthorized")
	wantErr(t, do(t, s, "DELETE", "/v1/tokens/"+c.id, root, nil), 404, "not_found")
	wantErr(t, do(t, s, "DELETE", "/v1/tokens/tkn_ffffffffffffffffffffffff", root, nil), 404, "not_found")
	wantErr(t, do(t, s, "DELETE", "/v1/tokens/bad", root, nil), 404, "not_found")
	for _, id := range listIDs(t, do(t, s, "GET", "/v1/tokens", root, nil)) {
		if id == c.id {
			t.Fatal("revoked token listed")
		}
	}
	// A token with tokens:write may revoke itself.
	self := mustCreate(t, s, root, tok("self", "tokens:write"))
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/self", self.secret, nil), 204)
	if _, ok := s.Authenticate(self.secret); ok {
		t.Fatal("self-revoked secret works")
	}
	if got := s.Counters()["revoked"]; got != 2 {
		t.Fatalf("revoked counter %d", got)
	}
}

func TestAuth(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	exp := mustCreate(t, s, root, map[string]any{"name": "e", "scopes": []string{"tokens:read"}, "expires_at": clk.Now().Add(time.Minute).Format(time.RFC3339)})
	rev := mustCreate(t, s, root, tok("r", "tokens:read"))
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+rev.id, root, nil), 204)
	clk.Advance(time.Minute)
	for _, tc := range []struct{ name, header string }{
		{"missing", ""},
		{"not bearer", "Basic " + root},
		{"empty bearer", "Bearer "},
		{"unknown", "Bearer tok_test_" + strings.Repeat("A", 32)},
		{"garbage", "Bearer x"},
		{"revoked", "Bearer " + rev.secret},
		{"expired", "Bearer " + exp.secret},
		{"root with suffix", "Bearer " + root + "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.Tokens())
			for _, m := range []struct{ method, path string }{{"GET", "/v1/tokens"}, {"POST", "/v1/tokens"}, {"GET", "/v1/tokens/self"}, {"GET", "/v1/nothing"}} {
				req, _ := http.NewRequest(m.method, s.URL()+strings.TrimPrefix(m.path, "/v1"), strings.NewReader(`{"name":"x","scopes":["tokens:read"]}`))
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				res, err := testClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s %s: %d", m.method, m.path, res.StatusCode)
				}
			}
			if len(s.Tokens()) != before {
				t.Fatal("an unauthenticated create made a token")
			}
		})
	}
	// The scheme is case-insensitive.
	req, _ := http.NewRequest("GET", s.URL()+"/tokens/self", nil)
	req.Header.Set("Authorization", "bearer "+root)
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("lower-case bearer: %d", res.StatusCode)
	}
}

func TestRoutes(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	for _, m := range []struct{ method, path string }{
		{"PUT", "/v1/tokens"}, {"DELETE", "/v1/tokens"}, {"POST", "/v1/tokens/" + s.RootTokenID()},
		{"GET", "/v1/tokens/" + s.RootTokenID() + "/rotate"}, {"GET", "/v1/tokens/"}, {"GET", "/v1/other"},
		{"GET", "/v2/tokens"}, {"POST", "/v1/tokens/x/y/rotate"}, {"GET", "/"},
	} {
		t.Run(m.method+" "+m.path, func(t *testing.T) {
			wantErr(t, do(t, s, m.method, m.path, root, nil), 404, "not_found", "unrecognized request")
		})
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens/self?x=1", root, nil), 400, "invalid_request", "no query parameters")
}

func TestExpiry(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	body := map[string]any{"name": "e", "scopes": []string{"tokens:write"}, "expires_at": clk.Now().Add(time.Hour).Format(time.RFC3339)}
	c := mustCreate(t, s, root, body)
	clk.Advance(time.Hour - time.Second)
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", c.secret, nil), 200)
	clk.Advance(time.Second) // expires_at reached: expired
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", c.secret, nil), 401, "unauthorized")
	for _, m := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/tokens/" + c.id, nil},
		{"PATCH", "/v1/tokens/" + c.id, map[string]any{"expires_at": clk.Now().Add(time.Hour).Format(time.RFC3339)}},
		{"POST", "/v1/tokens/" + c.id + "/rotate", nil},
		{"DELETE", "/v1/tokens/" + c.id, nil},
	} {
		t.Run(m.method, func(t *testing.T) {
			wantErr(t, do(t, s, m.method, m.path, root, m.body), 404, "not_found")
		})
	}
	for _, id := range listIDs(t, do(t, s, "GET", "/v1/tokens?limit=100", root, nil)) {
		if id == c.id {
			t.Fatal("expired token listed")
		}
	}
	rec, _ := s.Token(c.id)
	if rec.State != stateExpired || rec.RevokedAt != nil || rec.RotatedAt != nil {
		t.Fatalf("%+v", rec)
	}
	if got := len(s.TokensInState(stateExpired)); got != 1 {
		t.Fatalf("expired tokens %d", got)
	}
	if liveCount(s) != 1 {
		t.Fatal("live tokens")
	}
}
