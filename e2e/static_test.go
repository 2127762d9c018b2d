package e2e

// Static roles on a real Vault: import an existing Tooken token, serve it at static-creds,
// rotate it on demand and on a schedule, recover a rotation whose answer was lost or whose
// plugin was killed, repair a rotation made behind Vault's back, Vault Agent re-rendering (and
// restarting a supervised child) after each scheduled rotation, and a raft cluster rotating on
// its active node only, across a failover.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// apiToken is a token object of the Tooken API.
type apiToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Secret    string     `json:"secret"`
	RotatedAt *time.Time `json:"rotated_at"`
}

// tookenAPI calls the emulator's Tooken API as its root token, the way an operator does with
// curl, and decodes a 2xx answer into out (if not nil). It returns the HTTP status.
func tookenAPI(t testing.TB, e *Emulator, method, path string, body, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.RootSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decoding the answer: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// createToken makes a token at the emulator, as an operator did before Vault managed it.
func createToken(t testing.TB, e *Emulator, name string, scopes ...string) apiToken {
	t.Helper()
	var tok apiToken
	if st := tookenAPI(t, e, http.MethodPost, "/tokens", map[string]any{"name": name, "scopes": scopes}, &tok); st != http.StatusCreated {
		t.Fatalf("creating token %s: status %d", name, st)
	}
	return tok
}

// rotationsOf counts the rotations of token id that the emulator carried out (answered or with
// the answer dropped; a replay from the idempotency store is not one).
func rotationsOf(t *testing.T, e *Emulator, id string) int {
	t.Helper()
	var reqs []tookentest.RequestRecord
	e.Admin(t, http.MethodGet, "/admin/requests", nil, &reqs)
	n := 0
	for _, r := range reqs {
		if r.Path == "/v1/tokens/"+id+"/rotate" && r.Status == http.StatusOK && !r.Replayed {
			n++
		}
	}
	return n
}

// staticCreds is the answer of `vault read -format=json tooken/static-creds/<name>`.
type staticCreds struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Data          struct {
		Token                   string   `json:"token"`
		TokenID                 string   `json:"token_id"`
		Name                    string   `json:"name"`
		Scopes                  []string `json:"scopes"`
		LastRotated             string   `json:"last_rotated"`
		NextRotation            string   `json:"next_rotation"`
		PreviousSecretExpiresAt string   `json:"previous_secret_expires_at"`
		RotationPeriod          int64    `json:"rotation_period"`
		TTL                     int64    `json:"ttl"`
	} `json:"data"`
	Warnings []string `json:"warnings"`
}

// readStaticCreds reads mount/static-creds/name with token ("" = root).
func (v *Vault) readStaticCreds(t *testing.T, name, token string) staticCreds {
	t.Helper()
	out, errOut, err := v.Run(t, Run{Token: token}, "read", "-format=json", "tooken/static-creds/"+name)
	if err != nil {
		t.Fatalf("%s: vault read tooken/static-creds/%s: %v\n%s", v.Name, name, err, errOut)
	}
	var c staticCreds
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("decoding static-creds: %v", err)
	}
	return c
}

// staticRole reads tooken/static-roles/name.
func (v *Vault) staticRole(t *testing.T, name string) map[string]any {
	t.Helper()
	var s struct {
		Data map[string]any `json:"data"`
	}
	v.MustRunJSON(t, &s, "read", "-format=json", "tooken/static-roles/"+name)
	return s.Data
}

// appTokenFor writes a policy that reads static-creds/name only, and returns a Vault token with it.
func (v *Vault) appTokenFor(t *testing.T, name string) string {
	t.Helper()
	policy := fmt.Sprintf("path \"tooken/static-creds/%s\" {\n  capabilities = [\"read\"]\n}\n", name)
	if out, errOut, err := v.Run(t, Run{Stdin: policy}, "policy", "write", name, "-"); err != nil {
		t.Fatalf("vault policy write: %v\n%s%s", err, out, errOut)
	}
	return strings.TrimSpace(v.MustRun(t, "token", "create", "-policy="+name, "-field=token"))
}

