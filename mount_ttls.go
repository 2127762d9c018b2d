package tooken

import (
	"sync"
	"time"
)

// The mount's default and max lease TTLs, as the system view gives them,
// kept for a second. Each system view call is a round trip to Vault (gRPC
// for an external plugin), and a creds read needs both; under load the cache
// saves them on almost every read. Vault tells a plugin nothing when the
// mount is tuned, so a tune reaches creds reads within mountTTLsMaxAge:
// a token issued in that second after lowering max_lease_ttl may carry the
// previous, longer upstream expiry (Vault still caps its lease, and revokes
// the token when the lease ends).
const mountTTLsMaxAge = time.Second

// mountTTLs is the cache; its zero value is empty.
type mountTTLs struct {
	mu       sync.Mutex
	readAt   time.Time
	def, max time.Duration
}

// mountTTLs returns the mount's default and max lease TTLs, from the cache
// when it is younger than mountTTLsMaxAge (on the wall clock, as leases are).
func (b *tookenBackend) mountTTLs() (def, max time.Duration) {
	c := &b.ttls
	now := time.Now()
	c.mu.Lock()
	if !c.readAt.IsZero() && now.Sub(c.readAt) < mountTTLsMaxAge {
		def, max = c.def, c.max
		c.mu.Unlock()
		return def, max
	}
	c.mu.Unlock()
	sys := b.System()
	def, max = sys.DefaultLeaseTTL(), sys.MaxLeaseTTL()
	c.mu.Lock()
	c.readAt, c.def, c.max = now, def, max
	c.mu.Unlock()
	return def, max
}
