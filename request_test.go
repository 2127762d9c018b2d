package tooken

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// A typo in a field name is refused, names the field (and what it probably
// was), and changes nothing; a path's own captures are not counted as unknown.
func TestRequest_UnknownFieldsRefused(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)

	resp, err := e.write(configPath, map[string]any{"url": srv.URL(), "token": srv.RootSecret(), "request_timout": "10s"})
	mustUserError(t, resp, err, "request_timout: unknown field (did you mean request_timeout?); config takes ", "rotation_grace")
	if cfg, _ := readConfig(context.Background(), e.storage); cfg != nil {
		t.Fatal("config stored despite the unknown field")
	}

	e.configure(srv, nil)
	e.writeRole("ci", map[string]any{"scopes": "deployments:write", "ttl": "1h"})
	e.storage.reset()
	for name, tc := range map[string]struct {
		op   logical.Operation
		path string
		data map[string]any
		want []string
	}{
		"role typo":        {logical.UpdateOperation, "roles/ci", map[string]any{"tll": "2h"}, []string{"tll: unknown field (did you mean ttl?); roles/ci takes allow_token_management, description, identity_metadata, max_live_tokens, max_ttl, metadata, name_template, scopes, ttl"}},
		"two unknown":      {logical.UpdateOperation, "roles/ci", map[string]any{"zzz": "1", "ttl": "2h", "aaa": "2"}, []string{"aaa: unknown field; roles/ci takes", "zzz: unknown field; roles/ci takes"}},
		"creds":            {logical.ReadOperation, "creds/ci", map[string]any{"foo": "1"}, []string{"foo: unknown field"}},
		"rotate-root":      {logical.UpdateOperation, "rotate-root", map[string]any{"now": "true"}, []string{"now: unknown field; rotate-root takes no fields (with the CLI, write it with -f)"}},
		"tidy":             {logical.UpdateOperation, "tidy", map[string]any{"revoke_orphan": "true"}, []string{"revoke_orphan: unknown field (did you mean revoke_orphans?)"}},
		"tidy status":      {logical.ReadOperation, "tidy/status", map[string]any{"x": "1"}, []string{"x: unknown field; tidy/status takes no fields"}},
		"config delete":    {logical.DeleteOperation, configPath, map[string]any{"force": "true"}, []string{"force: unknown field"}},
		"list with a flag": {logical.ListOperation, "roles/", map[string]any{"after": "a"}, []string{"after: unknown field"}},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(srv.Tokens())
			req := e.request(tc.op, tc.path, tc.data)
			resp, err := e.handle(req)
			mustUserError(t, resp, err, tc.want...)
			if e.storage.puts.Load()+e.storage.deletes.Load() != 0 {
				t.Error("storage written")
			}
			if len(srv.Tokens()) != before {
				t.Error("a token was created upstream")
			}
		})
	}
	resp = must(t)(e.read("roles/ci"))
	if resp.Data["ttl"] != int64(3600) {
		t.Errorf("role changed: ttl %v", resp.Data["ttl"])
	}

	// The capture given again as a field must be the path's value (the UI
	// sends it); an empty write (vault write -f) is fine.
	must(t)(e.write("roles/ci", map[string]any{"name": "ci", "ttl": "2h"}))
	resp, err = e.write("roles/ci", map[string]any{"name": "other", "ttl": "3h"})
	mustUserError(t, resp, err, "name: differs from the value in the path roles/ci; leave it out of the data")
	must(t)(e.write("tidy", nil))
}

const leakMarker = "tok_test_LEAKMARKERabcdefghij0123456789"

