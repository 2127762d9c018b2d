package tooken

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// entitySystemView answers EntityInfo with one entity, as Vault's identity
// store would, and counts the calls (each is a gRPC call to Vault).
type entitySystemView struct {
	*logical.StaticSystemView
	entity *logical.Entity
	calls  atomic.Int64
}

func (v *entitySystemView) static() *logical.StaticSystemView { return v.StaticSystemView }

func (v *entitySystemView) EntityInfo(id string) (*logical.Entity, error) {
	v.calls.Add(1)
	if v.entity == nil || id != v.entity.ID {
		return nil, nil
	}
	return v.entity, nil
}

func withEntity(v *entitySystemView) envOption {
	return func(c *logical.BackendConfig) {
		v.StaticSystemView = c.System.(*logical.StaticSystemView)
		c.System = v
	}
}

// ciEntity is the entity a GitHub Actions job logs in as through the jwt auth
// method: claim_mappings land in its alias's metadata.
func ciEntity() *logical.Entity {
	return &logical.Entity{
		ID:       "ent-1",
		Name:     "entity_1234",
		Metadata: map[string]string{"team": "platform"},
		Aliases: []*logical.Alias{{
			MountType:     "jwt",
			MountAccessor: "auth_jwt_abcd",
			Name:          "acme/web",
			Metadata: map[string]string{
				"repository": "acme/web",
				"run_id":     "9001",
				"workflow":   "Deploy to prod",
				"long":       strings.Repeat("é", 600),
			},
		}},
	}
}

func (e *testEnv) readCredsAs(role, entityID string, data map[string]any) (*logical.Response, error) {
	req := e.request(logical.ReadOperation, "creds/"+role, data)
	req.EntityID = entityID
	return e.handle(req)
}

func TestCreds_Identity(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	view := &entitySystemView{entity: ciEntity()}
	e := getTestBackend(t, withEntity(view))
	e.configure(srv, nil)
	e.writeRole("gh", map[string]any{
		"scopes":            "deployments:write",
		"name_template":     "gh-{{ .AliasMetadata.repository }}-run{{ .AliasMetadata.run_id }}-{{ random 4 }}",
		"identity_metadata": "repository,run_id,workflow,team,long,missing",
		"metadata":          map[string]any{"env": "prod"},
	})
	e.writeRole("plain", map[string]any{"scopes": "deployments:write"})

	t.Run("name and metadata carry the identity", func(t *testing.T) {
		view.calls.Store(0)
		resp := must(t)(e.readCredsAs("gh", "ent-1", nil))
		name := resp.Data["name"].(string)
		if !strings.HasPrefix(name, "gh-acme-web-run9001-") || len(name) != len("gh-acme-web-run9001-")+4 {
			t.Errorf("name %q", name)
		}
		rec, _ := srv.Token(resp.Data["token_id"].(string))
		for k, want := range map[string]string{
			"repository": "acme/web", "run_id": "9001", "workflow": "Deploy to prod", // text kept
			"team": "platform", // the entity's own metadata
			"env":  "prod", "vault_role": "gh",
		} {
			if rec.Metadata[k] != want {
				t.Errorf("metadata %s = %q, want %q", k, rec.Metadata[k], want)
			}
		}
		if v := rec.Metadata["long"]; utf8.RuneCountInString(v) != maxMetadataValueLen || !strings.HasPrefix(strings.Repeat("é", 600), v) {
			t.Errorf("long value: %d code points", utf8.RuneCountInString(v))
		}
		if _, ok := rec.Metadata["missing"]; ok {
			t.Error("a key the identity lacks is set")
		}
		if n := view.calls.Load(); n != 1 {
			t.Errorf("%d EntityInfo calls, want 1", n)
		}
	})

	t.Run("a requester without an entity", func(t *testing.T) {
		view.calls.Store(0)
		resp := must(t)(e.readCredsAs("gh", "", nil))
		if name := resp.Data["name"].(string); !strings.HasPrefix(name, "gh--run-") {
			t.Errorf("name %q", name)
		}
		rec, _ := srv.Token(resp.Data["token_id"].(string))
		for _, k := range []string{"repository", "run_id", "workflow", "team"} {
			if _, ok := rec.Metadata[k]; ok {
				t.Errorf("metadata %s set without an identity", k)
			}
		}
		if n := view.calls.Load(); n != 0 {
			t.Errorf("%d EntityInfo calls without an entity id", n)
		}
	})

	t.Run("an entity Vault no longer has", func(t *testing.T) {
		resp := must(t)(e.readCredsAs("gh", "ent-gone", nil))
		if name := resp.Data["name"].(string); !strings.HasPrefix(name, "gh--run-") {
			t.Errorf("name %q", name)
		}
	})

	t.Run("a role that does not use the identity does not fetch it", func(t *testing.T) {
		view.calls.Store(0)
		must(t)(e.readCredsAs("plain", "ent-1", nil))
		if n := view.calls.Load(); n != 0 {
			t.Errorf("%d EntityInfo calls for a role without identity", n)
		}
	})

	t.Run("metadata only", func(t *testing.T) {
		e.writeRole("md", map[string]any{"scopes": "deployments:write", "identity_metadata": "repository"})
		view.calls.Store(0)
		resp := must(t)(e.readCredsAs("md", "ent-1", nil))
		rec, _ := srv.Token(resp.Data["token_id"].(string))
		if rec.Metadata["repository"] != "acme/web" || view.calls.Load() != 1 {
			t.Errorf("metadata %v, %d calls", rec.Metadata, view.calls.Load())
		}
	})
}

// Several aliases: their metadata is merged, the alias of the auth mount
// whose accessor sorts first winning a key both carry; the entity's metadata
// stays apart and comes second for identity_metadata.
func TestIdentity_Merge(t *testing.T) {
	id := identityOf(&logical.Entity{
		Name:     "e",
		Metadata: map[string]string{"team": "entity-team", "only_entity": "x"},
		Aliases: []*logical.Alias{
			{MountAccessor: "auth_b", Metadata: map[string]string{"repository": "b/b", "only_b": "b", "team": "alias-team"}},
			nil,
			{MountAccessor: "auth_a", Metadata: map[string]string{"repository": "a/a"}},
		},
	})
	got := id.tokenMetadata([]string{"repository", "only_b", "team", "only_entity", "nope"})
	want := map[string]string{"repository": "a/a", "only_b": "b", "team": "alias-team", "only_entity": "x"}
	if mustJSON(t, got) != mustJSON(t, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if identityOf(nil).entityName != "" {
		t.Error("nil entity")
	}

	// Bounded: keys past the limit or too long are dropped.
	md := map[string]string{strings.Repeat("k", maxIdentityKeyLen+1): "long key"}
	for i := range 2 * maxIdentityKeys {
		md[fmt.Sprintf("k%03d", i)] = "v"
	}
	b := boundedMetadata(md)
	if len(b) != maxIdentityKeys {
		t.Errorf("%d keys kept", len(b))
	}
	for k := range b {
		if len(k) > maxIdentityKeyLen {
			t.Errorf("key of %d bytes kept", len(k))
		}
	}
}
