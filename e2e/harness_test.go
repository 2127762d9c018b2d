package e2e

// Test harness for real-Vault end-to-end tests. Reuse these helpers in later tests (root rotation,
// kill -9 of the plugin during creds, emulator outage) rather than writing new ones.
//
// Binaries
//   requireBinaries(t) Binaries           VAULT_BIN, TOOKEN_PLUGIN_BIN (or PLUGIN_DIR), TOOKEN_SERVER_BIN;
//                                         skips when absent, fails instead when CI is set.
//
// The Tooken emulator (the cmd/tooken-server binary, on free loopback ports, admin API on)
//   startEmulator(t, EmulatorOptions{}) *Emulator   stopped by t.Cleanup
//   e.URL, e.AdminURL, e.RootSecret, e.RootSecretFile, e.LogPath, e.RootTokenID(t)
//   e.Tokens(t), e.LiveTokens(t), e.Token(t, id)    inspection through GET /admin/tokens
//   e.SecretValid(t, secret) bool, e.TokenIDOf(t, secret)   POST /admin/auth
//   e.SelfStatus(t, secret) int                     GET /v1/tokens/self with that secret, as an app would
//   e.SetDown(t, bool), e.AddFault(t, Fault), e.ClearFaults(t), e.Admin(t, method, path, body, out)
//   e.Stop(t), e.Start(t)                           an outage of the whole process (state file kept)
//   e.LiveRootTokens(t) int                         live tokens made by the bootstrap (the root)
//
// Vault (a dev server, or a real one with file storage that survives restarts)
//   startDevVault(t, VaultOptions{}) *Vault          -dev, root token "root", plugin dir with the plugin
//   startVault(t, VaultOptions{}) *Vault             file storage, initialised and unsealed (1 key)
//   v.Addr, v.RootToken, v.Dir, v.PluginDir, v.LogPath, v.Client (api client, root token)
//   v.Restart(t), v.Stop(t), v.Kill(t)               Restart = stop, start, unseal (non-dev only)
//   v.Run(t, Run{Token, Stdin, Env}, args...)        the vault CLI with VAULT_ADDR/VAULT_TOKEN set
//   v.MustRun(t, args...), v.MustRunJSON(t, &out, args...)   (put -format=json in args yourself)
//   v.RegisterPlugin(t), v.EnableTooken(t, mount), v.ConfigureTooken(t, mount, e), setupTooken(t, v, e)
//   startTooken(t, VaultOptions{}) (*Emulator, *Vault)   emulator + dev Vault + setupTooken
//   v.WriteRole(t, mount, name, kv...), v.ReadCreds(t, mount, role, token) Creds
//   v.ReadWorkingCreds(t, e, mount, role, token, what)  ReadCreds, and the secret must work upstream
//   v.EnableFileAudit(t) (path), v.PluginPIDs() []int    plugin processes running from v.PluginDir
//   v.KillPlugin(t) []int                            kill -9 of those processes
//   v.CredsLoad(path, n, timeout, each) (stop)       n goroutines reading creds back to back
//   v.StartAgent(t, AgentOptions{...}) *Agent         Vault Agent with token_file auto-auth + templates
//
// Parallel tests
//   Every test calls t.Parallel(): each has its own ports (freePort never hands one out twice),
//   temp dirs, HOME, state file and process groups, and touches no environment variable. The
//   tests mostly wait for Vault's once-a-minute periodic and rollback functions, so TestMain runs
//   up to 16 at once (TOOKEN_E2E_PARALLEL, or -parallel, overrides it) instead of GOMAXPROCS.
//   Poll with eventually, with timeouts generous enough for a loaded 2-core machine; never sleep
//   for an outcome.
//
// Checks
//   eventually(t, timeout, what, func() (bool, string))
//   assertNoSecrets(t, files, secrets)              none of the secrets appears in any of the files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
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
		if c.path == "" {
			missing = append(missing, c.env+" is not set")
		} else if st, err := os.Stat(c.path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, fmt.Sprintf("%s=%s is not an executable file", c.env, c.path))
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

// ---------------------------------------------------------------------------------------------
// Ports, processes, polling

