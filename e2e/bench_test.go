package e2e

// Benchmarks through a real Vault 1.14.1 dev server on the harness's launcher, against the
// emulator binary (rate limit off, no state file, no request log). scripts/bench.sh (`make bench`)
// runs them and prints the table; `go test` alone never runs a benchmark. They print figures and
// never fail on one.
//
//	BenchmarkVault        one Vault for every row, BENCH_ROUNDS rounds of each row in turn:
//	  creds               creds read + lease revoke, one client (latency)
//	  creds-parallel      the same from BENCH_CLIENTS (8) concurrent clients
//	  creds-read          the creds read alone (its leases are revoked outside the measurement)
//	  noop                the no-op plugin (./noopplugin): the engine's storage work, no upstream call
//	  kv-put              a KV-v2 put (the dev server's secret/ mount)
//	  ssh-otp             the builtin ssh engine's OTP creds + lease revoke: a leased secret, no plugin
//	BenchmarkVaultScale   one Vault each; run with -benchtime=1x:
//	  leases              idle plugin CPU per periodic run and plugin RSS at 0 and at BENCH_LEASES leases
//	  storm               revoke BENCH_STORM leases at once against a 100 req/s Tooken (async)
//	  storm-sync          the same, Vault revoking them one after the other
//	  mounts              the plugin process's RSS serving BENCH_MOUNTS mounts
//
// The concurrent rows report ops/s and the CPU per operation of Vault, of the plugin process and
// of the emulator, from utime+stime of /proc/<pid>/stat before and after.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// noopPluginFile is the no-op plugin's name in the plugin directory and the catalog.
const noopPluginFile = "noop-plugin"

// benchKnobs are the benchmarks' settings, from the environment (scripts/bench.sh sets them).
type benchKnobs struct {
	Rounds   int           // BENCH_ROUNDS: rounds of every BenchmarkVault row (1)
	Clients  int           // BENCH_CLIENTS: concurrent clients of the concurrent rows (8)
	Leases   int           // BENCH_LEASES: live leases of the scale row (100000)
	IdleRuns int           // BENCH_IDLE_RUNS: periodic runs to average idle CPU over; 0 = skip (2)
	Storm    int           // BENCH_STORM: leases revoked at once (5000)
	Mounts   int           // BENCH_MOUNTS: mounts of one plugin process (100)
	Settle   time.Duration // BENCH_SETTLE: how long RSS must stop falling before it is read (10s)
}

