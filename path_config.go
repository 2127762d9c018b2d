package tooken

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

func pathConfig(b *tookenBackend) *framework.Path {
	// Create and update are one operation: the handler tells them apart.
	write := &framework.PathOperation{
		Callback: b.pathConfigWrite,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationVerb: "configure",
		},
		Summary:                     "Configure the connection to Tooken.",
		Responses:                   writeResponses("The configuration is stored."),
		ForwardPerformanceStandby:   true,
		ForwardPerformanceSecondary: true,
	}
	return &framework.Path{
		Pattern: configPath + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixTooken,
		},
		Fields: configFields(),
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationSuffix: "configuration",
				},
				Summary:   "Read the Tooken connection configuration (never the secret).",
				Responses: dataResponse("The configuration, the root token as last verified and the rotation state.", configResponseFields()),
			},
			logical.CreateOperation: write,
			logical.UpdateOperation: write,
			logical.DeleteOperation: &framework.PathOperation{
				Callback: b.pathConfigDelete,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationSuffix: "configuration",
				},
				Summary:                     "Delete the Tooken connection configuration.",
				Responses:                   deleteResponses("The configuration is deleted."),
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		ExistenceCheck:  b.pathConfigExistenceCheck,
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}
}

// configResponseFields are the fields of a config read.
func configResponseFields() map[string]*framework.FieldSchema {
	str := func(desc string) *framework.FieldSchema {
		return &framework.FieldSchema{Type: framework.TypeString, Description: desc}
	}
	return map[string]*framework.FieldSchema{
		"url":                        str("Base URL of the Tooken API."),
		"ca_cert":                    str("PEM CA certificate(s) trusted for the URL; empty: the system roots."),
		"request_timeout":            secondsField("Timeout of one HTTP attempt to Tooken"),
		"max_retries":                {Type: framework.TypeInt, Description: "Retries of a failed Tooken call."},
		"verify_connection":          {Type: framework.TypeBool, Description: "Whether writes check the connection with GET /tokens/self."},
		"rollback_min_age":           secondsField("Age after which the periodic rollback finishes an interrupted creds read"),
		"mount_uuid":                 str("The id every token of this mount carries as its vault_mount_uuid metadata."),
		"token_id":                   str("Id of the root token, as learned at the last verification (empty when not verified)."),
		"scopes":                     {Type: framework.TypeCommaStringSlice, Description: "Scopes of the root token, as learned at the last verification."},
		"expires_at":                 timeField("Upstream expiry of the root token"),
		"rotation_period":            secondsField("Period of scheduled root rotations; 0: off"),
		"rotation_window":            str("Daily UTC window HH:MM-HH:MM of scheduled rotations; empty: any time."),
		"rotation_grace":             secondsField("How long the previous root secret keeps working after a rotation"),
		"last_rotated":               timeField("Last rotation of the root secret"),
		"next_rotation":              timeField("Next scheduled rotation"),
		"previous_secret_expires_at": timeField("When the previous root secret stops working"),
		"rotation_failures":          {Type: framework.TypeInt, Description: "Failed rotation attempts since the last success."},
		"last_rotation_error":        str("Why the last rotation attempt failed."),
		"last_rotation_error_at":     timeField("When the last rotation attempt failed"),
	}
}

func (b *tookenBackend) pathConfigExistenceCheck(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return false, err
	}
	return cfg != nil, nil
}

func (b *tookenBackend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, nil
	}
	data := cfg.toResponseData(b.now())
	// The id every token of this mount carries as vault_mount_uuid (the
	// backend UUID: not the mount's uuid that sys/mounts shows).
	data["mount_uuid"] = b.mountUUID
	return &logical.Response{Data: data}, nil
}

func (b *tookenBackend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// Not during a root rotation: it reads, then writes, the config too.
	b.configMu.Lock()
	defer b.configMu.Unlock()
	stored, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := configToWrite(stored)
	_, tokenGiven := d.GetOk("token")
	applyConfigFields(cfg, d)
	// Nothing is sent anywhere before these checks: in particular not the
	// stored secret to a new url. Every problem at once (a first write
	// without token included: validate names it).
	errs := []error{cfg.validate()}
	if stored != nil {
		errs = append(errs, checkSecretDestination(stored.destination(), cfg.destination(), tokenGiven))
	}
	if err := errors.Join(errs...); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}

	resp := &logical.Response{}
	if stored != nil && !stored.destination().sameAs(cfg.destination()) {
		resp.AddWarning(destinationChangeWarning(stored.destination(), cfg.destination()))
	}
	if stored == nil || cfg.Token != stored.Token {
		cfg.secretChanged(b.now())
	}
	self, msg := b.learnRoot(ctx, req.Storage, cfg, stored, resp)
	if msg != "" {
		return logical.ErrorResponse(msg), nil
	}
	if self != nil {
		// The root's custody changes: not while a static import of the
		// same token checks it (custody_mark.go).
		defer b.lockToken(self.ID)()
		if msg, err := b.takeRootCustody(ctx, req.Storage, cfg, stored, self, resp); msg != "" || err != nil {
			return errorResponseOr(msg, err)
		}
	}
	if err := putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	b.installConfig(cfg)
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// destinationChangeWarning is the warning of a config write that points the
// engine from old to another destination (url or ca_cert): the revokes of
// the tokens issued at old go to the new one, and count done only where it
// revokes them.
func destinationChangeWarning(old, next secretDestination) string {
	what := "url changed from " + old.URL
	if old.URL == next.URL {
		what = "ca_cert changed (same url, " + old.URL + ")"
	}
	return what + ": the lease revokes of the tokens issued before are sent to the config's url; those it revokes (204) are done, those it does not know (404: another Tooken issued them) wait in the revoke queue, as the rollback of unfinished creds reads does, until the config points to the Tooken that issued them again or they expire (at most their role's max_ttl). tidy/status counts them (queued_elsewhere, pending_elsewhere); tidy revoke_orphans=true revokes those the config's Tooken lists"
}

