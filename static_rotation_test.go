package tooken

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

func (e *staticEnv) rotateRole(name string) (*logical.Response, error) {
	return e.write(rotateRolePath+name, nil)
}

func TestRotateRole_Basic(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "24h", "rotation_grace": "5m"})
	old := e.staticCreds("app", id)
	e.storage.reset()
	resp := must(t)(e.rotateRole("app"))
	// The read of the role that checks it holds its token; list WAL + read
	// role, put WAL, put role, delete WAL; the read of the role to plan its
	// work again.
	if g, p, d, l := e.storage.gets.Load(), e.storage.puts.Load(), e.storage.deletes.Load(), e.storage.lists.Load(); g != 3 || p != 2 || d != 1 || l != 1 {
		t.Errorf("storage round trips of a rotation: %d gets, %d puts, %d deletes, %d lists; want 3, 2, 1, 1", g, p, d, l)
	}
	for _, k := range []string{"token", "secret"} {
		if _, ok := resp.Data[k]; ok {
			t.Fatalf("rotate-role answers %q", k)
		}
	}
	if resp.Data["token_id"] != id || resp.Data["last_rotated"] == nil || resp.Data["next_rotation"] == nil {
		t.Fatalf("rotate-role answer: %v", resp.Data)
	}
	pe := parseRFC3339(t, resp.Data["previous_secret_expires_at"])
	if d := pe.Sub(e.emuTime.now()); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("previous secret expires in %s, want the 5m grace", d)
	}
	current := e.staticCreds("app", id)
	if current == old {
		t.Fatal("static-creds serves the old secret")
	}
	// Zero downtime: the old secret works until the grace ends.
	if _, ok := e.srv.Authenticate(old); !ok {
		t.Fatal("the previous secret died at once")
	}
	e.emuTime.advance(5*time.Minute + 2*time.Second)
	if _, ok := e.srv.Authenticate(old); ok {
		t.Fatal("the previous secret works after the grace")
	}
	e.staticCreds("app", id)
	// The schedule counts from the manual rotation.
	next := parseRFC3339(t, must(t)(e.read(staticRolesPath + "app")).Data["next_rotation"])
	if d := next.Sub(parseRFC3339(t, resp.Data["last_rotated"])); d < 24*time.Hour-2*time.Second || d > 24*time.Hour+2*time.Second {
		t.Fatalf("next_rotation %s after the rotation, want 24h", d)
	}
	e.mustNoSecretsLogged(old, current)
}

// A rotation already running (or a write of the role) answers 409.
func TestRotateRole_Busy(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	t0 := e.b.staticTarget("app")
	t0.lock().Lock()
	_, err := e.rotateRole("app")
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) || coded.Code() != http.StatusConflict || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("rotate-role during a rotation: %v, want a 409", err)
	}
	t0.lock().Unlock()
	t0.release()
	must(t)(e.rotateRole("app"))
	if n := len(e.b.static.locks.m); n != 0 {
		t.Fatalf("%d role locks kept after use", n)
	}
}

// Concurrent rotate-role calls: each either rotates or answers 409, and the
// rotations upstream are exactly the successful answers.
func TestRotateRole_Concurrent(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	var mu sync.Mutex
	ok, busy := 0, 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.rotateRole("app")
			mu.Lock()
			defer mu.Unlock()
			var coded logical.HTTPCodedError
			switch {
			case err == nil && !resp.IsError():
				ok++
			case errors.As(err, &coded) && coded.Code() == http.StatusConflict:
				busy++
			default:
				t.Errorf("rotate-role: %v %v", resp, err)
			}
		}()
	}
	wg.Wait()
	if n := e.rotationsOf(id); n != ok+1 { // +1: the import
		t.Fatalf("rotations upstream %d, successful answers %d (+1 import)", n, ok)
	}
	t.Logf("%d rotated, %d answered 409", ok, busy)
	e.staticCreds("app", id)
}

