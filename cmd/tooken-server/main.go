// Command tooken-server runs the Tooken emulator (package tookentest) as a
// standalone server: the Tooken API on --listen and, optionally, the admin
// and fault-injection API on --admin-listen.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

type config struct {
	listen            string
	adminListen       string
	rootScopes        string
	rootSecretFile    string
	statePath         string
	rateLimit         float64
	burst             int
	webhookURLs       stringList
	webhookSecretFile string
	quiet             bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tooken-server:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("tooken-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8300", "address of the Tooken API (paths /v1/...)")
	fs.StringVar(&c.adminListen, "admin-listen", "", `address of the admin API (paths /admin/...); "" = off. No authentication: keep it on loopback`)
	fs.StringVar(&c.rootScopes, "root-scopes", strings.Join(tookentest.DefaultRootScopes, ","), "comma-separated scopes of the bootstrap root token")
	fs.StringVar(&c.rootSecretFile, "root-secret-file", "", "write the bootstrap root secret to this file (mode 0600) when the root is created; env TOOKEN_ROOT_SECRET may seed the secret")
	fs.StringVar(&c.statePath, "state", "", "JSON state file: tokens (with SHA-256 of their secrets) survive restarts")
	fs.Float64Var(&c.rateLimit, "rate-limit", tookentest.DefaultRateLimit, "requests per second per caller token (<0 = unlimited)")
	fs.IntVar(&c.burst, "burst", tookentest.DefaultBurst, "rate-limit burst per caller token")
	fs.Var(&c.webhookURLs, "webhook-url", "endpoint for signed webhook events (repeatable)")
	fs.StringVar(&c.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (required with --webhook-url)")
	fs.BoolVar(&c.quiet, "quiet", false, "do not log requests")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if len(c.webhookURLs) > 0 && c.webhookSecretFile == "" {
		return c, errors.New("--webhook-url needs --webhook-secret-file")
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, c, stdout, stderr)
}

// serve runs the emulator until ctx ends (SIGINT, SIGTERM) or a listener
// fails, then shuts down gracefully: in-flight requests finish and the state
// file is flushed.
func serve(ctx context.Context, c config, stdout, stderr io.Writer) error {
	opts, err := options(c, stderr)
	if err != nil {
		return err
	}
	s, err := tookentest.NewHandler(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := publishRootSecret(s, c.rootSecretFile, stderr); err != nil {
		return err
	}
	l, err := listen(s, c)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, l.ready)
	return l.wait(ctx, stderr)
}

// options turns the flags (and env TOOKEN_ROOT_SECRET) into emulator options.
func options(c config, stderr io.Writer) (tookentest.Options, error) {
	opts := tookentest.Options{
		RateLimit:   c.rateLimit,
		Burst:       c.burst,
		WebhookURLs: c.webhookURLs,
		StatePath:   c.statePath,
		RootSecret:  strings.TrimSpace(os.Getenv("TOOKEN_ROOT_SECRET")),
	}
	if !c.quiet {
		opts.Logger = stderr
	}
	for _, sc := range strings.Split(c.rootScopes, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			opts.RootScopes = append(opts.RootScopes, sc)
		}
	}
	if c.webhookSecretFile != "" {
		b, err := os.ReadFile(c.webhookSecretFile)
		if err != nil {
			return opts, fmt.Errorf("reading webhook secret: %w", err)
		}
		opts.WebhookSecret = strings.TrimSpace(string(b))
		if opts.WebhookSecret == "" {
			return opts, errors.New("the webhook secret file is empty")
		}
	}
	return opts, nil
}

// publishRootSecret writes the root secret to path (when set). A root loaded
// from the state file has no plaintext to write: the file is left as is.
func publishRootSecret(s *tookentest.Server, path string, stderr io.Writer) error {
	if path == "" {
		return nil
	}
	if secret := s.RootSecret(); secret != "" {
		return writeSecretFile(path, secret)
	}
	fmt.Fprintf(stderr, "root token %s comes from the state file; %s left as is (the plaintext secret is never stored)\n", s.RootTokenID(), path)
	return nil
}

// listeners are the running HTTP servers: the API and, optionally, the admin
// API. errc receives each server's Serve error.
type listeners struct {
	servers []*http.Server
	errc    chan error
	ready   string // the line printed on stdout once both listen
}

// listen starts the API on c.listen and the admin API on c.adminListen.
func listen(s *tookentest.Server, c config) (*listeners, error) {
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return nil, err
	}
	l := &listeners{errc: make(chan error, 2), ready: fmt.Sprintf("tooken-server listening on http://%s/v1", ln.Addr())}
	l.start(s.Handler(), ln)
	if c.adminListen == "" {
		return l, nil
	}
	aln, err := net.Listen("tcp", c.adminListen)
	if err != nil {
		l.close()
		return nil, err
	}
	l.start(s.AdminHandler(), aln)
	l.ready += fmt.Sprintf(" (admin http://%s)", aln.Addr())
	return l, nil
}

func (l *listeners) start(h http.Handler, ln net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	l.servers = append(l.servers, srv)
	go func() { l.errc <- srv.Serve(ln) }()
}

func (l *listeners) close() {
	for _, srv := range l.servers {
		_ = srv.Close()
	}
}

// wait blocks until ctx ends, then shuts the servers down (5 s for in-flight
// requests). A server that fails first stops the others and its error is
// returned.
func (l *listeners) wait(ctx context.Context, stderr io.Writer) error {
	select {
	case <-ctx.Done():
	case err := <-l.errc:
		if !errors.Is(err, http.ErrServerClosed) {
			l.close()
			return err
		}
	}
	fmt.Fprintln(stderr, "tooken-server: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range l.servers {
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
	}
	return nil
}

// writeSecretFile writes the secret atomically with mode 0600.
func writeSecretFile(path, secret string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing root secret file: %w", err)
	}
	name := tmp.Name()
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(secret)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("writing root secret file: %w", err)
	}
	return nil
}