// handedOut holds every port freePort has returned in this process: with parallel tests, a port
// one test chose (and whose server may not be listening yet, or is down for an outage) must not
// be given to another test.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a loopback TCP port that is free now and was never returned before in this
// process (and, when pair is true, port+1 too, for a Vault dev server's cluster listener).
// It takes ports below the kernel's ephemeral range when it can, so that no outgoing connection
// (of this or any process) takes the port before the server binds it, or while it is stopped.
func freePort(t testing.TB, pair bool) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	lo, hi := listenPortRange()
	for i := 0; i < 500; i++ {
		port := 0
		if hi > lo {
			port = lo + mrand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			if port == 0 {
				t.Fatalf("listen: %v", err)
			}
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		if handedOut.ports[port] || (pair && handedOut.ports[port+1]) {
			l.Close()
			continue
		}
		if !pair {
			l.Close()
			handedOut.ports[port] = true
			return port
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err == nil {
			l2.Close()
			handedOut.ports[port], handedOut.ports[port+1] = true, true
			return port
		}
	}
	t.Fatal("no free port (pair) found")
	return 0
}

// listenPortRange is [lo, hi) below the kernel's ephemeral port range (ip_local_port_range),
// from 20000; lo == hi when there is no such room (then freePort lets the kernel choose).
func listenPortRange() (lo, hi int) {
	const floor = 20000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	ephemeralLo, err := strconv.Atoi(f[0])
	if err != nil || ephemeralLo-1 <= floor+1000 {
		return 0, 0
	}
	return floor, ephemeralLo - 1 // -1: port+1 of a pair stays below the range too
}

// proc is a child process in its own process group, with its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

func startProc(t testing.TB, name, logPath string, env []string, stdin io.Reader, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("open %s: %v", logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills the whole process group (plugin children too).
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// kill sends SIGKILL to the process group at once (a crash).
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// tail returns the last n bytes of a log file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// eventually polls cond every 200ms until it returns true or timeout passes; then it fails the
// test with what and the last detail cond gave.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var detail string
	for {
		var ok bool
		ok, detail = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, timeout, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cleanEnv is the environment of this process without any VAULT_* variable (a developer's
// VAULT_ADDR or VAULT_TOKEN must not leak into the servers or the CLI), with HOME set to home so
// that no ~/.vault-token is read or written.
func cleanEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "TOOKEN_ROOT_SECRET=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home)
	return append(env, extra...)
}

func randomAlnum(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err)
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b)
}

// ---------------------------------------------------------------------------------------------
// The Tooken emulator

// EmulatorOptions configure startEmulator.
type EmulatorOptions struct {
	RootScopes []string // default: the emulator's (tokens:write, deployments:write, billing:read)
	Args       []string // more flags for tooken-server (e.g. --rate-limit)
}

// Emulator is a running tooken-server process.
type Emulator struct {
	URL            string // API base URL, ending in /v1
	AdminURL       string // admin API base, e.g. http://127.0.0.1:P (paths /admin/...)
	RootSecret     string
	RootSecretFile string
	StatePath      string
	LogPath        string

	bin   string
	args  []string
	env   []string
	p     *proc
	http  *http.Client
	admin string
}

func startEmulator(t testing.TB, opts EmulatorOptions) *Emulator {
	t.Helper()
	bins := requireBinaries(t)
	dir := t.TempDir()
	apiPort, adminPort := freePort(t, false), freePort(t, false)
	e := &Emulator{
		URL:            fmt.Sprintf("http://127.0.0.1:%d/v1", apiPort),
		AdminURL:       fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		RootSecretFile: filepath.Join(dir, "root-secret"),
		StatePath:      filepath.Join(dir, "tooken-state.json"),
		LogPath:        filepath.Join(dir, "tooken-server.log"),
		bin:            bins.Server,
		env:            cleanEnv(dir),
		http:           &http.Client{Timeout: 10 * time.Second},
	}
	// Seed the root secret through the file (never argv); the emulator keeps it, or writes its own.
	if err := os.WriteFile(e.RootSecretFile, []byte("tok_test_"+randomAlnum(32)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.args = []string{
		"--listen", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", adminPort),
		"--root-secret-file", e.RootSecretFile,
		"--state", e.StatePath,
	}
	if len(opts.RootScopes) > 0 {
		e.args = append(e.args, "--root-scopes", strings.Join(opts.RootScopes, ","))
	}
	e.args = append(e.args, opts.Args...)
	e.Start(t)
	t.Cleanup(func() { e.p.stop(5 * time.Second) })
	return e
}

// Start (re)starts the emulator process with the same flags and state file.
func (e *Emulator) Start(t testing.TB) {
	t.Helper()
	if e.p != nil && !e.p.exited() {
		t.Fatal("emulator already running")
	}
	// The log file is appended to across restarts: only what this run writes, after the current
	// end, can say it is ready (the line is printed once both listeners are bound).
	var from int64
	if st, err := os.Stat(e.LogPath); err == nil {
		from = st.Size()
	}
	e.p = startProc(t, "tooken-server", e.LogPath, e.env, nil, e.bin, e.args...)
	eventually(t, 30*time.Second, "tooken-server prints its listening line", func() (bool, string) {
		if e.p.exited() {
			t.Fatalf("tooken-server exited at start-up; log:\n%s", tail(e.LogPath, 4000))
		}
		b, _ := os.ReadFile(e.LogPath)
		if int64(len(b)) < from {
			return false, "log file shrank"
		}
		return bytes.Contains(b[from:], []byte("listening on")), tail(e.LogPath, 2000)
	})
	secret, err := os.ReadFile(e.RootSecretFile)
	if err != nil {
		t.Fatalf("reading the emulator's root secret file: %v", err)
	}
	e.RootSecret = strings.TrimSpace(string(secret))
	if e.RootSecret == "" {
		t.Fatal("the emulator's root secret file is empty")
	}
}

// Stop stops the emulator process (an outage); Start brings it back with its state.
func (e *Emulator) Stop(t testing.TB) {
	t.Helper()
	e.p.stop(5 * time.Second)
}

// LiveRootTokens counts the live tokens made by the bootstrap (CreatedBy ""): the root, and any
// root made again by a rotation gone wrong.
func (e *Emulator) LiveRootTokens(t testing.TB) int {
	t.Helper()
	n := 0
	for _, tok := range e.LiveTokens(t) {
		if tok.CreatedBy == "" {
			n++
		}
	}
	return n
}

// TokenRecord is the emulator's view of a token (admin API).
type TokenRecord struct {
	ID        string
	Name      string
	Scopes    []string
	Metadata  map[string]string
	CreatedAt time.Time
	ExpiresAt *time.Time
	RevokedAt *time.Time
	RotatedAt *time.Time
	CreatedBy string
	State     string
}

// Admin calls the admin API: body (if not nil) is sent as JSON, the answer decoded into out (if
// not nil). It fails the test on a status >= 300.
func (e *Emulator) Admin(t testing.TB, method, path string, body, out any) {
	t.Helper()
	status, raw := e.adminCall(t, method, path, body)
	if status >= 300 {
		t.Fatalf("admin %s %s: status %d: %s", method, path, status, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("admin %s %s: decoding %s: %v", method, path, raw, err)
		}
	}
}

func (e *Emulator) adminCall(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.AdminURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// Tokens lists every token the emulator ever made (query e.g. "?state=live").
func (e *Emulator) tokens(t testing.TB, query string) []TokenRecord {
	t.Helper()
	var raw json.RawMessage
	e.Admin(t, http.MethodGet, "/admin/tokens"+query, nil, &raw)
	list, err := decodeTokenList(raw)
	if err != nil {
		t.Fatalf("admin /admin/tokens: %v: %s", err, raw)
	}
	return list
}

func (e *Emulator) Tokens(t testing.TB) []TokenRecord { return e.tokens(t, "") }

// LiveTokens lists the tokens whose state is live.
func (e *Emulator) LiveTokens(t testing.TB) []TokenRecord {
	t.Helper()
	var live []TokenRecord
	for _, tok := range e.tokens(t, "?state=live") {
		if tok.State == "" || tok.State == "live" {
			live = append(live, tok)
		}
	}
	return live
}

// Token returns one token by id (GET /admin/tokens/{id}).
func (e *Emulator) Token(t testing.TB, id string) (TokenRecord, bool) {
	t.Helper()
	status, raw := e.adminCall(t, http.MethodGet, "/admin/tokens/"+id, nil)
	if status == http.StatusNotFound {
		return TokenRecord{}, false
	}
	if status != http.StatusOK {
		t.Fatalf("admin GET /admin/tokens/%s: status %d: %s", id, status, raw)
	}
	list, err := decodeTokenList(append(append([]byte("["), raw...), ']'))
	if err != nil || len(list) != 1 {
		t.Fatalf("admin GET /admin/tokens/%s: %v: %s", id, err, raw)
	}
	return list[0], true
}

// RootTokenID is the id of the bootstrap root token (GET /admin/root).
func (e *Emulator) RootTokenID(t testing.TB) string {
	t.Helper()
	var out struct {
		TokenID string `json:"token_id"`
	}
	e.Admin(t, http.MethodGet, "/admin/root", nil, &out)
	if out.TokenID == "" {
		t.Fatal("the emulator names no root token")
	}
	return out.TokenID
}

// SecretValid asks the emulator whether a secret is accepted now.
func (e *Emulator) SecretValid(t testing.TB, secret string) bool {
	t.Helper()
	var out map[string]any
	e.Admin(t, http.MethodPost, "/admin/auth", map[string]string{"secret": secret}, &out)
	v, _ := out["valid"].(bool)
	return v
}

// TokenIDOf returns the id of the token a secret belongs to ("" when the secret is not accepted).
func (e *Emulator) TokenIDOf(t testing.TB, secret string) string {
	t.Helper()
	var out struct {
		Valid   bool   `json:"valid"`
		TokenID string `json:"token_id"`
	}
	e.Admin(t, http.MethodPost, "/admin/auth", map[string]string{"secret": secret}, &out)
	if !out.Valid {
		return ""
	}
	return out.TokenID
}

// SelfStatus calls GET /v1/tokens/self with the secret, as an application would, and returns the
// HTTP status (200 while the token works, 401 once revoked or expired).
func (e *Emulator) SelfStatus(t testing.TB, secret string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.URL+"/tokens/self", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/tokens/self: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Fault mirrors tookentest.Fault for the admin API (Latency as a Go duration string).
type Fault struct {
	Method      string  `json:"method,omitempty"`
	Path        string  `json:"path,omitempty"`
	Prefix      bool    `json:"prefix,omitempty"`
	Count       int     `json:"count,omitempty"`
	Probability float64 `json:"probability,omitempty"`
	Status      int     `json:"status,omitempty"`
	RetryAfter  int     `json:"retry_after,omitempty"`
	Latency     string  `json:"latency,omitempty"`
	Drop        bool    `json:"drop,omitempty"`
}

func (e *Emulator) AddFault(t testing.TB, f Fault) {
	e.Admin(t, http.MethodPost, "/admin/faults", f, nil)
}
func (e *Emulator) ClearFaults(t testing.TB) {
	e.Admin(t, http.MethodDelete, "/admin/faults", nil, nil)
}
func (e *Emulator) SetDown(t testing.TB, down bool) {
	e.Admin(t, http.MethodPost, "/admin/down", map[string]bool{"down": down}, nil)
}

// decodeTokenList accepts a JSON array of tokens or an object holding one (e.g. {"data": [...]}),
// with snake_case or Go-style keys.
func decodeTokenList(raw []byte) ([]TokenRecord, error) {
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		var obj map[string]json.RawMessage
		if err2 := json.Unmarshal(raw, &obj); err2 != nil {
			return nil, err
		}
		found := false
		for _, k := range []string{"data", "tokens", "items"} {
			if v, ok := obj[k]; ok {
				if err := json.Unmarshal(v, &items); err != nil {
					return nil, err
				}
				found = true
				break
			}
		}
		if !found {
			return nil, errors.New("no token list in the answer")
		}
	}
	out := make([]TokenRecord, 0, len(items))
	for _, m := range items {
		n := make(map[string]any, len(m))
		for k, v := range m {
			n[strings.ToLower(strings.ReplaceAll(k, "_", ""))] = v
		}
		str := func(k string) string { s, _ := n[k].(string); return s }
		tm := func(k string) *time.Time {
			s := str(k)
			if s == "" {
				return nil
			}
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return nil
			}
			return &ts
		}
		rec := TokenRecord{ID: str("id"), Name: str("name"), CreatedBy: str("createdby"), State: str("state")}
		if c := tm("createdat"); c != nil {
			rec.CreatedAt = *c
		}
		rec.ExpiresAt, rec.RevokedAt, rec.RotatedAt = tm("expiresat"), tm("revokedat"), tm("rotatedat")
		if sc, ok := n["scopes"].([]any); ok {
			for _, s := range sc {
				if s, ok := s.(string); ok {
					rec.Scopes = append(rec.Scopes, s)
				}
			}
		}
		if md, ok := n["metadata"].(map[string]any); ok {
			rec.Metadata = map[string]string{}
			for k, v := range md {
				rec.Metadata[k] = fmt.Sprint(v)
			}
		}
		out = append(out, rec)
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// Vault

// VaultOptions configure startDevVault and startVault.
type VaultOptions struct {
	LogLevel string   // default "debug"
	Args     []string // more flags for `vault server`
	Env      []string // more environment for the server
}

// Vault is a running Vault server.
type Vault struct {
	Addr      string // http://127.0.0.1:PORT
	RootToken string
	Dir       string // working folder: data, logs, audit files, agent files
	PluginDir string
	LogPath   string
	Client    *api.Client // root token
	Bins      Binaries

	dev        bool
	configPath string
	unsealKey  string
	args       []string
	env        []string
	p          *proc
}

func newVault(t testing.TB, opts VaultOptions, dev bool) *Vault {
	t.Helper()
	bins := requireBinaries(t)
	dir := t.TempDir()
	v := &Vault{
		Dir:       dir,
		PluginDir: filepath.Join(dir, "plugins"),
		LogPath:   filepath.Join(dir, "vault.log"),
		Bins:      bins,
		dev:       dev,
	}
	if err := os.MkdirAll(v.PluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bins.Plugin, filepath.Join(v.PluginDir, pluginName), 0o755)
	v.env = cleanEnv(filepath.Join(dir, "home"), opts.Env...)
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o700); err != nil {
		t.Fatal(err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	if dev {
		port := freePort(t, true)
		v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
		v.RootToken = devRootToken
		v.args = append([]string{"server", "-dev", "-dev-root-token-id=" + devRootToken,
			fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
			"-dev-plugin-dir=" + v.PluginDir, "-log-level=" + level}, opts.Args...)
	} else {
		port, cport := freePort(t, false), freePort(t, false)
		v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
		v.configPath = filepath.Join(dir, "vault.hcl")
		cfg := serverConfig(fmt.Sprintf("storage \"file\" {\n  path = %q\n}", filepath.Join(dir, "data")),
			port, cport, v.PluginDir, level)
		if err := os.WriteFile(v.configPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		v.args = append([]string{"server", "-config=" + v.configPath}, opts.Args...)
	}
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.Timeout = 60 * time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(v.RootToken)
	v.Client = client
	return v
}

// startDevVault starts `vault server -dev` with the plugin in its plugin dir (registered by the
// dev server without a version; v.RegisterPlugin registers it again with sha256 and version).
// serverConfig is a Vault server config (HCL) listening on 127.0.0.1:port
// without TLS, with its cluster port, the plugin directory and the log level;
// storage is the whole storage stanza.
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

func startDevVault(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	return launchVault(t, opts, true)
}

// startVault starts a non-dev server with file storage, initialises it (1 unseal key) and unseals it.
func startVault(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	v := launchVault(t, opts, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	init, err := v.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vault operator init: %v\n%s", err, tail(v.LogPath, 3000))
	}
	v.unsealKey = init.Keys[0]
	v.RootToken = init.RootToken
	v.Client.SetToken(v.RootToken)
	v.unseal(t)
	return v
}

// launchVault starts a Vault server, stopped by t.Cleanup.
func launchVault(t testing.TB, opts VaultOptions, dev bool) *Vault {
	t.Helper()
	v := newVault(t, opts, dev)
	v.start(t)
	t.Cleanup(func() { v.Stop(t) })
	return v
}

func (v *Vault) start(t testing.TB) {
	t.Helper()
	v.p = startProc(t, "vault", v.LogPath, v.env, nil, v.Bins.Vault, v.args...)
	eventually(t, 2*time.Minute, "vault answers sys/health", func() (bool, string) {
		if v.p.exited() {
			t.Fatalf("vault exited at start-up; log:\n%s", tail(v.LogPath, 4000))
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

func (v *Vault) unseal(t testing.TB) {
	t.Helper()
	st, err := v.Client.Sys().Unseal(v.unsealKey)
	if err != nil {
		t.Fatalf("vault operator unseal: %v", err)
	}
	if st.Sealed {
		t.Fatal("vault still sealed after unseal")
	}
	eventually(t, time.Minute, "vault becomes active after unseal", func() (bool, string) {
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

// Restart stops and starts a non-dev Vault and unseals it; storage (config, roles, leases) stays.
func (v *Vault) Restart(t testing.TB) {
	t.Helper()
	if v.dev {
		t.Fatal("Restart needs a non-dev Vault (startVault): a dev server keeps nothing")
	}
	v.Stop(t)
	v.start(t)
	v.unseal(t)
}

// PluginPIDs lists the running processes whose executable is this Vault's copy of the plugin.
func (v *Vault) PluginPIDs() []int {
	want := filepath.Join(v.PluginDir, pluginName)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

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
		t.Fatalf("vault %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
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

// RegisterPlugin registers the plugin in the catalog with its sha256 and version, as users do.
func (v *Vault) RegisterPlugin(t testing.TB) {
	t.Helper()
	sum := fileSHA256(t, filepath.Join(v.PluginDir, pluginName))
	v.MustRun(t, "plugin", "register", "-sha256="+sum, "-version="+v.Bins.PluginVersion, "secret", pluginName)
}

// EnableTooken mounts the registered plugin (at its version) at mount.
func (v *Vault) EnableTooken(t testing.TB, mount string) {
	t.Helper()
	v.MustRun(t, "secrets", "enable", "-path="+mount, "-plugin-version="+v.Bins.PluginVersion, pluginName)
}

// ConfigureTooken writes mount/config with the emulator's URL and root secret (sent on stdin:
// never in argv).
func (v *Vault) ConfigureTooken(t testing.TB, mount string, e *Emulator) {
	t.Helper()
	out, errOut, err := v.Run(t, Run{Stdin: e.RootSecret}, "write", mount+"/config", "url="+e.URL, "token=-")
	if err != nil {
		t.Fatalf("vault write %s/config: %v\n%s%s", mount, err, out, errOut)
	}
}

// setupTooken registers, mounts (at tooken/) and configures the plugin against e.
func setupTooken(t testing.TB, v *Vault, e *Emulator) {
	t.Helper()
	v.RegisterPlugin(t)
	v.EnableTooken(t, "tooken")
	v.ConfigureTooken(t, "tooken", e)
}

// startTooken starts an emulator and a dev Vault with the plugin registered, mounted at tooken/
// and configured against it: the start of most tests.
func startTooken(t testing.TB, opts VaultOptions) (*Emulator, *Vault) {
	t.Helper()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, opts)
	setupTooken(t, v, e)
	return e, v
}

// WriteRole writes mount/roles/name with key=value arguments.
func (v *Vault) WriteRole(t testing.TB, mount, name string, kv ...string) {
	t.Helper()
	v.MustRun(t, append([]string{"write", mount + "/roles/" + name}, kv...)...)
}

// Creds is the answer of `vault read -format=json tooken/creds/<role>`.
type Creds struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	Data          struct {
		Token     string   `json:"token"`
		TokenID   string   `json:"token_id"`
		Name      string   `json:"name"`
		Scopes    []string `json:"scopes"`
		ExpiresAt string   `json:"expires_at"`
	} `json:"data"`
}

// ExpiresAt parses Data.ExpiresAt.
func (c Creds) ExpiresAt(t testing.TB) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, c.Data.ExpiresAt)
	if err != nil {
		t.Fatalf("creds expires_at %q: %v", c.Data.ExpiresAt, err)
	}
	return ts
}

// ReadCreds runs `vault read -format=json mount/creds/role` with token ("" = root).
func (v *Vault) ReadCreds(t testing.TB, mount, role, token string) Creds {
	t.Helper()
	out, errOut, err := v.Run(t, Run{Token: token}, "read", "-format=json", mount+"/creds/"+role)
	if err != nil {
		t.Fatalf("vault read %s/creds/%s: %v\n%s", mount, role, err, errOut)
	}
	var c Creds
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("decoding creds: %v", err)
	}
	if c.Data.Token == "" || c.Data.TokenID == "" || c.LeaseID == "" {
		t.Fatalf("creds answer lacks token, token_id or lease_id (fields: token_id=%q name=%q lease_id=%q)",
			c.Data.TokenID, c.Data.Name, c.LeaseID)
	}
	return c
}

// ReadWorkingCreds reads creds (token "" = root) and fails the test, saying what, unless the
// issued secret works upstream (GET /v1/tokens/self answers 200).
func (v *Vault) ReadWorkingCreds(t testing.TB, e *Emulator, mount, role, token, what string) Creds {
	t.Helper()
	c := v.ReadCreds(t, mount, role, token)
	if got := e.SelfStatus(t, c.Data.Token); got != http.StatusOK {
		t.Fatalf("%s: status %d", what, got)
	}
	return c
}

// CredsLoad starts n goroutines that read path (e.g. "tooken/creds/ci") back to back with the
// root token, each read bounded by timeout, and hands every answer to each (called from those
// goroutines at once). stop ends the loops and waits for the reads in flight.
func (v *Vault) CredsLoad(path string, n int, timeout time.Duration, each func(*api.Secret, error)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				s, err := v.Client.Logical().ReadWithContext(ctx, path)
				cancel()
				each(s, err)
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

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

// EnableFileAudit enables a file audit device writing to v.Dir/audit.log and returns that path.
func (v *Vault) EnableFileAudit(t testing.TB) string {
	t.Helper()
	path := filepath.Join(v.Dir, "audit.log")
	v.MustRun(t, "audit", "enable", "file", "file_path="+path)
	return path
}

// ---------------------------------------------------------------------------------------------
// Vault Agent

// AgentOptions configure StartAgent. Templates map a destination file name (under the agent's
// folder) to template contents.
type AgentOptions struct {
	Token     string            // the token Agent authenticates with (auto_auth token_file)
	Templates map[string]string // destination base name -> template contents
	LogLevel  string            // default "debug"
}

// Agent is a running `vault agent`.
type Agent struct {
	Dir     string
	LogPath string
	p       *proc
}

// File returns the path of a rendered template.
func (a *Agent) File(name string) string { return filepath.Join(a.Dir, name) }

// StartAgent starts Vault Agent against v; stopped by t.Cleanup.
func (v *Vault) StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{Dir: dir, LogPath: filepath.Join(dir, "agent.log")}
	tokenFile := filepath.Join(dir, "agent-token")
	if err := os.WriteFile(tokenFile, []byte(opts.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "vault {\n  address = %q\n}\n", v.Addr)
	fmt.Fprintf(&cfg, "auto_auth {\n  method \"token_file\" {\n    config = {\n      token_file_path = %q\n    }\n  }\n}\n", tokenFile)
	for name, contents := range opts.Templates {
		fmt.Fprintf(&cfg, "template {\n  contents    = %q\n  destination = %q\n  perms       = \"0600\"\n}\n",
			contents, filepath.Join(dir, name))
	}
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	a.p = startProc(t, "vault agent", a.LogPath, cleanEnv(filepath.Join(dir, "home")), nil, v.Bins.Vault,
		"agent", "-config="+cfgPath, "-log-level="+level)
	t.Cleanup(func() { a.Stop() })
	return a
}

// Stop stops Agent.
func (a *Agent) Stop() { a.p.stop(10 * time.Second) }

// Exited tells whether Agent has exited.
func (a *Agent) Exited() bool { return a.p.exited() }

// ---------------------------------------------------------------------------------------------
// Checks and small helpers

// assertNoSecrets fails the test if any secret appears in any file (missing files are skipped).
// Secrets are named by index only, so a failure prints no secret.
func assertNoSecrets(t testing.TB, files []string, secrets []string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			t.Fatalf("read %s: %v", f, err)
		}
		for i, s := range secrets {
			if s == "" {
				continue
			}
			if n := bytes.Count(b, []byte(s)); n > 0 {
				t.Errorf("%s holds plaintext secret #%d (%d times)", filepath.Base(f), i, n)
			}
		}
	}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// countLines counts the lines of a file that contain substr.
func countLines(t testing.TB, path, substr string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}
