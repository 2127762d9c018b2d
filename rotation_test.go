package tooken

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

var errRotInjected = errors.New("injected storage failure")

// rotStorage fails the next n Puts or Deletes of a key prefix.
type rotStorage struct {
	logical.Storage
	mu         sync.Mutex
	failPut    map[string]int
	failDelete map[string]int
}

func (s *rotStorage) failNext(m map[string]int, prefix string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[prefix] = n
}

func (s *rotStorage) take(m map[string]int, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for prefix, n := range m {
		if n > 0 && strings.HasPrefix(key, prefix) {
			m[prefix] = n - 1
			return true
		}
	}
	return false
}

func (s *rotStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.take(s.failPut, e.Key) {
		return errRotInjected
	}
	return s.Storage.Put(ctx, e)
}

func (s *rotStorage) Delete(ctx context.Context, key string) error {
	if s.take(s.failDelete, key) {
		return errRotInjected
	}
	return s.Storage.Delete(ctx, key)
}

// rotClock is an adjustable clock.
type rotClock struct {
	base   time.Time
	offset atomic.Int64
}

func newRotClock(base time.Time) *rotClock { return &rotClock{base: base} }

func (c *rotClock) now() time.Time {
	return c.base.Add(time.Duration(c.offset.Load()))
}

func (c *rotClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// rotEnv is a backend configured against an emulator with an adjustable
// clock, on storage that can fail.
type rotEnv struct {
	*testEnv
	srv     *tookentest.Server
	emuTime *rotClock
	faulty  *rotStorage
	root    string // the bootstrap secret
	rootID  string
}

func newRotEnv(t *testing.T, config map[string]any) *rotEnv {
	t.Helper()
	emuTime := newRotClock(time.Now())
	srv := newEmulator(t, tookentest.Options{RateLimit: -1, Now: emuTime.now})
	e := getTestBackend(t)
	faulty := &rotStorage{Storage: e.storage.Storage, failPut: map[string]int{}, failDelete: map[string]int{}}
	e.storage.Storage = faulty
	cfg := map[string]any{"max_retries": 1}
	for k, v := range config {
		cfg[k] = v
	}
	e.configure(srv, cfg)
	e.writeRole("r", map[string]any{"scopes": "deployments:write", "ttl": "10m", "max_ttl": "12h"})
	return &rotEnv{testEnv: e, srv: srv, emuTime: emuTime, faulty: faulty, root: srv.RootSecret(), rootID: srv.RootTokenID()}
}

// restart is a process death: a new backend on the same storage (the old one
// is never used again).
func (e *rotEnv) restart() {
	e.t.Helper()
	e.b = newNode(e.t, e.storage, e.logs)
}

// newNode is a new backend of the mount on storage s (another node, or the
// same one restarted), logging to logs (nil: the test config's logger).
func newNode(t testing.TB, s logical.Storage, logs io.Writer) *tookenBackend {
	t.Helper()
	conf := logical.TestBackendConfig()
	if logs != nil {
		conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs})
	}
	conf.StorageView = s
	conf.BackendUUID = testMountUUID
	b, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	tb := b.(*tookenBackend)
	t.Cleanup(func() { tb.Cleanup(context.Background()) })
	return tb
}

func (e *rotEnv) rotate() (*logical.Response, error) {
	return e.write(rotateRootPath, nil)
}

// rollback is Vault's rollback request; immediate ignores the WAL min age.
func (e *rotEnv) rollback(immediate bool) *logical.Response {
	e.t.Helper()
	data := map[string]any{}
	if immediate {
		data["immediate"] = true
	}
	resp, err := e.handle(e.request(logical.RollbackOperation, "", data))
	if err != nil {
		e.t.Fatalf("rollback: %v", err)
	}
	return resp
}

func (e *rotEnv) storedConfig() *tookenConfig {
	e.t.Helper()
	cfg, err := readConfig(context.Background(), e.storage)
	if err != nil || cfg == nil {
		e.t.Fatalf("reading config: %v %v", cfg, err)
	}
	return cfg
}

func (e *rotEnv) rotateWALs() []rotationWAL {
	e.t.Helper()
	ctx := context.Background()
	ids, err := framework.ListWAL(ctx, e.storage)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []rotationWAL
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, e.storage, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if entry != nil && entry.Kind == walKindRotateRoot {
			w, err := decodeRotationWAL(entry.Kind, entry.Data)
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, w)
		}
	}
	return out
}

// keptSecrets lists the keys of the new secrets kept for the rollback of
// unfinished rotations (rotation_pending.go).
func (e *rotEnv) keptSecrets() []string {
	e.t.Helper()
	keys, err := e.storage.List(context.Background(), rotationPendingPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

func (e *rotEnv) rotations() int64 { return e.srv.Counters()["rotated"] }

// mustWork asserts that the stored root secret is accepted for the root token
// and that creds can be read.
func (e *rotEnv) mustWork() string {
	e.t.Helper()
	stored := e.storedConfig().Token
	rec, ok := e.srv.Authenticate(stored)
	if !ok || rec.ID != e.rootID {
		e.t.Fatalf("the stored root secret is not accepted for %s (ok=%v id=%s)", e.rootID, ok, rec.ID)
	}
	must(e.t)(e.read("creds/r"))
	return stored
}

// mustOneRoot asserts that the only live tokens upstream are the root and
// tokens the root created (creds): rotation never adds a root.
func (e *rotEnv) mustOneRoot() {
	e.t.Helper()
	for _, tok := range e.srv.LiveTokens() {
		if tok.ID != e.rootID && tok.CreatedBy != e.rootID {
			e.t.Errorf("unexpected live token %s created by %q", tok.ID, tok.CreatedBy)
		}
	}
}

func (e *rotEnv) mustNoSecretsLogged(secrets ...string) {
	e.t.Helper()
	logs := e.logs.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			e.t.Fatalf("a secret appears in the logs")
		}
	}
}

