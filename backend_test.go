package tooken

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

const (
	testMountAccessor = "tooken_1234abcd"
	testMountUUID     = "5b0b6c2e-7d0a-4a43-9f6e-2c1d7e9b8a01"
)

// countingStorage counts storage round trips.
type countingStorage struct {
	logical.Storage
	gets, puts, deletes, lists atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.puts.Add(1)
	return s.Storage.Put(ctx, e)
}

func (s *countingStorage) Delete(ctx context.Context, key string) error {
	s.deletes.Add(1)
	return s.Storage.Delete(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	return s.Storage.List(ctx, prefix)
}

func (s *countingStorage) total() int64 {
	return s.gets.Load() + s.puts.Load() + s.deletes.Load() + s.lists.Load()
}

func (s *countingStorage) reset() {
	s.gets.Store(0)
	s.puts.Store(0)
	s.deletes.Store(0)
	s.lists.Store(0)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv is a backend on in-memory storage, driven as Vault drives it.
type testEnv struct {
	t       testing.TB
	b       *tookenBackend
	storage *countingStorage
	sys     *logical.StaticSystemView
	logs    *syncBuffer
}

type envOption func(*logical.BackendConfig)

func withSystemView(sys *logical.StaticSystemView) envOption {
	return func(c *logical.BackendConfig) { c.System = sys }
}

func getTestBackend(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	conf := logical.TestBackendConfig()
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs})
	conf.StorageView = &logical.InmemStorage{}
	conf.BackendUUID = testMountUUID
	for _, o := range opts {
		o(conf)
	}
	b, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	tb := b.(*tookenBackend)
	t.Cleanup(func() { tb.Cleanup(context.Background()) })
	sys, ok := conf.System.(*logical.StaticSystemView)
	if w, wraps := conf.System.(interface {
		static() *logical.StaticSystemView
	}); !ok && wraps {
		sys = w.static()
	}
	return &testEnv{
		t:       t,
		b:       tb,
		storage: &countingStorage{Storage: conf.StorageView},
		sys:     sys,
		logs:    logs,
	}
}

func newEmulator(t testing.TB, opts tookentest.Options) *tookentest.Server {
	t.Helper()
	s := tookentest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// tamperingFront is a proxy in front of the emulator srv (a broken Tooken,
// or a proxy on the way) that edits the requests it matches with editReq
// and their 2xx JSON answers with editResp (either may be nil); the others
// pass through. Configure its URL + "/v1".
func tamperingFront(t testing.TB, srv *tookentest.Server, match func(*http.Request) bool, editReq, editResp func(map[string]any)) *httptest.Server {
	t.Helper()
	api := srv.Handler()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !match(r) {
			api.ServeHTTP(w, r)
			return
		}
		if editReq != nil {
			body, _ := io.ReadAll(r.Body)
			var m map[string]any
			if json.Unmarshal(body, &m) == nil {
				editReq(m)
				body, _ = json.Marshal(m)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, r)
		out := rec.Body.Bytes()
		var m map[string]any
		if editResp != nil && rec.Code < 300 && json.Unmarshal(out, &m) == nil {
			editResp(m)
			out, _ = json.Marshal(m)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
	}))
	t.Cleanup(front.Close)
	return front
}

func (e *testEnv) request(op logical.Operation, path string, data map[string]any) *logical.Request {
	return &logical.Request{
		Operation:     op,
		Path:          path,
		Data:          data,
		Storage:       e.storage,
		MountAccessor: testMountAccessor,
		MountPoint:    "tooken/",
		DisplayName:   "token",
	}
}

func (e *testEnv) handle(req *logical.Request) (*logical.Response, error) {
	return e.b.HandleRequest(context.Background(), req)
}

func (e *testEnv) read(path string) (*logical.Response, error) {
	return e.handle(e.request(logical.ReadOperation, path, nil))
}

func (e *testEnv) del(path string) (*logical.Response, error) {
	return e.handle(e.request(logical.DeleteOperation, path, nil))
}

func (e *testEnv) list(path string) (*logical.Response, error) {
	return e.handle(e.request(logical.ListOperation, path, nil))
}

// write runs the existence check first and then a create or an update, the
// way Vault core does.
func (e *testEnv) write(path string, data map[string]any) (*logical.Response, error) {
	req := e.request(logical.UpdateOperation, path, data)
	found, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
	if err != nil {
		// Vault answers a user error from the existence check with a 400.
		var ue errutil.UserError
		if errors.As(err, &ue) {
			return logical.ErrorResponse(ue.Error()), nil
		}
		return nil, err
	}
	if found && !exists {
		req.Operation = logical.CreateOperation
	}
	return e.handle(req)
}

