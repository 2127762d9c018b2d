package tooken

import (
	"testing"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// BenchmarkCreds measures a creds read followed by the lease's revoke, driven
// through HandleRequest against an in-process emulator (rate limit off). It
// reports the storage round trips per creds read once role and config are
// cached (budget: 2, both the issuance record's writes), and per revoke.
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
	var readOps, readGets int64
	for i := 0; i < b.N; i++ {
		before, gets := e.storage.total(), e.storage.gets.Load()
		resp := must(b)(e.read("creds/bench"))
		readOps += e.storage.total() - before
		readGets += e.storage.gets.Load() - gets
		must(b)(e.revoke(lease(resp)))
	}
	b.StopTimer()

	// Budget: 2 storage round trips per creds read (the issuance record,
	// pending then confirmed); the revoke deletes it (1).
	b.ReportMetric(float64(readOps)/float64(b.N), "storage-ops/read")
	b.ReportMetric(float64(readGets)/float64(b.N), "storage-gets/read")
	b.ReportMetric(float64(e.storage.total()-readOps)/float64(b.N), "storage-ops/revoke")
	b.ReportMetric(float64(len(srv.Requests()))/float64(b.N), "upstream-reqs/read")
	if live := issuedLive(srv); len(live) != 0 {
		b.Errorf("%d tokens left live", len(live))
	}
}
