package tooken

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Contract limits. Lengths count characters (code points), as Tooken does.
const (
	maxUpstreamTTL      = 366 * 24 * time.Hour
	maxMetadataKeys     = 20
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
	maxScopes           = 50
	maxScopeLen         = 100
)

// Limits of the engine's own.
const (
	// minTokenLifetime is the shortest effective max TTL a token is created
	// with: its lease ends a second before the upstream expiry, renewals
	// two, and the create itself takes time. A shorter one would create a
	// token only to revoke it for want of a lease.
	minTokenLifetime = 10 * time.Second
	// maxDescriptionLen bounds a role's free-form description.
	maxDescriptionLen = 1000
	// maxReportedScopes bounds the invalid scopes an error lists.
	maxReportedScopes = 5
)

// Metadata keys the engine sets on every token. Role metadata may not use the
// reserved prefix.
const (
	metaKeyPrefix        = "vault_"
	metaRole             = "vault_role"
	metaMountUUID        = "vault_mount_uuid"     // the mount's backend UUID: how tidy finds this mount's tokens
	metaMountAccessor    = "vault_mount_accessor" // set only when Vault passes it (Vault 1.14 does not)
	metaIssueKey         = "vault_issue_key"
	numPluginMetadataKey = 4
)

// scopeRegex is the contract's scope grammar, resource:action.
var scopeRegex = regexp.MustCompile(`^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*$`)

// roleEntry is a role, stored at rolePrefix+name.
type roleEntry struct {
	Scopes       []string          `json:"scopes"`
	TTL          time.Duration     `json:"ttl"`
	MaxTTL       time.Duration     `json:"max_ttl"`
	NameTemplate string            `json:"name_template,omitempty"` // "" = defaultNameTemplate
	Metadata     map[string]string `json:"metadata,omitempty"`
	Description  string            `json:"description,omitempty"`
	// IdentityMetadata lists the requester's identity metadata keys copied
	// into each token's metadata (identity.go).
	IdentityMetadata []string `json:"identity_metadata,omitempty"`
	// MaxLiveTokens caps the role's tokens alive at once; 0 = no limit
	// (issuance_count.go).
	MaxLiveTokens int `json:"max_live_tokens,omitempty"`
	// AllowTokenManagement is the operator's explicit consent to scopes on
	// Tooken's tokens resource (tokenManagementError).
	AllowTokenManagement bool `json:"allow_token_management,omitempty"`
}

// tokensResource is the scope resource of Tooken's own token API.
const tokensResource = "tokens:"

// tokenScopes are the scopes among scopes on the tokens resource.
func tokenScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if strings.HasPrefix(s, tokensResource) {
			out = append(out, s)
		}
	}
	return out
}

// tokenPowers says what a holder of the token scopes ts can do at Tooken.
func tokenPowers(ts []string) string {
	switch {
	case holdsScope(ts, "tokens:write"):
		return "create tokens of their own that outlive the lease (up to 366 days, unseen by tidy), revoke any token of the Tooken account (this mount's root included, which locks the engine out) and rotate or change every token whose scopes they hold"
	case holdsScope(ts, "tokens:read"):
		return "list and read every token of the Tooken account (names, scopes, metadata, not their secrets)"
	}
	return "act on the tokens of the Tooken account"
}

// tokenManagementError refuses tokens:* scopes that the role does not opt
// in to with allow_token_management: they make the creds holder an
// administrator of the Tooken account, not a user of it.
func (r *roleEntry) tokenManagementError() error {
	ts := tokenScopes(r.Scopes)
	if len(ts) == 0 || r.AllowTokenManagement {
		return nil
	}
	shown := ts[:min(len(ts), maxReportedScopes)]
	return fmt.Errorf("scopes: %s would let whoever reads these creds %s; set allow_token_management=true to grant it anyway, or leave the tokens:* scopes out", strings.Join(shown, ", "), tokenPowers(ts))
}

