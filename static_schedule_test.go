package tooken

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/time/rate"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// newScheduleEnv is a staticEnv whose clock starts at a round time, so that
// windows and cron instants read plainly.
func newScheduleEnv(t *testing.T, start time.Time) *staticEnv {
	t.Helper()
	e := newStaticEnv(t, nil)
	if !start.After(e.emuTime.now()) {
		t.Fatalf("the schedule tests start in the future, not at %s", start)
	}
	e.emuTime.advance(start.Sub(e.emuTime.now()))
	e.day0 = start
	return e
}

// at moves the clock to hh:mm:ss of the day the env started and runs the
// periodic function, as Vault's rollback manager does about once a minute.
func (e *staticEnv) at(day int, hms string) {
	e.t.Helper()
	tm, err := time.Parse("15:04:05", hms)
	if err != nil {
		e.t.Fatal(err)
	}
	y, m, d := e.day0.Date()
	target := time.Date(y, m, d+day, tm.Hour(), tm.Minute(), tm.Second(), 0, time.UTC)
	if target.Before(e.emuTime.now()) {
		e.t.Fatalf("the clock goes forward only: %s is past", target)
	}
	e.emuTime.advance(target.Sub(e.emuTime.now()))
	e.periodicRun()
}

func (e *staticEnv) readStatic(name string) map[string]any {
	e.t.Helper()
	return must(e.t)(e.read(staticRolesPath + name)).Data
}

// TestStaticSchedule_Period drives the periodic function with a fake clock:
// a period rotates when due, only inside the window, counts from the due
// time (no drift), and backs off after failures.
func TestStaticSchedule_Period(t *testing.T) {
	e := newScheduleEnv(t, time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC))
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "1h", "rotation_window": "02:00-04:00", "skip_import_rotation": true, "token": e.appSecret(id)})
	steps := []struct {
		day       int
		at        string
		rotations int
		next      string
	}{
		{0, "00:30:00", 0, "2030-01-10T02:00:00Z"}, // not due
		{0, "01:30:00", 0, "2030-01-10T02:00:00Z"}, // due at 01:00, outside the window
		{0, "02:00:40", 1, "2030-01-10T03:00:00Z"}, // rotates; counts from 02:00, not 02:00:40
		{0, "02:59:40", 1, "2030-01-10T03:00:00Z"}, // not due
		{0, "03:00:30", 2, "2030-01-11T02:00:00Z"}, // 04:00 would be outside: next day
		{1, "02:00:10", 3, "2030-01-11T03:00:00Z"},
	}
	for i, s := range steps {
		e.at(s.day, s.at)
		if n := e.rotationsOf(id); n != s.rotations {
			t.Fatalf("step %d (%s): rotations %d, want %d", i, s.at, n, s.rotations)
		}
		if got := e.readStatic("app")["next_rotation"]; got != s.next {
			t.Fatalf("step %d (%s): next_rotation %v, want %s", i, s.at, got, s.next)
		}
		e.staticCreds("app", id)
	}

	// Tooken fails: the schedule backs off 1m, 2m.
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Status: 403})
	e.at(1, "03:00:05")
	r := e.readStatic("app")
	if r["rotation_failures"] != 1 || !strings.Contains(r["last_rotation_error"].(string), "nothing changed upstream") || r["next_rotation"] != "2030-01-11T03:01:05Z" {
		t.Fatalf("after one failure: %v", r)
	}
	e.at(1, "03:00:50")
	e.at(1, "03:01:10")
	if r = e.readStatic("app"); r["rotation_failures"] != 2 || r["next_rotation"] != "2030-01-11T03:03:10Z" {
		t.Fatalf("after two failures: %v", r)
	}
	e.srv.ClearFaults()
	e.at(1, "03:03:20")
	if r = e.readStatic("app"); r["rotation_failures"] != 0 || r["last_rotation_error"] != "" || r["next_rotation"] != "2030-01-12T02:00:00Z" { // 04:03:20 is outside the window
		t.Fatalf("after recovery: %v", r)
	}
	if n := e.rotationsOf(id); n != 4 {
		t.Fatalf("rotations %d, want 4", n)
	}
	e.staticCreds("app", id)
}

