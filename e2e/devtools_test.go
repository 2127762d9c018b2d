package e2e

// The repository's own tools as a newcomer uses them: make dev's playground and what it prints to
// type next, and make release building one version beside another.

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runDevScript runs scripts/dev.sh (args: none to start, "stop") with its own ports and .dev
// folder, the binaries of the test, and returns its output and exit status.
func runDevScript(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"../scripts/dev.sh"}, args...)...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("dev.sh %v: %v\n%s", args, err, out.String())
	}
	return out.String(), code
}

// TestDevPlayground starts make dev's playground detached, follows the static-role recipe it
// prints (after a rotate-root, which is what made the root secret file useless before), and
// stops it twice: the second stop says that nothing was running.
func TestDevPlayground(t *testing.T) {
	t.Parallel()
	b := requireBinaries(t)
	dir := t.TempDir()
	devDir := filepath.Join(dir, "dev")
	vaultPort := freePort(t, true)
	env := cleanEnv(filepath.Join(dir, "home"),
		"DEV_DETACH=1", "DEV_DIR="+devDir, "VAULT_BIN="+b.Vault, "VERSION="+b.PluginVersion,
		"TOOKEN_PLUGIN_BIN="+b.Plugin, "TOOKEN_SERVER_BIN="+b.Server,
		"VAULT_PORT="+strconv.Itoa(vaultPort), "TOOKEN_PORT="+strconv.Itoa(freePort(t, false)),
		"TOOKEN_ADMIN_PORT="+strconv.Itoa(freePort(t, false)))
	t.Cleanup(func() { runDevScript(t, env, "stop") })

	// The dev cluster port taken: the message says which port it is.
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(vaultPort+1))
	if err != nil {
		t.Fatal(err)
	}
	out, code := runDevScript(t, env)
	l.Close()
	if want := "port " + strconv.Itoa(vaultPort+1) + " on 127.0.0.1 (Vault's cluster port, VAULT_PORT+1) is in use"; code != 1 || !strings.Contains(out, want) {
		t.Fatalf("dev.sh with the cluster port taken: exit %d, want 1 and %q:\n%s", code, want, out)
	}

	out, code = runDevScript(t, env)
	if code != 0 {
		t.Fatalf("dev.sh: exit %d\n%s", code, out)
	}
	// What to type next, from "In another terminal:" on, as printed.
	next := out[strings.Index(out, "In another terminal:"):]
	recipe := regexp.MustCompile(`(?m)^  (vault (write|read) (-f )?tooken/(static-roles|static-creds|rotate-role)/partner1.*|curl -s .*)$`).FindAllString(next, -1)
	if len(recipe) != 5 {
		t.Fatalf("want the static-role recipe (3 vault commands, 2 curl) in what make dev prints, got %q:\n%s", recipe, next)
	}
	if strings.Contains(next, "curl -s http") {
		t.Errorf("an unquoted URL in a curl command (zsh globs its ?):\n%s", next)
	}
	shellEnv := append(env, "VAULT_ADDR=http://127.0.0.1:"+strconv.Itoa(vaultPort), "VAULT_TOKEN=root",
		"PATH="+filepath.Dir(b.Vault)+string(os.PathListSeparator)+os.Getenv("PATH"))
	shell := func(line string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "bash", "-c", line)
		c.Env = shellEnv
		got, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("$ %s: %v\n%s", line, err, got)
		}
		return string(got)
	}
	shell("vault write -f tooken/rotate-root")
	for _, line := range recipe {
		got := shell(strings.TrimSpace(line))
		switch {
		case strings.Contains(line, "static-creds/"):
			if !regexp.MustCompile(`token\s+tok_test_`).MatchString(got) {
				t.Errorf("static-creds answered no secret:\n%s", got)
			}
		case strings.Contains(line, "admin/tokens -d"), strings.Contains(line, "admin/tokens' -d"):
			if !strings.Contains(got, `"name":"partner2"`) || !strings.Contains(got, `"secret":"tok_test_`) {
				t.Errorf("the admin call made no token with its secret: %s", got)
			}
		}
	}

	if out, code := runDevScript(t, env, "stop"); code != 0 || !strings.Contains(out, "stopped vault") {
		t.Errorf("dev.sh stop: exit %d\n%s", code, out)
	}
	if out, code := runDevScript(t, env, "stop"); code != 0 || !strings.Contains(out, "nothing to stop: no playground is running") {
		t.Errorf("a second dev.sh stop: exit %d, want 0 and a word that nothing ran:\n%s", code, out)
	}
}

