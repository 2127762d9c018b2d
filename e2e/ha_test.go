package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// The plugin on a 3-node integrated-storage (raft) Vault cluster, as an HA deployment runs it.
// Every node has its own free ports, folder and process group; the helpers below (haCluster,
// haNode) live here so that the harness stays as it is.

// haNode is one Vault server of the cluster. v carries the harness's CLI helpers (Run, MustRun,
// ReadCreds, WriteRole, ConfigureTooken...) pointed at this node.
type haNode struct {
	name    string
	v       *Vault
	cfgPath string
	env     []string
	p       *proc
}

type haCluster struct {
	nodes     []*haNode
	unsealKey string
}

// haFreePorts returns n distinct free loopback ports.
func haFreePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n {
		if p := freePort(t, false); !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// startHACluster starts n raft nodes with the plugin in each node's plugin_directory,
// initialises the first one (Shamir 1 of 1), joins the others with `vault operator raft join`,
// unseals them all and waits until every node is a voter and every standby forwards.
func startHACluster(t *testing.T, n int) *haCluster {
	t.Helper()
	bins := requireBinaries(t)
	dir := t.TempDir()
	ports := haFreePorts(t, 2*n)
	c := &haCluster{}
	for i := 0; i < n; i++ {
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
		for _, sub := range []string{"data", "plugins", "home"} {
			if err := os.MkdirAll(filepath.Join(nd, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		pluginDir := filepath.Join(nd, "plugins")
		copyFile(t, bins.Plugin, filepath.Join(pluginDir, pluginName), 0o755)
		apiPort, clusterPort := ports[2*i], ports[2*i+1]
		addr := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
		cfg := serverConfig(fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = \"node%d\"\n}", filepath.Join(nd, "data"), i),
			apiPort, clusterPort, pluginDir, "debug")
		cfgPath := filepath.Join(nd, "vault.hcl")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		acfg := api.DefaultConfig()
		acfg.Address = addr
		acfg.Timeout = 60 * time.Second
		acfg.MaxRetries = 0
		client, err := api.NewClient(acfg)
		if err != nil {
			t.Fatal(err)
		}
		node := &haNode{
			name:    fmt.Sprintf("node%d", i),
			cfgPath: cfgPath,
			env:     cleanEnv(filepath.Join(nd, "home")),
			v: &Vault{Addr: addr, Dir: nd, PluginDir: pluginDir, LogPath: filepath.Join(nd, "vault.log"),
				Client: client, Bins: bins},
		}
		c.nodes = append(c.nodes, node)
		t.Cleanup(node.stop)
	}
	for _, nd := range c.nodes {
		nd.start(t)
	}
	for _, nd := range c.nodes {
		nd.waitAnswers(t)
	}

	leader := c.nodes[0]
	var init struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	out, errOut, err := leader.v.Run(t, Run{Token: "-"}, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	if err != nil {
		t.Fatalf("vault operator init: %v\n%s\n%s", err, errOut, tail(leader.v.LogPath, 3000))
	}
	if err := json.Unmarshal([]byte(out), &init); err != nil || len(init.Keys) != 1 || init.RootToken == "" {
		t.Fatalf("vault operator init answer: %v", err)
	}
	c.unsealKey = init.Keys[0]
	for _, nd := range c.nodes {
		nd.v.RootToken = init.RootToken
		nd.v.Client.SetToken(init.RootToken)
	}
	c.unseal(t, leader)
	eventually(t, 60*time.Second, leader.name+" becomes active", func() (bool, string) {
		h, err := leader.v.Client.Sys().Health()
		if err != nil {
			return false, err.Error()
		}
		return !h.Sealed && !h.Standby, fmt.Sprintf("%+v", h)
	})
	for _, nd := range c.nodes[1:] {
		if out, errOut, err := nd.v.Run(t, Run{Token: "-"}, "operator", "raft", "join", leader.v.Addr); err != nil {
			t.Fatalf("%s: vault operator raft join: %v\n%s%s", nd.name, err, out, errOut)
		}
		c.unseal(t, nd)
	}
	// Autopilot adds joined nodes as non-voters and promotes them later: a failover needs them to vote.
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
		out, errOut, err := leader.v.Run(t, Run{}, "operator", "raft", "list-peers", "-format=json")
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
		return voters == n, out
	})
	if a := c.waitReady(t, 60*time.Second); a != leader {
		t.Fatalf("active node is %s, want %s", a.name, leader.name)
	}
	return c
}

func (n *haNode) start(t *testing.T) {
	t.Helper()
	n.p = startProc(t, "vault "+n.name, n.v.LogPath, n.env, nil, n.v.Bins.Vault, "server", "-config="+n.cfgPath)
}

// stop stops the node gracefully (SIGTERM, then the whole process group).
func (n *haNode) stop() {
	if n.p != nil {
		n.p.stop(15 * time.Second)
	}
}

func (n *haNode) running() bool { return n.p != nil && !n.p.exited() }

func (n *haNode) waitAnswers(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, n.name+" answers sys/health", func() (bool, string) {
		if n.p.exited() {
			t.Fatalf("%s exited at start-up; log:\n%s", n.name, tail(n.v.LogPath, 4000))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := n.v.Client.Sys().HealthWithContext(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

func (c *haCluster) unseal(t *testing.T, n *haNode) {
	t.Helper()
	st, err := n.v.Client.Sys().Unseal(c.unsealKey)
	if err != nil {
		t.Fatalf("%s: vault operator unseal: %v\n%s", n.name, err, tail(n.v.LogPath, 3000))
	}
	if !st.Sealed {
		return
	}
	// A node that just joined finishes its raft join after the key, then unseals.
	eventually(t, 60*time.Second, n.name+" unseals", func() (bool, string) {
		h, err := n.v.Client.Sys().Health()
		if err != nil {
			return false, err.Error()
		}
		return !h.Sealed, fmt.Sprintf("%+v", h)
	})
}

// waitReady waits until exactly one running node is active and every running node names it as
// leader and serves a forwarded, authenticated request (a rejoining standby answers "active
// cluster node not found" for a few seconds). It returns the active node.
func (c *haCluster) waitReady(t *testing.T, timeout time.Duration) *haNode {
	t.Helper()
	var active *haNode
	eventually(t, timeout, "one active node, every standby forwarding to it", func() (bool, string) {
		active = nil
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			h, err := n.v.Client.Sys().Health()
			if err != nil {
				return false, n.name + ": " + err.Error()
			}
			if h.Sealed || !h.Initialized {
				return false, fmt.Sprintf("%s: %+v", n.name, h)
			}
			if !h.Standby {
				if active != nil {
					return false, "two active nodes: " + active.name + ", " + n.name
				}
				active = n
			}
		}
		if active == nil {
			return false, "no active node"
		}
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			l, err := n.v.Client.Sys().Leader()
			if err != nil {
				return false, n.name + ": sys/leader: " + err.Error()
			}
			if l.LeaderAddress != active.v.Addr {
				return false, fmt.Sprintf("%s: leader %q, want %s", n.name, l.LeaderAddress, active.v.Addr)
			}
			if _, err := n.v.Client.Sys().ListMounts(); err != nil {
				return false, n.name + ": sys/mounts: " + err.Error()
			}
		}
		return true, ""
	})
	return active
}

// standbys are the running nodes other than active.
func (c *haCluster) standbys(active *haNode) []*haNode {
	var out []*haNode
	for _, n := range c.nodes {
		if n != active && n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *haCluster) logs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.v.LogPath)
	}
	return out
}

// haRead reads a path through a node's API client.
func haRead(t *testing.T, n *haNode, path string) map[string]any {
	t.Helper()
	s, err := n.v.Client.Logical().Read(path)
	if err != nil || s == nil {
		t.Fatalf("%s: read %s: %v (nil answer: %v)", n.name, path, err, s == nil)
	}
	return s.Data
}

// haCreds reads creds through node n and checks that exactly one token appeared upstream, that
// it is the one returned, made by the root token, and that its secret works.
func haCreds(t *testing.T, e *Emulator, n *haNode, role, rootID string) Creds {
	t.Helper()
	before := e.Tokens(t)
	c := n.v.ReadCreds(t, "tooken", role, "")
	after := e.Tokens(t)
	if len(after) != len(before)+1 {
		t.Fatalf("%s: one creds read made %d tokens upstream, want 1", n.name, len(after)-len(before))
	}
	tok, ok := e.Token(t, c.Data.TokenID)
	if !ok || tok.State != "live" || tok.CreatedBy != rootID || tok.Metadata["vault_role"] != role {
		t.Fatalf("%s: upstream token of the creds = %+v (found %v), want live, made by root %s", n.name, tok, ok, rootID)
	}
	if st := e.SelfStatus(t, c.Data.Token); st != 200 {
		t.Fatalf("%s: issued secret: GET /v1/tokens/self = %d, want 200", n.name, st)
	}
	return c
}

// haRenew renews a lease through node n and returns the granted duration.
func haRenew(t *testing.T, n *haNode, leaseID string) time.Duration {
	t.Helper()
	var s struct {
		LeaseID       string `json:"lease_id"`
		LeaseDuration int    `json:"lease_duration"`
	}
	n.v.MustRunJSON(t, &s, "lease", "renew", "-format=json", "-increment=30m", leaseID)
	if s.LeaseID != leaseID || s.LeaseDuration <= 0 {
		t.Fatalf("%s: lease renew answered %+v", n.name, s)
	}
	return time.Duration(s.LeaseDuration) * time.Second
}

// haRevoke revokes a lease through node n and waits until the token is dead upstream.
func haRevoke(t *testing.T, e *Emulator, n *haNode, c Creds) {
	t.Helper()
	n.v.MustRun(t, "lease", "revoke", c.LeaseID)
	eventually(t, 30*time.Second, n.name+": token "+c.Data.TokenID+" revoked upstream", func() (bool, string) {
		tok, _ := e.Token(t, c.Data.TokenID)
		return tok.State == "revoked", "state " + tok.State
	})
	if e.SecretValid(t, c.Data.Token) {
		t.Fatalf("%s: /admin/auth still accepts the secret of the revoked lease", n.name)
	}
	if st := e.SelfStatus(t, c.Data.Token); st != 401 {
		t.Fatalf("%s: revoked secret: GET /v1/tokens/self = %d, want 401", n.name, st)
	}
}

// haCheckPlugins checks that the plugin runs on the active node only: a standby forwards every
// request and starts no plugin process (each node has its own copy of the binary).
func haCheckPlugins(t *testing.T, c *haCluster, active *haNode) {
	t.Helper()
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		pids := n.v.PluginPIDs()
		if n == active && len(pids) == 0 {
			t.Errorf("%s (active) runs no plugin process", n.name)
		}
		if n != active && len(pids) != 0 {
			t.Errorf("%s (standby) runs plugin processes %v", n.name, pids)
		}
	}
}

// haCheckState checks config and role as read through every running node.
func haCheckState(t *testing.T, c *haCluster, e *Emulator, lastRotated any) {
	t.Helper()
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		cfg := haRead(t, n, "tooken/config")
		if cfg["url"] != e.URL || fmt.Sprint(cfg["rotation_grace"]) != "10" || fmt.Sprint(cfg["last_rotated"]) != fmt.Sprint(lastRotated) {
			t.Errorf("%s: config url=%v rotation_grace=%v last_rotated=%v, want %s, 10, %v",
				n.name, cfg["url"], cfg["rotation_grace"], cfg["last_rotated"], e.URL, lastRotated)
		}
		role := haRead(t, n, "tooken/roles/ha")
		if fmt.Sprint(role["scopes"]) != "[deployments:write]" {
			t.Errorf("%s: role ha scopes = %v", n.name, role["scopes"])
		}
		s, err := n.v.Client.Logical().List("tooken/roles")
		if err != nil || s == nil || fmt.Sprint(s.Data["keys"]) != "[ha]" {
			t.Errorf("%s: list tooken/roles = %v, %v", n.name, s, err)
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
	active.v.RegisterPlugin(t)
	active.v.EnableTooken(t, "tooken")
	sb[0].v.ConfigureTooken(t, "tooken", e)
	if out, errOut, err := sb[1].v.Run(t, Run{}, "write", "tooken/config", "rotation_grace=10s"); err != nil {
		t.Fatalf("%s: vault write tooken/config rotation_grace=10s: %v\n%s%s", sb[1].name, err, out, errOut)
	}
	sb[1].v.WriteRole(t, "tooken", "ha", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	haCheckState(t, c, e, nil)
	for _, n := range c.nodes {
		var mounts map[string]map[string]any
		n.v.MustRunJSON(t, &mounts, "secrets", "list", "-detailed", "-format=json")
		if m := mounts["tooken/"]; m == nil || m["running_plugin_version"] != n.v.Bins.PluginVersion {
			t.Errorf("%s: tooken/ mount = %v, want running version %s", n.name, m, n.v.Bins.PluginVersion)
		}
	}

	// Creds through the standbys: forwarded, one upstream token per read.
	var before []Creds
	createdBefore := haCounter(t, e, "created")
	for _, n := range []*haNode{sb[0], sb[1], sb[0], sb[1]} {
		cr := haCreds(t, e, n, "ha", rootID)
		secrets = append(secrets, cr.Data.Token)
		before = append(before, cr)
	}
	if d := haCounter(t, e, "created") - createdBefore; d != int64(len(before)) {
		t.Errorf("counter created grew by %d for %d creds reads", d, len(before))
	}
	haCheckPlugins(t, c, active)

	// rotate-root through a standby: forwarded; the old root secret dies after the 10s grace and
	// every node keeps issuing creds.
	var rot struct {
		Data map[string]any `json:"data"`
	}
	rotStart := time.Now()
	raw := sb[1].v.MustRun(t, "write", "-format=json", "-f", "tooken/rotate-root")
	if err := json.Unmarshal([]byte(raw), &rot); err != nil || rot.Data["token_id"] != rootID {
		t.Fatalf("%s: rotate-root answer: %v (token_id %v, want %s)", sb[1].name, err, rot.Data["token_id"], rootID)
	}
	if haCounter(t, e, "rotated") != 1 {
		t.Fatalf("rotations upstream: %d, want 1", haCounter(t, e, "rotated"))
	}
	lastRotated := haRead(t, active, "tooken/config")["last_rotated"]
	if lastRotated == nil {
		t.Fatal("config has no last_rotated after rotate-root")
	}
	if !e.SecretValid(t, oldRoot) && time.Since(rotStart) < 8*time.Second {
		t.Fatal("the old root secret died at once: no grace")
	}
	eventually(t, 40*time.Second, "the old root secret dies after the 10s grace", func() (bool, string) {
		return !e.SecretValid(t, oldRoot), "still valid"
	})
	t.Logf("old root secret dead %s after rotate-root", time.Since(rotStart).Round(100*time.Millisecond))
	for _, n := range c.nodes {
		secrets = append(secrets, haCreds(t, e, n, "ha", rootID).Data.Token)
	}
	haCheckState(t, c, e, lastRotated)

	// Failover: SIGTERM the active node; a standby takes over.
	t.Logf("stopping the active node %s", active.name)
	stopAt := time.Now()
	active.stop()
	newActive := c.waitReady(t, 120*time.Second)
	t.Logf("failover: %s active, standbys forwarding, %s after SIGTERM", newActive.name, time.Since(stopAt).Round(100*time.Millisecond))
	rest := c.standbys(newActive)[0]

	// Leases issued before the failover: renewed and revoked through the new active node (and
	// through the remaining standby).
	for i, cr := range before {
		n := newActive
		if i%2 == 1 {
			n = rest
		}
		if d := haRenew(t, n, cr.LeaseID); d > 30*time.Minute {
			t.Errorf("%s: renew granted %s, asked 30m", n.name, d)
		}
	}
	haRevoke(t, e, newActive, before[0])
	haRevoke(t, e, rest, before[1])
	// New creds work (with the rotated root secret: the old one is dead), config and roles survive.
	for _, n := range []*haNode{newActive, rest} {
		secrets = append(secrets, haCreds(t, e, n, "ha", rootID).Data.Token)
	}
	haCheckState(t, c, e, lastRotated)
	haCheckPlugins(t, c, newActive)

	// The stopped node comes back: it rejoins as a standby and serves creds.
	rejoin := time.Now()
	active.start(t)
	active.waitAnswers(t)
	c.unseal(t, active)
	if a := c.waitReady(t, 120*time.Second); a != newActive {
		t.Fatalf("after %s rejoined the active node is %s, want %s", active.name, a.name, newActive.name)
	}
	t.Logf("%s rejoined and forwards %s after its restart", active.name, time.Since(rejoin).Round(100*time.Millisecond))
	secrets = append(secrets, haCreds(t, e, active, "ha", rootID).Data.Token)
	haRenew(t, active, before[2].LeaseID)
	haRevoke(t, e, active, before[2])
	haCheckState(t, c, e, lastRotated)

	// Exactly one upstream token per creds read, and no leftover: live = root + unrevoked leases.
	reads := len(before) + len(c.nodes) + 2 + 1
	if d := haCounter(t, e, "created") - createdBefore; d != int64(reads) {
		t.Errorf("counter created grew by %d for %d creds reads", d, reads)
	}
	if live, want := len(e.LiveTokens(t)), 1+reads-3; live != want {
		t.Errorf("live tokens upstream: %d, want %d (root + leases not revoked)", live, want)
	}
	t.Logf("TestHACluster took %s", time.Since(start).Round(100*time.Millisecond))
}

// haCounter reads one of the emulator's counters (GET /admin/counters).
func haCounter(t *testing.T, e *Emulator, name string) int64 {
	t.Helper()
	var c map[string]int64
	e.Admin(t, "GET", "/admin/counters", nil, &c)
	return c[name]
}

// haLiveOfMount lists the live upstream tokens whose vault_mount_uuid metadata is mountUUID.
func haLiveOfMount(t *testing.T, e *Emulator, mountUUID string) int {
	t.Helper()
	n := 0
	for _, tok := range e.LiveTokens(t) {
		if tok.Metadata["vault_mount_uuid"] == mountUUID {
			n++
		}
	}
	return n
}

// haLeases counts the leases under tooken/creds/<role> (sys/leases/lookup, through node n).
func haLeases(t *testing.T, n *haNode, role string) int {
	t.Helper()
	s, err := n.v.Client.Logical().List("sys/leases/lookup/tooken/creds/" + role)
	if err != nil {
		t.Fatalf("%s: list sys/leases/lookup/tooken/creds/%s: %v", n.name, role, err)
	}
	if s == nil {
		return 0
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
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
	active.v.RegisterPlugin(t)
	active.v.EnableTooken(t, "tooken")
	sb[0].v.ConfigureTooken(t, "tooken", e)
	sb[0].v.MustRun(t, "write", "tooken/config", "rollback_min_age=5s")
	sb[1].v.WriteRole(t, "tooken", "ci", "scopes=deployments:write", "ttl=30m", "max_ttl=1h")
	first := haCreds(t, e, sb[0], "ci", e.RootTokenID(t))
	mountUUID, _ := e.Token(t, first.Data.TokenID)
	mount := mountUUID.Metadata["vault_mount_uuid"]
	if mount == "" {
		t.Fatalf("token has no vault_mount_uuid metadata: %v", mountUUID.Metadata)
	}

	e.AddFault(t, Fault{Method: "POST", Path: "/v1/tokens", Latency: "1500ms"})
	var mu sync.Mutex
	ok, failed := 0, 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		n := sb[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				s, err := n.v.Client.Logical().Read("tooken/creds/ci")
				mu.Lock()
				if err != nil || s == nil || s.LeaseID == "" {
					failed++
				} else {
					ok++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(3 * time.Second) // a couple of slow creates done, four in flight
	kill := time.Now()
	active.p.kill()
	newActive := c.waitReady(t, 120*time.Second)
	t.Logf("SIGKILL of %s: %s active, standbys forwarding, %s later", active.name, newActive.name, time.Since(kill).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second) // creds through the new active while it starts its plugin
	close(done)
	wg.Wait()
	e.ClearFaults(t)
	time.Sleep(2 * time.Second) // the emulator finishes the slow creates of the requests that died

	leases, live := haLeases(t, newActive, "ci"), haLiveOfMount(t, e, mount)
	t.Logf("creds: %d ok, %d failed; %d live upstream tokens of the mount, %d live leases", ok, failed, live, leases)
	if ok+1 > leases {
		t.Errorf("%d creds reads succeeded but only %d leases exist", ok+1, leases)
	}
	if live <= leases {
		t.Logf("the kill left no token without a lease (%d live, %d leases)", live, leases)
	}
	roll := time.Now()
	eventually(t, 3*time.Minute, "live upstream tokens of the mount = live leases", func() (bool, string) {
		up, ls := haLiveOfMount(t, e, mount), haLeases(t, newActive, "ci")
		return up == ls, fmt.Sprintf("%d live upstream tokens, %d live leases", up, ls)
	})
	t.Logf("orphans rolled back by %s %s after the check (%d killed)", newActive.name, time.Since(roll).Round(time.Second), live-leases)

	// Every lease, issued before or after the crash, still revokes its token (through a standby).
	rest := c.standbys(newActive)[0]
	rest.v.MustRun(t, "lease", "revoke", "-prefix", "tooken/creds/ci")
	eventually(t, 60*time.Second, "no live upstream token of the mount", func() (bool, string) {
		n := haLiveOfMount(t, e, mount)
		return n == 0, fmt.Sprintf("%d live", n)
	})
	if st := e.SelfStatus(t, first.Data.Token); st != 401 {
		t.Errorf("secret of the first lease after revoke: status %d, want 401", st)
	}
	t.Logf("TestHAClusterCrashDuringCreds took %s", time.Since(start).Round(100*time.Millisecond))
}
