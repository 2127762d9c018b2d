package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type running struct {
	api, admin string
	cancel     context.CancelFunc
	done       chan error
	stderr     *lockedWriter
}

var readyLine = regexp.MustCompile(`^tooken-server listening on (http://\S+/v1)(?: \(admin (http://\S+)\))?$`)

func start(t *testing.T, args ...string) *running {
	t.Helper()
	c, err := parseFlags(append([]string{"--listen", "127.0.0.1:0"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &running{cancel: cancel, done: make(chan error, 1), stderr: &lockedWriter{}}
	errw := r.stderr
	go func() {
		err := serve(ctx, c, pw, errw)
		pw.CloseWithError(io.EOF)
		r.done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := readyLine.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		t.Fatalf("ready line %q", line)
	}
	r.api, r.admin = m[1], m[2]
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no graceful shutdown")
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func req(t *testing.T, method, url, secret, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	rq, _ := http.NewRequest(method, url, rd)
	if secret != "" {
		rq.Header.Set("Authorization", "Bearer "+secret)
	}
	rq.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(b, &out)
	return res.StatusCode, out
}

func TestServeRestartFromState(t *testing.T) {
	dir := t.TempDir()
	state, secretFile := filepath.Join(dir, "state.json"), filepath.Join(dir, "root")
	r := start(t, "--admin-listen", "127.0.0.1:0", "--state", state, "--root-secret-file", secretFile, "--root-scopes", "tokens:write, billing:read")
	if r.admin == "" {
		t.Fatal("no admin URL")
	}
	fi, err := os.Stat(secretFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", err, fi)
	}
	b, _ := os.ReadFile(secretFile)
	root := string(b)
	st, tok := req(t, "POST", r.api+"/tokens", root, `{"name":"ci","scopes":["billing:read"]}`)
	if st != 201 {
		t.Fatalf("create %d %v", st, tok)
	}
	st, self := req(t, "GET", r.api+"/tokens/self", root, "")
	if st != 200 || len(self["scopes"].([]any)) != 2 {
		t.Fatalf("self %d %v", st, self)
	}
	st, _ = req(t, "GET", r.admin+"/admin/counters", "", "")
	if st != 200 {
		t.Fatal(st)
	}
	r.stop(t)
	log := r.stderr.String()
	if !strings.Contains(log, "POST /v1/tokens 201 caller=") || strings.Contains(log, root) || strings.Contains(log, tok["secret"].(string)) {
		t.Fatalf("log:\n%s", log)
	}

	// Restart: same tokens, same root, the secret file left as is.
	if err := os.WriteFile(secretFile, []byte(root), 0o600); err != nil {
		t.Fatal(err)
	}
	r = start(t, "--state", state, "--root-secret-file", secretFile)
	defer r.stop(t)
	if b, _ := os.ReadFile(secretFile); string(b) != root {
		t.Fatal("secret file rewritten")
	}
	if !strings.Contains(r.stderr.String(), "left as is") {
		t.Fatalf("stderr: %s", r.stderr.String())
	}
	st, list := req(t, "GET", r.api+"/tokens", root, "")
	if st != 200 || len(list["data"].([]any)) != 2 {
		t.Fatalf("list after restart %d %v", st, list)
	}
	st, _ = req(t, "GET", r.api+"/tokens/self", tok["secret"].(string), "")
	if st != 200 {
		t.Fatalf("issued secret after restart: %d", st)
	}
}

func TestServeSeededRoot(t *testing.T) {
	secret := "tok_test_" + strings.Repeat("Ab1", 10)
	t.Setenv("TOOKEN_ROOT_SECRET", secret)
	file := filepath.Join(t.TempDir(), "root")
	r := start(t, "--root-secret-file", file, "--rate-limit", "-1")
	defer r.stop(t)
	if b, _ := os.ReadFile(file); string(b) != secret {
		t.Fatal("seeded secret not written")
	}
	if st, _ := req(t, "GET", r.api+"/tokens/self", secret, ""); st != 200 {
		t.Fatal(st)
	}
}

func TestFlags(t *testing.T) {
	for name, args := range map[string][]string{
		"webhook without secret": {"--webhook-url", "http://127.0.0.1:1/"},
		"extra argument":         {"serve"},
		"unknown flag":           {"--root-secret", "x"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c, err := parseFlags([]string{"--webhook-url", "http://a/", "--webhook-url", "http://b/", "--webhook-secret-file", "f", "--burst", "5"}, io.Discard)
	if err != nil || len(c.webhookURLs) != 2 || c.burst != 5 || c.listen != "127.0.0.1:8300" {
		t.Fatalf("%+v %v", c, err)
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	c, _ = parseFlags([]string{"--webhook-url", "http://a/", "--webhook-secret-file", empty, "--listen", "127.0.0.1:0"}, io.Discard)
	if err := serve(context.Background(), c, io.Discard, io.Discard); err == nil {
		t.Fatal("empty webhook secret accepted")
	}
	c, _ = parseFlags([]string{"--root-scopes", "Bad", "--listen", "127.0.0.1:0"}, io.Discard)
	if err := serve(context.Background(), c, io.Discard, io.Discard); err == nil {
		t.Fatal("bad root scopes accepted")
	}
}
