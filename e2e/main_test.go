package e2e

// The harness of the end-to-end tests, one file per concern. Reuse these helpers in new tests
// rather than writing new ones.
//
// main_test.go: binaries and TestMain
//   requireBinaries(t) Binaries           VAULT_BIN, TOOKEN_PLUGIN_BIN (or PLUGIN_DIR), TOOKEN_SERVER_BIN;
//                                         skips when absent, fails instead when CI is set.
//   buildPlugin(t, version) path          this checkout's plugin built with another version
//   goBuild(t, pkg, file, ldflags) path   any package of the module built into a temp dir
//
// procs_test.go: ports, processes, polling, load, files
//   freePort(t, pair), startProc(...) *proc, eventually(t, timeout, what, cond)
//   startLoad(n, op) *load: n goroutines calling op back to back; l.Stop(), l.Wait()
//   procCPU(pid), procThreadsCPU(pid), procRSS(pid), childPIDs(ppid)   what /proc says of a process
//   assertNoSecrets(t, files, secrets), countLines, copyFile, fileSHA256, tail
//
// emulator_test.go: the Tooken emulator (the cmd/tooken-server binary, on free loopback ports)
//   startEmulator(t, EmulatorOptions{}) *Emulator   stopped by t.Cleanup
//   e.URL, e.AdminURL, e.RootSecret, e.RootSecretFile, e.StatePath, e.LogPath, e.PID()
//   e.Tokens(t), e.LiveTokens(t), e.Token(t, id), e.LiveOfMount(t, uuid)   []tookentest.TokenRecord
//   e.RootTokenID(t), e.LiveRootTokens(t), e.Counter(t, name), e.InFlight(t), e.WaitIdle(t, timeout)
//   e.SecretValid(t, secret), e.TokenIDOf(t, secret)   POST /admin/auth
//   e.SelfStatus(t, secret) int                     GET /v1/tokens/self with that secret, as an app would
//   e.SetDown(t, bool), e.AddFault(t, tookentest.Fault), e.ClearFaults(t), e.SetRateLimit(t, rps, burst)
//   e.Admin(t, method, path, body, out)             any other admin call
//   e.Stop(t), e.Start(t)                           an outage of the whole process (state file kept)
//
// vault_test.go: Vault servers, one launcher for dev, file-storage and raft servers
//   startDevVault(t, VaultOptions{}) *Vault          -dev, root token "root", plugin dir with the plugin
//   startVault(t, VaultOptions{}) *Vault             file storage (or opts.Storage), initialised, unsealed
//   newVault(t, opts, dev) *Vault                    prepared, not started (HA nodes); v.Start, v.Init, v.Unseal
//   v.Name, v.Addr, v.RootToken, v.Dir, v.PluginDir, v.LogPath, v.Client (api client, root token), v.PID()
//   v.Start(t), v.Stop(t), v.Kill(t), v.Restart(t), v.Running(), v.WaitActive(t, timeout)
//   v.Run(t, Run{Token, Stdin, Env}, args...)        the vault CLI with VAULT_ADDR/VAULT_TOKEN set
//   v.MustRun(t, args...), v.MustRunJSON(t, &out, args...)   (put -format=json in args yourself)
//   v.InstallPlugin(t, Plugin{Name, Version, Source}) copy a binary into the plugin dir and register it
//   v.PluginPIDs(), v.PluginPIDsOf(file), v.KillPlugin(t)   plugin processes (children of this Vault)
//   v.EnableFileAudit(t), v.LeaseTTL(t, id), v.LeaseIDs(t, prefix), v.IrrevocableLeases(t)
//
// tooken_setup_test.go: this engine inside a Vault
//   v.RegisterPlugin(t), v.EnableTooken(t, mount), v.EnablePlugin(t, mount, name, version)
//   v.ConfigureTooken(t, mount, e), setupTooken(t, v, e), startTooken(t, VaultOptions{}) (*Emulator, *Vault)
//   v.WriteRole(t, mount, name, kv...), v.ReadCreds(t, mount, role, token) Creds, mountIDOf(t, e, creds)
//   v.ReadWorkingCreds(t, e, mount, role, token, what)  ReadCreds, and the secret must work upstream
//   v.CredsLoad(path, n, timeout, each) (stop)       n goroutines reading creds back to back
//
// agent_test.go: Vault Agent
//   v.StartAgent(t, AgentOptions{...}) *Agent        config built from token/templates/extra HCL, or given whole
//   a.Dir, a.ConfigPath, a.LogPath, a.File(name), a.WaitFile(t, name, timeout, what, cond), a.Stop(), a.Exited()
//
// examples_test.go: the recipes of examples/, run as shipped
//   examplePath(t, name), readExample(t, name)      a file of examples/ ("agent-exec/setup.sh")
//   v.runExampleScript(t, name, env...)              a set-up script through bash, vault on PATH
//   substitute(t, what, s, old, new, ...)            replace placeholders, failing if one is absent
//   (github_actions_test.go: newGitHubOIDC signs GitHub-shaped OIDC tokens; vaultActionLogin and
//   vaultActionRead make vault-action's calls; loadWorkflow, runStep read and run deploy.yml.
//   agent_exec_test.go: readAppLog, waitAppTokens read what the example apps print.)
//
// ha_test.go: a raft cluster of Vault servers (startHACluster) built on newVault, and its tests.
// bench_test.go: the real-Vault benchmarks (BenchmarkVault, BenchmarkVaultScale; scripts/bench.sh).
//
// Parallel tests
//   Every test calls t.Parallel(): each has its own ports (freePort never hands one out twice),
//   temp dirs, HOME, state file and process groups, and touches no environment variable. The
//   tests mostly wait for Vault's once-a-minute periodic and rollback functions, so TestMain runs
//   up to 16 at once (TOOKEN_E2E_PARALLEL, or -parallel, overrides it) instead of GOMAXPROCS.
//   Poll with eventually, with timeouts generous enough for a loaded 2-core machine; never sleep
//   for an outcome.

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	pluginName           = "vault-plugin-secrets-tooken"
	defaultPluginVersion = "v0.1.0-dev"
	devRootToken         = "root"
)

