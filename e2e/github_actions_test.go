package e2e

// GitHub Actions through Vault's jwt auth method (examples/github-actions): the job's OIDC token
// logs in, vault-action's calls read tooken/creds/ci-deploy into TOOKEN_TOKEN, and the job's last
// step revokes its Vault token and so its Tooken token. GitHub is played by a key of the test's
// own: Vault checks the tokens with jwt_validation_pubkeys (offline) instead of GitHub's OIDC
// discovery document, and everything else is the shipped set-up.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"gopkg.in/yaml.v3"
)

// What the test reads with, and what the shipped workflow must ask for.
const (
	ghAuthPath  = "jwt-github"             // the jwt auth method's mount
	ghRole      = "ci-deploy"              // the jwt role
	ghCredsPath = "tooken/creds/ci-deploy" // what vault-action reads
	ghSelector  = "token"                  // the field it takes
	ghEnvVar    = "TOOKEN_TOKEN"           // the variable it exports
	ghIssuer    = "https://token.actions.githubusercontent.com"
	ghRepo      = "acme/web"
)

// ghWorkflow is what the tests use of a GitHub Actions workflow file.
type ghWorkflow struct {
	Permissions map[string]string `yaml:"permissions"`
	Env         map[string]string `yaml:"env"`
	Jobs        map[string]struct {
		Steps []ghStep `yaml:"steps"`
	} `yaml:"jobs"`
}

type ghStep struct {
	Name string            `yaml:"name"`
	ID   string            `yaml:"id"`
	Uses string            `yaml:"uses"`
	If   string            `yaml:"if"`
	Run  string            `yaml:"run"`
	With map[string]string `yaml:"with"`
	Env  map[string]string `yaml:"env"`
}

// ghJob is the shipped workflow's job, checked: its vault-action step, the steps after it, and
// the revoking step among them.
type ghJob struct {
	env      map[string]string
	vault    ghStep
	after    []ghStep
	revoking ghStep
}

// loadWorkflow reads examples/github-actions/deploy.yml and fails the test unless it asks for
// what the e2e test uses: the OIDC token permission, vault-action with method jwt at ghAuthPath
// and role ghRole, one secret (ghCredsPath, its ghSelector field, into ghEnvVar), the Vault token
// as a step output, and a last step that always runs and revokes that token.
func loadWorkflow(t testing.TB) ghJob {
	t.Helper()
	var wf ghWorkflow
	if err := yaml.Unmarshal([]byte(readExample(t, "github-actions/deploy.yml")), &wf); err != nil {
		t.Fatalf("deploy.yml: %v", err)
	}
	if wf.Permissions["id-token"] != "write" {
		t.Errorf("deploy.yml: permissions id-token = %q, want write", wf.Permissions["id-token"])
	}
	if len(wf.Jobs) != 1 {
		t.Fatalf("deploy.yml: %d jobs, want 1", len(wf.Jobs))
	}
	job := ghJob{env: wf.Env}
	for _, j := range wf.Jobs {
		i := slices.IndexFunc(j.Steps, func(s ghStep) bool { return strings.HasPrefix(s.Uses, "hashicorp/vault-action@") })
		if i < 0 {
			t.Fatal("deploy.yml: no hashicorp/vault-action step")
		}
		job.vault, job.after = j.Steps[i], j.Steps[i+1:]
	}
	w := job.vault.With
	for k, want := range map[string]string{"method": "jwt", "path": ghAuthPath, "role": ghRole, "outputToken": "true"} {
		if w[k] != want {
			t.Errorf("deploy.yml: vault-action %s = %q, want %q", k, w[k], want)
		}
	}
	if w["jwtGithubAudience"] == "" {
		t.Error("deploy.yml: vault-action has no jwtGithubAudience")
	}
	secrets := strings.Fields(strings.TrimSpace(w["secrets"]))
	if want := []string{ghCredsPath, ghSelector, "|", ghEnvVar}; !slices.Equal(secrets, want) {
		t.Errorf("deploy.yml: vault-action secrets %q, want %q", secrets, strings.Join(want, " "))
	}
	if len(job.after) == 0 {
		t.Fatal("deploy.yml: no step after vault-action")
	}
	job.revoking = job.after[len(job.after)-1]
	r := job.revoking
	if !strings.Contains(r.If, "always()") || !strings.Contains(r.Run, "/v1/auth/token/revoke-self") ||
		r.Env["VAULT_TOKEN"] != "${{ steps."+job.vault.ID+".outputs.vault_token }}" {
		t.Errorf("deploy.yml: the last step must always run and revoke the vault-action step's token: %+v", r)
	}
	return job
}

