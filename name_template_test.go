package tooken

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/uuid"
	sdktemplate "github.com/hashicorp/vault/sdk/helper/template"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/tookentest"
)

// legacyNameTemplateFuncs are the functions of the engine's name templates
// before they moved onto sdk/helper/template: the reference that
// TestNameTemplate_SameAsBefore holds the SDK-based rendering to.
func legacyNameTemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"random": func(n int) (string, error) {
			if n < 1 || n > 64 {
				return "", fmt.Errorf("random: length %d out of range 1..64", n)
			}
			return rand.Text()[:min(n, 26)] + strings.Repeat("A", max(n-26, 0)), nil
		},
		"truncate": func(n int, s string) (string, error) {
			if n < 0 {
				return "", fmt.Errorf("truncate: negative length %d", n)
			}
			if len(s) > n {
				return s[:n], nil
			}
			return s, nil
		},
		"lowercase": strings.ToLower,
		"uppercase": strings.ToUpper,
		"replace":   func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"unix_time": func() int64 { return time.Now().Unix() },
		"timestamp": func(layout string) string { return time.Now().UTC().Format(layout) },
		"uuid":      uuid.NewString,
	}
}

func legacyGenerate(raw string, data nameTemplateData) (string, error) {
	t, err := template.New("name_template").Option("missingkey=error").Funcs(legacyNameTemplateFuncs()).Parse(raw)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	err = t.Execute(&sb, data)
	return sb.String(), err
}

