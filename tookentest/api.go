package tookentest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Handler is the API handler (paths /v1/...).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveAPI) }

// exchange is one API request and the answer being built for it.
type exchange struct {
	reqID    string
	start    time.Time
	method   string
	path     string
	callerID string
	idemKey  string
	replayed bool
	fault    string
	drop     bool

	status int
	header http.Header
	body   []byte
}

func (x *exchange) fail(e *apiError) {
	x.status = e.status
	x.body, _ = json.Marshal(errorJSON{Error: errorDetail{Code: e.code, Message: e.msg, RequestID: x.reqID}})
	if e.retryAfter > 0 {
		x.header.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
}

func (x *exchange) ok(status int, v any) {
	x.status = status
	if v != nil {
		x.body, _ = json.Marshal(v)
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	x := &exchange{
		reqID:  randHex("req_"),
		start:  time.Now(),
		method: r.Method,
		path:   r.URL.Path,
		header: http.Header{},
	}
	s.count("requests")
	s.serveSafely(x, r)
	s.finish(w, x)
}

// serveSafely turns a panic in the emulator into the contract's 500 internal.
func (s *Server) serveSafely(x *exchange, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logf("panic serving %s %s: %v", r.Method, redactPath(r.URL.Path), v)
			x.header = http.Header{}
			x.drop = false
			x.fail(&apiError{status: http.StatusInternalServerError, code: "internal", msg: "internal error"})
		}
	}()
	s.serve(x, r)
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

func (s *Server) serve(x *exchange, r *http.Request) {
	secret, hasAuth := bearer(r)
	clock := s.now()
	x.idemKey = r.Header.Get("Idempotency-Key") // recorded on faulted requests too

	// Phase 1: outage and faults, answered without processing.
	s.mu.Lock()
	if t := s.authLocked(secret, clock); t != nil {
		x.callerID = t.id
	}
	down := s.down
	var f Fault
	var matched bool
	if !down {
		var fid string
		f, fid, matched = s.matchFaultLocked(r.Method, r.URL.Path)
		if matched {
			x.fault = fid + ":" + f.describe()
		}
	}
	s.mu.Unlock()
	if down {
		x.fail(errUnavailable("Tooken is unavailable (outage)"))
		return
	}
	if matched {
		s.count("faults")
		if f.Status != 0 {
			s.sleep(f.Latency)
			e := &apiError{status: f.Status, code: codeForStatus(f.Status), msg: "injected fault", retryAfter: f.RetryAfter}
			if f.Status == http.StatusTooManyRequests {
				e.msg = "rate limit exceeded (injected)"
				if e.retryAfter <= 0 {
					e.retryAfter = 1
				}
			}
			x.fail(e)
			return
		}
		x.drop = f.Drop
	}

	// Work that needs no lock: route, query, body, idempotency key.
	kind, id, routeErr := parseRoute(r.Method, r.URL.Path)
	query, qerr := url.ParseQuery(r.URL.RawQuery)
	body, bodyErr := readBody(r)

	// Phase 2: authentication, rate limit, request checks, idempotency.
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()
	caller := s.authLocked(secret, clock)
	if caller == nil {
		s.count("unauthorized")
		x.header.Set("WWW-Authenticate", `Bearer realm="tooken"`)
		switch {
		case !hasAuth:
			x.fail(errUnauthorized("missing Authorization: Bearer <secret> header"))
		case secret == "":
			x.fail(errUnauthorized("malformed Authorization header: want Bearer <secret>"))
		default:
			x.fail(errUnauthorized("unknown, revoked or expired secret"))
		}
		return
	}
	x.callerID = caller.id
	if ok, retry := s.allowLocked(caller.id); !ok {
		s.count("rate_limited")
		x.fail(errRateLimited("rate limit exceeded: retry after the Retry-After delay", retry))
		return
	}
	used := clock.Truncate(time.Second)
	caller.lastUsedAt = &used
	if routeErr != nil {
		x.fail(routeErr)
		return
	}
	if qerr != nil {
		x.fail(errInvalid("malformed query string"))
		return
	}
	if kind != routeList && len(query) > 0 {
		x.fail(errInvalid("this call takes no query parameters"))
		return
	}
	if kind == routeCreate || kind == routeUpdate || kind == routeRotate {
		if bodyErr != nil {
			x.fail(bodyErr)
			return
		}
		if aerr := checkContentType(r, body); aerr != nil {
			x.fail(aerr)
			return
		}
	} else {
		body = nil
	}
	if id == "self" {
		id = caller.id
	}

	var entry *idemEntry
	var ikey idemKey
	if r.Method == http.MethodPost {
		key, present, aerr := idempotencyKey(r)
		if aerr != nil {
			x.fail(aerr)
			return
		}
		if present {
			x.idemKey = key
			if fp, ok := fingerprint(r.Method, r.URL.Path, body); ok {
				ikey = idemKey{caller: caller.id, key: key}
				e := s.idem[ikey]
				if e != nil && clock.Sub(e.createdAt) >= IdempotencyWindow {
					delete(s.idem, ikey)
					e = nil
				}
				switch {
				case e == nil:
					entry = &idemEntry{fingerprint: fp, createdAt: clock, inFlight: true}
					s.idem[ikey] = entry
				case e.inFlight:
					x.fail(errConflict("a request with this Idempotency-Key is still being processed; retry later"))
					return
				case e.fingerprint != fp:
					x.fail(errIdempotencyReused("Idempotency-Key was already used with another request (method, path or body differ)"))
					return
				default:
					x.status, x.body, x.replayed = e.status, e.body, true
					x.header.Set("Idempotent-Replayed", "true")
					s.count("replayed")
					return
				}
			}
		}
	}

	if matched && f.Latency > 0 {
		s.mu.Unlock()
		s.sleep(f.Latency)
		s.mu.Lock()
		clock = s.now()
		if caller = s.authLocked(secret, clock); caller == nil {
			if entry != nil {
				delete(s.idem, ikey)
			}
			s.count("unauthorized")
			x.fail(errUnauthorized("unknown, revoked or expired secret"))
			return
		}
	}

	// Phase 3: the call itself.
	c := &call{caller: caller, now: clock.Truncate(time.Second), clock: clock, body: body, query: query, id: id}
	var status int
	var v any
	var aerr *apiError
	switch kind {
	case routeCreate:
		status, v, aerr = s.handleCreate(c)
	case routeList:
		status, v, aerr = s.handleList(c)
	case routeGet:
		status, v, aerr = s.handleGet(c)
	case routeUpdate:
		status, v, aerr = s.handleUpdate(c)
	case routeRotate:
		status, v, aerr = s.handleRotate(c)
	case routeRevoke:
		status, v, aerr = s.handleRevoke(c)
	}
	if aerr != nil {
		x.fail(aerr)
	} else {
		x.ok(status, v)
	}
	if entry != nil {
		if storable(x.status) {
			entry.inFlight = false
			entry.status, entry.body = x.status, x.body
		} else {
			delete(s.idem, ikey)
		}
	}
	if c.changed {
		s.stateVersion++
	}
	s.mu.Unlock()
	locked = false
	if c.changed {
		s.saveState()
	}
}

// storable reports whether an answer is kept for Idempotency-Key replays:
// outcomes of a processed call (success, forbidden, not found), not input
// errors, which the caller is expected to fix and retry with the same key.
func storable(status int) bool {
	return status < 300 || status == http.StatusForbidden || status == http.StatusNotFound
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

func idempotencyKey(r *http.Request) (string, bool, *apiError) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", false, nil
	}
	if len(vs) > 1 {
		return "", true, errInvalid("Idempotency-Key given more than once")
	}
	k := vs[0]
	if len(k) < 1 || len(k) > MaxIdempotencyKey {
		return "", true, errInvalid(fmt.Sprintf("Idempotency-Key must be 1 to %d printable characters", MaxIdempotencyKey))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", true, errInvalid(fmt.Sprintf("Idempotency-Key must be 1 to %d printable characters", MaxIdempotencyKey))
		}
	}
	return k, true, nil
}

