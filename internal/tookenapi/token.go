package tookenapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Token is a Tooken token object. Secret is only set in the answers of create
// and rotate. String and GoString never print the secret.
type Token struct {
	ID                      string            `json:"id"`
	Name                    string            `json:"name"`
	Scopes                  []string          `json:"scopes"`
	Metadata                map[string]string `json:"metadata,omitempty"`
	CreatedAt               time.Time         `json:"created_at"`
	ExpiresAt               *time.Time        `json:"expires_at"`
	RotatedAt               *time.Time        `json:"rotated_at"`
	LastUsedAt              *time.Time        `json:"last_used_at"`
	Secret                  string            `json:"secret,omitempty"`
	PreviousSecretExpiresAt *time.Time        `json:"previous_secret_expires_at,omitempty"`
}

// String describes the token without its secret.
func (t Token) String() string {
	exp := "never"
	if t.ExpiresAt != nil {
		exp = t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("Token{ID:%s Name:%s Scopes:%v ExpiresAt:%s}", t.ID, t.Name, t.Scopes, exp)
}

// GoString is String, so that %#v cannot print the secret either.
func (t Token) GoString() string { return t.String() }

// tokenIDRegex is the shape of a token id: the contract's "tkn_" and a
// bounded run of letters and digits (the contract shows 24 hex digits).
var tokenIDRegex = regexp.MustCompile(`^tkn_[A-Za-z0-9]{1,64}$`)

// Validate tells whether t is a Tooken token object: an id of the
// contract's shape, a created_at and a scopes list. The client checks every
// token object it decodes with it; an answer that fails is not a Tooken API
// answer (ErrInvalidAnswer).
func (t *Token) Validate() error {
	var missing []string
	if !tokenIDRegex.MatchString(t.ID) {
		missing = append(missing, `no "id" of the form tkn_...`)
	}
	if t.CreatedAt.IsZero() {
		missing = append(missing, `no "created_at"`)
	}
	if t.Scopes == nil {
		missing = append(missing, `no "scopes" list`)
	}
	if len(missing) == 0 {
		return nil
	}
	return errors.New(strings.Join(missing, ", "))
}

// Validate checks every token of the page.
func (l *TokenList) Validate() error {
	if l.Data == nil {
		return errors.New(`no "data" list`)
	}
	for i := range l.Data {
		if err := l.Data[i].Validate(); err != nil {
			return fmt.Errorf("data[%d]: %w", i, err)
		}
	}
	return nil
}

// CreateTokenRequest is the body of POST /tokens.
type CreateTokenRequest struct {
	Name      string            `json:"name"`
	Scopes    []string          `json:"scopes"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// UpdateTokenRequest is the body of PATCH /tokens/{id}. Metadata merges
// into the token's (the keys listed are set, the others kept);
// RemoveMetadata lists keys to delete (sent as null).
type UpdateTokenRequest struct {
	ExpiresAt      *time.Time
	Metadata       map[string]string
	RemoveMetadata []string
}

// MarshalJSON is the PATCH body: expires_at when set, and metadata with the
// keys to set and the keys to remove (null) when there are any.
func (r UpdateTokenRequest) MarshalJSON() ([]byte, error) {
	body := struct {
		ExpiresAt *time.Time         `json:"expires_at,omitempty"`
		Metadata  map[string]*string `json:"metadata,omitempty"`
	}{ExpiresAt: r.ExpiresAt}
	if len(r.Metadata)+len(r.RemoveMetadata) > 0 {
		body.Metadata = make(map[string]*string, len(r.Metadata)+len(r.RemoveMetadata))
		for _, k := range r.RemoveMetadata {
			body.Metadata[k] = nil
		}
		for k, v := range r.Metadata {
			body.Metadata[k] = &v
		}
	}
	return json.Marshal(body)
}

// ListOptions are the query parameters of GET /tokens.
type ListOptions struct {
	Limit      int
	Cursor     string
	NamePrefix string
}

// TokenList is one page of GET /tokens.
type TokenList struct {
	Data       []Token `json:"data"`
	NextCursor *string `json:"next_cursor"`
}