// mustOK fails the test on an error or an error response.
func mustOK(t testing.TB, resp *logical.Response, err error) *logical.Response {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("unexpected error response: %v", resp.Error())
	}
	return resp
}

// must returns a checker for a (response, error) pair, so that calls read
// must(t)(e.read("config")).
func must(t testing.TB) func(*logical.Response, error) *logical.Response {
	return func(resp *logical.Response, err error) *logical.Response {
		t.Helper()
		return mustOK(t, resp, err)
	}
}

// mustUserError asserts a 4xx-style error response containing every want.
func mustUserError(t testing.TB, resp *logical.Response, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("want an error response, got error %v", err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("want an error response, got %#v", resp)
	}
	msg := resp.Error().Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
	if code, _ := logical.RespondErrorCommon(&logical.Request{Operation: logical.UpdateOperation}, resp, nil); code < 400 || code >= 500 {
		t.Errorf("error %q maps to HTTP %d, want 4xx", msg, code)
	}
}

// configure writes a verified config for the emulator.
func (e *testEnv) configure(srv *tookentest.Server, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{"url": srv.URL(), "token": srv.RootSecret(), "max_retries": 3}
	for k, v := range extra {
		data[k] = v
	}
	must(e.t)(e.write(configPath, data))
}

func (e *testEnv) writeRole(name string, data map[string]any) {
	e.t.Helper()
	must(e.t)(e.write("roles/"+name, data))
}

func TestBackend_Factory(t *testing.T) {
	e := getTestBackend(t)
	if got := e.b.Type(); got != logical.TypeLogical {
		t.Errorf("type = %v, want logical", got)
	}
	if e.b.RunningVersion != Version || Version == "" {
		t.Errorf("RunningVersion = %q, Version = %q", e.b.RunningVersion, Version)
	}
	sp := e.b.SpecialPaths()
	if want := []string{configPath, staticRolePrefix, rotationPendingPrefix}; !slices.Equal(sp.SealWrapStorage, want) {
		t.Errorf("SealWrapStorage = %v, want %v", sp.SealWrapStorage, want)
	}
	if want := []string{framework.WALPrefix, rotationPendingPrefix}; !slices.Equal(sp.LocalStorage, want) {
		t.Errorf("LocalStorage = %v", sp.LocalStorage)
	}
	if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
		t.Errorf("periodic func: %v", err)
	}
}

// Every operation that writes storage or changes something upstream must be
// forwarded by performance standbys and secondaries; reads and lists not.
// Every call the engine makes to Tooken carries the plugin's User-Agent.
func TestBackend_UserAgent(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	var mu sync.Mutex
	var agents []string
	api := srv.Handler()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.Header.Get("User-Agent"))
		mu.Unlock()
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	e := getTestBackend(t)
	must(t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": srv.RootSecret()}))
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	must(t)(e.revoke(lease(must(t)(e.read("creds/r")))))
	mu.Lock()
	defer mu.Unlock()
	if len(agents) < 3 {
		t.Fatalf("%d calls seen, want verify, create and revoke", len(agents))
	}
	for _, ua := range agents {
		if ua != "vault-plugin-secrets-tooken/"+Version {
			t.Errorf("User-Agent %q", ua)
		}
	}
}

func TestBackend_Forwarding(t *testing.T) {
	e := getTestBackend(t)
	writes := map[string]bool{}
	for _, p := range e.b.Paths {
		for op, h := range p.Operations {
			props := h.Properties()
			mustForward := op != logical.ReadOperation && op != logical.ListOperation ||
				strings.HasPrefix(p.Pattern, "creds/")
			if mustForward {
				writes[p.Pattern+" "+string(op)] = true
				if !props.ForwardPerformanceStandby || !props.ForwardPerformanceSecondary {
					t.Errorf("%s %s: not forwarded", p.Pattern, op)
				}
			} else if props.ForwardPerformanceStandby {
				t.Errorf("%s %s: forwarded but read-only", p.Pattern, op)
			}
		}
	}
	if len(writes) != 13 { // config c/u/d, roles c/u/d, creds read, tidy, rotate-root, static-roles c/u/d, rotate-role
		t.Errorf("forwarded operations = %v", writes)
	}
}