func TestRotateRoot_Basic(t *testing.T) {
	e := newRotEnv(t, nil)
	if d := e.storedConfig(); d.LastRotated != nil {
		t.Fatalf("fresh config has last_rotated %v", d.LastRotated)
	}
	e.storage.reset()
	resp := must(t)(e.rotate())
	// The custody check reads the root's static owner record; list WAL +
	// read config, put WAL, put config, delete WAL.
	if g, p, d, l := e.storage.gets.Load(), e.storage.puts.Load(), e.storage.deletes.Load(), e.storage.lists.Load(); g != 2 || p != 2 || d != 1 || l != 1 {
		t.Errorf("storage round trips of a rotation: %d gets, %d puts, %d deletes, %d lists; want 2, 2, 1, 1", g, p, d, l)
	}
	for _, k := range []string{"token", "secret"} {
		if _, ok := resp.Data[k]; ok {
			t.Fatalf("rotate-root answers %q", k)
		}
	}
	if resp.Data["token_id"] != e.rootID || resp.Data["rotated_at"] == nil || resp.Data["previous_secret_expires_at"] == nil {
		t.Fatalf("rotate-root answer: %v", resp.Data)
	}
	pe, err := time.Parse(time.RFC3339, resp.Data["previous_secret_expires_at"].(string))
	if err != nil || pe.Sub(e.emuTime.now()) < 4*time.Minute || pe.Sub(e.emuTime.now()) > 6*time.Minute {
		t.Fatalf("previous_secret_expires_at %v, want about now+5m (default grace)", pe)
	}
	newSecret := e.mustWork()
	if newSecret == e.root {
		t.Fatal("the stored secret did not change")
	}
	if _, ok := e.srv.Authenticate(e.root); !ok {
		t.Fatal("the old secret died before the grace ended")
	}
	if n := e.rotations(); n != 1 {
		t.Fatalf("rotations upstream = %d, want 1", n)
	}
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	cfg := must(t)(e.read(configPath)).Data
	if cfg["last_rotated"] == nil || cfg["token_id"] != e.rootID || cfg["next_rotation"] != nil {
		t.Fatalf("config after rotation: %v", cfg)
	}
	if _, ok := cfg["token"]; ok {
		t.Fatal("config read shows the token")
	}

	// The periodic function costs no storage round trip when nothing is due.
	e.storage.reset()
	if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
		t.Fatal(err)
	}
	t.Logf("storage round trips of an idle periodic run (rotation, rollback and revoke queue): %d", e.storage.total())

	e.emuTime.advance(time.Hour + 2*time.Second)
	if _, ok := e.srv.Authenticate(e.root); ok {
		t.Fatal("the old secret still works after the grace")
	}
	e.mustWork()
	e.mustOneRoot()
	e.mustNoSecretsLogged(e.root, newSecret)
}

func TestRotateRoot_NotConfigured(t *testing.T) {
	e := getTestBackend(t)
	resp, err := e.write(rotateRootPath, nil)
	mustUserError(t, resp, err, "not configured")
}

