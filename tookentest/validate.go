package tookentest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// decodeObject parses a request body that must be a JSON object whose keys
// are all in allowed. An empty body is the empty object. Keys match exactly
// (encoding/json would match them case-insensitively).
func decodeObject(body []byte, allowed ...string) (map[string]json.RawMessage, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]json.RawMessage{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errInvalid("malformed JSON: unexpected data after the top-level object")
	}
	if obj == nil { // the body was `null`
		return nil, errInvalid("request body must be a JSON object")
	}
	var unknown []string
	for k := range obj {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, errInvalid("unknown field " + strings.Join(unknown, ", ") + " (allowed: " + strings.Join(allowed, ", ") + ")")
	}
	return obj, nil
}

func jsonError(err error) *apiError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return errInvalid(fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn))
	case errors.As(err, &typ):
		return errInvalid("request body must be a JSON object, got " + typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errInvalid("malformed JSON: unexpected end of body")
	default:
		return errInvalid("malformed JSON: " + err.Error())
	}
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func stringField(name string, raw json.RawMessage) (string, *apiError) {
	var v string
	if isNull(raw) || json.Unmarshal(raw, &v) != nil {
		return "", errInvalid(fmt.Sprintf("%s must be a string, got %s", name, jsonKind(raw)))
	}
	return v, nil
}

type createReq struct {
	name      string
	scopes    []string
	expiresAt *time.Time
	metadata  map[string]string
}

func parseCreate(body []byte, now time.Time) (createReq, *apiError) {
	var req createReq
	obj, aerr := decodeObject(body, "name", "scopes", "expires_at", "metadata")
	if aerr != nil {
		return req, aerr
	}
	raw, ok := obj["name"]
	if !ok {
		return req, errInvalid("name is required")
	}
	name, aerr := stringField("name", raw)
	if aerr != nil {
		return req, aerr
	}
	if !validName(name) {
		return req, errInvalid(fmt.Sprintf("name must be 1 to %d characters of [A-Za-z0-9._-]", MaxNameLen))
	}
	req.name = name

	raw, ok = obj["scopes"]
	if !ok {
		return req, errInvalid("scopes is required (a non-empty array of resource:action)")
	}
	var scopes []string
	if isNull(raw) || json.Unmarshal(raw, &scopes) != nil {
		return req, errInvalid("scopes must be an array of strings, got " + jsonKind(raw))
	}
	if len(scopes) == 0 {
		return req, errInvalid("scopes must not be empty")
	}
	if req.scopes, aerr = scopesField(scopes); aerr != nil {
		return req, aerr
	}

	if raw, ok := obj["expires_at"]; ok && !isNull(raw) {
		if req.expiresAt, aerr = expiresField(raw, now); aerr != nil {
			return req, aerr
		}
	}

	req.metadata = map[string]string{}
	if raw, ok := obj["metadata"]; ok && !isNull(raw) {
		md, aerr := metadataField(raw, false)
		if aerr != nil {
			return req, aerr
		}
		if len(md) > MaxMetadataKeys {
			return req, errInvalid(fmt.Sprintf("metadata: at most %d keys, got %d", MaxMetadataKeys, len(md)))
		}
		for k, v := range md {
			req.metadata[k] = *v
		}
	}
	return req, nil
}

func scopesField(scopes []string) ([]string, *apiError) {
	if len(scopes) > MaxScopes {
		return nil, errInvalid(fmt.Sprintf("scopes: at most %d, got %d", MaxScopes, len(scopes)))
	}
	out, err := normalizeScopes(scopes)
	if err != nil {
		return nil, errInvalid("scopes: " + err.Error())
	}
	return out, nil
}

func expiresField(raw json.RawMessage, now time.Time) (*time.Time, *apiError) {
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return nil, errInvalid("expires_at must be an RFC 3339 time string or null, got " + jsonKind(raw))
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, errInvalid(fmt.Sprintf("expires_at %q is not an RFC 3339 time (e.g. 2026-11-26T18:00:00Z)", truncateForMessage(v)))
	}
	t = t.UTC().Truncate(time.Second)
	if !t.After(now) {
		return nil, errInvalid("expires_at must be in the future")
	}
	if t.After(now.Add(MaxExpiresAhead)) {
		return nil, errInvalid("expires_at must be at most 366 days ahead")
	}
	return &t, nil
}

