package e2e

// The Tooken emulator: the cmd/tooken-server binary on free loopback ports, and its admin API
// (tookentest.AdminHandler), decoded into the emulator's own types.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// EmulatorOptions configure startEmulator.
type EmulatorOptions struct {
	RootScopes []string // default: the emulator's (tokens:write, deployments:write, billing:read)
	Args       []string // more flags for tooken-server (e.g. --rate-limit)
	// Stateless runs without a state file, so that Stop and Start lose every token. The emulator
	// rewrites its state file on every change, which costs O(tokens) per request: benchmarks
	// with many tokens need this.
	Stateless bool
	Quiet     bool // no log line per request (--quiet)
}

// Emulator is a running tooken-server process.
type Emulator struct {
	URL            string // API base URL, ending in /v1
	AdminURL       string // admin API base, e.g. http://127.0.0.1:P (paths /admin/...)
	RootSecret     string
	RootSecretFile string
	StatePath      string // "" when Stateless
	LogPath        string

	bin  string
	args []string
	env  []string
	p    *proc
	http *http.Client
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
	}
	if !opts.Stateless {
		e.StatePath = filepath.Join(dir, "tooken-state.json")
		e.args = append(e.args, "--state", e.StatePath)
	}
	if opts.Quiet {
		e.args = append(e.args, "--quiet")
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

// PID is the process id of the running emulator.
func (e *Emulator) PID() int { return e.p.pid() }

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

// Tokens lists every token the emulator ever made, oldest first.
func (e *Emulator) Tokens(t testing.TB) []tookentest.TokenRecord {
	t.Helper()
	var list []tookentest.TokenRecord
	e.Admin(t, http.MethodGet, "/admin/tokens", nil, &list)
	return list
}

// LiveTokens lists the tokens whose state is live.
func (e *Emulator) LiveTokens(t testing.TB) []tookentest.TokenRecord {
	t.Helper()
	var list []tookentest.TokenRecord
	e.Admin(t, http.MethodGet, "/admin/tokens?state=live", nil, &list)
	return list
}

// LiveOfMount lists the live tokens whose vault_mount_uuid metadata is mountUUID: those the
// engine mounted with that backend UUID issued (see mountIDOf).
func (e *Emulator) LiveOfMount(t testing.TB, mountUUID string) []tookentest.TokenRecord {
	t.Helper()
	var out []tookentest.TokenRecord
	for _, tok := range e.LiveTokens(t) {
		if tok.Metadata["vault_mount_uuid"] == mountUUID {
			out = append(out, tok)
		}
	}
	return out
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

// Token returns one token by id (GET /admin/tokens/{id}).
func (e *Emulator) Token(t testing.TB, id string) (tookentest.TokenRecord, bool) {
	t.Helper()
	status, raw := e.adminCall(t, http.MethodGet, "/admin/tokens/"+id, nil)
	if status == http.StatusNotFound {
		return tookentest.TokenRecord{}, false
	}
	if status != http.StatusOK {
		t.Fatalf("admin GET /admin/tokens/%s: status %d: %s", id, status, raw)
	}
	var rec tookentest.TokenRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatalf("admin GET /admin/tokens/%s: decoding %s: %v", id, raw, err)
	}
	return rec, true
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

// auth asks the emulator whether a secret is accepted now, and by which token (POST /admin/auth).
func (e *Emulator) auth(t testing.TB, secret string) (valid bool, tokenID string) {
	t.Helper()
	var out struct {
		Valid   bool    `json:"valid"`
		TokenID *string `json:"token_id"`
	}
	e.Admin(t, http.MethodPost, "/admin/auth", map[string]string{"secret": secret}, &out)
	if out.TokenID != nil {
		tokenID = *out.TokenID
	}
	return out.Valid, tokenID
}

// SecretValid asks the emulator whether a secret is accepted now.
func (e *Emulator) SecretValid(t testing.TB, secret string) bool {
	t.Helper()
	valid, _ := e.auth(t, secret)
	return valid
}

// TokenIDOf returns the id of the token a secret belongs to ("" when the secret is not accepted).
func (e *Emulator) TokenIDOf(t testing.TB, secret string) string {
	t.Helper()
	valid, id := e.auth(t, secret)
	if !valid {
		return ""
	}
	return id
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

// Counter reads one of the emulator's counters (GET /admin/counters): requests, created,
// rotated, revoked, rate_limited, ... (tookentest.Server.Counters).
func (e *Emulator) Counter(t testing.TB, name string) int64 {
	t.Helper()
	var c map[string]int64
	e.Admin(t, http.MethodGet, "/admin/counters", nil, &c)
	v, ok := c[name]
	if !ok {
		t.Fatalf("the emulator has no counter %q", name)
	}
	return v
}

// InFlight is how many API requests the emulator has received and not answered yet: the
// requests counter counts each on arrival, the request log records each once answered. It holds
// while the log has not wrapped (tookentest.MaxRequestLog requests since the start).
func (e *Emulator) InFlight(t testing.TB) int64 {
	t.Helper()
	var log []tookentest.RequestRecord
	e.Admin(t, http.MethodGet, "/admin/requests", nil, &log)
	return e.Counter(t, "requests") - int64(len(log))
}

// WaitIdle waits until the emulator has answered every API request it received (those delayed
// by a latency fault included, even when their caller is gone).
func (e *Emulator) WaitIdle(t testing.TB, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "the emulator answers every request it received", func() (bool, string) {
		n := e.InFlight(t)
		return n == 0, fmt.Sprintf("%d in flight", n)
	})
}

// AddFault installs a fault (POST /admin/faults).
func (e *Emulator) AddFault(t testing.TB, f tookentest.Fault) {
	t.Helper()
	e.Admin(t, http.MethodPost, "/admin/faults", f, nil)
}

// ClearFaults removes every fault (DELETE /admin/faults).
func (e *Emulator) ClearFaults(t testing.TB) {
	t.Helper()
	e.Admin(t, http.MethodDelete, "/admin/faults", nil, nil)
}

// SetDown starts or ends an outage of the API (POST /admin/down): every call answers 503.
func (e *Emulator) SetDown(t testing.TB, down bool) {
	t.Helper()
	e.Admin(t, http.MethodPost, "/admin/down", map[string]bool{"down": down}, nil)
}

// SetRateLimit sets the per-caller rate limit (rps < 0: none) and refills every bucket
// (POST /admin/ratelimit).
func (e *Emulator) SetRateLimit(t testing.TB, rps float64, burst int) {
	t.Helper()
	e.Admin(t, http.MethodPost, "/admin/ratelimit", map[string]any{"rps": rps, "burst": burst}, nil)
}
