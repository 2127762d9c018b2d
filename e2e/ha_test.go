package e2e

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// The plugin on a 3-node integrated-storage (raft) Vault cluster, as an HA deployment runs it.
// Every node is a Vault of the harness (newVault with raft storage): its own free ports, folder
// and process group, and the CLI helpers (Run, MustRun, ReadCreds, WriteRole, ConfigureTooken...)
// pointed at that node.

// haCluster is a raft cluster of Vault servers; nodes[0] is the one initialised first.
type haCluster struct {
	nodes []*Vault
}

// startHACluster starts n raft nodes with the plugin in each node's plugin_directory,
// initialises the first one (Shamir 1 of 1), joins the others with `vault operator raft join`,
// unseals them all and waits until every node is a voter and every standby forwards.
func startHACluster(t *testing.T, n int) *haCluster {
	t.Helper()
	c := &haCluster{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("node%d", i)
		v := newVault(t, VaultOptions{Name: name, Storage: raftStorage(name)}, false)
		// A failover must show as errors, not be hidden by the client's retries.
		v.Client.SetMaxRetries(0)
		c.nodes = append(c.nodes, v)
	}
	for _, v := range c.nodes {
		v.spawn(t)
	}
	for _, v := range c.nodes {
		v.waitUp(t)
	}

	leader := c.nodes[0]
	leader.Init(t)
	leader.Unseal(t)
	leader.WaitActive(t, 60*time.Second)
	for _, v := range c.nodes[1:] {
		v.AdoptKeys(leader)
		if out, errOut, err := v.Run(t, Run{Token: "-"}, "operator", "raft", "join", leader.Addr); err != nil {
			t.Fatalf("%s: vault operator raft join: %v\n%s%s", v.Name, err, out, errOut)
		}
		v.Unseal(t)
	}
	c.waitVoters(t, leader)
	if a := c.waitReady(t, 60*time.Second); a != leader {
		t.Fatalf("active node is %s, want %s", a.Name, leader.Name)
	}
	return c
}

// waitVoters waits until every node is a raft voter: autopilot adds joined nodes as non-voters
// and promotes them later, and a failover needs them to vote.
func (c *haCluster) waitVoters(t *testing.T, leader *Vault) {
	t.Helper()
	eventually(t, 90*time.Second, "every node is a raft voter", func() (bool, string) {
		var peers struct {
			Data struct {
				Config struct {
					Servers []struct {
						NodeID string `json:"node_id"`
						Voter  bool   `json:"voter"`
					} `json:"servers"`
				} `json:"config"`
			} `json:"data"`
		}
		out, errOut, err := leader.Run(t, Run{}, "operator", "raft", "list-peers", "-format=json")
		if err != nil {
			return false, errOut
		}
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			return false, err.Error()
		}
		voters := 0
		for _, s := range peers.Data.Config.Servers {
			if s.Voter {
				voters++
			}
		}
		return voters == len(c.nodes), out
	})
}

// waitReady waits until exactly one running node is active and every running node names it as
// leader and serves a forwarded, authenticated request (a rejoining standby answers "active
// cluster node not found" for a few seconds). It returns the active node.
func (c *haCluster) waitReady(t *testing.T, timeout time.Duration) *Vault {
	t.Helper()
	var active *Vault
	eventually(t, timeout, "one active node, every standby forwarding to it", func() (bool, string) {
		var detail string
		active, detail = c.activeNode()
		if active == nil {
			return false, detail
		}
		for _, n := range c.nodes {
			if !n.Running() {
				continue
			}
			l, err := n.Client.Sys().Leader()
			if err != nil {
				return false, n.Name + ": sys/leader: " + err.Error()
			}
			if l.LeaderAddress != active.Addr {
				return false, fmt.Sprintf("%s: leader %q, want %s", n.Name, l.LeaderAddress, active.Addr)
			}
			if _, err := n.Client.Sys().ListMounts(); err != nil {
				return false, n.Name + ": sys/mounts: " + err.Error()
			}
		}
		return true, ""
	})
	return active
}

// activeNode returns the one running node that is unsealed and active, or nil and why not.
func (c *haCluster) activeNode() (*Vault, string) {
	var active *Vault
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		h, err := n.Client.Sys().Health()
		if err != nil {
			return nil, n.Name + ": " + err.Error()
		}
		if h.Sealed || !h.Initialized {
			return nil, fmt.Sprintf("%s: %+v", n.Name, h)
		}
		if !h.Standby {
			if active != nil {
				return nil, "two active nodes: " + active.Name + ", " + n.Name
			}
			active = n
		}
	}
	if active == nil {
		return nil, "no active node"
	}
	return active, ""
}

