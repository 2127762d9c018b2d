package tooken

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const staticCredsPath = "static-creds/"

func pathStaticCreds(b *tookenBackend) *framework.Path {
	return &framework.Path{
		Pattern: staticCredsPath + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeString,
				Description: "Name of the static role.",
				Required:    true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			// Served from storage by whichever node gets the read (a
			// performance standby too): no upstream call, no write.
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathStaticCredsRead,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "read",
					OperationSuffix: "static-credentials",
				},
				Summary:   "Read the current secret of a static role's token (no lease).",
				Responses: dataResponse("The current secret and when it rotates.", staticCredsResponseFields()),
			},
		},
		HelpSynopsis:    pathStaticCredsHelpSyn,
		HelpDescription: pathStaticCredsHelpDesc,
	}
}

func (b *tookenBackend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	r, err := readStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	switch {
	case r == nil:
		return logical.ErrorResponse("name: unknown static role %q", name), nil
	case r.GoneAt != nil:
		return logical.ErrorResponse("static role %q: %s", name, staticGoneMessage(r.TokenID)), nil
	case r.CustodyLostAt != nil:
		return logical.ErrorResponse("static role %q: %s", name, r.LastRotationError), nil
	case r.ExpiresAt != nil && !b.now().Before(*r.ExpiresAt):
		// Known dead: its expiry passed (the next check marks it gone).
		return logical.ErrorResponse("static role %q: token %s expired upstream at %s: the engine no longer serves its secret; delete this static role (and import a new token)",
			name, r.TokenID, r.ExpiresAt.UTC().Format(time.RFC3339)), nil
	case r.Secret == "":
		return nil, logical.CodedError(http.StatusServiceUnavailable, fmt.Sprintf(
			"static role %q has no secret yet: the rotation that imports its token is not finished (the engine finishes it within about %s; last error: %q)",
			name, humanDuration(rotationRecoveryDelay), r.LastRotationError))
	}
	dest, err := b.configDestination(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: r.credsData(b.now(), dest)}
	addStaticManagementWarning(resp, name, r, dest)
	return resp, nil
}

func staticCredsResponseFields() map[string]*framework.FieldSchema {
	str := func(desc string) *framework.FieldSchema {
		return &framework.FieldSchema{Type: framework.TypeString, Description: desc}
	}
	return map[string]*framework.FieldSchema{
		"token":                      {Type: framework.TypeString, Description: "The token's current secret.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"token_id":                   str("The token's id."),
		"name":                       str("The token's name at Tooken (as Tooken last described it), not the static role's name."),
		"scopes":                     {Type: framework.TypeStringSlice, Description: "The token's scopes."},
		"last_rotated":               timeField("When the token was last rotated"),
		"next_rotation":              timeField("When the engine rotates it next; null when it does not"),
		"previous_secret_expires_at": timeField("When the secret before the last rotation stops working"),
		"rotation_period":            secondsField("Time between rotations: the role's rotation_period, or for a rotation_schedule the time between the last and the next scheduled rotation"),
		"ttl":                        secondsField("Time until the next rotation (5 once it is due, 60 when the engine does not rotate the role): read again then"),
	}
}

const pathStaticCredsHelpSyn = `Read the current secret of a static role's token.`

const pathStaticCredsHelpDesc = `
Reading static-creds/<name> answers the current secret of the static role's
token (token), with token_id, name (the token's name at Tooken, not the
role's), scopes, last_rotated, next_rotation,
previous_secret_expires_at, rotation_period and ttl (whole seconds until the
next rotation). There is no lease: the secret is the token's, shared by every
reader, and changes only when the engine rotates it. Vault Agent reads again
ttl seconds later, right after the rotation; the previous secret keeps
working for the role's rotation_grace, so a consumer that re-reads within it
never sees a 401.

A token revoked or expired upstream (or past its recorded expires_at), or
taken by another custody, answers an error instead of a dead secret; ttl
never points past the token's expiry. Reads are served from storage by any node, performance standbys
included.
`
