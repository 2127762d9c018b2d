package e2e

// The README's examples, run as a user would paste them.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeCommands are the shell commands of the fenced sh/shell blocks in the README section
// that starts with heading (up to the next section of that level), continuation lines joined and
// trailing comments dropped.
func readmeCommands(t *testing.T, heading string) []string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("README has no %q", heading)
	}
	text = text[start+len(heading)+2:]
	level := heading[:strings.Index(heading, " ")+1]
	if end := strings.Index(text, "\n"+level); end >= 0 {
		text = text[:end]
	}
	var cmds []string
	block := regexp.MustCompile("(?s)```(?:sh|shell)\n(.*?)```")
	comment := regexp.MustCompile(`\s+# .*$`)
	for _, m := range block.FindAllStringSubmatch(text, -1) {
		joined := strings.ReplaceAll(m[1], "\\\n", " ")
		for _, line := range strings.Split(joined, "\n") {
			if line = strings.TrimSpace(comment.ReplaceAllString(line, "")); line != "" {
				cmds = append(cmds, line)
			}
		}
	}
	return cmds
}

// TestReadmeExamples runs every command of the README's Examples against a dev Vault (the plugin
// registered with its version, which the examples enable) and the emulator, with the emulator's URL and root secret file in place of Tooken's, its admin API in
// place of make dev's, and the lease the session's creds read made in place of <lease id>.
func TestReadmeExamples(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, VaultOptions{})
	v.RegisterPlugin(t) // with its sha256 and version, as the README's install section does
	cmds := readmeCommands(t, "## Examples")
	if len(cmds) < 10 {
		t.Fatalf("found %d commands in the README's Examples: %q", len(cmds), cmds)
	}
	env := cleanEnv(filepath.Join(v.Dir, "home"), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.RootToken,
		"PATH="+filepath.Dir(v.Bins.Vault)+string(os.PathListSeparator)+os.Getenv("PATH"))
	leaseID := regexp.MustCompile(`lease_id\s+(\S+)`)
	lease := ""
	for _, cmd := range cmds {
		cmd = strings.ReplaceAll(cmd, "https://api.tooken.io/v1", e.URL)
		cmd = strings.ReplaceAll(cmd, "< root-secret", "< "+e.RootSecretFile)
		cmd = strings.ReplaceAll(cmd, "http://127.0.0.1:8301", e.AdminURL) // make dev's admin API
		cmd = strings.ReplaceAll(cmd, "-plugin-version=v0.1.0 ", "-plugin-version="+v.Bins.PluginVersion+" ")
		if strings.Contains(cmd, "<lease id>") {
			if lease == "" {
				t.Fatalf("%s: no lease read before", cmd)
			}
			cmd = strings.ReplaceAll(cmd, "tooken/creds/ci-deploy/<lease id>", lease)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c := exec.CommandContext(ctx, "bash", "-c", cmd)
		c.Env = env
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		cancel()
		if err != nil {
			t.Fatalf("README example %q: %v\n%s%s", cmd, err, out.String(), errOut.String())
		}
		if m := leaseID.FindStringSubmatch(out.String()); m != nil && strings.Contains(cmd, "creds/") {
			lease = m[1]
		}
		t.Logf("$ %s: ok", cmd)
	}
	if lease == "" {
		t.Error("the examples read no creds")
	}
}
