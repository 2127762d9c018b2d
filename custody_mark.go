package tooken

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/tooken/vault-plugin-secrets-tooken/internal/tookenapi"
)

// Who holds custody of a Tooken token. Every token the engine manages is in
// exactly one custody: a mount's root (its config), one static role, or one
// creds lease. Two custodies on one token lock each other out (each rotation
// of one kills the other's secret; a lease's revoke kills a static role's
// token), so the engine never takes a token that another custody holds, as
// far as it can tell:
//
//   - a creds token carries vault_mount_uuid and vault_issue_key metadata
//     from its creation;
//   - a root carries vault_custody=root:<mount uuid>, set by the config write
//     that verifies it and by a root rotation that finds it unmarked;
//   - a static role's token carries vault_custody=static:<mount uuid>:<role>,
//     set by the import before anything is stored or rotated, and by the
//     periodic check of a role imported by an earlier version; the mount's
//     owner record (static-token/<id>) names the role too.
//
// Tooken's metadata is readable by any token with tokens:read and writable
// (PATCH) by any token with tokens:write and the token's scopes: the mark is
// decisive between mounts of this engine (whoever acts through Vault cannot
// make one mount take what another holds), advisory against a holder of such
// a secret, who could as well rotate the token and read its new secret.

// metaCustody is the metadata key of the mark.
const metaCustody = "vault_custody"

type custodyKind string

const (
	custodyRoot   custodyKind = "root"
	custodyStatic custodyKind = "static"
)

// custodyMark is one custody: the root of a mount, or a static role of it.
type custodyMark struct {
	kind  custodyKind
	mount string // the mount's backend UUID
	role  string // the static role's name; "" for a root
}

func rootCustody(mount string) custodyMark { return custodyMark{kind: custodyRoot, mount: mount} }

func staticCustody(mount, role string) custodyMark {
	return custodyMark{kind: custodyStatic, mount: mount, role: role}
}

// value is the mark as stored in the token's metadata. Mount UUIDs and role
// names have no colon.
func (m custodyMark) value() string {
	if m.kind == custodyStatic {
		return string(custodyStatic) + ":" + m.mount + ":" + m.role
	}
	return string(custodyRoot) + ":" + m.mount
}

// parseCustodyMark reads a vault_custody value; false when it is not one
// the engine writes.
func parseCustodyMark(v string) (custodyMark, bool) {
	kind, rest, _ := strings.Cut(v, ":")
	switch custodyKind(kind) {
	case custodyRoot:
		return rootCustody(rest), rest != "" && !strings.Contains(rest, ":")
	case custodyStatic:
		mount, role, ok := strings.Cut(rest, ":")
		return staticCustody(mount, role), ok && mount != "" && role != ""
	}
	return custodyMark{}, false
}

// describe names the custody in a message, from mount self's point of view.
func (m custodyMark) describe(self string) string {
	where := "of this mount"
	if m.mount != self {
		where = "of another mount of this engine (mount_uuid " + shownMetadata(m.mount) + ")"
	}
	if m.kind == custodyRoot {
		return "the root token " + where
	}
	return fmt.Sprintf("managed by static role %s %s", shownMetadata(m.role), where)
}

// shownMetadata is a metadata value as a message quotes it: anything shaped
// like a secret redacted, then shortened (anyone with tokens:write may have
// written it).
func shownMetadata(v string) string { return quoteShort(tookenapi.RedactSecrets(v)) }

// custodyConflict is another custody holding a token.
type custodyConflict struct {
	holder string // "is managed by static role ...": follows the token id in a message
	// hint says how the holder lets go of the token, when it can: a static
	// role of this mount is deleted; a mark of another mount's (which this
	// mount cannot check, and which a mount disabled since leaves behind)
	// is removed at Tooken.
	hint string
}

// withHint is the message msg with the conflict's hint.
func (c *custodyConflict) withHint(msg string) string {
	if c.hint == "" {
		return msg
	}
	return msg + "; " + c.hint
}

// markHint says how to remove a mark that no custody holds any more.
func markHint(tokenID string) string {
	return fmt.Sprintf(`if that custody no longer exists (a mount disabled, a root replaced), remove the mark at Tooken (PATCH /tokens/%s with {"metadata": {"%s": null}}) and write again`, tokenID, metaCustody)
}

// staticImportMessage is the answer to a static role import of the token.
func (c *custodyConflict) staticImportMessage(tokenID string) string {
	return c.withHint(fmt.Sprintf("token_id: %s %s: a static role cannot take it (two custodies of one token lock each other out)", tokenID, c.holder))
}

// configMessage is the answer to a config write of the token as root.
func (c *custodyConflict) configMessage(tokenID string) string {
	return c.withHint(fmt.Sprintf("token: its token %s %s: it cannot be this mount's root too (two custodies of one token lock each other out); give this mount a root token of its own", tokenID, c.holder))
}

// credsIssuer describes the creds read that issued tok; false when tok does
// not carry the metadata of one.
func credsIssuer(tok *tookenapi.Token, self string) (string, bool) {
	mount, hasMount := tok.Metadata[metaMountUUID]
	_, hasKey := tok.Metadata[metaIssueKey]
	if !hasMount && !hasKey {
		return "", false
	}
	where := "of another mount (mount_uuid " + shownMetadata(mount) + ")"
	if mount == self {
		where = "of this mount"
	}
	return fmt.Sprintf("creds of role %s %s", shownMetadata(tok.Metadata[metaRole]), where), true
}

