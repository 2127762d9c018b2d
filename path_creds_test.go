package tooken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// issuedLive lists the live tokens the engine created (not the root).
func issuedLive(srv *tookentest.Server) []tookentest.TokenRecord {
	var out []tookentest.TokenRecord
	for _, tr := range srv.LiveTokens() {
		if tr.CreatedBy != "" {
			out = append(out, tr)
		}
	}
	return out
}

// createRequests lists the POST /v1/tokens requests seen by the emulator.
func createRequests(srv *tookentest.Server) []tookentest.RequestRecord {
	var out []tookentest.RequestRecord
	for _, r := range srv.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1/tokens" {
			out = append(out, r)
		}
	}
	return out
}

// lease returns the response's secret as Vault would hand it back on renew
// and revoke: with its issue time.
func lease(resp *logical.Response) *logical.Secret {
	s := *resp.Secret
	s.IssueTime = time.Now()
	return &s
}

func (e *testEnv) renew(s *logical.Secret, increment time.Duration) (*logical.Response, error) {
	req := e.request(logical.RenewOperation, "creds/x", nil)
	s.Increment = increment
	req.Secret = s
	return e.handle(req)
}

func (e *testEnv) revoke(s *logical.Secret) (*logical.Response, error) {
	req := e.request(logical.RevokeOperation, "creds/x", nil)
	req.Secret = s
	return e.handle(req)
}

// vaultRenewTTL is the TTL Vault core gives a renewed lease from the
// backend's answer (expiration manager: framework.CalculateTTL).
func vaultRenewTTL(t *testing.T, sys logical.SystemView, s *logical.Secret, resp *logical.Response, increment time.Duration) (time.Duration, error) {
	t.Helper()
	ttl, _, err := framework.CalculateTTL(sys, increment, resp.Secret.TTL, 0, resp.Secret.MaxTTL, 0, s.IssueTime)
	return ttl, err
}