// tokenManagementWarning is the warning of a role that grants tokens:*
// scopes with allow_token_management; "" when it grants none.
func (r *roleEntry) tokenManagementWarning() string {
	ts := tokenScopes(r.Scopes)
	if len(ts) == 0 {
		return ""
	}
	return fmt.Sprintf("allow_token_management: with %s, whoever reads these creds can %s", strings.Join(ts[:min(len(ts), maxReportedScopes)], ", "), tokenPowers(ts))
}

// maxMaxLiveTokens bounds max_live_tokens.
const maxMaxLiveTokens = 1000000

func (r *roleEntry) toResponseData() map[string]any {
	tmpl := r.NameTemplate
	if tmpl == "" {
		tmpl = defaultNameTemplate
	}
	md := r.Metadata
	if md == nil {
		md = map[string]string{}
	}
	idmd := r.IdentityMetadata
	if idmd == nil {
		idmd = []string{}
	}
	return map[string]any{
		"scopes":            r.Scopes,
		"ttl":               int64(r.TTL / time.Second),
		"max_ttl":           int64(r.MaxTTL / time.Second),
		"name_template":     tmpl,
		"metadata":          md,
		"identity_metadata": idmd,
		"description":       r.Description,
		"max_live_tokens":   int64(r.MaxLiveTokens),

		"allow_token_management": r.AllowTokenManagement,
	}
}