// appSecret is a fresh secret of tokenID, given by rotating it as the root
// (how an operator would hold one before the import).
func (e *staticEnv) appSecret(tokenID string) string {
	e.t.Helper()
	tok, err := e.client().RotateToken(context.Background(), tokenID, 0, "")
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv.ResetRequests()
	return tok.Secret
}

func TestStaticSchedule_Cron(t *testing.T) {
	e := newScheduleEnv(t, time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC))
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_schedule": "*/20 * * * *", "skip_import_rotation": true, "token": e.appSecret(id)})
	if got := e.readStatic("app")["next_rotation"]; got != "2030-01-10T00:20:00Z" {
		t.Fatalf("next_rotation %v", got)
	}
	e.at(0, "00:19:59")
	e.at(0, "00:20:30")
	e.at(0, "00:21:30")
	e.at(0, "00:40:10")
	if n := e.rotationsOf(id); n != 2 {
		t.Fatalf("rotations %d, want 2", n)
	}
	creds := must(t)(e.read(staticCredsPath + "app")).Data
	// rotation_period of a cron: the seconds between the last and the next.
	if creds["next_rotation"] != "2030-01-10T01:00:00Z" || creds["rotation_period"] != int64(1200) || creds["ttl"] != int64(1190) {
		t.Fatalf("static-creds: %v", creds)
	}
}

// What Vault Agent (consul-template) sleeps on: ttl, whole seconds to the
// next rotation; a few seconds once it is due and not run yet.
func TestStaticCreds_TTL(t *testing.T) {
	e := newScheduleEnv(t, time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC))
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "1m", "skip_import_rotation": true, "token": e.appSecret(id)})
	ttl := func() any { return must(t)(e.read(staticCredsPath + "app")).Data["ttl"] }
	if got := ttl(); got != int64(60) {
		t.Fatalf("ttl %v, want 60", got)
	}
	e.emuTime.advance(59*time.Second + 500*time.Millisecond)
	if got := ttl(); got != int64(1) {
		t.Fatalf("ttl %v half a second before the rotation, want 1", got)
	}
	e.emuTime.advance(10 * time.Second)
	if got := ttl(); got != int64(staticCredsOverdueTTL/time.Second) {
		t.Fatalf("ttl %v while the rotation is due, want %v", got, staticCredsOverdueTTL)
	}
	e.periodicRun()
	if got := ttl(); got != int64(50) { // due at 00:01:00 + 1m, now 00:01:09.5
		t.Fatalf("ttl %v after the rotation, want 50", got)
	}
}

// With many static roles and nothing due, the periodic function reads no
// storage and calls Tooken not once; a role invalidated by another node is
// read once.
func TestStaticSchedule_IdleCost(t *testing.T) {
	e := newStaticEnv(t, nil)
	const n = 50
	for i := range n {
		id, secret := e.appToken(fmt.Sprintf("app-%d", i))
		e.mustImport(fmt.Sprintf("app-%d", i), id, map[string]any{"rotation_period": "24h", "skip_import_rotation": true, "token": secret})
	}
	e.restart() // the schedule is built from storage by the first run
	static := &staticStorage{Storage: e.storage.Storage}
	e.storage.Storage = static
	e.srv.ResetRequests()
	e.periodicRun()
	t.Logf("first run after a start with %d static roles: %d storage round trips of static roles", n, static.ops.Load())
	if static.ops.Load() < n {
		t.Fatal("the first run did not read the static roles")
	}
	for range 3 {
		e.emuTime.advance(time.Second)
		static.ops.Store(0)
		e.storage.reset()
		e.periodicRun()
		if ops := static.ops.Load(); ops != 0 {
			t.Fatalf("an idle run made %d storage round trips for static roles", ops)
		}
		t.Logf("an idle run: %d storage round trips in all (none for static roles)", e.storage.total())
	}
	if reqs := e.srv.Requests(); len(reqs) != 0 {
		t.Fatalf("idle runs called Tooken: %+v", reqs[0])
	}
	e.b.InvalidateKey(context.Background(), staticRolePrefix+"app-7")
	static.ops.Store(0)
	e.periodicRun()
	if ops := static.ops.Load(); ops != 1 {
		t.Fatalf("after an invalidation: %d storage round trips for static roles, want 1 (its read)", ops)
	}
	// The checks come spread over the interval, and each is one GET.
	e.emuTime.advance(staticCheckInterval)
	e.periodicRun()
	gets := 0
	for _, r := range e.srv.Requests() {
		if r.Method == "GET" && r.Status == 200 {
			gets++
		}
	}
	if gets != n {
		t.Fatalf("%d checks after one interval, want %d", gets, n)
	}
}

