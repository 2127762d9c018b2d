package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// No orphaned Tooken token when the plugin process dies in the middle of creds requests, nor
// when Tooken is down while leases expire.

// TestKillPluginDuringCreds: the plugin process is killed (SIGKILL) twice while creds requests
// are in flight (Tooken answers slowly, so they are); the emulator still creates the tokens of
// the requests that died. After the periodic rollback (rollback_min_age=5s; Vault calls it
// about once a minute), the live upstream tokens of the mount are exactly the live leases.
func TestKillPluginDuringCreds(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.MustRun(t, "write", "tooken/config", "rollback_min_age=5s")
	v.WriteRole(t, "tooken", "ci", "scopes=deployments:write", "ttl=30m", "max_ttl=1h")
	accessor := mountIDOf(t, e, v.ReadCreds(t, "tooken", "ci", ""))

	e.AddFault(t, tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: 1500 * time.Millisecond})
	var ok, failed atomic.Int64
	stop := v.CredsLoad("tooken/creds/ci", 6, 30*time.Second, func(s *api.Secret, err error) {
		if err != nil || s == nil || s.LeaseID == "" {
			failed.Add(1)
			time.Sleep(200 * time.Millisecond)
			return
		}
		ok.Add(1)
	})
	var killed []int
	for round := 1; round <= 2; round++ {
		// Kill once a plugin process that was not killed yet has a slow create in flight upstream
		// (the emulator counts a faulted request on arrival, then holds it 1.5s).
		arrived := e.Counter(t, "faults")
		eventually(t, time.Minute, "a slow create of a running plugin in flight upstream", func() (bool, string) {
			pids := v.PluginPIDs()
			fresh := len(pids) > 0 && !slices.ContainsFunc(pids, func(p int) bool { return slices.Contains(killed, p) })
			n := e.Counter(t, "faults") - arrived
			return fresh && n > 0, fmt.Sprintf("plugin pids %v (killed %v), %d slow creates since", pids, killed, n)
		})
		pids := v.KillPlugin(t)
		killed = append(killed, pids...)
		t.Logf("round %d: killed plugin pids %v with creds requests in flight", round, pids)
	}
	okAtKill := ok.Load()
	eventually(t, time.Minute, "creds reads succeed through the restarted plugin", func() (bool, string) {
		return ok.Load() > okAtKill, fmt.Sprintf("%d ok, %d failed", ok.Load(), failed.Load())
	})
	stop()
	e.ClearFaults(t)
	// The slow creations of the requests that died end upstream.
	e.WaitIdle(t, 30*time.Second)

	leases := v.LeaseIDs(t, "tooken/creds/ci")
	before := len(e.LiveOfMount(t, accessor))
	t.Logf("creds: %d ok, %d failed; before rollback: %d live upstream tokens of the mount, %d live leases",
		ok.Load(), failed.Load(), before, len(leases))
	// Vault retries a request whose plugin died, on the restarted plugin: the callers see no
	// failure, but the dead requests' tokens exist upstream with no lease.
	if before <= len(leases) {
		t.Errorf("the kills left no token without a lease (%d live, %d leases): nothing was tested", before, len(leases))
	}
	start := time.Now()
	eventually(t, 3*time.Minute, "live upstream tokens of the mount = live leases", func() (bool, string) {
		up, ls := len(e.LiveOfMount(t, accessor)), len(v.LeaseIDs(t, "tooken/creds/ci"))
		return up == ls, fmt.Sprintf("%d live upstream tokens, %d live leases", up, ls)
	})
	after := len(e.LiveOfMount(t, accessor))
	t.Logf("after rollback (%s): %d live upstream tokens of the mount = %d live leases (%d orphans killed)",
		time.Since(start).Round(time.Second), after, len(v.LeaseIDs(t, "tooken/creds/ci")), before-after)
	st := readData(t, v, "tooken/tidy/status")
	t.Logf("tidy/status: pending_records=%v abandoned_records=%v last_rollback=%v", st["pending_records"], st["abandoned_records"], st["last_rollback"])

	// Every lease still revokes its token.
	v.MustRun(t, "lease", "revoke", "-prefix", "tooken/creds/ci")
	eventually(t, 30*time.Second, "no live upstream token of the mount", func() (bool, string) {
		n := len(e.LiveOfMount(t, accessor))
		return n == 0, fmt.Sprintf("%d live", n)
	})
}

