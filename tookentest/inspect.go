package tookentest

import "time"

// TokenRecord is the emulator's view of a token, for tests.
type TokenRecord struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Scopes    []string          `json:"scopes"`
	Metadata  map[string]string `json:"metadata"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt *time.Time        `json:"expires_at"`
	RevokedAt *time.Time        `json:"revoked_at"`
	RotatedAt *time.Time        `json:"rotated_at"`
	CreatedBy string            `json:"created_by"` // id of the caller token; "" for the bootstrap root, AdminCreator for CreateToken's
	State     string            `json:"state"`      // "live", "revoked", "expired"
	// Also recorded:
	LastUsedAt      *time.Time `json:"last_used_at"`
	PreviousSecrets int        `json:"previous_secrets"` // old secrets still in their rotation grace
}

// RequestRecord is one API request as the request log keeps it.
type RequestRecord struct {
	Time           time.Time `json:"time"`
	Method         string    `json:"method"`
	Path           string    `json:"path"` // secrets redacted
	Status         int       `json:"status"`
	CallerID       string    `json:"caller_id"`
	IdempotencyKey string    `json:"idempotency_key"`
	Replayed       bool      `json:"replayed"`
	Fault          string    `json:"fault"` // "flt_N:status=503", "flt_N:drop", ... or ""
	// Also recorded:
	RequestID string        `json:"request_id"`
	Duration  time.Duration `json:"duration_ns"`
	Dropped   bool          `json:"dropped"` // the answer was never sent
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := *t
	return &v
}

func (t *token) record(now time.Time) TokenRecord {
	md := make(map[string]string, len(t.metadata))
	for k, v := range t.metadata {
		md[k] = v
	}
	grace := 0
	for _, p := range t.previous {
		if now.Before(p.expiresAt) && t.revokedAt == nil {
			grace++
		}
	}
	return TokenRecord{
		ID: t.id, Name: t.name, Scopes: append([]string(nil), t.scopes...), Metadata: md,
		CreatedAt: t.createdAt, ExpiresAt: cloneTime(t.expiresAt), RevokedAt: cloneTime(t.revokedAt),
		RotatedAt: cloneTime(t.rotatedAt), CreatedBy: t.createdBy, State: t.state(now),
		LastUsedAt: cloneTime(t.lastUsedAt), PreviousSecrets: grace,
	}
}

// Tokens lists every token ever made, oldest first.
func (s *Server) Tokens() []TokenRecord { return s.tokens("") }

// LiveTokens lists the tokens whose state is live, oldest first.
func (s *Server) LiveTokens() []TokenRecord { return s.tokens(stateLive) }

// TokensInState lists the tokens in one state ("live", "revoked", "expired"), oldest first.
func (s *Server) TokensInState(state string) []TokenRecord { return s.tokens(state) }

func (s *Server) tokens(state string) []TokenRecord {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenRecord, 0, len(s.order))
	for _, t := range s.order {
		if state == "" || t.state(now) == state {
			out = append(out, t.record(now))
		}
	}
	return out
}

// Token returns one token by id, whatever its state.
func (s *Server) Token(id string) (TokenRecord, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.byID[id]
	if t == nil {
		return TokenRecord{}, false
	}
	return t.record(now), true
}

// Authenticate reports whether a secret is accepted right now, and by which
// token. It has no side effect (no last_used_at, no rate limit).
func (s *Server) Authenticate(secret string) (TokenRecord, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.authLocked(secret, now)
	if t == nil {
		return TokenRecord{}, false
	}
	return t.record(now), true
}

// Requests returns the request log, oldest first (the last MaxRequestLog requests).
func (s *Server) Requests() []RequestRecord {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	out := make([]RequestRecord, 0, len(s.requests))
	out = append(out, s.requests[s.reqStart:]...)
	out = append(out, s.requests[:s.reqStart]...)
	return out
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.requests = nil
	s.reqStart = 0
}

// Counters returns a copy of the counters: requests, created, updated,
// rotated, revoked, expired, faults, rate_limited, dropped, replayed,
// unauthorized, errors, webhooks_delivered, webhooks_failed, webhooks_dropped.
func (s *Server) Counters() map[string]int64 {
	out := make(map[string]int64, len(s.counters))
	for k, v := range s.counters {
		out[k] = v.Load()
	}
	return out
}
