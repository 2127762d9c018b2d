package tooken

import (
	"context"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/queue"
	"golang.org/x/time/rate"
)

// The static roles' schedule: the due work of every static role (its next
// scheduled rotation, and the next check of its token upstream) in a
// priority queue in memory (sdk/queue), so that the periodic function finds
// that nothing is due by looking at the earliest item, without a storage
// read or an upstream call. The queue is built from storage by the first
// periodic run (and again when the config points elsewhere), kept up to
// date by whatever stores a role on this node, and re-reads the roles that
// Invalidate names.
//
// Only the active node of the primary runs the periodic function, so only it
// rotates and checks. Due work is done by a few workers under one rate limit
// (well below Tooken's 100 requests per second per caller: every call is
// the root's), for what the periodic run has left of its minute; what is
// left waits for the next run.

const (
	// staticCheckInterval is how often each managed token is read upstream
	// (GET /tokens/{id}, as the root) to notice changes made outside Vault:
	// with the periodic function's minute, a token rotated behind Vault's
	// back is rotated again within about 5 minutes.
	staticCheckInterval = 3 * time.Minute
	// staticBusyRetry is how soon work is tried again when its role is
	// locked (a write, a rotation) or storage failed.
	staticBusyRetry = 30 * time.Second

	defaultStaticRate    = 50 // upstream calls per second of the background work
	defaultStaticWorkers = 8
	defaultStaticBudget  = 45 * time.Second // at most, of one periodic run

	// The static work of a periodic run ends at the latest staticRunEnd
	// after the run started (the other parts go first), so that the run
	// stays within Vault's one-minute interval; it gets at least
	// staticMinBudget, however long the other parts took.
	staticRunEnd    = 50 * time.Second
	staticMinBudget = 5 * time.Second
)

// staticWorkKind is what is due for a role.
type staticWorkKind string

const (
	workRotate staticWorkKind = "rotate"
	workCheck  staticWorkKind = "check"
)

// staticWork is one due piece of work, as the queue holds it (key
// "<kind>/<name>": role names have no slash).
type staticWork struct {
	kind staticWorkKind
	name string
	due  time.Time
}

func workKey(kind staticWorkKind, name string) string { return string(kind) + "/" + name }

func (w staticWork) item() *queue.Item {
	return &queue.Item{Key: workKey(w.kind, w.name), Priority: w.due.UnixNano()}
}

func workOf(it *queue.Item) staticWork {
	kind, name, _ := strings.Cut(it.Key, "/")
	return staticWork{kind: staticWorkKind(kind), name: name, due: time.Unix(0, it.Priority).UTC()}
}

// staticRoles is the static roles' state on this node: a lock per role and
// the schedule of their due work.
type staticRoles struct {
	locks roleLocks

	// mu guards loaded, dest, due and dirty.
	mu     sync.Mutex
	loaded bool              // due was built from storage
	dest   secretDestination // where the config pointed when due was built (zero: no config)
	due    *queue.PriorityQueue
	dirty  map[string]struct{} // roles changed on another node: re-read at the next run

	// Background upstream calls share limiter; a run has workers workers
	// and lasts at most budget. Tests change them.
	limiter *rate.Limiter
	workers int
	budget  time.Duration
}

func newStaticRoles() *staticRoles {
	return &staticRoles{
		locks:   roleLocks{m: make(map[string]*roleLock)},
		due:     queue.New(),
		dirty:   make(map[string]struct{}),
		limiter: rate.NewLimiter(defaultStaticRate, defaultStaticRate),
		workers: defaultStaticWorkers,
		budget:  defaultStaticBudget,
	}
}

// planLocked replaces the due work of role name by what entry r asks for:
// its next rotation and a check at checkAt, or nothing when the engine does
// not manage it (deleted, no secret yet, token gone, config elsewhere).
func (sr *staticRoles) planLocked(name string, r *staticRoleEntry, checkAt time.Time) {
	_, _ = sr.due.PopByKey(workKey(workRotate, name))
	_, _ = sr.due.PopByKey(workKey(workCheck, name))
	if r == nil || !r.managed(sr.dest) {
		return
	}
	_ = sr.due.Push(staticWork{kind: workRotate, name: name, due: r.nextRotation()}.item())
	_ = sr.due.Push(staticWork{kind: workCheck, name: name, due: checkAt}.item())
}

// changed is called by whoever stored role name as r (nil: deleted) on this
// node: its work is planned again, the next check one interval from now.
// Before the schedule is built there is nothing to change: the build reads
// storage.
func (sr *staticRoles) changed(name string, r *staticRoleEntry, now time.Time) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.loaded {
		sr.planLocked(name, r, now.Add(staticCheckInterval))
	}
}

// invalidated marks a role changed elsewhere, for the next run to re-read.
func (sr *staticRoles) invalidated(name string) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.loaded {
		sr.dirty[name] = struct{}{}
	}
}

// requeue puts work back, due at due.
func (sr *staticRoles) requeue(w staticWork, due time.Time) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	w.due = due
	_, _ = sr.due.PopByKey(workKey(w.kind, w.name))
	_ = sr.due.Push(w.item())
}