func readBenchKnobs(b *testing.B) benchKnobs {
	b.Helper()
	var errs []error
	num := func(env string, def, lo int) int {
		s := os.Getenv(env)
		if s == "" {
			return def
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo {
			errs = append(errs, fmt.Errorf("%s=%q: want an integer >= %d", env, s, lo))
		}
		return n
	}
	k := benchKnobs{
		Rounds: num("BENCH_ROUNDS", 1, 1), Clients: num("BENCH_CLIENTS", 8, 1),
		Leases: num("BENCH_LEASES", 100000, 1), IdleRuns: num("BENCH_IDLE_RUNS", 2, 0),
		Storm: num("BENCH_STORM", 5000, 1), Mounts: num("BENCH_MOUNTS", 100, 1),
		Settle: time.Duration(num("BENCH_SETTLE", 10, 1)) * time.Second,
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return k
}

// noopPluginBin is the no-op plugin binary: TOOKEN_NOOP_PLUGIN_BIN, else built from ./noopplugin.
func noopPluginBin(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("TOOKEN_NOOP_PLUGIN_BIN"); p != "" {
		if msg := checkExecutable("TOOKEN_NOOP_PLUGIN_BIN", p); msg != "" {
			b.Fatal(msg)
		}
		return p
	}
	return goBuild(b, "./noopplugin", noopPluginFile, "")
}

// benchVault is an emulator and a dev Vault with the tooken and no-op plugins mounted.
type benchVault struct {
	v *Vault
	e *Emulator
}

// startBenchVault starts the emulator (rate limit off, no state file, quiet) and a dev Vault at
// logLevel with the tooken plugin mounted at tooken/ (configured; roles from roles, name ->
// ttl) and the no-op plugin in its plugin directory.
func startBenchVault(b *testing.B, logLevel string, roles map[string]string) *benchVault {
	b.Helper()
	f := &benchVault{}
	f.e = startEmulator(b, EmulatorOptions{Stateless: true, Quiet: true, Args: []string{"--rate-limit", "-1"}})
	f.v = startDevVault(b, VaultOptions{LogLevel: logLevel, Plugins: map[string]string{noopPluginFile: noopPluginBin(b)}})
	f.v.Client.SetMaxRetries(0) // a failure shows, instead of a retried request counted twice
	f.v.EnablePlugin(b, "tooken", pluginName, "")
	f.v.ConfigureTooken(b, "tooken", f.e)
	for name, ttl := range roles {
		f.v.WriteRole(b, "tooken", name, "scopes=deployments:write", "ttl="+ttl, "max_ttl="+ttl)
	}
	return f
}

// pluginPID is the one process of the plugin binary file.
func (f *benchVault) pluginPID(b *testing.B, file string) int {
	b.Helper()
	pids := f.v.PluginPIDsOf(file)
	if len(pids) != 1 {
		b.Fatalf("%s: %d plugin processes %v, want 1", file, len(pids), pids)
	}
	return pids[0]
}

// vaultOp is one benchmarked operation through the API client c by client number w.
type vaultOp func(ctx context.Context, c *api.Client, w int) error

// readRevoke reads a leased secret from path and revokes its lease.
func readRevoke(path string) vaultOp {
	return func(ctx context.Context, c *api.Client, _ int) error {
		s, err := c.Logical().ReadWithContext(ctx, path)
		if err != nil {
			return err
		}
		return revokeLease(ctx, c, s)
	}
}

func revokeLease(ctx context.Context, c *api.Client, s *api.Secret) error {
	if s == nil || s.LeaseID == "" {
		return errors.New("the answer has no lease")
	}
	return c.Sys().RevokeWithContext(ctx, s.LeaseID)
}

// readOnly reads a leased secret from path (the lease stays).
func readOnly(path string) vaultOp {
	return func(ctx context.Context, c *api.Client, _ int) error {
		s, err := c.Logical().ReadWithContext(ctx, path)
		if err == nil && (s == nil || s.LeaseID == "") {
			err = errors.New("the answer has no lease")
		}
		return err
	}
}

func kvPut(ctx context.Context, c *api.Client, w int) error {
	_, err := c.Logical().WriteWithContext(ctx, fmt.Sprintf("secret/data/bench-%d", w),
		map[string]any{"data": map[string]any{"value": "bench"}})
	return err
}

func sshOTP(ctx context.Context, c *api.Client, _ int) error {
	s, err := c.Logical().WriteWithContext(ctx, "ssh/creds/otp", map[string]any{"ip": "127.0.0.1"})
	if err != nil {
		return err
	}
	return revokeLease(ctx, c, s)
}

// runOps runs op n times in all from clients concurrent goroutines; it returns the wall time and
// the first error (the others stop at it).
func (f *benchVault) runOps(n, clients int, op vaultOp) (time.Duration, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	l := startLoad(clients, func(w int) bool {
		if next.Add(1) > int64(n) || ctx.Err() != nil {
			return false
		}
		if err := op(ctx, f.v.Client, w); err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
			cancel()
			return false
		}
		return true
	})
	l.Wait()
	return time.Since(start), first
}

// measure runs b.N operations from clients concurrent clients and reports the throughput and
// the CPU time per operation of Vault, of the plugin process pluginPID (0: none) and of the
// emulator.
func (f *benchVault) measure(b *testing.B, clients, pluginPID int, op vaultOp) {
	b.Helper()
	pids := map[string]int{"vault": f.v.PID(), "emulator": f.e.PID()}
	if pluginPID != 0 {
		pids["plugin"] = pluginPID
	}
	before := cpuTimes(b, pids)
	b.ResetTimer()
	wall, err := f.runOps(b.N, clients, op)
	b.StopTimer()
	after := cpuTimes(b, pids)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "ops/s")
	for name := range pids {
		b.ReportMetric(float64((after[name]-before[name]).Microseconds())/float64(b.N), name+"-us/op")
	}
}

// cpuTimes reads the CPU time of each process.
func cpuTimes(b *testing.B, pids map[string]int) map[string]time.Duration {
	b.Helper()
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		d, err := procCPU(pid)
		if err != nil {
			b.Fatalf("CPU time of %s (pid %d): %v", name, pid, err)
		}
		out[name] = d
	}
	return out
}