// TestRotateRoot_FailureInjection injects a failure or a process death at
// each step of the protocol and checks, for each, that the engine ends with a
// working root secret (after the rollback), that the old secret dies after
// the grace, that Tooken rotated exactly as often as expected (a replay never
// rotates twice) and that no extra root token is live.
func TestRotateRoot_FailureInjection(t *testing.T) {
	rotatePath := func(e *rotEnv) string { return "/v1/tokens/" + e.rootID + "/rotate" }
	cases := []struct {
		name string
		// inject sets up the failure before rotate-root.
		inject func(e *rotEnv)
		// wantErr: rotate-root fails with these words ("" = it succeeds).
		wantErr string
		// wantWAL: a rotation WAL entry is left for the rollback.
		wantWAL bool
		// after runs after rotate-root and before the rollback (crash, heal).
		after func(e *rotEnv)
		// rotations upstream at the end.
		rotations int64
	}{
		{
			name: "upstream 500 once: the retry rotates",
			inject: func(e *rotEnv) {
				e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(e), Status: 500, Count: 1})
			},
			rotations: 1,
		},
		{
			name:      "upstream 500 always: old secret kept, the rollback finishes the rotation",
			inject:    func(e *rotEnv) { e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(e), Status: 500}) },
			wantErr:   "outcome unknown",
			wantWAL:   true,
			after:     func(e *rotEnv) { e.srv.ClearFaults() },
			rotations: 1,
		},
		{
			name:      "upstream refuses (403): nothing changed, no WAL left",
			inject:    func(e *rotEnv) { e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(e), Status: 403}) },
			wantErr:   "nothing changed upstream",
			rotations: 0,
		},
		{
			name: "answer lost once: the retry gets the replayed answer",
			inject: func(e *rotEnv) {
				e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(e), Drop: true, Count: 1})
			},
			rotations: 1,
		},
		{
			name:      "answer lost after upstream rotated: the rollback replays and recovers the new secret",
			inject:    func(e *rotEnv) { e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(e), Drop: true}) },
			wantErr:   "outcome unknown",
			wantWAL:   true,
			after:     func(e *rotEnv) { e.srv.ClearFaults() },
			rotations: 1,
		},
		{
			name:      "storing the new secret fails: the rollback replays and recovers it",
			inject:    func(e *rotEnv) { e.faulty.failNext(e.faulty.failPut, configPath, 1) },
			wantErr:   "storing the new secret failed",
			wantWAL:   true,
			rotations: 1,
		},
		{
			name:    "storing the new secret fails and the rollback comes after the grace: the kept secret recovers it",
			inject:  func(e *rotEnv) { e.faulty.failNext(e.faulty.failPut, configPath, 1) },
			wantErr: "storing the new secret failed",
			wantWAL: true,
			after: func(e *rotEnv) {
				e.emuTime.advance(time.Hour + 2*time.Second)
				if _, ok := e.srv.Authenticate(e.root); ok {
					e.t.Fatal("old secret alive after the grace")
				}
			},
			rotations: 1,
		},
		{
			name:    "storing the new secret fails, the process dies, the rollback comes after the grace: the kept secret recovers it",
			inject:  func(e *rotEnv) { e.faulty.failNext(e.faulty.failPut, configPath, 1) },
			wantErr: "storing the new secret failed",
			wantWAL: true,
			after: func(e *rotEnv) {
				if len(e.keptSecrets()) != 1 {
					e.t.Fatal("the new secret is not kept in storage")
				}
				e.restart()
				e.emuTime.advance(time.Hour + 2*time.Second)
			},
			rotations: 1,
		},
		{
			name: "storing the new secret fails, and keeping it too: the in-memory copy recovers it after the grace",
			inject: func(e *rotEnv) {
				e.faulty.failNext(e.faulty.failPut, configPath, 1)
				e.faulty.failNext(e.faulty.failPut, rotationPendingPrefix, 1)
			},
			wantErr: "storing the new secret failed",
			wantWAL: true,
			after: func(e *rotEnv) {
				if len(e.keptSecrets()) != 0 {
					e.t.Fatal("a kept secret was stored though its write failed")
				}
				e.emuTime.advance(time.Hour + 2*time.Second)
			},
			rotations: 1,
		},
		{
			name: "crash after the WAL entry, before the upstream call (Tooken unreachable)",
			inject: func(e *rotEnv) {
				e.srv.SetDown(true)
			},
			wantErr: "outcome unknown",
			wantWAL: true,
			after: func(e *rotEnv) {
				e.restart()
				e.srv.SetDown(false)
			},
			rotations: 1,
		},
		{
			name:    "crash after upstream rotated, before the new secret is stored",
			inject:  func(e *rotEnv) { e.faulty.failNext(e.faulty.failPut, configPath, 1) },
			wantErr: "storing the new secret failed",
			wantWAL: true,
			after:   func(e *rotEnv) { e.restart() },
			// The new process never saw the new secret: the replay brings it.
			rotations: 1,
		},
		{
			name:      "crash after storing, before the WAL entry is deleted",
			inject:    func(e *rotEnv) { e.faulty.failNext(e.faulty.failDelete, framework.WALPrefix, 1) },
			wantWAL:   true,
			after:     func(e *rotEnv) { e.restart() },
			rotations: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRotEnv(t, nil)
			must(t)(e.read("creds/r"))
			tc.inject(e)
			resp, err := e.rotate()
			if tc.wantErr == "" {
				mustOK(t, resp, err)
			} else {
				if err == nil {
					t.Fatalf("rotate-root succeeded, want an error with %q (resp %v)", tc.wantErr, resp)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("rotate-root error %q, want %q", err, tc.wantErr)
				}
				if !strings.Contains(e.logs.String(), "root rotation failed") {
					t.Error("the failure is not logged")
				}
				// The old secret is still stored, still works, and the
				// failure is on config read.
				if got := e.storedConfig().Token; got != e.root {
					t.Fatal("a failed rotation changed the stored secret")
				}
				if _, ok := e.srv.Authenticate(e.root); !ok {
					t.Fatal("the old secret died with a failed rotation")
				}
				cfg := must(t)(e.read(configPath)).Data
				if cfg["last_rotation_error"] == "" {
					t.Errorf("config read has no last_rotation_error: %v", cfg)
				}
			}
			if got := len(e.rotateWALs()) > 0; got != tc.wantWAL {
				t.Fatalf("WAL entry left = %v, want %v", got, tc.wantWAL)
			}
			if tc.after != nil {
				tc.after(e)
			}
			if tc.wantWAL {
				// Young entries wait for the min age.
				e.rollback(false)
				if len(e.rotateWALs()) == 0 {
					t.Fatal("the rollback did not wait for the WAL min age")
				}
				if resp := e.rollback(true); resp != nil && resp.IsError() {
					t.Fatalf("rollback: %v", resp.Error())
				}
			}
			if w := e.rotateWALs(); len(w) != 0 {
				t.Fatalf("WAL entries left after the rollback: %v", w)
			}
			if k := e.keptSecrets(); len(k) != 0 {
				t.Fatalf("kept secrets left after the rollback: %d", len(k))
			}
			secret := e.mustWork()
			if n := e.rotations(); n != tc.rotations {
				t.Fatalf("rotations upstream = %d, want %d", n, tc.rotations)
			}
			if tc.rotations > 0 {
				if secret == e.root {
					t.Fatal("the stored secret is still the bootstrap one")
				}
				if cfg := e.storedConfig(); cfg.LastRotated == nil || cfg.LastRotationError != "" {
					t.Fatalf("config after recovery: last_rotated %v, error %q", cfg.LastRotated, cfg.LastRotationError)
				}
			}
			// The old secret dies after the grace; the stored one lives.
			e.emuTime.advance(time.Hour + 2*time.Second)
			if _, ok := e.srv.Authenticate(e.root); ok && tc.rotations > 0 {
				t.Fatal("the bootstrap secret works after the grace")
			}
			e.mustWork()
			e.mustOneRoot()
			// A second rollback has nothing to do.
			before := len(e.srv.Requests())
			e.rollback(true)
			for _, r := range e.srv.Requests()[before:] {
				if strings.HasSuffix(r.Path, "/rotate") {
					t.Fatalf("a settled rotation was replayed again: %+v", r)
				}
			}
			e.mustNoSecretsLogged(e.root, secret)
		})
	}
}

