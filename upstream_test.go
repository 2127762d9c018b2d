package tooken

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// A revoke counts as done only when a base URL proven a Tooken API answers
// 204 (or 404: already gone). Behind a catch-all server (a single-page app
// or gateway answering 2xx to every path), a config stored with
// verify_connection=false makes no revoke "succeed": each is queued, every
// token stays alive (and accounted for), and once the url is fixed (with the
// token again) the queue revokes them.
func TestRevokeUpstream_2xxFromAnUnprovenURLIsQueued(t *testing.T) {
	for name, answer := range map[string]func(http.ResponseWriter){
		"200 text/html": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>welcome</html>")
		},
		"204 to everything": func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := newEmulator(t, tookentest.Options{RateLimit: -1})
			catchAll := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { answer(w) }))
			t.Cleanup(catchAll.Close)
			e := getTestBackend(t)
			e.configure(srv, nil)
			e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "1h", "max_ttl": "2h"})
			var leases []*logical.Secret
			for range 2 {
				l := lease(must(t)(e.read("creds/r")))
				// As leases of an earlier version (no destination
				// recorded): their revokes go to the config's url, the
				// catch-all, whose answers are what this test is about.
				delete(l.InternalData, internalDestURL)
				leases = append(leases, l)
			}

			must(t)(e.write(configPath, map[string]any{"url": catchAll.URL + "/v1", "token": srv.RootSecret(), "verify_connection": false}))
			for _, l := range leases {
				must(t)(e.revoke(l))
			}
			if live, queued := len(issuedLive(srv)), len(e.queueIDs()); live != 2 || queued != 2 {
				t.Fatalf("after the revokes through %s: %d tokens live upstream, %d queued; want both live and both queued (nothing counted as revoked)", name, live, queued)
			}
			e.shiftClock(10 * time.Minute) // every backoff over
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if queued := len(e.queueIDs()); queued != 2 {
				t.Fatalf("the queue's drain through %s dropped %d entries, with the tokens alive", name, 2-queued)
			}

			must(t)(e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret()}))
			e.shiftClock(20 * time.Minute)
			if err := e.periodic(); err != nil {
				t.Fatal(err)
			}
			if live, queued := len(issuedLive(srv)), len(e.queueIDs()); live != 0 || queued != 0 {
				t.Fatalf("after the url was fixed: %d tokens live, %d queued", live, queued)
			}
		})
	}
}