// Every documented function renders as it did before the SDK: the same text,
// or for random, uuid and the clock the same shape; what failed still fails.
func TestNameTemplate_SameAsBefore(t *testing.T) {
	shapes := map[string]*regexp.Regexp{
		"random": regexp.MustCompile(`[A-Za-z0-9]`),
		"uuid":   regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`),
		"unix":   regexp.MustCompile(`[0-9]{10}`),
	}
	cases := []struct {
		name, tmpl string
		shape      string // "" = the same text
	}{
		{"default", defaultNameTemplate, "random"},
		{"uppercase", "{{ .RoleName | uppercase }}-{{ .DisplayName | uppercase }}", ""},
		{"lowercase", "{{ .RoleName | lowercase }}", ""},
		{"replace", `{{ .DisplayName | replace "-" "_" }}`, ""},
		{"truncate", "{{ .RoleName | truncate 3 }}.{{ truncate 100 .DisplayName }}", ""},
		{"truncate 0", "x{{ .RoleName | truncate 0 }}", ""},
		{"truncate negative", "{{ .RoleName | truncate -1 }}", ""},
		{"random", "r-{{ random 12 }}", "random"},
		{"random 64", "{{ random 64 }}", "random"},
		{"random 0", "x{{ random 0 }}", ""},
		{"random 65", "x{{ random 65 }}", ""},
		{"uuid", "id-{{ uuid }}", "uuid"},
		{"unix_time", "t{{ unix_time }}", "unix"},
		{"timestamp", `{{ timestamp "2006-01-02" }}-{{ .RoleName }}`, ""},
		{"pipeline", `{{ .RoleName | replace "-" "." | uppercase | truncate 6 }}`, ""},
		{"with", "{{ with .DisplayName }}{{ . }}{{ else }}none{{ end }}", ""},
		{"unknown field", "{{ .Nope }}", ""},
	}
	datas := []nameTemplateData{
		newNameTemplateData("ci-deploy", "userpass-alice"),
		newNameTemplateData("r", ""),
		newNameTemplateData(strings.Repeat("x", 80), "oidc-bob@example.com"),
	}
	for _, tc := range cases {
		for i, data := range datas {
			t.Run(fmt.Sprintf("%s/%d", tc.name, i), func(t *testing.T) {
				want, werr := legacyGenerate(tc.tmpl, data)
				tmpl, perr := parseNameTemplate(tc.tmpl)
				var got string
				gerr := perr
				if perr == nil {
					got, gerr = tmpl.generate(data)
				}
				if (werr == nil) != (gerr == nil) {
					t.Fatalf("before: %q, %v; now: %q, %v", want, werr, got, gerr)
				}
				if werr != nil {
					return
				}
				if re := shapes[tc.shape]; re != nil {
					want, got = re.ReplaceAllString(want, "#"), re.ReplaceAllString(got, "#")
				}
				if got != want {
					t.Errorf("before %q, now %q", want, got)
				}
			})
		}
	}
}

// unix_time is the current Unix time in seconds, as before.
func TestNameTemplate_UnixTime(t *testing.T) {
	tmpl, err := parseNameTemplate("{{ unix_time }}")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.generate(newNameTemplateData("r", ""))
	n, perr := strconv.ParseInt(out, 10, 64)
	if err != nil || perr != nil || time.Since(time.Unix(n, 0)).Abs() > 5*time.Second {
		t.Fatalf("unix_time %q (%v, %v)", out, err, perr)
	}
}

// random draws letters and digits, and two draws differ.
func TestNameTemplate_RandomCharset(t *testing.T) {
	tmpl, err := parseNameTemplate("{{ random 64 }}")
	if err != nil {
		t.Fatal(err)
	}
	a, err1 := tmpl.generate(nameTemplateData{})
	b, err2 := tmpl.generate(nameTemplateData{})
	if err1 != nil || err2 != nil || a == b || !regexp.MustCompile(`^[A-Za-z0-9]{64}$`).MatchString(a) {
		t.Fatalf("random 64: %q %q (%v %v)", a, b, err1, err2)
	}
}

// The functions keep the SDK's results: every SDK template function, on
// ordinary input, renders what sdk/helper/template renders. (random, uuid and
// the clock are compared by shape; the SDK's timestamp is local time, so the
// layout used has no zone-dependent part only when TZ is UTC: it is left
// to TestNameTemplate_SameAsBefore.)
func TestNameTemplate_SameAsSDK(t *testing.T) {
	shapes := map[string]*regexp.Regexp{
		"random": regexp.MustCompile(`[A-Za-z0-9]{12}`),
		"uuid":   regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`),
		"clock":  regexp.MustCompile(`[0-9]{10,13}`),
	}
	cases := []struct{ name, tmpl, shape string }{
		{"truncate", "{{ .RoleName | truncate 5 }}", ""},
		{"truncate longer", "{{ .RoleName | truncate 500 }}", ""},
		{"truncate_sha256", "{{ .RoleName | truncate_sha256 20 }}", ""},
		{"truncate_sha256 short", "{{ .DisplayName | truncate_sha256 200 }}", ""},
		{"uppercase", "{{ .RoleName | uppercase }}", ""},
		{"lowercase", "{{ .DisplayName | lowercase }}", ""},
		{"replace", `{{ .DisplayName | replace "-" "_" }}`, ""},
		{"replace empty old", `{{ .RoleName | replace "" "." }}`, ""},
		{"sha256", "{{ .RoleName | sha256 }}", ""},
		{"base64", "{{ .DisplayName | base64 }}", ""},
		{"random", "{{ random 12 }}", "random"},
		{"uuid", "{{ uuid }}", "uuid"},
		{"unix_time", "{{ unix_time }}", "clock"},
		{"unix_time_millis", "{{ unix_time_millis }}", "clock"},
		{"builtins", `{{ if and (eq .RoleName "ci-deploy") (not (eq .DisplayName "")) }}{{ len .RoleName }}-{{ slice .RoleName 0 2 }}{{ end }}`, ""},
		{"print", `{{ print .RoleName "-" .DisplayName }}`, ""},
		{"printf", `{{ printf "%s.%-12s.%08d" .RoleName .DisplayName 42 }}`, ""},
	}
	data := newNameTemplateData("ci-deploy", "userpass-Alice")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sdk, err := sdktemplate.NewTemplate(sdktemplate.Template(tc.tmpl))
			if err != nil {
				t.Fatal(err)
			}
			want, err := sdk.Generate(data)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := parseNameTemplate(tc.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.generate(data)
			if err != nil {
				t.Fatal(err)
			}
			if re := shapes[tc.shape]; re != nil {
				want, got = re.ReplaceAllString(want, "#"), re.ReplaceAllString(got, "#")
			}
			if got != want {
				t.Errorf("SDK %q, here %q", want, got)
			}
		})
	}
}

