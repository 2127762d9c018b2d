package tooken

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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

	// mountUUID is the mount's backend UUID (BackendConfig), stable for the
	// mount's life: every token carries it as vault_mount_uuid metadata, and
	// tidy finds this mount's tokens by it. (The mount accessor would read
	// better, but Vault 1.14 sets req.MountAccessor only after the backend
	// call returns.)
	mountUUID string

	// clock is the time of the rotation schedule and of the no-orphan
	// machinery (rollback ages, queue backoff, tidy); tests replace it.
	// Leases are computed on the wall clock, as Vault's lease manager is.
	clock func() time.Time

	// configMu serialises everything that reads the stored config and
	// writes it back: config writes and deletes, root rotations, their
	// rollback and their failure records.
	configMu sync.Mutex

	// lock guards config, configLoaded, configGen, client, clientConn and
	// clientDest.
	lock         sync.RWMutex
	config       *tookenConfig // cached copy; nil with configLoaded = no config stored
	configLoaded bool
	configGen    uint64 // bumped on every install, so a slow load cannot cache stale data
	client       *tookenapi.Client
	clientConn   connection        // what client was built for
	clientDest   secretDestination // clientConn's destination (custody.go)

	// roleLock guards roles and roleGen.
	roleLock sync.RWMutex
	roles    map[string]*cachedRole
	roleGen  uint64

	// pending holds the new secrets that rotations could store neither in
	// the config nor as kept secrets (rotation_pending.go).
	pending pendingSecrets

	issued *issuanceRecords // issuance.go
	queue  *revokeQueue     // revoke_queue.go
	tidy   *tidyState       // tidy.go
	static *staticRoles     // static_schedule.go

	// tokenLocks is one lock per Tooken token id, held from the custody
	// checks of a static import or a config write to the claim they store
	// (custody_mark.go).
	tokenLocks roleLocks

	periodicMu sync.Mutex // one periodic run at a time

	// stop ends background work (a sweep started early, issuance_rollback.go)
	// when the backend is cleaned up.
	stop     context.Context
	stopWork context.CancelFunc

	routes []route // the Paths with their compiled patterns (request.go)
}

var _ logical.Factory = Factory

// Factory builds and sets up one backend for a mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := backend()
	b.mountUUID = conf.BackendUUID
	c := *conf
	c.System = newCachedSystemView(conf.System) // system_view.go
	if err := b.Setup(ctx, &c); err != nil {
		return nil, err
	}
	return b, nil
}

func backend() *tookenBackend {
	b := &tookenBackend{
		clock:  time.Now,
		roles:  make(map[string]*cachedRole),
		issued: newIssuanceRecords(),
		queue:  newRevokeQueue(),
		tidy:   newTidyState(),
		static: newStaticRoles(),

		tokenLocks: roleLocks{m: make(map[string]*roleLock)},
	}
	b.stop, b.stopWork = context.WithCancel(context.Background())
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configPath, staticRolePrefix, rotationPendingPrefix},
			LocalStorage:    []string{framework.WALPrefix, rotationPendingPrefix},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			[]*framework.Path{pathCreds(b)},
			[]*framework.Path{pathRotateRoot(b)},
			pathTidy(b),
			pathStaticRoles(b),
			[]*framework.Path{pathStaticCreds(b), pathRotateRole(b)},
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
	b.routes = newRoutes(b.Backend.Paths)
	return b
}

// now is the backend's clock.
func (b *tookenBackend) now() time.Time { return b.clock() }

// invalidate drops cached copies of keys changed elsewhere (another node, or a
// replicated write).
func (b *tookenBackend) invalidate(_ context.Context, key string) {
	switch {
	case key == configPath:
		b.installConfig(nil)
	case strings.HasPrefix(key, rolePrefix):
		b.forgetRole(strings.TrimPrefix(key, rolePrefix))
	case strings.HasPrefix(key, staticRolePrefix):
		b.static.invalidated(strings.TrimPrefix(key, staticRolePrefix))
	}
}

// clean runs when the mount is unmounted or the plugin stops.
func (b *tookenBackend) clean(_ context.Context) {
	b.stopWork()
	b.installConfig(nil)
}