func TestCreds_Read(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("ci-deploy", map[string]any{
		"scopes":   "deployments:write,billing:read",
		"ttl":      "10m",
		"max_ttl":  "1h",
		"metadata": map[string]any{"team": "platform"},
	})

	start := time.Now()
	resp := must(t)(e.read("creds/ci-deploy"))
	secret, _ := resp.Data["token"].(string)
	id, _ := resp.Data["token_id"].(string)
	if secret == "" || id == "" {
		t.Fatalf("creds: %v", resp.Data)
	}
	if got := resp.Data["scopes"].([]string); strings.Join(got, ",") != "deployments:write,billing:read" {
		t.Errorf("scopes = %v", got)
	}
	name := resp.Data["name"].(string)
	if !strings.HasPrefix(name, "vault-ci-deploy-token-") || !tokenNameRegex.MatchString(name) {
		t.Errorf("name = %q", name)
	}
	exp, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if d := exp.Sub(start); d < time.Hour-2*time.Second || d > time.Hour+time.Second {
		t.Errorf("expires_at %s is not issue time + 1h", exp)
	}

	// The lease.
	s := resp.Secret
	if s == nil || !s.Renewable || s.TTL != 10*time.Minute {
		t.Fatalf("lease = %#v", s)
	}
	if s.MaxTTL > time.Until(exp) {
		t.Errorf("lease max TTL %s outlives the token (%s left)", s.MaxTTL, time.Until(exp))
	}
	for k, want := range map[string]string{internalTokenID: id, internalRole: "ci-deploy", internalExpiresAt: resp.Data["expires_at"].(string)} {
		if s.InternalData[k] != want {
			t.Errorf("internal %s = %v, want %v", k, s.InternalData[k], want)
		}
	}
	for k, v := range s.InternalData {
		if v == secret {
			t.Errorf("internal data %s holds the secret", k)
		}
	}

	// Upstream.
	rec, ok := srv.Token(id)
	if !ok || rec.State != "live" || rec.CreatedBy != srv.RootTokenID() || rec.Name != name {
		t.Fatalf("upstream record %#v", rec)
	}
	if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(exp) {
		t.Errorf("upstream expires_at %v, want %v", rec.ExpiresAt, exp)
	}
	wantMD := map[string]string{
		"team":                 "platform",
		"vault_role":           "ci-deploy",
		"vault_mount_uuid":     testMountUUID,
		"vault_mount_accessor": testMountAccessor,
		"vault_issue_key":      s.InternalData[internalIssueKey].(string),
	}
	if got, _ := json.Marshal(rec.Metadata); string(got) != mustJSON(t, wantMD) {
		t.Errorf("metadata = %s, want %s", got, mustJSON(t, wantMD))
	}
	if tr, ok := srv.Authenticate(secret); !ok || tr.ID != id {
		t.Error("issued secret does not work")
	}

	// Revoke kills it upstream.
	must(t)(e.revoke(lease(resp)))
	if _, ok := srv.Authenticate(secret); ok {
		t.Error("secret still works after revoke")
	}
	if n := len(issuedLive(srv)); n != 0 {
		t.Errorf("%d live tokens after revoke", n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCreds_TTLMath(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	day := 24 * time.Hour
	cases := []struct {
		name              string
		mountDefault      time.Duration
		mountMax          time.Duration
		ttl, maxTTL       string
		wantTTL, wantLife time.Duration // wantTTL 0: capped by the life (minus the slack)
	}{
		{"mount defaults", time.Hour, day, "", "", time.Hour, day},
		{"role ttl and max_ttl", time.Hour, day, "10m", "2h", 10 * time.Minute, 2 * time.Hour},
		{"role max_ttl capped by mount", time.Hour, day, "", "48h", time.Hour, day},
		{"role ttl over mount max", time.Hour, day, "30h", "", 0, day},
		{"ttl equals max_ttl", time.Hour, day, "1h", "1h", 0, time.Hour},
		{"mount default over role max_ttl", 10 * time.Hour, day, "", "1h", 0, time.Hour},
		{"mount max over 366 days", time.Hour, 400 * day, "", "", time.Hour, 366 * day},
		{"role max_ttl over 366 days", time.Hour, 1000 * day, "", "9000h", time.Hour, 366 * day},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sys := logical.TestSystemView()
			sys.DefaultLeaseTTLVal, sys.MaxLeaseTTLVal = tc.mountDefault, tc.mountMax
			e := getTestBackend(t, withSystemView(sys))
			e.configure(srv, nil)
			role := map[string]any{"scopes": "deployments:write"}
			if tc.ttl != "" {
				role["ttl"] = tc.ttl
			}
			if tc.maxTTL != "" {
				role["max_ttl"] = tc.maxTTL
			}
			e.writeRole("r", role)

			before := time.Now().Truncate(time.Second)
			resp := must(t)(e.read("creds/r"))
			after := time.Now()
			exp, _ := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			if exp.Before(before.Add(tc.wantLife)) || exp.After(after.Add(tc.wantLife)) {
				t.Errorf("expires_at %s, want issue time + %s", exp, tc.wantLife)
			}
			rec, _ := srv.Token(resp.Data["token_id"].(string))
			if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(exp) {
				t.Errorf("upstream expires_at %v, want %v", rec.ExpiresAt, exp)
			}
			got := resp.Secret.TTL
			if tc.wantTTL != 0 && got != tc.wantTTL {
				t.Errorf("lease TTL %s, want %s", got, tc.wantTTL)
			}
			if tc.wantTTL == 0 && (got > tc.wantLife-time.Second || got < tc.wantLife-3*time.Second) {
				t.Errorf("lease TTL %s, want just under %s", got, tc.wantLife)
			}
			// Vault's lease (which starts after our answer) never outlives the token.
			if leaseEnd := time.Now().Add(got); leaseEnd.After(exp) {
				t.Errorf("lease ends %s after the token", leaseEnd.Sub(exp))
			}
			if resp.Secret.MaxTTL < got || time.Now().Add(resp.Secret.MaxTTL).After(exp) {
				t.Errorf("lease max TTL %s (ttl %s, token expires in %s)", resp.Secret.MaxTTL, got, time.Until(exp))
			}
		})
	}
}

func TestCreds_Renew(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
	resp := must(t)(e.read("creds/r"))
	exp, _ := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))

	t.Run("fresh lease renews by the role ttl", func(t *testing.T) {
		s := lease(resp)
		r := must(t)(e.renew(s, 0))
		if r.Secret.TTL != 10*time.Minute {
			t.Errorf("TTL %s", r.Secret.TTL)
		}
		ttl, err := vaultRenewTTL(t, e.sys, s, r, 0)
		if err != nil || ttl != 10*time.Minute {
			t.Errorf("Vault TTL %s %v", ttl, err)
		}
		// The lease's end is recorded, at the creds read and at each renewal.
		for _, sec := range []*logical.Secret{resp.Secret, r.Secret} {
			end, err := time.Parse(time.RFC3339, sec.InternalData[internalLeaseEnd].(string))
			if want := time.Now().Add(10 * time.Minute); err != nil || end.After(want) || end.Before(want.Add(-2*time.Second)) {
				t.Errorf("lease_end %v %v, want about %s", sec.InternalData[internalLeaseEnd], err, want)
			}
		}
		// A large increment is capped at the token's expiry.
		ttl, err = vaultRenewTTL(t, e.sys, s, r, 24*time.Hour)
		if err != nil || time.Now().Add(ttl).After(exp) {
			t.Errorf("increment 24h: ttl %s (token expires in %s) %v", ttl, time.Until(exp), err)
		}
	})

	// Leases issued a while ago: only internal data and IssueTime matter.
	cases := []struct {
		name      string
		age, left time.Duration // lease age, time until the upstream expiry
		increment time.Duration
		wantErr   string
	}{
		{"close to the limit", 55 * time.Minute, 5 * time.Minute, 0, ""},
		{"close to the limit, big increment", 55 * time.Minute, 5 * time.Minute, time.Hour, ""},
		{"a few seconds left", 59*time.Minute + 50*time.Second, 10 * time.Second, 0, ""},
		{"past the limit", 61 * time.Minute, -time.Minute, 0, "max TTL"},
		{"at the limit", time.Hour, 0, 0, "max TTL"},
		{"at the limit, big increment", time.Hour, 0, time.Hour, "max TTL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			s := lease(resp)
			s.IssueTime = now.Add(-tc.age)
			s.InternalData = map[string]any{}
			for k, v := range resp.Secret.InternalData {
				s.InternalData[k] = v
			}
			upExp := now.Add(tc.left).UTC().Truncate(time.Second)
			s.InternalData[internalExpiresAt] = upExp.Format(time.RFC3339)
			r, err := e.renew(s, tc.increment)
			mustOK(t, r, err)
			ttl, err := vaultRenewTTL(t, e.sys, s, r, tc.increment)
			if tc.wantErr != "" {
				// Not extended, and a warning says why; Vault itself then
				// refuses (past the max TTL) or keeps the lease's end.
				if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], tc.wantErr) || !strings.Contains(r.Warnings[0], "not extended") {
					t.Errorf("warnings %q", r.Warnings)
				}
				if err == nil && time.Now().Add(ttl).After(upExp) {
					t.Errorf("lease extended past the token: ttl %s", ttl)
				}
				return
			}
			if err != nil {
				// Vault refusing to renew so close to the end is fine too.
				t.Logf("Vault refuses: %v", err)
				return
			}
			if end := time.Now().Add(ttl); end.After(upExp) {
				t.Errorf("renewed lease ends %s after the token", end.Sub(upExp))
			}
			if ttl <= 0 || ttl > 10*time.Minute && tc.increment == 0 {
				t.Errorf("ttl %s", ttl)
			}
		})
	}

	t.Run("role ttl changed", func(t *testing.T) {
		must(t)(e.write("roles/r", map[string]any{"ttl": "2m"}))
		r := must(t)(e.renew(lease(resp), 0))
		if r.Secret.TTL != 2*time.Minute {
			t.Errorf("TTL %s, want the role's new ttl", r.Secret.TTL)
		}
	})

	t.Run("role gone", func(t *testing.T) {
		must(t)(e.del("roles/r"))
		// The lease as Vault keeps it: renewed a minute ago for 2m.
		s := lease(resp)
		s.IssueTime = time.Now().Add(-5 * time.Minute)
		s.TTL = 2 * time.Minute
		end := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
		s.InternalData[internalLeaseEnd] = end.Format(time.RFC3339)
		for _, inc := range []time.Duration{0, time.Hour} {
			r := must(t)(e.renew(s, inc))
			want := `role "r" no longer exists, so the lease is not extended: it ends at ` + end.Format(time.RFC3339) + " unless revoked sooner"
			if len(r.Warnings) != 1 || r.Warnings[0] != want {
				t.Errorf("warnings %q, want %q", r.Warnings, want)
			}
			ttl, err := vaultRenewTTL(t, e.sys, s, r, inc)
			if got := time.Now().Add(ttl); err != nil || got.After(end.Add(time.Second)) || got.Before(end.Add(-2*time.Second)) {
				t.Errorf("increment %s: lease ends %s (%v), want about %s", inc, got, err, end)
			}
		}
		// A lease from before lease_end was recorded ends at issue + TTL.
		delete(s.InternalData, internalLeaseEnd)
		s.IssueTime, s.TTL = time.Now().Add(-time.Minute), 2*time.Minute
		r := must(t)(e.renew(s, 0))
		if ttl, err := vaultRenewTTL(t, e.sys, s, r, 0); err != nil || ttl > time.Minute || ttl < time.Minute-2*time.Second {
			t.Errorf("lease without lease_end: ttl %s %v, want about 1m", ttl, err)
		}
		// Revoke still works without the role.
		must(t)(e.revoke(lease(resp)))
		if rec, _ := srv.Token(resp.Data["token_id"].(string)); rec.State != "revoked" {
			t.Errorf("state %s", rec.State)
		}
	})
}

