package tooken

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// How the engine words what it tells a caller: durations as a caller writes
// them, and upstream failures as what Tooken said and what to do about it.

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// humanDuration writes d as a caller would write it in a field (1m, 5m,
// 1h30m, 24h, 72h, 30d, 366d): whole days from a week on as days, which
// Vault's duration fields accept, and otherwise time.Duration's form without
// the zero units it ends with (1h0m0s). Every duration in a message or a
// description goes through it.
func humanDuration(d time.Duration) string {
	if d >= week && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// docsURL is where the engine's documentation lives, for messages and help
// texts read by operators of an installed binary.
const docsURL = "https://github.com/tooken/vault-plugin-secrets-tooken"

// rootSecretFix is how an operator gives the engine a working root secret.
// The mount path is the caller's: Vault does not tell every code path of
// the engine where it is mounted.
const rootSecretFix = "write a working root secret to the mount's config: vault write <mount>/config token=- < root-secret-file"

// upstreamProblem says, for a caller, what went wrong in a call to Tooken
// (err comes from the Tooken client) and what to do about it, in one or two
// sentences (upstreamFailure).
func upstreamProblem(err error) string {
	what, todo := upstreamFailure(err)
	return what + "; " + todo
}

// upstreamFailure says what went wrong in a call to Tooken, and what to do:
// Tooken's status, code and message and its request id when it answered,
// the usual causes otherwise. A 401 always concerns the root secret: every
// call it describes is authenticated by the root. It never repeats
// transport detail (which would tell a closed port from a filtering one at a
// URL that may be anything) nor a secret (the client redacts Tooken's
// answer).
func upstreamFailure(err error) (what, todo string) {
	const checkURL = "check that url is Tooken's base URL, with the API version (/v1)"
	var apiErr *tookenapi.APIError
	hasAPI := errors.As(err, &apiErr)
	switch {
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return "Tooken rejects the engine's root secret (" + answeredBriefly(apiErr) + "): it is unknown, revoked or expired, perhaps rotated or revoked outside Vault", rootSecretFix
	case hasAPI && errors.Is(err, tookenapi.ErrRateLimited) && apiErr.RetryAfter > 0:
		return "Tooken is rate limiting this engine and asks to retry after " + humanDuration(apiErr.RetryAfter) + " (" + answered(apiErr) + ")", "retry then"
	case errors.Is(err, tookenapi.ErrRateLimited):
		return "Tooken is rate limiting this engine (" + answered(apiErr) + ")", "retry later"
	case hasAPI && apiErr.RetryAfter > 0:
		return "Tooken is unavailable and asks to retry after " + humanDuration(apiErr.RetryAfter) + " (" + answered(apiErr) + ")", "retry then"
	case hasAPI && apiErr.Status >= 500:
		return "Tooken failed (" + answered(apiErr) + ")", "retry later"
	case errors.Is(err, tookenapi.ErrForbidden):
		return "Tooken refuses the call (" + answered(apiErr) + "): the root token lacks a scope it needs", "give the root tokens:write (to create, rotate or revoke tokens) and tokens:read (to read them) at Tooken"
	case hasAPI:
		return "Tooken refuses the call (" + answered(apiErr) + ")", "check the request"
	case errors.Is(err, tookenapi.ErrNotProven):
		return "the config's url answered 404 and has not been proven a Tooken API", checkURL
	case errors.Is(err, tookenapi.ErrInvalidAnswer):
		return "the config's url did not answer as the Tooken API does", checkURL
	case errors.Is(err, tookenapi.ErrForbiddenAddress):
		return "the config's url resolves to a link-local address, which the engine never calls", "check url"
	case tookenapi.IsTLSError(err):
		return "TLS with the config's url failed (its certificate is not trusted by ca_cert, or by the system roots when ca_cert is empty)", "check url and ca_cert"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "Tooken did not answer in time (request_timeout, with max_retries retries)", "retry later, or raise request_timeout"
	}
	return "Tooken cannot be reached at the config's url (the connection failed or was cut)", "check url and the network, and retry"
}

// answeredBriefly is Tooken's answer without its message: "401
// unauthorized, request req_...".
func answeredBriefly(e *tookenapi.APIError) string {
	if e == nil {
		return "no answer"
	}
	return answered(&tookenapi.APIError{Status: e.Status, Code: e.Code, RequestID: e.RequestID})
}

// answered is Tooken's answer in a message: "503 unavailable: message,
// request req_...", the status's text when Tooken gave no code.
func answered(e *tookenapi.APIError) string {
	if e == nil {
		return "no answer"
	}
	s := strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += ", request " + e.RequestID
	}
	return s
}