// TestRotateRoot_Lockout: a process death after Tooken rotated, storage
// refusing both the new secret and the copy kept for the rollback, and no
// rollback before the grace ends (Vault stayed away longer than the grace):
// the engine cannot recover (the new secret existed only in the dead
// process). It says so in the log and on config read, drops the WAL entry
// (no loop), and a config write with a working secret clears it.
func TestRotateRoot_Lockout(t *testing.T) {
	e := newRotEnv(t, map[string]any{"rotation_grace": "3m30s"}) // the minimum with max_retries=1
	e.faulty.failNext(e.faulty.failPut, configPath, 1)
	e.faulty.failNext(e.faulty.failPut, rotationPendingPrefix, 1)
	if _, err := e.rotate(); err == nil {
		t.Fatal("rotate-root succeeded")
	}
	e.restart()
	e.emuTime.advance(211 * time.Second)
	e.rollback(true)
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entry kept: %v", w)
	}
	cfg := must(t)(e.read(configPath)).Data
	msg, _ := cfg["last_rotation_error"].(string)
	if !strings.Contains(msg, "could not be finished") || !strings.Contains(msg, "config token=") {
		t.Fatalf("config read does not report the lockout: %v", cfg)
	}
	if !strings.Contains(e.logs.String(), "could not be finished") {
		t.Fatal("the lockout is not logged")
	}
	before := len(e.srv.Requests())
	e.rollback(true)
	for _, r := range e.srv.Requests()[before:] {
		if strings.HasSuffix(r.Path, "/rotate") {
			t.Fatalf("the rollback keeps trying: %+v", r)
		}
	}

	// The operator writes a working root secret (here: of another Tooken).
	fresh := tookentest.NewServer(tookentest.Options{RateLimit: -1})
	defer fresh.Close()
	must(t)(e.write(configPath, map[string]any{"url": fresh.URL(), "token": fresh.RootSecret()}))
	cfg = must(t)(e.read(configPath)).Data
	if cfg["last_rotation_error"] != "" || cfg["rotation_failures"] != 0 {
		t.Fatalf("a new token did not clear the rotation error: %v", cfg)
	}
}

