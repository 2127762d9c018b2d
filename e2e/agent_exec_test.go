package e2e

// TOOKEN_TOKEN for a long-running app (examples/agent-exec): Vault Agent as the app's process
// supervisor (agent-exec.hcl: env_template + exec), and Agent rendering a file the app re-reads
// (agent-file.hcl). The shipped set-up script, Agent configurations and apps (Node.js and
// Python) run as shipped; the test replaces only the placeholder folders /etc/tooken-app (the
// AppRole files, the rendered token) and /opt/tooken-app (the apps).

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleApps are the shipped apps, each with the command line agent-exec.hcl runs it with.
var exampleApps = []struct {
	name    string
	command []string
}{
	{"node", []string{"node", "/opt/tooken-app/app.js"}},
	{"python", []string{"python3", "/opt/tooken-app/app.py"}},
}

// The role's lifetimes in these tests: short, so that Agent must replace the token within the
// test, as it does once a day with the defaults of setup.sh. Agent replaces a secret when what
// is left of its lease falls within a grace of 10 to 20% of the lease TTL, and then stops the
// app and starts it again: a TTL of 30s leaves it 3 to 6 s for that, enough on a loaded 2-core
// machine. (With 15s, the margin once came down to a second under the full e2e load, and the old
// app, not yet stopped, saw its token revoked at the lease's end.)
var appRoleTTLs = []string{"TTL=30s", "MAX_TTL=70s"}

// appLog is what an example app printed: one line per start, per working check (the token's id)
// and per failed check.
type appLog struct {
	starts   int
	tokens   []string // distinct token ids that worked, in order
	failures []string // checks that did not get a 200
}

var (
	appStartLine = regexp.MustCompile(`tooken-app\[\w+\]: started, pid \d+`)
	appWorksLine = regexp.MustCompile(`tooken-app\[\w+\]: token (tkn_[0-9a-z]+) works`)
	appFailLine  = regexp.MustCompile(`tooken-app\[\w+\]: (GET /tokens/self answered \d+|calling Tooken failed.*)`)
)

func readAppLog(path string) appLog {
	b, _ := os.ReadFile(path)
	var l appLog
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case appStartLine.MatchString(line):
			l.starts++
		case appWorksLine.MatchString(line):
			if id := appWorksLine.FindStringSubmatch(line)[1]; !slices.Contains(l.tokens, id) {
				l.tokens = append(l.tokens, id)
			}
		case appFailLine.MatchString(line):
			l.failures = append(l.failures, appFailLine.FindStringSubmatch(line)[1])
		}
	}
	return l
}

// waitAppTokens waits until the app's log shows it working with n tokens, each a token this
// engine issued for role app, and no failed check.
func waitAppTokens(t *testing.T, e *Emulator, logPath string, n int, timeout time.Duration) appLog {
	t.Helper()
	var l appLog
	eventually(t, timeout, "the app works with a new token after its first one's lease ends", func() (bool, string) {
		l = readAppLog(logPath)
		if len(l.failures) > 0 {
			t.Fatalf("the app's checks failed: %q\n%s", l.failures, tail(logPath, 2000))
		}
		return len(l.tokens) >= n, tail(logPath, 1500)
	})
	for _, id := range l.tokens {
		if tok, ok := e.Token(t, id); !ok || tok.Metadata["vault_role"] != "app" {
			t.Errorf("token %s the app used: not one the engine issued for role app: %+v", id, tok)
		}
	}
	return l
}

// appConfig is a shipped Agent configuration with its placeholder folders replaced: appDir
// for /etc/tooken-app and, in the supervisor's, the example's folder for /opt/tooken-app.
func appConfig(t *testing.T, file, appDir string) string {
	t.Helper()
	oldNew := []string{"/etc/tooken-app", appDir}
	if file == "agent-exec.hcl" {
		oldNew = append(oldNew, "/opt/tooken-app", filepath.Dir(examplePath(t, "agent-exec/app.js")))
	}
	return substitute(t, file, readExample(t, "agent-exec/"+file), oldNew...)
}

// setUpApp starts an emulator and a Vault with the engine, and runs the example's set-up script;
// it returns the folder that plays /etc/tooken-app.
func setUpApp(t *testing.T) (*Emulator, *Vault, string) {
	t.Helper()
	e, v := startTooken(t, VaultOptions{})
	appDir := t.TempDir()
	v.runExampleScript(t, "agent-exec/setup.sh", append([]string{"APP_DIR=" + appDir}, appRoleTTLs...)...)
	for _, f := range []string{"role-id", "secret-id"} {
		if st, err := os.Stat(filepath.Join(appDir, f)); err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
			t.Fatalf("setup.sh wrote %s: %v %v", f, st, err)
		}
	}
	return e, v, appDir
}

