package rooms

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// CurrentStateVersion names a room's current state: the state group held
// by the room head. Every change of the current state (a local or remote
// state event, a state resolution, a join over federation) moves the head
// to another group in the same transaction, and groups are immutable, so a
// fact derived from the current state (such as the servers joined to the
// room) can be cached under this name on any process without going stale.
// It costs one GetItem.
func (s *Service) CurrentStateVersion(ctx context.Context, r id.RoomID) (string, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return "", err
	}
	return h.StateGroup, nil
}
