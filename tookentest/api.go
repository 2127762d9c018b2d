package tookentest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
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
