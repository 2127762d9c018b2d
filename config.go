package tooken

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

const maxMaxRetries = 10

// secretRegex is the contract's shape of a Tooken secret.
var secretRegex = regexp.MustCompile(`^tok_(live|test)_[A-Za-z0-9]{20,}$`)

// tookenConfig is the mount's connection to Tooken, stored at configPath
// (encrypted by Vault's barrier, like all storage; Vault Enterprise also
// seal-wraps it: the path is in SealWrapStorage). TokenID, Scopes and
// ExpiresAt describe the root token as learned from GET /tokens/self when
// the connection was last verified.
type tookenConfig struct {
	URL              string        `json:"url"`
	Token            string        `json:"token"`
	CACert           string        `json:"ca_cert,omitempty"`
	RequestTimeout   time.Duration `json:"request_timeout"`
	MaxRetries       int           `json:"max_retries"`
	VerifyConnection bool          `json:"verify_connection"`
	RollbackMinAge   time.Duration `json:"rollback_min_age,omitempty"` // 0 = defaultRollbackMinAge

	TokenID   string     `json:"token_id,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`

	rotationConfig // schedule, grace and rotation state of the root
}

// newDefaultConfig is the config a first write starts from.
func newDefaultConfig() *tookenConfig {
	return &tookenConfig{
		URL:              tookenapi.DefaultBaseURL,
		RequestTimeout:   tookenapi.DefaultTimeout,
		MaxRetries:       tookenapi.DefaultMaxRetries,
		VerifyConnection: true,
		rotationConfig:   rotationConfig{RotationGrace: defaultRotationGrace},
	}
}

// connection is how a config reaches Tooken, the secret aside: a client
// built for one connection serves another config only if it is equal.
type connection struct {
	url, caCert string
	timeout     time.Duration
	maxRetries  int
}

func (c *tookenConfig) connection() connection {
	return connection{url: c.URL, caCert: c.CACert, timeout: c.RequestTimeout, maxRetries: c.MaxRetries}
}

// destination is where the config's root secret may be sent (custody.go).
func (c *tookenConfig) destination() secretDestination {
	return destinationOf(c.URL, c.CACert)
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

// rotationCallBudget is what the rotate call of a root rotation (or of its
// replay) may take with all its attempts: max_retries+1 attempts of
// request_timeout and the waits between them, at most
// maxRotationCallBudget.
func (c *tookenConfig) rotationCallBudget() time.Duration {
	if !c.callSettingsValid() || c.RequestTimeout >= maxRotationCallBudget {
		return maxRotationCallBudget
	}
	d := time.Duration(c.MaxRetries+1)*c.RequestTimeout + time.Duration(c.MaxRetries)*tookenapi.MaxRetryWait
	return min(d, maxRotationCallBudget)
}

// minRotationGrace is the shortest rotation_grace this config accepts
// (rotation.go says why).
func (c *tookenConfig) minRotationGrace() time.Duration {
	return minRotationGrace(c.rotationCallBudget())
}

// validateGrace checks rotation_grace against what recovering an
// interrupted rotation needs with this config's request_timeout and
// max_retries. That minimum is computed only from valid values of those: an
// invalid one is reported by its own check, and the minimum checked once it
// is fixed.
func (c *tookenConfig) validateGrace() error {
	g := c.grace()
	if g > maxRotationGrace {
		return fmt.Errorf("rotation_grace: %s is longer than %s (Tooken's limit of previous_secret_ttl); give at most %s", humanDuration(g), humanDuration(maxRotationGrace), humanDuration(maxRotationGrace))
	}
	if !c.callSettingsValid() {
		return nil
	}
	if least := c.minRotationGrace(); g < least {
		return fmt.Errorf("rotation_grace: %s is shorter than the %s that recovering an interrupted rotation needs with request_timeout=%s and max_retries=%d; "+
			"raise rotation_grace to at least %s, or lower request_timeout or max_retries",
			humanDuration(g), humanDuration(least), humanDuration(c.RequestTimeout), c.MaxRetries, humanDuration(least))
	}
	return nil
}

// callSettingsValid tells whether request_timeout and max_retries are valid
// (validate reports them otherwise).
func (c *tookenConfig) callSettingsValid() bool {
	return c.RequestTimeout > 0 && c.MaxRetries >= 0 && c.MaxRetries <= maxMaxRetries
}

// effectiveRollbackMinAge is rollback_min_age with its default.
func (c *tookenConfig) effectiveRollbackMinAge() time.Duration {
	if c == nil || c.RollbackMinAge <= 0 {
		return defaultRollbackMinAge
	}
	return c.RollbackMinAge
}

// toResponseData is everything but the secret, the rotation fields and state
// included.
func (c *tookenConfig) toResponseData(now time.Time) map[string]any {
	scopes := c.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	data := map[string]any{
		"url":               c.URL,
		"ca_cert":           c.CACert,
		"request_timeout":   int64(c.RequestTimeout / time.Second),
		"max_retries":       c.MaxRetries,
		"verify_connection": c.VerifyConnection,
		"rollback_min_age":  int64(c.effectiveRollbackMinAge() / time.Second),
		"token_id":          c.TokenID,
		"scopes":            scopes,
		"expires_at":        fmtTimeOrNil(c.ExpiresAt),
	}
	maps.Copy(data, c.rotationConfig.toResponseData(now))
	return data
}

// validate reports every problem with the config at once.
func (c *tookenConfig) validate() error {
	var errs []error
	if _, err := tookenapi.ParseBaseURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url: %w", err))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token: required when creating the config: the root Tooken secret (token=- reads it from stdin)"))
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
		errs = append(errs, errors.New("request_timeout: must be greater than zero, e.g. 30s"))
	}
	if c.RollbackMinAge < 0 || c.RollbackMinAge > maxRollbackMinAge {
		errs = append(errs, fmt.Errorf("rollback_min_age: must be between 1s and %s (0 = the default, %s)", humanDuration(maxRollbackMinAge), humanDuration(defaultRollbackMinAge)))
	}
	if c.MaxRetries < 0 || c.MaxRetries > maxMaxRetries {
		errs = append(errs, fmt.Errorf("max_retries: must be between 0 and %d", maxMaxRetries))
	}
	errs = append(errs, c.rotationConfig.validate(), c.validateGrace())
	return errors.Join(errs...)
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
	cfg.rotationConfig.applyFields(d)
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
			Description: fmt.Sprintf("How many times a failed Tooken call is retried, 0 to %d: after a connection error, a 5xx other than 501, a 429 or 503 (after its Retry-After, waited for up to %s), or a 409 telling that a POST with the same Idempotency-Key is still in flight. Backoff: exponential with jitter.", maxMaxRetries, humanDuration(tookenapi.MaxRetryWait)),
			Default:     tookenapi.DefaultMaxRetries,
		},
		"rollback_min_age": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Age after which the periodic rollback finishes a creds request that left a pending issuance record (replays its create and revokes the token), 1s to %s. 0 = the default, %s.", humanDuration(maxRollbackMinAge), humanDuration(defaultRollbackMinAge)),
		},
		"verify_connection": {
			Type:        framework.TypeBool,
			Description: "Check the URL and token with GET /tokens/self before storing the config.",
			Default:     true,
		},
	})
	return fields
}

