package tookentest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// token is the emulator's record of one token. Secrets are kept as SHA-256
// digests only. All fields are guarded by Server.mu.
type token struct {
	seq        int64
	id         string
	name       string
	scopes     []string
	metadata   map[string]string
	createdAt  time.Time
	expiresAt  *time.Time
	revokedAt  *time.Time
	rotatedAt  *time.Time
	lastUsedAt *time.Time
	createdBy  string
	secretHash [32]byte
	previous   []previousSecret
	// expiredNoted is set once token.expired has been emitted.
	expiredNoted bool
}

type previousSecret struct {
	hash      [32]byte
	expiresAt time.Time
}

const (
	stateLive    = "live"
	stateRevoked = "revoked"
	stateExpired = "expired"
)

func hashSecret(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

func (t *token) expiredAt(now time.Time) bool {
	return t.expiresAt != nil && !now.Before(*t.expiresAt)
}

func (t *token) state(now time.Time) string {
	switch {
	case t.revokedAt != nil:
		return stateRevoked
	case t.expiredAt(now):
		return stateExpired
	default:
		return stateLive
	}
}

func (s *Server) insertLocked(t *token) {
	s.seq++
	t.seq = s.seq
	s.byID[t.id] = t
	s.bySecret[t.secretHash] = t
	s.order = append(s.order, t)
	if t.expiresAt != nil && t.revokedAt == nil && !t.expiredNoted {
		s.pendingExpiry[t.id] = t
	}
}

// authLocked returns the live token that the secret authenticates, or nil.
// Secrets are compared as SHA-256 digests in constant time; the index is keyed
// by digest, so timing depends only on the digest, never on the secret.
func (s *Server) authLocked(secret string, now time.Time) *token {
	if secret == "" {
		return nil
	}
	h := hashSecret(secret)
	t := s.bySecret[h]
	if t == nil {
		return nil
	}
	if t.revokedAt != nil {
		return nil
	}
	if t.expiredAt(now) {
		s.noteExpiredLocked(t, now)
		return nil
	}
	if subtle.ConstantTimeCompare(t.secretHash[:], h[:]) == 1 {
		return t
	}
	for _, p := range t.previous {
		if subtle.ConstantTimeCompare(p.hash[:], h[:]) == 1 {
			if now.Before(p.expiresAt) {
				return t
			}
			s.prunePreviousLocked(t, now)
			return nil
		}
	}
	return nil
}

// prunePreviousLocked forgets previous secrets whose grace has ended.
func (s *Server) prunePreviousLocked(t *token, now time.Time) {
	kept := t.previous[:0]
	for _, p := range t.previous {
		if now.Before(p.expiresAt) {
			kept = append(kept, p)
		} else {
			delete(s.bySecret, p.hash)
		}
	}
	t.previous = kept
}

// noteExpiredLocked emits token.expired once for a token whose expiry passed.
func (s *Server) noteExpiredLocked(t *token, now time.Time) {
	if t.expiredNoted || t.revokedAt != nil {
		return
	}
	t.expiredNoted = true
	delete(s.pendingExpiry, t.id)
	s.count("expired")
	s.emitLocked("token.expired", t.id, now)
	s.stateVersion++
}

// lookupLocked finds a target token that is live; expired or revoked tokens
// and malformed ids answer not_found.
func (s *Server) lookupLocked(id string, now time.Time) (*token, *apiError) {
	if !validTokenID(id) {
		return nil, errNotFound("no such token: ids look like tkn_ followed by 24 hex digits")
	}
	t := s.byID[id]
	if t == nil || t.revokedAt != nil {
		return nil, errNotFound("no such token: " + id)
	}
	if t.expiredAt(now) {
		s.noteExpiredLocked(t, now)
		return nil, errNotFound("no such token: " + id + " (expired)")
	}
	return t, nil
}

// --- JSON views ---

type tokenJSON struct {
	ID                      string            `json:"id"`
	Name                    string            `json:"name"`
	Scopes                  []string          `json:"scopes"`
	Metadata                map[string]string `json:"metadata"`
	CreatedAt               string            `json:"created_at"`
	ExpiresAt               *string           `json:"expires_at"`
	RotatedAt               *string           `json:"rotated_at"`
	LastUsedAt              *string           `json:"last_used_at"`
	Secret                  string            `json:"secret,omitempty"`
	PreviousSecretExpiresAt *string           `json:"previous_secret_expires_at,omitempty"`
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func fmtTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	v := fmtTime(*t)
	return &v
}

func (t *token) toJSON() tokenJSON {
	md := make(map[string]string, len(t.metadata))
	for k, v := range t.metadata {
		md[k] = v
	}
	return tokenJSON{
		ID:         t.id,
		Name:       t.name,
		Scopes:     append([]string(nil), t.scopes...),
		Metadata:   md,
		CreatedAt:  fmtTime(t.createdAt),
		ExpiresAt:  fmtTimePtr(t.expiresAt),
		RotatedAt:  fmtTimePtr(t.rotatedAt),
		LastUsedAt: fmtTimePtr(t.lastUsedAt),
	}
}

type listJSON struct {
	Data       []tokenJSON `json:"data"`
	NextCursor *string     `json:"next_cursor"`
}

// --- handlers; each runs with s.mu held ---

// call is one authenticated API call being processed.
type call struct {
	caller *token
	now    time.Time // truncated to the second for stored times
	clock  time.Time // full precision, for expiry checks
	body   []byte
	query  url.Values
	id     string // {id} path value, "self" resolved
	// changed is set when the call changed persisted state.
	changed bool
}

func (s *Server) handleCreate(c *call) (int, any, *apiError) {
	if !holds(c.caller.scopes, "tokens:write") {
		return 0, nil, errForbidden("this call needs tokens:write")
	}
	req, aerr := parseCreate(c.body, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	if missing := missingScopes(c.caller.scopes, req.scopes); len(missing) > 0 {
		return 0, nil, errScopeNotHeld("token lacks " + strings.Join(missing, ", "))
	}
	c.changed = true
	return http.StatusCreated, s.createLocked(req, c.caller.id, c.clock), nil
}

// createLocked makes the token of a valid create request for createdBy (a
// caller's id, or AdminCreator) at clock, and answers it with its secret.
func (s *Server) createLocked(req createReq, createdBy string, clock time.Time) tokenJSON {
	secret := newSecret()
	t := &token{
		id:         newTokenID(),
		name:       req.name,
		scopes:     req.scopes,
		metadata:   req.metadata,
		createdAt:  clock.Truncate(time.Second),
		expiresAt:  req.expiresAt,
		createdBy:  createdBy,
		secretHash: hashSecret(secret),
	}
	s.insertLocked(t)
	s.count("created")
	s.emitLocked("token.created", t.id, clock)
	out := t.toJSON()
	out.Secret = secret
	return out
}

func (s *Server) handleGet(c *call) (int, any, *apiError) {
	if c.id != c.caller.id && !holds(c.caller.scopes, "tokens:read") {
		return 0, nil, errForbidden("this call needs tokens:read (a token may always read itself)")
	}
	t, aerr := s.lookupLocked(c.id, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	return http.StatusOK, t.toJSON(), nil
}

func (s *Server) handleList(c *call) (int, any, *apiError) {
	if !holds(c.caller.scopes, "tokens:read") {
		return 0, nil, errForbidden("this call needs tokens:read")
	}
	q, aerr := parseListQuery(c.query)
	if aerr != nil {
		return 0, nil, aerr
	}
	// order is sorted by seq; start below the cursor's position.
	end := len(s.order)
	if q.before > 0 {
		end = sort.Search(len(s.order), func(i int) bool { return s.order[i].seq >= q.before })
	}
	out := listJSON{Data: []tokenJSON{}}
	var last *token
	more := false
	for i := end - 1; i >= 0; i-- {
		t := s.order[i]
		if t.revokedAt != nil || t.expiredAt(c.clock) {
			continue
		}
		if q.prefix != "" && !strings.HasPrefix(t.name, q.prefix) {
			continue
		}
		if len(out.Data) == q.limit {
			more = true
			break
		}
		out.Data = append(out.Data, t.toJSON())
		last = t
	}
	if more {
		cur := encodeCursor(last.seq)
		out.NextCursor = &cur
	}
	return http.StatusOK, out, nil
}

func (s *Server) handleUpdate(c *call) (int, any, *apiError) {
	if !holds(c.caller.scopes, "tokens:write") {
		return 0, nil, errForbidden("this call needs tokens:write")
	}
	req, aerr := parseUpdate(c.body, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	t, aerr := s.lookupLocked(c.id, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	if t != c.caller {
		if missing := missingScopes(c.caller.scopes, t.scopes); len(missing) > 0 {
			return 0, nil, errScopeNotHeld("updating this token needs every scope it has; token lacks " + strings.Join(missing, ", "))
		}
	}
	md := t.metadata
	if req.metadataSet {
		md = map[string]string{}
		if !req.metadataClear {
			for k, v := range t.metadata {
				md[k] = v
			}
		}
		for k, v := range req.metadata {
			if v == nil {
				delete(md, k)
			} else {
				md[k] = *v
			}
		}
		if len(md) > MaxMetadataKeys {
			return 0, nil, errInvalid("metadata: at most " + strconv.Itoa(MaxMetadataKeys) + " keys (this update would leave " + strconv.Itoa(len(md)) + ")")
		}
	}
	if req.expiresSet {
		t.expiresAt = req.expiresAt
		delete(s.pendingExpiry, t.id)
		if t.expiresAt != nil {
			s.pendingExpiry[t.id] = t
		}
	}
	t.metadata = md
	if req.expiresSet || req.metadataSet {
		s.count("updated")
		c.changed = true
	}
	return http.StatusOK, t.toJSON(), nil
}

func (s *Server) handleRotate(c *call) (int, any, *apiError) {
	self := c.id == c.caller.id
	if !self && !holds(c.caller.scopes, "tokens:write") {
		return 0, nil, errForbidden("this call needs tokens:write (a token may always rotate itself)")
	}
	ttl, aerr := parseRotate(c.body)
	if aerr != nil {
		return 0, nil, aerr
	}
	t, aerr := s.lookupLocked(c.id, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	if !self {
		if missing := missingScopes(c.caller.scopes, t.scopes); len(missing) > 0 {
			return 0, nil, errScopeNotHeld("rotating this token needs every scope it has; token lacks " + strings.Join(missing, ", "))
		}
	}
	s.prunePreviousLocked(t, c.clock)
	prevExp := c.now.Add(time.Duration(ttl) * time.Second)
	if ttl > 0 {
		t.previous = append(t.previous, previousSecret{hash: t.secretHash, expiresAt: prevExp})
	} else {
		delete(s.bySecret, t.secretHash)
	}
	secret := newSecret()
	t.secretHash = hashSecret(secret)
	s.bySecret[t.secretHash] = t
	now := c.now
	t.rotatedAt = &now
	s.count("rotated")
	s.emitLocked("token.rotated", t.id, c.clock)
	c.changed = true
	out := t.toJSON()
	out.Secret = secret
	pe := fmtTime(prevExp)
	out.PreviousSecretExpiresAt = &pe
	return http.StatusOK, out, nil
}

func (s *Server) handleRevoke(c *call) (int, any, *apiError) {
	if !holds(c.caller.scopes, "tokens:write") {
		return 0, nil, errForbidden("this call needs tokens:write")
	}
	t, aerr := s.lookupLocked(c.id, c.clock)
	if aerr != nil {
		return 0, nil, aerr
	}
	now := c.now
	t.revokedAt = &now
	delete(s.bySecret, t.secretHash)
	for _, p := range t.previous {
		delete(s.bySecret, p.hash)
	}
	t.previous = nil
	delete(s.pendingExpiry, t.id)
	delete(s.limiters, t.id)
	s.count("revoked")
	s.emitLocked("token.revoked", t.id, c.clock)
	c.changed = true
	return http.StatusNoContent, nil, nil
}

// --- cursors ---

const cursorPrefix = "tc1."

func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

func decodeCursor(s string) (int64, bool) {
	if s == "" || len(s) > 64 {
		return 0, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !strings.HasPrefix(string(b), cursorPrefix) {
		return 0, false
	}
	digits := string(b[len(cursorPrefix):])
	if digits == "" || digits[0] == '0' || digits[0] == '+' || digits[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
