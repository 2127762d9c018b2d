package tooken

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// errNotConfigured is returned when the mount has no config yet.
var errNotConfigured = errors.New("the Tooken secrets engine is not configured: write to the config path first")

// tookenBackend is one mount of the secrets engine. One plugin process serves many
// mounts (ServeMultiplex): everything lives here, nothing in package state.
type tookenBackend struct {
	*framework.Backend

	// lock guards config, configLoaded, client and configGen.
	lock         sync.RWMutex
	config       *tookenConfig // cached copy; nil with configLoaded = no config stored
	configLoaded bool
	configGen    uint64 // bumped on every invalidation, so a slow load cannot cache stale data
	client       *tookenapi.Client

	// roleLock guards roles and roleGen.
	roleLock sync.RWMutex
	roles    map[string]*cachedRole
	roleGen  uint64

	// rot is the root rotation state (rotation.go).
	rot rootRotation

	// guard is the orphan bookkeeping (issuance records, revoke queue, tidy).
	guard *orphanGuard
}

var _ logical.Factory = Factory

// Factory builds and sets up one backend for a mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := backend()
	b.guard.mountUUID = conf.BackendUUID // the mount's id in token metadata (vault_mount_uuid)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func backend() *tookenBackend {
	b := &tookenBackend{roles: make(map[string]*cachedRole), guard: newOrphanGuard()}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configPath},
			LocalStorage:    []string{framework.WALPrefix},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			[]*framework.Path{pathCreds(b)},
			[]*framework.Path{pathRotateRoot(b)},
			pathTidy(b),
		),
		Secrets:        []*framework.Secret{secretToken(b)},
		Invalidate:     b.invalidate,
		Clean:          b.clean,
		PeriodicFunc:   b.periodicFunc,
		RunningVersion: Version,

		// One dispatcher for every WAL kind (wal.go).
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge,
	}
	return b
}

// invalidate drops cached copies of keys changed elsewhere (another node, or a
// replicated write).
func (b *tookenBackend) invalidate(_ context.Context, key string) {
	switch {
	case key == configPath:
		b.resetConfig()
	case strings.HasPrefix(key, rolePrefix):
		b.forgetRole(strings.TrimPrefix(key, rolePrefix))
	}
}

// clean runs when the mount is unmounted or the plugin stops.
func (b *tookenBackend) clean(_ context.Context) {
	b.resetConfig()
}

// periodicFunc is the hook for periodic work: scheduled root rotation, the
// rollback of unfinished creds reads and the revoke queue. Vault calls it
// about once a minute. All of it writes storage and changes things upstream,
// so it runs only where storage is writable: not on a performance standby or
// secondary (the active node of the primary does it), as the SDK asks.
func (b *tookenBackend) periodicFunc(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	b.rotateRootIfDue(ctx, req)
	return b.periodicOrphanWork(ctx, req.Storage)
}

// resetConfig forgets the cached config and closes the client.
func (b *tookenBackend) resetConfig() {
	b.lock.Lock()
	defer b.lock.Unlock()
	b.configGen++
	b.config = nil
	b.configLoaded = false
	if b.client != nil {
		b.client.Close()
		b.client = nil
	}
}

// getConfig returns the config, from the cache when warm. nil, nil means no
// config is stored. The result is shared: callers must not modify it.
func (b *tookenBackend) getConfig(ctx context.Context, s logical.Storage) (*tookenConfig, error) {
	b.lock.RLock()
	if b.configLoaded {
		cfg := b.config
		b.lock.RUnlock()
		return cfg, nil
	}
	gen := b.configGen
	b.lock.RUnlock()

	cfg, err := readConfig(ctx, s)
	if err != nil {
		return nil, err
	}

	b.lock.Lock()
	defer b.lock.Unlock()
	if b.configLoaded {
		return b.config, nil
	}
	if b.configGen == gen {
		b.config = cfg
		b.configLoaded = true
	}
	return cfg, nil
}

// getClient returns the API client for the stored config, building it once.
// It returns errNotConfigured when there is no config.
func (b *tookenBackend) getClient(ctx context.Context, s logical.Storage) (*tookenapi.Client, error) {
	b.lock.RLock()
	c := b.client
	b.lock.RUnlock()
	if c != nil {
		return c, nil
	}

	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errNotConfigured
	}

	b.lock.Lock()
	defer b.lock.Unlock()
	if b.client != nil {
		return b.client, nil
	}
	c, err = tookenapi.New(cfg.clientOptions(b.Logger()))
	if err != nil {
		return nil, fmt.Errorf("building Tooken client: %w", err)
	}
	// Cache only if the config we built from is still the current one.
	if b.configLoaded && b.config == cfg {
		b.client = c
	}
	return c, nil
}

// cachedRole is a role with its parsed name template.
type cachedRole struct {
	entry *roleEntry
	tmpl  *nameTemplate
}

// getRole returns the role, from the cache when warm; nil, nil when unknown.
// The result is shared: callers must not modify it.
func (b *tookenBackend) getRole(ctx context.Context, s logical.Storage, name string) (*cachedRole, error) {
	b.roleLock.RLock()
	r, ok := b.roles[name]
	gen := b.roleGen
	b.roleLock.RUnlock()
	if ok {
		return r, nil
	}

	entry, err := readRole(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if entry == nil {
		return nil, nil // unknown roles are not cached: names are caller-chosen
	}
	tmpl, err := parseNameTemplate(entry.NameTemplate)
	if err != nil {
		return nil, fmt.Errorf("role %q: stored name_template: %w", name, err)
	}
	r = &cachedRole{entry: entry, tmpl: tmpl}

	b.roleLock.Lock()
	defer b.roleLock.Unlock()
	if cur, ok := b.roles[name]; ok {
		return cur, nil
	}
	if b.roleGen == gen {
		b.roles[name] = r
	}
	return r, nil
}

// forgetRole drops a role from the cache.
func (b *tookenBackend) forgetRole(name string) {
	b.roleLock.Lock()
	defer b.roleLock.Unlock()
	b.roleGen++
	delete(b.roles, name)
}

const backendHelp = `
The Tooken secrets engine issues Tooken API tokens on demand.

Write the root Tooken token to "config", define roles under "roles/<name>"
with the scopes their tokens get, and read "creds/<name>" for a fresh token
under a Vault lease. The token dies upstream when the lease is revoked or
expires, and never outlives the lease's max TTL.
`
