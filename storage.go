package tooken

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
	// issuedPrefix holds the issuance records of creds reads (issuance.go):
	// issuedPendingPrefix + issue key is a read's pending record, written
	// before its POST; issuedLivePrefix + role + "/" + issue key the live
	// record written once its token exists. Flat issuedPrefix + issue key
	// records are the previous version's layout, moved into these two by a
	// one-time pass (issuance_prepare.go).
	issuedPrefix        = "issued/"
	issuedPendingPrefix = issuedPrefix + "pending/"
	issuedLivePrefix    = issuedPrefix + "live/"
	// revokeQueuePrefix + token id holds a revokeQueueEntry.
	revokeQueuePrefix = "revoke-queue/"
	// staticRolePrefix + name holds a staticRoleEntry, the managed token's
	// current secret included (seal-wrapped).
	staticRolePrefix = "static-role/"
	// staticTokenPrefix + token id holds a staticTokenOwner: which static
	// role manages the token, so that two roles never rotate one token.
	staticTokenPrefix = "static-token/"
	// rotationPendingPrefix + a rotation's idempotency key holds the new
	// secret of a root rotation not yet stored in the config, until the
	// rotation settles (rotation_pending.go). Seal-wrapped like the config,
	// and local like the rotation's WAL entry.
	rotationPendingPrefix = "rotation-pending/"
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
	roleEntries        = entries[roleEntry]{prefix: rolePrefix, what: "role", many: "roles"}
	pendingEntries     = entries[issuanceRecord]{prefix: issuedPendingPrefix, what: "pending issuance record", many: "pending issuance records"}
	liveEntries        = entries[liveRecord]{prefix: issuedLivePrefix, what: "live issuance record", many: "live issuance records"}
	legacyEntries      = entries[issuanceRecord]{prefix: issuedPrefix, what: "issuance record", many: "issuance records"}
	revokeQueueEntries = entries[revokeQueueEntry]{prefix: revokeQueuePrefix, what: "revoke queue entry", many: "revoke queue entries"}
	staticRoleEntries  = entries[staticRoleEntry]{prefix: staticRolePrefix, what: "static role", many: "static roles"}
	staticTokenOwners  = entries[staticTokenOwner]{prefix: staticTokenPrefix, what: "static token owner", many: "static token owners"}
	unstoredSecrets    = entries[unstoredSecret]{prefix: rotationPendingPrefix, what: "kept rotation secret", many: "kept rotation secrets"}
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

// getIssuance is the pending record of an issue key; nil when there is none.
func getIssuance(ctx context.Context, s logical.Storage, key string) (*issuanceRecord, error) {
	rec, err := pendingEntries.get(ctx, s, key)
	if rec != nil && rec.Key == "" {
		rec.Key = key
	}
	return rec, err
}

// putIssuance stores a pending (or abandoned) record at its issue key.
func putIssuance(ctx context.Context, s logical.Storage, rec *issuanceRecord) error {
	return pendingEntries.put(ctx, s, rec.Key, rec)
}

func deleteIssuance(ctx context.Context, s logical.Storage, key string) error {
	return pendingEntries.delete(ctx, s, key)
}

// listIssuance lists the issue keys of the pending records.
func listIssuance(ctx context.Context, s logical.Storage) ([]string, error) {
	return pendingEntries.list(ctx, s)
}

// liveID is the id of a live record under issuedLivePrefix: role/key.
// Role names never hold a "/" (the roles/ pattern refuses it).
func liveID(role, key string) string { return role + "/" + key }

// getLive is the live record of role's issue key; nil when there is none.
func getLive(ctx context.Context, s logical.Storage, role, key string) (*liveRecord, error) {
	return liveEntries.get(ctx, s, liveID(role, key))
}

func putLive(ctx context.Context, s logical.Storage, role, key string, rec *liveRecord) error {
	return liveEntries.put(ctx, s, liveID(role, key), rec)
}

func deleteLive(ctx context.Context, s logical.Storage, role, key string) error {
	return liveEntries.delete(ctx, s, liveID(role, key))
}

// listLiveRoles lists the roles that have live records.
func listLiveRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	folders, err := liveEntries.list(ctx, s)
	for i, f := range folders {
		folders[i] = strings.TrimSuffix(f, "/")
	}
	return folders, err
}

// listLive lists the issue keys of role's live records.
func listLive(ctx context.Context, s logical.Storage, role string) ([]string, error) {
	return listKeys(ctx, s, issuedLivePrefix+role+"/", fmt.Sprintf("live issuance records of role %q", role))
}

// getLegacy is a record of the previous layout (issuedPrefix + key); nil
// when there is none.
func getLegacy(ctx context.Context, s logical.Storage, key string) (*issuanceRecord, error) {
	rec, err := legacyEntries.get(ctx, s, key)
	if rec != nil && rec.Key == "" {
		rec.Key = key
	}
	return rec, err
}

func deleteLegacy(ctx context.Context, s logical.Storage, key string) error {
	return legacyEntries.delete(ctx, s, key)
}

// listLegacy lists the issue keys of the previous layout's records (the
// folders of the current one left out).
func listLegacy(ctx context.Context, s logical.Storage) ([]string, error) {
	keys, err := legacyEntries.list(ctx, s)
	return slices.DeleteFunc(keys, func(k string) bool { return strings.HasSuffix(k, "/") }), err
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

func readStaticRole(ctx context.Context, s logical.Storage, name string) (*staticRoleEntry, error) {
	return staticRoleEntries.get(ctx, s, name)
}

func putStaticRole(ctx context.Context, s logical.Storage, name string, role *staticRoleEntry) error {
	return staticRoleEntries.put(ctx, s, name, role)
}

func deleteStaticRole(ctx context.Context, s logical.Storage, name string) error {
	return staticRoleEntries.delete(ctx, s, name)
}

func listStaticRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	return staticRoleEntries.list(ctx, s)
}

// staticTokenOwner is the static role that manages a token.
type staticTokenOwner struct {
	Role string `json:"role"`
}

func readStaticTokenOwner(ctx context.Context, s logical.Storage, tokenID string) (*staticTokenOwner, error) {
	return staticTokenOwners.get(ctx, s, tokenID)
}

func putStaticTokenOwner(ctx context.Context, s logical.Storage, tokenID, role string) error {
	return staticTokenOwners.put(ctx, s, tokenID, &staticTokenOwner{Role: role})
}

func deleteStaticTokenOwner(ctx context.Context, s logical.Storage, tokenID string) error {
	return staticTokenOwners.delete(ctx, s, tokenID)
}

// getUnstoredSecret is the kept secret of a rotation key; nil when there is none.
func getUnstoredSecret(ctx context.Context, s logical.Storage, key string) (*unstoredSecret, error) {
	return unstoredSecrets.get(ctx, s, key)
}

func putUnstoredSecret(ctx context.Context, s logical.Storage, key string, u *unstoredSecret) error {
	return unstoredSecrets.put(ctx, s, key, u)
}

func deleteUnstoredSecret(ctx context.Context, s logical.Storage, key string) error {
	return unstoredSecrets.delete(ctx, s, key)
}