// fingerprint identifies a request for Idempotency-Key replays: method, path
// and the body as canonical JSON. ok is false when the body is not JSON (the
// call then fails validation and nothing is remembered).
func fingerprint(method, path string, body []byte) ([32]byte, bool) {
	canon := []byte("{}")
	if len(bytes.TrimSpace(body)) > 0 {
		var v any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return [32]byte{}, false
		}
		if _, err := dec.Token(); err != io.EOF {
			return [32]byte{}, false
		}
		var err error
		if canon, err = json.Marshal(v); err != nil {
			return [32]byte{}, false
		}
	}
	h := sha256.New()
	h.Write([]byte(method + " " + path + "\n"))
	h.Write(canon)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, true
}

// sleep waits d, or less if the server closes.
func (s *Server) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stop:
	}
}

// finish sends the answer (or drops the connection) and records the request.
func (s *Server) finish(w http.ResponseWriter, x *exchange) {
	limit, remaining, reset := s.rateHeaders(x.callerID)
	h := w.Header()
	for k, v := range x.header {
		h[k] = v
	}
	h.Set("X-Request-Id", x.reqID)
	h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
	if x.body != nil {
		h.Set("Content-Type", "application/json")
	}
	if x.status == 0 {
		x.status = http.StatusInternalServerError
	}
	if x.status >= 400 {
		s.count("errors")
	}
	// Record before answering: a client that has its answer finds the
	// request in the log.
	s.record(x)
	if x.drop {
		s.count("dropped")
		dropConnection(w)
		return
	}
	w.WriteHeader(x.status)
	if x.body != nil {
		_, _ = w.Write(x.body)
	}
}

