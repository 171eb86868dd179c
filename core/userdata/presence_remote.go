package userdata

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// RemotePresence is one update of an m.presence EDU from another server.
type RemotePresence struct {
	UserID          id.UserID `json:"user_id"`
	Presence        string    `json:"presence"`
	StatusMsg       *string   `json:"status_msg,omitempty"`
	LastActiveAgo   int64     `json:"last_active_ago"`
	CurrentlyActive bool      `json:"currently_active,omitempty"`
}

// PutRemotePresence stores a remote user's presence as their server sent it
// (the caller checked that the server is the user's), in the same item a
// local user's presence lives in, so GET /presence and /sync read both
// alike. last_active is placed at now − last_active_ago. An update that
// says nothing new (same state and message, no later activity) writes
// nothing; one that does is reported to OnPresence like a local change.
func (s *Service) PutRemotePresence(ctx context.Context, p RemotePresence) error {
	if !ValidPresence(p.Presence) {
		return errors.New("userdata: invalid presence state " + p.Presence)
	}
	now := s.now().UnixMilli()
	r := presenceRecord{Presence: p.Presence, StatusMsg: p.StatusMsg, LastActive: now - max(p.LastActiveAgo, 0)}
	if r.StatusMsg != nil && *r.StatusMsg == "" {
		r.StatusMsg = nil
	}
	d, _ := json.Marshal(r)
	k := presenceKey(p.UserID)
	cur, err := s.getPresence(ctx, p.UserID)
	if err != nil {
		return err
	}
	if cur != nil && cur.LastActive >= r.LastActive && cur.Presence == r.Presence && equalMsg(cur.StatusMsg, r.StatusMsg) {
		return nil
	}
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}); err != nil {
		return err
	}
	s.presenceChanged(ctx, p.UserID)
	return nil
}

func equalMsg(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// presenceChanged reports a presence change to OnPresence.
func (s *Service) presenceChanged(ctx context.Context, u id.UserID) {
	if s.OnPresence != nil {
		s.OnPresence(ctx, u)
	}
}