// TestStaticRolesCLI: import an existing token (rotated at once), read it as an app with a
// read-only policy, rotate it on demand with zero downtime, import another without rotation
// (its secret on stdin), refuse bad input, delete; no secret in Vault's or the audit log.
func TestStaticRolesCLI(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	audit := v.EnableFileAudit(t)
	prod := createToken(t, e, "api-server-prod", "deployments:write")

	out := v.MustRun(t, "write", "tooken/static-roles/api-server-prod", "token_id="+prod.ID, "rotation_period=24h", "rotation_grace=20s")
	if !strings.Contains(out, "next_rotation") || strings.Contains(out, "tok_") {
		t.Fatalf("create answer: %s", out)
	}
	app := v.appTokenFor(t, "api-server-prod")
	c := v.readStaticCreds(t, "api-server-prod", app)
	if c.LeaseID != "" || c.LeaseDuration != 0 || c.Data.TokenID != prod.ID || c.Data.Name != "api-server-prod" ||
		c.Data.RotationPeriod != 86400 || c.Data.TTL < 86000 || c.Data.TTL > 86400 {
		t.Fatalf("static-creds: %+v", c)
	}
	if c.Data.Token == prod.Secret || e.SelfStatus(t, c.Data.Token) != http.StatusOK {
		t.Fatal("static-creds does not serve a new, working secret after the import")
	}
	for _, args := range [][]string{{"read", "tooken/static-roles/api-server-prod"}, {"write", "-f", "tooken/rotate-role/api-server-prod"}} {
		if _, errOut, err := v.Run(t, Run{Token: app}, args...); err == nil || !strings.Contains(errOut, "permission denied") {
			t.Fatalf("the app's token may %v: %v %s", args, err, errOut)
		}
	}
	// The secret from before the import works for the grace, then dies.
	if e.SelfStatus(t, prod.Secret) != http.StatusOK {
		t.Fatal("the secret from before the import died at once")
	}
	eventually(t, time.Minute, "the secret from before the import dies after the grace", func() (bool, string) {
		st := e.SelfStatus(t, prod.Secret)
		return st == http.StatusUnauthorized, fmt.Sprint("status ", st)
	})

	var rot struct {
		Data map[string]any `json:"data"`
	}
	v.MustRunJSON(t, &rot, "write", "-format=json", "-f", "tooken/rotate-role/api-server-prod")
	if rot.Data["token_id"] != prod.ID || rot.Data["previous_secret_expires_at"] == nil {
		t.Fatalf("rotate-role answer: %v", rot.Data)
	}
	c2 := v.readStaticCreds(t, "api-server-prod", app)
	if c2.Data.Token == c.Data.Token || e.SelfStatus(t, c2.Data.Token) != http.StatusOK || e.SelfStatus(t, c.Data.Token) != http.StatusOK {
		t.Fatal("after rotate-role: want a new working secret, and the previous one working for the grace")
	}

	partner := createToken(t, e, "partner-integration", "billing:read")
	rotated := e.Counter(t, "rotated")
	if out, errOut, err := v.Run(t, Run{Stdin: partner.Secret + "\n"}, "write", "tooken/static-roles/partner",
		"token_id="+partner.ID, "rotation_schedule=0 3 * * *", "skip_import_rotation=true", "token=-"); err != nil {
		t.Fatalf("import without rotation: %v\n%s%s", err, out, errOut)
	}
	if got := v.readStaticCreds(t, "partner", "").Data.Token; got != partner.Secret || e.Counter(t, "rotated") != rotated {
		t.Fatal("an import without rotation does not serve the given secret, or rotated")
	}
	if keys := v.MustRun(t, "list", "tooken/static-roles"); !strings.Contains(keys, "api-server-prod") || !strings.Contains(keys, "partner") {
		t.Fatalf("list: %s", keys)
	}
	_, errOut, err := v.Run(t, Run{}, "write", "tooken/static-roles/nope", "token_id=tkn_000000000000000000000000", "rotation_period=1h")
	if err == nil || !strings.Contains(errOut, "token_id: Tooken has no token") {
		t.Fatalf("import of an unknown token: %v %s", err, errOut)
	}
	out, errOut, err = v.Run(t, Run{}, "delete", "tooken/static-roles/partner")
	if err != nil || !strings.Contains(out+errOut, "Vault no longer manages token "+partner.ID) {
		t.Fatalf("delete: %v %s%s", err, out, errOut)
	}
	if e.SelfStatus(t, partner.Secret) != http.StatusOK {
		t.Fatal("deleting the static role killed its token")
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath, audit}, []string{e.RootSecret, prod.Secret, c.Data.Token, c2.Data.Token, partner.Secret})
}