// TestRotateRole_FailureInjection injects a failure or a process death at
// each step of a static rotation and checks, for each, that the engine ends
// (after the rollback) with exactly the expected rotations upstream and a
// static-creds secret that works, whatever happened to the old secret: the
// root authenticates the replay.
func TestRotateRole_FailureInjection(t *testing.T) {
	rotatePath := func(id string) string { return "/v1/tokens/" + id + "/rotate" }
	cases := []struct {
		name    string
		grace   int
		inject  func(e *staticEnv, id string)
		wantErr string // "" = rotate-role succeeds
		wantWAL bool
		after   func(e *staticEnv, id string)
		// rotations upstream by the end, the import's included.
		rotations int
	}{
		{name: "upstream 500 once: the retry rotates", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Status: 500, Count: 1})
		}, rotations: 2},
		{name: "upstream 500 always: the rollback finishes it", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Status: 500})
		}, wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) { e.srv.ClearFaults() }, rotations: 2},
		{name: "refused (403): nothing changed, no WAL", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Status: 403})
		}, wantErr: "nothing changed upstream", rotations: 1},
		{name: "answer lost once: the retry gets the replay", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Drop: true, Count: 1})
		}, rotations: 2},
		{name: "answer lost after the rotation: the rollback replays it", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Drop: true})
		}, wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) { e.srv.ClearFaults() }, rotations: 2},
		{name: "answer lost, grace 0 and the rollback long after: the root's replay recovers it", grace: -1, inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Drop: true})
		}, wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) {
			e.srv.ClearFaults()
			e.emuTime.advance(6 * time.Hour)
		}, rotations: 2},
		{name: "storing the new secret fails: the rollback replays it", inject: func(e *staticEnv, _ string) {
			e.faulty.failNext(e.faulty.failPut, staticRolePrefix, 1)
		}, wantErr: "storing the new secret failed", wantWAL: true, rotations: 2},
		{name: "crash after the WAL entry, Tooken unreachable", inject: func(e *staticEnv, _ string) { e.srv.SetDown(true) },
			wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) {
				e.restart()
				e.srv.SetDown(false)
			}, rotations: 2},
		{name: "crash after the rotation, before storing", inject: func(e *staticEnv, _ string) {
			e.faulty.failNext(e.faulty.failPut, staticRolePrefix, 1)
		}, wantErr: "storing the new secret failed", wantWAL: true, after: func(e *staticEnv, _ string) { e.restart() }, rotations: 2},
		{name: "crash after storing, before the WAL delete", inject: func(e *staticEnv, _ string) {
			e.faulty.failNext(e.faulty.failDelete, framework.WALPrefix, 1)
		}, wantWAL: true, after: func(e *staticEnv, _ string) { e.restart() }, rotations: 2},
		{name: "the root rotated before the rollback: the replay, keyed by the root's id, still answers", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Drop: true})
		}, wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) {
			e.srv.ClearFaults()
			must(e.t)(e.rotate())
			e.emuTime.advance(2 * time.Hour) // the old root secret is dead
		}, rotations: 2},
		{name: "a new rotate-role finishes the interrupted one first", inject: func(e *staticEnv, id string) {
			e.srv.AddFault(tookentest.Fault{Method: "POST", Path: rotatePath(id), Drop: true})
		}, wantErr: "outcome unknown", wantWAL: true, after: func(e *staticEnv, _ string) {
			e.srv.ClearFaults()
			must(e.t)(e.rotateRole("app"))
		}, rotations: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newStaticEnv(t, nil)
			id, _ := e.appToken("app")
			grace := any("5m")
			if tc.grace < 0 {
				grace = 0
			}
			// A schedule that stays out of the way.
			e.mustImport("app", id, map[string]any{"rotation_grace": grace, "rotation_period": "720h"})
			before := e.staticCreds("app", id)
			tc.inject(e, id)
			resp, err := e.rotateRole("app")
			if tc.wantErr == "" {
				mustOK(t, resp, err)
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("rotate-role: %v %v, want an error with %q", resp, err, tc.wantErr)
				}
				if got := e.storedStatic("app").Secret; got != before {
					t.Fatal("a failed rotation changed the stored secret")
				}
				if read := must(t)(e.read(staticRolesPath + "app")).Data; read["last_rotation_error"] == "" || read["rotation_failures"] != 1 {
					t.Errorf("the role does not show the failure: %v", read)
				}
			}
			if got := e.staticWALs()["app"] > 0; got != tc.wantWAL {
				t.Fatalf("WAL entry left = %v, want %v", got, tc.wantWAL)
			}
			if tc.after != nil {
				tc.after(e, id)
			}
			e.rollback(true)
			if w := e.staticWALs(); len(w) != 0 {
				t.Fatalf("WAL entries left after the rollback: %v", w)
			}
			secret := e.staticCreds("app", id)
			if n := e.rotationsOf(id); n != tc.rotations {
				t.Fatalf("rotations upstream = %d, want %d", n, tc.rotations)
			}
			r := e.storedStatic("app")
			if tc.rotations > 1 && (secret == before || r.LastRotationError != "" || r.RotationFailures != 0) {
				t.Fatalf("after recovery: same secret %v, error %q, failures %d", secret == before, r.LastRotationError, r.RotationFailures)
			}
			// After every grace only the stored secret lives.
			e.emuTime.advance(25 * time.Hour)
			e.staticCreds("app", id)
			requests := len(e.srv.Requests())
			e.rollback(true)
			for _, req := range e.srv.Requests()[requests:] {
				if strings.HasSuffix(req.Path, "/rotate") {
					t.Fatalf("a settled rotation was replayed again: %+v", req)
				}
			}
			e.mustNoSecretsLogged(before, secret)
		})
	}
}

