package tookentest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s := NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	obj    map[string]any
}

func (r resp) errCode() string {
	e, _ := r.obj["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r resp) errMessage() string {
	e, _ := r.obj["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func (r resp) str(key string) string {
	v, _ := r.obj[key].(string)
	return v
}

var testClient = &http.Client{Timeout: 10 * time.Second}

// do sends one request. body may be nil, a string (sent raw) or any value
// (sent as JSON). hdr holds extra headers as "Name", "value" pairs.
func do(t testing.TB, s *Server, method, path, secret string, body any, hdr ...string) resp {
	t.Helper()
	r, err := tryCall(s, method, path, secret, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func tryCall(s *Server, method, path, secret string, body any, hdr ...string) (resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL()+strings.TrimPrefix(path, "/v1"), rd)
	if err != nil {
		return resp{}, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" && hdr[i] == "Content-Type" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := testClient.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.obj)
	}
	return out, nil
}

// wantErr asserts an error answer: status, code, a message mentioning each of
// parts, and request_id equal to X-Request-Id.
func wantErr(t testing.TB, r resp, status int, code string, parts ...string) {
	t.Helper()
	if r.status != status || r.errCode() != code {
		t.Fatalf("got %d %s (%s), want %d %s", r.status, r.errCode(), r.raw, status, code)
	}
	msg := r.errMessage()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("message %q does not mention %q", msg, p)
		}
	}
	e := r.obj["error"].(map[string]any)
	if id, _ := e["request_id"].(string); id == "" || id != r.header.Get("X-Request-Id") {
		t.Errorf("request_id %q, X-Request-Id %q", id, r.header.Get("X-Request-Id"))
	}
	if strings.Contains(string(r.raw), "tok_test_") {
		t.Errorf("error body carries a secret: %s", r.raw)
	}
}

func wantStatus(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d (%s), want %d", r.status, r.raw, status)
	}
}

type created struct {
	id, secret string
}

func mustCreate(t testing.TB, s *Server, secret string, body map[string]any) created {
	t.Helper()
	r := do(t, s, "POST", "/v1/tokens", secret, body)
	wantStatus(t, r, http.StatusCreated)
	return created{id: r.str("id"), secret: r.str("secret")}
}

func tok(name string, scopes ...string) map[string]any {
	return map[string]any{"name": name, "scopes": scopes}
}

func liveCount(s *Server) int { return len(s.LiveTokens()) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
