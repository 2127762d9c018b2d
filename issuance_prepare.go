package tooken

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The start-up pass of the issuance records, once per backend instance (a
// plugin start, a mount, a fail-over): before the first rollback, tidy, or
// creds read of a role with max_live_tokens, it
//
//  1. moves the records of the previous version (flat issued/<key>, whose
//     state went pending -> confirmed in place) into the current layout:
//     pending and abandoned ones to issued/pending/<key>, confirmed ones to
//     issued/live/<role>/<key>. One List of issued/ shows what is left to
//     move; once it shows none, the move is done for good (the current
//     version never writes a flat record). Leases and queue entries of the
//     previous version name no record key and are revoked by dropRecord,
//     which finds the record at either place;
//  2. reads the pending records (learnPending): those a crashed process left
//     behind, and the pending records of reads it confirmed but had not
//     swept yet. That is bounded by the read rate over one period and the
//     failures, never by the number of live leases.
//
// It is paid once: afterwards a periodic run reads only what is pending or
// due.

// prepareIssuance runs the start-up pass if this instance has not yet.
func (b *tookenBackend) prepareIssuance(ctx context.Context, s logical.Storage) error {
	r := b.issued
	if r.prepared.Load() {
		return nil
	}
	r.prepareMu.Lock()
	defer r.prepareMu.Unlock()
	if r.prepared.Load() {
		return nil
	}
	if err := b.migrateLegacy(ctx, s); err != nil {
		return fmt.Errorf("moving the issuance records of the previous version: %w", err)
	}
	if _, err := b.learnPending(ctx, s, b.now()); err != nil {
		return err
	}
	r.prepared.Store(true)
	return nil
}

// migrateLegacy moves every flat record into the current layout. A failure
// stops the pass; the next one goes on where it stopped.
func (b *tookenBackend) migrateLegacy(ctx context.Context, s logical.Storage) error {
	keys, err := listLegacy(ctx, s)
	if err != nil || len(keys) == 0 {
		return err
	}
	b.Logger().Info("moving the issuance records of the previous version to the current layout", "records", len(keys))
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.moveLegacy(ctx, s, key); err != nil {
			return err
		}
	}
	return nil
}

// moveLegacy moves one flat record. A confirmed one is written to its live
// key first and then its flat key is read again: a revoke of its lease
// (dropRecord) deletes the flat key before the live one, so if the flat key
// is gone by then the lease was revoked meanwhile and the live copy is
// deleted too; no record outlives its lease, none is lost.
func (b *tookenBackend) moveLegacy(ctx context.Context, s logical.Storage, key string) error {
	rec, err := getLegacy(ctx, s, key)
	if err != nil || rec == nil {
		return err
	}
	if rec.State != issueStateConfirmed {
		// No lease names a pending or abandoned record: a copy and a delete.
		if err := putIssuance(ctx, s, rec); err != nil {
			return err
		}
		return deleteLegacy(ctx, s, key)
	}
	live := &liveRecord{TokenID: rec.TokenID, ExpiresAt: rec.expiresAt(), IssuedAt: rec.CreatedAt}
	if err := putLive(ctx, s, rec.Role, key, live); err != nil {
		return err
	}
	still, err := getLegacy(ctx, s, key)
	if err != nil {
		return err
	}
	if still == nil {
		return deleteLive(ctx, s, rec.Role, key)
	}
	return deleteLegacy(ctx, s, key)
}

// learnPending lists the pending records and brings this node's view of
// them up to date: it forgets the keys whose record is gone (freeing their
// slot) and reads the records it does not know. It returns the keys the
// rollback must look at now, with their record when it was just read (nil:
// the rollback reads it).
func (b *tookenBackend) learnPending(ctx context.Context, s logical.Storage, now time.Time) (map[string]*issuanceRecord, error) {
	r := b.issued
	r.mu.Lock()
	r.gen++
	listGen := r.gen
	r.mu.Unlock()
	keys, err := listIssuance(ctx, s)
	if err != nil {
		return nil, err
	}
	due, unknown := r.sortListed(keys, listGen, now)
	for _, key := range unknown {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec, err := b.learnRecord(ctx, s, key)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			due[key] = rec
		}
	}
	return due, nil
}

// sortListed sorts the listed pending keys: those known and due now, and
// those this node does not know. Known keys that are no longer listed, and
// that no request held since the listing began, are forgotten.
func (r *issuanceRecords) sortListed(keys []string, listGen uint64, now time.Time) (due map[string]*issuanceRecord, unknown []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	listed := make(map[string]struct{}, len(keys))
	due = make(map[string]*issuanceRecord)
	var swept map[string]struct{} // the keys waiting for the sweep, when there are both
	if len(keys) > 0 && len(r.toSweep) > 0 {
		swept = make(map[string]struct{}, len(r.toSweep))
		for _, k := range r.toSweep {
			swept[k] = struct{}{}
		}
	}
	for _, key := range keys {
		listed[key] = struct{}{}
		p := r.pending[key]
		_, confirmed := swept[key]
		switch {
		case confirmed:
		case p == nil:
			unknown = append(unknown, key)
		case p.inFlight || p.claimed || now.Before(p.due):
		default:
			due[key] = nil
		}
	}
	for key, p := range r.pending {
		if _, ok := listed[key]; ok || p.inFlight || p.claimed || p.settled >= listGen {
			continue
		}
		r.adjustLocked(p.role, -1)
		delete(r.pending, key)
	}
	return due, unknown
}

// learnRecord reads a pending record this node did not know and notes it: a
// read confirmed by an earlier process (its live record exists) is left to
// the sweep; any other takes a slot of its role and is returned for the
// rollback.
func (b *tookenBackend) learnRecord(ctx context.Context, s logical.Storage, key string) (*issuanceRecord, error) {
	rec, err := getIssuance(ctx, s, key)
	if err != nil || rec == nil {
		return nil, err
	}
	confirmed := false
	if rec.State == issueStatePending && rec.Role != "" {
		live, err := getLive(ctx, s, rec.Role, key)
		if err != nil {
			return nil, err
		}
		confirmed = live != nil
	}
	r := b.issued
	done := r.changing(rec.Role)
	defer done()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending[key] != nil {
		return nil, nil // a request or claim took it meanwhile
	}
	if confirmed {
		r.toSweep = append(r.toSweep, key)
		return nil, nil
	}
	r.pending[key] = &pendingKey{role: rec.Role, abandoned: rec.State == issueStateAbandoned, settled: r.gen}
	r.adjustLocked(rec.Role, +1)
	return rec, nil
}