// validate reports every problem with the role at once.
func (r *roleEntry) validate(name string) error {
	var errs []error
	if len(name) > maxMetadataValueLen {
		errs = append(errs, fmt.Errorf("name: at most %d characters (it is the token's vault_role metadata)", maxMetadataValueLen))
	}
	if err := validateScopes(r.Scopes); err != nil {
		errs = append(errs, err)
	}
	if r.MaxTTL > 0 && r.MaxTTL < minTokenLifetime {
		errs = append(errs, fmt.Errorf("max_ttl: at least %s (0 = the mount's max lease TTL): a token needs time for its lease", humanDuration(minTokenLifetime)))
	}
	if r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		errs = append(errs, fmt.Errorf("ttl: %s cannot exceed max_ttl %s", humanDuration(r.TTL), humanDuration(r.MaxTTL)))
	}
	if n := utf8.RuneCountInString(r.Description); n > maxDescriptionLen {
		errs = append(errs, fmt.Errorf("description: at most %d characters, got %d", maxDescriptionLen, n))
	}
	if r.MaxLiveTokens < 0 || r.MaxLiveTokens > maxMaxLiveTokens {
		errs = append(errs, fmt.Errorf("max_live_tokens: must be 0 (no limit) to %d", maxMaxLiveTokens))
	}
	if err := r.tokenManagementError(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validateMetadata(r.Metadata)...)
	errs = append(errs, validateIdentityMetadata(r.IdentityMetadata, r.Metadata)...)
	if err := validateNameTemplate(r.NameTemplate, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateScopes applies the contract's rules to a role's scopes: 1 to 50,
// each resource:action of at most 100 characters. The count is checked
// first, so that a huge list costs one comparison.
func validateScopes(scopes []string) error {
	switch {
	case len(scopes) == 0:
		return errors.New("scopes: required, at least one scope (e.g. scopes=deployments:write)")
	case len(scopes) > maxScopes:
		return fmt.Errorf("scopes: at most %d (Tooken's limit), got %d", maxScopes, len(scopes))
	}
	var bad []string
	for _, s := range scopes {
		if len(s) > maxScopeLen || !scopeRegex.MatchString(s) {
			bad = append(bad, quoteShort(s))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("scopes: invalid scope %s (expected resource:action, each part [a-z][a-z0-9_.-]*, at most %d characters)", joinFirst(bad, maxReportedScopes), maxScopeLen)
}

func validateMetadata(md map[string]string) []error {
	if limit := maxMetadataKeys - numPluginMetadataKey; len(md) > limit {
		// Only the count: the keys of a huge map are not worth checking.
		return []error{fmt.Errorf("metadata: at most %d keys (Tooken allows %d and the engine sets %d of its own), got %d", limit, maxMetadataKeys, numPluginMetadataKey, len(md))}
	}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(md)) {
		switch {
		case k == "":
			errs = append(errs, errors.New("metadata: empty key"))
		case utf8.RuneCountInString(k) > maxMetadataKeyLen:
			errs = append(errs, fmt.Errorf("metadata: key %s is longer than %d characters", quoteShort(k), maxMetadataKeyLen))
		case strings.HasPrefix(k, metaKeyPrefix):
			errs = append(errs, fmt.Errorf("metadata: key %q uses the prefix %q reserved for the engine", k, metaKeyPrefix))
		}
		if utf8.RuneCountInString(md[k]) > maxMetadataValueLen {
			errs = append(errs, fmt.Errorf("metadata: value of %s is longer than %d characters", quoteShort(k), maxMetadataValueLen))
		}
	}
	return errs
}

// trimmedUnique trims and de-duplicates, keeping order, in linear time.
func trimmedUnique(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// validateIdentityMetadata checks the identity metadata keys a role copies
// into its tokens: each a valid Tooken metadata key that the role's own
// metadata and the engine do not set, and all of them within Tooken's 20
// keys beside the role's and the engine's.
func validateIdentityMetadata(keys []string, md map[string]string) []error {
	var errs []error
	if limit := maxMetadataKeys - numPluginMetadataKey - len(md); len(keys) > limit {
		errs = append(errs, fmt.Errorf("identity_metadata: at most %d keys with the role's %d metadata keys (Tooken allows %d and the engine sets %d of its own)", max(limit, 0), len(md), maxMetadataKeys, numPluginMetadataKey))
		if len(keys) > maxMetadataKeys {
			return errs // not worth checking one by one
		}
	}
	for _, k := range keys {
		switch {
		case utf8.RuneCountInString(k) > maxMetadataKeyLen:
			errs = append(errs, fmt.Errorf("identity_metadata: key %s is longer than %d characters (Tooken's limit on metadata keys)", quoteShort(k), maxMetadataKeyLen))
		case strings.HasPrefix(k, metaKeyPrefix):
			errs = append(errs, fmt.Errorf("identity_metadata: key %s uses the prefix %q reserved for the engine", quoteShort(k), metaKeyPrefix))
		}
		if _, ok := md[k]; ok {
			errs = append(errs, fmt.Errorf("identity_metadata: key %s is also in metadata; keep it in one of them", quoteShort(k)))
		}
	}
	return errs
}

// holdsScope reports whether held grants scope; R:write implies R:read.
func holdsScope(held []string, scope string) bool {
	if slices.Contains(held, scope) {
		return true
	}
	if res, ok := strings.CutSuffix(scope, ":read"); ok {
		return slices.Contains(held, res+":write")
	}
	return false
}

// missingScopes lists the wanted scopes that held does not grant.
func missingScopes(held, wanted []string) []string {
	var missing []string
	for _, s := range wanted {
		if !holdsScope(held, s) {
			missing = append(missing, s)
		}
	}
	return missing
}

// maxSuggestedScopes bounds the missing scopes that get a "did you mean",
// and maxListedRootScopes the root's scopes that a message lists.
const (
	maxSuggestedScopes  = 5
	maxListedRootScopes = 20
)

// rootScopesProblem reports the scopes the config's root does not hold,
// when its scopes are known (a verified config) and the scopes are valid
// (validateScopes reports them otherwise). The message suggests the closest
// scope the root holds for a likely typo, and lists what it holds.
func rootScopesProblem(cfg *tookenConfig, scopes []string) error {
	if cfg == nil || cfg.TokenID == "" || validateScopes(scopes) != nil {
		return nil
	}
	missing := missingScopes(cfg.Scopes, scopes)
	if len(missing) == 0 {
		return nil
	}
	held := grantedScopes(cfg.Scopes)
	var hints []string
	for _, m := range missing[:min(len(missing), maxSuggestedScopes)] {
		if s := closestField(m, held); s != "" {
			hints = append(hints, fmt.Sprintf("%s for %s", s, m))
		}
	}
	msg := "scopes: the root token does not hold " + strings.Join(missing, ", ")
	if len(hints) > 0 {
		msg += " (did you mean " + strings.Join(hints, ", ") + "?)"
	}
	msg += "; it holds " + joinFirst(cfg.Scopes, maxListedRootScopes)
	return errors.New(msg + " (R:write implies R:read): ask for those, or give the root the scope at Tooken")
}

// grantedScopes is what holding held grants: held, and R:read for each
// R:write.
func grantedScopes(held []string) []string {
	out := slices.Clone(held)
	for _, s := range held {
		if res, ok := strings.CutSuffix(s, ":write"); ok && !slices.Contains(held, res+":read") {
			out = append(out, res+":read")
		}
	}
	return out
}

// normalizeScopes trims and de-duplicates, keeping order, in linear time.
func normalizeScopes(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]struct{}, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		if _, dup := seen[s]; s != "" && !dup {
			seen[s] = struct{}{}
			out = append(out, s)
		}
	}
	return out
}

func roleFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeString,
			Description: "Name of the role.",
			Required:    true,
		},
		"scopes": {
			Type:        framework.TypeCommaStringSlice,
			Description: fmt.Sprintf("Scopes of the tokens issued for this role, comma-separated (resource:action, e.g. deployments:write; 1 to %d, each at most %d characters). Required when creating the role. The root token must hold them (R:write implies R:read).", maxScopes, maxScopeLen),
		},
		"ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Lease TTL of the issued tokens, and of each renewal. Default: the mount's default lease TTL.",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Maximum lifetime of an issued token and its lease, at least %s, capped by the mount's max lease TTL and 366 days. The token expires upstream at that point. Default (0): the mount's max lease TTL. Lowering it does not shorten the leases and tokens already issued.", humanDuration(minTokenLifetime)),
		},
		"name_template": {
			Type:        framework.TypeString,
			Description: "Go template for token names, with .RoleName, .DisplayName, .EntityName, .EntityMetadata and .AliasMetadata (the requester's Vault identity; a missing key renders empty) and the functions random, truncate, truncate_sha256, lowercase, uppercase, replace, sha256, base64, unix_time, unix_time_millis, timestamp, uuid, print, printf and Go's and, or, not, eq, ne, lt, le, gt, ge, len, index, slice. No range, template, define or block. Must render 1 to 128 characters of A-Z a-z 0-9 . _ -, also for a requester without identity. Default: " + defaultNameTemplate,
		},
		"metadata": {
			Type:        framework.TypeKVPairs,
			Description: fmt.Sprintf("Metadata set on issued tokens beside the engine's own vault_role, vault_mount_uuid, vault_mount_accessor and vault_issue_key: key=value pairs, comma-separated (team=platform,env=dev) or the field repeated, or an object of strings (at most %d keys of up to %d characters, values up to %d characters; keys starting with vault_ are reserved). Replaced as a whole by an update.", maxMetadataKeys-numPluginMetadataKey, maxMetadataKeyLen, maxMetadataValueLen),
		},
		"description": {
			Type:        framework.TypeString,
			Description: fmt.Sprintf("Free-form description of the role, at most %d characters.", maxDescriptionLen),
		},
		"allow_token_management": {
			Type:        framework.TypeBool,
			Description: "Allow scopes on Tooken's tokens resource (tokens:read, tokens:write). Whoever reads creds of such a role administers the Tooken account: with tokens:write they can create tokens that outlive their lease (unseen by tidy) and revoke any token, the engine's root included. Default false: such scopes are refused.",
			Default:     false,
		},
		"identity_metadata": {
			Type:        framework.TypeCommaStringSlice,
			Description: fmt.Sprintf("Identity metadata keys copied into each token's metadata from the requester's Vault entity: its aliases' metadata (where the jwt auth method's claim_mappings land) first, then the entity's. A key the requester lacks is left out; values are cut to %d characters. Together with metadata at most %d keys.", maxMetadataValueLen, maxMetadataKeys-numPluginMetadataKey),
		},
		"max_live_tokens": {
			Type:        framework.TypeInt,
			Description: "Most tokens of this role alive at once (leased, or from a creds read still being finished); a creds read beyond it is refused with 429 and creates nothing. 0 (the default) = no limit.",
		},
	}
}

