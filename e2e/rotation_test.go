package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// configField reads one field of mount/config through the API client.
func configField(t *testing.T, v *Vault, field string) any {
	t.Helper()
	s, err := v.Client.Logical().Read("tooken/config")
	if err != nil || s == nil {
		t.Fatalf("reading tooken/config: %v", err)
	}
	return s.Data[field]
}

// credsReaders reads creds without a pause until stop is called, and
// returns how many reads ran and failed (with the first error).
func credsReaders(t *testing.T, v *Vault, role string, n int) (stop func() (reads, failed int64, first string)) {
	var reads, failed atomic.Int64
	var firstErr atomic.Value
	stopLoad := v.CredsLoad("tooken/creds/"+role, n, time.Minute, func(s *api.Secret, err error) {
		reads.Add(1)
		if err != nil || s == nil || s.Data["token"] == nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Sprint(err))
			return
		}
		// Do not let the leases pile up: revoke at once.
		_ = v.Client.Sys().Revoke(s.LeaseID)
	})
	return func() (int64, int64, string) {
		stopLoad()
		f, _ := firstErr.Load().(string)
		return reads.Load(), failed.Load(), f
	}
}

// startRotationTest starts an emulator and a configured dev Vault with a role "r", and returns
// them with the root token's id.
func startRotationTest(t *testing.T) (*Emulator, *Vault, string) {
	t.Helper()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	return e, v, e.RootTokenID(t)
}

// minimumGraceConfig are the config fields of the shortest rotation_grace accepted with these
// call limits: 1m WAL minimum age + 1m rollback interval + the rotate call's budget (two 5s
// attempts and a 5s wait) + 30s margin = 2m45s.
var minimumGraceConfig = []string{"request_timeout=5s", "max_retries=1", "rotation_grace=2m45s"}

const minimumGrace = 2*time.Minute + 45*time.Second

// useMinimumGrace writes minimumGraceConfig, after checking that one second less is refused
// (with a message that names the minimum): the grace really is the minimum accepted.
func useMinimumGrace(t *testing.T, v *Vault) {
	t.Helper()
	out, errOut, err := v.Run(t, Run{}, "write", "tooken/config", "request_timeout=5s", "max_retries=1", "rotation_grace=2m44s")
	if err == nil || !strings.Contains(errOut, "Code: 400") || !strings.Contains(errOut, "rotation_grace: 2m44s is shorter than the 2m45s") {
		t.Fatalf("rotation_grace=2m44s: want a 400 naming the minimum 2m45s, got err=%v\n%s%s", err, out, errOut)
	}
	v.MustRun(t, append([]string{"write", "tooken/config"}, minimumGraceConfig...)...)
	if got := configField(t, v, "rotation_grace"); fmt.Sprint(got) != "165" {
		t.Fatalf("rotation_grace reads %v, want 165", got)
	}
}