// dropConnection closes the client connection without an answer.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// allowLocked takes one request from the caller's bucket. When the bucket is
// empty it returns the whole seconds to wait.
func (s *Server) allowLocked(id string) (bool, int) {
	l := s.limiterLocked(id)
	now := time.Now()
	if l.AllowN(now, 1) {
		return true, 0
	}
	tokens := l.TokensAt(now)
	wait := (1 - tokens) / float64(s.rps)
	secs := int(math.Ceil(wait))
	if secs < 1 {
		secs = 1
	}
	return false, secs
}

// rateHeaders returns X-RateLimit-Limit (the bucket size, i.e. the burst),
// -Remaining (whole requests left now) and -Reset (Unix second at which the
// bucket is full again).
func (s *Server) rateHeaders(id string) (int, int, int64) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if isInf(s.rps) {
		return math.MaxInt32, math.MaxInt32, now.Unix()
	}
	tokens := float64(s.burst)
	if l := s.limiters[id]; id != "" && l != nil {
		tokens = l.TokensAt(now)
	}
	remaining := int(math.Floor(tokens))
	if remaining < 0 {
		remaining = 0
	}
	missing := float64(s.burst) - tokens
	if missing < 0 {
		missing = 0
	}
	full := now.Add(time.Duration(missing / float64(s.rps) * float64(time.Second)))
	reset := full.Unix()
	if full.Nanosecond() > 0 {
		reset++
	}
	return s.burst, remaining, reset
}

var secretLike = regexp.MustCompile(`tok_[A-Za-z0-9_]+`)

// redactPath hides anything that looks like a secret before a path is logged
// or echoed.
func redactPath(p string) string {
	if strings.Contains(p, "tok_") {
		p = secretLike.ReplaceAllString(p, "tok_REDACTED")
	}
	if len(p) > 200 {
		return p[:200] + "..."
	}
	return p
}

func (s *Server) record(x *exchange) {
	d := time.Since(x.start)
	path := redactPath(x.path)
	rec := RequestRecord{
		Time:           s.now(),
		Method:         x.method,
		Path:           path,
		Status:         x.status,
		CallerID:       x.callerID,
		IdempotencyKey: x.idemKey,
		Replayed:       x.replayed,
		Fault:          x.fault,
		RequestID:      x.reqID,
		Duration:       d,
		Dropped:        x.drop,
	}
	s.reqMu.Lock()
	if len(s.requests) < MaxRequestLog {
		s.requests = append(s.requests, rec)
	} else {
		s.requests[s.reqStart] = rec
		s.reqStart = (s.reqStart + 1) % MaxRequestLog
	}
	s.reqMu.Unlock()

	if s.opts.Logger == nil {
		return
	}
	caller := x.callerID
	if caller == "" {
		caller = "-"
	}
	var extra strings.Builder
	if x.replayed {
		extra.WriteString(" replayed=true")
	}
	if x.fault != "" {
		extra.WriteString(" fault=" + x.fault)
	}
	line := fmt.Sprintf("%s %s %s %d caller=%s dur=%s req=%s%s\n",
		rec.Time.Format(time.RFC3339Nano), x.method, path, x.status, caller,
		d.Round(time.Microsecond), x.reqID, extra.String())
	s.logMu.Lock()
	_, _ = io.WriteString(s.opts.Logger, line)
	s.logMu.Unlock()
}

// logf writes a non-request line to the logger (never a secret).
func (s *Server) logf(format string, args ...any) {
	if s.opts.Logger == nil {
		return
	}
	line := fmt.Sprintf("%s "+format+"\n", append([]any{s.now().Format(time.RFC3339Nano)}, args...)...)
	s.logMu.Lock()
	_, _ = io.WriteString(s.opts.Logger, line)
	s.logMu.Unlock()
}