// TestStaticRolesRecover: three roles with rotation_grace 0 (a rotation kills the old secret at
// once, so only the root-authenticated replay can recover one): a rotation whose every answer is
// lost, a rotation during which the plugin is killed (SIGKILL), and a rotation made at Tooken
// behind Vault's back. Each ends with the rotations it made exactly once upstream and a
// static-creds secret that works: the WAL rollback (or the next check) replays the first two,
// the periodic check repairs the third within 5 minutes.
func TestStaticRolesRecover(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	toks := map[string]apiToken{}
	for _, name := range []string{"lost", "killed", "oob"} {
		toks[name] = createToken(t, e, name, "deployments:write")
		v.MustRun(t, "write", "tooken/static-roles/"+name, "token_id="+toks[name].ID, "rotation_period=720h", "rotation_grace=0")
	}
	before := map[string]string{}
	for name := range toks {
		before[name] = v.readStaticCreds(t, name, "").Data.Token
	}

	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + toks["lost"].ID + "/rotate", Drop: true})
	if _, errOut, err := v.Run(t, Run{}, "write", "-f", "tooken/rotate-role/lost"); err == nil || !strings.Contains(errOut, "outcome unknown") {
		t.Fatalf("rotate-role with every answer lost: %v %s", err, errOut)
	}
	e.ClearFaults(t)
	killedOK := killDuringRotation(t, e, v, "killed", toks["killed"].ID)

	if st := tookenAPI(t, e, http.MethodPost, "/tokens/"+toks["oob"].ID+"/rotate", map[string]any{"previous_secret_ttl": 0}, nil); st != http.StatusOK {
		t.Fatalf("the rotation behind Vault's back: status %d", st)
	}
	if e.SelfStatus(t, before["oob"]) != http.StatusUnauthorized {
		t.Fatal("the rotation behind Vault's back left the secret Vault holds alive")
	}
	start := time.Now()
	eventually(t, 6*time.Minute, "every role serves a working secret again", func() (bool, string) {
		var bad []string
		for name := range toks {
			c := v.readStaticCreds(t, name, "")
			if c.Data.Token == before[name] || e.SelfStatus(t, c.Data.Token) != http.StatusOK {
				bad = append(bad, name)
			}
		}
		return len(bad) == 0, fmt.Sprint("not yet: ", bad)
	})
	t.Logf("all three settled %s after the faults", time.Since(start).Round(time.Second))
	want := map[string]int{"lost": 2, "killed": 2, "oob": 3} // the import's rotation included
	if killedOK {
		want["killed"] = 3 // Vault retried the request: the retry finished the killed rotation, then rotated
	}
	for name, n := range want {
		if got := rotationsOf(t, e, toks[name].ID); got != n {
			t.Errorf("%s: %d rotations upstream, want %d", name, got, n)
		}
	}
	for _, name := range []string{"lost", "killed"} {
		if msg := v.staticRole(t, name)["last_rotation_error"]; msg != "" {
			t.Errorf("%s: last_rotation_error %q after the recovery", name, msg)
		}
	}
	if msg, _ := v.staticRole(t, "oob")["last_rotation_error"].(string); !strings.Contains(msg, "out-of-band change") {
		t.Errorf("oob: last_rotation_error %q, want the out-of-band change", msg)
	}
	if !strings.Contains(tail(v.LogPath, 500000), `finished an interrupted static role "lost" rotation`) {
		t.Error("the recovery of the lost answer is not in Vault's log")
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, append([]string{e.RootSecret}, before["lost"], before["killed"], before["oob"]))
}