// TestMakeRelease builds two versions into one dist/: the second keeps the first's binary and
// checksums, and each version's SHA256SUMS verifies.
func TestMakeRelease(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	dir := t.TempDir()
	dist, bin := filepath.Join(dir, "dist"), filepath.Join(dir, "bin")
	for _, v := range []string{"v0.1.0", "v0.1.1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, "make", "-C", "..", "release", "VERSION="+v, "PLATFORMS=linux/amd64", "DIST_DIR="+dist, "BIN_DIR="+bin)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("make release VERSION=%s: %v\n%s", v, err, out)
		}
		if v == "v0.1.1" && !strings.Contains(string(out), "release: kept in dist/ (other versions): "+pluginName+"_v0.1.0_SHA256SUMS "+pluginName+"_v0.1.0_linux_amd64") {
			t.Errorf("the second release does not say what it kept:\n%s", out)
		}
	}
	for _, v := range []string{"v0.1.0", "v0.1.1"} {
		sums := pluginName + "_" + v + "_SHA256SUMS"
		b, err := os.ReadFile(filepath.Join(dist, sums))
		if err != nil || strings.Count(string(b), "\n") != 1 || !strings.Contains(string(b), pluginName+"_"+v+"_linux_amd64") {
			t.Fatalf("%s: %v %q", sums, err, b)
		}
		check := exec.Command("sha256sum", "-c", sums)
		check.Dir = dist
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c %s: %v\n%s", sums, err, out)
		}
		got, err := exec.Command(filepath.Join(bin, "stampedversion"), filepath.Join(dist, pluginName+"_"+v+"_linux_amd64")).Output()
		if err != nil || strings.TrimSpace(string(got)) != v {
			t.Errorf("stampedversion of the %s binary: %q %v", v, got, err)
		}
	}
}

// devRun is make dev running in the foreground on a terminal of its own (script(1) gives it a
// pseudo-terminal, as a user's shell has), with its output.
type devRun struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuf
	done  chan struct{}
	code  int
}

// syncBuf is an output buffer that the test reads while make writes it.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startMakeDev runs `make dev` on a pseudo-terminal (its build step taken as done: the test's
// binaries are given) and waits until it says that Ctrl-C stops it.
func startMakeDev(t *testing.T, env []string) *devRun {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed: no pseudo-terminal for make dev")
	}
	r := &devRun{out: &syncBuf{}, done: make(chan struct{})}
	r.cmd = exec.Command("script", "-qefc", "make --no-print-directory -C .. -o build dev", "/dev/null")
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := r.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.stdin = stdin
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := r.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			r.code = -1
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	eventually(t, 2*time.Minute, "make dev says Ctrl-C stops it", func() (bool, string) {
		select {
		case <-r.done:
			t.Fatalf("make dev ended (exit %d) before it was ready:\n%s", r.code, r.out.String())
		default:
		}
		return strings.Contains(r.out.String(), "Press Ctrl-C to stop"), "not yet"
	})
	return r
}

// ctrlC types Ctrl-C on make dev's terminal.
func (r *devRun) ctrlC(t *testing.T) {
	t.Helper()
	if _, err := r.stdin.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
}

// wait waits for make dev to end, at most a minute.
func (r *devRun) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		t.Fatalf("make dev did not end within a minute of %s:\n%s", what, r.out.String())
	}
}

// TestDevForeground: make dev in the foreground on a terminal. A second make dev takes over from
// the first, which ends quietly with exit 0; Ctrl-C ends the second with exit 0 and no make error.
func TestDevForeground(t *testing.T) {
	t.Parallel()
	b := requireBinaries(t)
	dir := t.TempDir()
	env := cleanEnv(filepath.Join(dir, "home"),
		"DEV_DIR="+filepath.Join(dir, "dev"), "VAULT_BIN="+b.Vault, "VERSION="+b.PluginVersion,
		"TOOKEN_PLUGIN_BIN="+b.Plugin, "TOOKEN_SERVER_BIN="+b.Server,
		"VAULT_PORT="+strconv.Itoa(freePort(t, true)), "TOOKEN_PORT="+strconv.Itoa(freePort(t, false)),
		"TOOKEN_ADMIN_PORT="+strconv.Itoa(freePort(t, false)))
	t.Cleanup(func() { runDevScript(t, env, "stop") })

	first := startMakeDev(t, env)
	second := startMakeDev(t, env)
	first.wait(t, "a second make dev")
	if out := first.out.String(); first.code != 0 || strings.Contains(out, "make: ***") || strings.Contains(out, "exited unexpectedly") {
		t.Errorf("the first make dev, taken over by a second: exit %d, want 0 and quiet:\n%s", first.code, out)
	}

	second.ctrlC(t)
	second.wait(t, "Ctrl-C")
	if out := second.out.String(); second.code != 0 || strings.Contains(out, "make: ***") || strings.Contains(out, "Error 130") {
		t.Errorf("make dev after Ctrl-C: exit %d, want 0 and no make error:\n%s", second.code, out)
	}
	if out, _ := runDevScript(t, env, "stop"); !strings.Contains(out, "nothing to stop") {
		t.Errorf("after Ctrl-C something was still running: dev.sh stop said\n%s", out)
	}
}