// Another node changed a role's schedule: the invalidation makes this node
// use the new one.
func TestStaticSchedule_Invalidate(t *testing.T) {
	e := newScheduleEnv(t, time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC))
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "24h", "skip_import_rotation": true, "token": e.appSecret(id)})
	e.periodicRun() // builds the schedule
	r := e.storedStatic("app")
	r.RotationPeriod = 10 * time.Minute
	if err := putStaticRole(context.Background(), e.storage.Storage, "app", r); err != nil {
		t.Fatal(err)
	}
	e.at(0, "00:10:30")
	if n := e.rotationsOf(id); n != 0 {
		t.Fatal("rotated before the invalidation told of the change")
	}
	e.b.InvalidateKey(context.Background(), staticRolePrefix+"app")
	e.at(0, "00:10:40")
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations %d after the invalidation, want 1", n)
	}
}

// A token rotated outside Vault is rotated again within 5 minutes, so that
// static-creds serves a working secret again, and the role says so.
func TestStaticSchedule_OutOfBand(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "720h", "rotation_grace": 0})
	e.periodicRun()
	held := e.staticCreds("app", id)
	// Someone rotates it behind Vault's back, killing the secret Vault holds
	// (a second later: rotated_at has whole seconds).
	e.emuTime.advance(time.Second)
	if _, err := e.client().RotateToken(context.Background(), id, 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.srv.Authenticate(held); ok {
		t.Fatal("the out-of-band rotation left the held secret alive")
	}
	start := e.emuTime.now()
	for e.emuTime.now().Sub(start) < 5*time.Minute {
		e.emuTime.advance(time.Minute)
		e.periodicRun()
		if rec, ok := e.srv.Authenticate(e.storedStatic("app").Secret); ok && rec.ID == id {
			break
		}
	}
	if e.emuTime.now().Sub(start) > 4*time.Minute {
		t.Fatalf("repaired after %s, want within 4m of periodic runs", e.emuTime.now().Sub(start))
	}
	e.staticCreds("app", id)
	msg := dataString(must(t)(e.read(staticRolesPath+"app")), "last_rotation_error")
	if !containsAll(msg, "out-of-band change", id, "rotated outside Vault", "Vault rotated it again") {
		t.Fatalf("last_rotation_error %q", msg)
	}
	if n := e.rotationsOf(id); n != 3 { // import, out-of-band, repair
		t.Fatalf("rotations %d, want 3", n)
	}
	// Repaired once: the next checks find nothing to do.
	for range 5 {
		e.emuTime.advance(time.Minute)
		e.periodicRun()
	}
	if n := e.rotationsOf(id); n != 3 {
		t.Fatalf("rotations %d after the repair, want 3", n)
	}
}