// rotationConfig is the rotation part of tookenConfig (embedded, so its JSON
// fields sit beside the others in the stored config).
type rotationConfig struct {
	RotationPeriod time.Duration `json:"rotation_period,omitempty"`
	RotationWindow string        `json:"rotation_window,omitempty"`
	// RotationGrace is stored explicitly since the default became 5m; 0 is
	// a config of an earlier version, whose default was 1h (grace).
	RotationGrace time.Duration `json:"rotation_grace,omitempty"`

	// State, written together with the secret.
	SecretSetAt             time.Time  `json:"secret_set_at,omitempty"`
	LastRotated             *time.Time `json:"last_rotated,omitempty"`
	LastRotationKey         string     `json:"last_rotation_key,omitempty"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`

	// Status of failed attempts, cleared by a success or a new token.
	rotationStatus
}

func (r *rotationConfig) grace() time.Duration {
	if r.RotationGrace <= 0 {
		return legacyRotationGrace
	}
	return r.RotationGrace
}

// validate reports every problem with the rotation fields.
func (r *rotationConfig) validate() error {
	var errs []error
	if err := validateRotationPeriod(r.RotationPeriod); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseWindow(r.RotationWindow); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// secretChanged records that the operator wrote a new root secret.
func (r *rotationConfig) secretChanged(now time.Time) {
	r.SecretSetAt = now.UTC()
	r.PreviousSecretExpiresAt = nil
	r.clearFailures()
}

// nextRotation is when the schedule rotates next (zero when it is off).
func (r *rotationConfig) nextRotation(now time.Time) time.Time {
	w, _ := parseWindow(r.RotationWindow)
	return nextPeriodicRotation(r.RotationPeriod, r.SecretSetAt, r.RotationRetryAt, w, now)
}

// toResponseData is the rotation part of a config read.
func (r *rotationConfig) toResponseData(now time.Time) map[string]any {
	next := r.nextRotation(now)
	return map[string]any{
		"rotation_period":            int64(r.RotationPeriod / time.Second),
		"rotation_window":            r.RotationWindow,
		"rotation_grace":             int64(r.grace() / time.Second),
		"last_rotated":               fmtTimeOrNil(r.LastRotated),
		"next_rotation":              fmtTimeOrNil(&next),
		"previous_secret_expires_at": fmtTimeOrNil(r.PreviousSecretExpiresAt),
		"rotation_failures":          r.RotationFailures,
		"last_rotation_error":        r.LastRotationError,
		"last_rotation_error_at":     fmtTimeOrNil(r.LastRotationErrorAt),
	}
}

func rotationFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"rotation_period": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Rotate the root secret this long after it was last set (by rotation or by a config write). 0 (default) turns the schedule off; otherwise at least %s.", humanDuration(minRotationPeriod)),
		},
		"rotation_window": {
			Type:        framework.TypeString,
			Description: `Daily UTC window "HH:MM-HH:MM" in which scheduled rotations may run (it may wrap past midnight). Empty (default): any time.`,
		},
		"rotation_grace": {
			Type: framework.TypeDurationSecond,
			Description: fmt.Sprintf("How long the previous root secret keeps working after a rotation (previous_secret_ttl), at most %s. At least what recovering an interrupted rotation needs: %s with the default request_timeout and max_retries (%s + the rotate call's budget, which grows with request_timeout and max_retries up to %s).",
				humanDuration(maxRotationGrace), humanDuration(newDefaultConfig().minRotationGrace()), humanDuration(minRotationGrace(0)), humanDuration(maxRotationCallBudget)),
			Default: int(defaultRotationGrace / time.Second),
		},
	}
}

// applyFields copies the rotation fields given in a config write.
func (r *rotationConfig) applyFields(d *framework.FieldData) {
	if v, ok := d.GetOk("rotation_period"); ok {
		r.RotationPeriod = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("rotation_window"); ok {
		r.RotationWindow = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("rotation_grace"); ok {
		r.RotationGrace = time.Duration(v.(int)) * time.Second
		if r.RotationGrace == 0 {
			r.RotationGrace = defaultRotationGrace // 0 asks for the default
		}
	}
}

func fmtTimeOrNil(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}