// A value of the wrong type is refused with "<field>: expected <type>" (a
// field given twice: "given 2 times"), which never repeats it, and the existence check does not fail (Vault
// would log its error at ERROR, value included).
func TestRequest_TypeErrorsNeverRepeatTheValue(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	for name, tc := range map[string]struct {
		v    any
		want string
	}{
		"token given twice": {[]any{srv.RootSecret(), "oops"}, "token: given 2 times; give it once"},
		"token as a list":   {[]any{srv.RootSecret()}, "token: expected a string"},
		"token as a map":    {map[string]any{"a": srv.RootSecret()}, "token: expected a string"},
	} {
		t.Run(name, func(t *testing.T) {
			req := e.request(logical.UpdateOperation, configPath, map[string]any{"url": srv.URL(), "token": tc.v})
			found, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
			if err != nil || !found || exists {
				t.Fatalf("existence check: found %v exists %v err %v", found, exists, err)
			}
			req.Operation = logical.CreateOperation
			resp, err := e.handle(req)
			mustUserError(t, resp, err, tc.want)
			if msg := resp.Error().Error(); strings.Contains(msg, srv.RootSecret()) || msg != tc.want {
				t.Errorf("message %q", msg)
			}
		})
	}
	if cfg, _ := readConfig(context.Background(), e.storage); cfg != nil {
		t.Fatal("config stored")
	}
	// A number is a string to the SDK; it is then no Tooken secret.
	resp, err := e.write(configPath, map[string]any{"url": srv.URL(), "token": 12345})
	mustUserError(t, resp, err, "token: not a Tooken secret")
}

// Path captures that storage refuses (..) answer 400 on every operation,
// and the existence check does not fail.
func TestRequest_BadCaptureRefused(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	req := e.request(logical.UpdateOperation, "roles/a..b", map[string]any{"scopes": "deployments:write"})
	if _, _, err := e.b.HandleExistenceCheck(context.Background(), req); err != nil {
		t.Fatalf("existence check: %v", err)
	}
	for _, req := range []*logical.Request{
		req,
		e.request(logical.ReadOperation, "roles/a..b", nil),
		e.request(logical.DeleteOperation, "roles/a..b", nil),
		e.request(logical.ReadOperation, "creds/a..b", nil),
	} {
		resp, err := e.handle(req)
		mustUserError(t, resp, err, `name: must not contain ".."`)
	}
}

// samplePath is a request path that a path's pattern matches: its literal
// start, and "x" for its capture.
func samplePath(p *framework.Path) string {
	lit, _, hasCapture := strings.Cut(strings.TrimPrefix(p.Pattern, "^"), "(")
	lit = strings.TrimSuffix(strings.TrimSuffix(lit, "$"), "?")
	if hasCapture {
		lit += "x"
	}
	return lit
}

// badValues are values that some field type refuses, each carrying a
// secret-shaped marker that no answer may repeat.
var badValues = []any{
	map[string]any{"a": map[string]any{"b": leakMarker}},
	[]any{leakMarker, "oops"},
	leakMarker,
}

// goSyntax is what an answer meant for a person must not show.
var goSyntax = regexp.MustCompile(`%!|&logical\.|\*framework|map\[|\[\]|interface \{|json\.Number|'`)

// Every operation of every path, given an unknown field or a value of the
// wrong type for any of its fields, answers one 400 line that names the
// field, shows no Go syntax and repeats no value, and stores nothing.
func TestRequest_EveryPathBadInputShape(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	e.writeRole("x", map[string]any{"scopes": "deployments:write"})
	check := func(t *testing.T, req *logical.Request, field string) {
		t.Helper()
		e.storage.reset()
		if req.Operation == logical.UpdateOperation || req.Operation == logical.CreateOperation {
			if _, _, err := e.b.HandleExistenceCheck(context.Background(), req); err != nil {
				t.Fatalf("existence check: %v", err)
			}
		}
		resp, err := e.handle(req)
		mustUserError(t, resp, err, field+": ")
		if resp == nil {
			return
		}
		msg := resp.Error().Error()
		if !strings.HasPrefix(msg, field+": ") || strings.Contains(msg, "\n") || goSyntax.MatchString(msg) || strings.Contains(msg, "LEAKMARKER") {
			t.Errorf("%s %s: message %q", req.Operation, req.Path, msg)
		}
		if n := e.storage.puts.Load() + e.storage.deletes.Load(); n != 0 {
			t.Errorf("%s %s: %d storage writes", req.Operation, req.Path, n)
		}
	}
	ops := 0
	for _, p := range e.b.Paths {
		path := samplePath(p)
		if r, _ := matchRoute(e.b.routes, path); r == nil || r.path != p {
			t.Fatalf("sample path %q does not match %q: teach samplePath this pattern", path, p.Pattern)
		}
		for op := range p.Operations {
			ops++
			t.Run(string(op)+" "+path, func(t *testing.T) {
				check(t, e.request(op, path, map[string]any{"no_such_field": leakMarker}), "no_such_field")
				for name, schema := range p.Fields {
					if strings.Contains(p.Pattern, "<"+name+">") {
						continue // a capture: the path's value wins
					}
					for _, v := range badValues {
						if !fieldConverts(name, v, schema) {
							check(t, e.request(op, path, map[string]any{name: v}), name)
							break
						}
					}
				}
			})
		}
	}
	if ops < 11 {
		t.Errorf("walked %d operations", ops)
	}
}

