package e2e

// Install, upgrade and roll back on a non-dev Vault, the way the README tells an operator to:
// two builds of this checkout stamped with two versions, side by side in the plugin directory.

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// runningVersion is the plugin version the mount runs, as `vault secrets list -detailed` and
// sys/mounts/<mount> show it (they must agree), and the version it is tuned to.
func runningVersion(t *testing.T, v *Vault, mount string) (running, tuned string) {
	t.Helper()
	var list map[string]map[string]any
	v.MustRunJSON(t, &list, "secrets", "list", "-detailed", "-format=json")
	m := list[mount+"/"]
	if m == nil {
		t.Fatalf("secrets list has no %s/", mount)
	}
	one := readData(t, v, "sys/mounts/"+mount)
	if one["running_plugin_version"] != m["running_plugin_version"] {
		t.Errorf("sys/mounts/%s running_plugin_version %v, secrets list %v", mount, one["running_plugin_version"], m["running_plugin_version"])
	}
	return fmt.Sprint(m["running_plugin_version"]), fmt.Sprint(m["plugin_version"])
}

// switchVersion tunes the mount to version and reloads the plugin, then waits until the mount
// runs that version from its own file.
func switchVersion(t *testing.T, v *Vault, mount, version, file string) {
	t.Helper()
	v.MustRun(t, "secrets", "tune", "-plugin-version="+version, mount+"/")
	if running, tuned := runningVersion(t, v, mount); tuned != version || running == version {
		t.Errorf("after tune, before reload: running %s, plugin_version %s; want the old one running and %s tuned", running, tuned, version)
	}
	v.MustRun(t, "plugin", "reload", "-plugin="+pluginName)
	eventually(t, time.Minute, mount+" runs "+version, func() (bool, string) {
		running, _ := runningVersion(t, v, mount)
		return running == version, "running " + running
	})
	readData(t, v, mount+"/config") // the mount answers, which starts its plugin
	if len(v.PluginPIDsOf(file)) == 0 {
		t.Errorf("no process of %s runs after the reload", file)
	}
}

// TestInstallUpgradeRollback: register v0.1.0 with sha256, version and a file name per version,
// enable it at that version, configure, read creds; register v0.2.0, tune and reload: the lease
// from v0.1.0 renews and revokes under v0.2.0, tidy finds the v0.1.0 tokens by the same mount id;
// roll back the same way, and the lease from v0.2.0 renews and revokes under v0.1.0.
func TestInstallUpgradeRollback(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startVault(t, VaultOptions{})
	bin1, bin2 := buildPlugin(t, "v0.1.0"), buildPlugin(t, "v0.2.0")

	file1 := v.InstallPlugin(t, Plugin{Name: pluginName, Version: "v0.1.0", Source: bin1})
	// Vault files a versioned plugin under its version only: info without -version is a 404.
	if out, errOut, err := v.Run(t, Run{}, "plugin", "info", "secret", pluginName); err == nil || !strings.Contains(errOut, "404") {
		t.Errorf("plugin info without -version: %v %s%s", err, out, errOut)
	}
	v.MustRun(t, "plugin", "info", "-version=v0.1.0", "secret", pluginName)
	v.EnablePlugin(t, "tooken", pluginName, "v0.1.0")
	if running, _ := runningVersion(t, v, "tooken"); running != "v0.1.0" {
		t.Fatalf("running %s after enable, want v0.1.0", running)
	}
	v.ConfigureTooken(t, "tooken", e)
	v.MustRun(t, "write", "-f", "tooken/rotate-root")
	v.WriteRole(t, "tooken", "ci", "scopes=deployments:write", "ttl=1h", "max_ttl=2h")
	a := v.ReadWorkingCreds(t, e, "tooken", "ci", "", "creds under v0.1.0")
	mountID := mountIDOf(t, e, a)
	if got := readData(t, v, "tooken/config")["mount_uuid"]; got != mountID {
		t.Errorf("config mount_uuid %v, tokens carry %s", got, mountID)
	}

	file2 := v.InstallPlugin(t, Plugin{Name: pluginName, Version: "v0.2.0", Source: bin2})
	switchVersion(t, v, "tooken", "v0.2.0", file2)
	if _, err := leaseRenew(t, v, a.LeaseID, "30m"); err != nil {
		t.Errorf("renew of the v0.1.0 lease under v0.2.0: %v", err)
	}
	b := v.ReadWorkingCreds(t, e, "tooken", "ci", "", "creds under v0.2.0")
	if got := readData(t, v, "tooken/config")["mount_uuid"]; got != mountID || mountIDOf(t, e, b) != mountID {
		t.Errorf("mount id changed by the upgrade: config %v, token %s, was %s", got, mountIDOf(t, e, b), mountID)
	}
	var tidy struct {
		Data map[string]any `json:"data"`
	}
	v.MustRunJSON(t, &tidy, "write", "-format=json", "-f", "tooken/tidy")
	if fmt.Sprint(tidy.Data["upstream_scanned"]) != "2" || fmt.Sprint(tidy.Data["accounted"]) != "2" {
		t.Errorf("tidy under v0.2.0: %v, want both tokens (one from each version) scanned and accounted for", tidy.Data)
	}
	v.MustRun(t, "lease", "revoke", a.LeaseID)
	waitRevoked(t, e, a, 15*time.Second)

	switchVersion(t, v, "tooken", "v0.1.0", file1)
	if _, err := leaseRenew(t, v, b.LeaseID, "30m"); err != nil {
		t.Errorf("renew of the v0.2.0 lease under v0.1.0: %v", err)
	}
	v.MustRun(t, "lease", "revoke", b.LeaseID)
	waitRevoked(t, e, b, 15*time.Second)
	v.ReadWorkingCreds(t, e, "tooken", "ci", "", "creds after the roll-back")
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, []string{e.RootSecret, a.Data.Token, b.Data.Token})
}
