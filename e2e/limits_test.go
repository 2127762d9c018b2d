package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// A role's max_live_tokens through a real Vault.

// refusedByLimit tells whether a creds read was refused by max_live_tokens: 429, naming the role
// and the limit.
func refusedByLimit(err error, role string, limit int) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests &&
		strings.Contains(err.Error(), fmt.Sprintf("max_live_tokens: role %q already has %d live tokens", role, limit))
}

// liveOfRole counts the live upstream tokens of a role of the mount.
func liveOfRole(t testing.TB, e *Emulator, mountUUID, role string) int {
	t.Helper()
	n := 0
	for _, tok := range e.LiveOfMount(t, mountUUID) {
		if tok.Metadata["vault_role"] == role {
			n++
		}
	}
	return n
}

// TestMaxLiveTokens: the limit holds under 50 parallel creds reads (the others answer 429 and
// create nothing upstream), after a kill -9 of the plugin in the middle of a read (the dead
// read's token counts until the rollback has killed it), and revokes free slots.
func TestMaxLiveTokens(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.MustRun(t, "write", "tooken/config", "rollback_min_age=5s")
	v.WriteRole(t, "tooken", "capped", "scopes=deployments:write", "ttl=30m", "max_ttl=1h", "max_live_tokens=5")
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.RootToken)
	c.SetMaxRetries(0) // count each read once: Vault's API client retries a 429 by default
	read := func() (*api.Secret, error) { return c.Logical().Read("tooken/creds/capped") }

	// 50 reads at once, creates slow upstream so that they overlap.
	e.AddFault(t, tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: 300 * time.Millisecond})
	created := e.Counter(t, "created")
	var mu sync.Mutex
	var leases []*api.Secret
	refused := 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := read()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && s != nil && s.LeaseID != "":
				leases = append(leases, s)
			case refusedByLimit(err, "capped", 5):
				refused++
			default:
				t.Errorf("creds read: %v", err)
			}
		}()
	}
	wg.Wait()
	e.ClearFaults(t)
	if len(leases) != 5 || refused != 45 {
		t.Fatalf("%d leases, %d refused with 429; want 5 and 45", len(leases), refused)
	}
	if n := e.Counter(t, "created") - created; n != 5 {
		t.Errorf("%d tokens created upstream, want 5: a refused read created one", n)
	}
	first, _ := e.Token(t, leases[0].Data["token_id"].(string))
	mount := first.Metadata["vault_mount_uuid"]
	if n := liveOfRole(t, e, mount, "capped"); n != 5 {
		t.Errorf("%d live tokens of the role upstream, want 5", n)
	}

	// Revokes free slots.
	for _, s := range leases[:2] {
		if err := c.Sys().Revoke(s.LeaseID); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if _, err := read(); err != nil {
			t.Fatalf("read %d after two revokes: %v", i+1, err)
		}
	}
	if _, err := read(); !refusedByLimit(err, "capped", 5) {
		t.Fatalf("a sixth live token: %v", err)
	}

	testMaxLiveTokensKill(t, e, v, read, mount)
}

// testMaxLiveTokensKill: with 4 leases of the 5, a read dies in its slow create (kill -9 of the
// plugin); the emulator still creates its token. The restarted plugin counts it (reads are
// refused) until the periodic rollback has killed it; then one more read gets the fifth slot.
func testMaxLiveTokensKill(t *testing.T, e *Emulator, v *Vault, read func() (*api.Secret, error), mount string) {
	t.Helper()
	ids := v.LeaseIDs(t, "tooken/creds/capped")
	if len(ids) != 5 {
		t.Fatalf("%d leases, want 5", len(ids))
	}
	v.MustRun(t, "lease", "revoke", "tooken/creds/capped/"+ids[0])
	e.AddFault(t, tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens", Latency: 3 * time.Second, Count: 1})
	arrived := e.Counter(t, "faults")
	done := make(chan error, 1)
	go func() { _, err := read(); done <- err }()
	eventually(t, time.Minute, "the slow create in flight upstream", func() (bool, string) {
		n := e.Counter(t, "faults") - arrived
		return n > 0, fmt.Sprintf("%d slow creates", n)
	})
	pids := v.KillPlugin(t)
	err := <-done
	t.Logf("killed plugin %v during a read; the read answered %v", pids, err)
	e.WaitIdle(t, 30*time.Second) // the dead read's token is created upstream
	if n := liveOfRole(t, e, mount, "capped"); n != 5 {
		t.Fatalf("%d live tokens of the role upstream, want 4 leased + the dead read's", n)
	}
	if _, err := read(); !refusedByLimit(err, "capped", 5) {
		t.Fatalf("the restarted plugin issued a token beyond the limit (4 leases + 1 unfinished read): %v", err)
	}
	eventually(t, 3*time.Minute, "the rollback kills the dead read's token", func() (bool, string) {
		n := liveOfRole(t, e, mount, "capped")
		return n == 4, fmt.Sprintf("%d live tokens of the role", n)
	})
	eventually(t, time.Minute, "a read gets the freed slot", func() (bool, string) {
		_, err := read()
		return err == nil, fmt.Sprint(err)
	})
	if _, err := read(); !refusedByLimit(err, "capped", 5) {
		t.Fatalf("a sixth live token after the rollback: %v", err)
	}
}