// BenchmarkVault: see the file comment. Every row runs BENCH_ROUNDS times, the rows in turn, so
// that background load on the machine hits them alike; scripts/bench.sh takes the medians.
func BenchmarkVault(b *testing.B) {
	k := readBenchKnobs(b)
	f := startBenchVault(b, "warn", map[string]string{"bench": "1h", "read": "1h"})
	f.v.EnablePlugin(b, "noop", noopPluginFile, "")
	f.v.MustRun(b, "secrets", "enable", "ssh")
	f.v.MustRun(b, "write", "ssh/roles/otp", "key_type=otp", "default_user=bench", "cidr_list=127.0.0.0/8")
	tooken, noop := f.pluginPID(b, pluginName), f.pluginPID(b, noopPluginFile)
	rows := []struct {
		name      string
		pluginPID int
		op        vaultOp
	}{
		{"creds-parallel", tooken, readRevoke("tooken/creds/bench")},
		{"creds-read", tooken, readOnly("tooken/creds/read")},
		{"noop", noop, readRevoke("noop/creds/bench")},
		{"kv-put", 0, kvPut},
		{"ssh-otp", 0, sshOTP},
	}
	for _, r := range rows { // warm: plugin processes, clients, caches
		if _, err := f.runOps(k.Clients, k.Clients, r.op); err != nil {
			b.Fatalf("%s: %v", r.name, err)
		}
	}
	f.revokeReadLeases(b)
	for range k.Rounds {
		b.Run("creds", f.serialCreds)
		for _, r := range rows {
			b.Run(r.name, func(b *testing.B) { f.measure(b, k.Clients, r.pluginPID, r.op) })
			if r.name == "creds-read" {
				f.revokeReadLeases(b)
			}
		}
	}
	if live := f.e.LiveTokens(b); len(live) != 1 {
		b.Errorf("%d tokens live upstream after the benchmark, want 1 (the root)", len(live))
	}
}

// revokeReadLeases revokes the leases the creds-read row left.
func (f *benchVault) revokeReadLeases(b *testing.B) {
	b.Helper()
	if err := f.v.Client.Sys().RevokePrefix("tooken/creds/read"); err != nil {
		b.Fatalf("revoking the creds-read leases: %v", err)
	}
}

// serialCreds is `vault read tooken/creds/bench` plus `vault lease revoke` from one client,
// with the share of the time the read takes.
func (f *benchVault) serialCreds(b *testing.B) {
	ctx := context.Background()
	var read time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s, err := f.v.Client.Logical().ReadWithContext(ctx, "tooken/creds/bench")
		if err != nil {
			b.Fatal(err)
		}
		read += time.Since(start)
		if err := revokeLease(ctx, f.v.Client, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(read.Nanoseconds())/float64(b.N), "read-ns/op")
}

// ---------------------------------------------------------------------------------------------
// Scale

// BenchmarkVaultScale: see the file comment. Each row is one measurement (-benchtime=1x).
func BenchmarkVaultScale(b *testing.B) {
	k := readBenchKnobs(b)
	b.Run("leases", func(b *testing.B) { benchLeases(b, k) })
	b.Run("storm", func(b *testing.B) { benchStorm(b, k, false) })
	b.Run("storm-sync", func(b *testing.B) { benchStorm(b, k, true) })
	b.Run("mounts", func(b *testing.B) { benchMounts(b, k) })
}

