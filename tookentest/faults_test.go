package tookentest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultStatus(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	cases := []struct {
		name       string
		fault      Fault
		status     int
		code       string
		retryAfter string
	}{
		{"503", Fault{Method: "POST", Path: "/v1/tokens", Count: 2, Status: 503}, 503, "unavailable", ""},
		{"500", Fault{Path: "/v1/tokens", Count: 1, Status: 500}, 500, "internal", ""},
		{"502", Fault{Path: "/v1/tokens", Count: 1, Status: 502}, 502, "unavailable", ""},
		{"504", Fault{Path: "/v1/tokens", Count: 1, Status: 504}, 504, "unavailable", ""},
		{"429", Fault{Path: "/v1/tokens", Count: 1, Status: 429, RetryAfter: 7}, 429, "rate_limited", "7"},
		{"429 default retry", Fault{Path: "/v1/tokens", Count: 1, Status: 429}, 429, "rate_limited", "1"},
		{"409", Fault{Path: "/v1/tokens", Count: 1, Status: 409}, 409, "conflict", ""},
		{"prefix", Fault{Path: "/v1/tok", Prefix: true, Count: 1, Status: 503}, 503, "unavailable", ""},
		{"any path", Fault{Method: "post", Count: 1, Status: 500}, 500, "internal", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.ClearFaults()
			id := s.AddFault(tc.fault)
			n := len(s.Tokens())
			count := tc.fault.Count
			for i := 0; i < count; i++ {
				r := do(t, s, "POST", "/v1/tokens", root, tok("f", "billing:read"), "Idempotency-Key", "fault-"+tc.name)
				wantErr(t, r, tc.status, tc.code)
				if r.header.Get("Retry-After") != tc.retryAfter {
					t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
				}
				if r.header.Get("X-RateLimit-Limit") == "" {
					t.Fatal("no rate-limit headers on a fault")
				}
			}
			if len(s.Tokens()) != n {
				t.Fatal("a status fault processed the request")
			}
			// Count used up: the next one (same key: a fault is not remembered) goes through.
			wantStatus(t, do(t, s, "POST", "/v1/tokens", root, tok("f", "billing:read"), "Idempotency-Key", "fault-"+tc.name), 201)
			var logged bool
			for _, rec := range s.Requests() {
				if strings.HasPrefix(rec.Fault, id+":status=") {
					logged = true
				}
			}
			if !logged {
				t.Fatal("fault not in the request log")
			}
		})
	}
	// Method and path filters.
	s.ClearFaults()
	s.AddFault(Fault{Method: "DELETE", Path: "/v1/tokens", Prefix: true, Status: 500})
	wantStatus(t, do(t, s, "GET", "/v1/tokens", root, nil), 200)
	s.AddFault(Fault{Path: "/v1/tokens/self", Status: 503})
	wantStatus(t, do(t, s, "GET", "/v1/tokens", root, nil), 200)
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 503, "unavailable")
	if len(s.Faults()) != 2 {
		t.Fatal("unlimited faults must stay")
	}
	s.ClearFaults()
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 200)
	id := s.AddFault(Fault{Status: 503})
	if !s.RemoveFault(id) || s.RemoveFault(id) {
		t.Fatal("RemoveFault")
	}
}

func TestFaultProbability(t *testing.T) {
	s := newTestServer(t, Options{RateLimit: -1})
	root := s.RootSecret()
	s.AddFault(Fault{Path: "/v1/tokens/self", Probability: 0.5, Status: 503})
	hits := 0
	for i := 0; i < 200; i++ {
		if do(t, s, "GET", "/v1/tokens/self", root, nil).status == 503 {
			hits++
		}
	}
	if hits < 50 || hits > 150 { // p = 0.5, n = 200: far outside 6 sigma
		t.Fatalf("%d of 200 hit", hits)
	}
	if got := s.Counters()["faults"]; got != int64(hits) {
		t.Fatalf("faults counter %d, hits %d", got, hits)
	}
}

