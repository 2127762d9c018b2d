package tooken

import (
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// cachedSystemView is the mount's system view with four answers kept for a
// second: the mount's default and max lease TTLs, the replication state and
// whether the mount is local. For an external plugin every system view call
// is a round trip to Vault, and a creds read made four (the framework asks
// the last two on every request, to refuse writes on a performance standby;
// the TTLs set the token's lifetime); under load the cache saves nearly all
// of them. Everything else goes to Vault each time.
//
// Vault tells a plugin nothing when the mount is tuned, so a tune reaches
// creds reads within systemViewMaxAge: in that second after lowering
// max_lease_ttl a token may carry the previous, longer upstream expiry
// (Vault still caps its lease and revokes the token when the lease ends).
// The periodic work reads the replication state uncached
// (WriteSafeReplicationState).
type cachedSystemView struct {
	logical.SystemView

	mu     sync.Mutex
	readAt time.Time // zero: nothing cached
	def    time.Duration
	max    time.Duration
	repl   consts.ReplicationState
	local  bool
}

const systemViewMaxAge = time.Second

func newCachedSystemView(sys logical.SystemView) *cachedSystemView {
	return &cachedSystemView{SystemView: sys}
}

// cached returns the four answers, asking Vault when they are older than
// systemViewMaxAge (on the wall clock, as leases are).
func (c *cachedSystemView) cached() (def, maxTTL time.Duration, repl consts.ReplicationState, local bool) {
	now := time.Now()
	c.mu.Lock()
	if !c.readAt.IsZero() && now.Sub(c.readAt) < systemViewMaxAge {
		defer c.mu.Unlock()
		return c.def, c.max, c.repl, c.local
	}
	c.mu.Unlock()
	sys := c.SystemView
	def, maxTTL, repl, local = sys.DefaultLeaseTTL(), sys.MaxLeaseTTL(), sys.ReplicationState(), sys.LocalMount()
	c.mu.Lock()
	c.readAt, c.def, c.max, c.repl, c.local = now, def, maxTTL, repl, local
	c.mu.Unlock()
	return def, maxTTL, repl, local
}

func (c *cachedSystemView) DefaultLeaseTTL() time.Duration {
	def, _, _, _ := c.cached()
	return def
}

func (c *cachedSystemView) MaxLeaseTTL() time.Duration {
	_, maxTTL, _, _ := c.cached()
	return maxTTL
}

func (c *cachedSystemView) ReplicationState() consts.ReplicationState {
	_, _, repl, _ := c.cached()
	return repl
}

func (c *cachedSystemView) LocalMount() bool {
	_, _, _, local := c.cached()
	return local
}

// WriteSafeReplicationState is the framework's check (can this instance
// write storage: not a performance standby, nor a secondary unless the mount
// is local) made on Vault's answers of now, not the cached ones: the
// periodic work and the rotation rollback ask it once a minute.
func (b *tookenBackend) WriteSafeReplicationState() bool {
	sys := b.System()
	if c, ok := sys.(*cachedSystemView); ok {
		sys = c.SystemView
	}
	repl := sys.ReplicationState()
	return (sys.LocalMount() || !repl.HasState(consts.ReplicationPerformanceSecondary)) &&
		!repl.HasState(consts.ReplicationDRSecondary) &&
		!repl.HasState(consts.ReplicationPerformanceStandby)
}
