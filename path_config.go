package tooken

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

const maxMaxRetries = 10

// secretRegex is the contract's shape of a Tooken secret.
var secretRegex = regexp.MustCompile(`^tok_(live|test)_[A-Za-z0-9]{20,}$`)

// tookenConfig is the mount's connection to Tooken, stored seal-wrapped at
// configPath. TokenID, Scopes and ExpiresAt describe the root token as
// learned from GET /tokens/self when the connection was last verified.
type tookenConfig struct {
	URL              string        `json:"url"`
	Token            string        `json:"token"`
	CACert           string        `json:"ca_cert,omitempty"`
	RequestTimeout   time.Duration `json:"request_timeout"`
	MaxRetries       int           `json:"max_retries"`
	VerifyConnection bool          `json:"verify_connection"`
	RollbackMinAge   time.Duration `json:"rollback_min_age,omitempty"` // 0 = default (issuance.go)

	TokenID   string     `json:"token_id,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`

	rotationConfig // rotation.go: schedule, grace and rotation state
}

// toResponseData is everything but the secret.
func (c *tookenConfig) toResponseData() map[string]any {
	var exp any
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	scopes := c.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return map[string]any{
		"url":               c.URL,
		"ca_cert":           c.CACert,
		"request_timeout":   int64(c.RequestTimeout / time.Second),
		"max_retries":       c.MaxRetries,
		"verify_connection": c.VerifyConnection,
		"rollback_min_age":  int64(c.effectiveRollbackMinAge() / time.Second),
		"token_id":          c.TokenID,
		"scopes":            scopes,
		"expires_at":        exp,
	}
}

// clientOptions are the options of a Tooken client for this connection,
// authenticated with the config's secret.
func (c *tookenConfig) clientOptions(logger hclog.Logger) tookenapi.Options {
	return tookenapi.Options{
		BaseURL:    c.URL,
		Secret:     c.Token,
		CACertPEM:  c.CACert,
		Timeout:    c.RequestTimeout,
		MaxRetries: c.MaxRetries,
		Logger:     logger.Named("client"),
		UserAgent:  userAgent(),
	}
}

// validate reports every problem with the config at once.
func (c *tookenConfig) validate() error {
	var errs []error
	if _, err := tookenapi.ParseBaseURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token: required"))
	} else if !secretRegex.MatchString(c.Token) {
		// Never echo the value.
		errs = append(errs, errors.New("token: not a Tooken secret (expected tok_live_ or tok_test_ followed by at least 20 letters or digits)"))
	}
	if c.CACert != "" {
		if _, err := tookenapi.ParseCertPool(c.CACert); err != nil {
			errs = append(errs, fmt.Errorf("ca_cert: %w", err))
		}
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("request_timeout: must be greater than zero"))
	}
	if c.RollbackMinAge < 0 || c.RollbackMinAge > maxRollbackMinAge {
		errs = append(errs, fmt.Errorf("rollback_min_age: must be between 1s and %s (0 = default %s)", maxRollbackMinAge, defaultRollbackMinAge))
	}
	if c.MaxRetries < 0 || c.MaxRetries > maxMaxRetries {
		errs = append(errs, fmt.Errorf("max_retries: must be between 0 and %d", maxMaxRetries))
	}
	errs = append(errs, c.rotationConfig.validate())
	return errors.Join(errs...)
}