// The request layer routes as the SDK does: anchored patterns, first match
// wins, and no route for what the SDK does not route.
func TestRequest_RoutesLikeTheSDK(t *testing.T) {
	e := getTestBackend(t)
	for _, path := range []string{"config", "xconfig", "config/x", "roles/", "roles", "roles/x", "roles/x/y", "creds/x", "creds/",
		"rotate-root", "tidy", "tidy/status", "tidy/x", "", "other"} {
		r, _ := matchRoute(e.b.routes, path)
		want := e.b.Route(path)
		if (r == nil) != (want == nil) || (r != nil && r.path != want) {
			t.Errorf("%q: request layer routes to %v, the SDK to %v", path, r, want)
		}
	}
	// An unknown path is the SDK's to answer (unsupported path), fields or not.
	_, err := e.handle(e.request(logical.UpdateOperation, "xconfig", map[string]any{"x": 1}))
	if err != logical.ErrUnsupportedPath {
		t.Errorf("unknown path: %v", err)
	}
}

func TestRequest_ClosestField(t *testing.T) {
	fields := []string{"max_ttl", "metadata", "scopes", "ttl"}
	for in, want := range map[string]string{
		"tll": "ttl", "ttl2": "ttl", "scope": "scopes", "max-ttl": "max_ttl", "colour": "", "": "",
		strings.Repeat("a", 100): "",
	} {
		if got := closestField(in, fields); got != want {
			t.Errorf("closestField(%q) = %q, want %q", in, got, want)
		}
	}
}

// Unknown field names are the caller's: one may be a secret pasted in the
// wrong place, or a megabyte long, and the answer goes whole into the audit
// log's error field. An answer names at most five, each shortened and
// redacted, and says how many more there are: its size is bounded whatever
// the request.
func TestRequest_UnknownFieldNamesBounded(t *testing.T) {
	e := getTestBackend(t)
	t.Run("secret-shaped and huge names", func(t *testing.T) {
		secret := "tok_test_" + strings.Repeat("S", 30)
		huge := strings.Repeat("k", 1<<20)
		resp, err := e.write(configPath, map[string]any{secret: "x", huge: "y"})
		if err != nil {
			t.Fatal(err)
		}
		msg := resp.Error().Error()
		if strings.Contains(msg, secret) || len(msg) > 64<<10 {
			t.Fatalf("the answer (%d bytes) repeats the unknown field names: contains the secret-shaped name: %v", len(msg), strings.Contains(msg, secret))
		}
		mustUserError(t, resp, err, `"[redacted secret]": unknown field; config takes`, `"`+strings.Repeat("k", 40)+`...": unknown field`)
	})
	t.Run("many unknown fields", func(t *testing.T) {
		data, in := map[string]any{}, 0
		for i := range 50000 {
			k := "f" + strconv.Itoa(i)
			data[k] = ""
			in += len(k) + 4 // "k":"" plus a comma, as JSON
		}
		resp, err := e.handle(e.request(logical.ReadOperation, "creds/r", data))
		if err != nil {
			t.Fatal(err)
		}
		if out := len(resp.Error().Error()); out > 64<<10 {
			t.Fatalf("a creds read with %d unknown query fields (%d KiB) answered an error of %d KiB", len(data), in>>10, out>>10)
		}
		mustUserError(t, resp, err, "f0: unknown field", "and 49995 more unknown fields")
		if n := strings.Count(resp.Error().Error(), ": unknown field"); n != maxUnknownReported {
			t.Errorf("%d names reported, want %d", n, maxUnknownReported)
		}
	})
}