// A rotation of the engine's own whose answer was lost also moves rotated_at
// upstream: the check finishes that rotation, and reports no out-of-band
// change.
func TestStaticSchedule_PendingIsNotOutOfBand(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "720h"})
	e.periodicRun()                // builds the schedule
	e.emuTime.advance(time.Second) // rotated_at has whole seconds
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Drop: true})
	if _, err := e.rotateRole("app"); err == nil {
		t.Fatal("rotate-role succeeded")
	}
	e.srv.ClearFaults()
	e.emuTime.advance(staticCheckInterval + time.Second)
	e.periodicRun()
	if w := e.staticWALs(); len(w) != 0 {
		t.Fatalf("the check did not finish the rotation: %v", w)
	}
	if msg := dataString(must(t)(e.read(staticRolesPath+"app")), "last_rotation_error"); msg != "" {
		t.Fatalf("last_rotation_error %q", msg)
	}
	if n := e.rotationsOf(id); n != 2 {
		t.Fatalf("rotations %d, want 2 (import, the interrupted one)", n)
	}
	e.staticCreds("app", id)
}

// A token revoked (or expired) upstream: the role shows it, static-creds
// answers an error instead of a dead secret, and nothing calls Tooken for it
// again.
func TestStaticSchedule_Gone(t *testing.T) {
	for _, how := range []string{"revoked", "expired"} {
		t.Run(how, func(t *testing.T) {
			e := newStaticEnv(t, nil)
			var id string
			if how == "revoked" {
				id, _ = e.appToken("app")
			} else {
				exp := e.emuTime.now().Add(time.Hour).UTC().Truncate(time.Second)
				tok, err := e.client().CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: "app", Scopes: []string{"deployments:write"}, ExpiresAt: &exp}, "")
				if err != nil {
					t.Fatal(err)
				}
				id = tok.ID
			}
			e.mustImport("app", id, map[string]any{"rotation_period": "1m"})
			if how == "revoked" {
				if err := e.client().RevokeToken(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			} else {
				e.emuTime.advance(time.Hour)
			}
			for range 5 {
				e.emuTime.advance(time.Minute)
				e.periodicRun()
			}
			r := e.readStatic("app")
			if !containsAll(r["last_rotation_error"].(string), id, "no longer exists upstream") || r["next_rotation"] != nil {
				t.Fatalf("the role: %v", r)
			}
			resp, err := e.read(staticCredsPath + "app")
			mustUserError(t, resp, err, "no longer exists upstream", "delete this static role")
			e.srv.ResetRequests()
			for range 10 {
				e.emuTime.advance(time.Minute)
				e.periodicRun()
			}
			if reqs := e.srv.Requests(); len(reqs) != 0 {
				t.Fatalf("a gone token is still called: %+v", reqs[0])
			}
			resp, err = e.rotateRole("app")
			mustUserError(t, resp, err, "token_id: Tooken no longer knows the token")
		})
	}
}

// The config pointing to another Tooken: the role's secret is not sent
// there, the role is neither rotated nor checked, static-creds and read say
// why; writing the role again checks its token at the new url.
func TestStaticSchedule_URLChanged(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "1m"})
	other := newEmulator(t, tookentest.Options{RateLimit: -1})
	must(t)(e.write(configPath, map[string]any{"url": other.URL(), "token": other.RootSecret()}))
	e.srv.ResetRequests()
	for range 5 {
		e.emuTime.advance(time.Minute)
		e.periodicRun()
	}
	for _, srv := range []*tookentest.Server{e.srv, other} {
		for _, r := range srv.Requests() {
			if strings.Contains(r.Path, id) {
				t.Fatalf("a role written for another Tooken was called: %+v", r)
			}
		}
	}
	resp := must(t)(e.read(staticCredsPath + "app"))
	if !strings.Contains(strings.Join(resp.Warnings, "\n"), "was written for the Tooken at "+e.srv.URL()) || resp.Data["ttl"] != int64(60) || resp.Data["next_rotation"] != nil {
		t.Fatalf("static-creds after the url changed: %v %v", resp.Data, resp.Warnings)
	}
	r, err := e.rotateRole("app")
	mustUserError(t, r, err, "was written for the Tooken at", "written again")
	r, err = e.write(staticRolesPath+"app", map[string]any{"description": "moved"})
	mustUserError(t, r, err, "token_id: Tooken has no token "+id)
	// Back to the Tooken it was written for: managed again.
	must(t)(e.write(configPath, map[string]any{"url": e.srv.URL(), "token": e.srv.RootSecret()}))
	e.emuTime.advance(time.Minute)
	e.periodicRun()
	e.staticCreds("app", id)
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations %d once the config points back, want the one the schedule had due", n)
	}
}