func TestBackend_PathHelpAndOpenAPI(t *testing.T) {
	e := getTestBackend(t)
	for _, p := range e.b.Paths {
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("%s: missing help", p.Pattern)
		}
		if p.DisplayAttrs == nil || p.DisplayAttrs.OperationPrefix != "tooken" {
			t.Errorf("%s: OperationPrefix not tooken", p.Pattern)
		}
	}
	// The help names every field of its path.
	for _, p := range e.b.Paths {
		for field := range p.Fields {
			if field != "name" && !strings.Contains(p.HelpDescription, field) {
				t.Errorf("%s: help does not mention the field %s", p.Pattern, field)
			}
		}
	}
	for _, path := range []string{"config", "roles/x", "roles/", "creds/x", "rotate-root", "tidy", "tidy/status", "static-roles/x", "static-roles/", "static-creds/x", "rotate-role/x"} {
		resp, err := e.handle(e.request(logical.HelpOperation, path, nil))
		if err != nil || resp == nil || resp.Data["help"] == "" {
			t.Errorf("help %s: %v %v", path, resp, err)
		}
	}

	// OpenAPI operation ids read well and are unique.
	e.sys.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "1.14.1"}
	resp, err := e.handle(&logical.Request{Operation: logical.HelpOperation, Path: "", Storage: e.storage})
	if err != nil {
		t.Fatal(err)
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok {
		t.Fatalf("no OpenAPI document: %#v", resp.Data)
	}
	ids := map[string]bool{}
	for _, item := range doc.Paths {
		for _, op := range []*framework.OASOperation{item.Get, item.Post, item.Delete} {
			if op != nil {
				if ids[op.OperationID] {
					t.Errorf("duplicate operation id %q", op.OperationID)
				}
				ids[op.OperationID] = true
			}
		}
	}
	for _, want := range []string{
		"tooken-read-configuration", "tooken-configure", "tooken-delete-configuration",
		"tooken-read-role", "tooken-write-role", "tooken-delete-role", "tooken-list-roles",
		"tooken-generate-credentials", "tooken-rotate-root-credentials", "tooken-tidy", "tooken-read-tidy-status",
		"tooken-read-static-role", "tooken-write-static-role", "tooken-delete-static-role", "tooken-list-static-roles",
		"tooken-read-static-credentials", "tooken-rotate-static-role",
	} {
		if !ids[want] {
			t.Errorf("missing operation id %q (have %v)", want, ids)
		}
	}
}

// Invalidate (a write on another node) must drop the caches.
func TestBackend_Invalidate(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	must(t)(e.read("creds/r")) // warm

	c1, err := e.b.getClient(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}

	// Another node changes the role behind our back.
	entry, _ := logical.StorageEntryJSON(rolePrefix+"r", &roleEntry{Scopes: []string{"billing:read"}})
	if err := e.storage.Storage.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
	resp := must(t)(e.read("creds/r"))
	if got := resp.Data["scopes"].([]string); got[0] != "deployments:write" {
		t.Fatalf("cache not used: scopes %v", got)
	}
	e.b.InvalidateKey(context.Background(), rolePrefix+"r")
	resp = must(t)(e.read("creds/r"))
	if got := resp.Data["scopes"].([]string); len(got) != 1 || got[0] != "billing:read" {
		t.Fatalf("after invalidate: scopes %v", got)
	}

	// Config invalidation rebuilds the client.
	e.b.InvalidateKey(context.Background(), configPath)
	c2, err := e.b.getClient(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	if c1 == c2 {
		t.Fatal("client not rebuilt after config invalidation")
	}
	c3, _ := e.b.getClient(context.Background(), e.storage)
	if c2 != c3 {
		t.Fatal("client not cached")
	}

	// Role deleted elsewhere.
	if err := e.storage.Storage.Delete(context.Background(), rolePrefix+"r"); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(context.Background(), rolePrefix+"r")
	resp, err = e.read("creds/r")
	mustUserError(t, resp, err, `unknown role "r"`)
}

// Concurrent creds reads and cache resets: the race detector has the final say.
func TestBackend_ConcurrentCacheUse(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("r", map[string]any{"scopes": "deployments:write"})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				resp, err := e.read("creds/r")
				if err == nil && resp.IsError() {
					err = resp.Error()
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		e.b.InvalidateKey(context.Background(), configPath)
		e.b.InvalidateKey(context.Background(), rolePrefix+"r")
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(issuedLive(srv)); n != 40 {
		t.Errorf("live tokens = %d, want 40", n)
	}
}