func TestCreds_Revoke(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})

	t.Run("twice", func(t *testing.T) {
		resp := must(t)(e.read("creds/r"))
		must(t)(e.revoke(lease(resp)))
		must(t)(e.revoke(lease(resp))) // 404 upstream = revoked
	})
	t.Run("token already gone upstream", func(t *testing.T) {
		resp := must(t)(e.read("creds/r"))
		c, err := e.b.getClient(context.Background(), e.storage)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RevokeToken(context.Background(), resp.Data["token_id"].(string)); err != nil {
			t.Fatal(err)
		}
		must(t)(e.revoke(lease(resp)))
	})
	t.Run("internal data only", func(t *testing.T) {
		resp := must(t)(e.read("creds/r"))
		s := &logical.Secret{InternalData: map[string]any{
			"secret_type":   secretTokenType,
			internalTokenID: resp.Data["token_id"],
		}}
		must(t)(e.revoke(s))
		if n := len(issuedLive(srv)); n != 0 {
			t.Errorf("%d live tokens", n)
		}
	})
	t.Run("no token_id", func(t *testing.T) {
		_, err := e.revoke(&logical.Secret{InternalData: map[string]any{"secret_type": secretTokenType}})
		if err == nil {
			t.Error("revoke without token_id succeeded")
		}
	})
	t.Run("upstream down queues the token, the periodic func kills it", func(t *testing.T) {
		resp := must(t)(e.read("creds/r"))
		e.b.queue.retry.base = 0
		srv.SetDown(true)
		must(t)(e.revoke(lease(resp))) // queued: Vault never marks it irrevocable
		srv.SetDown(false)
		if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
			t.Fatal(err)
		}
		if n := len(issuedLive(srv)); n != 0 {
			t.Errorf("%d live tokens", n)
		}
	})
}