// The shipped workflow asks for what the e2e test logs in and reads with (this runs without any
// binary, with the unit tests too).
func TestGitHubActionsWorkflowFile(t *testing.T) {
	t.Parallel()
	loadWorkflow(t)
}

// githubOIDC plays GitHub's token service: it signs GitHub-shaped OIDC tokens with a key whose
// public half Vault is given.
type githubOIDC struct {
	signer jose.Signer
	pubPEM string // file holding the public key
}

func newGitHubOIDC(t testing.TB) *githubOIDC {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "test-key"))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	g := &githubOIDC{signer: signer, pubPEM: filepath.Join(t.TempDir(), "github-oidc.pem")}
	if err := os.WriteFile(g.pubPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// ghRun is one workflow run's job as GitHub describes it in its OIDC token.
type ghRun struct {
	repo, ref, event, aud, runID string
}

// token signs the OIDC token of run r, with the claims GitHub puts in it.
func (g *githubOIDC) token(t testing.TB, r ghRun) string {
	t.Helper()
	now := time.Now()
	sub := "repo:" + r.repo + ":ref:" + r.ref
	if r.event == "pull_request" {
		sub = "repo:" + r.repo + ":pull_request"
	}
	claims := map[string]any{
		"iss": ghIssuer, "aud": r.aud, "sub": sub, "jti": randomAlnum(16),
		"iat": now.Unix(), "nbf": now.Add(-5 * time.Second).Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"repository": r.repo, "repository_owner": strings.Split(r.repo, "/")[0], "repository_visibility": "private",
		"ref": r.ref, "ref_type": "branch", "sha": "3f786850e387550fdab836ed7e6dc881de23001b",
		"workflow": "deploy", "job_workflow_ref": r.repo + "/.github/workflows/deploy.yml@" + r.ref,
		"event_name": r.event, "run_id": r.runID, "run_number": "12", "run_attempt": "1",
		"actor": "octocat", "runner_environment": "github-hosted",
	}
	raw, err := jwt.Signed(g.signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// vaultActionLogin makes vault-action's login call for method jwt: POST v1/auth/<path>/login
// with the job's token and role; it returns the status and the client token ("" when none).
func vaultActionLogin(t testing.TB, v *Vault, path, role, jwtToken string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"jwt": jwtToken, "role": role})
	status, out := vaultHTTP(t, http.MethodPost, v.Addr+"/v1/auth/"+path+"/login", "", body)
	var login struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(out, &login)
	return status, login.Auth.ClientToken
}

// vaultActionRead makes vault-action's read of a secret: GET v1/<path> with the Vault token, then
// its selector on the answer (data.<selector>, as for any engine but KV v2).
func vaultActionRead(t testing.TB, v *Vault, path, selector, token string) string {
	t.Helper()
	status, out := vaultHTTP(t, http.MethodGet, v.Addr+"/v1/"+path, token, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/%s: %d", path, status)
	}
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(out, &body); err != nil {
		t.Fatal(err)
	}
	if _, kv2 := body.Data["data"]; kv2 {
		t.Fatalf("%s answers a data.data field: vault-action would read it as KV v2", path)
	}
	s, _ := body.Data[selector].(string)
	if s == "" {
		t.Fatalf("GET /v1/%s: no %s in data", path, selector)
	}
	return s
}

func vaultHTTP(t testing.TB, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// runStep runs a workflow step's shell command as GitHub's runner does on Linux (bash -e -o
// pipefail), with the workflow's env, then env, then the step's own env (its ${{ }} expressions
// replaced by exprs).
func runStep(t testing.TB, s ghStep, env map[string]string, exprs map[string]string) string {
	t.Helper()
	vars := map[string]string{}
	for k, v := range env {
		vars[k] = v
	}
	for k, v := range s.Env {
		if x, ok := exprs[v]; ok {
			v = x
		}
		vars[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s.Run)
	cmd.Env = cleanEnv(t.TempDir())
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("step %q: %v\n%s", s.Name, err, out)
	}
	return string(out)
}

// A GitHub Actions job of the allowed repository gets a Tooken token named and tagged after its
// run, uses it as TOOKEN_TOKEN, and its last step kills it; jobs of another repository, of a pull
// request, or with a token for another audience get no Vault token and create nothing upstream.
func TestGitHubActionsOIDC(t *testing.T) {
	t.Parallel()
	job := loadWorkflow(t)
	e, v := startTooken(t, VaultOptions{})
	gh := newGitHubOIDC(t)
	// The role make dev and the README create: the script replaces it, and says so.
	v.WriteRole(t, "tooken", "ci-deploy", "scopes=deployments:write", "ttl=1h", "max_ttl=24h")
	out := v.runExampleScript(t, "github-actions/setup.sh", "REPOSITORY="+ghRepo, "JWT_VALIDATION_PUBKEY="+gh.pubPEM)
	if !strings.Contains(out, "setup.sh: replacing the existing Tooken role tooken/roles/ci-deploy: from now on scopes=deployments:write ttl=15m max_ttl=1h") {
		t.Errorf("setup.sh replaced role ci-deploy without saying so:\n%s", out)
	}
	aud := job.vault.With["jwtGithubAudience"]
	env := map[string]string{}
	for k, val := range job.env {
		env[k] = val
	}
	env["VAULT_ADDR"], env["TOOKEN_URL"] = v.Addr, e.URL

	var secrets []string
	for _, runID := range []string{"7001", "7002"} { // the second run's alias metadata is its own
		status, vaultToken := vaultActionLogin(t, v, job.vault.With["path"], job.vault.With["role"],
			gh.token(t, ghRun{repo: ghRepo, ref: "refs/heads/main", event: "push", aud: aud, runID: runID}))
		if status != http.StatusOK || vaultToken == "" {
			t.Fatalf("run %s: login answered %d", runID, status)
		}
		tookenToken := vaultActionRead(t, v, ghCredsPath, ghSelector, vaultToken)
		secrets = append(secrets, vaultToken, tookenToken)
		env[ghEnvVar] = tookenToken

		// The job's steps use it; the upstream token says which repository and run hold it.
		id := e.TokenIDOf(t, tookenToken)
		for _, s := range job.after[:len(job.after)-1] {
			if out := runStep(t, s, env, nil); !strings.Contains(out, id) || strings.Contains(out, tookenToken) {
				t.Errorf("run %s: step %q did not show token %s (or showed its secret): %s", runID, s.Name, id, out)
			}
		}
		tok, _ := e.Token(t, id)
		t.Logf("run %s: Tooken token %s named %s, metadata %v", runID, id, tok.Name, tok.Metadata)
		if want := regexp.MustCompile(`^gh-acme-web-run` + runID + `-[A-Za-z0-9]{6}$`); !want.MatchString(tok.Name) {
			t.Errorf("run %s: token name %q", runID, tok.Name)
		}
		for k, want := range map[string]string{"repository": ghRepo, "run_id": runID, "run_attempt": "1",
			"workflow": "deploy", "ref": "refs/heads/main", "actor": "octocat", "vault_role": "ci-deploy"} {
			if tok.Metadata[k] != want {
				t.Errorf("run %s: token metadata %s = %q, want %q", runID, k, tok.Metadata[k], want)
			}
		}

		// The last step revokes the job's Vault token: its lease goes, and the token with it.
		runStep(t, job.revoking, env, map[string]string{"${{ steps." + job.vault.ID + ".outputs.vault_token }}": vaultToken})
		eventually(t, 30*time.Second, "the job's Tooken token dies after its Vault token is revoked", func() (bool, string) {
			s := e.SelfStatus(t, tookenToken)
			return s == http.StatusUnauthorized, fmt.Sprint("GET /tokens/self: ", s)
		})
	}

	before := len(e.Tokens(t))
	for name, r := range map[string]ghRun{
		"another repository": {repo: "acme/other", ref: "refs/heads/main", event: "push", aud: aud, runID: "8001"},
		"a pull request":     {repo: ghRepo, ref: "refs/pull/7/merge", event: "pull_request", aud: aud, runID: "8002"},
		"another branch":     {repo: ghRepo, ref: "refs/heads/feature", event: "push", aud: aud, runID: "8003"},
		"another audience":   {repo: ghRepo, ref: "refs/heads/main", event: "push", aud: "sigstore", runID: "8004"},
	} {
		status, vaultToken := vaultActionLogin(t, v, ghAuthPath, ghRole, gh.token(t, r))
		t.Logf("%s: login answered %d", name, status)
		if status < 400 || status >= 500 || vaultToken != "" {
			t.Errorf("%s: login answered %d (token %t), want a 4xx and no token", name, status, vaultToken != "")
		}
	}
	forged := newGitHubOIDC(t).token(t, ghRun{repo: ghRepo, ref: "refs/heads/main", event: "push", aud: aud, runID: "8005"})
	if status, vaultToken := vaultActionLogin(t, v, ghAuthPath, ghRole, forged); status < 400 || vaultToken != "" {
		t.Errorf("a token signed by another key: login answered %d", status)
	}
	if after := len(e.Tokens(t)); after != before {
		t.Errorf("%d tokens created upstream by refused jobs", after-before)
	}
	assertNoSecrets(t, []string{v.LogPath, e.LogPath}, append(secrets, e.RootSecret))
}
