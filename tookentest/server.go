// Package tookentest is an in-process Tooken API server for tests, in the
// spirit of net/http/httptest. It follows the Tooken API contract in
// docs/tooken-api.md to the letter and adds fault injection and inspection so
// that clients can be tested against the nasty cases. Its choices where the
// contract is silent are listed in docs/emulator.md.
//
// Start one with NewServer (listening on 127.0.0.1:0) or NewHandler (not
// listening; mount Handler and AdminHandler yourself, as cmd/tooken-server
// does).
package tookentest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	randv2 "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Options configures a Server. The zero value is ready to use.
type Options struct {
	RootScopes    []string         // default: tokens:write, deployments:write, billing:read
	RootSecret    string           // optional; default: generated tok_test_ + 32 alnum
	RateLimit     float64          // requests/second per caller token; 0 means default 100; <0 means unlimited
	Burst         int              // 0 means default 200
	WebhookURLs   []string         // endpoints that receive signed events
	WebhookSecret string           // signing secret shared by every endpoint; generated when empty
	StatePath     string           // optional JSON state file (load at start, save on change)
	Logger        io.Writer        // one line per request, never a secret; nil = discard
	Now           func() time.Time // optional clock (nil = time.Now)
}

// Limits and defaults of the emulator. Where the contract is silent these
// are the emulator's choices (see docs/emulator.md).
const (
	DefaultRateLimit    = 100
	DefaultBurst        = 200
	MaxBodyBytes        = 64 << 10
	MaxRequestLog       = 100000
	IdempotencyWindow   = 24 * time.Hour
	MaxPreviousTTL      = 86400
	MaxExpiresAhead     = 366 * 24 * time.Hour
	MaxNameLen          = 128
	MaxMetadataKeys     = 20
	MaxMetadataKeyLen   = 40
	MaxMetadataValueLen = 500
	MaxScopes           = 50
	MaxScopeLen         = 100
	MaxNamePrefixLen    = MaxNameLen
	MaxIdempotencyKey   = 255
	DefaultListLimit    = 20
	MaxListLimit        = 100
	secretPrefix        = "tok_test_"
	secretRandLen       = 32
)

// DefaultRootScopes are the scopes of the bootstrap root token.
var DefaultRootScopes = []string{"tokens:write", "deployments:write", "billing:read"}

// counterNames is the fixed set of counters reported by Counters.
var counterNames = []string{
	"requests", "created", "updated", "rotated", "revoked", "expired",
	"faults", "rate_limited", "dropped", "replayed", "unauthorized",
	"errors", "webhooks_delivered", "webhooks_failed", "webhooks_dropped",
}