// configToWrite is the config a write starts from: a copy of the stored
// one, or the defaults.
func configToWrite(stored *tookenConfig) *tookenConfig {
	if stored == nil {
		return newDefaultConfig()
	}
	cfg := new(tookenConfig)
	*cfg = *stored
	cfg.RotationGrace = stored.grace() // stored explicitly from now on (a legacy config keeps its 1h)
	return cfg
}

// learnRoot records in cfg what the root token is (token_id, scopes,
// expires_at): from GET /tokens/self when verify_connection is on (the
// token, as Tooken answered, is returned), otherwise it forgets what no
// longer applies to a changed connection. It returns a message for the
// caller when the verification fails, and adds warnings to resp.
func (b *tookenBackend) learnRoot(ctx context.Context, s logical.Storage, cfg, stored *tookenConfig, resp *logical.Response) (*tookenapi.Token, string) {
	if cfg.VerifyConnection {
		self, err := b.verifyConnection(ctx, s, cfg)
		if err != nil {
			return nil, err.Error()
		}
		cfg.TokenID, cfg.Scopes, cfg.ExpiresAt = self.ID, self.Scopes, self.ExpiresAt
		if !holdsScope(self.Scopes, "tokens:write") {
			resp.AddWarning("the token does not hold tokens:write: creds reads will fail until it does")
		}
		return self, ""
	}
	if stored == nil || cfg.URL != stored.URL || cfg.Token != stored.Token || cfg.CACert != stored.CACert {
		// What we knew about the old root no longer applies.
		cfg.TokenID, cfg.Scopes, cfg.ExpiresAt = "", nil, nil
		resp.AddWarning("connection not verified: token_id and scopes are unknown, role scopes are not checked against the root's, and the root's custody is checked at its first rotation only")
	}
	return nil, ""
}

// takeRootCustody checks that no other custody holds the verified root
// token self (custody_mark.go: a creds lease, a static role of any mount,
// another mount's root): the next rotation of either would kill the other's
// secret. A new secret is refused with a message for the caller; the secret
// already stored (a write of other fields) only gets a warning, since
// refusing would not undo it, and its rotations are refused
// (checkRootCustody). A root that no other custody holds is marked as this
// mount's. The caller holds the token's lock.
func (b *tookenBackend) takeRootCustody(ctx context.Context, s logical.Storage, cfg, stored *tookenConfig, self *tookenapi.Token, resp *logical.Response) (string, error) {
	conflict, err := b.custodyHolder(ctx, s, self, "", rootCustody(b.mountUUID))
	switch {
	case err != nil:
		return "", err
	case conflict == nil:
		b.markRoot(ctx, s, cfg, self, resp)
	case stored == nil || cfg.Token != stored.Token:
		return conflict.configMessage(self.ID), nil
	default:
		resp.AddWarning(conflict.configMessage(self.ID) + "; until then the engine refuses to rotate it")
	}
	return "", nil
}

// markRoot marks the verified root token self as this mount's (custody
// mark), before the config is stored (a mark left by a failed store names
// this mount, which ignores it: its config does not confirm it); the caller
// checked that no other custody holds it. Nothing is sent when it carries
// the mark already. A failure is a warning: the root works, only other
// mounts cannot tell.
func (b *tookenBackend) markRoot(ctx context.Context, s logical.Storage, cfg *tookenConfig, self *tookenapi.Token, resp *logical.Response) {
	if self.Metadata[metaCustody] == rootCustody(b.mountUUID).value() {
		return
	}
	cctx, auth, end, err := b.rootCall(ctx, s, cfg)
	if err == nil {
		_, err = claimCustody(cctx, auth, self, rootCustody(b.mountUUID))
		end()
	}
	if err != nil {
		b.Logger().Warn("could not mark the root token as this mount's", "token_id", self.ID, "error", err)
		resp.AddWarning(fmt.Sprintf("the root token %s could not be marked as this mount's (its %s metadata: %v): the config is stored, but another mount of this engine cannot tell that this mount holds it; the next config write or rotation tries again", self.ID, metaCustody, err))
	}
}

