package tooken

import (
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/google/uuid"
)

// defaultNameTemplate names a token after where it came from: the engine,
// the role and the Vault display name of the requester, plus a random suffix.
// At most 6+50+1+50+1+8 = 116 characters.
const defaultNameTemplate = `vault-{{ .RoleName | truncate 50 }}{{ with .DisplayName }}-{{ . | truncate 50 }}{{ end }}-{{ random 8 }}`

// maxTokenNameLen is the contract's limit on token names.
const maxTokenNameLen = 128

// tokenNameRegex is the contract's token name grammar.
var tokenNameRegex = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

var invalidNameChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// nameTemplateData is what a name_template can use.
type nameTemplateData struct {
	RoleName    string // the role name, sanitized
	DisplayName string // the requester's Vault display name, sanitized; may be empty
}

// maxNameTemplateLen bounds a template's source.
const maxNameTemplateLen = 4096

// nameTemplate is a parsed name_template: Go text/template with the functions
// of nameTemplateFuncs.
type nameTemplate struct {
	tmpl *template.Template
}

// nameTemplateFuncs are the functions a name_template can call, named like
// Vault's own username templates.
func nameTemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"random":    randomAlnum,
		"truncate":  truncate,
		"lowercase": strings.ToLower,
		"uppercase": strings.ToUpper,
		"replace":   func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"unix_time": func() int64 { return time.Now().Unix() },
		"timestamp": func(layout string) string { return time.Now().UTC().Format(layout) },
		"uuid":      uuid.NewString,
	}
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n random letters and digits (1 <= n <= 64).
func randomAlnum(n int) (string, error) {
	if n < 1 || n > 64 {
		return "", fmt.Errorf("random: length %d out of range 1..64", n)
	}
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = alnum[randIndex(len(alnum))]
	}
	return string(buf), nil
}

func randIndex(n int) int {
	var b [1]byte
	limit := 256 - 256%n // reject bytes that would bias the result
	for {
		_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on failure)
		if int(b[0]) < limit {
			return int(b[0]) % n
		}
	}
}

// truncate keeps the first n bytes of s.
func truncate(n int, s string) (string, error) {
	if n < 0 {
		return "", fmt.Errorf("truncate: negative length %d", n)
	}
	if len(s) > n {
		return s[:n], nil
	}
	return s, nil
}

// parseNameTemplate parses a template; "" is the default template.
func parseNameTemplate(raw string) (*nameTemplate, error) {
	if raw == "" {
		raw = defaultNameTemplate
	}
	if len(raw) > maxNameTemplateLen {
		return nil, fmt.Errorf("longer than %d characters", maxNameTemplateLen)
	}
	t, err := template.New("name_template").Option("missingkey=error").Funcs(nameTemplateFuncs()).Parse(raw)
	if err != nil {
		return nil, err
	}
	return &nameTemplate{tmpl: t}, nil
}

func (t *nameTemplate) generate(data nameTemplateData) (string, error) {
	var sb strings.Builder
	if err := t.tmpl.Execute(&sb, data); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// sanitizeName replaces every run of characters outside [A-Za-z0-9._-]
// with "-".
func sanitizeName(s string) string {
	return invalidNameChars.ReplaceAllString(s, "-")
}

func newNameTemplateData(roleName, displayName string) nameTemplateData {
	return nameTemplateData{
		RoleName:    sanitizeName(roleName),
		DisplayName: sanitizeName(displayName),
	}
}

// render makes a token name: the template's output, sanitized and cut to
// the contract's 128 characters.
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
