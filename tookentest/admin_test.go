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
