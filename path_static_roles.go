package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const staticRolesPath = "static-roles/"

func pathStaticRoles(b *tookenBackend) []*framework.Path {
	write := func(summary string) *framework.PathOperation {
		return &framework.PathOperation{
			Callback:  b.pathStaticRolesWrite,
			Summary:   summary,
			Responses: staticRoleResponses("The static role as stored (as a read answers it)."),
			// Writes storage and calls Tooken (an import rotates): the
			// active node only.
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
		}
	}
	return []*framework.Path{
		{
			Pattern: staticRolesPath + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixTooken,
				OperationSuffix: "static-role",
			},
			Fields: staticRoleFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathStaticRolesRead,
					Summary:   "Read a static role (never its secret).",
					Responses: staticRoleResponses("The static role."),
				},
				logical.CreateOperation: write("Import an existing Tooken token as a static role."),
				logical.UpdateOperation: write("Update a static role; fields left out keep their value."),
				logical.DeleteOperation: &framework.PathOperation{
					Callback: b.pathStaticRolesDelete,
					Summary:  "Delete a static role: Vault stops managing its token, which stays live upstream.",
					Responses: map[int][]framework.Response{
						http.StatusOK:        {{Description: "Deleted. The answer carries a warning only: the token stays live upstream."}},
						http.StatusNoContent: {{Description: "There was no such static role."}},
					},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			ExistenceCheck:  b.pathStaticRoleExistenceCheck,
			HelpSynopsis:    pathStaticRolesHelpSyn,
			HelpDescription: pathStaticRolesHelpDesc,
		},
		pathListStaticRoles(b),
	}
}

func pathListStaticRoles(b *tookenBackend) *framework.Path {
	return &framework.Path{
		Pattern: staticRolesPath + "?$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
			OperationSuffix: "static-roles",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: &framework.PathOperation{
				Callback:  b.pathStaticRolesList,
				Summary:   "List the static roles.",
				Responses: listResponses("The names of the static roles."),
			},
		},
		HelpSynopsis:    pathStaticRolesListHelpSyn,
		HelpDescription: pathStaticRolesListHelpDesc,
	}
}

func (b *tookenBackend) pathStaticRoleExistenceCheck(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	r, err := readStaticRole(ctx, req.Storage, d.Get("name").(string))
	return r != nil, err
}

func (b *tookenBackend) pathStaticRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := listStaticRoles(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

// configDestination is where the stored config points (custody.go); the
// zero value when there is no config.
func (b *tookenBackend) configDestination(ctx context.Context, s logical.Storage) (secretDestination, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil {
		return secretDestination{}, err
	}
	return cfg.destination(), nil
}

func (b *tookenBackend) pathStaticRolesRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	r, err := readStaticRole(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	dest, err := b.configDestination(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: r.toResponseData(dest)}
	addStaticManagementWarning(resp, name, r, dest)
	return resp, nil
}

// addStaticManagementWarning says, on a read, why the engine does not
// rotate the role now.
func addStaticManagementWarning(resp *logical.Response, name string, r *staticRoleEntry, config secretDestination) {
	switch {
	case r.CustodyLostAt != nil:
		resp.AddWarning(r.LastRotationError)
	case r.GoneAt != nil || r.Secret == "":
	case config == secretDestination{}:
		resp.AddWarning(errNotConfigured.Error() + ": the engine neither rotates nor checks this role's token meanwhile")
	case !r.Dest.sameAs(config):
		resp.AddWarning((&staticDestinationError{name: name, role: r.Dest, config: config}).Error())
	}
}

func (b *tookenBackend) pathStaticRolesWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	t := b.staticTarget(name)
	defer t.release()
	t.lock().Lock() // a running rotation ends within its budget
	defer t.lock().Unlock()
	stored, err := readStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	var resp *logical.Response
	if stored == nil {
		resp, err = b.createStaticRole(ctx, req.Storage, d, t)
	} else {
		resp, err = b.updateStaticRole(ctx, req.Storage, d, t, stored)
	}
	if err != nil || (resp != nil && resp.IsError()) {
		return resp, err
	}
	b.static.changed(name, t.role, b.now())
	dest, err := b.configDestination(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	out := &logical.Response{Data: t.role.toResponseData(dest)}
	if _, given := d.GetOk("rotation_grace"); given || stored == nil {
		// Said when the grace is written (or defaulted), not on every
		// update of another field.
		for _, w := range t.role.warnings() {
			out.AddWarning(w)
		}
	}
	return out, nil
}

// secretField is the token field, trimmed (token=- and token=@file pass a
// trailing newline), and whether it was given.
func secretField(d *framework.FieldData) (string, bool) {
	v, ok := d.GetOk("token")
	if !ok {
		return "", false
	}
	return strings.TrimSpace(v.(string)), true
}

// createStaticRole checks a new role's fields and its token upstream, then
// imports it (importStatic). The role stored is t.role.
func (b *tookenBackend) createStaticRole(ctx context.Context, s logical.Storage, d *framework.FieldData, t *staticTarget) (*logical.Response, error) {
	r := &staticRoleEntry{RotationGrace: defaultStaticGrace, SkipImportRotation: d.Get("skip_import_rotation").(bool)}
	applyStaticRoleFields(r, d)
	secret, given := secretField(d)
	if err := errors.Join(r.validate(t.name), importSecretProblem(r.SkipImportRotation, secret, given)); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), nil
	}
	if msg, err := staticLimitProblem(ctx, s); msg != "" || err != nil {
		return errorResponseOr(msg, err)
	}
	return b.takeStaticToken(ctx, s, cfg, t, r, secret)
}

