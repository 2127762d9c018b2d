package tooken

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// The request layer. Every request routed to one of the mount's paths is
// checked against that path's Fields before the SDK converts anything:
//
//   - a field the path does not declare is refused (400 naming it), where
//     the SDK would ignore it and a typo (tll=2h) would answer "Success!";
//   - a value that cannot be converted to its field's type is refused with
//     "<field>: expected <type>", which never repeats the value. The SDK's own
//     message quotes the raw value (a secret given twice on the CLI becomes a
//     list, quoted in the answer, the audit log's error field and Vault's
//     ERROR log);
//   - a path capture containing ".." is refused: storage rejects such keys;
//     a capture given again in the data must have the path's value;
//   - key=value pairs given as strings are read by parseKVPairs, which takes
//     the forms a CLI user tries (comma-separated, repeated), into the map
//     the SDK then converts.
//
// The existence check (which Vault runs before every write, and whose errors
// it logs at ERROR) never fails for those: it answers from the path captures
// alone, or without reading anything when they are bad, and the request is
// then refused by HandleRequest.

// route is one path of the backend with its compiled pattern, matched in
// the order of the backend's Paths as the SDK's router does.
type route struct {
	path     *framework.Path
	re       *regexp.Regexp
	captures []string // names of the pattern's capture groups
}

// newRoutes compiles the paths' patterns anchored at both ends, as the SDK
// does when it routes.
func newRoutes(paths []*framework.Path) []route {
	out := make([]route, 0, len(paths))
	for _, p := range paths {
		pattern := p.Pattern
		if !strings.HasPrefix(pattern, "^") {
			pattern = "^" + pattern
		}
		if !strings.HasSuffix(pattern, "$") {
			pattern += "$"
		}
		re := regexp.MustCompile(pattern)
		var names []string
		for _, n := range re.SubexpNames() {
			if n != "" {
				names = append(names, n)
			}
		}
		out = append(out, route{path: p, re: re, captures: names})
	}
	return out
}

// matchRoute is the route of a request path and the values of its captures;
// nil when no path matches (the SDK then answers "unsupported path").
func matchRoute(routes []route, path string) (*route, map[string]string) {
	for i := range routes {
		m := routes[i].re.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		captures := make(map[string]string, len(routes[i].captures))
		for j, name := range routes[i].re.SubexpNames() {
			if name != "" {
				captures[name] = m[j]
			}
		}
		return &routes[i], captures
	}
	return nil, nil
}

