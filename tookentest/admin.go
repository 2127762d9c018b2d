package tookentest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// AdminHandler serves the admin and inspection API (paths /admin/...), JSON
// in and out. It has no authentication: bind it to loopback only.
//
//	GET    /admin/tokens[?state=live|revoked|expired]  -> [TokenRecord]
//	POST   /admin/tokens      {"name", "scopes", ...}  -> 201 token with "secret"
//	GET    /admin/tokens/{id}                          -> TokenRecord
//	GET    /admin/root                                 -> {"token_id": ...}
//	GET    /admin/requests                             -> [RequestRecord]
//	DELETE /admin/requests                             -> 204
//	GET    /admin/counters                             -> {"requests": N, ...}
//	GET    /admin/faults                               -> [FaultInfo]
//	POST   /admin/faults      Fault                    -> 201 {"id": "flt_1"}
//	DELETE /admin/faults                               -> 204
//	DELETE /admin/faults/{id}                          -> 204 (404 if unknown)
//	GET    /admin/ratelimit                            -> {"rps": .., "burst": ..}
//	POST   /admin/ratelimit   {"rps": .., "burst": ..} -> 200 {"rps": .., "burst": ..}
//	POST   /admin/down        {"down": true}           -> 200 {"down": true}
//	POST   /admin/auth        {"secret": "..."}        -> {"valid": bool, "token_id": ...}
func (s *Server) AdminHandler() http.Handler { return http.HandlerFunc(s.serveAdmin) }

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	adminJSON(w, status, errorJSON{Error: errorDetail{Code: codeForStatus(status), Message: msg, RequestID: randHex("req_")}})
}

// adminBody decodes a small JSON object whose keys match loosely (case and
// underscores ignored) against allowed.
func adminBody(r *http.Request, allowed ...string) (map[string]json.RawMessage, string) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		return nil, "reading body: " + err.Error()
	}
	obj, err := looseObject(b)
	if err != nil {
		return nil, err.Error()
	}
	out := map[string]json.RawMessage{}
	for k, v := range obj {
		found := false
		for _, a := range allowed {
			if looseKey(k) == looseKey(a) {
				out[a] = v
				found = true
			}
		}
		if !found {
			return nil, "unknown field " + k + " (allowed: " + strings.Join(allowed, ", ") + ")"
		}
	}
	return out, ""
}

// adminField decodes a body holding exactly one required field. On a bad body
// it answers 400 (with typeMsg when the field is missing or of the wrong
// type) and reports false.
func adminField[T any](w http.ResponseWriter, r *http.Request, field, typeMsg string) (T, bool) {
	var v T
	obj, msg := adminBody(r, field)
	if msg != "" {
		adminError(w, http.StatusBadRequest, msg)
		return v, false
	}
	raw, ok := obj[field]
	if !ok || strictUnmarshal(raw, &v) != nil {
		adminError(w, http.StatusBadRequest, typeMsg)
		return v, false
	}
	return v, true
}

// adminHandler serves one admin call; id is the path's last segment for the
// calls on one token or fault, "" otherwise.
type adminHandler func(w http.ResponseWriter, r *http.Request, id string)

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	h, id := s.adminRoute(r.Method, path)
	if h == nil {
		adminError(w, http.StatusNotFound, "unrecognized admin request: "+r.Method+" "+redactPath(r.URL.Path))
		return
	}
	h(w, r, id)
}

// adminRoute maps method and path (without a trailing slash) to a handler.
func (s *Server) adminRoute(method, path string) (adminHandler, string) {
	type route struct{ method, path string }
	exact := map[route]adminHandler{
		{http.MethodGet, "/admin/tokens"}:      s.adminListTokens,
		{http.MethodPost, "/admin/tokens"}:     s.adminCreateToken,
		{http.MethodGet, "/admin/root"}:        s.adminRoot,
		{http.MethodGet, "/admin/requests"}:    s.adminRequests,
		{http.MethodDelete, "/admin/requests"}: s.adminResetRequests,
		{http.MethodGet, "/admin/counters"}:    s.adminCounters,
		{http.MethodGet, "/admin/faults"}:      s.adminFaults,
		{http.MethodPost, "/admin/faults"}:     s.adminAddFault,
		{http.MethodDelete, "/admin/faults"}:   s.adminClearFaults,
		{http.MethodGet, "/admin/ratelimit"}:   s.adminRateLimit,
		{http.MethodPost, "/admin/ratelimit"}:  s.adminSetRateLimit,
		{http.MethodPost, "/admin/down"}:       s.adminDown,
		{http.MethodPost, "/admin/auth"}:       s.adminAuth,
	}
	if h, ok := exact[route{method, path}]; ok {
		return h, ""
	}
	if id, ok := strings.CutPrefix(path, "/admin/tokens/"); ok && method == http.MethodGet {
		return s.adminGetToken, id
	}
	if id, ok := strings.CutPrefix(path, "/admin/faults/"); ok && method == http.MethodDelete {
		return s.adminRemoveFault, id
	}
	return nil, ""
}

func (s *Server) adminListTokens(w http.ResponseWriter, r *http.Request, _ string) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", stateLive, stateRevoked, stateExpired:
	default:
		adminError(w, http.StatusBadRequest, "state must be live, revoked or expired")
		return
	}
	adminJSON(w, http.StatusOK, s.tokens(state))
}

// AdminCreator is the created_by of the tokens made with CreateToken (and
// POST /admin/tokens): the emulator's operator, not a caller token.
const AdminCreator = "admin"