// Server is a Tooken emulator.
type Server struct {
	opts Options
	now  func() time.Time

	mu            sync.Mutex
	byID          map[string]*token
	bySecret      map[[32]byte]*token
	order         []*token // creation order, oldest first (seq ascending)
	seq           int64
	rootID        string
	rootSecret    string
	idem          map[idemKey]*idemEntry
	limiters      map[string]*rate.Limiter
	rps           rate.Limit
	burst         int
	faults        []*faultEntry
	faultSeq      int
	down          bool
	pendingExpiry map[string]*token // live tokens with an expiry not yet announced
	stateVersion  uint64            // bumped on each persisted change
	closed        bool

	counters map[string]*atomic.Int64 // fixed keys, values atomic

	reqMu    sync.Mutex
	requests []RequestRecord // ring buffer of at most MaxRequestLog
	reqStart int

	logMu sync.Mutex

	stateMu      sync.Mutex
	savedVersion uint64

	hooks *webhooks

	httpSrv  *http.Server
	url      string
	adminURL string
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// NewServer starts a Server listening on 127.0.0.1:0, like httptest.NewServer.
// It panics if the options are invalid or the state file cannot be loaded.
// The same listener also serves the admin API under /admin/ (see AdminURL).
func NewServer(opts Options) *Server {
	s, err := NewHandler(opts)
	if err != nil {
		panic("tookentest: " + err.Error())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		panic("tookentest: listen: " + err.Error())
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", s.AdminHandler())
	mux.Handle("/", s.Handler())
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.adminURL = "http://" + l.Addr().String()
	s.url = s.adminURL + "/v1"
	go func() { _ = s.httpSrv.Serve(l) }()
	return s
}

// NewHandler builds a Server that does not listen: mount Handler (paths
// /v1/...) and AdminHandler (paths /admin/...) yourself. Call Close when done
// to stop its background work and flush its state file.
func NewHandler(opts Options) (*Server, error) {
	rootScopes := opts.RootScopes
	if len(rootScopes) == 0 {
		rootScopes = DefaultRootScopes
	}
	rootScopes, err := normalizeScopes(rootScopes)
	if err != nil {
		return nil, fmt.Errorf("root scopes: %w", err)
	}
	if opts.RootSecret != "" && !validSecretFormat(opts.RootSecret) {
		return nil, errors.New("root secret must be tok_live_ or tok_test_ followed by at least 20 characters of [A-Za-z0-9]")
	}
	s := newServer(opts)
	if err := s.setUpRoot(rootScopes, opts.RootSecret); err != nil {
		if s.hooks != nil {
			s.hooks.close(0) // nothing was sent yet: stop the delivery worker
		}
		return nil, err
	}
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

// newServer builds an empty Server: its maps, clock, rate limit and webhook
// sender (generating the signing secret when none is given).
func newServer(opts Options) *Server {
	s := &Server{
		opts:          opts,
		byID:          map[string]*token{},
		bySecret:      map[[32]byte]*token{},
		idem:          map[idemKey]*idemEntry{},
		limiters:      map[string]*rate.Limiter{},
		pendingExpiry: map[string]*token{},
		counters:      map[string]*atomic.Int64{},
		stop:          make(chan struct{}),
	}
	for _, n := range counterNames {
		s.counters[n] = new(atomic.Int64)
	}
	s.now = func() time.Time { return time.Now().UTC() }
	if opts.Now != nil {
		s.now = func() time.Time { return opts.Now().UTC() }
	}
	s.rps, s.burst = limitsFor(opts.RateLimit, opts.Burst)
	if len(opts.WebhookURLs) > 0 {
		if s.opts.WebhookSecret == "" {
			s.opts.WebhookSecret = newSecret()
		}
		s.hooks = newWebhooks(s, opts.WebhookURLs, []byte(s.opts.WebhookSecret))
	}
	return s
}

// setUpRoot loads the state file, if any, and creates the bootstrap root when
// the state holds none. A root secret given for a loaded root must match it.
// With a state file, the state is written at once, so the file exists (and
// holds the root) before the first request.
func (s *Server) setUpRoot(scopes []string, secret string) error {
	if s.opts.StatePath != "" {
		if err := s.loadState(s.opts.StatePath); err != nil {
			return err
		}
	}
	if s.rootID == "" {
		s.createRoot(scopes, secret)
	} else if secret != "" {
		if s.byID[s.rootID].secretHash != hashSecret(secret) {
			return errors.New("the given root secret does not match the root token in the state file")
		}
		s.rootSecret = secret
	}
	if s.opts.StatePath == "" {
		return nil
	}
	s.mu.Lock()
	snap := s.snapshotLocked()
	s.mu.Unlock()
	return s.writeState(snap)
}

func (s *Server) createRoot(scopes []string, secret string) {
	if secret == "" {
		secret = newSecret()
	}
	now := s.now().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &token{
		id:         newTokenID(),
		name:       "root",
		scopes:     scopes,
		metadata:   map[string]string{},
		createdAt:  now,
		secretHash: hashSecret(secret),
	}
	s.insertLocked(t)
	s.rootID = t.id
	s.rootSecret = secret
	s.stateVersion++
}

// URL is the API base URL, "http://127.0.0.1:PORT/v1" ("" for NewHandler servers).
func (s *Server) URL() string { return s.url }

// AdminURL is the base URL of the admin API served by NewServer on the same
// listener ("http://127.0.0.1:PORT"; paths /admin/...). "" for NewHandler servers.
func (s *Server) AdminURL() string { return s.adminURL }

// RootSecret is the bootstrap root secret; "" when the root was loaded from a
// state file and no RootSecret option was given (the plaintext is never stored).
func (s *Server) RootSecret() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rootSecret
}

// RootTokenID is the id of the bootstrap root token.
func (s *Server) RootTokenID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rootID
}

// WebhookSecret is the webhook signing secret (the generated one when
// Options.WebhookSecret was empty).
func (s *Server) WebhookSecret() string { return s.opts.WebhookSecret }

// Close stops the listener (NewServer), the background work and the webhook
// delivery (pending deliveries get a short grace), and flushes the state file.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.httpSrv != nil {
			_ = s.httpSrv.Close()
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		s.wg.Wait()
		if s.hooks != nil {
			s.hooks.close(2 * time.Second)
		}
		s.saveState()
	})
}

// sweeper announces expired tokens (token.expired), prunes old idempotency
// records and saves the state when that changed it.
func (s *Server) sweeper() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.sweep()
		}
	}
}

func (s *Server) sweep() {
	now := s.now()
	s.mu.Lock()
	for _, t := range s.pendingExpiry {
		if t.expiredAt(now) {
			s.noteExpiredLocked(t, now)
		}
	}
	for k, e := range s.idem {
		if !e.inFlight && now.Sub(e.createdAt) >= IdempotencyWindow {
			delete(s.idem, k)
		}
	}
	s.mu.Unlock()
	s.saveState()
}

func (s *Server) count(name string) { s.counters[name].Add(1) }

// --- identifiers and secrets ---

func newTokenID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "tkn_" + hex.EncodeToString(b[:])
}

func randHex(prefix string) string {
	var b [12]byte
	a, c := randv2.Uint64(), randv2.Uint32()
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
	}
	for i := 0; i < 4; i++ {
		b[8+i] = byte(c >> (8 * i))
	}
	return prefix + hex.EncodeToString(b[:])
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newSecret() string {
	out := make([]byte, 0, len(secretPrefix)+secretRandLen)
	out = append(out, secretPrefix...)
	var buf [64]byte
	for len(out) < cap(out) {
		_, _ = rand.Read(buf[:])
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: reject to keep the draw uniform
				continue
			}
			out = append(out, alnum[int(c)%62])
			if len(out) == cap(out) {
				break
			}
		}
	}
	return string(out)
}

func validSecretFormat(s string) bool {
	var rest string
	switch {
	case strings.HasPrefix(s, "tok_live_"):
		rest = s[len("tok_live_"):]
	case strings.HasPrefix(s, "tok_test_"):
		rest = s[len("tok_test_"):]
	default:
		return false
	}
	if len(rest) < 20 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if !isAlnum(rest[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func validTokenID(id string) bool {
	if len(id) != 28 || !strings.HasPrefix(id, "tkn_") {
		return false
	}
	for i := 4; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
