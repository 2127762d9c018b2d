package tooken

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// Storage layout of a mount. Every storage call goes through the helpers
// below, which use these keys. WAL entries (framework.WALPrefix, node-local)
// are written by the SDK's framework.PutWAL.
const (
	// configPath holds the tookenConfig, root secret included (seal-wrapped).
	configPath = "config"
	// rolePrefix + name holds a roleEntry.
	rolePrefix = "role/"
	// issuedPrefix + issue key holds the issuanceRecord of one creds read.
	issuedPrefix = "issued/"
	// revokeQueuePrefix + token id holds a revokeQueueEntry.
	revokeQueuePrefix = "revoke-queue/"
)

// putJSON stores v as JSON at key. A failed Put is returned as is: callers
// say what they were storing.
func putJSON(ctx context.Context, s logical.Storage, key string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return s.Put(ctx, entry)
}

// getJSON decodes the JSON stored at key into out; false when there is none.
func getJSON(ctx context.Context, s logical.Storage, key string, out any) (bool, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	if entry == nil {
		return false, nil
	}
	if err := entry.DecodeJSON(out); err != nil {
		return false, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
}

// listKeys lists the keys under prefix; what says what they are, for the error.
func listKeys(ctx context.Context, s logical.Storage, prefix, what string) ([]string, error) {
	keys, err := s.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	return keys, nil
}

// readConfig is the stored config; nil when there is none.
func readConfig(ctx context.Context, s logical.Storage) (*tookenConfig, error) {
	cfg := new(tookenConfig)
	if ok, err := getJSON(ctx, s, configPath, cfg); !ok {
		return nil, err
	}
	return cfg, nil
}

// putConfig stores the config (seal-wrapped by the mount).
func putConfig(ctx context.Context, s logical.Storage, cfg *tookenConfig) error {
	if err := putJSON(ctx, s, configPath, cfg); err != nil {
		return fmt.Errorf("storing config: %w", err)
	}
	return nil
}

func deleteConfig(ctx context.Context, s logical.Storage) error {
	if err := s.Delete(ctx, configPath); err != nil {
		return fmt.Errorf("deleting config: %w", err)
	}
	return nil
}

// readRole is the stored role; nil when there is none.
func readRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	role := new(roleEntry)
	if ok, err := getJSON(ctx, s, rolePrefix+name, role); !ok {
		if err != nil {
			return nil, fmt.Errorf("role %q: %w", name, err)
		}
		return nil, nil
	}
	return role, nil
}

func putRole(ctx context.Context, s logical.Storage, name string, role *roleEntry) error {
	if err := putJSON(ctx, s, rolePrefix+name, role); err != nil {
		return fmt.Errorf("storing role %q: %w", name, err)
	}
	return nil
}

func deleteRole(ctx context.Context, s logical.Storage, name string) error {
	if err := s.Delete(ctx, rolePrefix+name); err != nil {
		return fmt.Errorf("deleting role %q: %w", name, err)
	}
	return nil
}

func listRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	return listKeys(ctx, s, rolePrefix, "roles")
}

// getIssuance is the issuance record of key; nil when there is none.
func getIssuance(ctx context.Context, s logical.Storage, key string) (*issuanceRecord, error) {
	rec := new(issuanceRecord)
	if ok, err := getJSON(ctx, s, issuedPrefix+key, rec); !ok {
		return nil, err
	}
	if rec.Key == "" {
		rec.Key = key
	}
	return rec, nil
}

func putIssuance(ctx context.Context, s logical.Storage, rec *issuanceRecord) error {
	return putJSON(ctx, s, issuedPrefix+rec.Key, rec)
}

func deleteIssuance(ctx context.Context, s logical.Storage, key string) error {
	return s.Delete(ctx, issuedPrefix+key)
}

func listIssuance(ctx context.Context, s logical.Storage) ([]string, error) {
	return listKeys(ctx, s, issuedPrefix, "issuance records")
}

// getQueueEntry is the revoke queue entry of a token id; nil when there is none.
func getQueueEntry(ctx context.Context, s logical.Storage, id string) (*revokeQueueEntry, error) {
	e := new(revokeQueueEntry)
	if ok, err := getJSON(ctx, s, revokeQueuePrefix+id, e); !ok {
		return nil, err
	}
	if e.TokenID == "" {
		e.TokenID = id
	}
	return e, nil
}

func putQueueEntry(ctx context.Context, s logical.Storage, e *revokeQueueEntry) error {
	return putJSON(ctx, s, revokeQueuePrefix+e.TokenID, e)
}

func deleteQueueEntry(ctx context.Context, s logical.Storage, id string) error {
	return s.Delete(ctx, revokeQueuePrefix+id)
}

func listQueue(ctx context.Context, s logical.Storage) ([]string, error) {
	return listKeys(ctx, s, revokeQueuePrefix, "the revoke queue")
}
