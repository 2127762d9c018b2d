// Package tookenapi is a client of the Tooken API: Bearer tokens with scopes,
// created, listed, updated, rotated and revoked over JSON. It retries what
// the API allows to retry (honouring Retry-After up to MaxRetryWait), sends
// one Idempotency-Key over all the attempts of a POST, tells a definitive
// failure from one whose outcome is unknown, checks that answers are Tooken
// token objects, takes a 404 for "not found" and a revoke's 204 for
// "revoked" only from a base URL proven to be a Tooken API, never dials a
// link-local address, and never puts a secret into an error or a log line.
package tookenapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"
)

// Defaults of Options.
const (
	DefaultBaseURL    = "https://api.tooken.io/v1"
	DefaultTimeout    = 30 * time.Second
	DefaultMaxRetries = 3

	maxResponseBytes = 1 << 20
)

// Options are what a Client is built from.
type Options struct {
	BaseURL    string        // e.g. https://api.tooken.io/v1; checked with ParseBaseURL
	Secret     string        // the Bearer secret the client authenticates with
	CACertPEM  string        // PEM CA certificates to trust instead of the system roots
	Timeout    time.Duration // of one HTTP attempt (0 = DefaultTimeout); the ctx bounds the whole call
	MaxRetries int           // retries after the first attempt (negative = 0)
	Logger     hclog.Logger  // nil = no logging
	UserAgent  string        // the User-Agent header
}

// Client talks to the Tooken API. It is safe for concurrent use. The secret
// it authenticates with can be swapped atomically with SetSecret, and
// WithSecret makes a client for another secret over the same connections.
//
// A client knows whether its base URL has been proven a Tooken API: an
// authenticated call answered with a valid token object since it was built
// (Proven). Until then a 404 means nothing (ErrNotProven, not ErrNotFound),
// and a transport failure is reported without detail ("cannot reach"), so
// that a URL nobody has verified can neither make a revoke look done nor be
// used to probe the network.
type Client struct {
	baseURL   string // without trailing slash
	userAgent string
	secret    atomic.Pointer[string]
	proven    *atomic.Bool // shared with the clients WithSecret makes: it is the URL's
	transport *http.Transport
	http      *retryablehttp.Client
	logger    hclog.Logger
	rate      rateLimit // as the latest answer gave it (ratelimit.go)
}

