package e2e

// Vault servers: one launcher (newVault) for a dev server, a server with file storage that
// survives restarts, and the raft nodes of an HA cluster (ha_test.go); the vault CLI; the plugin
// catalog and the plugin processes; leases.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultOptions configure a Vault server (startDevVault, startVault, newVault).
type VaultOptions struct {
	Name     string   // names the server in failure messages (default "vault")
	LogLevel string   // default "debug"
	Args     []string // more flags for `vault server`
	Env      []string // more environment for the server
	// Storage returns the storage stanza of a non-dev server given its data folder (default
	// fileStorage; raftStorage for a cluster node).
	Storage func(dataDir string) string
	// Plugins are more executables put into the plugin directory, file name -> source path (the
	// tooken plugin is always there, as pluginName). A dev server registers each under its file
	// name at start-up; a non-dev one needs InstallPlugin.
	Plugins map[string]string
}

// Vault is a Vault server, running or not.
type Vault struct {
	Name      string
	Addr      string // http://127.0.0.1:PORT
	RootToken string
	Dir       string // working folder: data, logs, audit files, agent files
	PluginDir string
	LogPath   string
	Client    *api.Client // root token
	Bins      Binaries

	dev       bool
	unsealKey string
	args      []string
	env       []string
	p         *proc
}

// fileStorage is the stanza of file storage in dataDir.
func fileStorage(dataDir string) string {
	return fmt.Sprintf("storage \"file\" {\n  path = %q\n}", dataDir)
}

// raftStorage returns a Storage function: integrated storage (raft) with that node id.
func raftStorage(nodeID string) func(string) string {
	return func(dataDir string) string {
		return fmt.Sprintf("storage \"raft\" {\n  path    = %q\n  node_id = %q\n}", dataDir, nodeID)
	}
}

// serverConfig is a Vault server config (HCL) listening on 127.0.0.1:port without TLS, with its
// cluster port, the plugin directory and the log level; storage is the whole storage stanza.
func serverConfig(storage string, port, clusterPort int, pluginDir, level string) string {
	return fmt.Sprintf(`%s
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr         = "http://127.0.0.1:%d"
cluster_addr     = "https://127.0.0.1:%d"
disable_mlock    = true
plugin_directory = %q
log_level        = %q
`, storage, port, clusterPort, port, clusterPort, pluginDir, level)
}

// newVault prepares a server (folder, ports, plugin directory, config, API client) without
// starting it; t.Cleanup stops it. A dev server listens on a port whose successor is free for
// its cluster listener; a non-dev one gets two ports of its own.
func newVault(t testing.TB, opts VaultOptions, dev bool) *Vault {
	t.Helper()
	bins := requireBinaries(t)
	dir := t.TempDir()
	v := &Vault{
		Name:      opts.Name,
		Dir:       dir,
		PluginDir: filepath.Join(dir, "plugins"),
		LogPath:   filepath.Join(dir, "vault.log"),
		Bins:      bins,
		dev:       dev,
	}
	if v.Name == "" {
		v.Name = "vault"
	}
	for _, d := range []string{v.PluginDir, filepath.Join(dir, "home"), filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, bins.Plugin, filepath.Join(v.PluginDir, pluginName), 0o755)
	for file, src := range opts.Plugins {
		copyFile(t, src, filepath.Join(v.PluginDir, file), 0o755)
	}
	v.env = cleanEnv(filepath.Join(dir, "home"), opts.Env...)
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	if dev {
		v.devArgs(t, level)
	} else {
		v.serverArgs(t, opts.Storage, level)
	}
	v.args = append(v.args, opts.Args...)
	v.Client = newAPIClient(t, v.Addr, v.RootToken)
	t.Cleanup(func() { v.Stop(t) })
	return v
}

func (v *Vault) devArgs(t testing.TB, level string) {
	port := freePort(t, true)
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	v.RootToken = devRootToken
	v.args = []string{"server", "-dev", "-dev-root-token-id=" + devRootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		"-dev-plugin-dir=" + v.PluginDir, "-log-level=" + level}
}

func (v *Vault) serverArgs(t testing.TB, storage func(string) string, level string) {
	t.Helper()
	if storage == nil {
		storage = fileStorage
	}
	port, cport := freePort(t, false), freePort(t, false)
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfgPath := filepath.Join(v.Dir, "vault.hcl")
	cfg := serverConfig(storage(filepath.Join(v.Dir, "data")), port, cport, v.PluginDir, level)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	v.args = []string{"server", "-config=" + cfgPath}
}

// newAPIClient is an API client of the server at addr with token, with enough keep-alive
// connections for concurrent load loops.
func newAPIClient(t testing.TB, addr, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = 60 * time.Second
	cfg.HttpClient.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(token)
	return client
}

