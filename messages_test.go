package tooken

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute: "1m", 5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m",
		150 * time.Second: "2m30s", 10 * time.Second: "10s", time.Hour + time.Second: "1h0m1s",
		24 * time.Hour: "24h", 25 * time.Hour: "25h", 48 * time.Hour: "48h", 72 * time.Hour: "72h", 168 * time.Hour: "7d", 720 * time.Hour: "30d", 8784 * time.Hour: "366d", 169 * time.Hour: "169h",
		0: "0s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// What a caller is told when a call to Tooken fails: what Tooken answered
// and what to do, never the client's own wording ("tooken: 503 ...") nor
// Go's duration form.
func TestUpstreamFailureMessages(t *testing.T) {
	cases := map[string]struct {
		err  error
		want []string
	}{
		"401": {&tookenapi.APIError{Status: 401, Code: "unauthorized", Message: "unknown, revoked or expired secret", RequestID: "req_1"},
			[]string{"Tooken rejects the engine's root secret (401 unauthorized, request req_1)", "vault write <mount>/config token=- < root-secret-file"}},
		"429 with Retry-After": {&tookenapi.RateLimitError{APIError: tookenapi.APIError{Status: 429, Code: "rate_limited", RetryAfter: time.Hour}},
			[]string{"rate limiting this engine and asks to retry after 1h (429 rate_limited)", "retry then"}},
		"rate limited, no answer": {fmt.Errorf("listing: %w", tookenapi.ErrRateLimited),
			[]string{"Tooken is rate limiting this engine (no answer); retry later"}},
		"503 with Retry-After": {&tookenapi.APIError{Status: 503, Code: "unavailable", RetryAfter: 30 * day},
			[]string{"Tooken is unavailable and asks to retry after 30d (503 unavailable)"}},
		"500": {tookenapi.OutcomeUnknown(&tookenapi.APIError{Status: 500, Code: "internal", Message: "boom", RequestID: "req_2"}),
			[]string{"Tooken failed (500 internal: boom, request req_2); retry later"}},
		"403": {&tookenapi.APIError{Status: 403, Code: "forbidden", Message: "this call needs tokens:write"},
			[]string{"Tooken refuses the call (403 forbidden: this call needs tokens:write): the root token lacks a scope", "give the root tokens:write"}},
		"timeout": {&net.OpError{Op: "read", Err: timeoutError{}},
			[]string{"Tooken did not answer in time", "raise request_timeout"}},
		"connection refused": {errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
			[]string{"Tooken cannot be reached at the config's url", "check url and the network"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := upstreamProblem(tc.err)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("upstreamProblem = %q, want %q in it", got, w)
				}
			}
			if strings.Contains(got, "tooken:") || strings.Contains(got, "127.0.0.1") || strings.Contains(got, "0m0s") {
				t.Errorf("upstreamProblem = %q passes the client's or Go's text through", got)
			}
		})
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// A root secret rotated outside Vault: creds reads and rotate-root answer
// 502 saying that Tooken rejects the root secret and how to write a working
// one, in a sentence that reads well under Vault's "1 error occurred:".
func TestUpstreamFailure_RootRejected(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	outside, err := tookenapi.New(tookenapi.Options{BaseURL: srv.URL(), Secret: srv.RootSecret()})
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	if _, err := outside.RotateToken(context.Background(), "self", 0, tookenapi.NewIdempotencyKey()); err != nil {
		t.Fatal(err)
	}

	for path, op := range map[string]logical.Operation{"creds/r": logical.ReadOperation, "rotate-root": logical.UpdateOperation} {
		resp, err := e.handle(e.request(op, path, nil))
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
			t.Fatalf("%s: %v %v, want a 502", path, resp, err)
		}
		msg := err.Error()
		t.Logf("%s: %s", path, msg)
		for _, w := range []string{"Tooken rejects the engine's root secret (401 unauthorized, request req_", "rotated or revoked outside Vault", "vault write <mount>/config token=-"} {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", path, msg, w)
			}
		}
		if strings.Contains(msg, "tooken:") || strings.Contains(msg, "keeps working") {
			t.Errorf("%s: %q", path, msg)
		}
	}
}

// The help of an installed binary stands alone: a pointer to the
// documentation names where it is, every duration is written as a caller
// writes it, and the retry rules read as in the README.
func TestHelpTexts(t *testing.T) {
	e := getTestBackend(t)
	goDuration := regexp.MustCompile(`\d+[hm]0m|\dm0s`)
	for _, p := range e.b.Paths {
		texts := map[string]string{"synopsis": p.HelpSynopsis, "description": p.HelpDescription}
		for name, f := range p.Fields {
			texts["field "+name] = f.Description
		}
		for what, text := range texts {
			if strings.Contains(text, "README") && !strings.Contains(text, docsURL) {
				t.Errorf("%s %s points to the README without saying where it is", p.Pattern, what)
			}
			if m := goDuration.FindString(text); m != "" {
				t.Errorf("%s %s writes a duration as Go does (%s)", p.Pattern, what, m)
			}
		}
		if f, ok := p.Fields["max_retries"]; ok {
			for _, w := range []string{"connection error", "5xx other than 501", "429 or 503", "Retry-After", "409"} {
				if !strings.Contains(f.Description, w) || !strings.Contains(p.HelpDescription, w) {
					t.Errorf("%s: max_retries help does not name %q", p.Pattern, w)
				}
			}
		}
	}
}
