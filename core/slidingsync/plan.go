package slidingsync

import (
	"context"
	"sort"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

func httpapiInvalid(msg string) error { return httpapi.InvalidParam("%s", msg) }

// plan is what a response would carry.
type plan struct {
	lists        map[string]ListResult
	listsChanged bool
	send         []*sendRoom
	// relevant are the rooms in a list's range or subscribed, with the
	// lists they are in.
	relevant map[id.RoomID][]string
	subs     map[id.RoomID]bool
	ext      *extData
}

// sendRoom is a room to send and how.
type sendRoom struct {
	id       id.RoomID
	rs       *roomState
	spec     *StateSpec
	limit    int
	cfg      string // config hash to store
	lists    []string
	initial  bool // never sent, or its required_state changed
	expanded bool // more history than before (timeline_limit grew)
	dm       bool
}

func (p *plan) empty() bool {
	return len(p.send) == 0 && !p.listsChanged && (p.ext == nil || p.ext.empty())
}

// entry is the list entry of a room the user may see in lists, or nil.
func (r *run) entry(room id.RoomID, rs *roomState) *Entry {
	switch rs.M {
	case "join", "invite", "knock":
	case "leave", "ban":
		// Kicked and banned rooms stay listed; rooms the user left only
		// while this connection has yet to show them left.
		if !rs.Kicked && (!rs.Sent || rs.SentM == "leave" || rs.SentM == "ban") {
			return nil
		}
	default:
		return nil
	}
	return &Entry{ID: room, Membership: rs.M, Bump: rs.Bump, DM: r.isDM(room, rs), Encrypted: rs.Enc,
		Type: rs.Type, Tags: r.tags[room], Spaces: r.spaces[room]}
}

// isDM reports whether a room is a direct chat: listed in m.direct, or
// an invite marked is_direct.
func (r *run) isDM(room id.RoomID, rs *roomState) bool {
	return r.dm[room] || rs.InvDM && rs.M == "invite"
}

// plan works out the lists and which rooms to send.
func (r *run) plan(ctx context.Context) (*plan, error) {
	req := r.c.Req
	p := &plan{lists: map[string]ListResult{}, relevant: map[id.RoomID][]string{}, subs: map[id.RoomID]bool{}}
	var entries []*Entry
	for room, rs := range r.st.Rooms {
		if e := r.entry(room, rs); e != nil {
			entries = append(entries, e)
		}
	}
	Sort(entries)
	type cfgs struct {
		states []RequiredState
		limit  int
		lists  []string
	}
	want := map[id.RoomID]*cfgs{}
	for _, name := range sortedNames(req.Lists) {
		l := req.Lists[name]
		count, in := Window(l, entries)
		p.lists[name] = ListResult{Count: count}
		if old, ok := r.st.Lists[name]; !ok || old != count {
			p.listsChanged = true
		}
		for _, e := range in {
			c := want[e.ID]
			if c == nil {
				c = &cfgs{}
				want[e.ID] = c
			}
			c.states = append(c.states, l.RequiredState)
			c.limit = max(c.limit, limitOf(l.TimelineLimit))
			c.lists = append(c.lists, name)
		}
	}
	if len(r.st.Lists) != len(req.Lists) {
		p.listsChanged = true
	}
	for _, key := range sortedNames(req.RoomSubscriptions) {
		room := id.RoomID(key)
		rs := r.st.Rooms[room]
		if rs == nil || rs.M == "" {
			continue // not a room the user is or was in: ignored (MSC4186)
		}
		sub := req.RoomSubscriptions[key]
		c := want[room]
		if c == nil {
			c = &cfgs{}
			want[room] = c
		}
		c.states = append(c.states, sub.RequiredState)
		c.limit = max(c.limit, limitOf(sub.TimelineLimit))
		p.subs[room] = true
	}
	ids := make([]id.RoomID, 0, len(want))
	for room := range want {
		ids = append(ids, room)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, room := range ids {
		c := want[room]
		rs := r.st.Rooms[room]
		p.relevant[room] = c.lists
		spec := NewStateSpec(r.me, c.states...)
		hash := spec.Hash(c.limit)
		dm := r.isDM(room, rs)
		sr := &sendRoom{id: room, rs: rs, spec: spec, limit: c.limit, cfg: hash, lists: c.lists, dm: dm}
		switch {
		case !rs.Sent:
			sr.initial = true
		case rs.M != rs.SentM && rs.M != "invite" && rs.M != "knock" && (rs.SentM == "invite" || rs.SentM == "knock"):
			sr.initial = true // an invite or knock became a membership with history
		case hashState(rs.Cfg) != hashState(hash):
			sr.initial = true
		case c.limit > hashLimit(rs.Cfg):
			sr.expanded = rs.M == "join" || rs.M == "leave" || rs.M == "ban"
		default:
			// A smaller timeline limit needs nothing resent; remember the
			// larger one (the client has those events).
			sr.cfg = hashState(hash) + "." + strconv.Itoa(hashLimit(rs.Cfg))
			if !(rs.M != rs.SentM || rs.Unread || dm != rs.DM || rs.M == "join" && rs.Last > rs.SentPos) {
				continue
			}
		}
		p.send = append(p.send, sr)
	}
	ext, err := r.extensions(ctx, p)
	if err != nil {
		return nil, err
	}
	p.ext = ext
	return p, nil
}

// respond builds the response of a plan and records what it sent.
func (r *run) respond(ctx context.Context, p *plan) (*Response, error) {
	resp := &Response{Lists: p.lists, Rooms: map[id.RoomID]*Room{}, Extensions: map[string]any{}}
	built := make([]*Room, len(p.send))
	idx := map[id.RoomID]int{}
	ids := make([]id.RoomID, len(p.send))
	for i, sr := range p.send {
		idx[sr.id] = i
		ids[i] = sr.id
	}
	if err := forEach(ctx, ids, func(ctx context.Context, room id.RoomID) error {
		i := idx[room]
		rm, err := r.buildRoom(ctx, p.send[i])
		if notFound(err) {
			r.s.log().Warn("sliding sync: building a room", "room", room, "err", err)
			return nil // left out; sent when it can be
		}
		built[i] = rm
		return err
	}); err != nil {
		return nil, err
	}
	var joined []id.RoomID
	for i, sr := range p.send {
		if built[i] == nil {
			continue
		}
		resp.Rooms[sr.id] = built[i]
		if sr.rs.M == "join" {
			joined = append(joined, sr.id)
		}
	}
	if len(joined) > 0 {
		counts, err := r.s.Sync.UnreadCounts(ctx, r.me, r.c.Device, joined, r.mlist)
		if err != nil {
			return nil, err
		}
		for _, room := range joined {
			u := counts[room]
			n, h := u.NotificationCount, u.HighlightCount
			resp.Rooms[room].NotificationCnt, resp.Rooms[room].HighlightCnt = &n, &h
		}
	}
	for _, sr := range p.send {
		// Rooms left out (an invite from an ignored user) count as sent
		// too: they come again only when they change.
		rs := sr.rs
		rs.Sent, rs.SentM, rs.Cfg, rs.DM, rs.Unread = true, rs.M, sr.cfg, sr.dm, false
		// Every event at or before the scanned position had committed
		// before the timeline was read; a later one (even at a lower
		// position than one sent) makes the room due again.
		rs.SentPos = r.st.Tok.Events
	}
	r.st.Lists = map[string]int{}
	for name, l := range p.lists {
		r.st.Lists[name] = l.Count
	}
	if err := r.addExtensions(ctx, p, resp); err != nil {
		return nil, err
	}
	return resp, nil
}