// killDuringRotation kills the plugin (SIGKILL) while Tooken carries out a rotate-role of name
// (it answers slowly): the rotation happens upstream, its answer has nobody to reach. It tells
// whether the rotate-role call succeeded after all (Vault retried it on a new plugin process).
func killDuringRotation(t *testing.T, e *Emulator, v *Vault, name, id string) bool {
	t.Helper()
	faults := e.Counter(t, "faults")
	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Latency: 3 * time.Second, Count: 1})
	done := make(chan error, 1)
	go func() {
		_, _, err := v.Run(t, Run{}, "write", "-f", "tooken/rotate-role/"+name)
		done <- err
	}()
	eventually(t, 30*time.Second, "the rotate request reaches Tooken", func() (bool, string) {
		n := e.Counter(t, "faults")
		return n > faults, fmt.Sprintf("%d faulted requests", n)
	})
	t.Logf("killed plugin pids %v during the rotation of %s", v.KillPlugin(t), name)
	err := <-done
	t.Logf("rotate-role %s after the kill: %v", name, err)
	return err == nil
}

// TestStaticRolesAgent: with rotation_period=1m, Vault Agent re-renders a template of
// static-creds right after each scheduled rotation (before the previous secret's grace ends),
// and Agent's process supervisor (env_template + exec) restarts a child with each new secret:
// the child, calling Tooken all along, never gets a 401.
func TestStaticRolesAgent(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	web := createToken(t, e, "web", "deployments:write")
	const grace = 2 * time.Minute
	v.MustRun(t, "write", "tooken/static-roles/web", "token_id="+web.ID, "rotation_period=1m", fmt.Sprintf("rotation_grace=%ds", int(grace/time.Second)))
	app := v.appTokenFor(t, "web")
	tmpl := `{{ with secret "tooken/static-creds/web" }}{{ .Data.token }}{{ end }}`
	a := v.StartAgent(t, AgentOptions{Token: app, Templates: map[string]string{"web.token": tmpl}})
	child := goBuild(t, "./tookenapp", "tookenapp", "")
	status := filepath.Join(t.TempDir(), "status")
	x := v.StartAgent(t, AgentOptions{Token: app, Extra: fmt.Sprintf(`env_template "TOOKEN_TOKEN" {
  contents = %q
}
exec {
  command                   = [%q, "-url", %q, "-out", %q]
  restart_on_secret_changes = "always"
  restart_stop_signal       = "SIGTERM"
}
`, tmpl, child, e.URL, status)})

	isToken := func(s string) bool { return strings.HasPrefix(s, "tok_") }
	prev := a.WaitFile(t, "web.token", 30*time.Second, "agent renders the static secret", isToken)
	rendered := []string{prev}
	for i := range 2 {
		next := a.WaitFile(t, "web.token", 3*time.Minute, "agent re-renders after a scheduled rotation",
			func(s string) bool { return isToken(s) && s != prev })
		st, err := os.Stat(a.File("web.token"))
		if err != nil {
			t.Fatal(err)
		}
		role := v.staticRole(t, "web")
		last, err := time.Parse(time.RFC3339, fmt.Sprint(role["last_rotated"]))
		if err != nil {
			t.Fatalf("last_rotated %v: %v", role["last_rotated"], err)
		}
		delay := st.ModTime().Sub(last)
		t.Logf("rotation %d: agent re-rendered %s after it", i+1, delay.Round(100*time.Millisecond))
		if delay > grace-10*time.Second {
			t.Errorf("agent re-rendered %s after the rotation: too close to the end of the %s grace", delay, grace)
		}
		if e.SelfStatus(t, next) != http.StatusOK {
			t.Fatal("the re-rendered secret does not work")
		}
		prev = next
		rendered = append(rendered, next)
	}
	// The supervised child: started with each secret, never a 401.
	eventually(t, 2*time.Minute, "the child ran with three secrets", func() (bool, string) {
		ok, _ := childCalls(t, status)
		return len(ok) >= 3, fmt.Sprintf("%d secrets with successful calls", len(ok))
	})
	x.Stop()
	ok, failed := childCalls(t, status)
	t.Logf("child calls: %v successful by secret, failures %v", ok, failed)
	if len(failed) > 0 {
		t.Fatalf("the child got failures: %v", failed)
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath, a.LogPath, x.LogPath, status}, append(rendered, e.RootSecret, web.Secret))
}

