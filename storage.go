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
	// configPath holds the tookenConfig, root secret included. Like all
	// storage it is encrypted by Vault's barrier; it is listed in
	// SealWrapStorage, so Vault Enterprise seal-wraps it too (community
	// Vault has no seal wrapping).
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

// putConfig stores the config.
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

// entries is one kind of entry stored under a prefix, one per id.
type entries[T any] struct {
	prefix     string
	what, many string // for errors: "role", "roles"
}

var (
	roleEntries        = entries[roleEntry]{prefix: rolePrefix, what: "role"}
	issuanceEntries    = entries[issuanceRecord]{prefix: issuedPrefix, what: "issuance record"}
	revokeQueueEntries = entries[revokeQueueEntry]{prefix: revokeQueuePrefix, what: "revoke queue entry"}
)

// get is the entry of id; nil when there is none.
func (k entries[T]) get(ctx context.Context, s logical.Storage, id string) (*T, error) {
	v := new(T)
	if ok, err := getJSON(ctx, s, k.prefix+id, v); !ok {
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", k.what, id, err)
		}
		return nil, nil
	}
	return v, nil
}

func (k entries[T]) put(ctx context.Context, s logical.Storage, id string, v *T) error {
	if err := putJSON(ctx, s, k.prefix+id, v); err != nil {
		return fmt.Errorf("storing %s %q: %w", k.what, id, err)
	}
	return nil
}

func (k entries[T]) delete(ctx context.Context, s logical.Storage, id string) error {
	if err := s.Delete(ctx, k.prefix+id); err != nil {
		return fmt.Errorf("deleting %s %q: %w", k.what, id, err)
	}
	return nil
}

func (k entries[T]) list(ctx context.Context, s logical.Storage) ([]string, error) {
	return listKeys(ctx, s, k.prefix, k.many)
}

// The typed helpers below are the ones the code calls.

func readRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	return roleEntries.get(ctx, s, name)
}

func putRole(ctx context.Context, s logical.Storage, name string, role *roleEntry) error {
	return roleEntries.put(ctx, s, name, role)
}

func deleteRole(ctx context.Context, s logical.Storage, name string) error {
	return roleEntries.delete(ctx, s, name)
}

func listRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	return roleEntries.list(ctx, s)
}

// getIssuance is the issuance record of key; nil when there is none.
func getIssuance(ctx context.Context, s logical.Storage, key string) (*issuanceRecord, error) {
	rec, err := issuanceEntries.get(ctx, s, key)
	if rec != nil && rec.Key == "" {
		rec.Key = key
	}
	return rec, err
}

func putIssuance(ctx context.Context, s logical.Storage, rec *issuanceRecord) error {
	return issuanceEntries.put(ctx, s, rec.Key, rec)
}

func deleteIssuance(ctx context.Context, s logical.Storage, key string) error {
	return issuanceEntries.delete(ctx, s, key)
}

func listIssuance(ctx context.Context, s logical.Storage) ([]string, error) {
	return issuanceEntries.list(ctx, s)
}

// getQueueEntry is the revoke queue entry of a token id; nil when there is none.
func getQueueEntry(ctx context.Context, s logical.Storage, id string) (*revokeQueueEntry, error) {
	e, err := revokeQueueEntries.get(ctx, s, id)
	if e != nil && e.TokenID == "" {
		e.TokenID = id
	}
	return e, err
}

func putQueueEntry(ctx context.Context, s logical.Storage, e *revokeQueueEntry) error {
	return revokeQueueEntries.put(ctx, s, e.TokenID, e)
}

func deleteQueueEntry(ctx context.Context, s logical.Storage, id string) error {
	return revokeQueueEntries.delete(ctx, s, id)
}

func listQueue(ctx context.Context, s logical.Storage) ([]string, error) {
	return revokeQueueEntries.list(ctx, s)
}