// roleResponseFields are the fields of a role read: its write fields, with
// durations in seconds.
func roleResponseFields() map[string]*framework.FieldSchema {
	fields := roleFields()
	delete(fields, "name")
	fields["ttl"] = secondsField("Lease TTL of the issued tokens; 0: the mount's default")
	fields["max_ttl"] = secondsField("Maximum lifetime of an issued token; 0: the mount's max lease TTL")
	return fields
}

func pathRoles(b *tookenBackend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixTooken,
				OperationSuffix: "role",
			},
			Fields: roleFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathRolesRead,
					Summary:   "Read a role.",
					Responses: dataResponse("The role.", roleResponseFields()),
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathRolesWrite,
					Summary:                     "Create or update a role; on update, fields left out keep their value.",
					Responses:                   writeResponses("The role is stored."),
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathRolesWrite,
					Summary:                     "Create or update a role; on update, fields left out keep their value.",
					Responses:                   writeResponses("The role is stored."),
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathRolesDelete,
					Summary:                     "Delete a role. Tokens already issued stay valid until their leases end.",
					Responses:                   deleteResponses("The role is deleted."),
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			ExistenceCheck:  b.pathRoleExistenceCheck,
			HelpSynopsis:    pathRolesHelpSyn,
			HelpDescription: pathRolesHelpDesc,
		},
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixTooken,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathRolesList,
					Summary:   "List the roles.",
					Responses: listResponses("The names of the roles."),
				},
			},
			HelpSynopsis:    pathRolesListHelpSyn,
			HelpDescription: pathRolesListHelpDesc,
		},
	}
}

