package tooken

// Benchmarks of the engine's cost, meant to be read as ratios against a
// baseline measured in the same run (scripts/bench.sh, `make bench`, prints
// them): absolute figures depend on the machine, ratios much less.
//
//	BenchmarkTookenClient          baseline: create + revoke through the plugin's Client
//	BenchmarkCreds                 creds read + lease revoke through HandleRequest
//	BenchmarkTookenClientParallel  the baseline from many goroutines (throughput)
//	BenchmarkCredsParallel         BenchmarkCreds from many goroutines (throughput)
//
// All of them talk to an in-process emulator with its rate limit off, over
// loopback HTTP. The benchmarks through a real Vault server are in the e2e
// package (e2e/bench_test.go), on the end-to-end harness.

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// benchParallelism multiplies GOMAXPROCS into the goroutine count of the
// parallel benchmarks: calls wait on loopback I/O, so more goroutines than
// cores keep the cores busy.
const benchParallelism = 4

// withQuietLogger logs at info into nothing: Vault's default level, without
// the test backend's trace-level buffer (which grows with every request).
func withQuietLogger() envOption {
	return func(c *logical.BackendConfig) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: io.Discard})
	}
}

// newBenchEnv is an emulator with its rate limit off and a configured backend
// with role "bench", caches warm (one creds read and revoke done), counters
// reset.
func newBenchEnv(b *testing.B) (*tookentest.Server, *testEnv) {
	b.Helper()
	srv := newEmulator(b, tookentest.Options{RateLimit: -1})
	e := getTestBackend(b, withQuietLogger())
	e.configure(srv, nil)
	e.writeRole("bench", map[string]any{"scopes": "deployments:write", "ttl": "1h"})
	warm := must(b)(e.read("creds/bench"))
	must(b)(e.revoke(lease(warm)))
	srv.ResetRequests()
	e.storage.reset()
	return srv, e
}

// benchCreateRequest is the body the engine sends for role "bench": same
// name shape, scopes, expiry and metadata keys.
func benchCreateRequest(key string) tookenapi.CreateTokenRequest {
	exp := time.Now().UTC().Truncate(time.Second).Add(768 * time.Hour)
	return tookenapi.CreateTokenRequest{
		Name:      "vault-bench-token-" + key[:8],
		Scopes:    []string{"deployments:write"},
		ExpiresAt: &exp,
		Metadata: map[string]string{
			metaRole: "bench", metaMountUUID: testMountUUID,
			metaMountAccessor: testMountAccessor, metaIssueKey: key,
		},
	}
}

// clientCreateRevoke is one baseline operation: the two Tooken calls a creds
// read and its revoke make, with nothing of the engine around them.
func clientCreateRevoke(b *testing.B, c *tookenapi.Client) {
	ctx := context.Background()
	key := tookenapi.NewIdempotencyKey()
	tok, err := c.CreateToken(ctx, benchCreateRequest(key), key)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.RevokeToken(ctx, tok.ID); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTookenClient is the baseline: one create and one revoke through
// the plugin's own Client (the one the backend caches), against the emulator.
//
//	go test -run '^$' -bench 'BenchmarkTookenClient$' -benchtime 2000x .
func BenchmarkTookenClient(b *testing.B) {
	srv, e := newBenchEnv(b)
	c := e.client()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clientCreateRevoke(b, c)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(srv.Requests()))/float64(b.N), "upstream-reqs/op")
}

// BenchmarkTookenClientParallel is the baseline from
// benchParallelism*GOMAXPROCS goroutines sharing the Client.
func BenchmarkTookenClientParallel(b *testing.B) {
	_, e := newBenchEnv(b)
	c := e.client()
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			clientCreateRevoke(b, c)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkCreds measures a creds read followed by the lease's revoke, driven
// through HandleRequest against an in-process emulator (rate limit off). It
// reports the storage round trips per creds read once role and config are
// cached (budget: 2, both the issuance record's writes), and per revoke.
//
//	go test -run '^$' -bench 'BenchmarkCreds$' -benchtime 2000x .
func BenchmarkCreds(b *testing.B) {
	srv, e := newBenchEnv(b)
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

// BenchmarkCredsParallel is BenchmarkCreds from benchParallelism*GOMAXPROCS
// goroutines on one backend: the figure to hold against BenchmarkCreds is
// the throughput (ns/op is wall time per operation, all goroutines together).
func BenchmarkCredsParallel(b *testing.B) {
	srv, e := newBenchEnv(b)
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp := must(b)(e.read("creds/bench"))
			must(b)(e.revoke(lease(resp)))
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(e.storage.total())/float64(b.N), "storage-ops/op")
	if live := issuedLive(srv); len(live) != 0 {
		b.Errorf("%d tokens left live", len(live))
	}
}