// isTimeout tells whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refusedRotation is what a caller is told when Tooken refused the rotation
// of what's token: nothing changed upstream, and the current secret keeps
// working, unless Tooken refused the root secret itself.
func refusedRotation(what string, err error) string {
	failure, todo := upstreamFailure(err)
	if errors.Is(err, tookenapi.ErrUnauthorized) {
		return failure + " (nothing changed upstream); " + todo
	}
	return failure + "; nothing changed upstream: the current " + what + " secret is unchanged and keeps working; " + todo
}

// upstreamOutcome says what went wrong in a call whose outcome is unknown:
// the engine finishes it itself, so there is nothing to do.
func upstreamOutcome(err error) string {
	what, _ := upstreamFailure(err)
	return what
}

// upstreamAnswer is Tooken's answer in err ("403 scope_not_held: token lacks
// billing:write, request req_..."), for a message that says itself what it
// means.
func upstreamAnswer(err error) string {
	var apiErr *tookenapi.APIError
	errors.As(err, &apiErr)
	return answered(apiErr)
}

// Go's text/template errors: "template: NAME:LINE: MSG" from the parser,
// "template: NAME:LINE:COL: executing "NAME" at <ACTION>: MSG" from a render.
var (
	templateParseErr = regexp.MustCompile(`^template: [^:]*:(\d+): (.*)$`)
	templateExecErr  = regexp.MustCompile(`(?s)^template: [^:]*:(\d+):(\d+): executing "[^"]*" at <(.*?)>: (?:error calling [a-z_0-9]+: )?(.*)$`)
)

// templateError words a text/template error of a name template for the
// caller: where it is (line, or line:column and the action), and what is
// wrong in the engine's terms, without the template's internal name.
func templateError(err error) error {
	msg := err.Error()
	if m := templateExecErr.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("at %s:%s, in {{ %s }}: %s", m[1], m[2], shortText(m[3], 60), m[4])
	}
	m := templateParseErr.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(strings.TrimPrefix(msg, "template: "))
	}
	line, what := m[1], m[2]
	switch {
	case what == "unclosed action":
		what = "unclosed action: a {{ has no matching }}"
	case what == "unexpected EOF":
		what = "the template ends inside an {{ if }} or {{ with }}: close it with {{ end }}"
	case strings.HasPrefix(what, "function ") && strings.HasSuffix(what, " not defined"):
		fn := strings.TrimSuffix(strings.TrimPrefix(what, "function "), " not defined")
		what = fmt.Sprintf("function %s is not allowed (allowed: %s)", fn, strings.Join(allowedFunctions, ", "))
	}
	return fmt.Errorf("does not parse at line %s: %s", line, what)
}

// quoteShort quotes a caller's string for a message, cut after 40 characters.
func quoteShort(s string) string { return strconv.Quote(shortText(s, 40)) }

// joinFirst lists the first n items, then how many more there are: "a, b
// and 3 more".
func joinFirst(items []string, n int) string {
	s := strings.Join(items[:min(len(items), n)], ", ")
	if len(items) > n {
		s += fmt.Sprintf(" and %d more", len(items)-n)
	}
	return s
}

// shortText is s cut after n characters, for a message.
func shortText(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "..."
	}
	return s
}