// What could loop, recurse or grow without bound is refused when the
// template is parsed (role write, and role load), with a message that says
// what and where.
func TestNameTemplate_Refused(t *testing.T) {
	cases := []struct{ name, tmpl, want string }{
		{"range over a number", "{{ range 30000000 }}{{ uuid }}{{ end }}", "range is not allowed"},
		{"range behind a branch on the caller", `{{ if eq .DisplayName "token" "userpass-alice" "" }}ok{{ else }}{{ range 1000000000 }}{{ end }}x{{ end }}`, "range is not allowed"},
		{"range over data", "{{ range .AliasMetadata }}x{{ end }}", "range is not allowed"},
		{"range in a with", "{{ with .DisplayName }}{{ range 3 }}{{ end }}{{ end }}", "range is not allowed"},
		{"define", `{{ define "x" }}a{{ end }}b`, "define and block are not allowed"},
		{"define only", `{{ define "x" }}a{{ end }}`, "define and block are not allowed"},
		{"block", `{{ block "x" . }}a{{ end }}`, "define and block are not allowed"},
		{"template", `a{{ template "x" }}`, "template is not allowed"},
		{"html", "{{ .RoleName | html }}", `function "html" is not allowed`},
		{"js", "{{ js .RoleName }}", `function "js" is not allowed`},
		{"urlquery", "{{ urlquery .RoleName }}", `function "urlquery" is not allowed`},
		{"call", "{{ call .RoleName }}", `function "call" is not allowed`},
		{"println", "{{ println .RoleName }}", `function "println" is not allowed`},
		{"function in a nested pipeline", "x{{ (.RoleName | html) | truncate 3 }}", `function "html" is not allowed`},
		{"function in an else branch", "x{{ if .DisplayName }}a{{ else }}{{ js .RoleName }}{{ end }}", `function "js" is not allowed`},
		{"unknown function", "{{ explode }}", `does not parse at line 1: function "explode" is not allowed (allowed: and, base64,`},
		{"unknown field", "{{ .Nope }}", ".Nope is not a field"},
		{"unknown field behind a branch", `{{ if eq .DisplayName "x" }}{{ .Nope }}{{ end }}y`, ".Nope is not a field"},
		{"unknown field through $", "{{ with .DisplayName }}{{ $.Nope }}{{ end }}y", ".Nope is not a field"},
		{"every problem at once", "{{ range 3 }}{{ end }}{{ html .Nope }}", "range is not allowed"},
		{"too long", strings.Repeat("x", maxNameTemplateLen+1), "longer than 4096"},
		{"print of the whole data", `{{ if .EntityName }}{{ print . }}{{ end }}x`, "print takes strings, numbers and booleans, not ."},
		{"print of a map", `{{ if .EntityName }}{{ print "a" .EntityMetadata }}{{ end }}x`, "not .EntityMetadata"},
		{"printf of a map through $", `{{ with .DisplayName }}{{ printf "%.3v" $.AliasMetadata }}{{ end }}x`, "printf takes strings, numbers and booleans, not $.AliasMetadata"},
		{"print of $", `{{ with .DisplayName }}{{ print $ }}{{ end }}x`, "not $"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseNameTemplate(tc.tmpl)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.name == "every problem at once" && (!strings.Contains(err.Error(), `"html"`) || !strings.Contains(err.Error(), ".Nope")) {
				t.Errorf("not every problem: %v", err)
			}
		})
	}
	// Position: where the refused construct is.
	_, err := parseNameTemplate("abc{{ range 3 }}{{ end }}")
	if err == nil || !strings.Contains(err.Error(), "at 1:12: range") {
		t.Errorf("no position: %v", err)
	}
}