// periodicFunc is the hook for periodic work: finishing interrupted root
// rotations, scheduled root rotation, the static roles' due rotations and
// checks, the rollback of unfinished creds reads and the revoke queue. Vault
// calls it about once a minute. All of it writes storage and changes things
// upstream, so it runs only where storage is writable: not on a performance
// standby or secondary (the active node of the primary does it), as the SDK
// asks. One run at a time; each part has a budget.
func (b *tookenBackend) periodicFunc(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	if !b.periodicMu.TryLock() {
		return nil
	}
	defer b.periodicMu.Unlock()
	start := time.Now()
	b.finishInterruptedRotations(ctx, req.Storage, b.rootRotation())
	b.rotateRootIfDue(ctx, req.Storage)
	_, rerr := b.rollbackIssuance(ctx, req.Storage)
	dctx, cancel := context.WithTimeout(ctx, max(drainRunEnd-time.Since(start), minDrainTime))
	_, derr := b.drainRevokeQueue(dctx, req.Storage)
	cancel()
	b.runStaticSchedule(ctx, req.Storage, start) // last: it takes what the run has left
	if errors.Is(rerr, errNotConfigured) {
		rerr = nil
	}
	if errors.Is(derr, errNotConfigured) {
		derr = nil
	}
	return errors.Join(rerr, derr)
}

// drainRunEnd is how far into a periodic run the revoke queue's drain may
// go (within its own budget); minDrainTime is what the drain gets when the
// parts before it took longer. With the static roles' share after it
// (staticRunEnd, staticMinBudget), a run stays within Vault's minute unless
// a rotation before them took long.
const (
	drainRunEnd  = 45 * time.Second
	minDrainTime = 5 * time.Second
)

// installConfig is the one writer of the config cache. It makes cfg the
// cached config, or forgets the cache with nil (the next use reads storage).
// The client is kept when cfg connects to Tooken as it does (same URL, CA,
// timeout, retries) and then only switches to cfg's secret: requests in
// flight keep the old one (a rotated root's stays valid for the grace), new
// ones and retries use the new one. Otherwise the client is closed and the
// next use builds one for cfg, so a secret is never sent to another URL.
func (b *tookenBackend) installConfig(cfg *tookenConfig) {
	b.lock.Lock()
	defer b.lock.Unlock()
	b.configGen++
	b.config = cfg
	b.configLoaded = cfg != nil
	switch {
	case b.client == nil:
	case cfg != nil && cfg.connection() == b.clientConn:
		b.client.SetSecret(cfg.Token)
	default:
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
	c, _, err := b.getClientAt(ctx, s)
	return c, err
}

// getClientAt is getClient with the destination the client calls (the
// config's url and CA it was built for): what a token it creates is
// recorded with, and what a revoke of a token must match (a token lives at
// the Tooken that issued it; another one's 404 says nothing of it).
func (b *tookenBackend) getClientAt(ctx context.Context, s logical.Storage) (*tookenapi.Client, secretDestination, error) {
	b.lock.RLock()
	c, dest := b.client, b.clientDest
	b.lock.RUnlock()
	if c != nil {
		return c, dest, nil
	}

	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, dest, err
	}
	if cfg == nil {
		return nil, dest, errNotConfigured
	}

	b.lock.Lock()
	defer b.lock.Unlock()
	if b.client != nil {
		return b.client, b.clientDest, nil
	}
	c, err = tookenapi.New(cfg.clientOptions(b.Logger()))
	if err != nil {
		return nil, dest, fmt.Errorf("building Tooken client: %w", err)
	}
	// Cache only if the config we built from is still the current one.
	dest = cfg.destination()
	if b.configLoaded && b.config == cfg {
		b.client, b.clientConn, b.clientDest = c, cfg.connection(), dest
	}
	return c, dest, nil
}

// connect returns a client for cfg's connection, authenticated with cfg's
// secret: over the mount's client's transport when that connects the same
// way (a rotation, a config write that keeps the URL), otherwise a client of
// its own (the first config, a changed URL or CA). done releases what
// connect built.
func (b *tookenBackend) connect(ctx context.Context, s logical.Storage, cfg *tookenConfig) (c *tookenapi.Client, done func(), err error) {
	if cached, err := b.getClient(ctx, s); err == nil {
		b.lock.RLock()
		same := cached == b.client && b.clientConn == cfg.connection()
		b.lock.RUnlock()
		if same {
			return cached.WithSecret(cfg.Token), func() {}, nil
		}
	}
	c, err = tookenapi.New(cfg.clientOptions(b.Logger()))
	if err != nil {
		return nil, nil, fmt.Errorf("building Tooken client: %w", err)
	}
	return c, c.Close, nil
}

// cachedRole is a role with its parsed name template. A stored template
// that this version refuses (written by an older one) leaves tmpl nil and
// tmplErr set: creds reads of the role then fail with that error, renewals
// and revokes of its leases work.
type cachedRole struct {
	entry   *roleEntry
	tmpl    *nameTemplate
	tmplErr error
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
	tmpl, tmplErr := parseNameTemplate(entry.NameTemplate)
	r = &cachedRole{entry: entry, tmpl: tmpl, tmplErr: tmplErr}

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

For a token that must keep its identity, import it as a static role under
"static-roles/<name>": the engine keeps its secret, rotates it on a schedule
(or at "rotate-role/<name>"), and serves the current secret at
"static-creds/<name>".
`
