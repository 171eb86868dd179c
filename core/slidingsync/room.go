package slidingsync

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// buildRoom assembles one room of the response and records, in sr.rs,
// up to where its timeline was sent.
func (r *run) buildRoom(ctx context.Context, sr *sendRoom) (*Room, error) {
	rs := sr.rs
	m := r.mships[sr.id]
	if m == nil {
		return nil, nil
	}
	bump := rs.Bump
	out := &Room{Initial: sr.initial, Membership: rs.M, IsDM: sr.dm, Lists: sr.lists, BumpStamp: &bump}
	switch rs.M {
	case "invite", "knock":
		ev, err := r.s.Rooms.Event(ctx, m.EventID)
		if err != nil {
			return nil, err
		}
		if rs.M == "invite" && r.ignored[ev.Sender] {
			return nil, nil // invites from ignored users are not shown
		}
		stripped, err := r.s.Sync.StrippedState(ctx, ev)
		if err != nil {
			return nil, err
		}
		out.InviteState, out.StrippedState = stripped, stripped
		out.Initial = true
		return out, nil
	}

	// Joined, or left/banned (the view up to the membership event).
	var from int64 // timeline bound: events before this sequence (0 = newest)
	if rs.M != "join" {
		ev, err := r.s.Rooms.Event(ctx, m.EventID)
		if err != nil {
			return nil, err
		}
		from = ev.Seq + 1
	}
	fresh := sr.initial || sr.expanded
	var to int64 // events after this sequence only
	if !fresh {
		to = rs.SentSeq
	}
	want := sr.limit + 1
	page, err := r.s.Rooms.Timeline(ctx, sr.id, rooms.Backward, from, to, want)
	if err != nil {
		return nil, err
	}
	evs := page.Events
	newestSeq := rs.SentSeq
	var newest *rooms.Event
	if len(evs) > 0 {
		newest = evs[0]
		newestSeq = max(newestSeq, newest.Seq)
	}
	limited := len(evs) > sr.limit
	if limited {
		evs = evs[:sr.limit]
	}
	// Chronological order.
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	if evs, err = r.s.Rooms.CanSee(ctx, r.me, evs); err != nil {
		return nil, err
	}
	kept := evs[:0:0]
	for _, ev := range evs {
		if r.ignored[ev.Sender] && !ev.IsState() {
			continue
		}
		kept = append(kept, ev)
	}
	evs = kept
	if out.Timeline, err = r.format(ctx, evs); err != nil {
		return nil, err
	}
	out.Limited = limited
	if sr.expanded {
		out.ExpandedTimeline = true
	}
	live := 0
	if r.incremental {
		for _, ev := range evs {
			if ev.Pos > r.start.Events {
				live++
			}
		}
	}
	out.NumLive = &live
	switch {
	case len(evs) > 0:
		out.PrevBatch = "t" + strconv.FormatInt(max(evs[0].Seq-1, 0), 10)
	case newestSeq > 0:
		out.PrevBatch = "t" + strconv.FormatInt(newestSeq, 10)
	}

	// The state at the end of the timeline (the newest event this
	// connection has sent, for a room without new events).
	if newest == nil {
		if newest, err = r.eventAtSeq(ctx, sr.id, newestSeq, from); err != nil {
			return nil, err
		}
	}
	if newest == nil {
		rs.SentSeq = newestSeq
		return out, nil
	}
	now, err := r.s.Rooms.StateIDsAt(ctx, newest, true)
	if err != nil {
		return nil, err
	}
	var before map[pdu.StateKey]id.EventID
	if !sr.initial && rs.SentSeq > 0 && rs.SentSeq != newest.Seq {
		prev, err := r.eventAtSeq(ctx, sr.id, rs.SentSeq, 0)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			if before, err = r.s.Rooms.StateIDsAt(ctx, prev, true); err != nil {
				return nil, err
			}
		}
	}
	rs.SentSeq = newestSeq
	lazy := map[id.UserID]bool{}
	if sr.spec.Lazy() {
		for _, ev := range evs {
			lazy[ev.Sender] = true
			if ev.Type == memberType && ev.StateKey != nil {
				lazy[id.UserID(*ev.StateKey)] = true
			}
		}
	}
	var stateIDs []id.EventID
	var stubs []json.RawMessage
	for k, e := range now {
		if !sr.spec.Match(k.Type, k.StateKey, lazy) {
			continue
		}
		// The members of the timeline's senders and targets always come
		// along (the connection does not track which it sent before);
		// other state only when it changed since the room was last sent.
		isLazy := sr.spec.Lazy() && k.Type == memberType && lazy[id.UserID(k.StateKey)]
		if !sr.initial && !isLazy {
			if before != nil && before[k] == e {
				continue
			}
			if before == nil && !fresh && !stateInTimeline(evs, k) {
				continue
			}
		}
		stateIDs = append(stateIDs, e)
	}
	if before != nil {
		for k := range before {
			if _, ok := now[k]; !ok && sr.spec.Match(k.Type, k.StateKey, lazy) {
				b, _ := json.Marshal(map[string]string{"type": k.Type, "state_key": k.StateKey})
				stubs = append(stubs, b)
			}
		}
	}
	// Name, avatar and heroes come from the same state.
	nameID, hasName := now[pdu.StateKey{Type: "m.room.name"}]
	avatarID, hasAvatar := now[pdu.StateKey{Type: "m.room.avatar"}]
	// Member counts and heroes need every member entry: read them when
	// the room is new to the client or its members may have changed
	// (omitted fields mean "unchanged" to the client).
	summary := fresh || limited || rs.M != rs.SentM
	for _, ev := range evs {
		summary = summary || ev.Type == memberType
	}
	var members []rooms.SyncMember
	if summary {
		if members, err = r.s.Rooms.SyncMembers(ctx, sr.id); err != nil {
			return nil, err
		}
	}
	joined, invited := 0, 0
	var heroes, gone []id.UserID
	for _, mb := range members {
		switch mb.Membership {
		case "join":
			joined++
		case "invite":
			invited++
		}
		if mb.UserID == r.me {
			continue
		}
		switch mb.Membership {
		case "join", "invite":
			heroes = append(heroes, mb.UserID)
		case "leave", "ban":
			gone = append(gone, mb.UserID)
		}
	}
	if len(heroes) == 0 {
		heroes = gone
	}
	if len(heroes) > 5 {
		heroes = heroes[len(heroes)-5:] // the most recent changes
	}
	if summary {
		out.JoinedCount, out.InvitedCount = &joined, &invited
	}
	extra := []id.EventID{}
	if hasName {
		extra = append(extra, nameID)
	}
	if hasAvatar {
		extra = append(extra, avatarID)
	}
	heroIDs := map[id.EventID]id.UserID{}
	for _, h := range heroes {
		if e, ok := now[pdu.StateKey{Type: memberType, StateKey: string(h)}]; ok {
			heroIDs[e] = h
			extra = append(extra, e)
		}
	}
	loaded, err := r.s.Rooms.EventsByID(ctx, append(append([]id.EventID{}, stateIDs...), extra...))
	if err != nil {
		return nil, err
	}
	byID := make(map[id.EventID]*rooms.Event, len(loaded))
	for _, ev := range loaded {
		byID[ev.EventID] = ev
	}
	if hasName {
		var c struct {
			Name string `json:"name"`
		}
		if ev := byID[nameID]; ev != nil && json.Unmarshal(ev.Content, &c) == nil && c.Name != "" {
			out.Name = &c.Name
		}
	}
	if hasAvatar {
		var c struct {
			URL string `json:"url"`
		}
		if ev := byID[avatarID]; ev != nil && json.Unmarshal(ev.Content, &c) == nil && c.URL != "" {
			out.Avatar = &c.URL
		}
	}
	for _, h := range heroes {
		hero := Hero{UserID: h}
		for e, u := range heroIDs {
			if u != h {
				continue
			}
			if ev := byID[e]; ev != nil {
				var c struct {
					DisplayName string `json:"displayname"`
					AvatarURL   string `json:"avatar_url"`
				}
				_ = json.Unmarshal(ev.Content, &c)
				hero.DisplayName, hero.AvatarURL = c.DisplayName, c.AvatarURL
			}
		}
		out.Heroes = append(out.Heroes, hero)
	}
	var stateEvs []*rooms.Event
	for _, e := range stateIDs {
		if ev := byID[e]; ev != nil {
			stateEvs = append(stateEvs, ev)
		}
	}
	sort.Slice(stateEvs, func(i, j int) bool {
		if stateEvs[i].Type != stateEvs[j].Type {
			return stateEvs[i].Type < stateEvs[j].Type
		}
		return *stateEvs[i].StateKey < *stateEvs[j].StateKey
	})
	if out.RequiredState, err = r.format(ctx, stateEvs); err != nil {
		return nil, err
	}
	out.RequiredState = append(out.RequiredState, stubs...)
	return out, nil
}