// Agent in process-supervisor mode starts the app with TOOKEN_TOKEN in its environment and, before
// the lease's max TTL, restarts it with a new token: every check the app makes, from start to
// restart, works.
func TestAgentExecRestartsApp(t *testing.T) {
	t.Parallel()
	for _, app := range exampleApps {
		t.Run(app.name, func(t *testing.T) {
			t.Parallel()
			e, v, appDir := setUpApp(t)
			cfg := readExample(t, "agent-exec/agent-exec.hcl")
			if !strings.Contains(cfg, `command                   = ["node", "/opt/tooken-app/app.js"]`) ||
				!strings.Contains(cfg, `["python3", "/opt/tooken-app/app.py"]`) {
				t.Fatal("agent-exec.hcl does not run app.js, or does not say how to run app.py")
			}
			cfg = appConfig(t, "agent-exec.hcl", appDir)
			if app.name != "node" {
				cfg = strings.Replace(cfg, `["node", "`+filepath.Dir(examplePath(t, "agent-exec/app.js"))+`/app.js"]`,
					`["`+app.command[0]+`", "`+filepath.Dir(examplePath(t, "agent-exec/app.js"))+`/app.py"]`, 1)
			}
			a := v.StartAgent(t, AgentOptions{Config: cfg, Env: []string{
				"VAULT_ADDR=" + v.Addr, "TOOKEN_URL=" + e.URL, "TOOKEN_CHECK_INTERVAL=1",
			}})
			l := waitAppTokens(t, e, a.LogPath, 2, 2*time.Minute)
			if l.starts < 2 {
				t.Errorf("the app started %d times with %d tokens: Agent did not restart it", l.starts, len(l.tokens))
			}
			t.Logf("%s app: %d starts, tokens %v", app.name, l.starts, l.tokens)
			a.Stop()
			assertNoSecrets(t, []string{a.LogPath, v.LogPath}, []string{e.RootSecret})
		})
	}
}

// Agent rendering a file: the app, started on its own, reads the file before every call and keeps
// working across the token's replacement; the same app given the token once at start (the
// file mode's caveat) fails once that token's lease ends.
func TestAgentFileTemplateApp(t *testing.T) {
	t.Parallel()
	for _, app := range exampleApps {
		t.Run(app.name, func(t *testing.T) {
			t.Parallel()
			e, v, appDir := setUpApp(t)
			a := v.StartAgent(t, AgentOptions{Config: appConfig(t, "agent-file.hcl", appDir), Env: []string{"VAULT_ADDR=" + v.Addr}})
			tokenFile := filepath.Join(appDir, "token")
			eventually(t, 30*time.Second, "Agent renders the token file", func() (bool, string) {
				b, _ := os.ReadFile(tokenFile)
				return strings.HasPrefix(string(b), "tok_"), tail(a.LogPath, 1500)
			})
			if st, err := os.Stat(tokenFile); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("token file: %v %v, want mode 0600", st, err)
			}
			first, _ := os.ReadFile(tokenFile)
			script := filepath.Join(filepath.Dir(examplePath(t, "agent-exec/app.js")), filepath.Base(app.command[1]))
			startApp := func(name string, env ...string) string {
				logPath := filepath.Join(t.TempDir(), name+".log")
				p := startProc(t, name, logPath, cleanEnv(t.TempDir(),
					append(env, "TOOKEN_URL="+e.URL, "TOOKEN_CHECK_INTERVAL=1")...), nil, app.command[0], script)
				t.Cleanup(func() { p.stop(5 * time.Second) })
				return logPath
			}
			rereads := startApp(app.name+" app", "TOOKEN_TOKEN_FILE="+tokenFile)
			// The caveat: the same app given the token once, in TOOKEN_TOKEN, as it was at start.
			readsOnce := startApp(app.name+" app reading once", "TOOKEN_TOKEN="+strings.TrimSpace(string(first)))

			l := waitAppTokens(t, e, rereads, 2, 2*time.Minute)
			if l.starts != 1 {
				t.Errorf("the app started %d times, want once", l.starts)
			}
			t.Logf("%s app: tokens %v", app.name, l.tokens)
			eventually(t, time.Minute, "an app that read the token once fails once its lease ended", func() (bool, string) {
				return slices.Contains(readAppLog(readsOnce).failures, "GET /tokens/self answered 401"), tail(readsOnce, 500)
			})
			assertNoSecrets(t, []string{a.LogPath, rereads, readsOnce}, []string{e.RootSecret, string(first)})
		})
	}
}
