package tookentest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Fault makes the server misbehave on matching API requests. A fault matches
// requests by Method ("" = any) and Path (exact, e.g. "/v1/tokens"; "" = any
// path) or, with Prefix true, by path prefix. Count = how many matching
// requests it applies to (0 = unlimited), Probability in (0,1] applies it at
// random (0 means 1). Status (e.g. 429, 500, 503) answers with the documented
// error body (429 carries Retry-After: RetryAfter seconds, at least 1) WITHOUT
// processing the request. Latency delays the request. Drop=true PROCESSES the
// request (state changes happen) and then closes the connection without an
// answer. When several faults match, the oldest one applies.
type Fault struct {
	Method      string
	Path        string
	Prefix      bool
	Count       int
	Probability float64
	Status      int
	RetryAfter  int
	Latency     time.Duration
	Drop        bool
}

type faultEntry struct {
	id   string
	f    Fault
	left int // remaining applications when f.Count > 0
}

func (f Fault) describe() string {
	var parts []string
	if f.Status != 0 {
		parts = append(parts, "status="+strconv.Itoa(f.Status))
	}
	if f.Latency > 0 {
		parts = append(parts, "latency="+f.Latency.String())
	}
	if f.Drop {
		parts = append(parts, "drop")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// Validate reports what is wrong with a fault (the admin API refuses such
// faults with 400; AddFault takes them as they are).
func (f Fault) Validate() error {
	var errs []error
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		errs = append(errs, fmt.Errorf("status must be 400..599, got %d", f.Status))
	}
	if f.Count < 0 {
		errs = append(errs, errors.New("count must be >= 0"))
	}
	if f.Probability < 0 || f.Probability > 1 {
		errs = append(errs, errors.New("probability must be in [0,1]"))
	}
	if f.RetryAfter < 0 {
		errs = append(errs, errors.New("retry_after must be >= 0"))
	}
	if f.Latency < 0 {
		errs = append(errs, errors.New("latency must be >= 0"))
	}
	if f.Status != 0 && f.Drop {
		errs = append(errs, errors.New("status and drop exclude each other (a status fault does not process the request)"))
	}
	if f.Status == 0 && f.Latency == 0 && !f.Drop {
		errs = append(errs, errors.New("a fault needs status, latency or drop"))
	}
	if f.Path != "" && !strings.HasPrefix(f.Path, "/") {
		errs = append(errs, errors.New(`path must start with "/" (e.g. /v1/tokens)`))
	}
	return errors.Join(errs...)
}

// AddFault installs a fault and returns its id.
func (s *Server) AddFault(f Fault) (id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultSeq++
	id = "flt_" + strconv.Itoa(s.faultSeq)
	s.faults = append(s.faults, &faultEntry{id: id, f: f, left: f.Count})
	return id
}

// RemoveFault removes one fault; it reports whether the fault was installed.
func (s *Server) RemoveFault(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, fe := range s.faults {
		if fe.id == id {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			return true
		}
	}
	return false
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// FaultInfo is an installed fault as Faults lists it.
type FaultInfo struct {
	ID    string `json:"id"`
	Fault Fault  `json:"fault"`
	Left  int    `json:"left"` // applications left (0 with Count 0: unlimited)
}

// Faults lists the installed faults, oldest first.
func (s *Server) Faults() []FaultInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FaultInfo, 0, len(s.faults))
	for _, fe := range s.faults {
		out = append(out, FaultInfo{ID: fe.id, Fault: fe.f, Left: fe.left})
	}
	return out
}

// SetDown starts (true) or ends (false) an outage: every API request gets
// 503 unavailable, without processing.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *Server) matchFaultLocked(method, path string) (Fault, string, bool) {
	for i, fe := range s.faults {
		f := fe.f
		if f.Method != "" && !strings.EqualFold(f.Method, method) {
			continue
		}
		if f.Prefix {
			if !strings.HasPrefix(path, f.Path) {
				continue
			}
		} else if f.Path != "" && f.Path != path {
			continue
		}
		if f.Probability > 0 && f.Probability < 1 && randv2.Float64() >= f.Probability {
			continue
		}
		if f.Count > 0 {
			fe.left--
			if fe.left <= 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return f, fe.id, true
	}
	return Fault{}, "", false
}

// MarshalJSON writes a fault with snake_case keys and latency as a Go
// duration string.
func (f Fault) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Method      string  `json:"method"`
		Path        string  `json:"path"`
		Prefix      bool    `json:"prefix"`
		Count       int     `json:"count"`
		Probability float64 `json:"probability"`
		Status      int     `json:"status"`
		RetryAfter  int     `json:"retry_after"`
		Latency     string  `json:"latency"`
		Drop        bool    `json:"drop"`
	}{f.Method, f.Path, f.Prefix, f.Count, f.Probability, f.Status, f.RetryAfter, f.Latency.String(), f.Drop})
}

// UnmarshalJSON reads a fault. Keys match without regard to case or
// underscores ("retry_after", "RetryAfter" and "retryAfter" all work);
// latency is a Go duration string ("250ms"); unknown keys are errors.
func (f *Fault) UnmarshalJSON(b []byte) error {
	obj, err := looseObject(b)
	if err != nil {
		return err
	}
	var out Fault
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := obj[k]
		var err error
		switch looseKey(k) {
		case "method":
			err = strictUnmarshal(raw, &out.Method)
		case "path":
			err = strictUnmarshal(raw, &out.Path)
		case "prefix":
			err = strictUnmarshal(raw, &out.Prefix)
		case "count":
			err = strictUnmarshal(raw, &out.Count)
		case "probability":
			err = strictUnmarshal(raw, &out.Probability)
		case "status":
			err = strictUnmarshal(raw, &out.Status)
		case "retryafter":
			err = strictUnmarshal(raw, &out.RetryAfter)
		case "drop":
			err = strictUnmarshal(raw, &out.Drop)
		case "latency":
			var d string
			if err = strictUnmarshal(raw, &d); err == nil && d != "" {
				out.Latency, err = time.ParseDuration(d)
			}
			if err != nil {
				err = errors.New(`latency must be a Go duration string such as "250ms"`)
			}
		default:
			return fmt.Errorf("unknown field %q", k)
		}
		if err != nil {
			return fmt.Errorf("field %q: %w", k, err)
		}
	}
	*f = out
	return nil
}

func looseKey(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "")) }

func looseObject(b []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("body must be a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("body must be a JSON object")
	}
	return obj, nil
}

func strictUnmarshal(raw json.RawMessage, v any) error {
	if string(bytes.TrimSpace(raw)) == "null" {
		return errors.New("must not be null")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("wrong type: %s", jsonKind(raw))
	}
	return nil
}
