package tooken

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// WAL kinds. A kind names what an entry rolls back; its JSON stays readable
// across upgrades (a mount may hold entries of an older version).
const (
	walKindRotateRoot   = "rotate_root"   // a rotationWAL of the root token
	walKindRotateStatic = "rotate_static" // a rotationWAL of a static role's token; Target is the role's name
)

// walRollbackMinAge is how old a WAL entry must be before Vault's rollback
// (about once a minute, on the active node) rolls it back. A rotation holds
// the rotation lock for its whole run, so its own entry is never rolled back
// under it; the age only keeps the rollback from racing work in progress. It
// must stay well within the rotation grace (minRotationGrace counts it): the
// rollback of an interrupted root rotation needs the old secret.
const walRollbackMinAge = time.Minute

// walRollback is the backend's single WALRollback: it dispatches on the WAL
// kind. nil lets the framework delete the entry; an error keeps it for the
// next rollback.
func (b *tookenBackend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	switch kind {
	case walKindRotateRoot, walKindRotateStatic:
		w, err := decodeRotationWAL(kind, data)
		if err != nil {
			b.Logger().Error("dropping an unreadable rotation WAL entry", "kind", kind, "error", err)
			return nil
		}
		if kind == walKindRotateRoot {
			return b.rollbackRotation(ctx, req, b.rootRotation(), w)
		}
		t := b.staticTarget(w.Target)
		defer t.release()
		return b.rollbackRotation(ctx, req, t, w)
	default:
		// Kept, not dropped: it may belong to a newer version of the plugin.
		return fmt.Errorf("unknown WAL entry kind %q", kind)
	}
}