// TestRootRotation: on a real Vault, `vault write -f tooken/rotate-root` rotates the root while
// creds are being read (none fails), a short schedule rotates by itself through Vault's periodic
// function, and the bootstrap secret stops working after the grace (the shortest accepted).
func TestRootRotation(t *testing.T) {
	t.Parallel()
	e, v, rootID := startRotationTest(t)
	useMinimumGrace(t, v)

	stop := credsReaders(t, v, "r", 2)
	var rot struct {
		Data     map[string]any `json:"data"`
		Warnings []string       `json:"warnings"`
	}
	start := time.Now()
	raw := v.MustRun(t, "write", "-format=json", "-f", "tooken/rotate-root")
	rotatedAt := time.Now()
	t.Logf("vault write -f tooken/rotate-root took %s", time.Since(start).Round(time.Millisecond))
	if err := json.Unmarshal([]byte(raw), &rot); err != nil {
		t.Fatalf("rotate-root answer %q: %v", raw, err)
	}
	if rot.Data["token_id"] != rootID || rot.Data["rotated_at"] == nil || rot.Data["previous_secret_expires_at"] == nil {
		t.Fatalf("rotate-root answer: %v", rot.Data)
	}
	if strings.Contains(raw, "tok_test_") || strings.Contains(raw, "tok_live_") {
		t.Fatal("rotate-root answers a secret")
	}
	if !e.SecretValid(t, e.RootSecret) {
		t.Fatal("the bootstrap secret died at once: the grace was not applied")
	}
	if configField(t, v, "last_rotated") == nil {
		t.Fatal("config read has no last_rotated after rotate-root")
	}

	// The schedule: rotate every minute; Vault's periodic function (about once a minute) does it.
	// Meanwhile the grace of the first rotation runs.
	first := configField(t, v, "last_rotated")
	before := e.Counter(t, "rotated")
	v.MustRun(t, "write", "tooken/config", "rotation_period=60")
	start = time.Now()
	eventually(t, 3*time.Minute, "a scheduled rotation", func() (bool, string) {
		got := configField(t, v, "last_rotated")
		return got != first && e.Counter(t, "rotated") > before, fmt.Sprintf("last_rotated %v, next_rotation %v", got, configField(t, v, "next_rotation"))
	})
	t.Logf("scheduled rotation seen %s after setting rotation_period=60 (next_rotation now %v)", time.Since(start).Round(time.Second), configField(t, v, "next_rotation"))
	v.MustRun(t, "write", "tooken/config", "rotation_period=0")

	// The bootstrap secret dies after the grace; creds keep working with the rotated secret.
	eventually(t, max(minimumGrace+20*time.Second-time.Since(rotatedAt), time.Second), "the bootstrap secret stops working after the grace", func() (bool, string) {
		return !e.SecretValid(t, e.RootSecret), "still valid"
	})
	c := v.ReadWorkingCreds(t, e, "tooken", "r", "", "creds after the grace")

	reads, failed, firstErr := stop()
	t.Logf("creds reads during the rotations: %d, failed: %d", reads, failed)
	if failed != 0 {
		t.Fatalf("%d creds reads failed during rotations, first: %s", failed, firstErr)
	}
	if reads == 0 {
		t.Fatal("no creds read ran")
	}
	if live := e.LiveRootTokens(t); live != 1 {
		t.Fatalf("%d bootstrap-made (root) tokens live upstream, want 1", live)
	}
	if msg := configField(t, v, "last_rotation_error"); msg != "" {
		t.Fatalf("last_rotation_error: %v", msg)
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, c.Data.Token})
}

// TestRootRotationRecoversLostAnswer: Tooken rotates but its answer is lost (every attempt);
// rotate-root fails and says so, the old secret keeps working, and Vault's own WAL rollback
// (min age 1m, run about once a minute) replays the rotation and stores the new secret.
func TestRootRotationRecoversLostAnswer(t *testing.T) {
	t.Parallel()
	e, v, rootID := startRotationTest(t)
	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + rootID + "/rotate", Drop: true})
	out, errOut, err := v.Run(t, Run{}, "write", "-f", "tooken/rotate-root")
	if err == nil {
		t.Fatalf("rotate-root succeeded with every answer lost: %s", out)
	}
	if !strings.Contains(errOut, "outcome unknown") || !strings.Contains(errOut, "keeps working") {
		t.Fatalf("rotate-root error does not say what happened: %s", errOut)
	}
	if e.Counter(t, "rotated") != 1 {
		t.Fatalf("rotations upstream: %d, want 1", e.Counter(t, "rotated"))
	}
	e.ClearFaults(t)
	// The old secret still works meanwhile.
	c := v.ReadWorkingCreds(t, e, "tooken", "r", "", "creds after a failed rotation")
	start := time.Now()
	eventually(t, 3*time.Minute, "the WAL rollback finishes the rotation", func() (bool, string) {
		got := configField(t, v, "last_rotated")
		return got != nil, fmt.Sprintf("last_rotated %v", got)
	})
	t.Logf("rollback finished the rotation %s after the failed call", time.Since(start).Round(time.Second))
	if n := e.Counter(t, "rotated"); n != 1 {
		t.Fatalf("rotations upstream after the rollback: %d, want 1 (a replay, not a second rotation)", n)
	}
	c = v.ReadWorkingCreds(t, e, "tooken", "r", "", "creds after the rollback")
	if msg := configField(t, v, "last_rotation_error"); msg != "" {
		t.Fatalf("last_rotation_error after recovery: %v", msg)
	}
	if !strings.Contains(tail(v.LogPath, 200000), "finished an interrupted root rotation") {
		t.Error("the recovery is not in Vault's log")
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, c.Data.Token})
}

