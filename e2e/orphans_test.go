package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// The issue-6 end-to-end tests: no orphaned Tooken token when the plugin process dies in the
// middle of creds requests, nor when Tooken is down while leases expire.

// mountIDOf returns the vault_mount_uuid metadata (the mount's backend UUID) the engine put on a
// token it issued: tidy and these tests find the mount's tokens by it.
func mountIDOf(t testing.TB, e *Emulator, c Creds) string {
	t.Helper()
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.Metadata["vault_mount_uuid"] == "" {
		t.Fatalf("token %s has no vault_mount_uuid metadata: %+v", c.Data.TokenID, tok.Metadata)
	}
	return tok.Metadata["vault_mount_uuid"]
}

// leaseIDs lists the leases Vault holds under prefix (e.g. "tooken/creds/ci").
func (v *Vault) leaseIDs(t testing.TB, prefix string) []string {
	t.Helper()
	s, err := v.Client.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatalf("list sys/leases/lookup/%s: %v", prefix, err)
	}
	if s == nil {
		return nil
	}
	raw, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, k := range raw {
		out = append(out, fmt.Sprint(k))
	}
	return out
}

// irrevocableLeases counts the leases Vault has marked irrevocable (sys/leases/count).
func (v *Vault) irrevocableLeases(t testing.TB) int {
	t.Helper()
	s, err := v.Client.Logical().ReadWithData("sys/leases/count", map[string][]string{"type": {"irrevocable"}})
	if err != nil {
		t.Fatalf("sys/leases/count: %v", err)
	}
	if s == nil {
		return 0
	}
	n, _ := s.Data["lease_count"].(interface{ Int64() (int64, error) })
	if n == nil {
		return 0
	}
	c, _ := n.Int64()
	return int(c)
}

// liveOfMount lists the live upstream tokens whose metadata names the mount (vault_mount_uuid).
func (e *Emulator) liveOfMount(t testing.TB, mountUUID string) []TokenRecord {
	t.Helper()
	var out []TokenRecord
	for _, tok := range e.LiveTokens(t) {
		if tok.Metadata["vault_mount_uuid"] == mountUUID {
			out = append(out, tok)
		}
	}
	return out
}

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

	e.AddFault(t, Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: "1500ms"})
	var ok, failed atomic.Int64
	stop := v.CredsLoad("tooken/creds/ci", 6, 30*time.Second, func(s *api.Secret, err error) {
		if err != nil || s == nil || s.LeaseID == "" {
			failed.Add(1)
			time.Sleep(200 * time.Millisecond)
			return
		}
		ok.Add(1)
	})
	for round := 1; round <= 2; round++ {
		time.Sleep(3 * time.Second)
		pids := v.KillPlugin(t)
		t.Logf("round %d: killed plugin pids %v with creds requests in flight", round, pids)
	}
	time.Sleep(4 * time.Second)
	stop()
	e.ClearFaults(t)
	// Let the emulator finish the slow creations of the requests that died.
	time.Sleep(2 * time.Second)

	leases := v.leaseIDs(t, "tooken/creds/ci")
	before := len(e.liveOfMount(t, accessor))
	t.Logf("creds: %d ok, %d failed; before rollback: %d live upstream tokens of the mount, %d live leases",
		ok.Load(), failed.Load(), before, len(leases))
	// Vault retries a request whose plugin died, on the restarted plugin: the callers see no
	// failure, but the dead requests' tokens exist upstream with no lease.
	if before <= len(leases) {
		t.Errorf("the kills left no token without a lease (%d live, %d leases): nothing was tested", before, len(leases))
	}
	start := time.Now()
	eventually(t, 3*time.Minute, "live upstream tokens of the mount = live leases", func() (bool, string) {
		up, ls := len(e.liveOfMount(t, accessor)), len(v.leaseIDs(t, "tooken/creds/ci"))
		return up == ls, fmt.Sprintf("%d live upstream tokens, %d live leases", up, ls)
	})
	after := len(e.liveOfMount(t, accessor))
	t.Logf("after rollback (%s): %d live upstream tokens of the mount = %d live leases (%d orphans killed)",
		time.Since(start).Round(time.Second), after, len(v.leaseIDs(t, "tooken/creds/ci")), before-after)
	st := readData(t, v, "tooken/tidy/status")
	t.Logf("tidy/status: pending_records=%v abandoned_records=%v last_rollback=%v", st["pending_records"], st["abandoned_records"], st["last_rollback"])

	// Every lease still revokes its token.
	v.MustRun(t, "lease", "revoke", "-prefix", "tooken/creds/ci")
	eventually(t, 30*time.Second, "no live upstream token of the mount", func() (bool, string) {
		n := len(e.liveOfMount(t, accessor))
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
	v.WriteRole(t, "tooken", "brief", "scopes=deployments:write", "ttl=10s", "max_ttl=30m")

	var creds []Creds
	for i := 0; i < 8; i++ {
		creds = append(creds, v.ReadCreds(t, "tooken", "brief", ""))
	}
	accessor := mountIDOf(t, e, creds[0])
	e.Stop(t)
	down := time.Now()
	t.Log("emulator stopped")

	eventually(t, 90*time.Second, "every lease expired and gone from Vault", func() (bool, string) {
		ls := v.leaseIDs(t, "tooken/creds/brief")
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
	if n := v.irrevocableLeases(t); n != 0 {
		t.Errorf("%d irrevocable leases", n)
	}
	st := readData(t, v, "tooken/tidy/status")
	if fmt.Sprint(st["queue_length"]) != fmt.Sprint(len(creds)) {
		t.Errorf("revoke queue length %v, want %d", st["queue_length"], len(creds))
	}
	logb, _ := os.ReadFile(v.LogPath)
	if n := strings.Count(string(logb), "failed to revoke lease"); n != 0 {
		t.Errorf("Vault logged %d failed revocations (it should never have to retry)", n)
	}
	if n := strings.Count(string(logb), "queued for revocation"); n < len(creds) {
		t.Logf("plugin logged %d queued revocations", n)
	}

	e.Start(t)
	back := time.Now()
	t.Logf("emulator back after %s down; its tokens survived: %d live of the mount", back.Sub(down).Round(time.Second), len(e.liveOfMount(t, accessor)))
	eventually(t, 3*time.Minute, "every expired lease's token dead upstream", func() (bool, string) {
		live := e.liveOfMount(t, accessor)
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
	if n := v.irrevocableLeases(t); n != 0 {
		t.Errorf("%d irrevocable leases", n)
	}
	st = readData(t, v, "tooken/tidy/status")
	if fmt.Sprint(st["queue_length"]) != "0" {
		t.Errorf("revoke queue length %v after the drain", st["queue_length"])
	}
}