// custodyHolder tells which custody other than want holds tok, as far as
// this mount can tell (its root is rootID, "" when unknown): nil when none
// does. A mark of this mount that its storage does not confirm (the role
// deleted, the root replaced) is stale, and no conflict.
func (b *tookenBackend) custodyHolder(ctx context.Context, s logical.Storage, tok *tookenapi.Token, rootID string, want custodyMark) (*custodyConflict, error) {
	if issuer, ok := credsIssuer(tok, b.mountUUID); ok {
		return &custodyConflict{holder: "was issued by " + issuer + ": it belongs to a Vault lease and is revoked with it"}, nil
	}
	if want.kind != custodyRoot && rootID != "" && tok.ID == rootID {
		return &custodyConflict{holder: "is the engine's root token (config and rotate-root manage it)"}, nil
	}
	v, marked := tok.Metadata[metaCustody]
	mark, known := parseCustodyMark(v)
	holder, err := b.staticHolder(ctx, s, tok.ID, mark)
	if err != nil {
		return nil, err
	}
	if holder != "" && (want.kind != custodyStatic || want.role != holder) {
		return &custodyConflict{holder: fmt.Sprintf("is already managed by static role %q of this mount", holder), hint: "delete that role first"}, nil
	}
	switch {
	case !marked, known && (mark == want || mark.mount == b.mountUUID):
		return nil, nil
	case !known:
		return &custodyConflict{holder: fmt.Sprintf("carries a %s mark the engine does not recognise (%s)", metaCustody, shownMetadata(v)), hint: markHint(tok.ID)}, nil
	}
	return &custodyConflict{holder: "is " + mark.describe(b.mountUUID), hint: markHint(tok.ID)}, nil
}

// staticHolder is the static role of this mount that manages tokenID ("" for
// none): the one its owner record names, or the one its mark names when
// that mark is this mount's.
func (b *tookenBackend) staticHolder(ctx context.Context, s logical.Storage, tokenID string, mark custodyMark) (string, error) {
	var names []string
	owner, err := readStaticTokenOwner(ctx, s, tokenID)
	if err != nil {
		return "", err
	}
	if owner != nil {
		names = append(names, owner.Role)
	}
	if mark.kind == custodyStatic && mark.mount == b.mountUUID {
		names = append(names, mark.role)
	}
	for _, name := range names {
		r, err := readStaticRole(ctx, s, name)
		if err != nil {
			return "", err
		}
		if r != nil && r.TokenID == tokenID {
			return name, nil
		}
	}
	return "", nil
}

// errMetadataFull: the token has Tooken's maximum of metadata keys, none of
// them the mark.
var errMetadataFull = fmt.Errorf("it has %d metadata keys, Tooken's maximum, and none is %s: the engine cannot mark it", maxMetadataKeys, metaCustody)

// claimCustody marks tok as in custody m and returns the token as Tooken
// then describes it. PATCH merges metadata: the token's other keys stay.
// Nothing is sent when tok carries the mark already, or when the mount has
// no UUID to mark it with.
func claimCustody(ctx context.Context, auth *tookenapi.Client, tok *tookenapi.Token, m custodyMark) (*tookenapi.Token, error) {
	v := m.value()
	if m.mount == "" || tok.Metadata[metaCustody] == v {
		return tok, nil
	}
	if _, has := tok.Metadata[metaCustody]; !has && len(tok.Metadata) >= maxMetadataKeys {
		return nil, errMetadataFull
	}
	got, err := auth.UpdateToken(ctx, tok.ID, tookenapi.UpdateTokenRequest{Metadata: map[string]string{metaCustody: v}})
	if err != nil {
		return nil, err
	}
	if got.ID != tok.ID || got.Metadata[metaCustody] != v {
		return nil, errors.New("Tooken's answer to the update does not carry the mark")
	}
	return got, nil
}

// releaseCustody removes custody m's mark from token tokenID, when the token
// still carries it (another custody's mark stays). A token gone counts as
// released.
func releaseCustody(ctx context.Context, auth *tookenapi.Client, tokenID string, m custodyMark) error {
	tok, err := auth.GetToken(ctx, tokenID)
	switch {
	case errors.Is(err, tookenapi.ErrNotFound):
		return nil
	case err != nil:
		return err
	case tok.Metadata[metaCustody] != m.value():
		return nil
	}
	_, err = auth.UpdateToken(ctx, tokenID, tookenapi.UpdateTokenRequest{RemoveMetadata: []string{metaCustody}})
	if errors.Is(err, tookenapi.ErrNotFound) {
		return nil
	}
	return err
}

// lockToken takes the lock of token id (tokenLocks) and returns its unlock.
func (b *tookenBackend) lockToken(id string) (unlock func()) {
	lk := b.tokenLocks.acquire(id)
	lk.Lock()
	return func() {
		lk.Unlock()
		b.tokenLocks.release(id, lk)
	}
}
