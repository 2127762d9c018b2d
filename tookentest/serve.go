package tookentest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// apiRequest is what serve learns about one API request on its way through
// the checks.
type apiRequest struct {
	r       *http.Request
	secret  string
	hasAuth bool // an Authorization header was sent (maybe malformed)
	clock   time.Time

	fault   Fault // the injected fault that matched, when faulted
	faulted bool

	kind     routeKind
	id       string // {id} of the path; "self" is resolved once the caller is known
	routeErr *apiError
	query    url.Values
	queryErr error
	body     []byte
	bodyErr  *apiError

	caller *token
	// key is the Idempotency-Key entry this request reserved (nil when none);
	// keyID is its index in Server.idem.
	key   *idemEntry
	keyID idemKey
}

// serve answers one API request. The checks run in the documented order
// (docs/emulator.md, "Order of checks"): outage, fault, authentication, rate
// limit, route, query, body size and type, Idempotency-Key; the call's handler
// then checks the call's scope, validates the body, looks up the target and
// checks escalation. The first check that fails answers.
func (s *Server) serve(x *exchange, r *http.Request) {
	q := &apiRequest{r: r, clock: s.now()}
	q.secret, q.hasAuth = bearer(r)
	x.idemKey = r.Header.Get("Idempotency-Key") // recorded on faulted requests too
	if s.answerOutageOrFault(x, q) {
		return
	}
	q.parse()
	if s.process(x, q) {
		s.saveState()
	}
}

// answerOutageOrFault answers an outage or a status fault, as a load balancer
// would: before authentication and without processing. A matching latency or
// drop fault is kept in q for later. It reports whether it answered.
func (s *Server) answerOutageOrFault(x *exchange, q *apiRequest) bool {
	s.mu.Lock()
	if t := s.authLocked(q.secret, q.clock); t != nil {
		x.callerID = t.id // for the request log only
	}
	down := s.down
	if !down {
		var fid string
		q.fault, fid, q.faulted = s.matchFaultLocked(q.r.Method, q.r.URL.Path)
		if q.faulted {
			x.fault = fid + ":" + q.fault.describe()
		}
	}
	s.mu.Unlock()
	if down {
		x.fail(errUnavailable("Tooken is unavailable (outage)"))
		return true
	}
	if !q.faulted {
		return false
	}
	s.count("faults")
	if q.fault.Status == 0 {
		x.drop = q.fault.Drop
		return false
	}
	s.sleep(q.fault.Latency)
	x.fail(faultError(q.fault))
	return true
}

// faultError is the answer of a status fault, with the contract's code for
// that status (a 429 always carries a Retry-After).
func faultError(f Fault) *apiError {
	e := &apiError{status: f.Status, code: codeForStatus(f.Status), msg: "injected fault", retryAfter: f.RetryAfter}
	if f.Status == http.StatusTooManyRequests {
		e.msg = "rate limit exceeded (injected)"
		if e.retryAfter <= 0 {
			e.retryAfter = 1
		}
	}
	return e
}

// parse reads the route, the query and the body; it needs no lock. Their
// errors are answered later, after authentication and the rate limit.
func (q *apiRequest) parse() {
	q.kind, q.id, q.routeErr = parseRoute(q.r.Method, q.r.URL.Path)
	q.query, q.queryErr = url.ParseQuery(q.r.URL.RawQuery)
	q.body, q.bodyErr = readBody(q.r)
}

// process runs the checks from authentication on, then the call, under s.mu
// (released only while a latency fault waits). It reports whether the call
// changed persisted state, which the caller then saves without the lock.
func (s *Server) process(x *exchange, q *apiRequest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authenticateLocked(x, q) || !s.rateLimitLocked(x, q) || !checkShape(x, q) {
		return false
	}
	if !s.reserveKeyLocked(x, q) || !s.delayLocked(x, q) {
		return false
	}
	return s.callLocked(x, q)
}

// authenticateLocked finds the caller token; without one the answer is 401
// with WWW-Authenticate, on every path (also unknown ones).
func (s *Server) authenticateLocked(x *exchange, q *apiRequest) bool {
	q.caller = s.authLocked(q.secret, q.clock)
	if q.caller != nil {
		x.callerID = q.caller.id
		return true
	}
	s.count("unauthorized")
	x.header.Set("WWW-Authenticate", `Bearer realm="tooken"`)
	switch {
	case !q.hasAuth:
		x.fail(errUnauthorized("missing Authorization: Bearer <secret> header"))
	case q.secret == "":
		x.fail(errUnauthorized("malformed Authorization header: want Bearer <secret>"))
	default:
		x.fail(errUnauthorized("unknown, revoked or expired secret"))
	}
	return false
}

