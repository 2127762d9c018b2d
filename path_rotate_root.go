package tooken

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const rotateRootPath = "rotate-root"

func pathRotateRoot(b *tookenBackend) *framework.Path {
	return &framework.Path{
		Pattern: rotateRootPath + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathRotateRootWrite,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "rotate",
					OperationSuffix: "root-credentials",
				},
				Summary: "Rotate the root Tooken secret now.",
				Responses: dataResponse("The root secret was rotated (the answer never holds a secret).", map[string]*framework.FieldSchema{
					"token_id":                   {Type: framework.TypeString, Description: "Id of the root token."},
					"rotated_at":                 timeField("When the secret was rotated"),
					"previous_secret_expires_at": timeField("When the previous secret stops working"),
					"next_rotation":              timeField("Next scheduled rotation; absent when the schedule is off"),
				}),
				// Rotates upstream and writes storage: the active node only.
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathRotateRootHelpSyn,
		HelpDescription: pathRotateRootHelpDesc,
	}
}

func (b *tookenBackend) pathRotateRootWrite(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	cfg, err := b.rotateRoot(ctx, req.Storage, "manual")
	var re *rotationError
	switch {
	case errors.Is(err, errNotConfigured):
		return logical.ErrorResponse(err.Error()), nil
	case errors.As(err, &re):
		return nil, logical.CodedError(re.status, re.msg)
	case err != nil:
		return nil, err
	}
	data := map[string]any{
		"token_id":                   cfg.TokenID,
		"rotated_at":                 fmtTimeOrNil(cfg.LastRotated),
		"previous_secret_expires_at": fmtTimeOrNil(cfg.PreviousSecretExpiresAt),
	}
	if next := cfg.nextRotation(b.now()); !next.IsZero() {
		data["next_rotation"] = next.Format(time.RFC3339)
	}
	return &logical.Response{Data: data}, nil
}

const pathRotateRootHelpSyn = `Rotate the root Tooken secret.`

const pathRotateRootHelpDesc = `
Writing rotate-root (no fields) gives the root token a new secret upstream
(POST /tokens/{id}/rotate), stores it and switches to it at once. The previous
secret keeps working for rotation_grace (config), so requests in flight and
other nodes are not disturbed. The answer has token_id, rotated_at and
previous_secret_expires_at, never a secret.

The rotation is crash-safe: a WAL entry written before the upstream call
carries the Idempotency-Key, and an interrupted rotation is finished by
replaying the same request. A failed rotation leaves the current secret in
place and says why. Set rotation_period (and optionally rotation_window) on
config to rotate on a schedule.
`
