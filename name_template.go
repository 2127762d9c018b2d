package tooken

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-secure-stdlib/base62"
)

// Token names: a role's name_template is a Go text/template with the
// functions of Vault's string templates (sdk/helper/template: random,
// truncate, truncate_sha256, uppercase, lowercase, replace, sha256, base64,
// unix_time, unix_time_millis, timestamp, uuid) and the Go builtins that
// cannot blow up, rendered into a name that is then checked against
// Tooken's name grammar.
//
// Rendering is bounded in time and memory whatever the template and the
// caller, because one plugin process serves every mount:
//   - the parse tree is checked when the template is written and again when
//     a stored one is loaded: no range, template, define or block (the
//     constructs that loop or recurse), only the functions listed here, and
//     fields of the data that exist;
//   - every string a function takes or returns is at most maxTemplateValue
//     bytes, checked before anything large is allocated;
//   - every value of the data is at most maxTemplateValue bytes, and the
//     output stops with an error past maxTemplateOutput bytes.
//
// So a render evaluates each node of the tree at most once, each in time and
// memory linear in maxTemplateValue (or in the data's bounded maps), and its
// output is at most maxTemplateOutput. The SDK's template type cannot be
// used for this: it exposes neither the parse tree nor its functions (which
// must be wrapped), nor the missingkey option (a missing identity key must
// render empty, not "<no value>"). The functions keep the SDK's names and
// results; name_template_test.go holds them to the SDK's own.

// defaultNameTemplate names a token after where it came from: the engine,
// the role and the Vault display name of the requester, plus a random suffix.
// At most 6+50+1+50+1+8 = 116 characters.
const defaultNameTemplate = `vault-{{ .RoleName | truncate 50 }}{{ with .DisplayName }}-{{ . | truncate 50 }}{{ end }}-{{ random 8 }}`

const (
	// maxTokenNameLen is the contract's limit on token names.
	maxTokenNameLen = 128
	// maxNameTemplateLen bounds a template's source.
	maxNameTemplateLen = 4096
	// maxTemplateValue bounds every string a template function takes or
	// returns, and every value of the data.
	maxTemplateValue = 1024
	// maxTemplateOutput bounds what a template may write before its output is
	// cut to a name of maxTokenNameLen.
	maxTemplateOutput = 16 << 10
	// maxFormatWidth bounds a printf width or precision.
	maxFormatWidth = 64
)

// tokenNameRegex is the contract's token name grammar.
var tokenNameRegex = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// nameTemplateData is what a name_template can use. Every value is sanitized
// to the name alphabet and at most maxTemplateValue bytes. The three identity
// fields are filled only for a template that uses them (nameTemplate.
// usesIdentity), from the requester's Vault entity (identity.go). It has no
// methods: a template can reach nothing but these fields.
type nameTemplateData struct {
	RoleName       string            // the role name
	DisplayName    string            // the requester's Vault display name; may be empty
	EntityName     string            // the requester's Vault entity name; may be empty
	EntityMetadata map[string]string // the entity's metadata
	AliasMetadata  map[string]string // the metadata of the entity's aliases, merged (identity.go)
}

// Fields of nameTemplateData, in the order the errors list them.
var (
	nameTemplateFields     = []string{"RoleName", "DisplayName", "EntityName", "EntityMetadata", "AliasMetadata"}
	nameTemplateIdentities = []string{"EntityName", "EntityMetadata", "AliasMetadata"}
)

func newNameTemplateData(roleName, displayName string) nameTemplateData {
	return nameTemplateData{
		RoleName:    templateValue(roleName),
		DisplayName: templateValue(displayName),
	}
}

// withIdentity adds the requester's identity.
func (d nameTemplateData) withIdentity(id callerIdentity) nameTemplateData {
	d.EntityName = templateValue(id.entityName)
	d.EntityMetadata = templateValues(id.entityMetadata)
	d.AliasMetadata = templateValues(id.aliasMetadata)
	return d
}

// templateValue is s in the name alphabet, at most maxTemplateValue bytes.
func templateValue(s string) string {
	s = sanitizeName(s)
	return s[:min(len(s), maxTemplateValue)]
}