func TestCreds_BadRequests(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	t.Run("unknown role", func(t *testing.T) {
		e := getTestBackend(t)
		e.configure(srv, nil)
		resp, err := e.read("creds/nope")
		mustUserError(t, resp, err, `unknown role "nope"`)
	})
	t.Run("not configured", func(t *testing.T) {
		e := getTestBackend(t)
		e.writeRole("r", map[string]any{"scopes": "deployments:write"})
		resp, err := e.read("creds/r")
		mustUserError(t, resp, err, "not configured")
	})
	t.Run("scope not held upstream", func(t *testing.T) {
		e := getTestBackend(t)
		// Role first, config after: the role write could not check.
		e.writeRole("r", map[string]any{"scopes": "admin:write"})
		e.configure(srv, nil)
		srv.ResetRequests()
		resp, err := e.read("creds/r")
		mustUserError(t, resp, err, "scopes:", "admin:write")
		if n := len(createRequests(srv)); n != 1 {
			t.Errorf("%d POSTs for a definitive refusal", n)
		}
	})
}

// Faults on POST /tokens: exactly one upstream token per successful read, and
// none left live after a failed one.
func TestCreds_Faults(t *testing.T) {
	cases := []struct {
		name     string
		faults   []tookentest.Fault
		config   map[string]any
		ctxLimit time.Duration
		wantErr  string
		wantPOST int  // POST /v1/tokens requests, 0 = do not check
		replayed bool // a replayed answer was used
		minTime  time.Duration
		maxTime  time.Duration
	}{
		{name: "429 then ok (Retry-After honoured)",
			faults:   []tookentest.Fault{{Status: 429, RetryAfter: 1, Count: 1}},
			wantPOST: 2, minTime: time.Second},
		{name: "503 twice then ok",
			faults:   []tookentest.Fault{{Status: 503, Count: 2}},
			wantPOST: 3},
		{name: "500 then ok",
			faults:   []tookentest.Fault{{Status: 500, Count: 1}},
			wantPOST: 2},
		{name: "answer dropped once",
			faults:   []tookentest.Fault{{Drop: true, Count: 1}},
			wantPOST: 2, replayed: true},
		{name: "answer dropped on every attempt",
			faults:  []tookentest.Fault{{Drop: true, Count: 4}},
			wantErr: "creating a token", wantPOST: 5}, // 4 attempts + the clean-up replay
		{name: "dropped, then 5xx until retries run out",
			faults:  []tookentest.Fault{{Drop: true, Count: 1}, {Status: 503, Count: 3}},
			wantErr: "creating a token", wantPOST: 5},
		{name: "5xx until retries run out",
			faults:  []tookentest.Fault{{Status: 503, Count: 4}},
			wantErr: "503", wantPOST: 5},
		{name: "persistent outage",
			faults:  []tookentest.Fault{{Status: 503}},
			wantErr: "503"},
		{name: "429 until retries run out",
			faults:  []tookentest.Fault{{Status: 429, RetryAfter: 0, Count: 2}},
			config:  map[string]any{"max_retries": 1},
			wantErr: "rate limiting", wantPOST: 2},
		{name: "429 with Retry-After past the deadline fails fast",
			faults:   []tookentest.Fault{{Status: 429, RetryAfter: 30}},
			ctxLimit: 3 * time.Second,
			wantErr:  "retry after 30s", wantPOST: 1, maxTime: 2 * time.Second},
		{name: "attempts time out",
			faults:  []tookentest.Fault{{Latency: 1500 * time.Millisecond, Count: 2}},
			config:  map[string]any{"request_timeout": "1s", "max_retries": 1},
			wantErr: "creating a token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{})
			e := getTestBackend(t)
			e.configure(srv, tc.config)
			e.writeRole("r", map[string]any{"scopes": "deployments:write"})
			srv.ResetRequests()
			for _, f := range tc.faults {
				f.Method, f.Path = http.MethodPost, "/v1/tokens"
				srv.AddFault(f)
			}

			ctx := context.Background()
			if tc.ctxLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxLimit)
				defer cancel()
			}
			start := time.Now()
			resp, err := e.b.HandleRequest(ctx, e.request(logical.ReadOperation, "creds/r", nil))
			elapsed := time.Since(start)
			srv.ClearFaults()

			if tc.minTime > 0 && elapsed < tc.minTime {
				t.Errorf("took %s, want at least %s", elapsed, tc.minTime)
			}
			if tc.maxTime > 0 && elapsed > tc.maxTime {
				t.Errorf("took %s, want at most %s", elapsed, tc.maxTime)
			}
			posts := createRequests(srv)
			if tc.wantPOST > 0 && len(posts) != tc.wantPOST {
				t.Errorf("%d POST /tokens, want %d: %+v", len(posts), tc.wantPOST, posts)
			}
			for _, p := range posts {
				if p.IdempotencyKey == "" || p.IdempotencyKey != posts[0].IdempotencyKey {
					t.Errorf("POST without the same Idempotency-Key: %+v", posts)
					break
				}
			}

			if tc.wantErr == "" {
				mustOK(t, resp, err)
				live := issuedLive(srv)
				if len(live) != 1 || live[0].ID != resp.Data["token_id"] {
					t.Fatalf("live tokens %+v, want exactly the one issued", live)
				}
				if _, ok := srv.Authenticate(resp.Data["token"].(string)); !ok {
					t.Error("issued secret does not work")
				}
				if tc.replayed && !posts[len(posts)-1].Replayed {
					t.Error("the retry was not answered by a replay")
				}
				return
			}
			if err == nil && !resp.IsError() {
				t.Fatalf("want an error, got %v", resp.Data)
			}
			msg := ""
			if err != nil {
				msg = err.Error()
			} else {
				msg = resp.Error().Error()
			}
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tc.wantErr)
			}
			// The timed-out attempts may still be processed after the answer.
			deadline := time.Now().Add(5 * time.Second)
			for len(issuedLive(srv)) != 0 && time.Now().Before(deadline) && strings.Contains(tc.name, "time out") {
				time.Sleep(100 * time.Millisecond)
			}
			if live := issuedLive(srv); len(live) != 0 {
				t.Errorf("tokens left live after a failed read: %+v", live)
			}
		})
	}
}