// takeStaticToken takes custody of the new role r's token (custody_mark.go)
// and imports it. It holds the token's lock from the custody checks to the
// owner record, so that a concurrent import of the same token (under
// another name) or a config write taking it as root finds this one's claim
// and is refused. Nothing is stored, and the token keeps no mark, when the
// import is refused.
func (b *tookenBackend) takeStaticToken(ctx context.Context, s logical.Storage, cfg *tookenConfig, t *staticTarget, r *staticRoleEntry, secret string) (*logical.Response, error) {
	defer b.lockToken(r.TokenID)()
	tok, msg, err := b.verifyStaticToken(ctx, s, cfg, r.TokenID, t.name)
	if msg != "" || err != nil {
		return errorResponseOr(msg, err)
	}
	if r.SkipImportRotation {
		if msg, err := b.verifyImportSecret(ctx, s, cfg, r.TokenID, secret); msg != "" || err != nil {
			return errorResponseOr(msg, err)
		}
		r.Secret = secret
		r.LastRotated = tok.RotatedAt
	}
	if tok, msg, err = b.claimStatic(ctx, s, cfg, tok, t.name); msg != "" || err != nil {
		return errorResponseOr(msg, err)
	}
	r.Dest = cfg.destination()
	r.learn(tok)
	r.PeriodFrom = b.now().UTC()
	resp, err := b.importStatic(ctx, s, t, r)
	if t.role == nil {
		// Not stored: the mark goes too (releaseStatic logs a failure).
		_ = b.releaseStatic(ctx, s, t.name, r)
	}
	return resp, err
}

// updateStaticRole changes the fields given. token_id and the import fields
// cannot change. When the config points elsewhere since the role was written,
// or its token was found gone or in another custody, the token is checked
// upstream again (at the new url) and claimed before the role is stored for
// it. The role stored is t.role.
func (b *tookenBackend) updateStaticRole(ctx context.Context, s logical.Storage, d *framework.FieldData, t *staticTarget, stored *staticRoleEntry) (*logical.Response, error) {
	var errs []error
	if v, ok := d.GetOk("token_id"); ok && strings.TrimSpace(v.(string)) != stored.TokenID {
		errs = append(errs, fmt.Errorf("token_id: cannot change (this role manages %s); delete the role and create another for the other token", stored.TokenID))
	}
	if v, ok := d.GetOk("skip_import_rotation"); ok && v.(bool) != stored.SkipImportRotation {
		errs = append(errs, fmt.Errorf("skip_import_rotation: applies only when the role is created (it was created with %v)", stored.SkipImportRotation))
	}
	secret, given := secretField(d)
	errs = append(errs, updateSecretProblem(stored, secret, given))
	r := *stored
	applyStaticRoleFields(&r, d)
	if err := errors.Join(append(errs, r.validate(t.name))...); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg != nil && (!r.Dest.sameAs(cfg.destination()) || r.GoneAt != nil || r.CustodyLostAt != nil) {
		defer b.lockToken(r.TokenID)()
		tok, msg, err := b.verifyStaticToken(ctx, s, cfg, r.TokenID, t.name)
		if msg != "" || err != nil {
			return errorResponseOr(msg, err)
		}
		if tok, msg, err = b.claimStatic(ctx, s, cfg, tok, t.name); msg != "" || err != nil {
			return errorResponseOr(msg, err)
		}
		r.Dest = cfg.destination()
		r.learn(tok)
		r.CustodyLostAt = nil
	}
	if err := putStaticRole(ctx, s, t.name, &r); err != nil {
		return nil, err
	}
	t.role = &r
	return nil, nil
}

// errorResponseOr is the caller's error response for msg, or err.
func errorResponseOr(msg string, err error) (*logical.Response, error) {
	if err != nil {
		return nil, err
	}
	return logical.ErrorResponse(msg), nil
}

