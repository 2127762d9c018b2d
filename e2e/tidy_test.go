package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// plantOrphan creates a token of the mount upstream with the root secret, as a lost creds read
// would leave it: the mount's metadata, an issue key no record has.
func plantOrphan(t testing.TB, e *Emulator, mountUUID string, i int) string {
	t.Helper()
	var tok apiToken
	st := tookenAPI(t, e, http.MethodPost, "/tokens", map[string]any{
		"name": fmt.Sprintf("orphan-%d", i), "scopes": []string{"deployments:write"},
		"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"metadata":   map[string]string{"vault_mount_uuid": mountUUID, "vault_role": "busy", "vault_issue_key": fmt.Sprintf("lost-%d", i)},
	}, &tok)
	if st != http.StatusCreated || tok.ID == "" {
		t.Fatalf("planting an orphan: status %d", st)
	}
	return tok.ID
}

// TestTidyUnderCredsLoad: tidy with revoke_orphans=true while 50 clients read creds (and revoke
// a third of their leases at once) never revokes a token whose lease exists or is being made,
// and revokes the planted orphans. A safety_age shorter than a creds read can take is refused.
// The config's budget is short (request_timeout=2s, max_retries=0: the shortest safety_age is
// 2s + 45s), so the load runs until the first tokens are that old. A read that fails (a create
// slower than 2s on a loaded machine) leaves its pending record for the rollback: it is counted,
// not a failure of the test.
func TestTidyUnderCredsLoad(t *testing.T) {
	t.Parallel()
	// Tooken's rate limit off: 50 readers and tidy's listing go beyond 100 requests a second.
	e := startEmulator(t, EmulatorOptions{Args: []string{"--rate-limit", "-1"}})
	v := startDevVault(t, VaultOptions{})
	setupTooken(t, v, e)
	v.MustRun(t, "write", "tooken/config", "request_timeout=2s", "max_retries=0")
	v.WriteRole(t, "tooken", "busy", "scopes=deployments:write", "ttl=30m", "max_ttl=1h")
	mount := mountIDOf(t, e, v.ReadCreds(t, "tooken", "busy", ""))
	if _, errOut, err := v.Run(t, Run{}, "write", "tooken/tidy", "revoke_orphans=true", "safety_age=0"); err == nil ||
		!strings.Contains(errOut, "safety_age: must be at least 47s") {
		t.Fatalf("tidy safety_age=0: %v\n%s", err, errOut)
	}
	var planted []string
	for i := range 5 {
		planted = append(planted, plantOrphan(t, e, mount, i))
	}
	start := time.Now()

	// Creates answer after 0-200 ms, so that tidy meets reads at every step.
	for _, ms := range []time.Duration{50, 100, 200} {
		e.AddFault(t, tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: ms * time.Millisecond, Probability: 0.3})
	}
	var mu sync.Mutex
	held := map[string]bool{} // token id -> its lease is held
	var reads atomic.Int64
	var failures []string
	stop := v.CredsLoad("tooken/creds/busy", 50, 30*time.Second, func(s *api.Secret, err error) {
		if err == nil && (s == nil || s.LeaseID == "") {
			err = fmt.Errorf("an answer without a lease")
		}
		keep := reads.Add(1)%3 != 0
		if err == nil && !keep {
			err = v.Client.Sys().Revoke(s.LeaseID)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, err.Error())
			return
		}
		held[s.Data["token_id"].(string)] = keep
	})
	t.Cleanup(stop) // also when the test ends early
	var revoked int64
	tidy := func() {
		var out struct {
			Data map[string]any `json:"data"`
		}
		v.MustRunJSON(t, &out, "write", "-format=json", "tooken/tidy", "revoke_orphans=true", "safety_age=47s")
		n, _ := out.Data["orphans_revoked"].(float64)
		revoked += int64(n)
		t.Logf("tidy after %s: scanned %v, accounted %v, too young %v, orphans revoked %v",
			time.Since(start).Round(time.Second), out.Data["upstream_scanned"], out.Data["accounted"], out.Data["too_young"], n)
	}
	for time.Since(start) < 51*time.Second { // the planted orphans and the first reads' tokens are old enough
		time.Sleep(time.Second)
	}
	for range 3 {
		tidy()
	}
	stop()
	if len(failures) > 0 {
		t.Logf("%d creds reads or revokes failed, the first: %s", len(failures), failures[0])
	}
	checkTidyUnderLoad(t, e, held, planted, revoked, reads.Load())
}

// checkTidyUnderLoad: every token whose lease is held is live upstream; tidy revoked exactly
// the planted orphans.
func checkTidyUnderLoad(t *testing.T, e *Emulator, held map[string]bool, planted []string, revoked, reads int64) {
	t.Helper()
	leased, killed := 0, 0
	for id, h := range held {
		if !h {
			continue
		}
		leased++
		if tok, _ := e.Token(t, id); tok.State != "live" {
			killed++
		}
	}
	t.Logf("%d creds reads, %d leases held; tidy revoked %d", reads, leased, revoked)
	if killed != 0 {
		t.Errorf("tidy revoked %d of the %d tokens whose lease exists", killed, leased)
	}
	if revoked != int64(len(planted)) {
		t.Errorf("tidy revoked %d tokens, want the %d planted orphans", revoked, len(planted))
	}
	for _, id := range planted {
		if tok, _ := e.Token(t, id); tok.State == "live" {
			t.Errorf("planted orphan %s still live", id)
		}
	}
}