// New builds a client. The base URL must pass ParseBaseURL and the CA PEM (if
// any) ParseCertPool.
func New(opts Options) (*Client, error) {
	u, err := ParseBaseURL(opts.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("base URL: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control:   refuseLinkLocal,
	}).DialContext
	transport.MaxIdleConnsPerHost = 32
	transport.IdleConnTimeout = 90 * time.Second
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CACertPEM != "" {
		pool, err := ParseCertPool(opts.CACertPEM)
		if err != nil {
			return nil, err
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := &Client{
		baseURL:   strings.TrimSuffix(u.String(), "/"),
		userAgent: opts.UserAgent,
		proven:    new(atomic.Bool),
		transport: transport,
		logger:    logger,
	}
	c.SetSecret(opts.Secret)
	c.http = c.retryClient(&http.Client{
		Transport: transport,
		Timeout:   timeout, // per attempt; the request's ctx bounds the whole call
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, max(opts.MaxRetries, 0))
	return c, nil
}

// retryClient is the retrying HTTP client of c over hc.
func (c *Client) retryClient(hc *http.Client, maxRetries int) *retryablehttp.Client {
	return &retryablehttp.Client{
		HTTPClient:      hc,
		Logger:          nil, // never let the library log; see RequestLogHook
		RetryWaitMin:    retryWaitMin,
		RetryWaitMax:    retryWaitMax,
		RetryMax:        maxRetries,
		CheckRetry:      checkRetry,
		Backoff:         backoff,
		ErrorHandler:    retryablehttp.PassthroughErrorHandler,
		ResponseLogHook: func(_ retryablehttp.Logger, r *http.Response) { c.noteRateLimit(r) },
		RequestLogHook: func(_ retryablehttp.Logger, r *http.Request, attempt int) {
			if attempt > 0 {
				c.logger.Debug("retrying Tooken request", "method", r.Method, "path", r.URL.Path, "attempt", attempt)
			}
		},
		PrepareRetry: func(r *http.Request) error {
			// Pick up a secret swapped in by SetSecret meanwhile.
			r.Header = r.Header.Clone()
			r.Header.Set("Authorization", "Bearer "+c.currentSecret())
			return nil
		},
	}
}

// WithSecret returns a client that authenticates with secret over c's
// connections, timeout and retries: a call made as another token of the same
// Tooken (a rotation replay, a check of a new secret) without a client of its
// own. SetSecret on either client leaves the other alone; closing either
// closes the idle connections both use.
func (c *Client) WithSecret(secret string) *Client {
	d := &Client{baseURL: c.baseURL, userAgent: c.userAgent, proven: c.proven, transport: c.transport, logger: c.logger}
	d.SetSecret(secret)
	d.http = d.retryClient(c.http.HTTPClient, c.http.RetryMax)
	return d
}

// ParseBaseURL checks a Tooken base URL: http(s), a host that is not a
// link-local address, and nothing that could carry a secret (user info,
// query, fragment).
func ParseBaseURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		// url.Parse reads host:port/v1 as an invalid scheme, or host/v1
		// as a path: say what is missing.
		return nil, errors.New("has no scheme: start it with https:// (or http:// for a local emulator), e.g. https://api.tooken.io/v1")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a valid URL: write it as https://HOST[:PORT]/v1")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("scheme must be http or https")
	case u.Host == "":
		return nil, errors.New("missing host")
	case u.User != nil:
		return nil, errors.New("must not contain user information")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("must not contain a query or fragment")
	case isLinkLocal(u.Hostname()):
		return nil, errors.New("must not be a link-local address (169.254.0.0/16, fe80::/10: cloud metadata services, never a Tooken API)")
	}
	return u, nil
}

// isLinkLocal tells whether host is a link-local IP address (IPv4-mapped
// IPv6 included).
func isLinkLocal(host string) bool {
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()
}

// refuseLinkLocal is the dialer's check of every address it connects to,
// after name resolution: a host name that resolves to a link-local address
// is refused like a literal one.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err == nil && isLinkLocal(host) {
		return ErrForbiddenAddress
	}
	return nil
}

// ParseCertPool parses PEM CA certificates.
func ParseCertPool(pemCerts string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemCerts)) {
		return nil, errors.New("no valid PEM certificate found")
	}
	return pool, nil
}

// SetSecret atomically replaces the secret used to authenticate. Requests
// already sent keep the old one; retries and new requests use the new one.
func (c *Client) SetSecret(secret string) {
	c.secret.Store(&secret)
}

// UsesSecret tells whether the client authenticates with secret now
// (compared in constant time).
func (c *Client) UsesSecret(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(c.currentSecret()), []byte(secret)) == 1
}

// Proven tells whether the base URL has been proven a Tooken API: a call of
// this client (or of one WithSecret made from it, or the other way round)
// was answered with a valid token object.
func (c *Client) Proven() bool { return c.proven.Load() }

// Prove makes sure that the base URL is a Tooken API: nil at once when it is
// proven, otherwise GET /tokens/self must answer a valid token object.
func (c *Client) Prove(ctx context.Context) error {
	if c.Proven() {
		return nil
	}
	_, err := c.Self(ctx)
	return err
}

func (c *Client) currentSecret() string {
	if p := c.secret.Load(); p != nil {
		return *p
	}
	return ""
}

// Close releases idle connections.
func (c *Client) Close() {
	c.transport.CloseIdleConnections()
}

// NewIdempotencyKey returns a fresh key for a POST.
func NewIdempotencyKey() string { return uuid.NewString() }