// HandleRequest checks the request's fields (see above), then lets the SDK
// route it. The OpenAPI document (the help of the root path) gets its schema
// references inlined (openapi.go).
func (b *tookenBackend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if req.Operation == logical.HelpOperation && req.Path == "" {
		resp, err := b.Backend.HandleRequest(ctx, req)
		inlineOpenAPIRefs(resp)
		return resp, err
	}
	data, err := b.checkRequest(req)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	req.Data = data
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck runs the path's existence check, on the path
// captures alone when the request's fields are bad (HandleRequest refuses
// it afterwards), and not at all when a capture is bad: then the write
// counts as a create, and is refused.
func (b *tookenBackend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (checkFound, exists bool, err error) {
	r, captures := matchRoute(b.routes, req.Path)
	data, cerr := checkRoute(req, r, captures)
	if r == nil || cerr == nil {
		req.Data = data
		return b.Backend.HandleExistenceCheck(ctx, req)
	}
	if r.path.ExistenceCheck == nil {
		return false, false, nil
	}
	if captureProblems(captures) != nil {
		return true, false, nil
	}
	raw := make(map[string]any, len(captures))
	for k, v := range captures {
		raw[k] = v
	}
	exists, err = r.path.ExistenceCheck(ctx, req, &framework.FieldData{Raw: raw, Schema: r.path.Fields})
	return true, exists, err
}

// checkRequest reports every problem with a request's path captures and
// fields at once, or returns the request's data with key=value pairs given
// as strings read into maps (see parseKVPairs); the data as it is when the
// request goes to no operation of a path (help, renew, revoke, an
// unsupported path or operation: the SDK answers those).
func (b *tookenBackend) checkRequest(req *logical.Request) (map[string]any, error) {
	// Nothing to check (the common creds read): no routing work either.
	if req.Operation == logical.HelpOperation || len(req.Data) == 0 && !strings.Contains(req.Path, "..") {
		return req.Data, nil
	}
	r, captures := matchRoute(b.routes, req.Path)
	return checkRoute(req, r, captures)
}

// checkRoute is checkRequest for a request whose path matched route r (nil:
// none) with captures.
func checkRoute(req *logical.Request, r *route, captures map[string]string) (map[string]any, error) {
	if r == nil {
		return req.Data, nil
	}
	if _, ok := r.path.Operations[req.Operation]; !ok {
		return req.Data, nil
	}
	errs := captureProblems(captures)
	data, cloned := req.Data, false
	var unknown []string
	for _, k := range slices.Sorted(maps.Keys(req.Data)) {
		if _, known := r.path.Fields[k]; !known && !r.path.TakesArbitraryInput {
			unknown = append(unknown, k)
			continue
		}
		v, err := checkField(r, captures, req.Path, k, req.Data[k])
		switch {
		case err != nil:
			errs = append(errs, err)
		case v != nil:
			if !cloned {
				data, cloned = maps.Clone(req.Data), true
			}
			data[k] = v
		}
	}
	errs = append(errs, unknownFields(unknown, req, r)...)
	return data, errors.Join(errs...)
}

// checkField checks one field of a request to route r that the path
// declares. It returns the field's value read into what the SDK takes when
// the SDK would read it wrongly (key=value pairs given as strings), else
// nil.
func checkField(r *route, captures map[string]string, reqPath, k string, v any) (any, error) {
	if c, isCapture := captures[k]; isCapture {
		// The UI may send the path's value again; another value is a
		// mistake the SDK would silently override.
		if s, ok := v.(string); !ok || s != c {
			return nil, fmt.Errorf("%s: differs from the value in the path %s; leave it out of the data", k, reqPath)
		}
		return nil, nil
	}
	schema, ok := r.path.Fields[k]
	if !ok {
		return nil, nil // TakesArbitraryInput
	}
	if n := givenTimes(v); n > 1 && !takesList(schema.Type) {
		// The CLI makes a list of a field given twice (ttl=1h ttl=2h).
		return nil, fmt.Errorf("%s: given %d times; give it once", k, n)
	}
	if strs, isStrings := pairStrings(v); isStrings && schema.Type == framework.TypeKVPairs {
		md, err := parseKVPairs(k, strs)
		if err != nil {
			return nil, err
		}
		return md, nil
	}
	if !fieldConverts(k, v, schema) {
		return nil, fmt.Errorf("%s: expected %s%s", k, typeDescription(schema.Type), givenValue(v, schema))
	}
	return nil, nil
}

// givenValue quotes a wrong value back to its caller ("; got ..."), shortened
// and with anything shaped like a Tooken secret redacted, for the fields
// whose values are not text: a duration, number or flag holds no secret of
// its own (a string field, which may be a secret given in the wrong place,
// is never quoted).
func givenValue(v any, schema *framework.FieldSchema) string {
	str, ok := v.(string)
	if !ok || (schema.DisplayAttrs != nil && schema.DisplayAttrs.Sensitive) {
		return ""
	}
	switch schema.Type {
	case framework.TypeDurationSecond, framework.TypeSignedDurationSecond, framework.TypeInt,
		framework.TypeInt64, framework.TypeFloat, framework.TypeBool:
		return "; got " + quoteShort(tookenapi.RedactSecrets(str))
	}
	return ""
}

// captureProblems refuses path captures that cannot be storage keys.
func captureProblems(captures map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(captures)) {
		if strings.Contains(captures[k], "..") {
			errs = append(errs, fmt.Errorf("%s: must not contain \"..\"", k))
		}
	}
	return errs
}

// fieldConverts reports whether the SDK can convert v to the field's type.
// The SDK's error is dropped: it quotes the value.
func fieldConverts(k string, v any, schema *framework.FieldSchema) bool {
	d := &framework.FieldData{Raw: map[string]any{k: v}, Schema: map[string]*framework.FieldSchema{k: schema}}
	_, _, err := d.GetOkErr(k)
	return err == nil
}

// pairStrings is a key=value pairs value given as strings: one string, or a
// list of strings (the field repeated on the CLI, or a form's repeated key).
func pairStrings(v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []string:
		return v, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// parseKVPairs reads key=value pairs given as strings, comma-separated in
// one string (metadata=team=platform,env=dev), the field repeated
// (metadata=team=platform metadata=env=dev), or both. A comma starts a new
// pair only when what follows it holds "=": note=a,b is one pair whose value
// is "a,b". Keys and values are trimmed; an empty string is no pairs. A key
// given twice is refused. (The SDK reads a string as one pair, so that
// team=platform,env=dev gives team the value "platform,env=dev".)
func parseKVPairs(field string, strs []string) (map[string]string, error) {
	md := make(map[string]string)
	for _, s := range strs {
		if strings.TrimSpace(s) == "" {
			continue
		}
		last := ""
		for _, piece := range strings.Split(s, ",") {
			k, v, isPair := strings.Cut(piece, "=")
			k = strings.TrimSpace(k)
			switch _, dup := md[k]; {
			case !isPair && last == "":
				return nil, fmt.Errorf("%s: expected key=value pairs, e.g. team=platform,env=dev", field)
			case !isPair:
				md[last] = strings.TrimSpace(md[last] + "," + piece)
			case k == "":
				return nil, fmt.Errorf("%s: a pair has an empty key; write key=value", field)
			case dup:
				return nil, fmt.Errorf("%s: key %s is given twice", field, quoteShort(k))
			default:
				md[k], last = strings.TrimSpace(v), k
			}
		}
	}
	return md, nil
}

// maxUnknownReported bounds how many unknown field names an answer
// repeats: the names are the caller's (one may be a secret pasted in the
// wrong place, or a megabyte long), and the answer goes whole into the
// audit log's error field, which Vault does not HMAC.
const maxUnknownReported = 5

// unknownFields reports the fields (names, sorted) that the path of route r
// does not take: the first maxUnknownReported, each shortened and redacted
// (fieldName) with the closest of the path's fields when the name looks
// like a typo of it, then how many more there are. A name starting with "-"
// is a CLI flag written after the path.
func unknownFields(names []string, req *logical.Request, r *route) []error {
	var fields []string
	for name := range r.path.Fields {
		if !slices.Contains(r.captures, name) {
			fields = append(fields, name)
		}
	}
	slices.Sort(fields)
	var errs []error
	for i, k := range names {
		if i == maxUnknownReported {
			errs = append(errs, fmt.Errorf("and %d more unknown fields", len(names)-i))
			break
		}
		errs = append(errs, unknownField(k, req, fields))
	}
	return errs
}

// unknownField names one field k that the request's path does not take,
// and what the path takes (fields, sorted).
func unknownField(k string, req *logical.Request, fields []string) error {
	name := fieldName(k)
	if strings.HasPrefix(k, "-") {
		flag, _, _ := strings.Cut(strings.TrimLeft(k, "-"), "=")
		return fmt.Errorf("%s: a CLI flag after the path is read as a field; CLI flags go before the path (vault %s -%s=... %s%s)",
			name, cliVerb(req.Operation), fieldName(flag), req.MountPoint, req.Path)
	}
	if len(fields) == 0 {
		hint := ""
		if req.Operation == logical.UpdateOperation || req.Operation == logical.CreateOperation {
			hint = " (with the CLI, write it with -f)"
		}
		return fmt.Errorf("%s: unknown field; %s takes no fields%s", name, req.Path, hint)
	}
	hint := ""
	if s := closestField(k, fields); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	}
	return fmt.Errorf("%s: unknown field%s; %s takes %s", name, hint, req.Path, strings.Join(fields, ", "))
}

// plainFieldName is a field name an answer may repeat as it is.
var plainFieldName = regexp.MustCompile(`^-{0,2}[A-Za-z0-9_.]{1,40}$`)

// fieldName is a caller's field name as an answer repeats it: as given when
// it is short and plain, else quoted, shortened to 40 characters, with
// anything shaped like a Tooken secret redacted.
func fieldName(k string) string {
	if plainFieldName.MatchString(k) && !strings.Contains(k, "tok_") {
		return k
	}
	return quoteShort(tookenapi.RedactSecrets(k))
}

// cliVerb is the vault command of an operation.
func cliVerb(op logical.Operation) string {
	switch op {
	case logical.ReadOperation:
		return "read"
	case logical.ListOperation:
		return "list"
	case logical.DeleteOperation:
		return "delete"
	}
	return "write"
}

// givenTimes is how many values v holds when it is a list (a field given
// more than once on the CLI or in a query string), else 1.
func givenTimes(v any) int {
	switch v := v.(type) {
	case []any:
		return len(v)
	case []string:
		return len(v)
	}
	return 1
}

// takesList tells whether a field type takes a list of values.
func takesList(t framework.FieldType) bool {
	switch t {
	case framework.TypeCommaStringSlice, framework.TypeStringSlice, framework.TypeCommaIntSlice,
		framework.TypeKVPairs, framework.TypeSlice, framework.TypeHeader:
		return true
	}
	return false
}

// closestField is the field within two edits of k, if there is one.
func closestField(k string, fields []string) string {
	if len(k) > 64 {
		return "" // bound the work on caller-chosen names
	}
	best, bestDist := "", 3
	for _, f := range fields {
		if d := editDistance(k, f); d < bestDist {
			best, bestDist = f, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// typeDescription says what a value of a field type looks like, for a
// caller who gave something else.
func typeDescription(t framework.FieldType) string {
	switch t {
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString:
		return "a string"
	case framework.TypeInt, framework.TypeInt64:
		return "an integer"
	case framework.TypeFloat:
		return "a number"
	case framework.TypeBool:
		return "true or false"
	case framework.TypeDurationSecond:
		return "a duration such as 90s, 15m, 2h or 7d, or a whole number of seconds (0 or more)"
	case framework.TypeSignedDurationSecond:
		return "a duration such as 90s, 15m, 2h or 7d, or a whole number of seconds"
	case framework.TypeCommaStringSlice, framework.TypeStringSlice:
		return "a comma-separated string or a list of strings"
	case framework.TypeCommaIntSlice:
		return "a comma-separated list of integers"
	case framework.TypeKVPairs:
		return "key=value pairs (comma-separated, or the field repeated) or an object of strings"
	case framework.TypeMap:
		return "an object"
	case framework.TypeSlice:
		return "a list"
	case framework.TypeTime:
		return "an RFC 3339 time"
	default:
		return "a value of type " + t.String()
	}
}