// metadataField parses a metadata object. With allowNull (PATCH), a null value
// deletes its key and is returned as a nil pointer.
func metadataField(raw json.RawMessage, allowNull bool) (map[string]*string, *apiError) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return nil, errInvalid("metadata must be an object of string values, got " + jsonKind(raw))
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]*string, len(obj))
	for _, k := range keys {
		if k == "" {
			return nil, errInvalid("metadata keys must not be empty")
		}
		if utf8.RuneCountInString(k) > MaxMetadataKeyLen {
			return nil, errInvalid(fmt.Sprintf("metadata key %q is longer than %d characters", truncateForMessage(k), MaxMetadataKeyLen))
		}
		v := obj[k]
		if allowNull && isNull(v) {
			out[k] = nil
			continue
		}
		var sv string
		if isNull(v) || json.Unmarshal(v, &sv) != nil {
			return nil, errInvalid(fmt.Sprintf("metadata.%s must be a string, got %s", k, jsonKind(v)))
		}
		if utf8.RuneCountInString(sv) > MaxMetadataValueLen {
			return nil, errInvalid(fmt.Sprintf("metadata.%s is longer than %d characters", k, MaxMetadataValueLen))
		}
		out[k] = &sv
	}
	return out, nil
}

type updateReq struct {
	expiresSet    bool
	expiresAt     *time.Time // nil with expiresSet: never expires
	metadataSet   bool
	metadataClear bool               // metadata: null
	metadata      map[string]*string // nil value: delete the key
}

func parseUpdate(body []byte, now time.Time) (updateReq, *apiError) {
	var req updateReq
	obj, aerr := decodeObject(body, "expires_at", "metadata")
	if aerr != nil {
		return req, aerr
	}
	if raw, ok := obj["expires_at"]; ok {
		req.expiresSet = true
		if !isNull(raw) {
			if req.expiresAt, aerr = expiresField(raw, now); aerr != nil {
				return req, aerr
			}
		}
	}
	if raw, ok := obj["metadata"]; ok {
		req.metadataSet = true
		if isNull(raw) {
			req.metadataClear = true
		} else if req.metadata, aerr = metadataField(raw, true); aerr != nil {
			return req, aerr
		}
	}
	return req, nil
}

// parseRotate returns previous_secret_ttl in seconds.
func parseRotate(body []byte) (int64, *apiError) {
	obj, aerr := decodeObject(body, "previous_secret_ttl")
	if aerr != nil {
		return 0, aerr
	}
	raw, ok := obj["previous_secret_ttl"]
	if !ok || isNull(raw) {
		return 0, nil
	}
	lit := string(bytes.TrimSpace(raw))
	n, err := strconv.ParseInt(lit, 10, 64)
	if err != nil {
		return 0, errInvalid(fmt.Sprintf("previous_secret_ttl must be an integer number of seconds (0 to %d), got %s", MaxPreviousTTL, jsonKind(raw)))
	}
	if n < 0 || n > MaxPreviousTTL {
		return 0, errInvalid(fmt.Sprintf("previous_secret_ttl must be between 0 and %d seconds, got %d", MaxPreviousTTL, n))
	}
	return n, nil
}

type listQuery struct {
	limit  int
	before int64 // cursor: list tokens with seq < before (0 = from the newest)
	prefix string
}

func parseListQuery(q url.Values) (listQuery, *apiError) {
	out := listQuery{limit: DefaultListLimit}
	var unknown []string
	for k := range q {
		switch k {
		case "limit", "cursor", "name_prefix":
			if len(q[k]) > 1 {
				return out, errInvalid(k + " given more than once")
			}
		default:
			unknown = append(unknown, strconv.Quote(truncateForMessage(k)))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return out, errInvalid("unknown query parameter " + strings.Join(unknown, ", ") + " (allowed: limit, cursor, name_prefix)")
	}
	if vs, ok := q["limit"]; ok {
		n, err := strconv.Atoi(vs[0])
		if err != nil || n < 1 || n > MaxListLimit {
			return out, errInvalid(fmt.Sprintf("limit must be an integer from 1 to %d", MaxListLimit))
		}
		out.limit = n
	}
	if vs, ok := q["cursor"]; ok {
		n, ok := decodeCursor(vs[0])
		if !ok {
			return out, errInvalid("cursor is not a valid cursor (use next_cursor from a previous page)")
		}
		out.before = n
	}
	if vs, ok := q["name_prefix"]; ok {
		p := vs[0]
		if len(p) > MaxNamePrefixLen || !nameChars(p) {
			return out, errInvalid(fmt.Sprintf("name_prefix must be at most %d characters of [A-Za-z0-9._-]", MaxNamePrefixLen))
		}
		out.prefix = p
	}
	return out, nil
}

func nameChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validName(s string) bool { return len(s) >= 1 && len(s) <= MaxNameLen && nameChars(s) }

// truncateForMessage keeps echoed user input short and never echoes anything
// that looks like a secret.
func truncateForMessage(s string) string {
	if strings.Contains(s, "tok_") {
		return "(redacted)"
	}
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