// TestRootRotationSurvivesPluginKill: the lockout scenario, with the shortest rotation_grace the
// engine accepts. The plugin process is killed (SIGKILL) while Tooken is carrying out a rotation
// (it answers slowly): the WAL entry is written, the upstream change happens, the answer has
// nobody to reach, and the new secret existed only in the dead process. Whether Vault retries the
// request on the restarted plugin (which first finishes the pending rotation by replaying it) or
// the rollback does it, the replay (authenticated with the previous secret) comes within the
// grace: Vault ends with the rotated, working root secret, with no extra root token, and the
// previous secret dies at the end of the grace.
func TestRootRotationSurvivesPluginKill(t *testing.T) {
	t.Parallel()
	e, v, rootID := startRotationTest(t)
	useMinimumGrace(t, v)
	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + rootID + "/rotate", Latency: 3 * time.Second, Count: 1})

	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, err := v.Run(t, Run{}, "write", "-f", "tooken/rotate-root")
		done <- result{out, errOut, err}
	}()
	// Kill while Tooken holds the rotate request (the emulator counts a faulted request on arrival).
	eventually(t, 30*time.Second, "the rotate request reaches Tooken", func() (bool, string) {
		n := e.Counter(t, "faults")
		return n >= 1, fmt.Sprintf("%d faulted requests", n)
	})
	killedAt := time.Now()
	pids := v.KillPlugin(t)
	t.Logf("killed plugin pids %v during the upstream rotation", pids)
	r := <-done
	t.Logf("rotate-root after the kill: err=%v stdout=%q stderr=%q", r.err, strings.TrimSpace(r.out), strings.TrimSpace(r.errOut))

	eventually(t, minimumGrace+time.Minute, "Vault holds a rotated, working root secret", func() (bool, string) {
		s, err := v.Client.Logical().Read("tooken/config")
		if err != nil || s == nil {
			return false, fmt.Sprint(err)
		}
		return s.Data["last_rotated"] != nil && s.Data["last_rotation_error"] == "", fmt.Sprintf("last_rotated %v, last_rotation_error %q", s.Data["last_rotated"], s.Data["last_rotation_error"])
	})
	t.Logf("rotation settled %s after the kill (grace %s); rotations upstream: %d", time.Since(killedAt).Round(time.Second), minimumGrace, e.Counter(t, "rotated"))
	if n := e.Counter(t, "rotated"); n != 1 {
		t.Errorf("rotations upstream: %d, want 1 (the recovery replays, it does not rotate again)", n)
	}
	// The previous secret dies at the end of the grace: what Vault holds must be the new one.
	eventually(t, max(minimumGrace+30*time.Second-time.Since(killedAt), time.Second), "the bootstrap secret stops working after the grace", func() (bool, string) {
		return !e.SecretValid(t, e.RootSecret), "still valid"
	})
	c := v.ReadWorkingCreds(t, e, "tooken", "r", "", "creds after the kill and the grace")
	if roots := e.LiveRootTokens(t); roots != 1 {
		t.Fatalf("%d root tokens live upstream, want 1", roots)
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, c.Data.Token})
}