// behindFront points e's config to a tamperingFront of its emulator that,
// while tamper is set, replaces the secret of every rotate answer with one
// that Tooken does not know (a broken Tooken, or a proxy that altered it).
func (e *rotEnv) behindFront(tamper *atomic.Bool) {
	e.t.Helper()
	front := tamperingFront(e.t, e.srv,
		func(r *http.Request) bool { return tamper.Load() && strings.HasSuffix(r.URL.Path, "/rotate") },
		nil,
		func(m map[string]any) { m["secret"] = "tok_test_" + strings.Repeat("X", 32) })
	must(e.t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": e.root}))
}

// "Rotation never locks Vault out": the new secret of a rotate answer is
// checked (GET /tokens/self with it) before it replaces the stored one. An
// answer whose secret Tooken refuses is not stored: rotate-root answers 502,
// the previous secret (alive for the grace) stays stored and the WAL entry
// stays; the rollback replays the rotation and stores the replayed secret
// once it works. While every answer is altered, the rollback keeps trying
// until the grace ends, then reports the lockout once.
func TestRotateRoot_ChecksTheNewSecret(t *testing.T) {
	for _, heals := range []bool{true, false} {
		t.Run(map[bool]string{true: "altered once: the replay recovers the new secret", false: "altered always: a lockout once the grace ends"}[heals], func(t *testing.T) {
			e := newRotEnv(t, nil)
			var tamper atomic.Bool
			e.behindFront(&tamper)
			tamper.Store(true)
			resp, err := e.rotate()
			if err == nil || !strings.Contains(err.Error(), "rotation unconfirmed") || !strings.Contains(err.Error(), "401") {
				t.Fatalf("rotate-root with an altered answer: %s, want an error saying the new secret is refused", outcome(resp, err))
			}
			if coded := logical.HTTPCodedError(nil); !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
				t.Errorf("rotate-root error %v, want a 502 coded error", err)
			}
			stored := e.storedConfig()
			if stored.Token != e.root || !works(e.srv, stored.Token) {
				t.Fatalf("rotate-root stored a root secret that Tooken does not accept (Tooken rotated the root %d time(s)); the previous one works until %v",
					e.rotations(), stored.PreviousSecretExpiresAt)
			}
			must(t)(e.read("creds/r"))
			if len(e.rotateWALs()) != 1 {
				t.Fatalf("WAL entries %v, want the rotation's, for the rollback", e.rotateWALs())
			}
			if heals {
				tamper.Store(false)
				e.rollback(true)
				if w := e.rotateWALs(); len(w) != 0 {
					t.Fatalf("WAL entries left after the rollback: %v", w)
				}
				if secret := e.mustWork(); secret == e.root {
					t.Fatal("the rollback kept the previous secret")
				}
				e.emuTime.advance(time.Hour + 2*time.Second)
				e.mustWork()
				if n := e.rotations(); n != 1 {
					t.Fatalf("rotations upstream = %d, want 1 (the replay is answered from the idempotency store)", n)
				}
				return
			}
			e.rollback(true)
			if len(e.rotateWALs()) != 1 || e.storedConfig().Token != e.root {
				t.Fatal("the rollback gave up (or stored the altered secret) while the previous secret still works")
			}
			e.emuTime.advance(time.Hour + 2*time.Second)
			e.rollback(true)
			if w := e.rotateWALs(); len(w) != 0 {
				t.Fatalf("WAL entries left after the grace: %v", w)
			}
			msg, _ := must(t)(e.read(configPath)).Data["last_rotation_error"].(string)
			if !strings.Contains(msg, "no longer holds a working root secret") || !strings.Contains(msg, "config token=") {
				t.Fatalf("config read does not report the lockout: %q", msg)
			}
			if n := e.rotations(); n != 1 {
				t.Fatalf("rotations upstream = %d, want 1", n)
			}
		})
	}
}

// A rotate answer that does not say the previous secret ends within the
// grace asked for (previous_secret_expires_at dropped, or later) still
// rotates: the new secret passed its check, and refusing it would keep the
// very secret that may live on. The engine warns that the previous secret
// may outlive the grace.
func TestRotateRoot_WarnsWhenThePreviousSecretMayOverstay(t *testing.T) {
	for name, edit := range map[string]func(map[string]any){
		"no previous_secret_expires_at": func(m map[string]any) { delete(m, "previous_secret_expires_at") },
		"a later one": func(m map[string]any) {
			m["previous_secret_expires_at"] = time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newRotEnv(t, nil)
			front := tamperingFront(e.t, e.srv, func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/rotate") }, nil, edit)
			must(t)(e.write(configPath, map[string]any{"url": front.URL + "/v1", "token": e.root}))
			must(t)(e.rotate())
			if secret := e.mustWork(); secret == e.root {
				t.Fatal("the rotation kept the previous secret")
			}
			if !strings.Contains(e.logs.String(), "may keep working longer") {
				t.Fatal("no warning that the previous root secret may outlive the grace")
			}
		})
	}
	t.Run("the asked grace", func(t *testing.T) {
		e := newRotEnv(t, nil)
		must(t)(e.rotate())
		if strings.Contains(e.logs.String(), "may keep working longer") {
			t.Fatal("a warning for an answer that keeps the grace")
		}
	})
}

// The root is the token the operator wrote. An interrupted root rotation
// leaves a WAL entry; a config write of another root token with
// verify_connection=false leaves token_id unknown. The rollback reads the
// stored root (GET /tokens/self) and drops the entry: replaying it
// authenticated by the new root would be a new rotation of the old root
// (another caller), whose secret would then be stored over the new root.
func TestRotateRoot_RollbackKeepsANewRoot(t *testing.T) {
	e := newRotEnv(t, nil)
	drop := e.srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens/" + e.rootID + "/rotate", Drop: true})
	if resp, err := e.rotate(); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatalf("rotation with every answer dropped succeeded: %v", resp)
	}
	e.srv.RemoveFault(drop)
	if len(e.rotateWALs()) == 0 {
		t.Fatal("no WAL entry left by the interrupted rotation: the test proves nothing")
	}
	newRoot := operatorToken(t, e.srv, tookenapi.CreateTokenRequest{Name: "new-root", Scopes: []string{"tokens:write", "deployments:write", "billing:read"}})
	must(t)(e.write(configPath, map[string]any{"token": newRoot.Secret, "verify_connection": false}))
	if id := e.storedConfig().TokenID; id != "" {
		t.Fatalf("token_id %q after an unverified write of another token: the test proves nothing", id)
	}
	e.ageWALs(2 * time.Minute)
	rotated := e.rotations()
	e.rollback(false)
	stored := e.storedConfig()
	rec, _ := e.srv.Authenticate(stored.Token)
	if rec.ID != newRoot.ID {
		t.Fatalf("after the rollback the stored root is %s (token_id %q), not the %s the operator wrote; Tooken rotated the old root %d more time(s)",
			rec.ID, stored.TokenID, newRoot.ID, e.rotations()-rotated)
	}
	if n := e.rotations() - rotated; n != 0 {
		t.Fatalf("the rollback rotated the old root %d more time(s)", n)
	}
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	must(t)(e.read("creds/r"))
}

