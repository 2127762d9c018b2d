package tooken

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// The shortest accepted rotation_grace is what recovering an interrupted
// rotation needs: 1m WAL minimum age + 1m rollback interval + the rotate
// call's budget (request_timeout and max_retries, capped at 1m) + 30s.
// Writes that change request_timeout or max_retries re-check it.
func TestRotationGrace_Minimum(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	cases := []struct {
		name    string
		data    map[string]any
		wantErr string // "" = accepted
	}{
		{"defaults: 3m30s accepted", map[string]any{"rotation_grace": "3m30s"}, ""},
		{"defaults: 3m29s refused", map[string]any{"rotation_grace": "3m29s"}, "rotation_grace: 3m29s is shorter than the 3m30s"},
		{"fast calls: 2m45s accepted", map[string]any{"request_timeout": "5s", "max_retries": 1, "rotation_grace": "2m45s"}, ""},
		{"fast calls: 2m44s refused", map[string]any{"request_timeout": "5s", "max_retries": 1, "rotation_grace": "2m44s"}, "the 2m45s that recovering an interrupted rotation needs with request_timeout=5s and max_retries=1"},
		{"one attempt of 1s: 2m31s", map[string]any{"request_timeout": "1s", "max_retries": 0, "rotation_grace": "2m31s"}, ""},
		{"slow calls are capped at 1m", map[string]any{"request_timeout": "10m", "max_retries": 10, "rotation_grace": "3m30s"}, ""},
		{"the error says what to do", map[string]any{"rotation_grace": "1m"}, "raise rotation_grace to at least 3m30s, or lower request_timeout or max_retries"},
		{"at most 24h", map[string]any{"rotation_grace": "24h1s"}, "rotation_grace: 24h0m1s is longer than 24h"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := getTestBackend(t)
			data := map[string]any{"url": srv.URL(), "token": srv.RootSecret()}
			for k, v := range tc.data {
				data[k] = v
			}
			resp, err := e.write(configPath, data)
			if tc.wantErr == "" {
				mustOK(t, resp, err)
				return
			}
			mustUserError(t, resp, err, tc.wantErr)
			if e.storage.puts.Load() != 0 {
				t.Error("a refused config was stored")
			}
		})
	}

	t.Run("a write that lengthens the calls re-checks the stored grace", func(t *testing.T) {
		e := getTestBackend(t)
		e.configure(srv, map[string]any{"request_timeout": "5s", "max_retries": 1, "rotation_grace": "2m45s"})
		e.storage.reset()
		resp, err := e.write(configPath, map[string]any{"request_timeout": "30s"})
		mustUserError(t, resp, err, "rotation_grace: 2m45s is shorter than the 3m30s", "request_timeout=30s and max_retries=1")
		resp, err = e.write(configPath, map[string]any{"max_retries": 3})
		mustUserError(t, resp, err, "rotation_grace: 2m45s is shorter")
		if e.storage.puts.Load() != 0 {
			t.Error("a refused config was stored")
		}
		must(t)(e.write(configPath, map[string]any{"request_timeout": "30s", "rotation_grace": "5m"}))
	})

	// The minimum comes from request_timeout and max_retries: while they are
	// invalid the write names them, not a grace computed from them.
	t.Run("invalid call settings are reported, not used", func(t *testing.T) {
		e := getTestBackend(t)
		resp, err := e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret(),
			"request_timeout": 0, "max_retries": 11, "rotation_grace": "3m"})
		mustUserError(t, resp, err, "request_timeout: must be greater than zero", "max_retries: must be between 0 and 10")
		if msg := resp.Error().Error(); strings.Contains(msg, "rotation_grace") {
			t.Errorf("error %q names rotation_grace, computed from invalid values", msg)
		}
	})
}

