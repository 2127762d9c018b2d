package e2e

// The request layer through a real Vault: fields a path does not take, values of the wrong type
// (a secret among them), path captures storage refuses, metadata in the forms a CLI user types,
// and the OpenAPI document Vault serves for the mount.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// httpWrite POSTs body with contentType to the Vault API path with the root token and returns
// the status and the answer.
func httpWrite(t *testing.T, v *Vault, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, v.Addr+"/v1/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", v.RootToken)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// oneLine is what the CLI printed, with its line wrapping undone.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// TestBadInputNeverLeaksSecret: the root secret given twice on the CLI (which makes it a list)
// answers 400 "token: given 2 times", as a list or an object over the API "token: expected a
// string" (twice in an HTTP
// form, which Vault joins with a comma: "token: not a Tooken secret"); the secret is in no answer, not in the audit log nor in Vault's log, and Vault logs no
// "failed to run existence check". Unknown fields and a role name storage refuses answer 400 and
// change nothing.
func TestBadInputNeverLeaksSecret(t *testing.T) {
	t.Parallel()
	e := startEmulator(t, EmulatorOptions{})
	v := startDevVault(t, VaultOptions{})
	audit := v.EnableFileAudit(t)
	setupTooken(t, v, e)
	rootID := readData(t, v, "tooken/config")["token_id"]

	out, errOut, err := v.Run(t, Run{}, "write", "tooken/config", "token=@"+e.RootSecretFile, "token=oops")
	if err == nil || !strings.Contains(errOut, "token: given 2 times; give it once") || strings.Contains(out+errOut, e.RootSecret) {
		t.Errorf("CLI token given twice: %v\n%s%s", err, out, errOut)
	}
	form := url.Values{"token": {e.RootSecret, "oops"}}.Encode()
	list, _ := json.Marshal(map[string]any{"token": []string{e.RootSecret}})
	object, _ := json.Marshal(map[string]any{"token": map[string]string{"a": e.RootSecret}})
	// Vault joins a form's repeated key with commas: that string is no Tooken secret.
	for what, body := range map[string][3]string{
		"form, token twice": {"application/x-www-form-urlencoded", form, "token: not a Tooken secret"},
		"JSON list":         {"application/json", string(list), "token: expected a string"},
		"JSON object":       {"application/json", string(object), "token: expected a string"},
	} {
		code, answer := httpWrite(t, v, "tooken/config", body[0], body[1])
		if code != http.StatusBadRequest || !strings.Contains(answer, body[2]) || strings.Contains(answer, e.RootSecret) {
			t.Errorf("%s: %d %s", what, code, answer)
		}
	}

	v.WriteRole(t, "tooken", "ci", "scopes=deployments:write", "ttl=1h")
	for what, args := range map[string][]string{
		"config typo":  {"write", "tooken/config", "request_timout=10s"},
		"role typo":    {"write", "tooken/roles/ci", "tll=2h"},
		"role name ..": {"write", "tooken/roles/a..b", "scopes=deployments:write"},
	} {
		out, errOut, err := v.Run(t, Run{}, args...)
		said := oneLine(errOut)
		if err == nil || !strings.Contains(said, "Code: 400") {
			t.Errorf("%s: %v\n%s%s", what, err, out, errOut)
		}
		t.Logf("%s: %s", what, said)
	}
	if got := readData(t, v, "tooken/roles/ci")["ttl"]; fmt.Sprint(got) != "3600" {
		t.Errorf("role ttl %v after a refused write, want 3600", got)
	}
	if cfg := readData(t, v, "tooken/config"); cfg["token_id"] != rootID || fmt.Sprint(cfg["request_timeout"]) != "30" {
		t.Errorf("config changed by refused writes: %v", cfg)
	}
	v.ReadWorkingCreds(t, e, "tooken", "ci", "", "creds after the refused writes")

	assertNoSecrets(t, []string{v.LogPath, audit, e.LogPath}, []string{e.RootSecret})
	if n := countLines(t, v.LogPath, "failed to run existence check"); n != 0 {
		t.Errorf("Vault logged %d existence check failures", n)
	}
	if n := countLines(t, v.LogPath, "[ERROR]"); n != 0 {
		t.Errorf("Vault logged %d errors:\n%s", n, tail(v.LogPath, 3000))
	}
}