// A secret the operator wrote after a rotation started, unverified, is never
// replaced by the rotated token's secret, even when Tooken refuses it and
// the engine still holds the rotated secret in memory (its store failed):
// the rollback drops the entry, and the config keeps what the operator
// wrote (a write of a working secret is the fix, not the old root back).
func TestRotateRoot_RollbackKeepsADeadSecretTheOperatorWrote(t *testing.T) {
	e := newRotEnv(t, nil)
	e.faulty.failNext(e.faulty.failPut, configPath, 1)
	if _, err := e.rotate(); err == nil || !strings.Contains(err.Error(), "storing the new secret failed") {
		t.Fatalf("rotate-root with a failed store: %v", err)
	}
	typo := "tok_test_" + strings.Repeat("Z", 30)
	must(t)(e.write(configPath, map[string]any{"token": typo, "verify_connection": false}))
	e.ageWALs(2 * time.Minute)
	e.rollback(false)
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	if got := e.storedConfig().Token; got != typo {
		t.Fatal("the rollback stored the old root's rotated secret over the one the operator wrote")
	}
}

// TestRotateRoot_ConcurrentCreds: rotations while creds are read without a
// pause: every creds read succeeds.
func TestRotateRoot_ConcurrentCreds(t *testing.T) {
	e := newRotEnv(t, nil)
	const rotations = 20
	var reads, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := e.read("creds/r")
				reads.Add(1)
				if err != nil || resp == nil || resp.IsError() {
					failures.Add(1)
					if err == nil && resp != nil {
						err = resp.Error()
					}
					firstErr.CompareAndSwap(nil, fmt.Sprint(err))
				}
			}
		}()
	}
	start := time.Now()
	for i := range rotations {
		if _, err := e.rotate(); err != nil {
			t.Errorf("rotation %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d rotations in %s while %d creds reads ran: %d failed", rotations, elapsed.Round(time.Millisecond), reads.Load(), failures.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d creds reads failed, first: %v", failures.Load(), firstErr.Load())
	}
	if n := e.rotations(); n != rotations {
		t.Fatalf("rotations upstream = %d, want %d", n, rotations)
	}
	e.mustWork()
	e.mustOneRoot()
}

// TestRotateRoot_Schedule drives the periodic function with a fake clock:
// it rotates when due and not before, only inside the window, and backs off
// after failures.
func TestRotateRoot_Schedule(t *testing.T) {
	e := newRotEnv(t, nil)
	clock := newRotClock(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))
	e.b.clock = clock.now
	// A new config, so that the period counts from the fake clock.
	must(t)(e.del(configPath))
	must(t)(e.write(configPath, map[string]any{"url": e.srv.URL(), "token": e.srv.RootSecret(), "max_retries": 1, "rotation_period": 3600, "rotation_window": "02:00-03:00"}))
	next := func() any { return must(t)(e.read(configPath)).Data["next_rotation"] }
	periodic := func() {
		t.Helper()
		if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
			t.Fatalf("periodic: %v", err)
		}
	}
	if got := next(); got != "2026-11-26T02:00:00Z" {
		t.Fatalf("next_rotation %v, want 02:00 (1h after the write, moved into the window)", got)
	}
	steps := []struct {
		advance   time.Duration // from the previous step
		rotations int64
		next      string
	}{
		{30 * time.Minute, 0, "2026-11-26T02:00:00Z"}, // 00:30: not due
		{time.Hour, 0, "2026-11-26T02:00:00Z"},        // 01:30: due, outside the window
		{40 * time.Minute, 1, "2026-11-27T02:00:00Z"}, // 02:10: rotates; +1h = 03:10 is outside: next day
		{10 * time.Minute, 1, "2026-11-27T02:00:00Z"}, // 02:20: not due
	}
	for i, s := range steps {
		clock.advance(s.advance)
		periodic()
		if n := e.rotations(); n != s.rotations {
			t.Fatalf("step %d (%s): rotations %d, want %d", i, clock.now().Format("15:04"), n, s.rotations)
		}
		if got := next(); got != s.next {
			t.Fatalf("step %d: next_rotation %v, want %s", i, got, s.next)
		}
	}
	cfg := must(t)(e.read(configPath)).Data
	if cfg["last_rotated"] == nil {
		t.Fatalf("last_rotated not set: %v", cfg)
	}

	// Next day, 02:00: Tooken fails; the schedule backs off 1m, 2m, 4m.
	e.srv.AddFault(tookentest.Fault{Method: "POST", Prefix: true, Path: "/v1/tokens/", Status: 500})
	clock.advance(24*time.Hour - 20*time.Minute) // 2026-11-27 02:00
	attempts := func() int {
		n := 0
		for _, r := range e.srv.Requests() {
			if strings.HasSuffix(r.Path, "/rotate") && r.Fault != "" {
				n++
			}
		}
		return n
	}
	periodic()
	a1 := attempts()
	if a1 == 0 {
		t.Fatal("no attempt at 02:00")
	}
	cfg = must(t)(e.read(configPath)).Data
	if cfg["rotation_failures"] != 1 || !strings.Contains(cfg["last_rotation_error"].(string), "outcome unknown") || cfg["next_rotation"] != "2026-11-27T02:01:00Z" {
		t.Fatalf("after one failure: %v", cfg)
	}
	clock.advance(30 * time.Second)
	periodic()
	if attempts() != a1 {
		t.Fatal("retried before the backoff")
	}
	clock.advance(30 * time.Second) // 02:01
	periodic()
	if attempts() == a1 {
		t.Fatal("no retry after the backoff")
	}
	cfg = must(t)(e.read(configPath)).Data
	if cfg["rotation_failures"] != 2 || cfg["next_rotation"] != "2026-11-27T02:03:00Z" || !strings.Contains(cfg["last_rotation_error"].(string), "not finished") {
		t.Fatalf("after two failures: %v", cfg)
	}
	e.srv.ClearFaults()
	clock.advance(2 * time.Minute) // 02:03
	periodic()
	cfg = must(t)(e.read(configPath)).Data
	if cfg["rotation_failures"] != 0 || cfg["last_rotation_error"] != "" || cfg["next_rotation"] != "2026-11-28T02:00:00Z" {
		t.Fatalf("after recovery: %v", cfg)
	}
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	e.mustWork()
	e.mustOneRoot()
}