func stateInTimeline(evs []*rooms.Event, k pdu.StateKey) bool {
	for _, ev := range evs {
		if ev.StateKey != nil && ev.Type == k.Type && *ev.StateKey == k.StateKey {
			return true
		}
	}
	return false
}

// eventAtSeq is the room's event at a sequence, or the newest before
// `from` when seq is 0 (nil if none).
func (r *run) eventAtSeq(ctx context.Context, room id.RoomID, seq, from int64) (*rooms.Event, error) {
	var page *rooms.TimelinePage
	var err error
	if seq > 0 {
		page, err = r.s.Rooms.Timeline(ctx, room, rooms.Forward, seq-1, seq+1, 1)
	} else {
		page, err = r.s.Rooms.Timeline(ctx, room, rooms.Backward, from, 0, 1)
	}
	if err != nil || len(page.Events) == 0 {
		return nil, err
	}
	return page.Events[0], nil
}

// format renders events in the client format (without room_id).
func (r *run) format(ctx context.Context, evs []*rooms.Event) ([]json.RawMessage, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ces, err := r.s.Rooms.Format(ctx, evs, rooms.Viewer{UserID: r.me, Device: r.c.Device})
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(ces))
	for _, ce := range ces {
		ce.RoomID = ""
		b, err := json.Marshal(ce)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
