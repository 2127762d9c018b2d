package tooken

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"
)

// Client talks to the Tooken API. It is safe for concurrent use. Build one
// with newClient; the secret it authenticates with can be swapped atomically
// with SetSecret (root rotation) without rebuilding the client.
type Client struct {
	baseURL   string // without trailing slash, e.g. https://api.tooken.io/v1
	secret    atomic.Pointer[string]
	transport *http.Transport
	http      *retryablehttp.Client
	logger    hclog.Logger
}

// Token is a Tooken token object. Secret is only set in the answers of create
// and rotate. String and GoString never print the secret.
type Token struct {
	ID                      string            `json:"id"`
	Name                    string            `json:"name"`
	Scopes                  []string          `json:"scopes"`
	Metadata                map[string]string `json:"metadata,omitempty"`
	CreatedAt               time.Time         `json:"created_at"`
	ExpiresAt               *time.Time        `json:"expires_at"`
	RotatedAt               *time.Time        `json:"rotated_at"`
	LastUsedAt              *time.Time        `json:"last_used_at"`
	Secret                  string            `json:"secret,omitempty"`
	PreviousSecretExpiresAt *time.Time        `json:"previous_secret_expires_at,omitempty"`
}

// String describes the token without its secret.
func (t Token) String() string {
	exp := "never"
	if t.ExpiresAt != nil {
		exp = t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("Token{ID:%s Name:%s Scopes:%v ExpiresAt:%s}", t.ID, t.Name, t.Scopes, exp)
}

// GoString is String, so that %#v cannot print the secret either.
func (t Token) GoString() string { return t.String() }

// CreateTokenRequest is the body of POST /tokens.
type CreateTokenRequest struct {
	Name      string            `json:"name"`
	Scopes    []string          `json:"scopes"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// UpdateTokenRequest is the body of PATCH /tokens/{id}.
type UpdateTokenRequest struct {
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// ListOptions are the query parameters of GET /tokens.
type ListOptions struct {
	Limit      int
	Cursor     string
	NamePrefix string
}

// TokenList is one page of GET /tokens.
type TokenList struct {
	Data       []Token `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// Sentinel errors, matched with errors.Is against the errors the client returns.
var (
	ErrNotFound             = errors.New("tooken: not found")
	ErrUnauthorized         = errors.New("tooken: unauthorized")
	ErrForbidden            = errors.New("tooken: forbidden")
	ErrScopeNotHeld         = errors.New("tooken: scope not held")
	ErrConflict             = errors.New("tooken: conflict")
	ErrIdempotencyKeyReused = errors.New("tooken: idempotency key reused")
	ErrRateLimited          = errors.New("tooken: rate limited")
	// ErrOutcomeUnknown marks a failed call that may nevertheless have been
	// carried out upstream (an answer lost on the network, a 5xx, a timeout
	// after the request was sent). For a POST /tokens it means a token may
	// exist.
	ErrOutcomeUnknown = errors.New("tooken: outcome unknown")
)

// APIError is an error answer of the Tooken API.
type APIError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "tooken: %d", e.Status)
	if e.Code != "" {
		sb.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		sb.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		sb.WriteString(" (request " + e.RequestID + ")")
	}
	return sb.String()
}

// Is maps the answer onto the package's sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrScopeNotHeld:
		return e.Status == http.StatusForbidden && e.Code == "scope_not_held"
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrIdempotencyKeyReused:
		return e.Code == "idempotency_key_reused"
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	}
	return false
}

// RateLimitError is a 429 answer that the client did not (or could no longer)
// retry. RetryAfter is the server's Retry-After, 0 if absent.
type RateLimitError struct {
	RetryAfter time.Duration
	APIError
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%s; retry after %s", e.APIError.Error(), e.RetryAfter)
}

// Unwrap exposes the underlying API error.
func (e *RateLimitError) Unwrap() error { return &e.APIError }

// outcomeUnknownError wraps an error with ErrOutcomeUnknown.
type outcomeUnknownError struct{ err error }

func (e *outcomeUnknownError) Error() string   { return e.err.Error() }
func (e *outcomeUnknownError) Unwrap() []error { return []error{e.err, ErrOutcomeUnknown} }

const (
	defaultURL            = "https://api.tooken.io/v1"
	defaultRequestTimeout = 30 * time.Second
	defaultMaxRetries     = 3
	retryWaitMin          = 100 * time.Millisecond
	retryWaitMax          = 3 * time.Second
	maxResponseBytes      = 1 << 20
)

// newClient builds a client from the configuration. The configuration must
// have been validated (url parses, ca_cert is PEM).
func newClient(cfg *tookenConfig, logger hclog.Logger) (*Client, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	u, err := parseBaseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 32
	transport.IdleConnTimeout = 90 * time.Second
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pool, err := certPool(cfg.CACert)
		if err != nil {
			return nil, err
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	timeout := cfg.RequestTimeout
	if timeout <= 0 {
		timeout = defaultRequestTimeout
	}
	c := &Client{
		baseURL:   strings.TrimSuffix(u.String(), "/"),
		transport: transport,
		logger:    logger,
	}
	c.SetSecret(cfg.Token)
	c.http = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: transport,
			Timeout:   timeout, // per attempt; the request's ctx bounds the whole call
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		Logger:       nil, // never let the library log; see RequestLogHook
		RetryWaitMin: retryWaitMin,
		RetryWaitMax: retryWaitMax,
		RetryMax:     max(cfg.MaxRetries, 0),
		CheckRetry:   checkRetry,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, r *http.Request, attempt int) {
			if attempt > 0 {
				c.logger.Debug("retrying Tooken request", "method", r.Method, "path", r.URL.Path, "attempt", attempt)
			}
		},
		PrepareRetry: func(r *http.Request) error {
			// Pick up a secret swapped in by a root rotation meanwhile.
			r.Header = r.Header.Clone()
			r.Header.Set("Authorization", "Bearer "+c.currentSecret())
			return nil
		},
	}
	return c, nil
}

