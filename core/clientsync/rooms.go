package clientsync

import (
	"context"
	"encoding/json"
	"strconv"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// mstate is a membership at some position: the membership, its event and
// that event's stream position ("" when the user had none).
type mstate struct {
	m   string
	ev  id.EventID
	pos int64
}

// membershipAt unwinds the user's membership index entry to what it was at
// stream position pos, following each member event to the one it replaced.
func (r *run) membershipAt(ctx context.Context, rec *rooms.MembershipRecord, pos int64) (mstate, error) {
	if rec.Pos <= pos {
		return mstate{rec.Membership, rec.EventID, rec.Pos}, nil
	}
	ev, err := r.s.Rooms.Event(ctx, rec.EventID)
	if err != nil {
		return mstate{}, err
	}
	for range 100 {
		if ev.Replaces == nil {
			return mstate{}, nil
		}
		prev, err := r.s.Rooms.Event(ctx, ev.Replaces.EventID)
		if err != nil {
			return mstate{}, err
		}
		if prev.Pos <= pos {
			return mstate{prev.Membership(), prev.EventID, prev.Pos}, nil
		}
		ev = prev
	}
	return mstate{}, nil
}

// roomCtx is what building one room needs.
type roomCtx struct {
	room        id.RoomID
	rec         *rooms.MembershipRecord
	now, before mstate
	entries     []posEntry
	receipts    []ephemeral.Receipt
	ad          []userdata.AccountData
}

func tok(seq int64) string { return "t" + strconv.FormatInt(max(seq, 0), 10) }

// joinedRoom builds a joined room; nil when an incremental sync has nothing
// new for it.
func (r *run) joinedRoom(ctx context.Context, rc *roomCtx) (*JoinedRoom, error) {
	initial := r.req.Since == nil
	newlyJoined := !initial && rc.before.m != "join"
	full := initial || r.req.FullState || newlyJoined
	jr := &JoinedRoom{State: newList(), Ephemeral: newList(), AccountData: newList()}
	lazy := r.f.Room.State.LazyLoadMembers

	var timeline []*rooms.Event
	var limited bool
	var topSeq int64
	var err error
	if initial || newlyJoined {
		if topSeq, err = r.s.Rooms.SeqAtPos(ctx, rc.room, r.w.head.Events); err != nil {
			return nil, err
		}
		timeline, limited, err = r.timelineFull(ctx, rc.room, topSeq)
	} else {
		timeline, limited, err = r.timelineFromEntries(ctx, rc.room, rc.entries)
	}
	if err != nil {
		return nil, err
	}
	var summary *Summary
	var heroes []id.UserID
	memberChange := false
	for _, e := range rc.entries {
		if e.Type == "m.room.member" {
			memberChange = true
		}
	}
	if full || memberChange {
		if summary, heroes, err = r.summary(ctx, rc.room); err != nil {
			return nil, err
		}
		jr.Summary = summary
	}
	var state []*rooms.Event
	switch {
	case r.req.UseStateAfter:
		endSeq := topSeq
		if endSeq == 0 {
			if endSeq, err = r.s.Rooms.SeqAtPos(ctx, rc.room, r.w.head.Events); err != nil {
				return nil, err
			}
		}
		if jr.StateAfter, err = r.stateAfterList(ctx, rc.room, endSeq, full, r.lazyWanted(timeline, heroes, full)); err != nil {
			return nil, err
		}
	case full:
		if topSeq == 0 && len(timeline) == 0 {
			if topSeq, err = r.s.Rooms.SeqAtPos(ctx, rc.room, r.w.head.Events); err != nil {
				return nil, err
			}
		}
		state, err = r.stateAtStart(ctx, rc.room, timeline, topSeq, r.lazyWanted(timeline, heroes, true))
	case limited:
		state, err = r.stateDelta(ctx, rc.room, timeline[0], r.lazyWanted(timeline, nil, false))
	case lazy && len(timeline) > 0:
		state, err = r.lazyMembers(ctx, timeline[0], r.lazyWanted(timeline, nil, false))
	}
	if err != nil {
		return nil, err
	}
	if jr.State.Events, err = r.format(ctx, state); err != nil {
		return nil, err
	}
	if jr.Timeline, err = r.timelineSection(ctx, rc.room, timeline, limited, topSeq); err != nil {
		return nil, err
	}
	if err := r.ephemeral(ctx, rc, full, jr); err != nil {
		return nil, err
	}
	jr.AccountData = r.roomAccountData(rc)
	if !full && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 && len(jr.Ephemeral.Events) == 0 &&
		len(jr.AccountData.Events) == 0 && jr.Summary == nil && !r.w.unread[rc.room] &&
		(jr.StateAfter == nil || len(jr.StateAfter.Events) == 0) {
		return nil, nil
	}
	return jr, nil
}

// leftRoom builds a room the user left or was banned from: the timeline up
// to their leave event. archived is for include_leave on an initial sync.
func (r *run) leftRoom(ctx context.Context, rc *roomCtx, archived bool) (*LeftRoom, error) {
	lr := &LeftRoom{State: newList(), AccountData: r.roomAccountData(rc)}
	leaveEv, err := r.s.Rooms.Event(ctx, rc.now.ev)
	if err != nil {
		return nil, err
	}
	var timeline, state []*rooms.Event
	var limited bool
	switch {
	case archived || rc.before.m == "join" && r.req.FullState:
		timeline, limited, err = r.timelineFull(ctx, rc.room, leaveEv.Seq)
		if err == nil {
			state, err = r.stateAtStart(ctx, rc.room, timeline, leaveEv.Seq, r.lazyWanted(timeline, nil, true))
		}
	case rc.before.m == "join":
		var upTo []posEntry
		for _, e := range rc.entries {
			if e.Pos <= rc.now.pos {
				upTo = append(upTo, e)
			}
		}
		timeline, limited, err = r.timelineFromEntries(ctx, rc.room, upTo)
		if err == nil && limited {
			state, err = r.stateDelta(ctx, rc.room, timeline[0], r.lazyWanted(timeline, nil, false))
		}
	default:
		// An invite or knock that ended: the client never had the room's
		// state, so it gets only the event that ended it.
		timeline = []*rooms.Event{leaveEv}
	}
	if err != nil {
		return nil, err
	}
	if r.req.UseStateAfter {
		full := archived || r.req.FullState || rc.before.m != "join"
		if lr.StateAfter, err = r.stateAfterList(ctx, rc.room, leaveEv.Seq, full, r.lazyWanted(timeline, nil, full)); err != nil {
			return nil, err
		}
		state = nil
	}
	if lr.State.Events, err = r.format(ctx, state); err != nil {
		return nil, err
	}
	if lr.Timeline, err = r.timelineSection(ctx, rc.room, timeline, limited, leaveEv.Seq); err != nil {
		return nil, err
	}
	return lr, nil
}

func (r *run) timelineSection(ctx context.Context, room id.RoomID, evs []*rooms.Event, limited bool, topSeq int64) (Timeline, error) {
	t := Timeline{Limited: limited}
	var err error
	if t.Events, err = r.format(ctx, evs); err != nil {
		return t, err
	}
	if len(evs) > 0 {
		t.PrevBatch = tok(evs[0].Seq - 1)
	} else {
		if topSeq == 0 {
			if topSeq, err = r.s.Rooms.SeqAtPos(ctx, room, r.w.head.Events); err != nil {
				return t, err
			}
		}
		t.PrevBatch = tok(topSeq)
	}
	return t, nil
}

// keep reports whether a timeline filter and the ignore list keep ev.
func (r *run) keep(f *filter.RoomEventFilter, ev *rooms.Event) bool {
	if !ev.IsState() && r.ignored[ev.Sender] {
		return false
	}
	return f.Match(filter.Event{Type: ev.Type, Sender: ev.Sender, RoomID: ev.RoomID, Content: ev.Content})
}

// timelineFromEntries picks the last `limit` events of an incremental
// window that the filter, the ignore list and history visibility keep.
func (r *run) timelineFromEntries(ctx context.Context, room id.RoomID, entries []posEntry) ([]*rooms.Event, bool, error) {
	limit := r.f.TimelineLimit()
	tf := &r.f.Room.Timeline
	var cands []id.EventID
	for _, e := range entries {
		if e.StateKey == nil && r.ignored[e.Sender] || !tf.EventFilter.Match(e.Type, e.Sender) {
			continue
		}
		cands = append(cands, e.EventID)
	}
	var out []*rooms.Event
	i := len(cands)
	for i > 0 && len(out) < limit {
		lo := max(0, i-(limit-len(out)))
		evs, err := r.s.Rooms.EventsByID(ctx, cands[lo:i])
		if err != nil {
			return nil, false, err
		}
		vis, err := r.s.Rooms.CanSee(ctx, r.me(), evs)
		if err != nil {
			return nil, false, err
		}
		var kept []*rooms.Event
		for _, ev := range vis {
			if r.keep(tf, ev) {
				kept = append(kept, ev)
			}
		}
		out = append(kept, out...)
		i = lo
	}
	return out, i > 0, nil
}

// timelineFull reads the room's timeline backwards from sequence topSeq
// for the last `limit` events the user may see and the filter keeps.
// limited means older events exist that were not looked at.
func (r *run) timelineFull(ctx context.Context, room id.RoomID, topSeq int64) ([]*rooms.Event, bool, error) {
	limit := r.f.TimelineLimit()
	tf := &r.f.Room.Timeline
	var newestFirst []*rooms.Event
	cursor := topSeq + 1 // everything below cursor is still to examine
	examined, limited := 0, false
	for cursor > 1 {
		if len(newestFirst) >= limit || examined > 10*limit+200 {
			limited = true
			break
		}
		page, err := r.s.Rooms.Timeline(ctx, room, rooms.Backward, cursor, 0, max(limit-len(newestFirst), 10))
		if err != nil {
			return nil, false, err
		}
		if len(page.Events) == 0 {
			break
		}
		vis, err := r.s.Rooms.CanSee(ctx, r.me(), page.Events)
		if err != nil {
			return nil, false, err
		}
		visible := make(map[id.EventID]bool, len(vis))
		for _, ev := range vis {
			visible[ev.EventID] = true
		}
		for _, ev := range page.Events {
			if len(newestFirst) >= limit {
				break
			}
			cursor = ev.Seq
			examined++
			if visible[ev.EventID] && r.keep(tf, ev) {
				newestFirst = append(newestFirst, ev)
			}
		}
	}
	out := make([]*rooms.Event, len(newestFirst))
	for i, ev := range newestFirst {
		out[len(out)-1-i] = ev
	}
	return out, limited, nil
}

// eventAtSeq loads the event at one room sequence (nil for 0).
func (r *run) eventAtSeq(ctx context.Context, room id.RoomID, seq int64) (*rooms.Event, error) {
	if seq <= 0 {
		return nil, nil
	}
	page, err := r.s.Rooms.Timeline(ctx, room, rooms.Backward, seq+1, 0, 1)
	if err != nil || len(page.Events) == 0 {
		return nil, err
	}
	return page.Events[0], nil
}

// lazyWanted is the set of members whose member events a lazy-loading
// client needs: timeline senders, the heroes and (for full state) the user.
// nil means lazy loading is off.
func (r *run) lazyWanted(timeline []*rooms.Event, heroes []id.UserID, full bool) map[id.UserID]bool {
	if !r.f.Room.State.LazyLoadMembers {
		return nil
	}
	want := map[id.UserID]bool{}
	for _, ev := range timeline {
		want[ev.Sender] = true
	}
	for _, h := range heroes {
		want[h] = true
	}
	if full {
		want[r.me()] = true
	}
	return want
}

// stateAfterList is state_after: the room's state at room sequence endSeq
// (the end of the timeline) — all of it when full, else what changed
// since the token — through the state and lazy-loading filters.
func (r *run) stateAfterList(ctx context.Context, room id.RoomID, endSeq int64, full bool, lazy map[id.UserID]bool) (*EventList, error) {
	list := newList()
	end, err := r.eventAtSeq(ctx, room, endSeq)
	if err != nil || end == nil {
		return &list, err
	}
	endIDs, err := r.s.Rooms.StateIDsAt(ctx, end, true)
	if err != nil {
		return nil, err
	}
	before := map[pdu.StateKey]id.EventID{}
	if !full {
		sinceSeq, err := r.s.Rooms.SeqAtPos(ctx, room, r.w.since.Events)
		if err != nil {
			return nil, err
		}
		if ev, err := r.eventAtSeq(ctx, room, sinceSeq); err != nil {
			return nil, err
		} else if ev != nil {
			if before, err = r.s.Rooms.StateIDsAt(ctx, ev, true); err != nil {
				return nil, err
			}
		}
	}
	var want []id.EventID
	for k, v := range endIDs {
		switch {
		case before[k] != v && (!full || k.Type != "m.room.member" || lazy == nil || lazy[id.UserID(k.StateKey)]):
			// Changed since the token (every member change), or, for a
			// full state, wanted by lazy loading.
			want = append(want, v)
		case !full && k.Type == "m.room.member" && lazy[id.UserID(k.StateKey)]:
			want = append(want, v) // a timeline sender's member event
		}
	}
	evs, err := r.loadState(ctx, want)
	if err != nil {
		return nil, err
	}
	if list.Events, err = r.format(ctx, evs); err != nil {
		return nil, err
	}
	return &list, nil
}

// stateAtStart is the room's whole state before the first timeline event
// (or at topSeq when the timeline is empty), through the state filter.
func (r *run) stateAtStart(ctx context.Context, room id.RoomID, timeline []*rooms.Event, topSeq int64, lazy map[id.UserID]bool) ([]*rooms.Event, error) {
	var ids map[pdu.StateKey]id.EventID
	var err error
	if len(timeline) > 0 {
		ids, err = r.s.Rooms.StateIDsAt(ctx, timeline[0], false)
	} else {
		var ev *rooms.Event
		if ev, err = r.eventAtSeq(ctx, room, topSeq); err != nil || ev == nil {
			return nil, err
		}
		ids, err = r.s.Rooms.StateIDsAt(ctx, ev, true)
	}
	if err != nil {
		return nil, err
	}
	var want []id.EventID
	for k, v := range ids {
		if k.Type == "m.room.member" && lazy != nil && !lazy[id.UserID(k.StateKey)] {
			continue
		}
		want = append(want, v)
	}
	return r.loadState(ctx, want)
}

// stateDelta is what changed in the room's state between the since token
// and the start of a limited timeline. Member changes in the gap are always
// included, lazy loading or not (the spec requires it).
func (r *run) stateDelta(ctx context.Context, room id.RoomID, first *rooms.Event, lazy map[id.UserID]bool) ([]*rooms.Event, error) {
	start, err := r.s.Rooms.StateIDsAt(ctx, first, false)
	if err != nil {
		return nil, err
	}
	before := map[pdu.StateKey]id.EventID{}
	sinceSeq, err := r.s.Rooms.SeqAtPos(ctx, room, r.w.since.Events)
	if err != nil {
		return nil, err
	}
	if ev, err := r.eventAtSeq(ctx, room, sinceSeq); err != nil {
		return nil, err
	} else if ev != nil {
		if before, err = r.s.Rooms.StateIDsAt(ctx, ev, true); err != nil {
			return nil, err
		}
	}
	var want []id.EventID
	seen := map[id.EventID]bool{}
	for k, v := range start {
		if before[k] != v {
			want = append(want, v)
			seen[v] = true
		}
	}
	for u := range lazy {
		if v, ok := start[pdu.StateKey{Type: "m.room.member", StateKey: string(u)}]; ok && !seen[v] {
			want = append(want, v)
		}
	}
	return r.loadState(ctx, want)
}

// lazyMembers returns the member events (as of the timeline's start) of
// the wanted users, for an incremental sync that is not limited.
func (r *run) lazyMembers(ctx context.Context, first *rooms.Event, want map[id.UserID]bool) ([]*rooms.Event, error) {
	start, err := r.s.Rooms.StateIDsAt(ctx, first, false)
	if err != nil {
		return nil, err
	}
	var ids []id.EventID
	for u := range want {
		if v, ok := start[pdu.StateKey{Type: "m.room.member", StateKey: string(u)}]; ok {
			ids = append(ids, v)
		}
	}
	return r.loadState(ctx, ids)
}

// loadState loads state events and applies the state filter.
func (r *run) loadState(ctx context.Context, ids []id.EventID) ([]*rooms.Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	evs, err := r.s.Rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	sf := &r.f.Room.State
	out := evs[:0]
	for _, ev := range evs {
		if sf.Match(filter.Event{Type: ev.Type, Sender: ev.Sender, RoomID: ev.RoomID, Content: ev.Content}) {
			out = append(out, ev)
		}
	}
	// Oldest first, like the timeline.
	sortBySeq(out)
	return out, nil
}

func sortBySeq(evs []*rooms.Event) {
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].Seq < evs[j-1].Seq; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

// summary counts the room's members and picks its heroes.
func (r *run) summary(ctx context.Context, room id.RoomID) (*Summary, []id.UserID, error) {
	ms, err := r.s.Rooms.SyncMembers(ctx, room)
	if err != nil {
		return nil, nil, err
	}
	joined, invited := 0, 0
	var heroes, gone []id.UserID
	for _, m := range ms {
		switch m.Membership {
		case "join":
			joined++
		case "invite":
			invited++
		}
		if m.UserID == r.me() {
			continue
		}
		switch m.Membership {
		case "join", "invite":
			if len(heroes) < 5 {
				heroes = append(heroes, m.UserID)
			}
		case "leave", "ban":
			if len(gone) < 5 {
				gone = append(gone, m.UserID)
			}
		}
	}
	if len(heroes) == 0 {
		heroes = gone
	}
	if heroes == nil {
		heroes = []id.UserID{}
	}
	return &Summary{Heroes: heroes, JoinedCount: &joined, InvitedCount: &invited}, heroes, nil
}

// strippedState is an invite's or knock's room preview: a few state events
// as of the membership event, stripped to type, state_key, sender and
// content, followed by the membership event itself.
func (r *run) strippedState(ctx context.Context, ev *rooms.Event) (EventList, error) {
	list := newList()
	ids, err := r.s.Rooms.StateIDsAt(ctx, ev, false)
	if err != nil {
		return list, err
	}
	if len(ids) == 0 {
		// A room only other servers hold: the preview is what the
		// inviting or knocked-on server sent with the membership event.
		if pre := remotePreview(ev.PDU); len(pre) > 0 {
			list.Events = append(list.Events, pre...)
			list.Events = append(list.Events, strip(ev))
			return list, nil
		}
	}
	var want []id.EventID
	for _, typ := range []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
		"m.room.canonical_alias", "m.room.encryption", "m.room.topic"} {
		if v, ok := ids[pdu.StateKey{Type: typ}]; ok {
			want = append(want, v)
		}
	}
	evs, err := r.s.Rooms.EventsByID(ctx, want)
	if err != nil {
		return list, err
	}
	for _, e := range append(evs, ev) {
		list.Events = append(list.Events, strip(e))
	}
	return list, nil
}