// CreateTokenRequest is a token to make with CreateToken: the fields of the
// API's POST /tokens (Metadata and ExpiresAt optional; nil ExpiresAt: never
// expires).
type CreateTokenRequest struct {
	Name      string            `json:"name"`
	Scopes    []string          `json:"scopes"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// CreateToken makes a token as Tooken's operator would in its console, and
// answers it with its secret (shown only here, as the API's create answer
// does): the contract's rules for name, scopes, expires_at and metadata, but
// any valid scopes, since no caller token bounds them. It is how a test or a
// demo gets a token that is not the root's to import as a static role.
func (s *Server) CreateToken(req CreateTokenRequest) (TokenRecord, string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return TokenRecord{}, "", err
	}
	out, aerr := s.createAsAdmin(body)
	if aerr != nil {
		return TokenRecord{}, "", errors.New(aerr.msg)
	}
	rec, _ := s.Token(out.ID)
	return rec, out.Secret, nil
}

// createAsAdmin validates a POST /tokens body and makes its token for
// AdminCreator, saving the state file.
func (s *Server) createAsAdmin(body []byte) (tokenJSON, *apiError) {
	clock := s.now()
	req, aerr := parseCreate(body, clock)
	if aerr != nil {
		return tokenJSON{}, aerr
	}
	s.mu.Lock()
	out := s.createLocked(req, AdminCreator, clock)
	s.stateVersion++
	s.mu.Unlock()
	s.saveState()
	return out, nil
}

// adminCreateToken answers POST /admin/tokens like the API's create: 201
// with the token and its secret, or 400 naming the field.
func (s *Server) adminCreateToken(w http.ResponseWriter, r *http.Request, _ string) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		adminError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	out, aerr := s.createAsAdmin(b)
	if aerr != nil {
		adminError(w, aerr.status, aerr.msg)
		return
	}
	adminJSON(w, http.StatusCreated, out)
}

func (s *Server) adminGetToken(w http.ResponseWriter, _ *http.Request, id string) {
	rec, ok := s.Token(id)
	if !ok {
		adminError(w, http.StatusNotFound, "no such token")
		return
	}
	adminJSON(w, http.StatusOK, rec)
}

func (s *Server) adminRoot(w http.ResponseWriter, _ *http.Request, _ string) {
	adminJSON(w, http.StatusOK, map[string]string{"token_id": s.RootTokenID()})
}

func (s *Server) adminRequests(w http.ResponseWriter, _ *http.Request, _ string) {
	adminJSON(w, http.StatusOK, s.Requests())
}

func (s *Server) adminResetRequests(w http.ResponseWriter, _ *http.Request, _ string) {
	s.ResetRequests()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminCounters(w http.ResponseWriter, _ *http.Request, _ string) {
	adminJSON(w, http.StatusOK, s.Counters())
}

func (s *Server) adminFaults(w http.ResponseWriter, _ *http.Request, _ string) {
	adminJSON(w, http.StatusOK, s.Faults())
}

// adminAddFault decodes a Fault (keys in JSON or Go spelling), validates it
// (every problem at once) and installs it.
func (s *Server) adminAddFault(w http.ResponseWriter, r *http.Request, _ string) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		adminError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var f Fault
	if err := json.Unmarshal(b, &f); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := f.Validate(); err != nil {
		adminError(w, http.StatusBadRequest, strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	adminJSON(w, http.StatusCreated, map[string]string{"id": s.AddFault(f)})
}

func (s *Server) adminClearFaults(w http.ResponseWriter, _ *http.Request, _ string) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminRemoveFault(w http.ResponseWriter, _ *http.Request, id string) {
	if !s.RemoveFault(id) {
		adminError(w, http.StatusNotFound, "no such fault")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminRateLimit(w http.ResponseWriter, _ *http.Request, _ string) {
	rps, burst := s.RateLimit()
	adminJSON(w, http.StatusOK, map[string]any{"rps": rps, "burst": burst})
}

// adminSetRateLimit changes the limit; a field left out takes its default
// (rps 0 = DefaultRateLimit, burst 0 = DefaultBurst).
func (s *Server) adminSetRateLimit(w http.ResponseWriter, r *http.Request, _ string) {
	obj, msg := adminBody(r, "rps", "burst")
	if msg != "" {
		adminError(w, http.StatusBadRequest, msg)
		return
	}
	var rps float64
	var burst int
	if raw, ok := obj["rps"]; ok {
		if err := strictUnmarshal(raw, &rps); err != nil {
			adminError(w, http.StatusBadRequest, "rps: "+err.Error())
			return
		}
	}
	if raw, ok := obj["burst"]; ok {
		if err := strictUnmarshal(raw, &burst); err != nil || burst < 0 {
			adminError(w, http.StatusBadRequest, "burst must be an integer >= 0")
			return
		}
	}
	s.SetRateLimit(rps, burst)
	s.adminRateLimit(w, r, "")
}

func (s *Server) adminDown(w http.ResponseWriter, r *http.Request, _ string) {
	down, ok := adminField[bool](w, r, "down", "down must be true or false")
	if !ok {
		return
	}
	s.SetDown(down)
	adminJSON(w, http.StatusOK, map[string]bool{"down": down})
}

func (s *Server) adminAuth(w http.ResponseWriter, r *http.Request, _ string) {
	secret, ok := adminField[string](w, r, "secret", "secret must be a string")
	if !ok {
		return
	}
	rec, valid := s.Authenticate(secret)
	var id *string
	if valid {
		id = &rec.ID
	}
	adminJSON(w, http.StatusOK, map[string]any{"valid": valid, "token_id": id})
}

// RateLimit returns the per-caller limit in force (rps < 0: unlimited).
func (s *Server) RateLimit() (rps float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if isInf(s.rps) {
		return -1, s.burst
	}
	return float64(s.rps), s.burst
}
