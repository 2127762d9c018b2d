package e2e

// Findings of an adversarial review, through a real Vault: each test fails on the engine as it
// stands, and says the promise it holds the engine to.

import (
	"strings"
	"testing"
)

// TestReviewStaticRoleStealsAnotherMountsRoot: "after set-up nobody but Vault knows the root Tooken
// secret". Two mounts share one Tooken account, each with its own root, and other/ has rotated its
// root (only Vault knows it). A delegated operator whose policy allows only static roles and
// static-creds on tooken/ imports other/'s root token as a static role with rotation_grace=0 (the
// root of tooken/ can rotate it: tokens:write and every scope of it) and reads static-creds: the
// operator now holds other/'s root secret, and other/ is locked out (its creds answer 401).
func TestReviewStaticRoleStealsAnotherMountsRoot(t *testing.T) {
	t.Parallel()
	e, v := startTooken(t, VaultOptions{})
	otherRoot := createToken(t, e, "other-mount-root", "tokens:write", "deployments:write")
	v.EnableTooken(t, "other")
	if out, errOut, err := v.Run(t, Run{Stdin: otherRoot.Secret}, "write", "other/config", "url="+e.URL, "token=-"); err != nil {
		t.Fatalf("configuring other/: %v\n%s%s", err, out, errOut)
	}
	v.MustRun(t, "write", "-f", "other/rotate-root")
	v.WriteRole(t, "other", "r", "scopes=deployments:write", "ttl=10m", "max_ttl=1h")
	v.ReadWorkingCreds(t, e, "other", "r", "", "other/ before the import")

	policy := `path "tooken/static-roles/*" { capabilities = ["create", "update", "read"] }
path "tooken/static-creds/*" { capabilities = ["read"] }
`
	if out, errOut, err := v.Run(t, Run{Stdin: policy}, "policy", "write", "static-ops", "-"); err != nil {
		t.Fatalf("policy write: %v\n%s%s", err, out, errOut)
	}
	ops := strings.TrimSpace(v.MustRun(t, "token", "create", "-policy=static-ops", "-field=token"))

	out, errOut, err := v.Run(t, Run{Token: ops}, "write", "tooken/static-roles/steal",
		"token_id="+otherRoot.ID, "rotation_period=1h", "rotation_grace=0")
	if err != nil {
		t.Logf("import refused: %s", oneLine(errOut))
		return // the promise holds
	}
	t.Logf("import answered: %s", oneLine(out))
	stolen := v.readStaticCreds(t, "steal", ops).Data.Token
	_, otherErr, otherFailed := v.Run(t, Run{}, "read", "other/creds/r")
	t.Fatalf("an operator with only static-roles and static-creds on tooken/ holds other/'s root secret: Tooken takes it for %s "+
		"(other/'s root is %s); other/'s creds read afterwards failed=%v: %s",
		e.TokenIDOf(t, stolen), otherRoot.ID, otherFailed != nil, oneLine(otherErr))
}