// Only the active node rotates and checks; a performance standby serves
// static-creds from storage.
func TestStaticSchedule_SkipsStandby(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, map[string]any{"rotation_period": "1m"})
	e.sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.srv.ResetRequests()
	e.emuTime.advance(10 * time.Minute)
	e.periodicRun()
	if reqs := e.srv.Requests(); len(reqs) != 0 {
		t.Fatalf("a standby called Tooken: %+v", reqs[0])
	}
	e.staticCreds("app", id)
	e.sys.ReplicationStateVal = 0
	e.periodicRun()
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("the active node did not rotate (%d)", n)
	}
}

// Rotations that fall due together go out under the rate limit (here 20 per
// second against an upstream allowing 25, burst 5: no 429), and a run that
// spends its budget leaves the rest, due, for the next run.
func TestStaticSchedule_RateLimitAndBudget(t *testing.T) {
	e := newStaticEnv(t, nil)
	const n = 30
	ids := make([]string, n)
	for i := range n {
		var secret string
		ids[i], secret = e.appToken(fmt.Sprintf("app-%d", i))
		e.mustImport(fmt.Sprintf("app-%d", i), ids[i], map[string]any{"rotation_period": "1h", "skip_import_rotation": true, "token": secret})
	}
	e.b.static.limiter = rate.NewLimiter(20, 1)
	e.b.static.budget = time.Second
	e.srv.SetRateLimit(25, 5)
	e.emuTime.advance(time.Hour + time.Second)
	e.srv.ResetRequests()
	e.periodicRun()
	first := e.srv.Counters()["rotated"]
	if first == 0 || first >= n {
		t.Fatalf("the first run rotated %d of %d, want some but not all (1s budget at 20/s)", first, n)
	}
	e.periodicRun()
	e.periodicRun()
	for i, id := range ids {
		if got := e.rotationsOf(id); got != 1 {
			t.Errorf("app-%d rotated %d times", i, got)
		}
	}
	for _, r := range e.srv.Requests() {
		if r.Status == 429 {
			t.Fatalf("Tooken rate limited the engine: %+v", r)
		}
	}
	t.Logf("first run: %d rotations within its 1s budget", first)
}

// Every static role operation through the request layer, as the secrets
// test does for the rest: no static secret in logs, errors, reads, storage
// keys, or any stored value but the static role's own entry.
func TestStaticRoles_SecretsNeverLogged(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, imported := e.appToken("app")
	var texts []string
	note := func(resp *logical.Response, err error) {
		if err != nil {
			texts = append(texts, err.Error())
		}
		if resp != nil {
			texts = append(texts, fmt.Sprint(resp.Data), strings.Join(resp.Warnings, "\n"))
		}
	}
	note(e.importRole("app", id, map[string]any{"skip_import_rotation": true, "token": "tok_test_" + strings.Repeat("W", 25)}))
	note(e.importRole("app", id, map[string]any{"skip_import_rotation": true, "token": imported}))
	note(e.write(staticRolesPath+"app", map[string]any{"token": "tok_test_" + strings.Repeat("V", 25)}))
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Drop: true})
	note(e.rotateRole("app"))
	e.srv.ClearFaults()
	e.rollback(true)
	note(e.rotateRole("app"))
	note(e.read(staticRolesPath + "app"))
	note(e.list(staticRolesPath))
	current := e.storedStatic("app").Secret
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Status: 500})
	note(e.rotateRole("app"))
	e.srv.ClearFaults()
	note(e.del(staticRolesPath + "app"))
	walkStorage(t, e.storage.Storage, "", func(key string, value []byte) {
		texts = append(texts, key)
		if !strings.HasPrefix(key, staticRolePrefix) && key != configPath {
			texts = append(texts, string(value))
		}
	})
	all := e.logs.String() + "\n" + strings.Join(texts, "\n")
	for _, s := range []string{imported, current, strings.Repeat("W", 25), strings.Repeat("V", 25)} {
		if strings.Contains(all, s) {
			t.Errorf("a static secret (%.12s...) appears in logs, errors, reads or storage", s)
		}
	}
}