// TestTookenOutageWhileLeasesExpire: the emulator process is stopped while short leases expire.
// Each revoke fails to reach Tooken, so the plugin queues the token and answers success: Vault
// never retries nor marks a lease irrevocable, however long the outage lasts (Vault 1.14's own
// schedule, 6 attempts from 10s doubling, is fixed in the server). After the emulator comes back
// (same state file), the periodic drain kills every token within minutes, long before its
// upstream expiry.
func TestTookenOutageWhileLeasesExpire(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.MustRun(t, "write", "tooken/config", "max_retries=1", "request_timeout=2s")
	// The leases must outlive the reads and end during the outage: 30s is
	// enough for 8 reads on a loaded machine and well within the outage.
	v.WriteRole(t, "tooken", "brief", "scopes=deployments:write", "ttl=30s", "max_ttl=30m")

	var creds []Creds
	for i := 0; i < 8; i++ {
		creds = append(creds, v.ReadCreds(t, "tooken", "brief", ""))
	}
	accessor := mountIDOf(t, e, creds[0])
	e.Stop(t)
	down := time.Now()
	// The leases still alive now are the ones whose revoke meets the outage.
	alive := 0
	for _, c := range creds {
		if _, ok := v.LeaseTTL(t, c.LeaseID); ok {
			alive++
		}
	}
	t.Logf("emulator stopped with %d of %d leases alive", alive, len(creds))
	if alive == 0 {
		t.Fatal("every lease ended before the outage began: nothing to test")
	}

	eventually(t, 90*time.Second, "every lease expired and gone from Vault", func() (bool, string) {
		ls := v.LeaseIDs(t, "tooken/creds/brief")
		return len(ls) == 0, fmt.Sprintf("%d leases", len(ls))
	})
	t.Logf("all leases gone %s after the outage began", time.Since(down).Round(time.Second))
	for _, c := range creds {
		if _, ok := v.LeaseTTL(t, c.LeaseID); ok {
			t.Errorf("vault lease lookup %s: still known", c.LeaseID)
		}
	}
	// Stay down a while longer: no lease comes back as irrevocable.
	for time.Since(down) < 75*time.Second {
		time.Sleep(5 * time.Second)
	}
	if n := v.IrrevocableLeases(t); n != 0 {
		t.Errorf("%d irrevocable leases", n)
	}
	st := readData(t, v, "tooken/tidy/status")
	if fmt.Sprint(st["queue_length"]) != fmt.Sprint(alive) {
		t.Errorf("revoke queue length %v, want %d (the leases alive when Tooken went down)", st["queue_length"], alive)
	}
	logb, _ := os.ReadFile(v.LogPath)
	if n := strings.Count(string(logb), "failed to revoke lease"); n != 0 {
		t.Errorf("Vault logged %d failed revocations (it should never have to retry)", n)
	}
	if n := strings.Count(string(logb), "queued for revocation"); n < alive {
		t.Logf("plugin logged %d queued revocations", n)
	}

	e.Start(t)
	back := time.Now()
	t.Logf("emulator back after %s down; its tokens survived: %d live of the mount", back.Sub(down).Round(time.Second), len(e.LiveOfMount(t, accessor)))
	eventually(t, 3*time.Minute, "every expired lease's token dead upstream", func() (bool, string) {
		live := e.LiveOfMount(t, accessor)
		return len(live) == 0, fmt.Sprintf("%d still live", len(live))
	})
	t.Logf("all tokens dead %s after the emulator came back", time.Since(back).Round(time.Second))
	for i, c := range creds {
		if st := tokenState(t, e, c.Data.TokenID); st != "revoked" {
			t.Errorf("token #%d: state %q, want revoked", i, st)
		}
		if got := e.SelfStatus(t, c.Data.Token); got != 401 {
			t.Errorf("token #%d: secret answers %d, want 401", i, got)
		}
	}
	if n := v.IrrevocableLeases(t); n != 0 {
		t.Errorf("%d irrevocable leases", n)
	}
	st = readData(t, v, "tooken/tidy/status")
	if fmt.Sprint(st["queue_length"]) != "0" {
		t.Errorf("revoke queue length %v after the drain", st["queue_length"])
	}
}