// TestRotateRoot_ScheduleSkipsStandby: performance standbys and secondaries
// never rotate.
func TestRotateRoot_ScheduleSkipsStandby(t *testing.T) {
	e := newRotEnv(t, map[string]any{"rotation_period": 60})
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	clock := newRotClock(time.Now().Add(time.Hour))
	e.b.clock = clock.now
	if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
		t.Fatal(err)
	}
	if n := e.rotations(); n != 0 {
		t.Fatalf("a standby rotated (%d)", n)
	}
	e.sys.ReplicationStateVal = 0
	if err := e.b.PeriodicFunc(context.Background(), e.request(logical.RollbackOperation, "", nil)); err != nil {
		t.Fatal(err)
	}
	if n := e.rotations(); n != 1 {
		t.Fatalf("the active node did not rotate (%d)", n)
	}
}

// TestRotateRoot_InvalidateSwitchesOtherNodes: a second backend on the same
// storage (another node) picks the new secret up through Invalidate.
func TestRotateRoot_InvalidateSwitchesOtherNodes(t *testing.T) {
	e := newRotEnv(t, nil)
	other := newNode(t, e.storage, nil)
	c, err := other.getClient(context.Background(), e.storage)
	if err != nil || !c.UsesSecret(e.root) {
		t.Fatalf("other node's client: %v", err)
	}
	must(t)(e.rotate())
	newSecret := e.storedConfig().Token
	other.InvalidateKey(context.Background(), configPath)
	c, err = other.getClient(context.Background(), e.storage)
	if err != nil || !c.UsesSecret(newSecret) {
		t.Fatalf("after Invalidate the other node does not use the new secret (%v)", err)
	}
	// And this node's client switched in place.
	c, _ = e.b.getClient(context.Background(), e.storage)
	if !c.UsesSecret(newSecret) {
		t.Fatal("this node's client still uses the old secret")
	}
}