// startDevVault starts `vault server -dev` with the plugin in its plugin dir (registered by the
// dev server without a version; v.RegisterPlugin registers it again with sha256 and version).
func startDevVault(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	v := newVault(t, opts, true)
	v.Start(t)
	return v
}

// startVault starts a non-dev server (file storage unless opts.Storage says otherwise),
// initialises it (1 unseal key) and unseals it.
func startVault(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	v := newVault(t, opts, false)
	v.Start(t)
	v.Init(t)
	v.Unseal(t)
	v.WaitActive(t, time.Minute)
	return v
}

// Start starts the server process and waits until it answers sys/health (a dev server: until it
// is unsealed too).
func (v *Vault) Start(t testing.TB) {
	t.Helper()
	v.spawn(t)
	v.waitUp(t)
}

func (v *Vault) spawn(t testing.TB) {
	t.Helper()
	if v.Running() {
		t.Fatalf("%s already running", v.Name)
	}
	v.p = startProc(t, v.Name, v.LogPath, v.env, nil, v.Bins.Vault, v.args...)
}

func (v *Vault) waitUp(t testing.TB) {
	t.Helper()
	eventually(t, 2*time.Minute, v.Name+" answers sys/health", func() (bool, string) {
		if v.p.exited() {
			t.Fatalf("%s exited at start-up; log:\n%s", v.Name, tail(v.LogPath, 4000))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h, err := v.Client.Sys().HealthWithContext(ctx)
		if err != nil {
			return false, err.Error()
		}
		if v.dev {
			return h.Initialized && !h.Sealed, fmt.Sprintf("%+v", h)
		}
		return true, ""
	})
}

// Init initialises a non-dev server with one unseal key (Shamir 1 of 1) and takes its root token.
func (v *Vault) Init(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	init, err := v.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("%s: vault operator init: %v\n%s", v.Name, err, tail(v.LogPath, 3000))
	}
	if len(init.Keys) != 1 || init.RootToken == "" {
		t.Fatalf("%s: vault operator init answered %d keys and a root token of %d characters", v.Name, len(init.Keys), len(init.RootToken))
	}
	v.unsealKey = init.Keys[0]
	v.RootToken = init.RootToken
	v.Client.SetToken(v.RootToken)
}

// AdoptKeys takes the unseal key and root token of other, a node of the same cluster.
func (v *Vault) AdoptKeys(other *Vault) {
	v.unsealKey = other.unsealKey
	v.RootToken = other.RootToken
	v.Client.SetToken(v.RootToken)
}

// Unseal submits the unseal key and waits until the server is unsealed (a node that just joined
// a raft cluster finishes its join after the key, then unseals).
func (v *Vault) Unseal(t testing.TB) {
	t.Helper()
	st, err := v.Client.Sys().Unseal(v.unsealKey)
	if err != nil {
		t.Fatalf("%s: vault operator unseal: %v\n%s", v.Name, err, tail(v.LogPath, 3000))
	}
	if !st.Sealed {
		return
	}
	eventually(t, 60*time.Second, v.Name+" unseals", func() (bool, string) {
		h, err := v.Client.Sys().Health()
		if err != nil {
			return false, err.Error()
		}
		return !h.Sealed, fmt.Sprintf("%+v", h)
	})
}

// WaitActive waits until the server is unsealed and active (not a standby).
func (v *Vault) WaitActive(t testing.TB, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, v.Name+" becomes active", func() (bool, string) {
		h, err := v.Client.Sys().Health()
		if err != nil {
			return false, err.Error()
		}
		return !h.Sealed && !h.Standby, fmt.Sprintf("%+v", h)
	})
}

// Stop stops Vault gracefully (SIGTERM; plugin processes end with it).
func (v *Vault) Stop(t testing.TB) {
	if v.p != nil {
		v.p.stop(15 * time.Second)
	}
}

// Kill kills Vault and its plugin processes with SIGKILL.
func (v *Vault) Kill(t testing.TB) {
	if v.p != nil && !v.p.exited() {
		v.p.kill()
	}
}

// Running tells whether the server process is running.
func (v *Vault) Running() bool { return v.p != nil && !v.p.exited() }

// PID is the process id of the running server.
func (v *Vault) PID() int { return v.p.pid() }

// Restart stops and starts a non-dev Vault and unseals it; storage (config, roles, leases) stays.
func (v *Vault) Restart(t testing.TB) {
	t.Helper()
	if v.dev {
		t.Fatal("Restart needs a non-dev Vault (startVault): a dev server keeps nothing")
	}
	v.Stop(t)
	v.Start(t)
	v.Unseal(t)
	v.WaitActive(t, time.Minute)
}

// Run describes one vault CLI call.
type Run struct {
	Token string // VAULT_TOKEN; "" = the root token; "-" = none
	Stdin string
	Env   []string
}