// Accepted templates that try to grow their output fail at render with a
// bounded error: each function refuses, before allocating, a result over
// maxTemplateValue, and the output stops at maxTemplateOutput.
func TestNameTemplate_RenderBounds(t *testing.T) {
	doubling := "{{ .RoleName" + strings.Repeat(` | replace "" "xx"`, 40) + " }}"
	cases := []struct{ name, tmpl, want string }{
		{"replace doubling", doubling, "replace: result longer than 1024"},
		{"replace one char", `{{ .RoleName | replace "r" "` + strings.Repeat("y", 1000) + `" }}`, "replace: result longer"},
		{"base64 chain", "{{ .DisplayName" + strings.Repeat(" | base64", 40) + " }}", "base64: result longer"},
		{"printf width", `{{ printf "%0999999999d" 1 }}`, "printf: width or precision over 64"},
		{"printf precision", `{{ printf "%.999999s" .RoleName }}`, "printf: width or precision over 64"},
		{"printf star", `{{ printf "%*d" 999999999 1 }}`, "printf: a width or precision from an argument"},
		{"printf long argument index", `{{ printf "%[999]d" 1 }}`, "printf: width or precision over 64"},
		{"print of long strings", "{{ print" + strings.Repeat(" .RoleName", 200) + " }}", "print: result longer"},
		{"print of the data's map in a with", `{{ with $m := .DisplayName }}{{ with $.AliasMetadata }}{{ print . }}{{ end }}{{ end }}x`, "print: argument 1 is a map"},
		{"printf of many arguments no verb takes", `{{ printf "%.1s"` + strings.Repeat(" .RoleName", 200) + " }}", "printf: the result could be longer than 16384 bytes"},
		{"printf of one argument many times", `{{ printf "` + strings.Repeat("%[1]s", 100) + `" .RoleName | truncate 3 }}`, "printf: the result could be longer"},
		{"printf quoting", `{{ printf "` + strings.Repeat("%q", 20) + `"` + strings.Repeat(" .RoleName", 20) + " }}", "printf: the result could be longer"},
		{"uppercase of a long literal", `{{ uppercase "` + strings.Repeat("a", 2000) + `" }}`, "uppercase: argument longer"},
		{"timestamp of a long layout", `{{ timestamp "` + strings.Repeat("January", 200) + `" }}`, "timestamp: argument longer"},
		{"random out of range", "{{ random 1000000 }}", "random: length"},
		{"output past the bound", strings.Repeat("{{ .RoleName | truncate 1000 }}", 20), "renders more than 16384 bytes"},
	}
	data := newNameTemplateData(strings.Repeat("r", 900), strings.Repeat("d", 900)).
		withIdentity(callerIdentity{aliasMetadata: map[string]string{"k": "v"}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseNameTemplate(tc.tmpl)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out, err := tmpl.generate(data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render %d bytes, error %v; want %q", len(out), err, tc.want)
			}
		})
	}
}

// worstNameTemplates are the most expensive templates the checks accept
// that render without error that we know of: the longest source, every node
// a chain of functions each near its bound, or the most output.
func worstNameTemplates() map[string]string {
	fill := func(unit string) string {
		return strings.Repeat(unit, maxNameTemplateLen/len(unit))
	}
	return map[string]string{
		"functions": fill(`{{ .RoleName | truncate 512 | replace "r" "rr" | uppercase | lowercase | sha256 | truncate_sha256 40 }}`),
		"printf":    fill(`{{ printf "%.64s%64.64s%-64.64v" .DisplayName .EntityName .RoleName | replace "d" "" | truncate 9 }}`),
		"output":    fill(`{{ .RoleName | truncate 1000 }}`)[:16*len(`{{ .RoleName | truncate 1000 }}`)],
		"branch": `{{ if eq .DisplayName "token" }}{{ .RoleName }}{{ else }}` +
			strings.Repeat(`{{ .DisplayName | truncate 500 | replace "d" "dd" | sha256 }}`, 60) + `{{ end }}`,
	}
}

// worstData is the largest data a template can get.
func worstData() nameTemplateData {
	big := map[string]string{}
	for i := range maxIdentityKeys {
		big[fmt.Sprintf("key%03d", i)] = strings.Repeat("v", maxTemplateValue)
	}
	return newNameTemplateData(strings.Repeat("r", 2000), strings.Repeat("d", 2000)).
		withIdentity(callerIdentity{entityName: strings.Repeat("e", 2000), entityMetadata: big, aliasMetadata: big})
}

// The worst accepted templates render, with the largest data, within a
// bound of time and memory far below what an unbounded engine used (28 s
// and 4.7 GB for one range): generous limits, not a timing race. The
// benchmark below prints the actual cost.
func TestNameTemplate_WorstCaseBounded(t *testing.T) {
	data := worstData()
	for name, raw := range worstNameTemplates() {
		t.Run(name, func(t *testing.T) {
			if len(raw) > maxNameTemplateLen {
				t.Fatalf("template of %d bytes", len(raw))
			}
			tmpl, err := parseNameTemplate(raw)
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			out, err := tmpl.generate(data)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes of source, %d bytes out, %s, %d KiB allocated", len(raw), len(out), elapsed, alloc>>10)
			if len(out) > maxTemplateOutput {
				t.Errorf("output %d bytes", len(out))
			}
			if elapsed > 2*time.Second || alloc > 64<<20 {
				t.Errorf("render took %s and %d MiB", elapsed, alloc>>20)
			}
		})
	}
}

