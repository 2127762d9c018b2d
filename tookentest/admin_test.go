package tookentest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func admin(t *testing.T, s *Server, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.AdminURL()+path, rd)
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func TestAdminAPI(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	c := mustCreate(t, s, root, tok("a", "billing:read"))
	gone := mustCreate(t, s, root, tok("b", "billing:read"))
	wantStatus(t, do(t, s, "DELETE", "/v1/tokens/"+gone.id, root, nil), 204)

	var recs []TokenRecord
	st, b := admin(t, s, "GET", "/admin/tokens", "")
	if st != 200 || json.Unmarshal(b, &recs) != nil || len(recs) != 3 {
		t.Fatalf("%d %s", st, b)
	}
	st, b = admin(t, s, "GET", "/admin/tokens?state=live", "")
	if json.Unmarshal(b, &recs) != nil || len(recs) != 2 || recs[1].ID != c.id || recs[1].CreatedBy != s.RootTokenID() {
		t.Fatalf("%d %s", st, b)
	}
	st, b = admin(t, s, "GET", "/admin/tokens?state=revoked", "")
	if json.Unmarshal(b, &recs) != nil || len(recs) != 1 || recs[0].State != "revoked" {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := admin(t, s, "GET", "/admin/tokens?state=bogus", ""); st != 400 {
		t.Fatal(st)
	}
	var rec TokenRecord
	st, b = admin(t, s, "GET", "/admin/tokens/"+c.id, "")
	if st != 200 || json.Unmarshal(b, &rec) != nil || rec.Name != "a" {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := admin(t, s, "GET", "/admin/tokens/tkn_x", ""); st != 404 {
		t.Fatal(st)
	}
	if st, b := admin(t, s, "GET", "/admin/root", ""); st != 200 || !strings.Contains(string(b), s.RootTokenID()) || strings.Contains(string(b), "tok_") {
		t.Fatalf("%d %s", st, b)
	}

	// auth
	st, b = admin(t, s, "POST", "/admin/auth", `{"secret":"`+c.secret+`"}`)
	if st != 200 || !strings.Contains(string(b), `"valid":true`) || !strings.Contains(string(b), c.id) {
		t.Fatalf("%d %s", st, b)
	}
	st, b = admin(t, s, "POST", "/admin/auth", `{"secret":"`+gone.secret+`"}`)
	if st != 200 || string(b) != "{\"token_id\":null,\"valid\":false}\n" {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := admin(t, s, "POST", "/admin/auth", `{"secret":1}`); st != 400 {
		t.Fatal(st)
	}

	// faults
	st, b = admin(t, s, "POST", "/admin/faults", `{"method":"GET","path":"/v1/tokens/self","count":1,"status":429,"retry_after":3,"latency":"10ms"}`)
	if st != 201 || !strings.Contains(string(b), `"id":"flt_`) {
		t.Fatalf("%d %s", st, b)
	}
	st, b = admin(t, s, "GET", "/admin/faults", "")
	var infos []FaultInfo
	if st != 200 || json.Unmarshal(b, &infos) != nil || len(infos) != 1 || infos[0].Fault.Latency != 10*time.Millisecond || infos[0].Fault.RetryAfter != 3 {
		t.Fatalf("%d %s", st, b)
	}
	r := do(t, s, "GET", "/v1/tokens/self", root, nil)
	wantErr(t, r, 429, "rate_limited")
	if r.header.Get("Retry-After") != "3" {
		t.Fatal(r.header)
	}
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 200)
	// Go field names work too.
	if st, b := admin(t, s, "POST", "/admin/faults", `{"Method":"POST","Path":"/v1/tokens","Count":1,"Drop":true,"RetryAfter":0}`); st != 201 {
		t.Fatalf("%d %s", st, b)
	}
	for _, bad := range []string{`{"status":200}`, `{"latency":"soon","status":503}`, `{"latency":5,"status":503}`, `{"colour":"red","status":503}`, `{"status":"503"}`, `[`, `{}`} {
		if st, b := admin(t, s, "POST", "/admin/faults", bad); st != 400 || !strings.Contains(string(b), "invalid_request") {
			t.Errorf("%s: %d %s", bad, st, b)
		}
	}
	if st, _ := admin(t, s, "DELETE", "/admin/faults/flt_999", ""); st != 404 {
		t.Fatal(st)
	}
	if st, _ := admin(t, s, "DELETE", "/admin/faults", ""); st != 204 || len(s.Faults()) != 0 {
		t.Fatal(st)
	}
	id := s.AddFault(Fault{Status: 500})
	if st, _ := admin(t, s, "DELETE", "/admin/faults/"+id, ""); st != 204 || len(s.Faults()) != 0 {
		t.Fatal(st)
	}

	// rate limit
	if st, b := admin(t, s, "POST", "/admin/ratelimit", `{"rps":5,"burst":2}`); st != 200 || string(b) != "{\"burst\":2,\"rps\":5}\n" {
		t.Fatalf("%d %s", st, b)
	}
	if st, b := admin(t, s, "GET", "/admin/ratelimit", ""); st != 200 || string(b) != "{\"burst\":2,\"rps\":5}\n" {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := admin(t, s, "POST", "/admin/ratelimit", `{"rps":"fast"}`); st != 400 {
		t.Fatal(st)
	}
	admin(t, s, "POST", "/admin/ratelimit", `{"rps":-1}`)
	if rps, _ := s.RateLimit(); rps != -1 {
		t.Fatal(rps)
	}

	// down
	if st, _ := admin(t, s, "POST", "/admin/down", `{"down":true}`); st != 200 {
		t.Fatal(st)
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 503, "unavailable")
	admin(t, s, "POST", "/admin/down", `{"down":false}`)
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 200)
	if st, _ := admin(t, s, "POST", "/admin/down", `{"down":"yes"}`); st != 400 {
		t.Fatal(st)
	}

	// requests and counters
	var reqs []RequestRecord
	st, b = admin(t, s, "GET", "/admin/requests", "")
	if st != 200 || json.Unmarshal(b, &reqs) != nil || len(reqs) == 0 {
		t.Fatalf("%d %s", st, b)
	}
	if strings.Contains(string(b), "tok_test_") {
		t.Fatal("a secret in the request log")
	}
	first := reqs[0]
	if first.Method != "POST" || first.Path != "/v1/tokens" || first.Status != 201 || first.CallerID != s.RootTokenID() || first.RequestID == "" {
		t.Fatalf("%+v", first)
	}
	if st, _ := admin(t, s, "DELETE", "/admin/requests", ""); st != 204 || len(s.Requests()) != 0 {
		t.Fatal(st)
	}
	var counters map[string]int64
	st, b = admin(t, s, "GET", "/admin/counters", "")
	if st != 200 || json.Unmarshal(b, &counters) != nil || counters["created"] != 2 || counters["revoked"] != 1 || counters["faults"] != 1 || counters["rate_limited"] != 0 {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := admin(t, s, "GET", "/admin/nothing", ""); st != 404 {
		t.Fatal(st)
	}
}

func TestRequestLogAndLogger(t *testing.T) {
	var buf syncBuffer
	s := newTestServer(t, Options{Logger: &buf})
	root := s.RootSecret()
	c := mustCreate(t, s, root, tok("l", "billing:read"))
	do(t, s, "GET", "/v1/tokens/"+root, root, nil) // a secret in a path is redacted
	do(t, s, "GET", "/v1/tokens/self", c.secret, nil)
	log := buf.String()
	if strings.Count(log, "\n") != 3 {
		t.Fatalf("log:\n%s", log)
	}
	for _, sec := range []string{root, c.secret} {
		if strings.Contains(log, sec) {
			t.Fatal("a secret in the log")
		}
	}
	if !strings.Contains(log, "POST /v1/tokens 201 caller="+s.RootTokenID()) || !strings.Contains(log, "tok_REDACTED") {
		t.Fatalf("log:\n%s", log)
	}
	reqs := s.Requests()
	if len(reqs) != 3 || reqs[2].CallerID != c.id || strings.Contains(reqs[1].Path, root) {
		t.Fatalf("%+v", reqs)
	}
}

// POST /admin/tokens makes a token as Tooken's operator would, with any
// valid scopes, and answers its secret once: it works at the API, also
// after the root was rotated (nothing of it depends on the root's secret).
func TestAdminCreateToken(t *testing.T) {
	clk := newClock()
	s := newTestServer(t, Options{Now: clk.Now})
	root := s.RootSecret()
	wantStatus(t, do(t, s, "POST", "/v1/tokens/self/rotate", root, map[string]any{}), 200) // the root's secret is Vault's now

	st, b := admin(t, s, "POST", "/admin/tokens", `{"name":"partner1","scopes":["deployments:write","admin:read"],"metadata":{"team":"partners"},"expires_at":"2027-01-01T00:00:00Z"}`)
	var out struct {
		ID        string            `json:"id"`
		Name      string            `json:"name"`
		Scopes    []string          `json:"scopes"`
		Metadata  map[string]string `json:"metadata"`
		ExpiresAt string            `json:"expires_at"`
		Secret    string            `json:"secret"`
	}
	if st != 201 || json.Unmarshal(b, &out) != nil || out.Name != "partner1" || len(out.Scopes) != 2 || out.Metadata["team"] != "partners" || out.ExpiresAt != "2027-01-01T00:00:00Z" {
		t.Fatalf("%d %s", st, b)
	}
	self := do(t, s, "GET", "/v1/tokens/self", out.Secret, nil)
	wantStatus(t, self, 200)
	if self.str("id") != out.ID {
		t.Fatalf("the secret authenticates %s, not %s", self.str("id"), out.ID)
	}
	rec, ok := s.Token(out.ID)
	if !ok || rec.CreatedBy != AdminCreator || rec.State != "live" {
		t.Fatalf("%+v", rec)
	}
	if c := s.Counters()["created"]; c != 1 {
		t.Errorf("created counter %d, want 1", c)
	}

	// The contract's rules, with the API's messages; nothing is made.
	for body, want := range map[string]string{
		`{"scopes":["a:read"]}`:                           "name is required",
		`{"name":"x"}`:                                    "scopes is required",
		`{"name":"x","scopes":["Bad"]}`:                   "scopes:",
		`{"name":"x","scopes":["a:read"],"colour":"red"}`: "unknown field",
		`{"name":"x","scopes":["a:read"],"expires_at":"2000-01-01T00:00:00Z"}`: "expires_at",
	} {
		st, b := admin(t, s, "POST", "/admin/tokens", body)
		if st != 400 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s, want 400 with %q", body, st, b, want)
		}
	}
	if n := len(s.Tokens()); n != 2 {
		t.Errorf("%d tokens, want the root and partner1", n)
	}

	// The Go API does the same.
	exp := clk.Now().Add(time.Hour).UTC().Truncate(time.Second)
	rec, secret, err := s.CreateToken(CreateTokenRequest{Name: "go", Scopes: []string{"billing:read"}, ExpiresAt: &exp})
	if err != nil || rec.CreatedBy != AdminCreator || rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(exp) {
		t.Fatalf("%+v %v", rec, err)
	}
	if got, ok := s.Authenticate(secret); !ok || got.ID != rec.ID {
		t.Fatal("the Go API's secret does not authenticate its token")
	}
	if _, _, err := s.CreateToken(CreateTokenRequest{Name: "noscopes"}); err == nil || !strings.Contains(err.Error(), "scopes") {
		t.Errorf("err = %v, want one naming scopes", err)
	}
}