// CreateToken creates a token (POST /tokens). The same idempotencyKey is sent
// on every retry, so a lost answer never creates a second token; an empty
// key gets a fresh one.
func (c *Client) CreateToken(ctx context.Context, in CreateTokenRequest, idempotencyKey string) (*Token, error) {
	if idempotencyKey == "" {
		idempotencyKey = NewIdempotencyKey()
	}
	var out Token
	if err := c.do(ctx, http.MethodPost, "/tokens", nil, in, idempotencyKey, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetToken reads one token (GET /tokens/{id}).
func (c *Client) GetToken(ctx context.Context, id string) (*Token, error) {
	var out Token
	if err := c.do(ctx, http.MethodGet, "/tokens/"+url.PathEscape(id), nil, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Self reads the caller's own token (GET /tokens/self).
func (c *Client) Self(ctx context.Context) (*Token, error) {
	return c.GetToken(ctx, "self")
}

// ListTokens reads one page of tokens (GET /tokens), newest first.
func (c *Client) ListTokens(ctx context.Context, opts ListOptions) (*TokenList, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	if opts.NamePrefix != "" {
		q.Set("name_prefix", opts.NamePrefix)
	}
	var out TokenList
	if err := c.do(ctx, http.MethodGet, "/tokens", q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateToken changes expires_at and/or metadata (PATCH /tokens/{id}).
func (c *Client) UpdateToken(ctx context.Context, id string, in UpdateTokenRequest) (*Token, error) {
	var out Token
	if err := c.do(ctx, http.MethodPatch, "/tokens/"+url.PathEscape(id), nil, in, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateToken gives the token a new secret (POST /tokens/{id}/rotate); the
// old one keeps working for previousSecretTTL (whole seconds, 0..24h).
func (c *Client) RotateToken(ctx context.Context, id string, previousSecretTTL time.Duration, idempotencyKey string) (*Token, error) {
	if idempotencyKey == "" {
		idempotencyKey = NewIdempotencyKey()
	}
	body := struct {
		PreviousSecretTTL int64 `json:"previous_secret_ttl"`
	}{int64(previousSecretTTL / time.Second)}
	var out Token
	if err := c.do(ctx, http.MethodPost, "/tokens/"+url.PathEscape(id)+"/rotate", nil, body, idempotencyKey, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken revokes a token (DELETE /tokens/{id}). nil means the API
// answered 204 No Content, the contract's answer, from a base URL proven a
// Tooken API. A token that does not exist or is already revoked gives an
// error matching ErrNotFound (also only from a proven base URL); callers
// that only want it dead treat that as success. Any other 2xx is not a
// Tooken answer (ErrInvalidAnswer, with ErrOutcomeUnknown), and a 204 from a
// base URL that GET /tokens/self does not prove gives ErrNotProven: a
// catch-all server (a single-page app, a gateway) answers 2xx to every
// path, which says nothing of the token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, nil, "", noContent{})
}

// noContent is the answer of a call whose contract answer is 204 No Content
// with no body (DELETE); see checkNoContent.
type noContent struct{}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in any, idempotencyKey string, out any) error {
	tr := &attemptTracker{}
	req, err := c.newRequest(context.WithValue(ctx, trackerKey{}, tr), method, path, query, in, idempotencyKey)
	if err != nil {
		return err
	}
	if err := c.roundTrip(req, method, path, out); err != nil {
		if tr.mayHaveReached {
			return &outcomeUnknownError{err}
		}
		return err
	}
	return nil
}

// newRequest builds one API call: JSON body, auth and the fixed headers.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, in any, idempotencyKey string) (*retryablehttp.Request, error) {
	var body any // a nil []byte would still be sent as an empty body
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("tooken: encoding %s %s body: %w", method, path, err)
		}
		body = raw
	}
	u := c.baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("tooken: building %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.currentSecret())
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	return req, nil
}

// roundTrip sends req (with the retries) and decodes a 2xx answer into out,
// or turns the answer into an *APIError / *RateLimitError.
func (c *Client) roundTrip(req *retryablehttp.Request, method, path string, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		markReached(req.Context())
		return c.transportError(method, path, fmt.Errorf("reading the answer: %w", err))
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var err error
		if _, ok := out.(noContent); ok {
			err = c.checkNoContent(req.Context(), resp.StatusCode, method, path)
		} else {
			err = c.decodeAnswer(resp, data, method, path, out)
		}
		if err != nil {
			markReached(req.Context()) // the server took the call
			return err
		}
		return nil
	}
	ra, _ := retryAfter(resp)
	apiErr := parseAPIError(resp.StatusCode, data, ra)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return &RateLimitError{APIError: *apiErr}
	case resp.StatusCode == http.StatusNotFound && !c.Proven():
		return c.unproven404(req.Context(), method, path, apiErr)
	}
	return apiErr
}

// transportError is a failed exchange. Its text names the URL (never a
// secret: ParseBaseURL rejects user info and queries) but not the
// Authorization header; from a base URL not proven a Tooken API it says
// only "cannot reach", so that the engine cannot be used to tell a closed
// port from a filtering one. The cause stays reachable with errors.As (and
// in the client's debug log).
func (c *Client) transportError(method, path string, err error) error {
	if c.Proven() {
		return fmt.Errorf("tooken: %s %s: %w", method, path, err)
	}
	c.logger.Debug("Tooken request failed", "method", method, "path", path, "error", err)
	return &unreachableError{method: method, path: path, err: err}
}

// unreachableError is a transport failure from a base URL not proven.
type unreachableError struct {
	method, path string
	err          error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("tooken: %s %s: cannot reach the server", e.method, e.path)
}

func (e *unreachableError) Unwrap() error { return e.err }

// unproven404 is the error of a 404 (apiErr) from a base URL not proven a
// Tooken API: it proves the URL first (GET /tokens/self), and answers
// apiErr (ErrNotFound) only when that succeeds.
func (c *Client) unproven404(ctx context.Context, method, path string, apiErr *APIError) error {
	if path == "/tokens/self" {
		return &notProvenError{method: method, path: path}
	}
	if err := c.Prove(ctx); err != nil {
		return &notProvenError{method: method, path: path, proof: err}
	}
	return apiErr
}

// checkNoContent checks the 2xx answer (status) to a call whose contract
// answer is 204 No Content: another status is not a Tooken answer, and a
// 204 counts only from a base URL proven a Tooken API, which it proves
// first (GET /tokens/self), as for a 404. A 204 proves nothing itself: the
// URL stays unproven.
func (c *Client) checkNoContent(ctx context.Context, status int, method, path string) error {
	if status != http.StatusNoContent {
		return &invalidAnswerError{method: method, path: path, status: status, what: "the API answers it with 204 No Content"}
	}
	if err := c.Prove(ctx); err != nil {
		return &notProvenError{method: method, path: path, status: status, proof: err}
	}
	return nil
}

// validator is a decoded answer that can tell whether it is well-formed.
type validator interface{ Validate() error }

// decodeAnswer decodes a 2xx answer into out (nil: the body is ignored) and
// checks it: application/json, valid JSON, and a valid token object (or
// list) where one is expected. A valid token object proves the base URL.
// The errors never quote the body: it may hold a secret.
func (c *Client) decodeAnswer(resp *http.Response, data []byte, method, path string, out any) error {
	if out == nil {
		return nil
	}
	invalid := func(what string) error {
		return &invalidAnswerError{method: method, path: path, status: resp.StatusCode, what: what}
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return invalid("its Content-Type is not application/json")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return invalid("it has no body")
	}
	if err := json.Unmarshal(data, out); err != nil {
		return invalid(jsonErrorKind(err))
	}
	if v, ok := out.(validator); ok {
		if err := v.Validate(); err != nil {
			return invalid(err.Error())
		}
	}
	if _, ok := out.(*Token); ok {
		c.proven.Store(true)
	}
	return nil
}
