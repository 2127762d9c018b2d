package tookentest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

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

// reserveKeyLocked handles the Idempotency-Key of a POST (other methods
// ignore it, as Stripe does). A malformed key is a 400. A key known for this
// caller answers at once: 409 while its first request is still processed, 422
// when method, path or body differ, else the first answer again with
// Idempotent-Replayed. A new key is reserved (in flight) until the answer is
// known. It reports whether the request goes on to the call.
func (s *Server) reserveKeyLocked(x *exchange, q *apiRequest) bool {
	if q.r.Method != http.MethodPost {
		return true
	}
	key, present, aerr := idempotencyKey(q.r)
	if aerr != nil {
		x.fail(aerr)
		return false
	}
	if !present {
		return true
	}
	x.idemKey = key
	fp, ok := fingerprint(q.r.Method, q.r.URL.Path, q.body)
	if !ok {
		return true // not JSON: validation answers 400, which is not remembered
	}
	id := idemKey{caller: q.caller.id, key: key}
	e := s.idem[id]
	if e != nil && q.clock.Sub(e.createdAt) >= IdempotencyWindow {
		delete(s.idem, id)
		e = nil
	}
	switch {
	case e == nil:
		q.key, q.keyID = &idemEntry{fingerprint: fp, createdAt: q.clock, inFlight: true}, id
		s.idem[id] = q.key
		return true
	case e.inFlight:
		x.fail(errConflict("a request with this Idempotency-Key is still being processed; retry later"))
	case e.fingerprint != fp:
		x.fail(errIdempotencyReused("Idempotency-Key was already used with another request (method, path or body differ)"))
	default:
		x.status, x.body, x.replayed = e.status, e.body, true
		x.header.Set("Idempotent-Replayed", "true")
		s.count("replayed")
	}
	return false
}

// settleKeyLocked keeps the answer for the reserved key when it is storable,
// and frees the key otherwise.
func (s *Server) settleKeyLocked(x *exchange, q *apiRequest) {
	if q.key == nil {
		return
	}
	if storable(x.status) {
		q.key.inFlight = false
		q.key.status, q.key.body = x.status, x.body
		return
	}
	delete(s.idem, q.keyID)
}

// storable reports whether an answer is kept for Idempotency-Key replays:
// outcomes of a processed call (success, forbidden, not found), not input
// errors, which the caller is expected to fix and retry with the same key.
func storable(status int) bool {
	return status < 300 || status == http.StatusForbidden || status == http.StatusNotFound
}

func idempotencyKey(r *http.Request) (string, bool, *apiError) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", false, nil
	}
	if len(vs) > 1 {
		return "", true, errInvalid("Idempotency-Key given more than once")
	}
	k := vs[0]
	if len(k) < 1 || len(k) > MaxIdempotencyKey {
		return "", true, errInvalid(fmt.Sprintf("Idempotency-Key must be 1 to %d printable characters", MaxIdempotencyKey))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", true, errInvalid(fmt.Sprintf("Idempotency-Key must be 1 to %d printable characters", MaxIdempotencyKey))
		}
	}
	return k, true, nil
}

// fingerprint identifies a request for Idempotency-Key replays: method, path
// and the body as canonical JSON. ok is false when the body is not JSON (the
// call then fails validation and nothing is remembered).
func fingerprint(method, path string, body []byte) ([32]byte, bool) {
	canon := []byte("{}")
	if len(bytes.TrimSpace(body)) > 0 {
		var v any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return [32]byte{}, false
		}
		if _, err := dec.Token(); err != io.EOF {
			return [32]byte{}, false
		}
		var err error
		if canon, err = json.Marshal(v); err != nil {
			return [32]byte{}, false
		}
	}
	h := sha256.New()
	h.Write([]byte(method + " " + path + "\n"))
	h.Write(canon)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, true
}