// standbys are the running nodes other than active.
func (c *haCluster) standbys(active *Vault) []*Vault {
	var out []*Vault
	for _, n := range c.nodes {
		if n != active && n.Running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *haCluster) logs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.LogPath)
	}
	return out
}

// haRead reads a path through a node's API client.
func haRead(t *testing.T, n *Vault, path string) map[string]any {
	t.Helper()
	s, err := n.Client.Logical().Read(path)
	if err != nil || s == nil {
		t.Fatalf("%s: read %s: %v (nil answer: %v)", n.Name, path, err, s == nil)
	}
	return s.Data
}

// haCreds reads creds through node n and checks that exactly one token appeared upstream, that
// it is the one returned, made by the root token, and that its secret works.
func haCreds(t *testing.T, e *Emulator, n *Vault, role, rootID string) Creds {
	t.Helper()
	before := e.Tokens(t)
	c := n.ReadCreds(t, "tooken", role, "")
	after := e.Tokens(t)
	if len(after) != len(before)+1 {
		t.Fatalf("%s: one creds read made %d tokens upstream, want 1", n.Name, len(after)-len(before))
	}
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.State != "live" || tok.CreatedBy != rootID || tok.Metadata["vault_role"] != role {
		t.Fatalf("%s: upstream token of the creds = %+v (found %v), want live, made by root %s", n.Name, tok, ok, rootID)
	}
	if st := e.SelfStatus(t, c.Data.Token); st != 200 {
		t.Fatalf("%s: issued secret: GET /v1/tokens/self = %d, want 200", n.Name, st)
	}
	return c
}

// haRenew renews a lease through node n and returns the granted duration.
func haRenew(t *testing.T, n *Vault, leaseID string) time.Duration {
	t.Helper()
	var s struct {
		LeaseID       string `json:"lease_id"`
		LeaseDuration int    `json:"lease_duration"`
	}
	n.MustRunJSON(t, &s, "lease", "renew", "-format=json", "-increment=30m", leaseID)
	if s.LeaseID != leaseID || s.LeaseDuration <= 0 {
		t.Fatalf("%s: lease renew answered %+v", n.Name, s)
	}
	return time.Duration(s.LeaseDuration) * time.Second
}

// haRevoke revokes a lease through node n and waits until the token is dead upstream.
// haRefusedByLimit reads creds of role on n and expects max_live_tokens to refuse it (429 naming
// the role and the limit) with nothing created upstream.
func haRefusedByLimit(t *testing.T, e *Emulator, n *Vault, role string, limit int) {
	t.Helper()
	created := e.Counter(t, "created")
	c, err := n.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(n.RootToken)
	c.SetMaxRetries(0)
	if _, err := c.Logical().Read("tooken/creds/" + role); !refusedByLimit(err, role, limit) {
		t.Fatalf("%s: creds/%s with %d tokens live: %v, want 429 max_live_tokens", n.Name, role, limit, err)
	}
	if d := e.Counter(t, "created") - created; d != 0 {
		t.Fatalf("%s: a refused creds read created %d tokens upstream", n.Name, d)
	}
}

func haRevoke(t *testing.T, e *Emulator, n *Vault, c Creds) {
	t.Helper()
	n.MustRun(t, "lease", "revoke", c.LeaseID)
	eventually(t, 30*time.Second, n.Name+": token "+c.Data.TokenID+" revoked upstream", func() (bool, string) {
		tok, _ := e.Token(t, c.Data.TokenID)
		return tok.State == "revoked", "state " + tok.State
	})
	if e.SecretValid(t, c.Data.Token) {
		t.Fatalf("%s: /admin/auth still accepts the secret of the revoked lease", n.Name)
	}
	if st := e.SelfStatus(t, c.Data.Token); st != 401 {
		t.Fatalf("%s: revoked secret: GET /v1/tokens/self = %d, want 401", n.Name, st)
	}
}

// haCheckPlugins checks that the plugin runs on the active node only: a standby forwards every
// request and starts no plugin process (each node has its own copy of the binary).
func haCheckPlugins(t *testing.T, c *haCluster, active *Vault) {
	t.Helper()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		pids := n.PluginPIDs()
		if n == active && len(pids) == 0 {
			t.Errorf("%s (active) runs no plugin process", n.Name)
		}
		if n != active && len(pids) != 0 {
			t.Errorf("%s (standby) runs plugin processes %v", n.Name, pids)
		}
	}
}

