package clientsync

import (
	"context"
	"encoding/json"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// maxPresenceUsers bounds the presence changes one response reports (the
// rest wait for the next sync: the token does not move past them).
const maxPresenceUsers = 100

// An initial sync reports the presence of the members of at most
// initialPresenceRooms of the user's rooms, at most initialPresenceUsers
// users (one read each, a few at a time): enough for a client's first
// screen without making initial syncs of big accounts slow.
const (
	initialPresenceRooms = 20
	initialPresenceUsers = 50
)

// initialPresence fills the window's presence set for an initial sync:
// the joined members of the user's joined rooms, the user first.
func (r *run) initialPresence(ctx context.Context) error {
	if r.st.presence == nil {
		return nil
	}
	w := r.w
	add := func(u id.UserID) {
		if len(w.presence) < initialPresenceUsers && r.f.Presence.Match("m.presence", u) {
			w.presence[u] = true
		}
	}
	add(r.me())
	rooms := 0
	for _, m := range w.mships {
		if m.Membership != "join" || !r.f.IncludesRoom(m.RoomID) {
			continue
		}
		if rooms++; rooms > initialPresenceRooms || len(w.presence) >= initialPresenceUsers {
			break
		}
		members, err := r.s.Rooms.SyncMembers(ctx, m.RoomID)
		if err != nil {
			return err
		}
		for i := len(members) - 1; i >= 0; i-- { // most recently changed first
			if members[i].Membership == "join" {
				add(members[i].UserID)
			}
		}
	}
	return nil
}

type presenceEntry struct {
	UserID id.UserID `json:"user_id"`
}

// PresenceChanged records that u's presence changed (userdata.OnPresence):
// one entry in the presence stream, and a wake-up for waiting syncs. Best
// effort: presence is ephemeral, and a lost entry only delays an update.
func (s *Service) PresenceChanged(ctx context.Context, u id.UserID) {
	if s.Presence == nil {
		return
	}
	entry, _ := json.Marshal(presenceEntry{UserID: u})
	if _, err := s.Presence.Append(ctx, func(int64) ([]byte, []table.Op, error) { return entry, nil, nil }); err != nil {
		s.log().Warn("sync: recording a presence change", "user", u, "err", err)
		return
	}
	s.Notifier.Notify(s.Presence.Name)
}

func (r *run) scanPresence(ctx context.Context) error {
	w := r.w
	from := w.head.Presence
	defer func() { r.s.crossedMark(ctx, r.st.presence, from, w.head.Presence) }()
	for len(w.presence) < maxPresenceUsers {
		entries, next, err := r.st.presence.Read(ctx, w.head.Presence, readBatch)
		if err != nil {
			return err
		}
		w.head.Presence = next
		for _, e := range entries {
			var pe presenceEntry
			if json.Unmarshal(e.Data, &pe) == nil && pe.UserID != "" && r.f.Presence.Match("m.presence", pe.UserID) {
				w.presence[pe.UserID] = true
			}
		}
		if len(entries) < readBatch {
			break
		}
	}
	return r.keepSharedPresence(ctx)
}

// keepSharedPresence keeps the users who share a joined room with the
// syncing user (and the user themself).
func (r *run) keepSharedPresence(ctx context.Context) error {
	w := r.w
	if len(w.presence) == 0 {
		return nil
	}
	if !w.haveMships {
		if err := r.loadMemberships(ctx); err != nil {
			return err
		}
	}
	for u := range w.presence {
		if u == r.me() {
			continue
		}
		shared, err := r.sharesRoom(ctx, u)
		if err != nil {
			return err
		}
		if !shared {
			delete(w.presence, u)
		}
	}
	return nil
}

// addPresence adds the m.presence events of the window's users.
func (r *run) addPresence(ctx context.Context, resp *Response) error {
	if r.st.presence == nil || len(r.w.presence) == 0 {
		return nil
	}
	users := sortedUsers(r.w.presence)
	events := make([]json.RawMessage, len(users))
	errs := make([]error, len(users))
	// The reads are independent: a few at a time.
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := r.s.UserData.Presence(ctx, u)
			if err != nil || p == nil {
				errs[i] = err
				return
			}
			events[i], _ = json.Marshal(map[string]any{"type": "m.presence", "sender": u, "content": p})
		})
	}
	wg.Wait()
	list := newList()
	for i, e := range events {
		if errs[i] != nil {
			return errs[i]
		}
		if e != nil {
			list.Events = append(list.Events, e)
		}
	}
	if len(list.Events) > 0 {
		resp.Presence = &list
	}
	return nil
}

// sharesRoom reports whether u is joined to a room the syncing user is
// joined to. Local users' memberships are indexed per user (one query);
// remote users' are not, so their membership is read in each of our rooms.
func (r *run) sharesRoom(ctx context.Context, u id.UserID) (bool, error) {
	w := r.w
	if u.Homeserver() == r.s.Rooms.ServerName {
		theirs, err := r.s.Rooms.UserRooms(ctx, u)
		if err != nil {
			return false, err
		}
		for _, m := range theirs {
			if m.Membership == "join" && w.joined(m.RoomID) {
				return true, nil
			}
		}
		return false, nil
	}
	for _, m := range w.mships {
		if m.Membership != "join" {
			continue
		}
		ms, err := r.s.Rooms.Membership(ctx, m.RoomID, u)
		if err != nil {
			return false, err
		}
		if ms == "join" {
			return true, nil
		}
	}
	return false, nil
}
