package tooken

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// countingSystemView counts the calls that would be round trips to Vault.
type countingSystemView struct {
	*logical.StaticSystemView
	calls atomic.Int64
}

func (c *countingSystemView) MaxLeaseTTL() time.Duration {
	c.calls.Add(1)
	return c.StaticSystemView.MaxLeaseTTL()
}

func (c *countingSystemView) DefaultLeaseTTL() time.Duration {
	c.calls.Add(1)
	return c.StaticSystemView.DefaultLeaseTTL()
}

func (c *countingSystemView) ReplicationState() consts.ReplicationState {
	c.calls.Add(1)
	return c.StaticSystemView.ReplicationState()
}

func (c *countingSystemView) LocalMount() bool {
	c.calls.Add(1)
	return c.StaticSystemView.LocalMount()
}

// The four answers a creds read needs come from Vault once a second at
// most, and a change reaches them within a second; the periodic work's
// check of the replication state goes to Vault every time.
func TestSystemView_Cached(t *testing.T) {
	static := &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	sys := &countingSystemView{StaticSystemView: static}
	conf := logical.TestBackendConfig()
	conf.System = sys
	conf.StorageView = &logical.InmemStorage{}
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := lb.(*tookenBackend)
	if _, ok := b.System().(*cachedSystemView); !ok {
		t.Fatalf("the backend's system view is a %T", b.System())
	}
	sys.calls.Store(0)
	start := time.Now()
	for i := 0; i < 200; i++ {
		_ = b.System().MaxLeaseTTL() + b.System().DefaultLeaseTTL()
		_, _ = b.System().ReplicationState(), b.System().LocalMount()
	}
	if n, most := sys.calls.Load(), 4*(int64(time.Since(start)/systemViewMaxAge)+1); n > most {
		t.Errorf("%d calls to Vault for 200 rounds, want at most %d", n, most)
	}

	static.MaxLeaseTTLVal = 2 * time.Hour // a tune
	deadline := time.Now().Add(3 * systemViewMaxAge)
	for b.System().MaxLeaseTTL() != 2*time.Hour {
		if time.Now().After(deadline) {
			t.Fatal("the tuned max TTL did not reach the backend")
		}
		time.Sleep(10 * time.Millisecond)
	}

	_ = b.System().ReplicationState() // cached: active
	static.ReplicationStateVal = consts.ReplicationPerformanceStandby
	if b.WriteSafeReplicationState() {
		t.Error("the periodic work's check used the cached replication state")
	}
}