// A CLI flag written after the path (vault read PATH -format=json) reaches
// the engine as a field named -format: the answer says where flags go, for
// the operation used, and never to write a read with -f.
func TestRequest_CLIFlagAfterThePath(t *testing.T) {
	e := getTestBackend(t)
	for name, tc := range map[string]struct {
		op   logical.Operation
		path string
		want string
	}{
		"read":  {logical.ReadOperation, "tidy/status", "-format: a CLI flag after the path is read as a field; CLI flags go before the path (vault read -format=... tooken/tidy/status)"},
		"write": {logical.UpdateOperation, "rotate-root", "-format: a CLI flag after the path is read as a field; CLI flags go before the path (vault write -format=... tooken/rotate-root)"},
		"list":  {logical.ListOperation, "roles/", "(vault list -format=... tooken/roles/)"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.handle(e.request(tc.op, tc.path, map[string]any{"-format": "json"}))
			mustUserError(t, resp, err, tc.want)
			if strings.Contains(resp.Error().Error(), "-f)") {
				t.Errorf("%q tells to write it with -f", resp.Error())
			}
		})
	}
	// A path without fields read with a stray field: no "-f" hint on a read.
	resp, err := e.read("tidy/status")
	must(t)(resp, err)
	resp, err = e.handle(e.request(logical.ReadOperation, "tidy/status", map[string]any{"x": "1"}))
	mustUserError(t, resp, err, "x: unknown field; tidy/status takes no fields")
	if strings.Contains(resp.Error().Error(), "-f") {
		t.Errorf("a read told to write with -f: %q", resp.Error())
	}
}

// A field given twice (ttl=1h ttl=2h on the CLI: a list) says so, for every
// field that takes one value; fields that take a list take it.
func TestRequest_FieldGivenTwice(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	e.configure(srv, nil)
	resp, err := e.write("roles/ci", map[string]any{"scopes": "deployments:write", "ttl": []any{"1h", "2h"}, "max_ttl": []any{"1h", "2h", "3h"}})
	mustUserError(t, resp, err, "ttl: given 2 times; give it once", "max_ttl: given 3 times; give it once")
	if r, _ := readRole(context.Background(), e.storage, "ci"); r != nil {
		t.Fatal("role stored")
	}
	must(t)(e.write("roles/ci", map[string]any{"scopes": []any{"deployments:write", "deployments:read"}, "metadata": []any{"team=a", "env=b"}}))
	resp, err = e.handle(e.request(logical.ReadOperation, "creds/ci", map[string]any{"ttl": []string{"5m", "10m"}}))
	mustUserError(t, resp, err, "ttl: given 2 times; give it once")
}

// A wrong value of a duration, number or flag is quoted back, shortened and
// with anything shaped like a Tooken secret redacted (a secret pasted into
// the wrong field); a string field's never is.
func TestRequest_WrongValueQuotedUnlessText(t *testing.T) {
	srv := newEmulator(t, tookentest.Options{})
	e := getTestBackend(t)
	for name, tc := range map[string]struct {
		data       map[string]any
		want, omit string
	}{
		"a duration":             {map[string]any{"scopes": "a:read", "ttl": "1hour"}, `ttl: expected a duration such as 90s, 15m, 2h or 7d, or a whole number of seconds (0 or more); got "1hour"`, ""},
		"a secret as a duration": {map[string]any{"scopes": "a:read", "ttl": srv.RootSecret()}, `ttl: expected a duration such as 90s, 15m, 2h or 7d, or a whole number of seconds (0 or more); got "[redacted secret]"`, srv.RootSecret()},
		"a long value":           {map[string]any{"scopes": "a:read", "max_live_tokens": strings.Repeat("9x", 500)}, `max_live_tokens: expected an integer; got "` + strings.Repeat("9x", 20) + `..."`, strings.Repeat("9x", 21)},
		"a flag":                 {map[string]any{"scopes": "a:read", "allow_token_management": "maybe"}, `allow_token_management: expected true or false; got "maybe"`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.write("roles/r", tc.data)
			mustUserError(t, resp, err, tc.want)
			if msg := resp.Error().Error(); msg != tc.want || (tc.omit != "" && strings.Contains(msg, tc.omit)) {
				t.Errorf("message %q, want %q", msg, tc.want)
			}
		})
	}
	if roles, _ := listRoles(context.Background(), e.storage); len(roles) != 0 {
		t.Fatalf("roles stored: %v", roles)
	}
}
