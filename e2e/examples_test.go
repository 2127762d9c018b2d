package e2e

// The recipes of examples/ as the tests run them: their set-up scripts through bash with the
// vault CLI on PATH, their files read as shipped, so that what the README tells users to copy is
// what passed here.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// examplePath is the path of a file of examples/ (e.g. "github-actions/setup.sh").
func examplePath(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("examples/%s: %v", name, err)
	}
	return p
}

// readExample returns the contents of a file of examples/.
func readExample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(examplePath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runExampleScript runs a set-up script of examples/ with bash, as a user would: VAULT_ADDR of v,
// the root token, v's vault binary first on PATH, and env (KEY=value) for the script's settings.
// It fails the test with the script's output if the script fails.
func (v *Vault) runExampleScript(t testing.TB, name string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", examplePath(t, name))
	path := filepath.Dir(v.Bins.Vault) + string(os.PathListSeparator) + os.Getenv("PATH")
	cmd.Env = cleanEnv(filepath.Join(v.Dir, "home"),
		append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.RootToken, "PATH=" + path}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("examples/%s: %v\n%s", name, err, out.String())
	}
	return out.String()
}

// substitute replaces each old with its new in s, failing the test if an old is not there: the
// placeholders of an example must be the ones the test replaces.
func substitute(t testing.TB, what, s string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("%s has no %q to replace", what, oldNew[i])
		}
		s = strings.ReplaceAll(s, oldNew[i], oldNew[i+1])
	}
	return s
}
