package keys

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Device-list tracking.
//
// The "devicelists" stream (core/stream) holds one entry per change that
// may make a client re-fetch someone's keys: a user's device keys or
// cross-signing keys or signatures changed (written in the same transaction
// as the change), or a user's membership of a room changed (written by
// MembershipChanged, which the room engine calls after each member event).
// ChangedSince turns the entries after a position into the "changed" and
// "left" lists of one viewer: key changes of users who share a room with
// them, users who started sharing a room with them, and users with whom
// they no longer share any room.

// readBatch caps the entries one ChangedSince call reads; a reader that
// gets a full batch simply continues from next on its following call.
const readBatch = 1000

// MembershipChanged records that u's membership of room became membership
// (called after each m.room.member event is persisted). Only changes that
// can start or end sharing a room are recorded.
func (s *Service) MembershipChanged(ctx context.Context, room id.RoomID, u id.UserID, membership string) error {
	switch membership {
	case "join", "leave", "ban":
	default:
		return nil
	}
	return s.commit(ctx, change{User: u, Room: room, Membership: membership}, nil)
}

// OnEvent is the room engine's persist hook: it records member events.
func (s *Service) OnEvent(ctx context.Context, ev *rooms.Event) {
	if ev.Type != "m.room.member" || ev.StateKey == nil {
		return
	}
	if ev.Replaces != nil {
		var prev struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(ev.Replaces.Content, &prev) == nil && prev.Membership == ev.Membership() {
			return // a profile change: nobody started or stopped sharing a room
		}
	}
	u := id.UserID(*ev.StateKey)
	if err := s.MembershipChanged(ctx, ev.RoomID, u, ev.Membership()); err != nil {
		s.Log.Warn("keys: recording a membership change for device lists", "room", ev.RoomID, "user", *ev.StateKey, "err", err)
	}
	// Who shares a room changed, so which servers tell us of which users'
	// devices may have too: copies of remote device lists it touches are
	// fetched afresh on their next query.
	switch {
	case !s.IsLocal(u):
		s.forgetRemote(ctx, []id.UserID{u})
	case ev.Membership() != "join":
		if members, err := s.joinedMembers(ctx, ev.RoomID); err == nil {
			s.forgetRemote(ctx, members)
		}
	}
}

// Position is a stream position to start from: every change at or before
// it has committed, so ChangedSince(viewer, Position()) misses nothing that
// happens later.
func (s *Service) Position(ctx context.Context) (int64, error) {
	latest, err := s.Changes.Latest(ctx)
	if err != nil {
		return 0, err
	}
	start := max(0, latest-64)
	_, next, err := s.Changes.Read(ctx, start, 0)
	if err != nil {
		return 0, err
	}
	return next, nil
}

// ChangedSince returns, for viewer, the users whose device lists changed
// after stream position from (changed) and the users viewer no longer
// shares a room with (left), and the position to continue from.
func (s *Service) ChangedSince(ctx context.Context, viewer id.UserID, from int64) (changed, left []id.UserID, next int64, err error) {
	return s.changesBetween(ctx, viewer, from, -1)
}

// ChangesBetween is ChangedSince limited to positions up to to (for
// /keys/changes).
func (s *Service) ChangesBetween(ctx context.Context, viewer id.UserID, from, to int64) (changed, left []id.UserID, err error) {
	changed, left, _, err = s.changesBetween(ctx, viewer, from, to)
	return changed, left, err
}

