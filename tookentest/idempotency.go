package tookentest

import "time"

// idemKey scopes an Idempotency-Key to its caller token id (so a root keeps
// its keys across its own rotations).
type idemKey struct {
	caller string
	key    string
}

// idemEntry is the first answer given to a (caller, key), kept for
// IdempotencyWindow. In memory only: it holds secrets.
type idemEntry struct {
	fingerprint [32]byte // method, path and canonical body
	createdAt   time.Time
	inFlight    bool
	status      int
	body        []byte
}