func templateValues(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = templateValue(v)
	}
	return out
}

// nameTemplate is a parsed and checked name_template.
type nameTemplate struct {
	tmpl *template.Template
	// usesIdentity is set when the template reads an identity field (or the
	// whole data): only then does a creds read fetch the entity.
	usesIdentity bool
	// builtin says that the template is builtinNameTemplate, which generate
	// renders without the template engine: reflection and a deep call stack
	// on every creds read, for a name that is a concatenation.
	builtin bool
}

// builtinNameTemplate is the default template that generate renders by
// hand; a test checks that both renderings agree. (It is a copy, so that a
// change of defaultNameTemplate turns the shortcut off rather than wrong.)
const builtinNameTemplate = `vault-{{ .RoleName | truncate 50 }}{{ with .DisplayName }}-{{ . | truncate 50 }}{{ end }}-{{ random 8 }}`

// parseNameTemplate parses and checks a template; "" is the default.
func parseNameTemplate(raw string) (*nameTemplate, error) {
	if raw == "" {
		raw = defaultNameTemplate
	}
	if len(raw) > maxNameTemplateLen {
		return nil, fmt.Errorf("longer than %d characters", maxNameTemplateLen)
	}
	const name = "name_template"
	trees, err := parse.Parse(name, raw, "", "", templateFuncs(), goBuiltinNames())
	if err != nil {
		return nil, templateError(err)
	}
	tree := trees[name]
	if len(trees) != 1 || tree == nil {
		return nil, errors.New("define and block are not allowed")
	}
	c := &templateCheck{tree: tree}
	c.list(tree.Root, true)
	if len(c.problems) > 0 {
		return nil, errors.New(strings.Join(c.problems, "; "))
	}
	t, err := template.New(name).Funcs(templateFuncs()).Option("missingkey=zero").AddParseTree(name, tree)
	if err != nil {
		return nil, err
	}
	return &nameTemplate{tmpl: t, usesIdentity: c.usesIdentity, builtin: raw == builtinNameTemplate}, nil
}

// keptBuiltins are the Go template builtins a name template may use: each
// returns one of its arguments, a part of one, a bool or a length, so none
// can make anything large. html, js, urlquery (which grow their input),
// call and println are not allowed; print and printf are replaced by
// bounded versions (templateFuncs).
var keptBuiltins = []string{"and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "index", "slice"}

// goBuiltinNames names every Go builtin for the parser, so that a template
// using one that is not allowed parses and is then refused by name.
func goBuiltinNames() map[string]any {
	names := map[string]any{}
	for _, n := range []string{"and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne"} {
		names[n] = true
	}
	return names
}

// templateFuncs are the functions of a name template, each bounded.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"random":           randomAlnum,
		"truncate":         truncate,
		"truncate_sha256":  truncateSHA256,
		"uppercase":        uppercase,
		"lowercase":        lowercase,
		"replace":          replace,
		"sha256":           hashSHA256,
		"base64":           encodeBase64,
		"unix_time":        unixTime,
		"unix_time_millis": unixTimeMillis,
		"timestamp":        utcTimestamp,
		"uuid":             uuid.NewString,
		"print":            boundedPrint,
		"printf":           boundedPrintf,
	}
}

// allowedFunctions lists what a template may call, sorted, for the parse
// check and its error message.
var allowedFunctions = allowedFunctionNames()

func allowedFunctionNames() []string {
	var names []string
	for n := range templateFuncs() {
		names = append(names, n)
	}
	names = append(names, keptBuiltins...)
	slices.Sort(names)
	return names
}

// templateCheck walks a parse tree and records what is not allowed.
type templateCheck struct {
	tree         *parse.Tree
	problems     []string
	usesIdentity bool
}

func (c *templateCheck) refuse(n parse.Node, format string, args ...any) {
	loc, _ := c.tree.ErrorContext(n)
	loc = strings.TrimPrefix(loc, c.tree.ParseName+":")
	c.problems = append(c.problems, "at "+loc+": "+fmt.Sprintf(format, args...))
}

// list checks a list of nodes; rootDot says whether dot is the template's
// data there (outside any with).
func (c *templateCheck) list(l *parse.ListNode, rootDot bool) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		c.node(n, rootDot)
	}
}

