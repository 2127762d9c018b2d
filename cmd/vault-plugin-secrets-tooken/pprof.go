//go:build pprof

package main

// Profiling under load, in a build made for it only (go build -tags pprof):
// when the plugin's environment has TOOKEN_PPROF_ADDR (Vault gives a plugin
// only the environment it was registered with: vault plugin register
// -env=TOOKEN_PPROF_ADDR=127.0.0.1:6060 ...), the plugin serves
// net/http/pprof on that address, e.g.
//
//	go tool pprof -seconds 20 http://127.0.0.1:6060/debug/pprof/profile
//
// docs/performance.md tells how the figures of `make bench` were profiled.

import (
	"net/http"
	_ "net/http/pprof" // the handlers, on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("TOOKEN_PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() { _ = http.ListenAndServe(addr, nil) }() // best effort: a busy port means no profile
}