// parseBaseURL checks a Tooken base URL: http(s), a host, and nothing that
// could carry a secret (user info, query, fragment).
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("url: not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("url: scheme must be http or https")
	case u.Host == "":
		return nil, errors.New("url: missing host")
	case u.User != nil:
		return nil, errors.New("url: must not contain user information")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("url: must not contain a query or fragment")
	}
	return u, nil
}

// certPool parses PEM CA certificates.
func certPool(pemCerts string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemCerts)) {
		return nil, errors.New("ca_cert: no valid PEM certificate found")
	}
	return pool, nil
}

// SetSecret atomically replaces the secret used to authenticate. Requests
// already sent keep the old one; retries and new requests use the new one.
func (c *Client) SetSecret(secret string) {
	c.secret.Store(&secret)
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

// RevokeToken revokes a token (DELETE /tokens/{id}). A token that does not
// exist or is already revoked gives an error matching ErrNotFound; callers
// that only want it dead treat that as success.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, nil, "", nil)
}

type trackerKey struct{}

// attemptTracker records, across the attempts of one call, whether any of
// them may have been carried out by the server.
type attemptTracker struct{ mayHaveReached bool }

// markReached notes in ctx's tracker that an attempt may have been carried
// out upstream.
func markReached(ctx context.Context) {
	if tr, ok := ctx.Value(trackerKey{}).(*attemptTracker); ok {
		tr.mayHaveReached = true
	}
}

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
	req.Header.Set("User-Agent", userAgent())
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
		// Transport errors name the URL (never a secret: parseBaseURL
		// rejects user info and queries) but not the Authorization header.
		return fmt.Errorf("tooken: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		markReached(req.Context())
		return fmt.Errorf("tooken: reading answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out != nil && len(bytes.TrimSpace(data)) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				// The body may hold a secret: never include it.
				return fmt.Errorf("tooken: decoding answer to %s %s (status %d): %s", method, path, resp.StatusCode, jsonErrorKind(err))
			}
		}
		return nil
	}
	apiErr := parseAPIError(resp.StatusCode, data)
	if resp.StatusCode == http.StatusTooManyRequests {
		ra, _ := retryAfter(resp)
		return &RateLimitError{RetryAfter: ra, APIError: *apiErr}
	}
	return apiErr
}

// jsonErrorKind describes a JSON decoding error without quoting input.
func jsonErrorKind(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("unexpected JSON type for field %q", te.Field)
	}
	return "invalid JSON"
}

func parseAPIError(status int, data []byte) *APIError {
	var envelope struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	e := &APIError{Status: status}
	if json.Unmarshal(data, &envelope) == nil {
		// The answer is quoted in errors, logs and stored status: a
		// server that echoes a secret must not make us repeat it.
		e.Code = redactSecrets(envelope.Error.Code)
		e.Message = redactSecrets(envelope.Error.Message)
		e.RequestID = redactSecrets(envelope.Error.RequestID)
	}
	if e.Code == "" && e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// secretLike matches anything shaped like a Tooken secret, and its tail.
var secretLike = regexp.MustCompile(`tok_(live|test)_[A-Za-z0-9]*`)

// redactSecrets replaces whatever looks like a Tooken secret in s.
func redactSecrets(s string) string {
	if !strings.Contains(s, "tok_") {
		return s
	}
	return secretLike.ReplaceAllString(s, "[redacted secret]")
}

// checkRetry is the retry policy: connection errors, 5xx (but 501), 429, and
// 409 "still in flight" to a POST with an Idempotency-Key.
// A 429 whose Retry-After lies past the request's deadline is not retried,
// so that the caller gets the RateLimitError at once.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	// A 409 to a POST carrying an Idempotency-Key means that an earlier
	// attempt with that key is still being processed (as at Stripe): it may
	// succeed, and a later retry gets its answer replayed.
	inFlight := err == nil && resp.StatusCode == http.StatusConflict &&
		resp.Request != nil && resp.Request.Header.Get("Idempotency-Key") != ""
	if (err != nil && mayHaveBeenSent(err)) || (err == nil && resp.StatusCode >= 500) || inFlight {
		markReached(ctx)
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		if dl, ok := ctx.Deadline(); ok {
			ra, _ := retryAfter(resp)
			if time.Until(dl) <= ra {
				return false, nil
			}
		}
		return true, nil
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return true, nil
	case inFlight:
		return true, nil
	}
	return false, nil
}

// mayHaveBeenSent reports whether a transport error can have happened after
// the server received the request (so a POST may have been carried out).
func mayHaveBeenSent(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false
	}
	if isTLSError(err) {
		return false
	}
	return true
}

// isTLSError reports a TLS handshake or certificate failure.
func isTLSError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	return errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) ||
		errors.As(err, &cie) || errors.As(err, &rhe)
}

// isUnreachable reports a failure to connect at all.
func isUnreachable(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backoff waits Retry-After on 429/503 when given, otherwise exponentially
// longer with jitter, between min and max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if ra, ok := retryAfter(resp); ok && ra > 0 {
			// A little jitter on top, never below the server's ask.
			return ra + rand.N(ra/10+time.Millisecond)
		}
	}
	base := maxWait
	if attempt < 30 {
		if b := minWait << attempt; b > 0 && b < maxWait {
			base = b
		}
	}
	// Equal jitter: half fixed, half random.
	return base/2 + rand.N(base/2+1)
}

// retryAfter parses a Retry-After header (seconds or HTTP date).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}
