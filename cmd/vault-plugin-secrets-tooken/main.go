// Command vault-plugin-secrets-tooken is the Tooken secrets engine plugin for
// HashiCorp Vault. Vault starts it; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	tooken "github.com/tooken/vault-plugin-secrets-tooken"
)

func main() {
	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal(err)
	}
	tlsProvider := api.VaultPluginTLSProvider(meta.GetTLSConfig())

	// One process serves every mount of the plugin.
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: tooken.Factory,
		TLSProviderFunc:    tlsProvider,
	}); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}