func configFields() map[string]*framework.FieldSchema {
	fields := rotationFields()
	maps.Copy(fields, map[string]*framework.FieldSchema{
		"url": {
			Type:        framework.TypeString,
			Description: "Base URL of the Tooken API, including /v1.",
			Default:     tookenapi.DefaultBaseURL,
			DisplayAttrs: &framework.DisplayAttributes{
				Name: "URL",
			},
		},
		"token": {
			Type:        framework.TypeString,
			Description: "Root Tooken secret the engine authenticates with (tok_live_... or tok_test_...). Write-only: never returned. Required when creating the config.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name:      "Token",
				Sensitive: true,
			},
		},
		"ca_cert": {
			Type:        framework.TypeString,
			Description: "PEM CA certificate(s) to trust for the Tooken URL instead of the system roots.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name: "CA certificate",
			},
		},
		"request_timeout": {
			Type:        framework.TypeDurationSecond,
			Description: "Timeout of one HTTP attempt to Tooken.",
			Default:     int(tookenapi.DefaultTimeout / time.Second),
		},
		"max_retries": {
			Type:        framework.TypeInt,
			Description: fmt.Sprintf("How many times a failed Tooken call (connection error, 5xx, 429) is retried, 0 to %d.", maxMaxRetries),
			Default:     tookenapi.DefaultMaxRetries,
		},
		"rollback_min_age": {
			Type:        framework.TypeDurationSecond,
			Description: "Age after which the periodic rollback finishes a creds request that left a pending issuance record (replays its create and revokes the token). 0 = default (2m).",
		},
		"verify_connection": {
			Type:        framework.TypeBool,
			Description: "Check the URL and token with GET /tokens/self before storing the config.",
			Default:     true,
		},
	})
	return fields
}

func pathConfig(b *tookenBackend) *framework.Path {
	// Create and update are one operation: the handler tells them apart.
	write := &framework.PathOperation{
		Callback: b.pathConfigWrite,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationVerb: "configure",
		},
		Summary:                     "Configure the connection to Tooken.",
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
				Summary: "Read the Tooken connection configuration (never the secret).",
			},
			logical.CreateOperation: write,
			logical.UpdateOperation: write,
			logical.DeleteOperation: &framework.PathOperation{
				Callback: b.pathConfigDelete,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationSuffix: "configuration",
				},
				Summary:                     "Delete the Tooken connection configuration.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		ExistenceCheck:  b.pathConfigExistenceCheck,
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
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
	data := cfg.toResponseData()
	maps.Copy(data, cfg.rotationResponseData(b.rot.clock()))
	return &logical.Response{Data: data}, nil
}

func (b *tookenBackend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// Not during a root rotation: it reads, then writes, the config too.
	b.rot.mu.Lock()
	defer b.rot.mu.Unlock()
	stored, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := newDefaultConfig()
	if stored != nil {
		cfg = new(tookenConfig)
		*cfg = *stored
	}
	if _, ok := d.GetOk("token"); !ok && stored == nil {
		return logical.ErrorResponse("token: required when creating the config"), nil
	}
	applyConfigFields(cfg, d)
	if err := cfg.validate(); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}

	resp := &logical.Response{}
	if stored == nil || cfg.Token != stored.Token {
		cfg.secretChanged(b.rot.clock())
	}
	for _, w := range cfg.rotationConfig.warnings() {
		resp.AddWarning(w)
	}
	if msg := b.learnRoot(ctx, cfg, stored, resp); msg != "" {
		return logical.ErrorResponse(msg), nil
	}
	if err := putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	b.resetConfig()
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// newDefaultConfig is the config a first write starts from.
func newDefaultConfig() *tookenConfig {
	return &tookenConfig{
		URL:              tookenapi.DefaultBaseURL,
		RequestTimeout:   tookenapi.DefaultTimeout,
		MaxRetries:       tookenapi.DefaultMaxRetries,
		VerifyConnection: true,
	}
}