func (b *tookenBackend) pathStaticRolesDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	t := b.staticTarget(name)
	defer t.release()
	t.lock().Lock()
	defer t.lock().Unlock()
	r, err := readStaticRole(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	if err := deleteStaticRole(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	b.static.changed(name, nil, b.now())
	// The token's custody changes: not while an import of it checks.
	defer b.lockToken(r.TokenID)()
	owner, err := readStaticTokenOwner(ctx, req.Storage, r.TokenID)
	if err == nil && owner != nil && owner.Role == name {
		err = deleteStaticTokenOwner(ctx, req.Storage, r.TokenID)
	}
	if err != nil {
		// Harmless: a stale owner record is ignored.
		b.Logger().Warn("static role deleted, but not its token's owner record", "role", name, "error", err)
	}
	resp := &logical.Response{}
	resp.AddWarning(fmt.Sprintf("Vault no longer manages token %s: it stays live upstream with its current secret, which the engine no longer holds (revoke it in Tooken if nothing uses it)", r.TokenID))
	if r.GoneAt == nil {
		// Another mount may take the token now (a stale mark would only
		// stop other mounts: this one ignores it).
		if w := b.releaseStatic(ctx, req.Storage, name, r); w != "" {
			resp.AddWarning(w)
		}
	}
	return resp, nil
}

// staticRoleResponses documents the answer of a static role read or write.
func staticRoleResponses(what string) map[int][]framework.Response {
	return dataResponse(what, staticRoleResponseFields())
}

func staticRoleResponseFields() map[string]*framework.FieldSchema {
	fields := staticRoleFields()
	delete(fields, "name")
	delete(fields, "token")
	fields["rotation_period"] = secondsField("Time between scheduled rotations, counted from when the previous one was due; 0 with a rotation_schedule")
	fields["rotation_grace"] = secondsField("How long the previous secret keeps working after each rotation")
	fields["name"] = &framework.FieldSchema{Type: framework.TypeString, Description: "The token's name at Tooken, as Tooken last described it: not the static role's name (role p1 may manage a token named partner1)."}
	fields["scopes"] = &framework.FieldSchema{Type: framework.TypeStringSlice, Description: "The token's scopes, as Tooken last described them."}
	fields["expires_at"] = timeField("The token's expiry upstream")
	fields["last_rotated"] = timeField("When the token was last rotated")
	fields["next_rotation"] = timeField("When the engine rotates it next; null when it does not")
	fields["previous_secret_expires_at"] = timeField("When the secret before the last rotation stops working")
	fields["rotation_failures"] = &framework.FieldSchema{Type: framework.TypeInt, Description: "Failed rotations since the last success."}
	fields["last_rotation_error"] = &framework.FieldSchema{Type: framework.TypeString, Description: "Why the last rotation failed, or the last change made outside Vault; empty when none."}
	fields["last_rotation_error_at"] = timeField("When last_rotation_error was recorded")
	return fields
}

const pathStaticRolesHelpSyn = `Manage static roles: existing Tooken tokens that Vault takes custody of and rotates.`

const pathStaticRolesHelpDesc = `
A static role manages one existing Tooken token: the engine keeps its secret,
rotates it on a schedule and on demand (rotate-role/<name>), the root token
authenticating each rotation, and serves the current secret at
static-creds/<name>, without a lease.

Fields: token_id (required on create, tkn_...; cannot change afterwards; the
root token must be able to rotate it: tokens:write and every scope of the
token; never a token in another custody: the root, another static role's
token, a token creds issued, another mount's root or static role, as its
vault_custody metadata says), rotation_period (1m to 366d, counted from when
the previous rotation was due, or from a manual rotation) or
rotation_schedule (standard 5-field cron spec, UTC): exactly one of them; rotation_window (daily UTC "HH:MM-HH:MM":
scheduled rotations run only inside it), rotation_grace (how long the previous
secret keeps working after each rotation, 0 to 24h, default 5m),
skip_import_rotation (default false: creating the role rotates the token at
once, so that only Vault knows its secret; true: token, the token's current
secret, is required and stored after GET /tokens/self confirms it, and the
token is rotated only when the schedule says so), token (write-only; token=-
reads it from stdin), description.

A read answers every field but the secret, plus the token's name (its name
at Tooken, not the role's), scopes and expires_at as Tooken last described
them, last_rotated, next_rotation, previous_secret_expires_at, rotation_failures, last_rotation_error and
last_rotation_error_at. The engine checks each token upstream every few
minutes: a token rotated outside Vault is rotated again (recorded in
last_rotation_error), a token revoked or expired is shown, and no longer
served by static-creds.

The engine marks the token it takes (vault_custody=static:<mount uuid>:<name>
metadata, merged into the token's own); a token another custody marks since
is no longer managed. Deleting a static role stops Vault's management and
removes that mark: the token stays live upstream with its current secret,
which the engine no longer holds.
`

const pathStaticRolesListHelpSyn = `List the static roles.`

const pathStaticRolesListHelpDesc = `Lists the names of the static roles of this mount.`