// Binaries are the executables the e2e tests run.
type Binaries struct {
	Vault, Plugin, Server string
	PluginVersion         string // the version the plugin was built with (-ldflags -X ...Version)
}

// requireBinaries finds the binaries or skips the test (fails it when CI is set).
func requireBinaries(t testing.TB) Binaries {
	t.Helper()
	if os.Getenv("TOOKEN_E2E") == "0" {
		t.Skip("TOOKEN_E2E=0: the end-to-end tests run in `make test-e2e`")
	}
	b := Binaries{
		Vault:         os.Getenv("VAULT_BIN"),
		Plugin:        os.Getenv("TOOKEN_PLUGIN_BIN"),
		Server:        os.Getenv("TOOKEN_SERVER_BIN"),
		PluginVersion: os.Getenv("TOOKEN_PLUGIN_VERSION"),
	}
	if b.Plugin == "" && os.Getenv("PLUGIN_DIR") != "" {
		b.Plugin = filepath.Join(os.Getenv("PLUGIN_DIR"), pluginName)
	}
	if b.PluginVersion == "" {
		b.PluginVersion = defaultPluginVersion
	}
	var missing []string
	for _, c := range []struct{ env, path string }{
		{"VAULT_BIN", b.Vault}, {"TOOKEN_PLUGIN_BIN", b.Plugin}, {"TOOKEN_SERVER_BIN", b.Server},
	} {
		if msg := checkExecutable(c.env, c.path); msg != "" {
			missing = append(missing, msg)
		}
	}
	if len(missing) > 0 {
		msg := "end-to-end tests need real binaries (`make test-e2e` builds and sets them): " + strings.Join(missing, "; ")
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b
}

// checkExecutable says what is wrong with the executable that the environment variable env
// names as path ("" when nothing is).
func checkExecutable(env, path string) string {
	if path == "" {
		return env + " is not set"
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Sprintf("%s=%s is not an executable file", env, path)
	}
	return ""
}

// modulePath is the plugin's Go module; its Version variable is set at link time.
const modulePath = "github.com/tooken/vault-plugin-secrets-tooken"

// goBuild builds the package pkg (a path relative to this folder, e.g. "./noopplugin" or
// "../cmd/vault-plugin-secrets-tooken") into a temp dir as file, static, with ldflags, and returns
// the binary's path. It needs the go command, which `go test` has.
func goBuild(t testing.TB, pkg, file, ldflags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), file)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// buildPlugin builds this checkout's plugin with its version set to version, for tests that need
// a binary other than TOOKEN_PLUGIN_BIN (an upgrade from one version to another).
func buildPlugin(t testing.TB, version string) string {
	t.Helper()
	return goBuild(t, "../cmd/"+pluginName, pluginName+"-"+version, "-X "+modulePath+".Version="+version)
}

// defaultParallel is how many e2e tests run at once unless -parallel or TOOKEN_E2E_PARALLEL says.
const defaultParallel = 16

// TestMain raises the default of -test.parallel (GOMAXPROCS) to defaultParallel: the tests spend
// their time waiting for Vault's timers, not on CPU.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		n := defaultParallel
		if s := os.Getenv("TOOKEN_E2E_PARALLEL"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "TOOKEN_E2E_PARALLEL=%q is not a positive number\n", s)
				os.Exit(2)
			}
		}
		if err := flag.Set("test.parallel", strconv.Itoa(n)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}