// After warm-up, a creds read and its revoke cost no storage round trip.
func TestCreds_StorageOps(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	must(t)(e.read("creds/r")) // warm the caches
	e.storage.reset()
	const n = 20
	for i := 0; i < n; i++ {
		resp := must(t)(e.read("creds/r"))
		must(t)(e.revoke(lease(resp)))
	}
	// A read writes its issuance record twice (pending, confirmed),
	// a revoke deletes it; nothing else.
	if got, puts, dels := e.storage.total(), e.storage.puts.Load(), e.storage.deletes.Load(); got != 3*n || puts != 2*n || dels != n {
		t.Errorf("%d storage ops (%d puts, %d deletes) for %d creds reads and revokes, want %d puts and %d deletes", got, puts, dels, n, 2*n, n)
	}
	// A role write invalidates: the next read costs exactly one Get.
	e.writeRole("r", map[string]any{"ttl": "5m"})
	e.storage.reset()
	must(t)(e.read("creds/r"))
	must(t)(e.read("creds/r"))
	if got := e.storage.gets.Load(); got != 1 {
		t.Errorf("%d Gets after a role change, want 1", got)
	}
}

// A creds read narrows one token with ttl and scopes: the token upstream has
// exactly that lifetime and those scopes, the lease ends with it, and
// renewals stay within it.
func TestCreds_Narrowed(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write,billing:read", "ttl": "1h", "max_ttl": "24h"})

	cases := []struct {
		name       string
		data       map[string]any
		wantScopes string
		wantLife   time.Duration
		wantTTL    time.Duration // 0: just under wantLife
	}{
		{"ttl and scopes", map[string]any{"ttl": "15m", "scopes": "deployments:read"}, "deployments:read", 15 * time.Minute, 0},
		{"ttl in seconds", map[string]any{"ttl": 600}, "deployments:write,billing:read", 10 * time.Minute, 0},
		{"ttl over the role's ttl", map[string]any{"ttl": "4h"}, "deployments:write,billing:read", 4 * time.Hour, 0},
		{"ttl at max_ttl", map[string]any{"ttl": "24h"}, "deployments:write,billing:read", 24 * time.Hour, 0},
		{"ttl at the minimum", map[string]any{"ttl": "10s"}, "deployments:write,billing:read", 10 * time.Second, 0},
		{"scopes only", map[string]any{"scopes": []string{"billing:read", " deployments:write ", "billing:read"}}, "billing:read,deployments:write", 24 * time.Hour, time.Hour},
		{"read covered by write", map[string]any{"scopes": "deployments:read,billing:read"}, "deployments:read,billing:read", 24 * time.Hour, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().Truncate(time.Second)
			resp := must(t)(e.handle(e.request(logical.ReadOperation, "creds/r", tc.data)))
			after := time.Now()
			rec, _ := srv.Token(resp.Data["token_id"].(string))
			if got := strings.Join(rec.Scopes, ","); got != tc.wantScopes {
				t.Errorf("upstream scopes %s, want %s", got, tc.wantScopes)
			}
			if got := strings.Join(resp.Data["scopes"].([]string), ","); got != tc.wantScopes {
				t.Errorf("answered scopes %s", got)
			}
			exp := *rec.ExpiresAt
			if exp.Before(before.Add(tc.wantLife)) || exp.After(after.Add(tc.wantLife)) {
				t.Errorf("upstream expires in %s, want %s", exp.Sub(before), tc.wantLife)
			}
			s := resp.Secret
			if tc.wantTTL != 0 && s.TTL != tc.wantTTL {
				t.Errorf("lease TTL %s, want %s", s.TTL, tc.wantTTL)
			}
			if tc.wantTTL == 0 && (s.TTL > tc.wantLife-time.Second || s.TTL < tc.wantLife-3*time.Second) {
				t.Errorf("lease TTL %s, want just under %s", s.TTL, tc.wantLife)
			}
			if time.Now().Add(s.MaxTTL).After(exp) {
				t.Errorf("lease max TTL %s outlives the token", s.MaxTTL)
			}
			// Renewals, whatever the increment, end before the token.
			l := lease(resp)
			for _, inc := range []time.Duration{0, time.Hour, 48 * time.Hour} {
				r := must(t)(e.renew(l, inc))
				ttl, err := vaultRenewTTL(t, e.sys, l, r, inc)
				if err == nil && time.Now().Add(ttl).After(exp) {
					t.Errorf("renewal (increment %s) ends %s after the token", inc, time.Now().Add(ttl).Sub(exp))
				}
				if _, narrowed := tc.data["ttl"]; narrowed && r.Secret.TTL < s.TTL-2*time.Second {
					t.Errorf("renewal shortens a narrowed lease: %s, was %s", r.Secret.TTL, s.TTL)
				}
			}
			must(t)(e.revoke(lease(resp)))
		})
	}
}