func TestFaultLatency(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	s.AddFault(Fault{Path: "/v1/tokens/self", Count: 1, Latency: 200 * time.Millisecond})
	start := time.Now()
	wantStatus(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 200)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("latency %v", d)
	}
	s.AddFault(Fault{Path: "/v1/tokens/self", Count: 1, Latency: 100 * time.Millisecond, Status: 503})
	start = time.Now()
	wantErr(t, do(t, s, "GET", "/v1/tokens/self", root, nil), 503, "unavailable")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("latency %v", d)
	}
}

// Drop: the token exists upstream, the client never heard.
func TestFaultDrop(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	s.AddFault(Fault{Method: "POST", Path: "/v1/tokens", Count: 1, Drop: true})
	n := liveCount(s)
	_, err := tryCall(s, "POST", "/v1/tokens", root, tok("dropped", "billing:read"), "Idempotency-Key", "drop-1")
	if err == nil {
		t.Fatal("the client got an answer")
	}
	if liveCount(s) != n+1 {
		t.Fatal("a dropped create did not create")
	}
	made := s.LiveTokens()[n]
	if made.Name != "dropped" {
		t.Fatalf("%+v", made)
	}
	// The retry with the same key gets the token that was made.
	r := do(t, s, "POST", "/v1/tokens", root, tok("dropped", "billing:read"), "Idempotency-Key", "drop-1")
	wantStatus(t, r, 201)
	if r.str("id") != made.ID || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %s", r.raw)
	}
	if _, ok := s.Authenticate(r.str("secret")); !ok {
		t.Fatal("replayed secret does not work")
	}
	if liveCount(s) != n+1 {
		t.Fatal("the retry made another token")
	}
	// Dropped revoke: revoked although the client got an error.
	s.AddFault(Fault{Method: "DELETE", Path: "/v1/tokens/", Prefix: true, Count: 1, Drop: true})
	if _, err := tryCall(s, "DELETE", "/v1/tokens/"+made.ID, root, nil); err == nil {
		t.Fatal("the client got an answer")
	}
	if rec, _ := s.Token(made.ID); rec.State != stateRevoked {
		t.Fatal("dropped revoke did not revoke")
	}
	wantErr(t, do(t, s, "DELETE", "/v1/tokens/"+made.ID, root, nil), 404, "not_found")
	c := s.Counters()
	if c["dropped"] != 2 || c["faults"] != 2 {
		t.Fatalf("counters %v", c)
	}
	var dropped int
	for _, rec := range s.Requests() {
		if rec.Dropped {
			dropped++
		}
	}
	if dropped != 2 {
		t.Fatalf("%d dropped in the log", dropped)
	}
}

func TestDown(t *testing.T) {
	s := newTestServer(t, Options{})
	root := s.RootSecret()
	n := len(s.Tokens())
	s.SetDown(true)
	for _, m := range []string{"GET", "POST"} {
		wantErr(t, do(t, s, m, "/v1/tokens", root, tok("x", "billing:read")), http.StatusServiceUnavailable, "unavailable", "outage")
	}
	wantErr(t, do(t, s, "GET", "/v1/tokens", "", nil), http.StatusServiceUnavailable, "unavailable")
	if len(s.Tokens()) != n {
		t.Fatal("created during an outage")
	}
	s.SetDown(false)
	wantStatus(t, do(t, s, "POST", "/v1/tokens", root, tok("x", "billing:read")), 201)
}

func TestFaultValidate(t *testing.T) {
	for name, f := range map[string]Fault{
		"nothing":       {Path: "/v1/tokens"},
		"bad status":    {Status: 200},
		"status + drop": {Status: 503, Drop: true},
		"probability":   {Status: 503, Probability: 2},
		"count":         {Status: 503, Count: -1},
		"latency":       {Latency: -time.Second},
		"retry after":   {Status: 429, RetryAfter: -1},
		"path":          {Status: 503, Path: "v1/tokens"},
	} {
		if f.Validate() == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := (Fault{Status: 503}).Validate(); err != nil {
		t.Error(err)
	}
}