// refresh brings the schedule up to date with storage for the config's
// destination: all of it when it was never built or the config points
// elsewhere since, otherwise only the roles marked dirty. Nothing is read
// when neither is the case.
func (sr *staticRoles) refresh(ctx context.Context, s logical.Storage, dest secretDestination, now time.Time) error {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if !sr.loaded || !sr.dest.sameAs(dest) {
		names, err := listStaticRoles(ctx, s)
		if err != nil {
			return err
		}
		sr.due, sr.dest, sr.dirty = queue.New(), dest, make(map[string]struct{})
		for _, name := range names {
			sr.dirty[name] = struct{}{}
		}
	}
	for name := range sr.dirty {
		r, err := readStaticRole(ctx, s, name)
		if err != nil {
			return err
		}
		delete(sr.dirty, name)
		sr.planLocked(name, r, now.Add(checkSpread(name)))
	}
	sr.loaded = true
	return nil
}

// checkSpread spreads the first checks of the roles over one interval, by
// name, so that a start with many roles does not check them all at once.
func checkSpread(name string) time.Duration {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return time.Duration(h.Sum32()%uint32(staticCheckInterval/time.Second)) * time.Second
}

// popDue takes the work due at now off the queue, at most limit roles,
// earliest first: one piece per role, its rotation when both its rotation
// and its check are due (a rotation learns what a check would; the role's
// work is planned again after it).
func (sr *staticRoles) popDue(now time.Time, limit int) []staticWork {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	var out []staticWork
	seen := make(map[string]int)
	for len(out) < limit {
		it, err := sr.due.Pop()
		if err != nil {
			break // empty
		}
		if it.Priority > now.UnixNano() {
			_ = sr.due.Push(it)
			break
		}
		w := workOf(it)
		if i, ok := seen[w.name]; ok {
			if w.kind == workRotate {
				out[i].kind = workRotate
			}
			continue
		}
		seen[w.name] = len(out)
		out = append(out, w)
	}
	return out
}

// runStaticSchedule is the static roles' part of the periodic function,
// which started at start.
func (b *tookenBackend) runStaticSchedule(ctx context.Context, s logical.Storage, start time.Time) {
	dest, err := b.configDestination(ctx, s)
	if err != nil {
		b.Logger().Warn("static roles: reading the config", "error", err)
		return
	}
	sr := b.static
	if err := sr.refresh(ctx, s, dest, b.now()); err != nil {
		b.Logger().Warn("static roles: reading their schedule from storage", "error", err)
		return
	}
	budget := min(max(staticRunEnd-time.Since(start), staticMinBudget), sr.budget)
	work := sr.popDue(b.now(), int(float64(sr.limiter.Limit())*budget.Seconds())+sr.workers)
	if len(work) > 0 {
		b.doStaticWork(ctx, s, work, budget)
	}
}

// doStaticWork does the work with sr.workers workers within budget. Work
// that the budget (or the rate limit) leaves undone is put back as it was:
// the next run does it first.
func (b *tookenBackend) doStaticWork(ctx context.Context, s logical.Storage, work []staticWork, budget time.Duration) {
	sr := b.static
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	ch := make(chan staticWork)
	var wg sync.WaitGroup
	for range min(sr.workers, len(work)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range ch {
				b.doOneStatic(ctx, s, w)
			}
		}()
	}
	for i, w := range work {
		if ctx.Err() != nil {
			for _, left := range work[i:] {
				sr.requeue(left, left.due)
			}
			break
		}
		ch <- w
	}
	close(ch)
	wg.Wait()
}

// doOneStatic does one piece of due work under its role's lock, then plans
// the role's work again from what storage holds, its next check one
// interval ahead (whatever the work stored planned it already). A busy role
// (a write or a rotation running) or a storage failure is tried again soon.
func (b *tookenBackend) doOneStatic(ctx context.Context, s logical.Storage, w staticWork) {
	// Wait for the rate limit before taking the lock, so that a write of
	// the role never waits for the limit.
	if err := b.static.limiter.Wait(ctx); err != nil {
		b.static.requeue(w, w.due) // the run's budget is spent
		return
	}
	t := b.staticTarget(w.name)
	defer t.release()
	if !t.lock().TryLock() {
		b.static.requeue(w, b.now().Add(staticBusyRetry))
		return
	}
	defer t.lock().Unlock()
	var err error
	switch w.kind {
	case workRotate:
		err = b.rotateStaticIfDue(ctx, s, t)
	case workCheck:
		err = b.checkStatic(ctx, s, t)
	}
	if err == nil {
		// Even when the run's budget ended during the work.
		var r *staticRoleEntry
		if r, err = readStaticRole(context.WithoutCancel(ctx), s, w.name); err == nil {
			b.static.changed(w.name, r, b.now())
			return
		}
	}
	b.Logger().Warn("static role: reading it from storage failed; trying again soon", "role", w.name, "error", err)
	b.static.requeue(w, b.now().Add(staticBusyRetry))
}

// roleLocks is one mutex per static role name. A lock lives while someone
// holds or waits for it, so that the map is bounded by the work in flight,
// not by every name ever used.
type roleLocks struct {
	mu sync.Mutex
	m  map[string]*roleLock
}

type roleLock struct {
	sync.Mutex
	refs int
}

// acquire returns the lock of name (not locked), counted until release.
func (l *roleLocks) acquire(name string) *roleLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	rl := l.m[name]
	if rl == nil {
		rl = &roleLock{}
		l.m[name] = rl
	}
	rl.refs++
	return rl
}

func (l *roleLocks) release(name string, rl *roleLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rl.refs--; rl.refs == 0 {
		delete(l.m, name)
	}
}