func BenchmarkNameTemplate_Worst(b *testing.B) {
	data := worstData()
	for name, raw := range worstNameTemplates() {
		tmpl, err := parseNameTemplate(raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = tmpl.generate(data)
			}
		})
	}
	def, _ := parseNameTemplate("")
	b.Run("default template", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = def.generate(data)
		}
	})
}

// Only a template that reads an identity field (or the whole data) makes a
// creds read fetch the entity.
func TestNameTemplate_UsesIdentity(t *testing.T) {
	cases := map[string]bool{
		"":                                   false,
		"{{ .RoleName }}-{{ .DisplayName }}": false,
		"x{{ with .DisplayName }}{{ . }}{{ end }}":                      false,
		"{{ .EntityName }}":                                             true,
		"x{{ .AliasMetadata.repository }}":                              true,
		`x{{ index .EntityMetadata "team" }}`:                           true,
		"x{{ with .DisplayName }}{{ $.AliasMetadata.run_id }}{{ end }}": true,
		"x{{ . }}": true,
		"x{{ $ }}": true,
	}
	for raw, want := range cases {
		tmpl, err := parseNameTemplate(raw)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if tmpl.usesIdentity != want {
			t.Errorf("%q: usesIdentity %v, want %v", raw, tmpl.usesIdentity, want)
		}
	}
}

// Identity values are sanitized to the name alphabet; a missing key renders
// empty, never "<no value>" and never an error.
func TestNameTemplate_IdentityData(t *testing.T) {
	tmpl, err := parseNameTemplate(`gh-{{ .AliasMetadata.repository }}-{{ .AliasMetadata.run_id }}{{ with .AliasMetadata.nope }}-{{ . }}{{ end }}-{{ index .EntityMetadata "team" }}-{{ .EntityName }}`)
	if err != nil {
		t.Fatal(err)
	}
	id := identityOf(&logical.Entity{
		Name:     "ci entity",
		Metadata: map[string]string{"team": "platform/α"},
		Aliases: []*logical.Alias{
			{MountAccessor: "auth_jwt_2", Metadata: map[string]string{"repository": "other/repo"}},
			{MountAccessor: "auth_jwt_1", Metadata: map[string]string{"repository": "acme/web", "run_id": "42"}},
		},
	})
	name, err := tmpl.render(newNameTemplateData("ci", "jwt-x").withIdentity(id))
	if err != nil {
		t.Fatal(err)
	}
	if want := "gh-acme-web-42-platform--ci-entity"; name != want {
		t.Errorf("name %q, want %q", name, want)
	}
	name, err = tmpl.render(newNameTemplateData("ci", "jwt-x").withIdentity(callerIdentity{}))
	if err != nil || name != "gh----" {
		t.Errorf("no identity: %q %v", name, err)
	}
}

// A render is bounded whatever the requester: print and printf take only
// scalars, so neither formats the whole data nor a metadata map (which fmt
// would build whole before any check), not even behind a branch that the
// write-time render (sample data, no identity) never takes. With an entity
// of 64 metadata keys of 512 bytes (Vault's own limits), a template that
// would print the data some 2,000 times is refused at write; one that
// reaches a map only when rendering fails the creds read at once, within
// the bound of a render.
func TestNameTemplate_PrintOfTheIdentityIsBounded(t *testing.T) {
	md := map[string]string{}
	for i := range 64 {
		md[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", 512)
	}
	entity := &logical.Entity{ID: "ent-big", Name: "big", Metadata: md,
		Aliases: []*logical.Alias{{MountAccessor: "auth_jwt_1", Name: "big", Metadata: md}}}
	srv := newEmulator(t, tookentest.Options{RateLimit: -1})
	e := getTestBackend(t, withEntity(&entitySystemView{entity: entity}))
	e.configure(srv, nil)
	fill := func(head, unit, tail string) string {
		return head + strings.Repeat(unit, (maxNameTemplateLen-len(head)-len(tail))/len(unit)) + tail
	}

	whole := fill("{{ if .EntityName }}{{ print", " .", " }}{{ end }}x")
	resp, err := e.write("roles/big", map[string]any{"scopes": "deployments:write", "name_template": whole})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatalf("a %d-byte name_template printing the whole data 2,000 times was stored", len(whole))
	}
	if !strings.Contains(resp.Error().Error(), "print takes strings, numbers and booleans") {
		t.Errorf("refused with %q, want it to say what print takes", resp.Error())
	}

	inWith := fill("{{ if .EntityName }}{{ with .EntityMetadata }}{{ print", " .", " }}{{ end }}{{ end }}x")
	e.writeRole("big", map[string]any{"scopes": "deployments:write", "name_template": inWith})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	cresp, cerr := e.readCredsAs("big", entity.ID, nil)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if cerr == nil && (cresp == nil || !cresp.IsError()) {
		t.Fatal("a creds read printed a metadata map into the token name")
	}
	if got := outcome(cresp, cerr); !strings.Contains(got, "print: argument 1 is a map") {
		t.Errorf("creds read: %s, want it to say print took a map", got[:min(200, len(got))])
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Fatalf("one creds read with a %d-byte name_template allocated %d MiB in %s", len(inWith), alloc>>20, elapsed.Round(time.Millisecond))
	}
	if live := issuedLive(srv); len(live) != 0 {
		t.Errorf("%d tokens created for a read that failed", len(live))
	}
}

