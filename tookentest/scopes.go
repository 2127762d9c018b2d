package tookentest

import (
	"fmt"
	"strings"
)

// validScopePart reports whether s matches [a-z][a-z0-9_.-]*.
func validScopePart(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidScope reports whether s is a well-formed scope, resource:action.
func ValidScope(s string) bool {
	r, a, ok := strings.Cut(s, ":")
	return ok && len(s) <= MaxScopeLen && validScopePart(r) && validScopePart(a)
}

// normalizeScopes checks every scope and drops duplicates, keeping the first
// occurrence's position.
func normalizeScopes(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, sc := range in {
		if !ValidScope(sc) {
			return nil, fmt.Errorf("%q is not a valid scope (resource:action, each part [a-z][a-z0-9_.-]*, at most %d characters)", truncateForMessage(sc), MaxScopeLen)
		}
		if !seen[sc] {
			seen[sc] = true
			out = append(out, sc)
		}
	}
	return out, nil
}

// holds reports whether a token with scopes have may act with scope want:
// directly, or because R:write implies R:read.
func holds(have []string, want string) bool {
	for _, h := range have {
		if h == want {
			return true
		}
	}
	if r, ok := strings.CutSuffix(want, ":read"); ok {
		w := r + ":write"
		for _, h := range have {
			if h == w {
				return true
			}
		}
	}
	return false
}

// missingScopes lists the scopes of want that have does not hold.
func missingScopes(have, want []string) []string {
	var missing []string
	for _, w := range want {
		if !holds(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}