// legacyConfig rewrites the stored config the way an earlier version stored
// it: without rotation_grace when grace is 0 (the old default, 1h), or with
// grace as it was accepted then.
func (e *testEnv) legacyConfig(grace time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	raw, err := e.storage.Get(ctx, configPath)
	if err != nil || raw == nil {
		e.t.Fatalf("reading config: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw.Value, &m); err != nil {
		e.t.Fatal(err)
	}
	delete(m, "rotation_grace")
	if grace > 0 {
		m["rotation_grace"] = int64(grace)
	}
	entry, err := logical.StorageEntryJSON(configPath, m)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.storage.Put(ctx, entry); err != nil {
		e.t.Fatal(err)
	}
	e.b.InvalidateKey(ctx, configPath)
}

func storedGraceField(t *testing.T, e *testEnv) any {
	t.Helper()
	raw, err := e.storage.Get(context.Background(), configPath)
	if err != nil || raw == nil {
		t.Fatalf("reading config: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw.Value, &m); err != nil {
		t.Fatal(err)
	}
	return m["rotation_grace"]
}

// The default grace is 5m and is stored. A config stored by an earlier
// version without a grace had the default of then, 1h, and keeps it; the
// next write stores it explicitly.
func TestRotationGrace_DefaultAndLegacy(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	if got := must(t)(e.read(configPath)).Data["rotation_grace"]; got != int64(300) {
		t.Errorf("default rotation_grace = %v, want 300", got)
	}
	if got := storedGraceField(t, e); got != float64(5*time.Minute) {
		t.Errorf("stored rotation_grace = %v, want 5m stored explicitly", got)
	}

	e.legacyConfig(0)
	if got := must(t)(e.read(configPath)).Data["rotation_grace"]; got != int64(3600) {
		t.Errorf("legacy config: rotation_grace = %v, want 3600", got)
	}
	resp := must(t)(e.write("rotate-root", nil))
	pe, _ := time.Parse(time.RFC3339, resp.Data["previous_secret_expires_at"].(string))
	if d := time.Until(pe); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("legacy config rotated with a grace of %s, want 1h", d.Round(time.Second))
	}
	must(t)(e.write(configPath, map[string]any{"max_retries": 2}))
	if got := storedGraceField(t, e); got != float64(time.Hour) {
		t.Errorf("after a write, stored rotation_grace = %v, want 1h stored explicitly", got)
	}
	if got := must(t)(e.read(configPath)).Data["rotation_grace"]; got != int64(3600) {
		t.Errorf("after a write: rotation_grace = %v, want 3600", got)
	}
}

// A config that an earlier version accepted with a grace shorter than the
// recovery needs rotates with the minimum, and its next write asks for a
// valid grace.
func TestRotationGrace_LegacyShortGrace(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.legacyConfig(10 * time.Second)
	resp := must(t)(e.write("rotate-root", nil))
	pe, _ := time.Parse(time.RFC3339, resp.Data["previous_secret_expires_at"].(string))
	if d := time.Until(pe); d < 3*time.Minute+20*time.Second || d > 3*time.Minute+40*time.Second {
		t.Errorf("rotated with a grace of %s, want the minimum 3m30s", d.Round(time.Second))
	}
	r, err := e.write(configPath, map[string]any{"max_retries": 2})
	mustUserError(t, r, err, "rotation_grace: 10s is shorter than the 3m30s")
}

// ageWALs makes every WAL entry look created age ago, as Vault's WAL
// rollback and the periodic function measure it.
func (e *rotEnv) ageWALs(age time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	ids, err := framework.ListWAL(ctx, e.storage)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, id := range ids {
		raw, err := e.storage.Get(ctx, framework.WALPrefix+id)
		if err != nil || raw == nil {
			e.t.Fatalf("reading WAL %s: %v", id, err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw.Value, &m); err != nil {
			e.t.Fatal(err)
		}
		m["created_at"] = time.Now().Add(-age).Unix()
		entry, err := logical.StorageEntryJSON(framework.WALPrefix+id, m)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.storage.Put(ctx, entry); err != nil {
			e.t.Fatal(err)
		}
	}
}

// The lockout scenario with the minimum grace: Tooken rotates, the process
// dies before storing the new secret (and with it the in-memory copy). The
// periodic function (first thing, before the rest of its work) finishes the
// rotation once its WAL entry is as old as Vault's WAL rollback wants, and
// does so within the grace: the replay is authenticated with the previous
// secret, still valid.
func TestRotationGrace_MinimumRecoversAfterADeath(t *testing.T) {
	e := newRotEnv(t, map[string]any{"request_timeout": "5s", "max_retries": 1, "rotation_grace": "2m45s"})
	e.faulty.failNext(e.faulty.failPut, configPath, 1)
	if _, err := e.rotate(); err == nil {
		t.Fatal("rotate-root succeeded")
	}
	e.restart()

	// A young entry belongs to a rotation that may still be running: left alone.
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if len(e.rotateWALs()) != 1 || e.storedConfig().Token != e.root {
		t.Fatal("the periodic function touched a WAL entry younger than the WAL minimum age")
	}

	// Vault's rollback comes at the latest one interval after the entry is
	// old enough, and the replay takes at most the call budget (15s here):
	// the previous secret is still valid then.
	e.ageWALs(walRollbackMinAge + vaultRollbackInterval)
	e.emuTime.advance(walRollbackMinAge + vaultRollbackInterval + 15*time.Second)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if w := e.rotateWALs(); len(w) != 0 {
		t.Fatalf("WAL entry left: %v", w)
	}
	if got := e.mustWork(); got == e.root {
		t.Fatal("the stored secret is still the bootstrap one")
	}
	if e.rotations() != 1 {
		t.Errorf("%d rotations upstream, want 1 (a replay, not a second rotation)", e.rotations())
	}
	e.mustOneRoot()
}
