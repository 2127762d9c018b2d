package tooken

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Contract limits.
const (
	maxUpstreamTTL      = 366 * 24 * time.Hour
	maxMetadataKeys     = 20
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
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
	// MaxLiveTokens caps the role's tokens alive at once; 0 = no limit
	// (issuance_count.go).
	MaxLiveTokens int `json:"max_live_tokens,omitempty"`
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
	return map[string]any{
		"scopes":          r.Scopes,
		"ttl":             int64(r.TTL / time.Second),
		"max_ttl":         int64(r.MaxTTL / time.Second),
		"name_template":   tmpl,
		"metadata":        md,
		"description":     r.Description,
		"max_live_tokens": int64(r.MaxLiveTokens),
	}
}

// validate reports every problem with the role at once.
func (r *roleEntry) validate(name string) error {
	var errs []error
	if len(name) > maxMetadataValueLen {
		errs = append(errs, fmt.Errorf("name: at most %d characters (it is the token's vault_role metadata)", maxMetadataValueLen))
	}
	if len(r.Scopes) == 0 {
		errs = append(errs, errors.New("scopes: at least one scope is required"))
	}
	var bad []string
	for _, s := range r.Scopes {
		if !scopeRegex.MatchString(s) {
			bad = append(bad, fmt.Sprintf("%q", s))
		}
	}
	if len(bad) > 0 {
		errs = append(errs, fmt.Errorf("scopes: invalid scope %s (expected resource:action, each part [a-z][a-z0-9_.-]*)", strings.Join(bad, ", ")))
	}
	if r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		errs = append(errs, fmt.Errorf("ttl: %s cannot exceed max_ttl %s", r.TTL, r.MaxTTL))
	}
	if r.MaxLiveTokens < 0 || r.MaxLiveTokens > maxMaxLiveTokens {
		errs = append(errs, fmt.Errorf("max_live_tokens: must be 0 (no limit) to %d", maxMaxLiveTokens))
	}
	errs = append(errs, validateMetadata(r.Metadata)...)
	if err := validateNameTemplate(r.NameTemplate, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validateMetadata(md map[string]string) []error {
	var errs []error
	if limit := maxMetadataKeys - numPluginMetadataKey; len(md) > limit {
		errs = append(errs, fmt.Errorf("metadata: at most %d keys (Tooken allows %d and the engine sets %d of its own)", limit, maxMetadataKeys, numPluginMetadataKey))
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case k == "":
			errs = append(errs, errors.New("metadata: empty key"))
		case len(k) > maxMetadataKeyLen:
			errs = append(errs, fmt.Errorf("metadata: key %q is longer than %d characters", k, maxMetadataKeyLen))
		case strings.HasPrefix(k, metaKeyPrefix):
			errs = append(errs, fmt.Errorf("metadata: key %q uses the prefix %q reserved for the engine", k, metaKeyPrefix))
		}
		if len(md[k]) > maxMetadataValueLen {
			errs = append(errs, fmt.Errorf("metadata: value of %q is longer than %d characters", k, maxMetadataValueLen))
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

// normalizeScopes trims and de-duplicates, keeping order.
func normalizeScopes(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s != "" && !slices.Contains(out, s) {
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
			Description: "Scopes of the tokens issued for this role (resource:action, e.g. deployments:write). Required. The root token must hold them (R:write implies R:read).",
			Required:    true,
		},
		"ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Lease TTL of the issued tokens, and of each renewal. Default: the mount's default lease TTL.",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Maximum lifetime of an issued token and its lease, capped by the mount's max lease TTL and 366 days. The token expires upstream at that point. Default: the mount's max lease TTL.",
		},
		"name_template": {
			Type:        framework.TypeString,
			Description: "Go template for token names, with .RoleName, .DisplayName and the functions random, truncate, lowercase, uppercase, replace, unix_time, timestamp, uuid. Must render 1 to 128 characters of A-Z a-z 0-9 . _ -. Default: " + defaultNameTemplate,
		},
		"metadata": {
			Type:        framework.TypeKVPairs,
			Description: fmt.Sprintf("Metadata set on issued tokens beside the engine's own vault_role, vault_mount_uuid, vault_mount_accessor and vault_issue_key (at most %d keys of up to %d characters, values up to %d; keys starting with vault_ are reserved).", maxMetadataKeys-numPluginMetadataKey, maxMetadataKeyLen, maxMetadataValueLen),
		},
		"description": {
			Type:        framework.TypeString,
			Description: "Free-form description of the role.",
		},
		"max_live_tokens": {
			Type:        framework.TypeInt,
			Description: "Most tokens of this role alive at once (leased, or from a creds read still being finished); a creds read beyond it is refused with 429 and creates nothing. 0 (the default) = no limit.",
		},
	}
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
					Callback: b.pathRolesRead,
					Summary:  "Read a role.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathRolesWrite,
					Summary:                     "Create a role.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathRolesWrite,
					Summary:                     "Update a role; fields left out keep their value.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathRolesDelete,
					Summary:                     "Delete a role. Tokens already issued stay valid until their leases end.",
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
					Callback: b.pathRolesList,
					Summary:  "List the roles.",
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
	return &logical.Response{Data: role.toResponseData()}, nil
}

func (b *tookenBackend) pathRolesWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := readRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		if _, ok := d.GetOk("scopes"); !ok {
			return logical.ErrorResponse("scopes: required when creating a role"), nil
		}
		role = &roleEntry{}
	}
	applyRoleFields(role, d)
	if err := role.validate(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.TokenID != "" {
		if missing := missingScopes(cfg.Scopes, role.Scopes); len(missing) > 0 {
			return logical.ErrorResponse("scopes: the root token does not hold %s", strings.Join(missing, ", ")), nil
		}
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
		out = append(out, fmt.Sprintf("ttl %s is greater than the mount's max lease TTL %s: leases will be capped", role.TTL, mountMax))
	}
	if role.MaxTTL > mountMax {
		out = append(out, fmt.Sprintf("max_ttl %s is greater than the mount's max lease TTL %s: tokens will be capped", role.MaxTTL, mountMax))
	}
	if role.MaxTTL > maxUpstreamTTL {
		out = append(out, fmt.Sprintf("max_ttl %s is greater than Tooken's limit of 366 days: tokens will be capped", role.MaxTTL))
	}
	if cfg != nil && cfg.TokenID == "" {
		out = append(out, "the root token's scopes are unknown (config written with verify_connection=false): scopes not checked")
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

Fields: scopes (required on create; resource:action, e.g. deployments:write;
the root token must hold them, R:write implying R:read), ttl (lease TTL and
renewal increment; default: the mount's), max_ttl (hard lifetime of a token,
capped by the mount's max lease TTL and 366 days; the token expires upstream
then), name_template (Go template with .RoleName, .DisplayName and Vault's
template functions; must render a valid Tooken name), metadata (key=value
pairs set on each token beside vault_role, vault_mount_uuid, vault_mount_accessor and
vault_issue_key), description, max_live_tokens (most tokens of the role
alive at once; a creds read beyond it answers 429 and creates nothing;
0 = no limit).

An update changes only the fields it names; metadata is replaced as a whole.
Deleting a role does not revoke its tokens: their leases can still be revoked
but no longer renewed.
`

const pathRolesListHelpSyn = `List the roles.`

const pathRolesListHelpDesc = `Lists the names of the roles defined on this mount.`