// TestCLIFieldForms: metadata as a CLI user writes it (comma-separated pairs in one argument, the
// argument repeated) and as a JSON object over the API reaches the tokens as two keys; a typo in
// a field name is refused with the field it probably was; tidy needs -f, as every write without
// fields does.
func TestCLIFieldForms(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	v.WriteRole(t, "tooken", "comma", "scopes=deployments:write", "metadata=team=platform,env=dev")
	v.WriteRole(t, "tooken", "repeated", "scopes=deployments:write", "metadata=team=platform", "metadata=env=dev")
	if _, err := v.Client.Logical().Write("tooken/roles/object", map[string]any{
		"scopes": "deployments:write", "metadata": map[string]string{"team": "platform", "env": "dev"},
	}); err != nil {
		t.Fatalf("role write over the API: %v", err)
	}
	for _, role := range []string{"comma", "repeated", "object"} {
		md := readData(t, v, "tooken/roles/"+role)["metadata"]
		if fmt.Sprint(md) != "map[env:dev team:platform]" {
			t.Errorf("role %s: metadata %v", role, md)
		}
		c := v.ReadCreds(t, "tooken", role, "")
		tok, _ := e.Token(t, c.Data.TokenID)
		if tok.Metadata["team"] != "platform" || tok.Metadata["env"] != "dev" {
			t.Errorf("role %s: token metadata %v", role, tok.Metadata)
		}
	}

	_, errOut, err := v.Run(t, Run{}, "write", "tooken/roles/comma", "tll=2h")
	if said := oneLine(errOut); err == nil || !strings.Contains(said, "tll: unknown field (did you mean ttl?); roles/comma takes allow_token_management, description, identity_metadata, max_live_tokens, max_ttl, metadata, name_template, scopes, ttl") {
		t.Errorf("typo: %v %s", err, said)
	}
	if _, errOut, err := v.Run(t, Run{}, "write", "tooken/tidy"); err == nil {
		t.Errorf("vault write tooken/tidy without -f succeeded: %s", errOut)
	}
	v.MustRun(t, "write", "-f", "tooken/tidy")
}

// TestOpenAPISpec: the document Vault serves (sys/internal/specs/openapi) has, for every
// operation of the mount, a request schema where it takes fields and declared responses, with a
// schema where it answers data; only path captures are required.
func TestOpenAPISpec(t *testing.T) {
	t.Parallel()
	_, v := startTooken(t, VaultOptions{})
	resp, err := v.Client.Logical().ReadRaw("sys/internal/specs/openapi")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	type schema struct {
		Ref        string                     `json:"$ref"`
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	}
	type content map[string]struct {
		Schema *schema `json:"schema"`
	}
	type operation struct {
		RequestBody *struct {
			Content content `json:"content"`
		} `json:"requestBody"`
		Responses map[string]struct {
			Description string  `json:"description"`
			Content     content `json:"content"`
		} `json:"responses"`
	}
	hasProperties := func(c content) bool {
		s := c["application/json"].Schema
		return s != nil && s.Ref == "" && len(s.Properties) > 0 && len(s.Required) == 0
	}
	takesFields := map[string]bool{"/tooken/config post": true, "/tooken/roles/{name} post": true, "/tooken/tidy post": true,
		"/tooken/static-roles/{name} post": true}
	answersData := map[string]bool{"/tooken/config get": true, "/tooken/roles/{name} get": true, "/tooken/roles/ get": true,
		"/tooken/creds/{name} get": true, "/tooken/rotate-root post": true, "/tooken/tidy post": true, "/tooken/tidy/status get": true,
		"/tooken/static-roles/{name} get": true, "/tooken/static-roles/{name} post": true, "/tooken/static-roles/ get": true,
		"/tooken/static-creds/{name} get": true, "/tooken/rotate-role/{name} post": true}
	ops := 0
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/tooken/") {
			continue
		}
		for _, method := range []string{"get", "post", "delete"} {
			if item[method] == nil {
				continue
			}
			ops++
			what := path + " " + method
			var op operation
			if err := json.Unmarshal(item[method], &op); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if takesFields[what] && (op.RequestBody == nil || !hasProperties(op.RequestBody.Content)) {
				t.Errorf("%s: no request schema: %s", what, item[method])
			}
			for code, r := range op.Responses {
				if r.Description == "" || r.Description == "OK" || r.Description == "empty body" {
					t.Errorf("%s %s: undeclared response %q", what, code, r.Description)
				}
			}
			if r, ok := op.Responses["200"]; answersData[what] && (!ok || !hasProperties(r.Content)) {
				t.Errorf("%s: no response schema: %s", what, item[method])
			}
		}
	}
	if ops != 17 {
		t.Errorf("%d operations of the mount in the document, want 17", ops)
	}
}