// Every bad ttl or scopes is a 400 naming the field, and nothing is created:
// no issuance record, no call to Tooken.
func TestCreds_NarrowedBadInput(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t) // mount max lease TTL 48h
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write,billing:read", "max_ttl": "24h"})
	e.writeRole("nomax", map[string]any{"scopes": "deployments:write"})
	var many []string
	for i := range 101 {
		many = append(many, fmt.Sprintf("s%d:read", i))
	}
	cases := []struct {
		name, role string
		data       map[string]any
		want       []string
	}{
		{"ttl zero", "r", map[string]any{"ttl": 0}, []string{"ttl: 0s is too short", "at least 10s"}},
		{"ttl too short", "r", map[string]any{"ttl": "5s"}, []string{"ttl: 5s is too short"}},
		{"ttl over max_ttl", "r", map[string]any{"ttl": "25h"}, []string{"ttl: 25h is longer than role \"r\" allows (24h"}},
		{"ttl over the mount's max", "nomax", map[string]any{"ttl": "49h"}, []string{"ttl: 49h is longer than role \"nomax\" allows (48h,"}},
		{"ttl negative", "r", map[string]any{"ttl": "-1m"}, []string{"ttl"}},
		{"ttl not a duration", "r", map[string]any{"ttl": "forever"}, []string{"ttl"}},
		{"scopes empty", "r", map[string]any{"scopes": ""}, []string{"scopes: empty"}},
		{"scopes blank entries", "r", map[string]any{"scopes": []string{" ", ""}}, []string{"scopes: empty"}},
		{"scope not granted", "r", map[string]any{"scopes": "deployments:read,admin:write"}, []string{"scopes: role \"r\" does not grant admin:write", "subset of deployments:write, billing:read"}},
		{"write not covered by read", "r", map[string]any{"scopes": "billing:write"}, []string{"does not grant billing:write"}},
		{"scope malformed", "r", map[string]any{"scopes": "Deployments:READ"}, []string{"scopes: invalid scope \"Deployments:READ\""}},
		{"scope very long", "r", map[string]any{"scopes": "a:" + strings.Repeat("x", 5000)}, []string{"scopes: invalid scope", "...", "at most 100 characters"}},
		{"too many scopes", "r", map[string]any{"scopes": many}, []string{"scopes: at most 50 (Tooken's limit), got 101"}},
		{"both at once", "r", map[string]any{"ttl": "72h", "scopes": "admin:write"}, []string{"ttl: 72h is longer", "scopes: role \"r\" does not grant admin:write"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.ResetRequests()
			e.storage.reset()
			resp, err := e.handle(e.request(logical.ReadOperation, "creds/"+tc.role, tc.data))
			mustUserError(t, resp, err, tc.want...)
			if msg := resp.Error().Error(); len(msg) > 400 {
				t.Errorf("message of %d bytes", len(msg))
			}
			if n := e.storage.puts.Load(); n != 0 {
				t.Errorf("%d storage writes", n)
			}
			if n := len(createRequests(srv)); n != 0 {
				t.Errorf("%d creates upstream", n)
			}
		})
	}
	if n := len(issuedLive(srv)); n != 0 {
		t.Errorf("%d live tokens", n)
	}
}