// haCheckState checks config and role as read through every running node.
func haCheckState(t *testing.T, c *haCluster, e *Emulator, lastRotated any) {
	t.Helper()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		cfg := haRead(t, n, "tooken/config")
		if cfg["url"] != e.URL || fmt.Sprint(cfg["rotation_grace"]) != "165" || fmt.Sprint(cfg["last_rotated"]) != fmt.Sprint(lastRotated) {
			t.Errorf("%s: config url=%v rotation_grace=%v last_rotated=%v, want %s, 165, %v",
				n.Name, cfg["url"], cfg["rotation_grace"], cfg["last_rotated"], e.URL, lastRotated)
		}
		role := haRead(t, n, "tooken/roles/ha")
		if fmt.Sprint(role["scopes"]) != "[deployments:write]" {
			t.Errorf("%s: role ha scopes = %v", n.Name, role["scopes"])
		}
		s, err := n.Client.Logical().List("tooken/roles")
		if err != nil || s == nil || fmt.Sprint(s.Data["keys"]) != "[capped ha]" {
			t.Errorf("%s: list tooken/roles = %v, %v", n.Name, s, err)
		}
	}
}

// TestHACluster: on a 3-node raft cluster, creds, config and role writes and rotate-root sent to
// standbys are forwarded (one upstream token per creds read); after the active node stops, a
// standby takes over and renews and revokes the leases issued before, issues new creds with the
// rotated root secret, and keeps config and roles; the stopped node rejoins and serves creds.
func TestHACluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := startEmulator(t, EmulatorOptions{})
	c := startHACluster(t, 3)
	t.Logf("cluster of 3 ready in %s", time.Since(start).Round(100*time.Millisecond))
	active := c.nodes[0]
	sb := c.standbys(active)
	rootID := e.RootTokenID(t)
	oldRoot := e.RootSecret
	secrets := []string{oldRoot}
	defer func() { assertNoSecrets(t, append(c.logs(), e.LogPath), secrets) }()

	// Register once through the active node (each node has the binary in its plugin_directory);
	// mount; config and role writes through the standbys.
	active.RegisterPlugin(t)
	active.EnableTooken(t, "tooken")
	sb[0].ConfigureTooken(t, "tooken", e)
	// The shortest grace accepted with these call limits (request_timeout=5s, max_retries=1).
	if out, errOut, err := sb[1].Run(t, Run{}, "write", "tooken/config", "request_timeout=5s", "max_retries=1", "rotation_grace=2m45s"); err != nil {
		t.Fatalf("%s: vault write tooken/config rotation_grace=2m45s: %v\n%s%s", sb[1].Name, err, out, errOut)
	}
	sb[1].WriteRole(t, "tooken", "ha", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	sb[1].WriteRole(t, "tooken", "capped", "scopes=deployments:write", "ttl=10m", "max_ttl=1h", "max_live_tokens=2")
	haCheckState(t, c, e, nil)
	for _, n := range c.nodes {
		var mounts map[string]map[string]any
		n.MustRunJSON(t, &mounts, "secrets", "list", "-detailed", "-format=json")
		if m := mounts["tooken/"]; m == nil || m["running_plugin_version"] != n.Bins.PluginVersion {
			t.Errorf("%s: tooken/ mount = %v, want running version %s", n.Name, m, n.Bins.PluginVersion)
		}
	}

	// Creds through the standbys: forwarded, one upstream token per read.
	var before []Creds
	createdBefore := e.Counter(t, "created")
	for _, n := range []*Vault{sb[0], sb[1], sb[0], sb[1]} {
		cr := haCreds(t, e, n, "ha", rootID)
		secrets = append(secrets, cr.Data.Token)
		before = append(before, cr)
	}
	if d := e.Counter(t, "created") - createdBefore; d != int64(len(before)) {
		t.Errorf("counter created grew by %d for %d creds reads", d, len(before))
	}
	haCheckPlugins(t, c, active)

	// max_live_tokens holds through the standbys (forwarded reads all count on the active node).
	capped := []Creds{haCreds(t, e, sb[0], "capped", rootID), haCreds(t, e, sb[1], "capped", rootID)}
	for _, cr := range capped {
		secrets = append(secrets, cr.Data.Token)
	}
	haRefusedByLimit(t, e, sb[0], "capped", 2)

	// rotate-root through a standby: forwarded; the old root secret dies after the grace and
	// every node keeps issuing creds.
	var rot struct {
		Data map[string]any `json:"data"`
	}
	rotStart := time.Now()
	raw := sb[1].MustRun(t, "write", "-format=json", "-f", "tooken/rotate-root")
	if err := json.Unmarshal([]byte(raw), &rot); err != nil || rot.Data["token_id"] != rootID {
		t.Fatalf("%s: rotate-root answer: %v (token_id %v, want %s)", sb[1].Name, err, rot.Data["token_id"], rootID)
	}
	if e.Counter(t, "rotated") != 1 {
		t.Fatalf("rotations upstream: %d, want 1", e.Counter(t, "rotated"))
	}
	lastRotated := haRead(t, active, "tooken/config")["last_rotated"]
	if lastRotated == nil {
		t.Fatal("config has no last_rotated after rotate-root")
	}
	if !e.SecretValid(t, oldRoot) {
		t.Fatal("the old root secret died at once: no grace")
	}
	for _, n := range c.nodes {
		secrets = append(secrets, haCreds(t, e, n, "ha", rootID).Data.Token)
	}
	haCheckState(t, c, e, lastRotated)

	// Failover: SIGTERM the active node; a standby takes over.
	t.Logf("stopping the active node %s", active.Name)
	stopAt := time.Now()
	active.Stop(t)
	newActive := c.waitReady(t, 120*time.Second)
	t.Logf("failover: %s active, standbys forwarding, %s after SIGTERM", newActive.Name, time.Since(stopAt).Round(100*time.Millisecond))
	rest := c.standbys(newActive)[0]

	// Leases issued before the failover: renewed and revoked through the new active node (and
	// through the remaining standby).
	for i, cr := range before {
		n := newActive
		if i%2 == 1 {
			n = rest
		}
		if d := haRenew(t, n, cr.LeaseID); d > 30*time.Minute {
			t.Errorf("%s: renew granted %s, asked 30m", n.Name, d)
		}
	}
	haRevoke(t, e, newActive, before[0])
	haRevoke(t, e, rest, before[1])
	// New creds work (with the rotated root secret), config and roles survive.
	for _, n := range []*Vault{newActive, rest} {
		secrets = append(secrets, haCreds(t, e, n, "ha", rootID).Data.Token)
	}
	haCheckState(t, c, e, lastRotated)
	haCheckPlugins(t, c, newActive)
	// The new active node counts the capped role's live tokens from storage: still full, and a
	// revoke frees a slot.
	haRefusedByLimit(t, e, rest, "capped", 2)
	haRevoke(t, e, rest, capped[0])
	capped[0] = haCreds(t, e, rest, "capped", rootID)
	secrets = append(secrets, capped[0].Data.Token)
	haRefusedByLimit(t, e, newActive, "capped", 2)
	for _, cr := range capped {
		haRevoke(t, e, newActive, cr)
	}

	// The stopped node comes back: it rejoins as a standby and serves creds.
	rejoin := time.Now()
	active.Start(t)
	active.Unseal(t)
	if a := c.waitReady(t, 120*time.Second); a != newActive {
		t.Fatalf("after %s rejoined the active node is %s, want %s", active.Name, a.Name, newActive.Name)
	}
	t.Logf("%s rejoined and forwards %s after its restart", active.Name, time.Since(rejoin).Round(100*time.Millisecond))
	// Once the grace is over the old root secret is dead, and creds keep coming (with the rotated one).
	eventually(t, max(3*time.Minute+30*time.Second-time.Since(rotStart), time.Second), "the old root secret dies after the 2m45s grace", func() (bool, string) {
		return !e.SecretValid(t, oldRoot), "still valid"
	})
	t.Logf("old root secret dead %s after rotate-root", time.Since(rotStart).Round(100*time.Millisecond))
	secrets = append(secrets, haCreds(t, e, active, "ha", rootID).Data.Token)
	haRenew(t, active, before[2].LeaseID)
	haRevoke(t, e, active, before[2])
	haCheckState(t, c, e, lastRotated)

	// Exactly one upstream token per creds read, and no leftover: live = root + unrevoked leases.
	reads := len(before) + len(c.nodes) + 2 + 1 + 3 // the capped role's 3 reads are revoked
	if d := e.Counter(t, "created") - createdBefore; d != int64(reads) {
		t.Errorf("counter created grew by %d for %d creds reads", d, reads)
	}
	if live, want := len(e.LiveTokens(t)), 1+reads-3-3; live != want {
		t.Errorf("live tokens upstream: %d, want %d (root + leases not revoked)", live, want)
	}
	t.Logf("TestHACluster took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestHAClusterCrashDuringCreds: the active node is killed (SIGKILL, no leadership transfer)
// while creds reads sent to the standbys are in flight (Tooken answers slowly, and still creates
// the tokens of the requests that died). A standby takes over and its periodic rollback kills
// the orphans the dead node left (its pending issuance records are in raft storage): the live
// upstream tokens of the mount end equal to the live leases, and every lease still revokes.
func TestHAClusterCrashDuringCreds(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := startEmulator(t, EmulatorOptions{})
	c := startHACluster(t, 3)
	active := c.nodes[0]
	sb := c.standbys(active)
	active.RegisterPlugin(t)
	active.EnableTooken(t, "tooken")
	sb[0].ConfigureTooken(t, "tooken", e)
	sb[0].MustRun(t, "write", "tooken/config", "rollback_min_age=5s")
	sb[1].WriteRole(t, "tooken", "ci", "scopes=deployments:write", "ttl=30m", "max_ttl=1h")
	first := haCreds(t, e, sb[0], "ci", e.RootTokenID(t))
	mount := mountIDOf(t, e, first)

	e.AddFault(t, tookentest.Fault{Method: "POST", Path: "/v1/tokens", Latency: 1500 * time.Millisecond})
	var ok, failed atomic.Int64
	l := startLoad(4, func(w int) bool {
		s, err := sb[w%2].Client.Logical().Read("tooken/creds/ci")
		if err != nil || s == nil || s.LeaseID == "" {
			failed.Add(1)
		} else {
			ok.Add(1)
		}
		if err != nil {
			time.Sleep(200 * time.Millisecond) // do not spin on a node that is failing over
		}
		return true
	})
	eventually(t, 60*time.Second, "a couple of slow creates done, four in flight", func() (bool, string) {
		n := e.InFlight(t)
		return ok.Load() >= 2 && n >= 4, fmt.Sprintf("%d creds reads done, %d requests in flight upstream", ok.Load(), n)
	})
	kill := time.Now()
	active.Kill(t)
	newActive := c.waitReady(t, 120*time.Second)
	t.Logf("SIGKILL of %s: %s active, standbys forwarding, %s later", active.Name, newActive.Name, time.Since(kill).Round(100*time.Millisecond))
	// Creds through the new active while it starts its plugin.
	okAtFailover := ok.Load()
	eventually(t, 60*time.Second, "a creds read succeeds after the failover", func() (bool, string) {
		return ok.Load() > okAtFailover, fmt.Sprintf("%d ok, %d failed", ok.Load(), failed.Load())
	})
	l.Stop()
	e.ClearFaults(t)
	e.WaitIdle(t, 30*time.Second) // the slow creates of the requests that died end upstream

	leases, live := len(newActive.LeaseIDs(t, "tooken/creds/ci")), len(e.LiveOfMount(t, mount))
	t.Logf("creds: %d ok, %d failed; %d live upstream tokens of the mount, %d live leases", ok.Load(), failed.Load(), live, leases)
	if int(ok.Load())+1 > leases {
		t.Errorf("%d creds reads succeeded but only %d leases exist", ok.Load()+1, leases)
	}
	if live <= leases {
		t.Logf("the kill left no token without a lease (%d live, %d leases)", live, leases)
	}
	roll := time.Now()
	eventually(t, 3*time.Minute, "live upstream tokens of the mount = live leases", func() (bool, string) {
		up, ls := len(e.LiveOfMount(t, mount)), len(newActive.LeaseIDs(t, "tooken/creds/ci"))
		return up == ls, fmt.Sprintf("%d live upstream tokens, %d live leases", up, ls)
	})
	t.Logf("orphans rolled back by %s %s after the check (%d killed)", newActive.Name, time.Since(roll).Round(time.Second), live-leases)

	// Every lease, issued before or after the crash, still revokes its token (through a standby).
	rest := c.standbys(newActive)[0]
	rest.MustRun(t, "lease", "revoke", "-prefix", "tooken/creds/ci")
	eventually(t, 60*time.Second, "no live upstream token of the mount", func() (bool, string) {
		n := len(e.LiveOfMount(t, mount))
		return n == 0, fmt.Sprintf("%d live", n)
	})
	if st := e.SelfStatus(t, first.Data.Token); st != 401 {
		t.Errorf("secret of the first lease after revoke: status %d, want 401", st)
	}
	t.Logf("TestHAClusterCrashDuringCreds took %s", time.Since(start).Round(100*time.Millisecond))
}