// strip is an event reduced to what a room preview shows.
func strip(e *rooms.Event) json.RawMessage {
	b, _ := json.Marshal(struct {
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
		Sender   id.UserID       `json:"sender"`
		Content  json.RawMessage `json:"content"`
	}{e.Type, e.StateKey, e.Sender, e.Content})
	return b
}

// remotePreview is the stripped state another server sent with an invite
// or in answer to a knock, kept in the membership event's unsigned
// (core/federation).
func remotePreview(raw []byte) []json.RawMessage {
	var f struct {
		Unsigned struct {
			Invite []json.RawMessage `json:"invite_room_state"`
			Knock  []json.RawMessage `json:"knock_room_state"`
		} `json:"unsigned"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return nil
	}
	return append(f.Unsigned.Invite, f.Unsigned.Knock...)
}

// ephemeral fills a joined room's typing and receipts.
func (r *run) ephemeral(ctx context.Context, rc *roomCtx, full bool, jr *JoinedRoom) error {
	ef := &r.f.Room.Ephemeral
	if !filter.MatchRoom(ef.Rooms, ef.NotRooms, rc.room) {
		return nil
	}
	if ef.EventFilter.MatchType("m.typing") && (full || r.w.typing[rc.room]) {
		users, err := r.s.Ephemeral.TypingUsers(ctx, rc.room)
		if err != nil {
			return err
		}
		if !full || len(users) > 0 {
			b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
		}
	}
	if ef.EventFilter.MatchType("m.receipt") {
		rs := rc.receipts
		if full {
			all, err := r.s.Ephemeral.RoomReceipts(ctx, rc.room)
			if err != nil {
				return err
			}
			rs = rs[:0:0]
			for _, rc := range all {
				if !rc.Private() || rc.UserID == r.me() {
					rs = append(rs, rc)
				}
			}
		}
		if len(rs) > 0 {
			b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": ephemeral.ReceiptContent(rs)})
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
		}
	}
	if ef.Limit > 0 && len(jr.Ephemeral.Events) > ef.Limit {
		jr.Ephemeral.Events = jr.Ephemeral.Events[:ef.Limit]
	}
	return nil
}

// roomAccountData is the room's account data through the filter.
func (r *run) roomAccountData(rc *roomCtx) EventList {
	list := newList()
	af := &r.f.Room.AccountData
	if !filter.MatchRoom(af.Rooms, af.NotRooms, rc.room) {
		return list
	}
	for _, ad := range rc.ad {
		if af.EventFilter.MatchType(ad.Type) {
			list.Events = append(list.Events, adEvent(ad))
		}
	}
	if af.Limit > 0 && len(list.Events) > af.Limit {
		list.Events = list.Events[:af.Limit]
	}
	return list
}

// format renders events in the filter's format with its event_fields.
func (r *run) format(ctx context.Context, evs []*rooms.Event) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	if r.f.Federation() {
		for _, ev := range evs {
			out = append(out, filter.Project(ev.PDU, r.f.EventFields))
		}
		return out, nil
	}
	ces, err := r.s.Rooms.Format(ctx, evs, r.viewer)
	if err != nil {
		return nil, err
	}
	for _, ce := range ces {
		ce.RoomID = ""
		b, err := json.Marshal(ce)
		if err != nil {
			return nil, err
		}
		out = append(out, filter.Project(b, r.f.EventFields))
	}
	return out, nil
}