func (c *templateCheck) node(n parse.Node, rootDot bool) {
	switch n := n.(type) {
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		c.pipe(n.Pipe, rootDot)
	case *parse.IfNode:
		c.pipe(n.Pipe, rootDot)
		c.list(n.List, rootDot)
		c.list(n.ElseList, rootDot)
	case *parse.WithNode:
		c.pipe(n.Pipe, rootDot)
		c.list(n.List, false) // dot is the pipeline's value
		c.list(n.ElseList, rootDot)
	case *parse.RangeNode:
		c.refuse(n, "range is not allowed (a name template renders in one pass, without loops)")
	case *parse.TemplateNode:
		c.refuse(n, "template is not allowed (a name template cannot call templates)")
	default: // break, continue (only inside range) and anything a later Go adds
		c.refuse(n, "%s is not allowed", n)
	}
}

func (c *templateCheck) pipe(p *parse.PipeNode, rootDot bool) {
	if p == nil {
		return
	}
	for _, cmd := range p.Cmds {
		for _, arg := range cmd.Args {
			c.arg(arg, rootDot)
		}
		c.printArgs(cmd, rootDot)
	}
}

// printArgs refuses, in a call of print or printf, an argument that is
// the template's data or one of its maps: both take only scalars
// (name_template_print.go), and a render would fail on it. Arguments only
// known when rendering (in a with, through a pipe) are checked then.
func (c *templateCheck) printArgs(cmd *parse.CommandNode, rootDot bool) {
	if len(cmd.Args) == 0 {
		return
	}
	fn, ok := cmd.Args[0].(*parse.IdentifierNode)
	if !ok || (fn.Ident != "print" && fn.Ident != "printf") {
		return
	}
	for _, arg := range cmd.Args[1:] {
		var what string
		switch n := arg.(type) {
		case *parse.DotNode:
			if rootDot {
				what = "."
			}
		case *parse.FieldNode:
			if rootDot && len(n.Ident) == 1 && isMapField(n.Ident[0]) {
				what = n.String()
			}
		case *parse.VariableNode:
			if n.Ident[0] == "$" && (len(n.Ident) == 1 || (len(n.Ident) == 2 && isMapField(n.Ident[1]))) {
				what = n.String()
			}
		}
		if what != "" {
			c.refuse(arg, "%s takes strings, numbers and booleans, not %s (print a value of it, such as .EntityMetadata.team)", fn.Ident, what)
		}
	}
}

// isMapField tells whether a field of the template's data is a map.
func isMapField(name string) bool { return name == "EntityMetadata" || name == "AliasMetadata" }

func (c *templateCheck) arg(n parse.Node, rootDot bool) {
	switch n := n.(type) {
	case *parse.IdentifierNode:
		if !slices.Contains(allowedFunctions, n.Ident) {
			c.refuse(n, "function %q is not allowed (allowed: %s)", n.Ident, strings.Join(allowedFunctions, ", "))
		}
	case *parse.FieldNode:
		if rootDot {
			c.field(n, n.Ident[0])
		}
	case *parse.VariableNode:
		switch {
		case n.Ident[0] != "$":
		case len(n.Ident) == 1:
			c.usesIdentity = true // the whole data
		default:
			c.field(n, n.Ident[1])
		}
	case *parse.DotNode:
		if rootDot {
			c.usesIdentity = true // the whole data
		}
	case *parse.ChainNode:
		c.arg(n.Node, rootDot)
	case *parse.PipeNode:
		c.pipe(n, rootDot)
	}
}

// field checks a field of the template's data.
func (c *templateCheck) field(n parse.Node, name string) {
	switch {
	case slices.Contains(nameTemplateIdentities, name):
		c.usesIdentity = true
	case !slices.Contains(nameTemplateFields, name):
		c.refuse(n, ".%s is not a field (the fields are .%s)", name, strings.Join(nameTemplateFields, ", ."))
	}
}

// checkInput refuses a function argument over maxTemplateValue bytes.
func checkInput(fn, s string) error {
	if len(s) > maxTemplateValue {
		return fmt.Errorf("%s: argument longer than %d bytes", fn, maxTemplateValue)
	}
	return nil
}

