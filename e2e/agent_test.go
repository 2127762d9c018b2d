package e2e

// Vault Agent: a `vault agent` process against a Vault of the harness, with a configuration built
// from options (token_file auto-auth, templates, more stanzas) or given whole; and its tests.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// AgentOptions configure StartAgent. Unless Config or ConfigFile gives the whole configuration,
// it is built as: vault { address = the Vault }, auto_auth (token_file holding Token, or AutoAuth
// as is), one template stanza per Templates entry (mode 0600), then Extra as is.
type AgentOptions struct {
	Token     string            // the token Agent authenticates with (auto_auth token_file)
	AutoAuth  string            // a whole auto_auth stanza instead of token_file (e.g. a jwt method)
	Templates map[string]string // destination base name (under Dir) -> template contents
	Extra     string            // more HCL: exec, env_template, template_config, api_proxy, ...
	Config    string            // the whole configuration (HCL) instead of the built one
	// ConfigFile names an existing configuration file to use as is.
	ConfigFile string
	// Dir is the agent's folder (rendered files, token file, config, log); default a new temp
	// dir. Create it first to put files there that the configuration names (a JWT, a script).
	Dir      string
	Env      []string // more environment for the agent (and the child it supervises)
	LogLevel string   // default "debug"
}

// Agent is a running `vault agent`.
type Agent struct {
	Dir        string
	ConfigPath string
	LogPath    string
	p          *proc
}

// File returns the path of a file in the agent's folder (a rendered template).
func (a *Agent) File(name string) string { return filepath.Join(a.Dir, name) }

// StartAgent starts Vault Agent against v; stopped by t.Cleanup.
func (v *Vault) StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	a := &Agent{Dir: dir, ConfigPath: opts.ConfigFile, LogPath: filepath.Join(dir, "agent.log")}
	if a.ConfigPath == "" {
		cfg := opts.Config
		if cfg == "" {
			cfg = v.agentConfig(t, dir, opts)
		}
		a.ConfigPath = filepath.Join(dir, "agent.hcl")
		if err := os.WriteFile(a.ConfigPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	a.p = startProc(t, "vault agent", a.LogPath, cleanEnv(home, opts.Env...), nil, v.Bins.Vault,
		"agent", "-config="+a.ConfigPath, "-log-level="+level)
	t.Cleanup(func() { a.Stop() })
	return a
}

// agentConfig builds the configuration of opts (see AgentOptions), writing the token file into dir.
func (v *Vault) agentConfig(t testing.TB, dir string, opts AgentOptions) string {
	t.Helper()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "vault {\n  address = %q\n}\n", v.Addr)
	if opts.AutoAuth != "" {
		cfg.WriteString(opts.AutoAuth + "\n")
	} else {
		tokenFile := filepath.Join(dir, "agent-token")
		if err := os.WriteFile(tokenFile, []byte(opts.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "auto_auth {\n  method \"token_file\" {\n    config = {\n      token_file_path = %q\n    }\n  }\n}\n", tokenFile)
	}
	names := make([]string, 0, len(opts.Templates))
	for name := range opts.Templates {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&cfg, "template {\n  contents    = %q\n  destination = %q\n  perms       = \"0600\"\n}\n",
			opts.Templates[name], filepath.Join(dir, name))
	}
	cfg.WriteString(opts.Extra)
	return cfg.String()
}

// WaitFile waits until the file name of the agent's folder holds contents (trimmed of white
// space) for which cond is true, and returns them; it fails the test, saying what, on timeout or
// when Agent exits.
func (a *Agent) WaitFile(t testing.TB, name string, timeout time.Duration, what string, cond func(string) bool) string {
	t.Helper()
	var got string
	eventually(t, timeout, what, func() (bool, string) {
		if a.Exited() {
			t.Fatalf("vault agent exited:\n%s", tail(a.LogPath, 3000))
		}
		b, _ := os.ReadFile(a.File(name))
		got = strings.TrimSpace(string(b))
		return cond(got), tail(a.LogPath, 1500)
	})
	return got
}

// Stop stops Agent.
func (a *Agent) Stop() { a.p.stop(10 * time.Second) }

// Exited tells whether Agent has exited.
func (a *Agent) Exited() bool { return a.p.exited() }

// TestAgentRendersAndRefreshes: Vault Agent renders the token from tooken/creds/ci-deploy, the
// token works upstream, and Agent fetches a new one as the lease nears its max TTL.
func TestAgentRendersAndRefreshes(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=5s", "max_ttl=12s")
	appToken := ciDeployToken(t, v)

	a := v.StartAgent(t, AgentOptions{
		Token:     appToken,
		Templates: map[string]string{"ci-deploy.token": `{{ with secret "tooken/creds/ci-deploy" }}{{ .Data.token }}{{ end }}`},
	})
	isToken := func(s string) bool { return strings.HasPrefix(s, "tok_") }
	first := a.WaitFile(t, "ci-deploy.token", 30*time.Second, "agent renders the token", isToken)
	if st, err := os.Stat(a.File("ci-deploy.token")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("rendered file mode %v, want 0600", st.Mode().Perm())
	}
	if got := e.SelfStatus(t, first); got != 200 {
		t.Fatalf("rendered token: GET /v1/tokens/self = %d, want 200", got)
	}
	firstTok, ok := e.Token(t, e.TokenIDOf(t, first))
	if !ok || firstTok.ExpiresAt == nil {
		t.Fatalf("the rendered token is unknown upstream or never expires: %+v", firstTok)
	}

	second := a.WaitFile(t, "ci-deploy.token", 45*time.Second, "agent renders a new token before the lease's max TTL",
		func(s string) bool { return isToken(s) && s != first })
	// Agent must replace the token before the first one's max TTL, not after it died (expires_at
	// has a resolution of one second).
	if ahead := firstTok.ExpiresAt.Sub(time.Now()); ahead < -time.Second {
		t.Errorf("agent rendered a new token %s after the first one's end", -ahead)
	} else {
		t.Logf("agent rendered a new token %s before the first one's end", ahead.Round(100*time.Millisecond))
	}
	if got := e.SelfStatus(t, second); got != 200 {
		t.Fatalf("re-rendered token: GET /v1/tokens/self = %d, want 200", got)
	}
	// The first lease ends at its max TTL: Vault revokes it, the first token dies upstream.
	eventually(t, 30*time.Second, "the first token is revoked after its lease ends", func() (bool, string) {
		s := e.SelfStatus(t, first)
		return s == 401, fmt.Sprint("status ", s)
	})
	a.Stop()
	assertNoSecrets(t, []string{v.LogPath, e.LogPath, a.LogPath}, []string{e.RootSecret, first, second})
}