// A stored template that this version refuses (written by an older one, or
// straight into storage) makes creds reads of the role fail at once with a
// message that says what to do; its leases still renew and revoke.
func TestCreds_StoredTemplateRefused(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m"})
	resp := must(t)(e.read("creds/r"))

	old := &roleEntry{Scopes: []string{"deployments:write"}, TTL: 10 * time.Minute, NameTemplate: `{{ if eq .DisplayName "token" "userpass-alice" "" }}ok{{ else }}{{ range 1000000000 }}{{ end }}x{{ end }}`}
	if err := putRole(t.Context(), e.storage, "r", old); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(t.Context(), rolePrefix+"r")
	srv.ResetRequests()
	e.storage.reset()
	start := time.Now()
	r, err := e.read("creds/r")
	mustUserError(t, r, err, `name_template: role "r" has a stored name_template`, "range is not allowed", "write the role's name_template again")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %s", d)
	}
	if n := e.storage.puts.Load(); n != 0 || len(createRequests(srv)) != 0 {
		t.Errorf("%d storage writes, %d creates", n, len(createRequests(srv)))
	}
	must(t)(e.renew(lease(resp), 0))
	must(t)(e.revoke(lease(resp)))
	if n := len(issuedLive(srv)); n != 0 {
		t.Errorf("%d live tokens", n)
	}
}

// A mount tuned below what a token needs answers 400 before anything is
// created upstream (it used to create a token, revoke it and answer 500).
func TestCreds_MountMaxBelowTokenLifetime(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	sys := logical.TestSystemView()
	sys.DefaultLeaseTTLVal, sys.MaxLeaseTTLVal = 2*time.Second, 5*time.Second
	e := getTestBackend(t, withSystemView(sys))
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	before := len(srv.Tokens())
	resp, err := e.read("creds/r")
	mustUserError(t, resp, err, `max_ttl: tokens of role "r" would live 5s`, "less than the 10s", "vault secrets tune -max-lease-ttl")
	if n := len(srv.Tokens()); n != before {
		t.Errorf("%d tokens created upstream", n-before)
	}
	keys, _ := listIssuance(t.Context(), e.storage)
	if len(keys) != 0 {
		t.Errorf("issuance records left: %v", keys)
	}
}

// expiryBreakingEdits are edits of a create answer that do not keep the
// expires_at asked for.
var expiryBreakingEdits = map[string]func(map[string]any){
	"no expires_at": func(m map[string]any) { delete(m, "expires_at") },
	"a later expires_at": func(m map[string]any) {
		m["expires_at"] = time.Now().Add(300 * 24 * time.Hour).UTC().Format(time.RFC3339)
	},
}

// createAnswerTamperingFront is a front of srv that edits the answers to
// POST /tokens with edit.
func createAnswerTamperingFront(t *testing.T, srv *tookentest.Server, edit func(map[string]any)) *httptest.Server {
	t.Helper()
	return tamperingFront(t, srv,
		func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Path == "/v1/tokens" },
		nil, edit)
}

// Every token the engine hands out ends upstream no later than its lease's
// max TTL, and the create answer's expires_at is the engine's only word of
// it: an answer that drops expires_at (the token may never expire) or names
// a later one is refused with a 502, its token is revoked, and no lease nor
// issuance record is left.
func TestCreds_AnswerWithoutTheAskedExpiryIsRefused(t *testing.T) {
	for name, edit := range expiryBreakingEdits {
		t.Run(name, func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{RateLimit: -1})
			front := createAnswerTamperingFront(t, srv, edit)
			e := getTestBackend(t)
			must(t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": srv.RootSecret()}))
			e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
			resp, err := e.read("creds/r")
			if err == nil && resp != nil && !resp.IsError() {
				rec, _ := srv.Token(resp.Data["token_id"].(string))
				t.Fatalf("creds handed out token %s under a lease of max TTL 1h; its upstream expires_at is %v (the engine asked for %v)",
					rec.ID, rec.ExpiresAt, resp.Data["expires_at"])
			}
			coded := logical.HTTPCodedError(nil)
			if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway || !strings.Contains(err.Error(), "expires_at") {
				t.Fatalf("err = %v, want a 502 naming expires_at", err)
			}
			if live := issuedLive(srv); len(live) != 0 {
				t.Errorf("%d tokens left alive upstream, want the refused one revoked", len(live))
			}
			if keys := e.issuanceKeys(); len(keys) != 0 {
				t.Errorf("issuance records left: %v", keys)
			}
		})
	}
}

// landedStorage answers an error to Puts under prefix after writing them
// (the write landed, its answer was lost), and fails every Delete under it.
type landedStorage struct {
	logical.Storage
	prefix string
}

func (l *landedStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := l.Storage.Put(ctx, e); err != nil || !strings.HasPrefix(e.Key, l.prefix) {
		return err
	}
	return errInjected
}

func (l *landedStorage) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, l.prefix) {
		return errInjected
	}
	return l.Storage.Delete(ctx, key)
}