// rateLimitLocked takes one request from the caller's bucket (429 with
// Retry-After when empty). A request that passes counts as a use of the
// caller token (last_used_at).
func (s *Server) rateLimitLocked(x *exchange, q *apiRequest) bool {
	if ok, retry := s.allowLocked(q.caller.id); !ok {
		s.count("rate_limited")
		x.fail(errRateLimited("rate limit exceeded: retry after the Retry-After delay", retry))
		return false
	}
	used := q.clock.Truncate(time.Second)
	q.caller.lastUsedAt = &used
	return true
}

// checkShape answers an unknown route, a bad query or a bad body (size,
// Content-Type), in that order, and resolves "self" to the caller's id.
// Bodies of calls that take none are ignored.
func checkShape(x *exchange, q *apiRequest) bool {
	switch {
	case q.routeErr != nil:
		x.fail(q.routeErr)
		return false
	case q.queryErr != nil:
		x.fail(errInvalid("malformed query string"))
		return false
	case q.kind != routeList && len(q.query) > 0:
		x.fail(errInvalid("this call takes no query parameters"))
		return false
	}
	if q.kind == routeCreate || q.kind == routeUpdate || q.kind == routeRotate {
		if q.bodyErr != nil {
			x.fail(q.bodyErr)
			return false
		}
		if aerr := checkContentType(q.r, q.body); aerr != nil {
			x.fail(aerr)
			return false
		}
	} else {
		q.body = nil
	}
	if q.id == "self" {
		q.id = q.caller.id
	}
	return true
}

// delayLocked applies a latency fault: the request waits (without the lock,
// its Idempotency-Key already reserved), then is authenticated again, since
// its secret may have died meanwhile.
func (s *Server) delayLocked(x *exchange, q *apiRequest) bool {
	if !q.faulted || q.fault.Latency <= 0 {
		return true
	}
	s.mu.Unlock()
	s.sleep(q.fault.Latency)
	s.mu.Lock()
	q.clock = s.now()
	if q.caller = s.authLocked(q.secret, q.clock); q.caller != nil {
		return true
	}
	if q.key != nil {
		delete(s.idem, q.keyID)
	}
	s.count("unauthorized")
	x.fail(errUnauthorized("unknown, revoked or expired secret"))
	return false
}

// callLocked runs the call's handler (scope, body validation, lookup,
// escalation, then the change itself), settles the reserved Idempotency-Key
// and reports whether persisted state changed.
func (s *Server) callLocked(x *exchange, q *apiRequest) bool {
	c := &call{caller: q.caller, now: q.clock.Truncate(time.Second), clock: q.clock, body: q.body, query: q.query, id: q.id}
	status, v, aerr := s.handlerFor(q.kind)(c)
	if aerr != nil {
		x.fail(aerr)
	} else {
		x.ok(status, v)
	}
	s.settleKeyLocked(x, q)
	if c.changed {
		s.stateVersion++
	}
	return c.changed
}

// handlerFor returns the handler of a route.
func (s *Server) handlerFor(kind routeKind) func(*call) (int, any, *apiError) {
	switch kind {
	case routeCreate:
		return s.handleCreate
	case routeList:
		return s.handleList
	case routeGet:
		return s.handleGet
	case routeUpdate:
		return s.handleUpdate
	case routeRotate:
		return s.handleRotate
	case routeRevoke:
		return s.handleRevoke
	}
	panic(fmt.Sprintf("tookentest: no handler for route %d", kind))
}

// bearer extracts the secret of an "Authorization: Bearer <secret>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(rest), true
}

type routeKind int

const (
	routeList routeKind = iota + 1
	routeCreate
	routeGet
	routeUpdate
	routeRevoke
	routeRotate
)

// parseRoute maps method and path to a call. Unknown paths and methods are
// not_found, as Stripe answers them.
func parseRoute(method, path string) (routeKind, string, *apiError) {
	unknown := errNotFound("unrecognized request: " + method + " " + redactPath(path))
	rest, ok := strings.CutPrefix(path, "/v1/tokens")
	if !ok {
		return 0, "", unknown
	}
	if rest == "" {
		switch method {
		case http.MethodGet:
			return routeList, "", nil
		case http.MethodPost:
			return routeCreate, "", nil
		}
		return 0, "", unknown
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok || rest == "" {
		return 0, "", unknown
	}
	id, tail, hasTail := strings.Cut(rest, "/")
	if id == "" {
		return 0, "", unknown
	}
	if !hasTail {
		switch method {
		case http.MethodGet:
			return routeGet, id, nil
		case http.MethodPatch:
			return routeUpdate, id, nil
		case http.MethodDelete:
			return routeRevoke, id, nil
		}
		return 0, "", unknown
	}
	if tail == "rotate" && method == http.MethodPost {
		return routeRotate, id, nil
	}
	return 0, "", unknown
}

func readBody(r *http.Request) ([]byte, *apiError) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, errInvalid(fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes))
		}
		return nil, errInvalid("reading request body: " + err.Error())
	}
	return b, nil
}

func checkContentType(r *http.Request, body []byte) *apiError {
	ct := r.Header.Get("Content-Type")
	if ct == "" || len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return errInvalid("Content-Type must be application/json")
	}
	return nil
}
