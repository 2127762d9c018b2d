package tooken

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// staticEnv is a rotEnv (emulator with an adjustable clock, storage that can
// fail) whose backend runs on the emulator's clock, so that advancing it
// moves the schedule and the end of the graces alike.
type staticEnv struct {
	*rotEnv
	day0 time.Time // the day the schedule tests count from
}

func newStaticEnv(t *testing.T, config map[string]any) *staticEnv {
	t.Helper()
	e := &staticEnv{rotEnv: newRotEnv(t, config)}
	e.b.clock = e.emuTime.now
	return e
}

// restart is a process death: a new backend on the same storage and clock.
func (e *staticEnv) restart() {
	e.t.Helper()
	e.rotEnv.restart()
	e.b.clock = e.emuTime.now
}

// appToken creates a token at the emulator, as the root (the way an
// operator made it before Vault managed it), and returns its id and secret.
func (e *staticEnv) appToken(name string, scopes ...string) (string, string) {
	e.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"deployments:write"}
	}
	tok, err := e.client().CreateToken(context.Background(), tookenapi.CreateTokenRequest{Name: name, Scopes: scopes}, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.ID, tok.Secret
}

// importRole writes static-roles/name for tokenID with data (rotation_period
// 1h unless data sets a schedule).
func (e *staticEnv) importRole(name, tokenID string, data map[string]any) (*logical.Response, error) {
	d := map[string]any{"token_id": tokenID}
	if data["rotation_schedule"] == nil && data["rotation_period"] == nil {
		d["rotation_period"] = "1h"
	}
	for k, v := range data {
		d[k] = v
	}
	return e.write(staticRolesPath+name, d)
}

func (e *staticEnv) mustImport(name, tokenID string, data map[string]any) *logical.Response {
	e.t.Helper()
	return must(e.t)(e.importRole(name, tokenID, data))
}

func (e *staticEnv) storedStatic(name string) *staticRoleEntry {
	e.t.Helper()
	r, err := readStaticRole(context.Background(), e.storage.Storage, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// staticCreds reads static-creds/name and asserts that its secret works for
// tokenID upstream; it returns the secret.
func (e *staticEnv) staticCreds(name, tokenID string) string {
	e.t.Helper()
	resp := must(e.t)(e.read(staticCredsPath + name))
	if resp.Secret != nil {
		e.t.Fatalf("static-creds has a lease: %+v", resp.Secret)
	}
	secret, _ := resp.Data["token"].(string)
	rec, ok := e.srv.Authenticate(secret)
	if !ok || rec.ID != tokenID {
		e.t.Fatalf("static-creds/%s serves a secret that Tooken does not accept for %s (ok=%v id=%s)", name, tokenID, ok, rec.ID)
	}
	return secret
}

// rotationsOf counts the rotations of tokenID the emulator carried out (its
// answer sent or dropped; a replay answered from the idempotency store is
// not a rotation).
func (e *staticEnv) rotationsOf(tokenID string) int {
	n := 0
	for _, r := range e.srv.Requests() {
		if r.Path == "/v1/tokens/"+tokenID+"/rotate" && r.Status == 200 && !r.Replayed {
			n++
		}
	}
	return n
}

// staticWALs are the static rotation WAL entries left, by role.
func (e *staticEnv) staticWALs() map[string]int {
	e.t.Helper()
	ctx := context.Background()
	ids, err := framework.ListWAL(ctx, e.storage)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int{}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, e.storage, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if entry != nil && entry.Kind == walKindRotateStatic {
			w, err := decodeRotationWAL(entry.Kind, entry.Data)
			if err != nil {
				e.t.Fatal(err)
			}
			out[w.Target]++
		}
	}
	return out
}

func (e *staticEnv) periodicRun() {
	e.t.Helper()
	if err := e.periodic(); err != nil {
		e.t.Fatalf("periodic: %v", err)
	}
}

// mustNothingStored asserts that no static role and no owner record exist.
func (e *staticEnv) mustNothingStored() {
	e.t.Helper()
	for _, prefix := range []string{staticRolePrefix, staticTokenPrefix} {
		keys, err := e.storage.Storage.List(context.Background(), prefix)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(keys) > 0 {
			e.t.Fatalf("stored under %s: %v", prefix, keys)
		}
	}
}

func dataString(resp *logical.Response, key string) string {
	s, _ := resp.Data[key].(string)
	return s
}

func parseRFC3339(t testing.TB, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("%v is not an RFC 3339 time: %v", v, err)
	}
	return tm
}

func containsAll(s string, want ...string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// staticStorage counts the storage round trips on static roles' keys (their
// entries, owner records and WAL entries of their rotations are all under
// these prefixes or read through a List of them).
type staticStorage struct {
	logical.Storage
	ops atomic.Int64
}

func isStaticKey(key string) bool {
	return strings.HasPrefix(key, staticRolePrefix) || strings.HasPrefix(key, staticTokenPrefix)
}

func (s *staticStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if isStaticKey(key) {
		s.ops.Add(1)
	}
	return s.Storage.Get(ctx, key)
}

func (s *staticStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if isStaticKey(e.Key) {
		s.ops.Add(1)
	}
	return s.Storage.Put(ctx, e)
}

func (s *staticStorage) Delete(ctx context.Context, key string) error {
	if isStaticKey(key) {
		s.ops.Add(1)
	}
	return s.Storage.Delete(ctx, key)
}

func (s *staticStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if isStaticKey(prefix) {
		s.ops.Add(1)
	}
	return s.Storage.List(ctx, prefix)
}