// childCalls reads tookenapp's status file: successful calls by secret fingerprint, and every
// line whose status was not 200 (0: no answer).
func childCalls(t *testing.T, path string) (ok map[string]int, failed []string) {
	t.Helper()
	ok = map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return ok, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue // a line being written
		}
		if fields[2] == "200" {
			ok[fields[1]]++
		} else {
			failed = append(failed, sc.Text())
		}
	}
	return ok, failed
}

// TestStaticRolesHA: a 3-node raft cluster. static-creds works through every standby; the
// scheduled rotations (rotation_period=1m) run on the active node only, once each; after the
// active node is killed, the new active one rotates, and the standbys serve its secret.
func TestStaticRolesHA(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	c := startHACluster(t, 3)
	active := c.nodes[0]
	sb := c.standbys(active)
	active.RegisterPlugin(t)
	active.EnableTooken(t, "tooken")
	sb[0].ConfigureTooken(t, "tooken", e)
	web := createToken(t, e, "web", "deployments:write")
	sb[1].MustRun(t, "write", "tooken/static-roles/web", "token_id="+web.ID, "rotation_period=1m", "rotation_grace=3m")
	working := func(n *Vault) string {
		s := n.readStaticCreds(t, "web", "")
		if e.SelfStatus(t, s.Data.Token) != http.StatusOK {
			t.Fatalf("%s: static-creds serves a secret that does not work", n.Name)
		}
		return s.Data.Token
	}
	first := working(sb[0])
	eventually(t, 4*time.Minute, "a scheduled rotation", func() (bool, string) {
		n := scheduledRotations(c)
		return n[active.Name] >= 1, fmt.Sprint(n)
	})
	if s := working(sb[1]); s == first {
		t.Fatal("the standby serves the secret from before the rotation")
	}
	onActive := scheduledRotations(c)
	for _, n := range sb {
		if onActive[n.Name] != 0 {
			t.Fatalf("standby %s rotated: %v", n.Name, onActive)
		}
	}

	active.Kill(t)
	newActive := c.waitReady(t, 120*time.Second)
	before := rotationsOf(t, e, web.ID)
	eventually(t, 4*time.Minute, "a scheduled rotation on the new active node", func() (bool, string) {
		n := scheduledRotations(c)
		return n[newActive.Name] >= 1, fmt.Sprint(n)
	})
	rest := c.standbys(newActive)[0]
	if s := working(rest); e.TokenIDOf(t, s) != web.ID {
		t.Fatal("the standby serves a secret of another token")
	}
	logged := 0
	for _, n := range scheduledRotations(c) {
		logged += n
	}
	// The import and each scheduled rotation, each exactly once upstream.
	if up := rotationsOf(t, e, web.ID); up != logged+1 {
		t.Errorf("%d rotations upstream, %d scheduled ones logged by the nodes (+1 import)", up, logged)
	}
	t.Logf("rotations: %d upstream (%d after the failover), by node %v", rotationsOf(t, e, web.ID), rotationsOf(t, e, web.ID)-before, scheduledRotations(c))
}

// scheduledRotations counts, by node, the scheduled static rotations of role "web" in its log.
func scheduledRotations(c *haCluster) map[string]int {
	out := map[string]int{}
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.LogPath)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `rotated the static role "web" token`) && strings.Contains(line, "trigger=scheduled") {
				out[n.Name]++
			}
		}
	}
	return out
}
