package tooken

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-secure-stdlib/base62"
	"github.com/hashicorp/vault/sdk/helper/template"
)

// Token names: a role's name_template, rendered with the SDK's string
// templates (sdk/helper/template: Go text/template with Vault's template
// functions), then checked against Tooken's name grammar.

// defaultNameTemplate names a token after where it came from: the engine,
// the role and the Vault display name of the requester, plus a random suffix.
// At most 6+50+1+50+1+8 = 116 characters.
const defaultNameTemplate = `vault-{{ .RoleName | truncate 50 }}{{ with .DisplayName }}-{{ . | truncate 50 }}{{ end }}-{{ random 8 }}`

// maxTokenNameLen is the contract's limit on token names.
const maxTokenNameLen = 128

// maxNameTemplateLen bounds a template's source.
const maxNameTemplateLen = 4096

// tokenNameRegex is the contract's token name grammar.
var tokenNameRegex = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// nameTemplateData is what a name_template can use.
type nameTemplateData struct {
	RoleName    string // the role name, sanitized
	DisplayName string // the requester's Vault display name, sanitized; may be empty
}

func newNameTemplateData(roleName, displayName string) nameTemplateData {
	return nameTemplateData{
		RoleName:    sanitizeName(roleName),
		DisplayName: sanitizeName(displayName),
	}
}

// nameTemplate is a parsed name_template.
type nameTemplate struct {
	tmpl template.StringTemplate
	// builtin says that the template is builtinNameTemplate, which generate
	// renders without the template engine: reflection and a deep call stack
	// on every creds read, for a name that is a concatenation.
	builtin bool
}

// builtinNameTemplate is the default template that generate renders by
// hand; a test checks that both renderings agree. (It is a copy, so that a
// change of defaultNameTemplate turns the shortcut off rather than wrong.)
const builtinNameTemplate = `vault-{{ .RoleName | truncate 50 }}{{ with .DisplayName }}-{{ . | truncate 50 }}{{ end }}-{{ random 8 }}`

// parseNameTemplate parses a template; "" is the default template. The SDK's
// functions are all there; three keep the meaning they had before the engine
// used the SDK: random is bounded to 1..64 characters (the SDK's is not),
// truncate accepts 0 (the SDK's wants at least 1), and timestamp formats UTC
// (the SDK's, the server's local time).
func parseNameTemplate(raw string) (*nameTemplate, error) {
	if raw == "" {
		raw = defaultNameTemplate
	}
	if len(raw) > maxNameTemplateLen {
		return nil, fmt.Errorf("longer than %d characters", maxNameTemplateLen)
	}
	t, err := template.NewTemplate(
		template.Template(raw),
		template.Function("random", randomAlnum),
		template.Function("truncate", truncate),
		template.Function("timestamp", utcTimestamp),
	)
	if err != nil {
		return nil, err
	}
	return &nameTemplate{tmpl: t, builtin: raw == builtinNameTemplate}, nil
}

// randomAlnum returns n random letters and digits (1 <= n <= 64): the SDK's
// random (base62, crypto/rand), with the bound a name needs.
func randomAlnum(n int) (string, error) {
	if n < 1 || n > 64 {
		return "", fmt.Errorf("random: length %d out of range 1..64", n)
	}
	return base62.Random(n)
}

// truncate keeps the first n bytes of s.
func truncate(n int, s string) (string, error) {
	if n < 0 {
		return "", fmt.Errorf("truncate: negative length %d", n)
	}
	return s[:min(n, len(s))], nil
}

// utcTimestamp is the current UTC time in a Go layout.
func utcTimestamp(layout string) string {
	return time.Now().UTC().Format(layout)
}

// generate is the template's raw output.
func (t *nameTemplate) generate(data nameTemplateData) (string, error) {
	if t.builtin {
		return generateBuiltin(data)
	}
	return t.tmpl.Generate(data)
}

// generateBuiltin renders builtinNameTemplate.
func generateBuiltin(data nameTemplateData) (string, error) {
	suffix, err := randomAlnum(8)
	if err != nil {
		return "", err
	}
	role, display := data.RoleName[:min(50, len(data.RoleName))], data.DisplayName[:min(50, len(data.DisplayName))]
	var b strings.Builder
	b.Grow(6 + len(role) + 1 + len(display) + 1 + len(suffix))
	b.WriteString("vault-")
	b.WriteString(role)
	if display != "" {
		b.WriteByte('-')
		b.WriteString(display)
	}
	b.WriteByte('-')
	b.WriteString(suffix)
	return b.String(), nil
}

// sanitizeName replaces every run of characters outside [A-Za-z0-9._-]
// with "-" (as regexp [^A-Za-z0-9._-]+ replaced by "-" would, without a
// regexp on every creds read; a name already valid is returned as is).
func sanitizeName(s string) string {
	i := 0
	for i < len(s) && nameChar(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var out strings.Builder
	out.Grow(len(s))
	out.WriteString(s[:i])
	for i < len(s) {
		if nameChar(s[i]) {
			out.WriteByte(s[i])
			i++
			continue
		}
		out.WriteByte('-')
		for i < len(s) && !nameChar(s[i]) {
			i++
		}
	}
	return out.String()
}

// nameChar tells whether c is one of [A-Za-z0-9._-]. The bytes of a
// multi-byte character are all outside it, so such a character (or a run of
// them) becomes one "-", as with the regexp.
func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// render makes a token name: the template's output, sanitized and cut to
// the contract's 128 characters. Every name goes through it.
func (t *nameTemplate) render(data nameTemplateData) (string, error) {
	out, err := t.generate(data)
	if err != nil {
		return "", err
	}
	name := sanitizeName(strings.TrimSpace(out))
	if len(name) > maxTokenNameLen {
		name = name[:maxTokenNameLen]
	}
	if name == "" {
		return "", errors.New("the name template rendered an empty name")
	}
	return name, nil
}

// validateNameTemplate checks a role's template at write time by rendering
// it with sample data; the raw output must already be a valid Tooken name.
func validateNameTemplate(raw, roleName string) error {
	t, err := parseNameTemplate(raw)
	if err != nil {
		return fmt.Errorf("name_template: %w", err)
	}
	for _, display := range []string{"token", "userpass-alice", ""} {
		out, err := t.generate(newNameTemplateData(roleName, display))
		if err != nil {
			return fmt.Errorf("name_template: %w", err)
		}
		if !tokenNameRegex.MatchString(out) {
			if len(out) > 200 {
				out = out[:200] + "..."
			}
			return fmt.Errorf("name_template: renders %q, which is not a valid Tooken name (1 to %d characters of A-Z a-z 0-9 . _ -)", out, maxTokenNameLen)
		}
	}
	return nil
}
