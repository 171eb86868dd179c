package clientsync

import (
	"context"
	"encoding/json"
	"math"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Exported wrappers over /sync internals for simplified sliding sync
// (core/slidingsync), so both endpoints compute positions, unread counts
// and invite previews the same way.

// Heads returns, for user u's device d, a position of every stream that all
// earlier positions have committed by: where a new sync loop starts reading.
// ToDevice is the device's acknowledged position.
func (s *Service) Heads(ctx context.Context, u id.UserID, d id.DeviceID) (Token, error) {
	st := s.streamsFor(u, d)
	var t Token
	var err error
	if t.Events, err = s.head(ctx, st.events); err != nil {
		return t, err
	}
	if t.AccountData, err = s.head(ctx, st.accountData); err != nil {
		return t, err
	}
	if t.Receipts, err = s.head(ctx, st.receipts); err != nil {
		return t, err
	}
	if t.Typing, err = s.head(ctx, st.typing); err != nil {
		return t, err
	}
	if s.DeviceLists != nil {
		if t.DeviceLists, err = s.DeviceLists.Position(ctx); err != nil {
			return t, err
		}
	}
	if st.unread != nil {
		if t.Unread, err = s.head(ctx, st.unread); err != nil {
			return t, err
		}
	}
	return t, nil
}

// MoveMarks advances the streams' read checkpoints after a reader scanned
// the global streams from `from` to `to` (see crossedMark).
func (s *Service) MoveMarks(ctx context.Context, u id.UserID, d id.DeviceID, from, to Token) {
	st := s.streamsFor(u, d)
	s.crossedMark(ctx, st.events, from.Events, to.Events)
	s.crossedMark(ctx, st.accountData, from.AccountData, to.AccountData)
	s.crossedMark(ctx, st.receipts, from.Receipts, to.Receipts)
	s.crossedMark(ctx, st.typing, from.Typing, to.Typing)
	if st.unread != nil {
		s.crossedMark(ctx, st.unread, from.Unread, to.Unread)
	}
}

// UnreadCounts returns the unread notification and highlight counts of the
// user's joined rooms, computed exactly as /sync does. mships are the user's
// memberships (from rooms.UserRooms).
func (s *Service) UnreadCounts(ctx context.Context, u id.UserID, d id.DeviceID, joined []id.RoomID, mships []rooms.MembershipRecord) (map[id.RoomID]Unread, error) {
	if len(joined) == 0 {
		return map[id.RoomID]Unread{}, nil
	}
	r := &run{s: s, req: &Request{User: u, Device: d}, st: s.streamsFor(u, d), f: &filter.Filter{},
		viewer: rooms.Viewer{UserID: u, Device: d}}
	var err error
	if r.ignored, err = s.UserData.IgnoredUsers(ctx, u); err != nil {
		return nil, err
	}
	w := newWindow(Token{}, 0)
	w.head.Events = math.MaxInt64
	w.setMemberships(mships)
	r.w = w
	resp := &Response{Rooms: newRooms()}
	for _, room := range joined {
		resp.Rooms.Join[room] = &JoinedRoom{}
	}
	if err := r.addUnread(ctx, resp, joined); err != nil {
		return nil, err
	}
	out := make(map[id.RoomID]Unread, len(joined))
	for room, jr := range resp.Rooms.Join {
		if jr.UnreadNotifications != nil {
			out[room] = *jr.UnreadNotifications
		} else {
			out[room] = Unread{}
		}
	}
	return out, nil
}

// StrippedState is the invite or knock preview /sync gives for a membership
// event (invite_state / knock_state).
func (s *Service) StrippedState(ctx context.Context, ev *rooms.Event) ([]json.RawMessage, error) {
	r := &run{s: s, req: &Request{}, f: &filter.Filter{}}
	l, err := r.strippedState(ctx, ev)
	return l.Events, err
}

// SignalKeys are the wake-up items a waiting request of u polls: the global
// one and the user's own (nil when the Notifier bumps none or the Waker
// cannot watch them). Read them strongly before reading the streams, then
// hand the values to WatchSignals in a WatchSet.
func (s *Service) SignalKeys(u id.UserID) []table.Key { return s.signalKeys(u) }

// SignalOfUser reports whether a counter's writers bump the user's own
// wake-up item (account data, to-device inboxes) rather than the global one.
func SignalOfUser(k Kind) bool { return k == KindAccountData || k == KindToDevice }