// checkOutput refuses a function result over maxTemplateValue bytes.
func checkOutput(fn string, n int) error {
	if n > maxTemplateValue {
		return fmt.Errorf("%s: result longer than %d bytes", fn, maxTemplateValue)
	}
	return nil
}

// randomAlnum returns n random letters and digits (1 <= n <= 64): the SDK's
// random (base62, crypto/rand), with the bound a name needs.
func randomAlnum(n int) (string, error) {
	if n < 1 || n > 64 {
		return "", fmt.Errorf("random: length %d out of range 1..64", n)
	}
	return base62.Random(n)
}

// truncate keeps the first n bytes of s; unlike the SDK's it accepts 0.
func truncate(n int, s string) (string, error) {
	if n < 0 {
		return "", fmt.Errorf("truncate: negative length %d", n)
	}
	if err := checkInput("truncate", s); err != nil {
		return "", err
	}
	return s[:min(n, len(s))], nil
}

// truncateSHA256 keeps s when it has at most n bytes, else its first n-8
// bytes and 8 hex digits of the SHA-256 of the rest (the SDK's).
func truncateSHA256(n int, s string) (string, error) {
	if n <= 8 {
		return "", fmt.Errorf("truncate_sha256: length must be > 8 but was %d", n)
	}
	if err := checkInput("truncate_sha256", s); err != nil {
		return "", err
	}
	if len(s) <= n {
		return s, nil
	}
	h, _ := hashSHA256(s[n-8:])
	return s[:n-8] + h[:8], nil
}

func uppercase(s string) (string, error) { return caseMap("uppercase", strings.ToUpper, s) }

func lowercase(s string) (string, error) { return caseMap("lowercase", strings.ToLower, s) }

// caseMap applies f (which grows a string at most a few times) to a bounded s.
func caseMap(fn string, f func(string) string, s string) (string, error) {
	if err := checkInput(fn, s); err != nil {
		return "", err
	}
	out := f(s)
	return out, checkOutput(fn, len(out))
}

// replace replaces every old in s by new, refusing before it allocates a
// result over the bound.
func replace(old, new, s string) (string, error) {
	for _, in := range []string{old, new, s} {
		if err := checkInput("replace", in); err != nil {
			return "", err
		}
	}
	if n := strings.Count(s, old); n > 0 {
		if err := checkOutput("replace", len(s)+n*(len(new)-len(old))); err != nil {
			return "", err
		}
	}
	return strings.ReplaceAll(s, old, new), nil
}

func hashSHA256(s string) (string, error) {
	if err := checkInput("sha256", s); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:]), nil
}

func encodeBase64(s string) (string, error) {
	if err := checkOutput("base64", base64.StdEncoding.EncodedLen(len(s))); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString([]byte(s)), nil
}

func unixTime() string { return strconv.FormatInt(time.Now().Unix(), 10) }

func unixTimeMillis() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) }

// utcTimestamp is the current UTC time in a Go layout (the SDK's uses the
// server's local time).
func utcTimestamp(layout string) (string, error) {
	if err := checkInput("timestamp", layout); err != nil {
		return "", err
	}
	out := time.Now().UTC().Format(layout)
	return out, checkOutput("timestamp", len(out))
}

// cappedWriter collects a template's output and fails past its limit.
type cappedWriter struct {
	strings.Builder
	limit int
}

var errTemplateOutput = fmt.Errorf("the template renders more than %d bytes", maxTemplateOutput)

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.limit {
		return 0, errTemplateOutput
	}
	return w.Builder.Write(p)
}

// generate is the template's raw output.
func (t *nameTemplate) generate(data nameTemplateData) (string, error) {
	if t.builtin {
		return generateBuiltin(data)
	}
	w := &cappedWriter{limit: maxTemplateOutput}
	if err := t.tmpl.Execute(w, data); err != nil {
		return "", templateError(err)
	}
	return w.String(), nil
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

// validateNameTemplate checks a role's template at write time: the parse
// check, then a render with sample data, whose raw output must already be a
// valid Tooken name. The samples have no identity: a template must name a
// token even when the requester's entity lacks every key it reads.
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