// A failed creds read whose live record was written though its write failed,
// could not be deleted, and whose token Tooken would not revoke then: the
// token is queued, and dies at the next drain, not at its expiry (the
// rollback takes a pending record with a live one for a lease's).
func TestCreds_FailedConfirmWithALiveRecordLeftIsQueued(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"rollback_min_age": "1s", "max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "max_ttl": "720h"})
	base := e.storage.Storage
	e.storage.Storage = &landedStorage{Storage: base, prefix: issuedLivePrefix}
	srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Status: http.StatusServiceUnavailable, Count: 1})
	if _, err := e.read("creds/r"); err == nil {
		t.Fatal("the creds read succeeded with its live record's write failing")
	}
	e.storage.Storage = base
	if n := len(issuedLive(srv)); n != 1 {
		t.Fatalf("%d live tokens upstream after the failed read, want 1 (its revoke was refused)", n)
	}
	e.shiftClock(10 * time.Second)
	for range 2 {
		if err := e.periodic(); err != nil {
			t.Fatal(err)
		}
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens of the failed read live upstream after two periodic runs, want 0", len(live))
	}
}

// The queue entry of such a failed read records where its token was issued
// and when it expires: a url change since does not make another Tooken's
// 404 count as its revoke, and the drain drops the entry at the token's
// expiry without a call.
func TestCreds_FailedConfirmQueuedEntryRecordsDestinationAndExpiry(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	other := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, map[string]any{"max_retries": 0})
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
	base := e.storage.Storage
	e.storage.Storage = &landedStorage{Storage: base, prefix: issuedLivePrefix}
	srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Status: http.StatusServiceUnavailable, Count: 1})
	start := time.Now()
	if _, err := e.read("creds/r"); err == nil {
		t.Fatal("the creds read succeeded with its live record's write failing")
	}
	e.storage.Storage = base
	ids := e.queueIDs()
	if len(ids) != 1 {
		t.Fatalf("queue = %v, want the failed read's token", ids)
	}
	q := e.queueEntry(ids[0])
	cfg, err := readConfig(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	if q.Dest == nil || !q.Dest.sameAs(cfg.destination()) {
		t.Errorf("queue entry destination = %v, want the config's %v", q.Dest, cfg.destination())
	}
	if q.ExpiresAt.IsZero() || q.ExpiresAt.Before(start.Add(2*time.Hour-time.Minute)) || q.ExpiresAt.After(start.Add(2*time.Hour+time.Minute)) {
		t.Errorf("queue entry expires_at = %v, want the token's (about %v)", q.ExpiresAt, start.Add(2*time.Hour))
	}

	must(t)(e.write(configPath, map[string]any{"url": other.URL(), "token": other.RootSecret()}))
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if len(e.queueIDs()) != 1 {
		t.Fatal("another Tooken's 404 counted as the revoke of the failed read's token")
	}
	e.shiftClock(2*time.Hour + time.Minute)
	other.ResetRequests()
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if n := len(e.queueIDs()); n != 0 || deletes(other) != 0 {
		t.Fatalf("after the token's expiry: %d queue entries, %d DELETEs; want the entry dropped without a call", n, deletes(other))
	}
}

// A refused answer (without the expires_at asked for, or with a later one)
// whose revoke fails: its pending record is dropped at the expiry asked for,
// which the token may outlive, so the revoke is queued too, with an unknown
// expiry and the Tooken that issued it, and the drain kills the token.
func TestCreds_RefusedAnswerWhoseRevokeFailsIsQueued(t *testing.T) {
	for name, edit := range expiryBreakingEdits {
		t.Run(name, func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{RateLimit: -1})
			front := createAnswerTamperingFront(t, srv, edit)
			e := getTestBackend(t)
			must(t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": srv.RootSecret(), "max_retries": 0}))
			e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "1h"})
			srv.AddFault(tookentest.Fault{Method: http.MethodDelete, Status: http.StatusServiceUnavailable, Count: 1})
			if resp, err := e.read("creds/r"); err == nil && resp != nil && !resp.IsError() {
				t.Fatal("creds handed out a token whose answer did not keep the expiry asked for")
			}
			live := issuedLive(srv)
			if len(live) != 1 {
				t.Fatalf("%d tokens alive upstream, want the refused one (its revoke failed)", len(live))
			}
			q := e.queueEntry(live[0].ID)
			if q == nil {
				t.Fatal("the refused token's revoke is not queued")
			}
			cfg, err := readConfig(context.Background(), e.storage)
			if err != nil {
				t.Fatal(err)
			}
			if !q.ExpiresAt.IsZero() || q.Dest == nil || !q.Dest.sameAs(cfg.destination()) {
				t.Errorf("queue entry: expires_at %v, destination %v; want unknown (zero) and the config's", q.ExpiresAt, q.Dest)
			}
			// Past the expiry asked for: the pending record is dropped
			// without a call, and only the queue kills the token.
			e.shiftClock(time.Hour + time.Minute)
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if n := len(issuedLive(srv)); n != 0 {
				t.Fatalf("%d refused tokens alive upstream after a drain, want 0", n)
			}
			if ids := e.queueIDs(); len(ids) != 0 {
				t.Errorf("queue entries left: %v", ids)
			}
		})
	}
}
