package tooken

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

var secretRegexAnywhere = regexp.MustCompile(`tok_(live|test)_[A-Za-z0-9]{20,}`)

// No secret (the root's or an issued one) ever reaches a log line, an error
// or a storage key, nor a stored value but the config's.
func TestSecretsNeverLogged(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	var errs []string
	note := func(resp *logical.Response, err error) *logical.Response {
		if err != nil {
			errs = append(errs, err.Error())
		}
		if resp != nil && resp.IsError() {
			errs = append(errs, resp.Error().Error())
		}
		return resp
	}

	note(e.write(configPath, map[string]any{"url": srv.URL(), "token": "tok_test_" + strings.Repeat("Q", 30)}))
	note(e.write(configPath, map[string]any{"url": "http://127.0.0.1:1/v1", "token": srv.RootSecret(), "max_retries": 0}))
	note(e.write(configPath, map[string]any{"url": srv.URL(), "token": "not-a-secret-but-private"}))
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	var issued []string
	for _, f := range []tookentest.Fault{{}, {Drop: true, Count: 1}, {Drop: true, Count: 4}, {Status: 503, Count: 4}, {Status: 429, RetryAfter: 0, Count: 1}} {
		if f.Drop || f.Status != 0 {
			f.Method, f.Path = http.MethodPost, "/v1/tokens"
			srv.AddFault(f)
		}
		resp := note(e.read("creds/r"))
		srv.ClearFaults()
		if resp != nil && !resp.IsError() {
			issued = append(issued, resp.Data["token"].(string))
			note(e.renew(lease(resp), 0))
			note(e.revoke(lease(resp)))
		}
	}

	// Storage: no secret in any key, nor in any value but the config's.
	var stored []string
	var walk func(prefix string)
	walk = func(prefix string) {
		keys, err := e.storage.Storage.List(context.Background(), prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if strings.HasSuffix(k, "/") {
				walk(prefix + k)
				continue
			}
			stored = append(stored, prefix+k)
			if prefix+k == configPath {
				continue
			}
			entry, err := e.storage.Storage.Get(context.Background(), prefix+k)
			if err != nil || entry == nil {
				t.Fatalf("get %s: %v", prefix+k, err)
			}
			stored = append(stored, string(entry.Value))
		}
	}
	// A revoke while Tooken is down queues the token; the drain logs it.
	queued := note(e.read("creds/r"))
	srv.SetDown(true)
	note(e.read("creds/r"))
	if queued != nil && !queued.IsError() {
		issued = append(issued, queued.Data["token"].(string))
		note(e.revoke(lease(queued)))
	}
	walk("") // the queue entry and the issuance records
	srv.SetDown(false)
	e.shiftClock(time.Hour)
	if err := e.periodic(); err != nil {
		errs = append(errs, err.Error())
	}

	// Root rotation: an outcome unknown (503s), then the next rotation
	// finishes it first; tidy.
	rootSecrets := []string{srv.RootSecret()}
	srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens/" + srv.RootTokenID() + "/rotate", Status: 503, Count: 10})
	note(e.write("rotate-root", nil))
	srv.ClearFaults()
	note(e.write("rotate-root", nil))
	if cfg, _ := readConfig(context.Background(), e.storage); cfg != nil {
		rootSecrets = append(rootSecrets, cfg.Token)
	}
	note(e.write("tidy", map[string]any{"revoke_orphans": true, "safety_age": 0}))
	note(e.read("tidy/status"))
	walk("")

	logs := e.logs.String()
	if !strings.Contains(logs, "token_id") {
		t.Errorf("expected some logging, got:\n%s", logs)
	}
	all := logs + "\n" + strings.Join(errs, "\n") + "\n" + strings.Join(stored, "\n")
	if m := secretRegexAnywhere.FindString(all); m != "" {
		t.Errorf("something shaped like a secret (%.12s...) appears in logs or errors", m)
	}
	if len(rootSecrets) != 2 || rootSecrets[0] == rootSecrets[1] {
		t.Error("the root was not rotated")
	}
	for _, s := range append(append(issued, rootSecrets...), "not-a-secret-but-private", strings.Repeat("Q", 30)) {
		if strings.Contains(all, s) {
			t.Errorf("a secret (%.12s...) appears in logs or errors", s)
		}
	}
	if len(issued) < 3 {
		t.Errorf("only %d successful reads", len(issued))
	}
}