// The new secret of a rotate answer is checked (GET /tokens/self with it)
// before it replaces the role's: an answer whose secret Tooken refuses is
// not stored, rotate-role answers 502, static-creds keeps serving the
// previous secret (alive for the grace) and the WAL entry stays. A replay
// whose answer comes intact is stored; one still altered drops the entry
// with the failure on the role (the root authenticates a new rotation,
// which needs no lost secret).
func TestRotateRole_ChecksTheNewSecret(t *testing.T) {
	for _, heals := range []bool{true, false} {
		t.Run(map[bool]string{true: "altered once: the replay recovers the new secret", false: "altered always: a new rotate-role recovers"}[heals], func(t *testing.T) {
			e := newStaticEnv(t, nil)
			var tamper atomic.Bool
			e.behindFront(&tamper)
			id, _ := e.appToken("app")
			e.mustImport("app", id, map[string]any{"rotation_period": "720h", "rotation_grace": "5m"})
			before := e.staticCreds("app", id)
			tamper.Store(true)
			resp, err := e.rotateRole("app")
			if err == nil || !strings.Contains(err.Error(), "rotation unconfirmed") {
				t.Fatalf("rotate-role with an altered answer: %s, want an error saying the new secret is refused", outcome(resp, err))
			}
			if got := e.staticCreds("app", id); got != before {
				t.Fatal("rotate-role stored a secret from an altered answer")
			}
			if e.staticWALs()["app"] != 1 {
				t.Fatalf("WAL entries %v, want the rotation's, for the rollback", e.staticWALs())
			}
			tamper.Store(!heals)
			e.rollback(true)
			if w := e.staticWALs(); len(w) != 0 {
				t.Fatalf("WAL entries left after the rollback: %v", w)
			}
			if heals {
				if e.staticCreds("app", id) == before {
					t.Fatal("the rollback kept the previous secret")
				}
			} else {
				msg := dataString(must(t)(e.read(staticRolesPath+"app")), "last_rotation_error")
				if !containsAll(msg, "could not be finished", "does not accept the secret") {
					t.Fatalf("the role does not report the failed rotation: %q", msg)
				}
				tamper.Store(false)
				must(t)(e.rotateRole("app"))
			}
			e.emuTime.advance(5*time.Minute + 2*time.Second)
			if works(e.srv, before) {
				t.Fatal("the previous secret works after the grace")
			}
			e.staticCreds("app", id)
		})
	}
}

// A rotation that can never be confirmed (the replay window passed) is given
// up loudly, once; a new rotate-role, authenticated by the root, gives the
// token a secret the engine holds again.
func TestRotateRole_GiveUp(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "720h"})
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Status: 503})
	if _, err := e.rotateRole("app"); err == nil {
		t.Fatal("rotate-role succeeded")
	}
	e.srv.SetDown(true)
	e.emuTime.advance(rotationGiveUpAfter + time.Minute)
	e.srv.ClearFaults()
	e.srv.SetDown(false)
	e.rollback(true)
	if w := e.staticWALs(); len(w) != 0 {
		t.Fatalf("WAL entries kept: %v", w)
	}
	msg := dataString(must(t)(e.read(staticRolesPath+"app")), "last_rotation_error")
	if !containsAll(msg, "could not be confirmed", "rotate-role/app") {
		t.Fatalf("the role does not report the give-up: %q", msg)
	}
	must(t)(e.rotateRole("app"))
	e.staticCreds("app", id)
	if msg := dataString(must(t)(e.read(staticRolesPath+"app")), "last_rotation_error"); msg != "" {
		t.Fatalf("a successful rotation did not clear the error: %q", msg)
	}
}

// Two nodes: the active one rotates, a performance standby serves the new
// secret from storage.
func TestStaticCreds_OtherNode(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	other := newNode(t, e.storage, nil)
	readOther := func() string {
		resp, err := other.HandleRequest(context.Background(), e.request(logical.ReadOperation, staticCredsPath+"app", nil))
		if err != nil || resp.IsError() {
			t.Fatalf("static-creds on the other node: %v %v", resp, err)
		}
		return resp.Data["token"].(string)
	}
	before := readOther()
	must(t)(e.rotateRole("app"))
	other.InvalidateKey(context.Background(), staticRolePrefix+"app")
	if after := readOther(); after == before || after != e.staticCreds("app", id) {
		t.Fatal("the other node does not serve the new secret")
	}
}

// rotate-role is under the static roles' rate limit of Tooken calls (the
// root's, shared with the schedule): a loop of it cannot spend the root's
// budget at Tooken. Past the limit it answers 429 at once and calls nothing.
func TestRotateRole_RateLimited(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	e.b.static.limiter = rate.NewLimiter(rate.Every(time.Hour), 1)
	must(t)(e.rotateRole("app"))
	rotations := e.rotationsOf(id)
	start := time.Now()
	resp, err := e.rotateRole("app")
	var coded logical.HTTPCodedError
	if err == nil || !errors.As(err, &coded) || coded.Code() != 429 || !strings.Contains(err.Error(), "retry in a few seconds") {
		t.Fatalf("rotate-role past the rate limit: %v %v", resp, err)
	}
	if waited := time.Since(start); waited > staticManualRateWait {
		t.Fatalf("waited %s for an answer", waited)
	}
	if n := e.rotationsOf(id); n != rotations {
		t.Fatalf("%d rotations past the limit", n-rotations)
	}
}
