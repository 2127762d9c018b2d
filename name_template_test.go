package tooken

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/uuid"
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
	engine, err := template.New("n").Funcs(template.FuncMap{
		"truncate": truncate, "random": func(n int) string { return strings.Repeat("R", n) },
	}).Parse(builtinNameTemplate)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("abcdefghij", 7)
	for _, c := range [][2]string{{"r", "token"}, {"ci-deploy", ""}, {long, long}, {"r", "userpass-alice"}, {"a..b", "x_y"}} {
		data := newNameTemplateData(c[0], c[1])
		var want strings.Builder
		if err := engine.Execute(&want, data); err != nil {
			t.Fatal(err)
		}
		got, err := fast.generate(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want.Len() || got[:len(got)-8] != want.String()[:want.Len()-8] {
			t.Errorf("%q/%q: by hand %q, engine %q", c[0], c[1], got, want.String())
		}
		if suffix := got[len(got)-8:]; !regexp.MustCompile(`^[A-Za-z0-9]{8}$`).MatchString(suffix) {
			t.Errorf("random part %q", suffix)
		}
	}
}