// The role write's message for a template that does not parse or render
// says where and what, names the field once, and keeps Go's internal
// template name and "executing" wording out.
func TestNameTemplate_ErrorMessages(t *testing.T) {
	for tmpl, want := range map[string]string{
		"x{{":                           "name_template: does not parse at line 1: unclosed action: a {{ has no matching }}",
		"a\nb{{ nope }}":                `name_template: does not parse at line 2: function "nope" is not allowed (allowed: `,
		"{{ if .DisplayName }}x":        "name_template: does not parse at line 1: the template ends inside an {{ if }} or {{ with }}: close it with {{ end }}",
		"{{ random 100 }}":              "name_template: at 1:3, in {{ random 100 }}: random: length 100 out of range 1..64",
		"x-{{ truncate -1 .RoleName }}": "name_template: at 1:5, in {{ truncate -1 .RoleName }}: truncate: negative length -1",
	} {
		err := validateNameTemplate(tmpl, "r")
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: error %v, want it to start with %q", tmpl, err, want)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "name_template:1") || strings.Contains(msg, "executing") || strings.Contains(msg, "error calling") {
			t.Errorf("%q: %q passes Go's text through", tmpl, msg)
		}
	}
}

// sanitizeName does what the regexp it replaces did, on every kind of input.
func TestSanitizeName_AsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	for _, s := range []string{
		"", "token", "userpass-alice", "a b", "  lead", "trail  ", "é", "aéb", "a\u00e9\u00e8b", "日本語-x",
		"a/b\\c", "x\x00y", "bad\xffutf8\xfe", "\xff", "a..b__c--d", "!!!", "tab\tnew\nline", strings.Repeat("é ", 40),
	} {
		if got, want := sanitizeName(s), re.ReplaceAllString(s, "-"); got != want {
			t.Errorf("sanitizeName(%q) = %q, the regexp gives %q", s, got, want)
		}
	}
}

// The default template rendered by hand gives what the template engine
// gives, the random part aside.
func TestBuiltinNameTemplate_AsTheEngine(t *testing.T) {
	fast, err := parseNameTemplate(builtinNameTemplate)
	if err != nil || !fast.builtin {
		t.Fatalf("builtin template: %v, builtin %v", err, fast != nil && fast.builtin)
	}
	if def, _ := parseNameTemplate(""); def.builtin != (defaultNameTemplate == builtinNameTemplate) {
		t.Errorf("the default template's shortcut is %v", def.builtin)
	}
	engine := *fast
	engine.builtin = false
	long := strings.Repeat("abcdefghij", 7)
	for _, c := range [][2]string{{"r", "token"}, {"ci-deploy", ""}, {long, long}, {"r", "userpass-alice"}, {"a..b", "x_y"}, {"é r", "a b"}} {
		data := newNameTemplateData(c[0], c[1])
		want, err := engine.generate(data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fast.generate(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || got[:len(got)-8] != want[:len(want)-8] {
			t.Errorf("%q/%q: by hand %q, engine %q", c[0], c[1], got, want)
		}
		if suffix := got[len(got)-8:]; !regexp.MustCompile(`^[A-Za-z0-9]{8}$`).MatchString(suffix) {
			t.Errorf("random part %q", suffix)
		}
	}
}
