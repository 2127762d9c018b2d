package tookenapi

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

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
	// ErrInvalidAnswer marks a 2xx answer that is not what the Tooken API
	// answers: not JSON, not application/json, or not a valid token object
	// (see Token.Validate). The server may have carried the call out, so it
	// comes with ErrOutcomeUnknown.
	ErrInvalidAnswer = errors.New("tooken: not a Tooken API answer")
	// ErrNotProven marks a 404, or a revoke's 204, from a base URL that has
	// not been proven a Tooken API (see Client.Proven): it does not show that
	// the token is gone, only that something at that URL answered the path.
	ErrNotProven = errors.New("tooken: the base URL is not proven a Tooken API")
	// ErrForbiddenAddress marks a connection the client refused to open: the
	// address is link-local (169.254.0.0/16, fe80::/10), where cloud
	// metadata services live and no Tooken API does.
	ErrForbiddenAddress = errors.New("tooken: link-local address refused")
)

// APIError is an error answer of the Tooken API.
type APIError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
	// RetryAfter is the server's Retry-After (429, 503), 0 if absent. The
	// client waits at most MaxRetryWait for it between attempts: an answer
	// asking for longer is returned at once, with the ask.
	RetryAfter time.Duration
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
	if e.RetryAfter > 0 {
		// In seconds, as the Retry-After header gives them (not Go's 1h0m0s).
		fmt.Fprintf(&sb, "; retry after %ds", int64(e.RetryAfter/time.Second))
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
// retry. RetryAfter (of the APIError) is the server's Retry-After, 0 if
// absent.
type RateLimitError struct {
	APIError
}

func (e *RateLimitError) Error() string { return e.APIError.Error() }

// Unwrap exposes the underlying API error.
func (e *RateLimitError) Unwrap() error { return &e.APIError }

// RetryAfter is the wait the server asked for in the answer that err
// carries (a 429 or a 503 with Retry-After), and whether it asked.
func RetryAfter(err error) (time.Duration, bool) {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		return apiErr.RetryAfter, true
	}
	return 0, false
}

// invalidAnswerError is a 2xx answer that is not a Tooken API answer. Its
// text says what was wrong with it, never what it held.
type invalidAnswerError struct {
	method, path string
	status       int
	what         string
}

func (e *invalidAnswerError) Error() string {
	return fmt.Sprintf("tooken: the answer to %s %s (status %d) is not a Tooken API answer: %s", e.method, e.path, e.status, e.what)
}

func (e *invalidAnswerError) Is(target error) bool { return target == ErrInvalidAnswer }

// notProvenError is a 404 (or a revoke's 204) from a base URL not proven a
// Tooken API. It does not unwrap to the APIError, so that errors.Is(err,
// ErrNotFound) is false: nobody may take it for "already gone" (or "revoked").
type notProvenError struct {
	method, path string
	status       int   // the answer's; 0 is 404
	proof        error // why GET /tokens/self did not prove the URL
}

func (e *notProvenError) Error() string {
	status := e.status
	if status == 0 {
		status = http.StatusNotFound
	}
	if e.proof == nil {
		return fmt.Sprintf("tooken: %s %s answered %d: the base URL does not answer as a Tooken API", e.method, e.path, status)
	}
	return fmt.Sprintf("tooken: %s %s answered %d, but the base URL has not been proven a Tooken API (GET /tokens/self: %v)", e.method, e.path, status, e.proof)
}

func (e *notProvenError) Is(target error) bool { return target == ErrNotProven }

// outcomeUnknownError wraps an error with ErrOutcomeUnknown.
type outcomeUnknownError struct{ err error }

func (e *outcomeUnknownError) Error() string   { return e.err.Error() }
func (e *outcomeUnknownError) Unwrap() []error { return []error{e.err, ErrOutcomeUnknown} }

// OutcomeUnknown marks err as ErrOutcomeUnknown (errors.Is matches it)
// without changing its text: for a caller that got an answer it cannot trust
// (a rotate answer without a secret) and so cannot tell what happened.
func OutcomeUnknown(err error) error { return &outcomeUnknownError{err} }

func parseAPIError(status int, data []byte, retryAfter time.Duration) *APIError {
	var envelope struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	e := &APIError{Status: status, RetryAfter: retryAfter}
	if json.Unmarshal(data, &envelope) == nil {
		// The answer is quoted in errors, logs and stored status: a
		// server that echoes a secret must not make us repeat it.
		e.Code = RedactSecrets(envelope.Error.Code)
		e.Message = RedactSecrets(envelope.Error.Message)
		e.RequestID = RedactSecrets(envelope.Error.RequestID)
	}
	if e.Code == "" && e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
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

// secretLike matches anything shaped like a Tooken secret, and its tail.
var secretLike = regexp.MustCompile(`tok_(live|test)_[A-Za-z0-9]*`)

// RedactSecrets replaces whatever looks like a Tooken secret in s.
func RedactSecrets(s string) string {
	if !strings.Contains(s, "tok_") {
		return s
	}
	return secretLike.ReplaceAllString(s, "[redacted secret]")
}

// mayHaveBeenSent reports whether a transport error can have happened after
// the server received the request (so a POST may have been carried out).
func mayHaveBeenSent(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false
	}
	return !IsTLSError(err)
}

// IsTLSError reports a TLS handshake or certificate failure.
func IsTLSError(err error) bool {
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

// IsUnreachable reports a failure to connect at all, or a timeout.
func IsUnreachable(err error) bool {
	if errors.Is(err, ErrForbiddenAddress) {
		return true
	}
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
