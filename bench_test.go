package tooken

import (
	"testing"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// BenchmarkCreds measures a creds read followed by the lease's revoke, driven
// through HandleRequest against an in-process emulator (rate limit off). It
// reports the storage round trips per creds read once role and config are
// cached (budget: 2; issue 6 adds its 2 writes).
//
//	go test -run '^$' -bench BenchmarkCreds -benchtime 2000x .
func BenchmarkCreds(b *testing.B) {
	srv := newEmulator(b, tookentest.Options{RateLimit: -1})
	e := getTestBackend(b)
	e.configure(srv, nil)
	e.writeRole("bench", map[string]any{"scopes": "deployments:write", "ttl": "1h"})
	warm := must(b)(e.read("creds/bench")) // warm the caches
	must(b)(e.revoke(lease(warm)))
	srv.ResetRequests()
	e.storage.reset()

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp := must(b)(e.read("creds/bench"))
		must(b)(e.revoke(lease(resp)))
	}
	b.StopTimer()

	b.ReportMetric(float64(e.storage.total())/float64(b.N), "storage-ops/read")
	b.ReportMetric(float64(e.storage.gets.Load())/float64(b.N), "storage-gets/read")
	b.ReportMetric(float64(len(srv.Requests()))/float64(b.N), "upstream-reqs/read")
	if live := issuedLive(srv); len(live) != 0 {
		b.Errorf("%d tokens left live", len(live))
	}
}