// walkStorage calls f with every key and value under prefix.
func walkStorage(t *testing.T, s logical.Storage, prefix string, f func(key string, value []byte)) {
	t.Helper()
	keys, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.HasSuffix(k, "/") {
			walkStorage(t, s, prefix+k, f)
			continue
		}
		entry, err := s.Get(context.Background(), prefix+k)
		if err != nil || entry == nil {
			t.Fatalf("get %s: %v", prefix+k, err)
		}
		f(prefix+k, entry.Value)
	}
}

// Every static answer reads durations back as whole seconds and times as
// RFC 3339 UTC in whole seconds, as the rest of the engine does.
func TestStaticResponses_DurationsAndTimes(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	answers := map[string]*logical.Response{
		"static-roles write": e.mustImport("app", id, map[string]any{"rotation_period": "24h", "rotation_grace": "90s"}),
		"rotate-role":        must(t)(e.rotateRole("app")),
		"static-roles/app":   must(t)(e.read(staticRolesPath + "app")),
		"static-creds/app":   must(t)(e.read(staticCredsPath + "app")),
	}
	for what, resp := range answers {
		if resp == nil || len(resp.Data) == 0 {
			t.Fatalf("%s: no data", what)
		}
		checkReadBack(t, what, resp.Data)
	}
	if got := answers["static-roles/app"].Data["rotation_grace"]; got != int64(90) {
		t.Errorf("rotation_grace %v, want 90", got)
	}
}

// An import whose rotation had an unknown outcome is finished by the WAL
// rollback, and the role then enters the schedule (it rotates when due).
func TestStaticSchedule_ImportFinishedByRollback(t *testing.T) {
	e := newStaticEnv(t, nil)
	e.periodicRun() // the schedule is built
	id, _ := e.appToken("app")
	e.srv.AddFault(tookentest.Fault{Method: "POST", Path: "/v1/tokens/" + id + "/rotate", Drop: true})
	if _, err := e.importRole("app", id, map[string]any{"rotation_period": "10m"}); err == nil {
		t.Fatal("the import succeeded with its answer lost")
	}
	e.srv.ClearFaults()
	e.rollback(true)
	e.staticCreds("app", id)
	e.emuTime.advance(10*time.Minute + time.Second)
	e.periodicRun()
	if n := e.rotationsOf(id); n != 2 {
		t.Fatalf("rotations %d, want 2 (the import, a scheduled one)", n)
	}
}

// Another CA for the same url is another destination too: the role's secret
// is not sent where a different CA could vouch for an impostor.
func TestStaticSchedule_CAChanged(t *testing.T) {
	e := newStaticEnv(t, nil)
	id, _ := e.appToken("app")
	e.mustImport("app", id, nil)
	must(t)(e.write(configPath, map[string]any{"ca_cert": otherCA(t), "token": e.srv.RootSecret()}))
	resp, err := e.rotateRole("app")
	mustUserError(t, resp, err, "was written for the Tooken at", "ca_cert changed")
	if n := e.rotationsOf(id); n != 1 {
		t.Fatalf("rotations %d, want the import's only", n)
	}
}