func TestRotateRoot_ConfigFields(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	cases := []struct {
		name    string
		data    map[string]any
		wantErr []string
		check   map[string]any
	}{
		{name: "defaults", data: map[string]any{}, check: map[string]any{"rotation_period": int64(0), "rotation_grace": int64(300), "rotation_window": "", "next_rotation": nil}},
		{name: "schedule", data: map[string]any{"rotation_period": "24h", "rotation_window": "22:00-02:00", "rotation_grace": "2h"},
			check: map[string]any{"rotation_period": int64(86400), "rotation_grace": int64(7200), "rotation_window": "22:00-02:00"}},
		{name: "grace 0 is the default", data: map[string]any{"rotation_grace": 0}, check: map[string]any{"rotation_grace": int64(300)}},
		{name: "short grace refused", data: map[string]any{"rotation_grace": 30}, wantErr: []string{"rotation_grace: 30s is shorter than the 3m30s that recovering an interrupted rotation needs"}},
		{name: "bad values", data: map[string]any{"rotation_period": 30, "rotation_window": "25:00-01:00", "rotation_grace": 5},
			wantErr: []string{"rotation_period: must be 0 (off) or at least 1m\n", "rotation_window", "rotation_grace: 5s is shorter"}},
		{name: "grace above the contract", data: map[string]any{"rotation_grace": 86401}, wantErr: []string{"rotation_grace"}},
		{name: "window too short", data: map[string]any{"rotation_window": "02:00-02:03"}, wantErr: []string{"at least 5m long"}},
		{name: "window not a window", data: map[string]any{"rotation_window": "daily"}, wantErr: []string{`"HH:MM-HH:MM"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			data := map[string]any{"url": srv.URL(), "token": srv.RootSecret()}
			for k, v := range tc.data {
				data[k] = v
			}
			resp, err := e.write(configPath, data)
			if tc.wantErr != nil {
				mustUserError(t, resp, err, tc.wantErr...)
				return
			}
			mustOK(t, resp, err)
			got := must(t)(e.read(configPath)).Data
			for k, v := range tc.check {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestWALRollback_UnknownKindKept(t *testing.T) {
	e := getTestBackend(t)
	err := e.b.walRollback(context.Background(), e.request(logical.RollbackOperation, "", nil), "from_the_future", map[string]any{})
	if err == nil {
		t.Fatal("an unknown WAL kind was accepted (and would be deleted)")
	}
}

// TestRotateRoot_StatusCodes: a failed rotation maps to 502 (upstream), not
// to a user error.
func TestRotateRoot_StatusCodes(t *testing.T) {
	e := newRotEnv(t, map[string]any{"max_retries": 0})
	e.srv.AddFault(tookentest.Fault{Method: "POST", Prefix: true, Path: "/v1/tokens/", Status: 503})
	_, err := e.rotate()
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
		t.Fatalf("error %v, want a 502 coded error", err)
	}
}

// Tooken rotates the root, then GET /tokens/self with the new secret fails
// (503) for a while, so the engine keeps the previous secret. The plugin
// restarts (kill -9, fail-over) and Tooken stays degraded past the grace:
// the rollback recovers the new secret from the copy kept in storage, then
// deletes that copy.
func TestRotateRoot_CheckFailsTransientlyThenRestart(t *testing.T) {
	e := newRotEnv(t, nil)
	f := e.srv.AddFault(tookentest.Fault{Method: http.MethodGet, Path: "/v1/tokens/self", Status: 503})
	_, err := e.rotate()
	if err == nil || !strings.Contains(err.Error(), "unconfirmed") {
		t.Fatalf("rotate: %v", err)
	}
	if len(e.keptSecrets()) != 1 {
		t.Fatal("the unconfirmed new secret is not kept in storage")
	}
	e.restart() // kill -9 / fail-over: nothing in memory survives
	e.ageWALs(2 * time.Minute)
	e.rollback(false) // Tooken's self still failing: not yet
	e.emuTime.advance(time.Hour + 2*time.Second)
	e.srv.RemoveFault(f)
	e.rollback(false)
	stored := e.storedConfig().Token
	if _, ok := e.srv.Authenticate(stored); !ok {
		cfg := must(t)(e.read(configPath)).Data
		t.Fatalf("LOCKOUT: stored root refused after a transient self failure + restart; rotations upstream=%d; last_rotation_error=%v", e.rotations(), cfg["last_rotation_error"])
	}
	if n := e.rotations(); n != 1 {
		t.Fatalf("rotations upstream = %d, want 1 (a replay never rotates again)", n)
	}
	if len(e.rotateWALs()) != 0 || len(e.keptSecrets()) != 0 {
		t.Fatalf("left after the rotation settled: %d WAL entries, %d kept secrets", len(e.rotateWALs()), len(e.keptSecrets()))
	}
	e.mustNoSecretsLogged(e.root, stored)
}

// The engine's root rotation loses its answer (WAL entry pending; Tooken
// rotated to S1). The operator rotates the root by hand with a grace
// (previous_secret_ttl=300) and writes the new secret S2 (verified: same
// token id). The rollback must not replay the engine's rotation with S2
// (the same caller to Tooken, which would answer S1, still alive for the
// manual rotation's grace) and store S1 over S2: S1 dies when that grace
// ends. It drops the entry and keeps S2.
func TestRotateRoot_RollbackKeepsTheSecretTheOperatorWroteSince(t *testing.T) {
	e := newRotEnv(t, nil)
	drop := e.srv.AddFault(tookentest.Fault{Method: http.MethodPost, Path: "/v1/tokens/" + e.rootID + "/rotate", Drop: true})
	if resp, err := e.rotate(); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatalf("rotation succeeded: %v", resp)
	}
	e.srv.RemoveFault(drop)
	if len(e.rotateWALs()) == 0 {
		t.Fatal("no WAL")
	}
	// The operator rotates by hand (with the secret they have, S0, still
	// in the engine's grace), keeping the previous secret 300s.
	c, err := tookenapi.New(tookenapi.Options{BaseURL: e.srv.URL(), Secret: e.root})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s2, err := c.RotateToken(context.Background(), e.rootID, 300*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	must(t)(e.write(configPath, map[string]any{"token": s2.Secret}))
	if e.storedConfig().TokenID != e.rootID {
		t.Fatal("setup: token_id")
	}
	e.ageWALs(2 * time.Minute)
	e.rollback(false)
	if got := e.storedConfig().Token; got != s2.Secret {
		_, okNow := e.srv.Authenticate(got)
		e.emuTime.advance(301 * time.Second)
		_, okLater := e.srv.Authenticate(got)
		t.Fatalf("the rollback replaced the secret the operator wrote (S2) with the replayed S1: works now=%v, after the operator's 300s grace=%v", okNow, okLater)
	}
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entries left: %v", w)
	}
	e.emuTime.advance(301 * time.Second)
	e.mustWork()
}