// benchLeases measures the idle plugin at 0 live leases, creates k.Leases leases (in parallel,
// with a long TTL so that none ends during the run) and measures it again.
func benchLeases(b *testing.B, k benchKnobs) {
	f := startBenchVault(b, "info", map[string]string{"scale": "24h"})
	pid := f.pluginPID(b, pluginName)
	if _, err := f.runOps(1, 1, readRevoke("tooken/creds/scale")); err != nil {
		b.Fatal(err)
	}
	ticks := rollbackStart(b, f.v)
	idle0 := idleCPU(b, pid, ticks, k.IdleRuns)
	rss0 := settledRSS(b, pid, k.Settle)

	wall, err := f.runOps(k.Leases, k.Clients, readOnly("tooken/creds/scale"))
	if err != nil {
		b.Fatalf("creating %d leases: %v", k.Leases, err)
	}
	// The first periodic run after the reads is not idle: it deletes the pending records of the
	// reads confirmed since the run before. Measured apart, then the idle runs.
	var first time.Duration
	if k.IdleRuns > 0 {
		first = nextRunCPU(b, pid, ticks)
	}
	idleN := idleCPU(b, pid, ticks, k.IdleRuns)
	rssN := settledRSS(b, pid, k.Settle)
	if got := f.v.PluginPIDsOf(pluginName); len(got) != 1 || got[0] != pid {
		b.Fatalf("the plugin process changed during the measurement: %v, was %d", got, pid)
	}
	b.ReportMetric(float64(k.Leases), "leases")
	b.ReportMetric(wall.Seconds(), "create-s")
	b.ReportMetric(float64(k.IdleRuns), "idle-runs")
	if k.IdleRuns > 0 {
		b.ReportMetric(float64(first.Microseconds()), "first-us/run")
		b.ReportMetric(float64(idle0.Microseconds()), "idle0-us/run")
		b.ReportMetric(float64(idleN.Microseconds()), "idleN-us/run")
	}
	b.ReportMetric(mib(rss0), "rss0-MiB")
	b.ReportMetric(mib(rssN), "rssN-MiB")
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// rollbackStart is when Vault started its rollback manager, read from its log: the manager
// calls every mount's periodic function once a minute from then on.
func rollbackStart(b *testing.B, v *Vault) time.Time {
	b.Helper()
	f, err := os.Open(v.LogPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var at time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "starting rollback manager") {
			continue
		}
		ts, _, _ := strings.Cut(line, " ")
		if at, err = time.Parse("2006-01-02T15:04:05.000Z0700", ts); err != nil {
			b.Fatalf("the time of Vault's log line %q: %v", line, err)
		}
	}
	if at.IsZero() {
		b.Fatalf("no \"starting rollback manager\" line in Vault's log (log level info or lower)")
	}
	return at
}

// rollbackPeriod is how often Vault 1.14 calls a mount's periodic function (fixed in the server).
const rollbackPeriod = time.Minute

// idleCPU is the plugin process's CPU time per periodic run while nothing else reaches it,
// averaged over runs runs (0: not measured). The window spans runs whole periods starting half
// a period after a tick, so that it holds exactly runs periodic runs, each one whole. Clock
// ticks (10 ms) are too coarse for a few milliseconds: it sums the ns of every thread
// (procThreadsCPU).
func idleCPU(b *testing.B, pid int, ticks time.Time, runs int) time.Duration {
	b.Helper()
	if runs == 0 {
		return 0
	}
	periods := math.Ceil(float64(time.Since(ticks)-rollbackPeriod/2) / float64(rollbackPeriod))
	start := ticks.Add(time.Duration(periods)*rollbackPeriod + rollbackPeriod/2)
	time.Sleep(time.Until(start))
	before, err := procThreadsCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Duration(runs) * rollbackPeriod)
	after, err := procThreadsCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return (after - before) / time.Duration(runs)
}

// nextRunCPU is the plugin process's CPU time from now until half a period after the next tick:
// the next periodic run, and whatever else the plugin does until then (nothing, when no client
// calls it).
func nextRunCPU(b *testing.B, pid int, ticks time.Time) time.Duration {
	b.Helper()
	periods := math.Ceil(float64(time.Since(ticks)) / float64(rollbackPeriod))
	end := ticks.Add(time.Duration(periods)*rollbackPeriod + rollbackPeriod/2)
	before, err := procThreadsCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Until(end))
	after, err := procThreadsCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return after - before
}

// settledRSS reads a process's RSS once it has not fallen for settle (the Go runtime returns
// freed memory to the system gradually), reading at most for 6 × settle.
func settledRSS(b *testing.B, pid int, settle time.Duration) int64 {
	b.Helper()
	deadline := time.Now().Add(6 * settle)
	low, lowAt := int64(math.MaxInt64), time.Now()
	for {
		rss, err := procRSS(pid)
		if err != nil {
			b.Fatal(err)
		}
		if rss < low {
			low, lowAt = rss, time.Now()
		}
		if time.Since(lowAt) >= settle || time.Now().After(deadline) {
			return rss
		}
		time.Sleep(time.Second)
	}
}

