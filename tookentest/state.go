package tookentest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// The state file holds every token with the SHA-256 of its secrets (never a
// plaintext secret). Idempotency records are not persisted: they hold the
// secrets of create and rotate answers.
type stateFile struct {
	Version int          `json:"version"`
	RootID  string       `json:"root_id"`
	Tokens  []stateToken `json:"tokens"`
}

type stateToken struct {
	Seq          int64             `json:"seq"`
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Scopes       []string          `json:"scopes"`
	Metadata     map[string]string `json:"metadata"`
	CreatedAt    time.Time         `json:"created_at"`
	ExpiresAt    *time.Time        `json:"expires_at"`
	RevokedAt    *time.Time        `json:"revoked_at"`
	RotatedAt    *time.Time        `json:"rotated_at"`
	LastUsedAt   *time.Time        `json:"last_used_at"`
	CreatedBy    string            `json:"created_by"`
	SecretSHA256 string            `json:"secret_sha256"`
	Previous     []statePrevious   `json:"previous_secrets,omitempty"`
	ExpiredNoted bool              `json:"expired_noted,omitempty"`
}

type statePrevious struct {
	SecretSHA256 string    `json:"secret_sha256"`
	ExpiresAt    time.Time `json:"expires_at"`
}

const stateVersion = 1

func decodeHash(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, errors.New("bad secret_sha256")
	}
	copy(h[:], b)
	return h, nil
}

// loadState reads the state file; a missing file is an empty state.
func (s *Server) loadState(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("state file %s: unsupported version %d", path, st.Version)
	}
	sort.Slice(st.Tokens, func(i, j int) bool { return st.Tokens[i].Seq < st.Tokens[j].Seq })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range st.Tokens {
		if !validTokenID(in.ID) || s.byID[in.ID] != nil || in.Seq <= s.seq {
			return fmt.Errorf("state file %s: bad or duplicate token %q", path, in.ID)
		}
		h, err := decodeHash(in.SecretSHA256)
		if err != nil {
			return fmt.Errorf("state file %s: token %s: %w", path, in.ID, err)
		}
		md := in.Metadata
		if md == nil {
			md = map[string]string{}
		}
		t := &token{
			id: in.ID, name: in.Name, scopes: in.Scopes, metadata: md,
			createdAt: in.CreatedAt.UTC(), expiresAt: in.ExpiresAt, revokedAt: in.RevokedAt,
			rotatedAt: in.RotatedAt, lastUsedAt: in.LastUsedAt, createdBy: in.CreatedBy,
			secretHash: h, expiredNoted: in.ExpiredNoted,
		}
		for _, p := range in.Previous {
			ph, err := decodeHash(p.SecretSHA256)
			if err != nil {
				return fmt.Errorf("state file %s: token %s: %w", path, in.ID, err)
			}
			t.previous = append(t.previous, previousSecret{hash: ph, expiresAt: p.ExpiresAt})
		}
		s.seq = in.Seq - 1
		s.insertLocked(t)
		if t.revokedAt != nil {
			delete(s.bySecret, t.secretHash)
		} else {
			for _, p := range t.previous {
				s.bySecret[p.hash] = t
			}
		}
	}
	if st.RootID != "" && s.byID[st.RootID] == nil {
		return fmt.Errorf("state file %s: root token %s missing", path, st.RootID)
	}
	s.rootID = st.RootID
	return nil
}

// snapshotLocked serializes the tokens (s.mu held).
func (s *Server) snapshotLocked() []byte {
	st := stateFile{Version: stateVersion, RootID: s.rootID, Tokens: make([]stateToken, 0, len(s.order))}
	for _, t := range s.order {
		out := stateToken{
			Seq: t.seq, ID: t.id, Name: t.name, Scopes: t.scopes, Metadata: t.metadata,
			CreatedAt: t.createdAt, ExpiresAt: t.expiresAt, RevokedAt: t.revokedAt,
			RotatedAt: t.rotatedAt, LastUsedAt: t.lastUsedAt, CreatedBy: t.createdBy,
			SecretSHA256: hex.EncodeToString(t.secretHash[:]), ExpiredNoted: t.expiredNoted,
		}
		for _, p := range t.previous {
			out.Previous = append(out.Previous, statePrevious{SecretSHA256: hex.EncodeToString(p.hash[:]), ExpiresAt: p.expiresAt})
		}
		st.Tokens = append(st.Tokens, out)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return append(b, '\n')
}

// writeState replaces the state file atomically (temp file + rename), mode 0600.
func (s *Server) writeState(b []byte) error {
	path := s.opts.StatePath
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	name := tmp.Name()
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(name, path)
		}
		if err == nil {
			return nil
		}
	} else {
		tmp.Close()
	}
	os.Remove(name)
	return fmt.Errorf("writing state: %w", err)
}

// saveState writes the state file if it changed since the last write.
func (s *Server) saveState() {
	if s.opts.StatePath == "" {
		return
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	v := s.stateVersion
	if v == s.savedVersion {
		s.mu.Unlock()
		return
	}
	snap := s.snapshotLocked()
	s.mu.Unlock()
	if err := s.writeState(snap); err != nil {
		s.logf("state: %v", err)
		return
	}
	s.savedVersion = v
}
