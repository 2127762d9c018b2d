package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	tooken "github.com/tooken/vault-plugin-secrets-tooken"
)

// buildPlugin builds the plugin for goos/goarch as `make release` does, with
// extra linker flags, and returns the binary's path.
func buildPlugin(t *testing.T, goos, goarch, ldflags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "plugin_"+goos+"_"+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "../../cmd/vault-plugin-secrets-tooken")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s/%s: %v\n%s", goos, goarch, err, b)
	}
	return out
}

// TestStampedVersion reads the version back from an ELF and a Mach-O build
// (the native one and darwin/arm64 or linux/arm64), stamped and not, and
// refuses a binary without a symbol table.
func TestStampedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	other := "darwin"
	if runtime.GOOS == "darwin" {
		other = "linux"
	}
	stamp := "-w -X " + versionSymbol + "=v9.8.7-rc.1"
	for _, tc := range []struct{ name, goos, goarch, ldflags, want string }{
		{"native stamped", runtime.GOOS, runtime.GOARCH, stamp, "v9.8.7-rc.1"},
		{"other format stamped", other, "arm64", stamp, "v9.8.7-rc.1"},
		{"native default", runtime.GOOS, runtime.GOARCH, "-w", tooken.Version},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stampedVersion(buildPlugin(t, tc.goos, tc.goarch, tc.ldflags))
			if err != nil || got != tc.want {
				t.Fatalf("stampedVersion = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("stripped", func(t *testing.T) {
		_, err := stampedVersion(buildPlugin(t, runtime.GOOS, runtime.GOARCH, "-s -w"))
		if err == nil || !strings.Contains(err.Error(), "symbol table") {
			t.Fatalf("stampedVersion of a -s build: err = %v, want one naming the symbol table", err)
		}
	})
}

// A file that is no executable (README.md, a checksum list) is named as
// such, not with the object file reader's "invalid magic number".
func TestStampedVersion_NotABinary(t *testing.T) {
	_, err := stampedVersion("../../README.md")
	if err == nil || !strings.HasPrefix(err.Error(), "not a plugin binary: neither a linux (ELF) nor a darwin (Mach-O) executable") || strings.Contains(err.Error(), "magic") {
		t.Fatalf("stampedVersion(README.md): err = %v", err)
	}
}
