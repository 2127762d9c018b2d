package tooken

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const rotateRolePath = "rotate-role/"

// staticManualRateWait is how long a rotate-role waits at most for the
// static roles' rate limit before it answers 429.
const staticManualRateWait = 5 * time.Second

// staticCallAllowed waits for the static roles' rate limit (at most
// staticManualRateWait): a manual rotation is the root's call too, and
// shares the limit with the schedule, so that a loop of rotate-role cannot
// spend the root's budget at Tooken. False when the wait would be longer.
func (b *tookenBackend) staticCallAllowed(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, staticManualRateWait)
	defer cancel()
	return b.static.limiter.Wait(ctx) == nil
}

func pathRotateRole(b *tookenBackend) *framework.Path {
	return &framework.Path{
		Pattern: rotateRolePath + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeString,
				Description: "Name of the static role whose token to rotate.",
				Required:    true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathRotateRoleWrite,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "rotate",
					OperationSuffix: "static-role",
				},
				Summary: "Rotate a static role's token now.",
				Responses: map[int][]framework.Response{
					http.StatusOK: {{Description: "Rotated.", Fields: map[string]*framework.FieldSchema{
						"token_id":                   {Type: framework.TypeString, Description: "The token's id."},
						"last_rotated":               timeField("When it was rotated"),
						"previous_secret_expires_at": timeField("When the previous secret stops working"),
						"next_rotation":              timeField("When the schedule rotates it next"),
					}}},
					http.StatusConflict:        {{Description: "A rotation or a write of the role is running, or an interrupted rotation is not finished yet."}},
					http.StatusTooManyRequests: {{Description: "The static roles' rate limit of Tooken calls is spent for the next seconds; retry."}},
				},
				// Rotates upstream and writes storage: the active node only.
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathRotateRoleHelpSyn,
		HelpDescription: pathRotateRoleHelpDesc,
	}
}

func (b *tookenBackend) pathRotateRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if !b.staticCallAllowed(ctx) {
		return nil, logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf(
			"rotate-role: static roles are calling Tooken at their limit of %v calls a second (the root's calls, shared with the schedule); retry in a few seconds", b.static.limiter.Limit()))
	}
	t := b.staticTarget(name)
	defer t.release()
	if !t.lock().TryLock() {
		return nil, errStaticBusy(name)
	}
	defer t.lock().Unlock()
	if r, err := readStaticRole(ctx, req.Storage, name); err != nil || (r != nil && r.CustodyLostAt != nil) {
		// Another custody holds the token: rotating it would kill that
		// custody's secret.
		if err == nil {
			err = staticCustodyLostError(name, r)
		}
		return staticRotationResponse(err)
	}
	t.periodFrom = b.now().UTC()
	err := b.rotateStatic(ctx, req.Storage, t, "manual")
	if r, rerr := readStaticRole(ctx, req.Storage, name); rerr == nil {
		b.static.changed(name, r, b.now())
	}
	if err != nil {
		return staticRotationResponse(err)
	}
	r := t.role
	next := r.nextRotation()
	return &logical.Response{Data: map[string]any{
		"token_id":                   r.TokenID,
		"last_rotated":               fmtTimeOrNil(r.LastRotated),
		"previous_secret_expires_at": fmtTimeOrNil(r.PreviousSecretExpiresAt),
		"next_rotation":              fmtTimeOrNil(&next),
	}}, nil
}

const pathRotateRoleHelpSyn = `Rotate a static role's token now.`

const pathRotateRoleHelpDesc = `
Writing rotate-role/<name> (no fields) gives the static role's token a new
secret upstream (POST /tokens/{id}/rotate, authenticated by the root token),
stores it and serves it at static-creds/<name> at once. The previous secret
keeps working for the role's rotation_grace. The answer has token_id,
last_rotated, previous_secret_expires_at and next_rotation, never a secret.
A rotation (or a write) of the role already running answers 409; a token in
another custody 400. Manual rotations share the static roles' rate limit of
Tooken calls with the schedule: past it (after at most 5 seconds) 429.

The rotation is crash-safe, as the root's: a WAL entry written before the
upstream call carries the Idempotency-Key, and an interrupted rotation is
finished by replaying the same request, authenticated by the root.
`
