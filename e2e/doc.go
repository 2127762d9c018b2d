// Package e2e holds end-to-end tests of the plugin inside a real Vault server (v1.14.1) talking to
// the Tooken emulator binary (cmd/tooken-server), driven through the vault CLI and
// github.com/hashicorp/vault/api the way users drive them.
//
// The tests need three binaries, found through the environment (`make test-e2e` sets them):
//
//	VAULT_BIN          a Vault v1.14.x binary (scripts/vault.sh prints one)
//	TOOKEN_PLUGIN_BIN  the plugin binary (or PLUGIN_DIR holding vault-plugin-secrets-tooken)
//	TOOKEN_SERVER_BIN  the emulator binary
//
// Without them the tests skip, unless CI is set: then they fail. TOOKEN_E2E=0 skips them always
// (`make test-unit` uses it, since `make test-e2e` runs them right after).
//
// The package also holds the benchmarks through a real Vault (bench_test.go, which `make bench`
// runs through scripts/bench.sh), on the same harness; noopplugin/ is the no-op external plugin
// they measure the engine against. main_test.go maps the harness's helpers, file by file.
package e2e
