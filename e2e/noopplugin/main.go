// Command noopplugin is a secrets engine plugin that does the Vault-side work of the tooken
// engine's creds read and lease revoke, and nothing else: the floor of what an external plugin
// costs through Vault, which the real-Vault benchmark (e2e/bench_test.go, `make bench`) measures
// the engine against.
//
// A read of creds/<role> stores an issuance record twice (pending, then confirmed, as the engine
// does around its upstream create) and answers a leased secret with the same data and internal
// data keys; the lease's revoke deletes the record. It makes no upstream call, reads no role from
// storage and keeps nothing in memory. Like the engine, one process serves every mount
// (plugin.ServeMultiplex).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

const (
	secretType   = "noop_token"
	issuedPrefix = "issued/"
	leaseTTL     = time.Hour
)

func main() {
	meta := &api.PluginAPIClientMeta{}
	if err := meta.FlagSet().Parse(os.Args[1:]); err != nil {
		fatal(err)
	}
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
	}); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}

type backend struct {
	*framework.Backend
	mountUUID string
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &backend{mountUUID: conf.BackendUUID}
	b.Backend = &framework.Backend{
		BackendType: logical.TypeLogical,
		Help:        "A no-op secrets engine: the storage work of a leased secret, nothing else.",
		Paths: []*framework.Path{{
			Pattern: "creds/" + framework.GenericNameRegex("name"),
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Role name (any)."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:                    b.credsRead,
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
		}},
		Secrets: []*framework.Secret{{
			Type:   secretType,
			Fields: map[string]*framework.FieldSchema{"token": {Type: framework.TypeString}},
			Revoke: b.revoke,
		}},
	}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// record has the shape and size of the engine's issuance record.
type record struct {
	Key       string            `json:"key"`
	State     string            `json:"state"`
	Role      string            `json:"role"`
	Name      string            `json:"name"`
	Scopes    []string          `json:"scopes"`
	ExpiresAt time.Time         `json:"expires_at"`
	Metadata  map[string]string `json:"metadata"`
	TokenID   string            `json:"token_id,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
}

func (b *backend) credsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	role := d.Get("name").(string)
	now := time.Now().UTC()
	key := randomHex(16)
	rec := &record{
		Key: key, State: "pending", Role: role, Name: "vault-" + role + "-" + key[:8],
		Scopes: []string{"deployments:write"}, ExpiresAt: now.Add(leaseTTL), CreatedAt: now,
		Metadata: map[string]string{"vault_role": role, "vault_mount_uuid": b.mountUUID, "vault_issue_key": key},
	}
	if err := put(ctx, req.Storage, rec); err != nil {
		return nil, err
	}
	rec.State, rec.TokenID = "confirmed", "tok_"+randomHex(8)
	if err := put(ctx, req.Storage, rec); err != nil {
		return nil, err
	}
	resp := b.Secret(secretType).Response(
		map[string]any{"token": "tok_test_" + randomHex(16), "token_id": rec.TokenID, "name": rec.Name,
			"scopes": rec.Scopes, "expires_at": rec.ExpiresAt.Format(time.RFC3339)},
		map[string]any{"token_id": rec.TokenID, "issue_key": key, "role": role,
			"expires_at": rec.ExpiresAt.Format(time.RFC3339), "issued_at": now.Format(time.RFC3339)},
	)
	resp.Secret.TTL, resp.Secret.MaxTTL = leaseTTL, leaseTTL
	return resp, nil
}

func (b *backend) revoke(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	key, _ := req.Secret.InternalData["issue_key"].(string)
	if key == "" {
		return nil, fmt.Errorf("lease has no issue_key")
	}
	return nil, req.Storage.Delete(ctx, issuedPrefix+key)
}

func put(ctx context.Context, s logical.Storage, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.Put(ctx, &logical.StorageEntry{Key: issuedPrefix + rec.Key, Value: b})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