func (b *tookenBackend) pathRoleExistenceCheck(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	role, err := readRole(ctx, req.Storage, d.Get("name").(string))
	if err != nil {
		return false, err
	}
	return role != nil, nil
}

func (b *tookenBackend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	keys, err := listRoles(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(keys), nil
}

func (b *tookenBackend) pathRolesRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	role, err := readRole(ctx, req.Storage, d.Get("name").(string))
	if err != nil {
		return nil, err
	}
	if role == nil {
		return nil, nil
	}
	resp := &logical.Response{Data: role.toResponseData()}
	if err := role.tokenManagementError(); err != nil {
		// Stored by an earlier version, which did not ask: creds refuse it.
		resp.AddWarning(err.Error() + "; creds of this role are refused until then")
	}
	return resp, nil
}

func (b *tookenBackend) pathRolesWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := readRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		role = &roleEntry{} // without scopes, validate says they are required
	}
	applyRoleFields(role, d)
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	// Every problem at once, the root's scopes included.
	if err := errors.Join(role.validate(name), rootScopesProblem(cfg, role.Scopes)); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}

	if err := putRole(ctx, req.Storage, name, role); err != nil {
		return nil, err
	}
	b.forgetRole(name)
	warnings := b.roleWarnings(role, cfg)
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

// applyRoleFields copies the fields given in a role write; the others keep
// their value. The default template and an empty map are stored as unset.
func applyRoleFields(role *roleEntry, d *framework.FieldData) {
	if v, ok := d.GetOk("scopes"); ok {
		role.Scopes = normalizeScopes(v.([]string))
	}
	if v, ok := d.GetOk("ttl"); ok {
		role.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_ttl"); ok {
		role.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("name_template"); ok {
		role.NameTemplate = strings.TrimSpace(v.(string))
		if role.NameTemplate == defaultNameTemplate {
			role.NameTemplate = ""
		}
	}
	if v, ok := d.GetOk("metadata"); ok {
		role.Metadata = v.(map[string]string)
		if len(role.Metadata) == 0 {
			role.Metadata = nil
		}
	}
	if v, ok := d.GetOk("description"); ok {
		role.Description = v.(string)
	}
	if v, ok := d.GetOk("allow_token_management"); ok {
		role.AllowTokenManagement = v.(bool)
	}
	if v, ok := d.GetOk("identity_metadata"); ok {
		role.IdentityMetadata = trimmedUnique(v.([]string))
		if len(role.IdentityMetadata) == 0 {
			role.IdentityMetadata = nil
		}
	}
	if v, ok := d.GetOk("max_live_tokens"); ok {
		role.MaxLiveTokens = v.(int)
	}
}

// roleWarnings are the caps a valid role runs into, and the scope check that
// could not be made.
func (b *tookenBackend) roleWarnings(role *roleEntry, cfg *tookenConfig) []string {
	var out []string
	mountMax := b.System().MaxLeaseTTL()
	if role.TTL > mountMax {
		out = append(out, fmt.Sprintf("ttl %s is greater than the mount's max lease TTL %s: leases will be capped", humanDuration(role.TTL), humanDuration(mountMax)))
	}
	if role.MaxTTL > mountMax {
		out = append(out, fmt.Sprintf("max_ttl %s is greater than the mount's max lease TTL %s: tokens will be capped", humanDuration(role.MaxTTL), humanDuration(mountMax)))
	}
	if role.MaxTTL > maxUpstreamTTL {
		out = append(out, fmt.Sprintf("max_ttl %s is greater than Tooken's limit of 366 days: tokens will be capped", humanDuration(role.MaxTTL)))
	}
	switch {
	case cfg == nil:
		out = append(out, "the mount has no config yet, so scopes are not checked against the root token's; write the config (creds reads fail until then)")
	case cfg.TokenID == "":
		out = append(out, "the root token's scopes are unknown (config written with verify_connection=false): scopes not checked")
	}
	if w := role.tokenManagementWarning(); w != "" {
		out = append(out, w)
	}
	return out
}

func (b *tookenBackend) pathRolesDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := deleteRole(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	b.forgetRole(name)
	return nil, nil
}

const pathRolesHelpSyn = `Manage the roles that creds are issued for.`

const pathRolesHelpDesc = `
A role sets the scopes, lifetime, name and metadata of the Tooken tokens read
from creds/<name>.

Fields: scopes (required on create; comma-separated resource:action, e.g.
deployments:write, 1 to 50 of at most 100 characters; the root token must
hold them, R:write implying R:read), ttl (lease TTL and renewal increment;
default: the mount's), max_ttl (hard lifetime of a token, at least 10s,
capped by the mount's max lease TTL and 366 days; the token expires upstream
then; lowering it does not shorten leases already issued), name_template (Go
template with .RoleName, .DisplayName, the requester's identity .EntityName,
.EntityMetadata and .AliasMetadata, and Vault's template functions, without
loops; must render a valid Tooken name), metadata (key=value pairs set on
each token beside vault_role, vault_mount_uuid, vault_mount_accessor and
vault_issue_key: metadata=team=platform,env=dev, or metadata=team=platform
metadata=env=dev, or a JSON object), identity_metadata (identity metadata
keys of the requester copied into each token's metadata), description (at
most 1000 characters), max_live_tokens (most tokens of the role alive at
once; a creds read beyond it answers 429 and creates nothing; 0 = no limit),
allow_token_management (default false: scopes on
tokens, tokens:read or tokens:write, are refused; true grants them, with a
warning: the creds holder then administers the Tooken account, and with
tokens:write can revoke the engine's root and create tokens that outlive
their lease).

An update changes only the fields it names; metadata is replaced as a whole.
A field the path does not take is refused. Deleting a role does not revoke
its tokens: their leases can still be revoked but no longer renewed.
`

const pathRolesListHelpSyn = `List the roles.`

const pathRolesListHelpDesc = `Lists the names of the roles defined on this mount.`
