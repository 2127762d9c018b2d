package tooken

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/vault/sdk/logical"
)

// The requester's Vault identity, for name templates (.EntityName,
// .EntityMetadata, .AliasMetadata) and for a role's identity_metadata (keys
// copied into the token's metadata). This is how a token created for a CI
// job carries the job's repository and run: the jwt auth method's
// claim_mappings land in the metadata of the entity's alias.
//
// Vault does not tell a plugin which auth mount the request's token came
// from, so the metadata of all of the entity's aliases (in this namespace,
// as Vault returns them) is merged: where two aliases carry the same key,
// the alias whose auth mount accessor sorts first wins. An entity usually
// has one alias per auth method it logs in with.
//
// An alias's metadata is what its latest login set: a role shared by
// concurrent logins of one alias (say, two runs of one repository with the
// jwt role's user_claim = "repository") sees the metadata of whichever
// logged in last.

const (
	// maxIdentityKeys bounds the keys kept of each metadata map (Vault's own
	// limit on entity metadata is 64 pairs).
	maxIdentityKeys = 64
	// maxIdentityKeyLen bounds a metadata key kept (Vault's limit is 128).
	maxIdentityKeyLen = 128
)

// callerIdentity is the requester's entity, bounded: at most
// maxIdentityKeys keys of up to maxIdentityKeyLen bytes per map; values as
// Vault holds them (each use bounds them its own way).
type callerIdentity struct {
	entityName     string
	entityMetadata map[string]string
	aliasMetadata  map[string]string
}

// usesIdentity reports whether a creds read of this role needs the
// requester's entity: its name template reads an identity field, or it
// copies identity metadata. Only then is the entity fetched (a call to
// Vault per creds read).
func (r *cachedRole) usesIdentity() bool {
	return len(r.entry.IdentityMetadata) > 0 || (r.tmpl != nil && r.tmpl.usesIdentity)
}

// callerIdentity fetches the requester's entity. A request without one (a
// token with no entity, such as the root token) has an empty identity.
func (b *tookenBackend) callerIdentity(req *logical.Request) (callerIdentity, error) {
	if req.EntityID == "" {
		return callerIdentity{}, nil
	}
	e, err := b.System().EntityInfo(req.EntityID)
	if err != nil {
		return callerIdentity{}, fmt.Errorf("reading the requester's identity entity: %w", err)
	}
	return identityOf(e), nil
}

// identityOf keeps what the engine uses of an entity, bounded.
func identityOf(e *logical.Entity) callerIdentity {
	if e == nil {
		return callerIdentity{}
	}
	aliases := slices.Clone(e.Aliases)
	aliases = slices.DeleteFunc(aliases, func(a *logical.Alias) bool { return a == nil })
	slices.SortFunc(aliases, func(a, b *logical.Alias) int {
		return cmp.Or(cmp.Compare(a.MountAccessor, b.MountAccessor), cmp.Compare(a.Name, b.Name))
	})
	merged := map[string]string{}
	for _, a := range slices.Backward(aliases) { // the first alias is copied last: it wins
		maps.Copy(merged, boundedMetadata(a.Metadata))
	}
	return callerIdentity{
		entityName:     e.Name,
		entityMetadata: boundedMetadata(e.Metadata),
		aliasMetadata:  boundedMetadata(merged),
	}
}

// boundedMetadata keeps the first maxIdentityKeys keys (in sorted order) of
// at most maxIdentityKeyLen bytes.
func boundedMetadata(m map[string]string) map[string]string {
	keys := slices.Sorted(maps.Keys(m))
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "" || len(k) > maxIdentityKeyLen })
	out := make(map[string]string, min(len(keys), maxIdentityKeys))
	for _, k := range keys[:min(len(keys), maxIdentityKeys)] {
		out[k] = m[k]
	}
	return out
}

// lookup is the value of an identity metadata key: the aliases' first, then
// the entity's.
func (id callerIdentity) lookup(key string) (string, bool) {
	if v, ok := id.aliasMetadata[key]; ok {
		return v, true
	}
	v, ok := id.entityMetadata[key]
	return v, ok
}

// tokenMetadata is the token metadata a role's identity_metadata copies:
// each key found in the identity, its value cut to Tooken's limit in code
// points. A key the identity lacks is left out.
func (id callerIdentity) tokenMetadata(keys []string) map[string]string {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if v, ok := id.lookup(k); ok {
			out[k] = truncateRunes(v, maxMetadataValueLen)
		}
	}
	return out
}

// truncateRunes keeps the first n code points of s.
func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