// applyConfigFields copies the fields given in a config write; the others
// keep their value. The token and the PEM are trimmed: the CLI's token=- and
// token=@file pass a trailing newline.
func applyConfigFields(cfg *tookenConfig, d *framework.FieldData) {
	if v, ok := d.GetOk("url"); ok {
		cfg.URL = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("token"); ok {
		cfg.Token = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("ca_cert"); ok {
		cfg.CACert = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("request_timeout"); ok {
		cfg.RequestTimeout = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_retries"); ok {
		cfg.MaxRetries = v.(int)
	}
	if v, ok := d.GetOk("verify_connection"); ok {
		cfg.VerifyConnection = v.(bool)
	}
	if v, ok := d.GetOk("rollback_min_age"); ok {
		cfg.RollbackMinAge = time.Duration(v.(int)) * time.Second
	}
	applyRotationFields(&cfg.rotationConfig, d)
}

// learnRoot records in cfg what the root token is (token_id, scopes,
// expires_at): from GET /tokens/self when verify_connection is on, otherwise
// it forgets what no longer applies to a changed connection. It returns a
// message for the caller when the verification fails, and adds warnings to
// resp.
func (b *tookenBackend) learnRoot(ctx context.Context, cfg, stored *tookenConfig, resp *logical.Response) string {
	if cfg.VerifyConnection {
		self, err := b.verifyConnection(ctx, cfg)
		if err != nil {
			return err.Error()
		}
		cfg.TokenID, cfg.Scopes, cfg.ExpiresAt = self.ID, self.Scopes, self.ExpiresAt
		if !holdsScope(self.Scopes, "tokens:write") {
			resp.AddWarning("the token does not hold tokens:write: creds reads will fail until it does")
		}
		return ""
	}
	if stored == nil || cfg.URL != stored.URL || cfg.Token != stored.Token || cfg.CACert != stored.CACert {
		// What we knew about the old root no longer applies.
		cfg.TokenID, cfg.Scopes, cfg.ExpiresAt = "", nil, nil
		resp.AddWarning("connection not verified: token_id and scopes are unknown, and role scopes are not checked against the root's")
	}
	return ""
}

// verifyConnection checks url, ca_cert and token with GET /tokens/self. The
// error is a message for the caller, naming the field at fault.
func (b *tookenBackend) verifyConnection(ctx context.Context, cfg *tookenConfig) (*tookenapi.Token, error) {
	c, err := tookenapi.New(cfg.clientOptions(b.Logger()))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	self, err := c.Self(ctx)
	if err == nil {
		return self, nil
	}
	const hint = " (set verify_connection=false to store the config without checking)"
	var apiErr *tookenapi.APIError
	switch {
	case errors.Is(err, tookenapi.ErrUnauthorized):
		return nil, errors.New("token: Tooken rejected the token (401 unauthorized): it is unknown, revoked or expired" + hint)
	case tookenapi.IsTLSError(err):
		return nil, fmt.Errorf("ca_cert: TLS verification of %s failed: %v%s", cfg.URL, err, hint)
	case errors.As(err, &apiErr):
		return nil, fmt.Errorf("url: %s answered GET /tokens/self with %v%s", cfg.URL, apiErr, hint)
	case tookenapi.IsUnreachable(err) || errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("url: cannot reach Tooken at %s: %v%s", cfg.URL, err, hint)
	default:
		return nil, fmt.Errorf("url: checking the connection to %s failed: %v%s", cfg.URL, err, hint)
	}
}

func (b *tookenBackend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.rot.mu.Lock()
	defer b.rot.mu.Unlock()
	if err := deleteConfig(ctx, req.Storage); err != nil {
		return nil, err
	}
	b.resetConfig()
	return nil, nil
}

const operationPrefixTooken = "tooken"

const pathConfigHelpSyn = `Configure the connection to Tooken.`

const pathConfigHelpDesc = `
The engine authenticates to Tooken with a root token that must hold every
scope the roles hand out (tokens:write is needed to create tokens).

Write fields: url (default https://api.tooken.io/v1), token (the root secret,
tok_live_ or tok_test_ followed by at least 20 letters or digits; surrounding
whitespace is trimmed; required when creating the config, write-only),
ca_cert (PEM, optional), request_timeout (per HTTP attempt, default 30s),
max_retries (0 to 10, default 3), verify_connection (default true: GET
/tokens/self must succeed, otherwise the write is rejected and nothing is
stored), rollback_min_age (1s to 1h, default 2m: age after which the periodic
rollback finishes an interrupted creds read), and the root rotation schedule:
rotation_period (0 = off, default; else at least 1m), rotation_window (daily
UTC "HH:MM-HH:MM", default any time) and rotation_grace (how long the previous
secret keeps working after a rotation, 10s to 24h, default 1h). Fields left
out of an update keep their value.

Read returns every field but the secret, plus the root token's token_id,
scopes and expires_at as learned at the last verification, and the rotation
state: last_rotated, next_rotation, previous_secret_expires_at,
rotation_failures, last_rotation_error and last_rotation_error_at. Delete
removes the configuration; the revokes of leases already issued are then
queued until a configuration is written again.
`
