package tooken

// Benchmarks of the engine's cost, meant to be read as ratios against a
// baseline measured in the same run (scripts/bench.sh, `make bench`, prints
// them): absolute figures depend on the machine, ratios much less.
//
//	BenchmarkTookenClient          baseline: create + revoke through the plugin's Client
//	BenchmarkCreds                 creds read + lease revoke through HandleRequest
//	BenchmarkTookenClientParallel  the baseline from many goroutines (throughput)
//	BenchmarkCredsParallel         BenchmarkCreds from many goroutines (throughput)
//	BenchmarkVault/creds           creds read + lease revoke through a real Vault dev server
//	BenchmarkVault/creds-parallel  the same from many goroutines
//
// All of them talk to an in-process emulator with its rate limit off, over
// loopback HTTP. BenchmarkVault needs binaries (scripts/bench.sh passes them)
// and is skipped otherwise, so `go test` never starts a Vault for it.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
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

// BenchmarkVault measures `vault read tooken/creds/bench` plus `vault lease
// revoke` through the HTTP API of a real Vault dev server running the plugin
// binary, against the in-process emulator. It runs only when
// TOOKEN_BENCH_VAULT_BIN and TOOKEN_BENCH_PLUGIN_BIN name the binaries
// (scripts/bench.sh sets them); Vault starts once for both sub-benchmarks.
func BenchmarkVault(b *testing.B) {
	vaultBin, pluginBin := os.Getenv("TOOKEN_BENCH_VAULT_BIN"), os.Getenv("TOOKEN_BENCH_PLUGIN_BIN")
	if vaultBin == "" || pluginBin == "" {
		b.Skip("TOOKEN_BENCH_VAULT_BIN and TOOKEN_BENCH_PLUGIN_BIN are not set (scripts/bench.sh sets them)")
	}
	srv := newEmulator(b, tookentest.Options{RateLimit: -1})
	client := startBenchVault(b, vaultBin, pluginBin)
	ctx := context.Background()
	if err := client.Sys().MountWithContext(ctx, "tooken", &api.MountInput{Type: "vault-plugin-secrets-tooken"}); err != nil {
		b.Fatalf("mounting the plugin: %v", err)
	}
	for path, data := range map[string]map[string]any{
		"tooken/config":      {"url": srv.URL(), "token": srv.RootSecret()},
		"tooken/roles/bench": {"scopes": "deployments:write", "ttl": "1h"},
	} {
		if _, err := client.Logical().WriteWithContext(ctx, path, data); err != nil {
			b.Fatalf("writing %s: %v", path, err)
		}
	}
	// readRevoke is one operation; it returns when the read answered.
	readRevoke := func(b *testing.B) (readDone time.Time) {
		s, err := client.Logical().ReadWithContext(ctx, "tooken/creds/bench")
		if err != nil {
			b.Fatal(err)
		}
		readDone = time.Now()
		if s == nil || s.LeaseID == "" {
			b.Fatal("creds read answered no lease")
		}
		if err := client.Sys().RevokeWithContext(ctx, s.LeaseID); err != nil {
			b.Fatal(err)
		}
		return readDone
	}
	readRevoke(b) // warm: plugin process, client and role caches

	b.Run("creds", func(b *testing.B) {
		b.ReportAllocs()
		var read time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			read += readRevoke(b).Sub(start)
		}
		// How the time splits between the creds read and the lease revoke.
		b.ReportMetric(float64(read.Nanoseconds())/float64(b.N), "read-ns/op")
	})
	b.Run("creds-parallel", func(b *testing.B) {
		b.SetParallelism(benchParallelism)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				readRevoke(b)
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	if live := issuedLive(srv); len(live) != 0 {
		b.Errorf("%d tokens left live", len(live))
	}
}

// startBenchVault starts `vault server -dev` with the plugin in its plugin
// directory (registered at start-up), the way e2e/harness_test.go does, and
// returns an API client with the root token. Vault stops with the benchmark.
func startBenchVault(b *testing.B, vaultBin, pluginBin string) *api.Client {
	b.Helper()
	dir := b.TempDir()
	pluginDir, home := filepath.Join(dir, "plugins"), filepath.Join(dir, "home")
	for _, d := range []string{pluginDir, home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			b.Fatal(err)
		}
	}
	plugin, err := os.ReadFile(pluginBin)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pluginDir, "vault-plugin-secrets-tooken"), plugin, 0o755); err != nil {
		b.Fatal(err)
	}

	addr := benchVaultAddr(b)
	logf, err := os.Create(filepath.Join(dir, "vault.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(vaultBin, "server", "-dev", "-dev-root-token-id=root",
		"-dev-listen-address="+addr, "-dev-plugin-dir="+pluginDir, "-log-level=warn")
	// No VAULT_* variable of the caller's, and a HOME of its own (no ~/.vault-token).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting vault: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt) // Vault stops its plugin processes on the way out
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	cfg := api.DefaultConfig()
	cfg.Address = "http://" + addr
	cfg.MaxRetries = 0
	// Enough keep-alive connections for the parallel sub-benchmark.
	cfg.HttpClient.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	client, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	client.SetToken("root")
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := client.Sys().Health()
		if err == nil && h.Initialized && !h.Sealed {
			return client
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			b.Fatalf("vault exited at start-up:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("vault did not come up in 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchVaultAddr picks a free loopback port whose successor (the dev
// server's cluster port) is free too.
func benchVaultAddr(b *testing.B) string {
	b.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	b.Fatal("no free port pair")
	return ""
}