// verifyConnection checks url, ca_cert and token with GET /tokens/self: the
// answer must be a valid token object. The error is a message for the
// caller, naming the field at fault (verificationError).
func (b *tookenBackend) verifyConnection(ctx context.Context, s logical.Storage, cfg *tookenConfig) (*tookenapi.Token, error) {
	c, done, err := b.connect(ctx, s, cfg)
	if err != nil {
		return nil, err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	self, err := c.Self(ctx)
	if err != nil {
		return nil, verificationError(cfg.URL, err)
	}
	return self, nil
}

// verificationError says what failed when url answered GET /tokens/self
// with err: unreachable, link-local, TLS, not a Tooken API, unavailable, or
// the token rejected. It never repeats what the server answered (its body
// or message), nor transport detail that would tell a closed port from a
// filtering one: the URL may be anything a writer of the config typed.
func verificationError(url string, err error) error {
	const hint = " (set verify_connection=false to store the config without checking)"
	var apiErr *tookenapi.APIError
	switch {
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return errors.New("token: Tooken rejected the token (401 unauthorized): it is unknown, revoked or expired" + hint)
	case errors.Is(err, tookenapi.ErrForbiddenAddress):
		return fmt.Errorf("url: %s resolves to a link-local address (169.254.0.0/16, fe80::/10), which the engine never calls", url)
	case tookenapi.IsTLSError(err):
		return fmt.Errorf("ca_cert: TLS with %s failed: the server does not speak TLS, or its certificate is not trusted by ca_cert (the system roots when ca_cert is empty)%s", url, hint)
	case errors.Is(err, tookenapi.ErrInvalidAnswer), errors.Is(err, tookenapi.ErrNotProven):
		return fmt.Errorf("url: %s is not a Tooken API: GET /tokens/self did not answer a token object (the URL includes the API version, e.g. /v1)%s", url, hint)
	case errors.As(err, &apiErr) && (apiErr.Status == http.StatusTooManyRequests || apiErr.Status >= 500):
		return fmt.Errorf("url: %s is unavailable (GET /tokens/self: HTTP %d); try again later%s", url, apiErr.Status, hint)
	case errors.As(err, &apiErr):
		return fmt.Errorf("url: %s is not a Tooken API (GET /tokens/self: HTTP %d)%s", url, apiErr.Status, hint)
	default:
		return fmt.Errorf("url: cannot reach %s%s", url, hint)
	}
}

func (b *tookenBackend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	if err := deleteConfig(ctx, req.Storage); err != nil {
		return nil, err
	}
	b.installConfig(nil)
	return nil, nil
}

const operationPrefixTooken = "tooken"

const pathConfigHelpSyn = `Configure the connection to Tooken.`

const pathConfigHelpDesc = `
The engine authenticates to Tooken with a root token that must hold every
scope the roles hand out (tokens:write is needed to create tokens).

Write fields: url (default https://api.tooken.io/v1; never a link-local
address), token (the root secret, tok_live_ or tok_test_ followed by at least
20 letters or digits; surrounding whitespace is trimmed; required when
creating the config, and again whenever url or ca_cert changes: the stored
secret is only ever sent to the URL it was stored for; never a token in
another custody: a static role's, a creds token, another mount's root; the
verified root is marked as this mount's with vault_custody metadata;
write-only), ca_cert
(PEM, optional), request_timeout (per HTTP attempt, default 30s), max_retries
(0 to 10, default 3: retries after a connection error, a 5xx other than 501,
a 429 or 503 after its Retry-After when that is at most 5s, or a 409 telling
that a POST with the same Idempotency-Key is still in flight), verify_connection (default true: GET /tokens/self must
answer a Tooken token object, otherwise the write is rejected and nothing is
stored), rollback_min_age (1s to 1h, default 2m: age after which the periodic
rollback finishes an interrupted creds read), and the root rotation schedule:
rotation_period (0 = off, default; else at least 1m), rotation_window (daily
UTC "HH:MM-HH:MM", default any time) and rotation_grace (how long the previous
secret keeps working after a rotation, default 5m, at most 24h, and at least
what recovering an interrupted rotation needs: 2m30s plus the rotate call's
budget, 3m30s with the default request_timeout and max_retries). Fields left
out of an update keep their value.

Read returns every field but the secret, plus mount_uuid (the id every token
of this mount carries as its vault_mount_uuid metadata: list a mount's tokens
at Tooken by it), the root token's token_id, scopes and expires_at as learned
at the last verification, and the rotation
state: last_rotated, next_rotation, previous_secret_expires_at,
rotation_failures, last_rotation_error and last_rotation_error_at. Delete
removes the configuration; the revokes of leases already issued are then
queued until a configuration is written again.
`
