package tooken

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
)

// Static roles: the engine takes custody of an existing Tooken token, keeps
// its current secret (only in Vault once it has rotated it), rotates it on a
// schedule and on demand through the rotation protocol (rotation.go), the
// root authenticating each rotation, and serves the secret at
// static-creds/<name> without a lease.

const (
	defaultStaticGrace      = 5 * time.Minute
	maxStaticRotationPeriod = 366 * 24 * time.Hour
	maxStaticRoleNameLen    = 128
	maxStaticDescriptionLen = 1024
	// maxStaticRoles bounds the static roles of a mount: each one's token is
	// checked upstream every staticCheckInterval, and every check and
	// scheduled rotation goes through one rate limit (static_schedule.go).
	maxStaticRoles = 2000
)

// tokenIDRegex is what the engine accepts as a Tooken token id. The contract
// shows tkn_ and hex; letters are accepted too. Never a secret's shape.
var tokenIDRegex = regexp.MustCompile(`^tkn_[A-Za-z0-9]{1,64}$`)

// staticRoleEntry is a static role, stored seal-wrapped at
// staticRolePrefix+name: what the operator set, the managed token as Tooken
// last described it, its current secret, and the rotation state.
type staticRoleEntry struct {
	TokenID string `json:"token_id"`
	// Secret is the token's current secret; "" while the rotation that
	// imports the token is being finished.
	Secret string `json:"secret,omitempty"`
	// Dest is where the config pointed when the role was written (its url
	// and CA): the secret is only ever sent there, and the role is neither
	// rotated nor checked while the config points elsewhere.
	Dest secretDestination `json:"destination"`

	RotationPeriod     time.Duration `json:"rotation_period,omitempty"`
	RotationSchedule   string        `json:"rotation_schedule,omitempty"`
	RotationWindow     string        `json:"rotation_window,omitempty"`
	RotationGrace      time.Duration `json:"rotation_grace"`
	SkipImportRotation bool          `json:"skip_import_rotation"`
	Description        string        `json:"description,omitempty"`

	// The token as Tooken last described it.
	Name              string     `json:"name,omitempty"`
	Scopes            []string   `json:"scopes,omitempty"`
	ExpiresAt         *time.Time `json:"expires_at,omitempty"`
	UpstreamRotatedAt *time.Time `json:"upstream_rotated_at,omitempty"` // its rotated_at: another value upstream is a change made outside Vault
	GoneAt            *time.Time `json:"gone_at,omitempty"`             // when Tooken answered 404 for it: revoked or expired
	// CustodyLostAt is when a check found the token in another custody
	// (custody_mark.go): the engine no longer rotates, checks or serves it.
	CustodyLostAt *time.Time `json:"custody_lost_at,omitempty"`

	// PeriodFrom is what the schedule counts from (rotationSchedule.anchor).
	PeriodFrom              time.Time  `json:"period_from"`
	LastRotated             *time.Time `json:"last_rotated,omitempty"`
	LastRotationKey         string     `json:"last_rotation_key,omitempty"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
	rotationStatus
}

// schedule is the role's parsed rotation schedule. A stored role always has
// a valid one (validate checked it); a zero schedule would rotate never.
func (r *staticRoleEntry) schedule() rotationSchedule {
	s, _ := newRotationSchedule(r.RotationPeriod, r.RotationSchedule, r.RotationWindow)
	return s
}

// managed tells whether the engine rotates and checks the role now: it has a
// secret, its token exists upstream and is in the role's custody, and the
// config (whose destination is config; the zero value when there is none)
// still points to the Tooken the role was written for.
func (r *staticRoleEntry) managed(config secretDestination) bool {
	return r.held() && r.Dest.sameAs(config)
}

// held tells whether the role holds its token: it has its secret, the token
// exists upstream, and no other custody took it.
func (r *staticRoleEntry) held() bool {
	return r.Secret != "" && r.GoneAt == nil && r.CustodyLostAt == nil
}

// nextRotation is when the schedule rotates the token next; zero when the
// role does not hold its token (no secret yet, gone, another custody's).
func (r *staticRoleEntry) nextRotation() time.Time {
	if !r.held() {
		return time.Time{}
	}
	return r.schedule().next(r.PeriodFrom, r.RotationRetryAt)
}

// validate reports every problem with the role's fields at once.
func (r *staticRoleEntry) validate(name string) error {
	var errs []error
	if len(name) > maxStaticRoleNameLen {
		errs = append(errs, fmt.Errorf("name: at most %d characters", maxStaticRoleNameLen))
	}
	if r.TokenID == "" {
		errs = append(errs, errors.New("token_id: required when creating a static role; give the id (tkn_...) of the Tooken token to manage"))
	} else if !tokenIDRegex.MatchString(r.TokenID) {
		// Never echo the value: it may be a secret pasted in the wrong field.
		errs = append(errs, errors.New("token_id: not a Tooken token id; give the token's id (tkn_ followed by letters or digits), not its secret"))
	}
	if _, err := newRotationSchedule(r.RotationPeriod, r.RotationSchedule, r.RotationWindow); err != nil {
		errs = append(errs, err)
	}
	if r.RotationGrace < 0 || r.RotationGrace > maxRotationGrace {
		errs = append(errs, fmt.Errorf("rotation_grace: must be between 0s and %s", humanDuration(maxRotationGrace)))
	}
	if n := utf8.RuneCountInString(r.Description); n > maxStaticDescriptionLen {
		errs = append(errs, fmt.Errorf("description: at most %d characters, got %d", maxStaticDescriptionLen, n))
	}
	return errors.Join(errs...)
}

// warnings for a valid role.
func (r *staticRoleEntry) warnings() []string {
	if r.RotationGrace < time.Minute {
		return []string{fmt.Sprintf("rotation_grace %s is below 1m: a consumer still using the previous secret gets 401 that long after each rotation (Vault Agent re-reads static-creds within seconds of a rotation)", humanDuration(r.RotationGrace))}
	}
	return nil
}

// applyStaticRoleFields copies the fields given in a write; the others keep
// their value. Giving one of rotation_period and rotation_schedule replaces
// the other.
func applyStaticRoleFields(r *staticRoleEntry, d *framework.FieldData) {
	if v, ok := d.GetOk("token_id"); ok {
		r.TokenID = strings.TrimSpace(v.(string))
	}
	period, hasPeriod := d.GetOk("rotation_period")
	spec, hasSpec := d.GetOk("rotation_schedule")
	if hasPeriod {
		r.RotationPeriod = time.Duration(period.(int)) * time.Second
	}
	if hasSpec {
		r.RotationSchedule = strings.TrimSpace(spec.(string))
	}
	switch {
	case hasPeriod && !hasSpec:
		r.RotationSchedule = ""
	case hasSpec && !hasPeriod:
		r.RotationPeriod = 0
	}
	if v, ok := d.GetOk("rotation_window"); ok {
		r.RotationWindow = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("rotation_grace"); ok {
		r.RotationGrace = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("description"); ok {
		r.Description = v.(string)
	}
}

// scheduledRotation is the next rotation the engine will make of the role
// while the config points to config: zero when it makes none.
func (r *staticRoleEntry) scheduledRotation(config secretDestination) time.Time {
	if !r.managed(config) {
		return time.Time{}
	}
	return r.nextRotation()
}

// toResponseData is a read of the role: every field but the secret, the
// token as Tooken last described it, and the rotation state.
func (r *staticRoleEntry) toResponseData(config secretDestination) map[string]any {
	next := r.scheduledRotation(config)
	return map[string]any{
		"token_id":                   r.TokenID,
		"rotation_period":            int64(r.RotationPeriod / time.Second),
		"rotation_schedule":          r.RotationSchedule,
		"rotation_window":            r.RotationWindow,
		"rotation_grace":             int64(r.RotationGrace / time.Second),
		"skip_import_rotation":       r.SkipImportRotation,
		"description":                r.Description,
		"name":                       r.Name,
		"scopes":                     nonNilScopes(r.Scopes),
		"expires_at":                 fmtTimeOrNil(r.ExpiresAt),
		"last_rotated":               fmtTimeOrNil(r.LastRotated),
		"next_rotation":              fmtTimeOrNil(&next),
		"previous_secret_expires_at": fmtTimeOrNil(r.PreviousSecretExpiresAt),
		"rotation_failures":          r.RotationFailures,
		"last_rotation_error":        r.LastRotationError,
		"last_rotation_error_at":     fmtTimeOrNil(r.LastRotationErrorAt),
	}
}

// staticCredsOverdueTTL is the ttl static-creds answers while a rotation is
// due but has not run yet (the periodic function runs about once a minute):
// Vault Agent then reads again that soon, and renders the new secret within
// seconds of the rotation, instead of every second.
const staticCredsOverdueTTL = 5 * time.Second

// staticCredsUnscheduledTTL is the ttl static-creds answers when the engine
// does not rotate the role (the config points to another Tooken): Agent
// checks again that often.
const staticCredsUnscheduledTTL = time.Minute

// credsData is a static-creds read at now. rotation_period and ttl (whole
// seconds) with no lease make Vault Agent (consul-template) sleep ttl+1
// seconds and read again: right after the next rotation.
func (r *staticRoleEntry) credsData(now time.Time, config secretDestination) map[string]any {
	next := r.scheduledRotation(config)
	sched := r.schedule()
	period := sched.period
	if sched.cron != nil {
		upcoming := next
		if upcoming.IsZero() {
			upcoming = sched.after(r.PeriodFrom)
		}
		period = upcoming.Sub(r.PeriodFrom)
	}
	ttl := staticCredsUnscheduledTTL
	switch {
	case next.IsZero():
	case next.After(now):
		ttl = next.Sub(now)
	default:
		ttl = staticCredsOverdueTTL
	}
	if r.ExpiresAt != nil {
		// The token dies then: Agent reads again, and gets the error.
		ttl = min(ttl, r.ExpiresAt.Sub(now))
	}
	return map[string]any{
		"token":                      r.Secret,
		"token_id":                   r.TokenID,
		"name":                       r.Name,
		"scopes":                     nonNilScopes(r.Scopes),
		"last_rotated":               fmtTimeOrNil(r.LastRotated),
		"next_rotation":              fmtTimeOrNil(&next),
		"previous_secret_expires_at": fmtTimeOrNil(r.PreviousSecretExpiresAt),
		"rotation_period":            int64(max(period, time.Second) / time.Second),
		"ttl":                        int64(max(ttl, time.Second) / time.Second),
	}
}

func nonNilScopes(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func staticRoleFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeString,
			Description: fmt.Sprintf("Name of the static role (at most %d characters).", maxStaticRoleNameLen),
			Required:    true,
		},
		"token_id": {
			Type:        framework.TypeString,
			Description: "Id of the existing Tooken token to manage (tkn_...). Required on create; cannot change afterwards. The root token must be able to rotate it (tokens:write and every scope of the token).",
		},
		"token": {
			Type:        framework.TypeString,
			Description: "The token's current secret, with skip_import_rotation=true only (required then; token=- reads it from stdin). Checked with GET /tokens/self. Write-only: never returned.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name:      "Token",
				Sensitive: true,
			},
		},
		"rotation_period": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Time between scheduled rotations (%s to %s): the next is due this long after the previous one was due (a rotation run late does not shift the schedule), or after a rotate-role, an import or a repair. Exactly one of rotation_period and rotation_schedule.", humanDuration(minRotationPeriod), humanDuration(maxStaticRotationPeriod)),
		},
		"rotation_schedule": {
			Type:        framework.TypeString,
			Description: `Rotate the token at the instants of this standard 5-field cron spec, in UTC ("0 3 * * *": every day at 03:00). Exactly one of rotation_period and rotation_schedule.`,
		},
		"rotation_window": {
			Type:        framework.TypeString,
			Description: `Daily UTC window "HH:MM-HH:MM" in which scheduled rotations may run (it may wrap past midnight); a rotation due outside it waits for its opening. Empty (default): any time.`,
		},
		"rotation_grace": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("How long the previous secret keeps working after each rotation (previous_secret_ttl), 0 to %s.", humanDuration(maxRotationGrace)),
			Default:     int(defaultStaticGrace / time.Second),
		},
		"skip_import_rotation": {
			Type:        framework.TypeBool,
			Description: "On create: false (default) rotates the token at once, so that only Vault knows its secret from then on; true stores the secret given in token and rotates it only when the schedule says so.",
			Default:     false,
		},
		"description": {
			Type:        framework.TypeString,
			Description: fmt.Sprintf("Free-form description (at most %d characters).", maxStaticDescriptionLen),
		},
	}
}