// stormLimit is the upstream limit of the storm: the Tooken plan's 100 requests/s, burst 200.
const stormLimit, stormBurst = 100, 200

// benchStorm creates k.Storm leases with the limit off, sets the emulator's limit to 100 req/s
// (burst 200), revokes every lease at once and times until Tooken has revoked every token.
// sync false is `vault lease revoke -prefix` (the CLI's default) and many leases ending
// together: Vault's expiration workers (200) revoke them concurrently. sync true is the API's
// default for revoke-prefix: Vault revokes them one after the other.
func benchStorm(b *testing.B, k benchKnobs, sync bool) {
	f := startBenchVault(b, "warn", map[string]string{"storm": "24h"})
	if _, err := f.runOps(k.Storm, k.Clients, readOnly("tooken/creds/storm")); err != nil {
		b.Fatalf("creating %d leases: %v", k.Storm, err)
	}
	f.e.SetRateLimit(b, stormLimit, stormBurst)
	revoked := f.e.Counter(b, "revoked")
	start := time.Now()
	errc := make(chan error, 1)
	c, err := f.v.Client.Clone()
	if err != nil {
		b.Fatal(err)
	}
	c.SetToken(f.v.RootToken)
	c.SetClientTimeout(5 * time.Minute) // a sync revoke-prefix answers when done, within Vault's 90s request limit
	go func() {
		_, err := c.Logical().Write("sys/leases/revoke-prefix/tooken/creds/storm", map[string]any{"sync": sync})
		errc <- err
	}()
	ceiling := time.Duration(k.Storm)*time.Second/10 + 5*time.Minute // 10/s: far below any sane drain
	var done time.Duration
	for done == 0 {
		n := f.e.Counter(b, "revoked") - revoked
		switch {
		case n >= int64(k.Storm):
			done = time.Since(start)
		case time.Since(start) > ceiling:
			b.Fatalf("only %d of %d tokens revoked upstream after %s", n, k.Storm, ceiling)
		default:
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := <-errc; err != nil {
		b.Logf("revoke-prefix answered %v (the tokens were revoked all the same)", err)
	}
	b.ReportMetric(float64(k.Storm), "storm-leases")
	b.ReportMetric(done.Seconds(), "drain-s")
	b.ReportMetric(float64(k.Storm)/done.Seconds(), "drain-rps")
	b.ReportMetric(float64(max(k.Storm-stormBurst, 0))/done.Seconds(), "beyond-burst-rps")
	b.ReportMetric(stormLimit, "limit-rps")
	b.ReportMetric(stormBurst, "burst")
}

// benchMounts mounts and configures k.Mounts mounts of the plugin, reads creds from each (so
// that each has built its client), and reads the RSS of the one plugin process serving them.
func benchMounts(b *testing.B, k benchKnobs) {
	f := startBenchVault(b, "warn", map[string]string{"m": "1h"})
	c := f.v.Client
	for i := 1; i < k.Mounts; i++ { // tooken/ is the first
		mount := fmt.Sprintf("tooken-%d", i)
		if err := c.Sys().Mount(mount, &api.MountInput{Type: pluginName}); err != nil {
			b.Fatalf("mount %s: %v", mount, err)
		}
		// A root of its own: a token that another mount holds as its root
		// is refused (two mounts rotating one root lock each other out).
		root := createToken(b, f.e, mount+"-root", "tokens:write", "deployments:write")
		if _, err := c.Logical().Write(mount+"/config", map[string]any{"url": f.e.URL, "token": root.Secret}); err != nil {
			b.Fatalf("%s/config: %v", mount, err)
		}
		if _, err := c.Logical().Write(mount+"/roles/m", map[string]any{"scopes": "deployments:write", "ttl": "1h"}); err != nil {
			b.Fatalf("%s/roles/m: %v", mount, err)
		}
	}
	for i := 0; i < k.Mounts; i++ {
		mount := "tooken"
		if i > 0 {
			mount = fmt.Sprintf("tooken-%d", i)
		}
		if _, err := f.runOps(1, 1, readRevoke(mount+"/creds/m")); err != nil {
			b.Fatalf("%s: %v", mount, err)
		}
	}
	rss := settledRSS(b, f.pluginPID(b, pluginName), k.Settle)
	b.ReportMetric(float64(k.Mounts), "mounts")
	b.ReportMetric(mib(rss), "rss-MiB")
}