// Run runs the vault CLI against this server and returns stdout and stderr.
func (v *Vault) Run(t testing.TB, r Run, args ...string) (string, string, error) {
	t.Helper()
	token := r.Token
	if token == "" {
		token = v.RootToken
	}
	env := []string{"VAULT_ADDR=" + v.Addr}
	if token != "-" {
		env = append(env, "VAULT_TOKEN="+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, v.Bins.Vault, args...)
	cmd.Env = cleanEnv(filepath.Join(v.Dir, "home"), append(env, r.Env...)...)
	cmd.Stdin = strings.NewReader(r.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// MustRun runs the vault CLI with the root token and fails the test if it fails.
func (v *Vault) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := v.Run(t, Run{}, args...)
	if err != nil {
		t.Fatalf("%s: vault %s: %v\nstdout: %s\nstderr: %s", v.Name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// MustRunJSON runs the vault CLI (args must include -format=json) and decodes stdout into out.
func (v *Vault) MustRunJSON(t testing.TB, out any, args ...string) {
	t.Helper()
	s := v.MustRun(t, args...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("vault %s: decoding %q: %v", strings.Join(args, " "), s, err)
	}
}

// ---------------------------------------------------------------------------------------------
// The plugin catalog and the plugin processes

// Plugin is a plugin binary to register in the catalog.
type Plugin struct {
	Name    string // catalog name
	Version string // "" = unversioned
	Type    string // default "secret"
	// Source, when set, is copied into the plugin directory as File first.
	Source string
	// File is the binary's name in the plugin directory, the catalog's command (default: Name,
	// or Name-Version when Source and Version are set, so that two versions live side by side).
	File string
}

// InstallPlugin copies p.Source into the plugin directory (when set) and registers the binary in
// the catalog with its sha256 (and version), as users do. It returns the file name.
func (v *Vault) InstallPlugin(t testing.TB, p Plugin) string {
	t.Helper()
	file := p.File
	switch {
	case file != "":
	case p.Source != "" && p.Version != "":
		file = p.Name + "-" + p.Version
	default:
		file = p.Name
	}
	if p.Source != "" {
		copyFile(t, p.Source, filepath.Join(v.PluginDir, file), 0o755)
	}
	typ := p.Type
	if typ == "" {
		typ = "secret"
	}
	args := []string{"plugin", "register", "-sha256=" + fileSHA256(t, filepath.Join(v.PluginDir, file)), "-command=" + file}
	if p.Version != "" {
		args = append(args, "-version="+p.Version)
	}
	v.MustRun(t, append(args, typ, p.Name)...)
	return file
}

// PluginPIDsOf lists the running processes of the plugin binary file of the plugin directory
// that are children of this Vault (one per plugin and version: plugins serve every mount from
// one process).
func (v *Vault) PluginPIDsOf(file string) []int {
	if !v.Running() {
		return nil
	}
	want := filepath.Join(v.PluginDir, file)
	var pids []int
	for _, pid := range childPIDs(v.PID()) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// PluginPIDs lists the running processes of this Vault's copy of the tooken plugin.
func (v *Vault) PluginPIDs() []int { return v.PluginPIDsOf(pluginName) }

// KillPlugin kills (SIGKILL) every process of this Vault's plugin, failing the test if there is
// none, and returns their pids.
func (v *Vault) KillPlugin(t testing.TB) []int {
	t.Helper()
	pids := v.PluginPIDs()
	if len(pids) == 0 {
		t.Fatal("no plugin process to kill")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
	}
	return pids
}

// EnableFileAudit enables a file audit device writing to v.Dir/audit.log and returns that path.
func (v *Vault) EnableFileAudit(t testing.TB) string {
	t.Helper()
	path := filepath.Join(v.Dir, "audit.log")
	v.MustRun(t, "audit", "enable", "file", "file_path="+path)
	return path
}

// ---------------------------------------------------------------------------------------------
// Leases

// LeaseTTL looks a lease up (sys/leases/lookup) and returns its remaining TTL; ok is false when
// Vault no longer knows the lease.
func (v *Vault) LeaseTTL(t testing.TB, leaseID string) (ttl time.Duration, ok bool) {
	t.Helper()
	s, err := v.Client.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if err != nil || s == nil {
		return 0, false
	}
	n, err := s.Data["ttl"].(json.Number).Int64()
	if err != nil {
		t.Fatalf("lease lookup ttl: %v", err)
	}
	return time.Duration(n) * time.Second, true
}

// LeaseIDs lists the leases Vault holds under prefix (e.g. "tooken/creds/ci"), by their last
// path element.
func (v *Vault) LeaseIDs(t testing.TB, prefix string) []string {
	t.Helper()
	s, err := v.Client.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatalf("%s: list sys/leases/lookup/%s: %v", v.Name, prefix, err)
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

// IrrevocableLeases counts the leases Vault has marked irrevocable (sys/leases/count).
func (v *Vault) IrrevocableLeases(t testing.TB) int {
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
