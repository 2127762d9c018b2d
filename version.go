package tooken

// Version is the plugin version reported to Vault as RunningVersion and sent
// in the User-Agent. Release builds set it with
//
//	-ldflags "-X github.com/tooken/vault-plugin-secrets-tooken.Version=v1.2.3"
//
// It is only ever written by the linker, never at run time.
var Version = "v0.1.0-dev"

// userAgent is the User-Agent header sent to Tooken.
func userAgent() string {
	return "vault-plugin-secrets-tooken/" + Version
}