func (s *Service) changesBetween(ctx context.Context, viewer id.UserID, from, to int64) (changed, left []id.UserID, next int64, err error) {
	changed, left = []id.UserID{}, []id.UserID{}
	if to >= 0 && to <= from {
		return changed, left, from, nil
	}
	var cs []change
	next = from
	for {
		entries, n, err := s.Changes.Read(ctx, next, readBatch)
		if err != nil {
			return nil, nil, from, err
		}
		done := to < 0 || n == next || len(entries) < readBatch
		next = n
		for _, e := range entries {
			if to >= 0 && e.Pos > to {
				next, done = to, true
				break
			}
			var c change
			if json.Unmarshal(e.Data, &c) == nil {
				cs = append(cs, c)
			}
		}
		if to >= 0 && next >= to {
			next, done = to, true
		}
		if done {
			break
		}
	}
	if len(cs) == 0 {
		return changed, left, next, nil
	}
	sh, err := s.sharing(ctx, viewer)
	if err != nil {
		return nil, nil, from, err
	}
	isChanged := map[id.UserID]bool{}
	mayHaveLeft := map[id.UserID]bool{}
	for _, c := range cs {
		for _, u := range c.Users {
			if u == viewer || sh.users[u] {
				isChanged[u] = true
			}
		}
		if c.User == "" {
			continue
		}
		switch {
		case c.User == viewer && c.Membership == "join":
			// The viewer joined: everyone in the room is new to them.
			if sh.rooms[c.Room] {
				members, err := s.joinedMembers(ctx, c.Room)
				if err != nil {
					return nil, nil, from, err
				}
				for _, m := range members {
					if m != viewer {
						isChanged[m] = true
					}
				}
			}
		case c.User == viewer:
			// The viewer left: its members may now share nothing with them.
			members, err := s.joinedMembers(ctx, c.Room)
			if err != nil {
				return nil, nil, from, err
			}
			for _, m := range members {
				if m != viewer {
					mayHaveLeft[m] = true
				}
			}
		case sh.rooms[c.Room] && c.Membership == "join":
			isChanged[c.User] = true
		case c.Membership != "join" && sh.known[c.Room]:
			// Someone left a room the viewer is or was in.
			mayHaveLeft[c.User] = true
		}
	}
	for u := range isChanged {
		if u == viewer || sh.users[u] {
			changed = append(changed, u)
		}
	}
	for u := range mayHaveLeft {
		if !sh.users[u] && u != viewer {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, next, nil
}

// shared is who a viewer shares rooms with now.
type shared struct {
	rooms map[id.RoomID]bool // rooms the viewer is joined to
	known map[id.RoomID]bool // rooms the viewer has any membership of
	users map[id.UserID]bool // users joined to one of them
}

func (s *Service) sharing(ctx context.Context, viewer id.UserID) (*shared, error) {
	sh := &shared{rooms: map[id.RoomID]bool{}, known: map[id.RoomID]bool{}, users: map[id.UserID]bool{}}
	ms, err := s.Rooms.UserRooms(ctx, viewer)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		sh.known[m.RoomID] = true
		if m.Membership != "join" {
			continue
		}
		sh.rooms[m.RoomID] = true
		members, err := s.joinedMembers(ctx, m.RoomID)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			sh.users[u] = true
		}
	}
	return sh, nil
}

func (s *Service) joinedMembers(ctx context.Context, room id.RoomID) ([]id.UserID, error) {
	evs, err := s.Rooms.CurrentState(ctx, room, "m.room.member")
	if err != nil {
		return nil, err
	}
	var out []id.UserID
	for _, ev := range evs {
		if ev.StateKey != nil && ev.Membership() == "join" {
			out = append(out, id.UserID(*ev.StateKey))
		}
	}
	return out, nil
}

// ---- tokens ----

// TokenPrefix marks Cirrus's own device-list tokens ("d<pos>").
const TokenPrefix = "d"

// FormatToken is the /keys/changes token for a stream position.
func FormatToken(pos int64) string { return TokenPrefix + strconv.FormatInt(pos, 10) }

// ParseToken reads a "d<pos>" token (a bare number is accepted too).
func ParseToken(tok string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimPrefix(tok, TokenPrefix), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// TokenParser finds the device-list position in a client's token (the sync
// package's composite token, once it exists, or our own form).
type TokenParser func(tok string) (int64, bool)

// ParsePositions reads /keys/changes' from and to with parse (ParseToken if
// nil); M_INVALID_PARAM if either is not a token we know.
func ParsePositions(parse TokenParser, from, to string) (int64, int64, error) {
	if parse == nil {
		parse = ParseToken
	}
	if from == "" {
		return 0, 0, httpapi.MissingParam("from is required")
	}
	f, ok := parse(from)
	if !ok {
		return 0, 0, invalid("from is not a token this server issued")
	}
	if to == "" {
		return f, -1, nil
	}
	t, ok := parse(to)
	if !ok {
		return 0, 0, invalid("to is not a token this server issued")
	}
	return f, t, nil
}
