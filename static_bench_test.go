package tooken

// Benchmarks of the static roles' schedule at the scale a mount must hold (1,000 roles):
//
//	BenchmarkStaticIdleTick    the periodic function with 1,000 static roles and nothing due:
//	                           ns per run, and storage round trips and Tooken calls per run (0)
//	BenchmarkStaticRotateAll   1,000 roles falling due at once against an upstream limiting the
//	                           root to Tooken's 100 requests per second (burst 200): the time to
//	                           rotate them all, rotations per second, and 429 answers (0)
//
//	go test -run '^$' -bench '^BenchmarkStatic' -benchtime 1x .

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

const benchStaticRoles = 1000

// newStaticBenchEnv is a backend with n static roles imported without rotation (schedule
// rotation_period 24h), on a frozen clock, the schedule built by one periodic run, counters reset.
func newStaticBenchEnv(b *testing.B, n int) (*tookentest.Server, *testEnv, *staticStorage, *rotClock) {
	b.Helper()
	clock := newRotClock(time.Now().UTC())
	srv := newEmulator(b, tookentest.Options{RateLimit: -1, Now: clock.now})
	e := getTestBackend(b, withQuietLogger())
	e.b.clock = clock.now
	e.configure(srv, nil)
	c := e.client()
	for i := range n {
		tok, err := c.CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: fmt.Sprintf("app-%d", i), Scopes: []string{"deployments:write"}}, "")
		if err != nil {
			b.Fatal(err)
		}
		must(b)(e.write(staticRolesPath+fmt.Sprintf("app-%d", i), map[string]any{
			"token_id": tok.ID, "rotation_period": "24h", "skip_import_rotation": true, "token": tok.Secret,
		}))
	}
	static := &staticStorage{Storage: e.storage.Storage}
	e.storage.Storage = static
	if err := e.periodic(); err != nil {
		b.Fatal(err)
	}
	srv.ResetRequests()
	e.storage.reset()
	static.ops.Store(0)
	return srv, e, static, clock
}

func BenchmarkStaticIdleTick(b *testing.B) {
	srv, e, static, _ := newStaticBenchEnv(b, benchStaticRoles)
	b.ResetTimer()
	runs := 0
	for b.Loop() {
		if err := e.periodic(); err != nil {
			b.Fatal(err)
		}
		runs++
	}
	b.ReportMetric(float64(static.ops.Load())/float64(runs), "static-storage-ops/run")
	b.ReportMetric(float64(e.storage.total())/float64(runs), "storage-ops/run")
	b.ReportMetric(float64(len(srv.Requests()))/float64(runs), "upstream-calls/run")
}

func BenchmarkStaticRotateAll(b *testing.B) {
	srv, e, _, clock := newStaticBenchEnv(b, benchStaticRoles)
	srv.SetRateLimit(tookentest.DefaultRateLimit, tookentest.DefaultBurst)
	var elapsed time.Duration
	var runs int
	b.ResetTimer()
	for b.Loop() {
		before := srv.Counters()["rotated"]
		clock.advance(25 * time.Hour) // every role falls due
		start := time.Now()
		for srv.Counters()["rotated"]-before < benchStaticRoles {
			if err := e.periodic(); err != nil {
				b.Fatal(err)
			}
			runs++
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/1000-roles")
	b.ReportMetric(float64(benchStaticRoles*b.N)/elapsed.Seconds(), "rotations/s")
	b.ReportMetric(float64(runs)/float64(b.N), "periodic-runs")
	rateLimited := 0
	for _, r := range srv.Requests() {
		if r.Status == 429 {
			rateLimited++
		}
	}
	b.ReportMetric(float64(rateLimited), "429s")
}
