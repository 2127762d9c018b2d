// Command tookenapp stands in for an application that Vault Agent supervises (exec mode) with a
// Tooken secret in its environment: it calls GET /tokens/self with the secret in TOOKEN_TOKEN
// every -every, and appends one line per call to the file -out:
//
//	<pid> <first 12 hex digits of sha256(secret)> <HTTP status>
//
// (never the secret itself). It runs until SIGTERM or SIGINT. The static roles' e2e test reads
// the file to check that the application never got a 401 across rotations and restarts.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	url := flag.String("url", "", "the Tooken base URL, with /v1")
	out := flag.String("out", "", "the file to append status lines to")
	every := flag.Duration("every", 250*time.Millisecond, "time between calls")
	flag.Parse()
	secret := os.Getenv("TOOKEN_TOKEN")
	if *url == "" || *out == "" || secret == "" {
		fmt.Fprintln(os.Stderr, "tookenapp: -url, -out and TOOKEN_TOKEN are required")
		os.Exit(2)
	}
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tookenapp:", err)
		os.Exit(1)
	}
	defer f.Close()
	sum := sha256.Sum256([]byte(secret))
	id := hex.EncodeToString(sum[:])[:12]
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		fmt.Fprintf(f, "%d %s %d\n", os.Getpid(), id, call(ctx, client, *url, secret))
		select {
		case <-ctx.Done():
			return
		case <-time.After(*every):
		}
	}
}

// call is the status of GET /tokens/self authenticated by secret; 0 when no answer came.
func call(ctx context.Context, c *http.Client, url, secret string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/tokens/self", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
