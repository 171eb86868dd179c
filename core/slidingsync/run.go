package slidingsync

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// Scan limits, as /v3/sync: past maxScan event stream entries a request
// answers with what it has (its next position continues from there).
const (
	readBatch = 1000
	maxScan   = 20000
	// bumpScan bounds the events looked at to find a room's bump stamp
	// when the connection first meets it.
	bumpScan = 60
	// parallel is how many rooms are looked at concurrently.
	parallel = 16
)

// run is the state of one request.
type run struct {
	s           *Service
	c           *Call
	me          id.UserID
	st          *connState
	incremental bool
	start       clientsync.Token
	// loaded is the state as loaded (after moving Prev), loadedPos its
	// position.
	loaded    []byte
	loadedPos int64

	mlist   []rooms.MembershipRecord
	mships  map[id.RoomID]*rooms.MembershipRecord
	dm      map[id.RoomID]bool
	tags    map[id.RoomID]map[string]bool
	spaces  map[id.RoomID]map[id.RoomID]bool // room → spaces listing it
	ignored map[id.UserID]bool

	needMships bool
	more       bool
	scanned    int
	typingDue  *time.Time
	// signals and seen are the wake-up items a wait polls and their
	// values read before the streams were (nil: the waker polls the
	// counters instead).
	signals []table.Key
	seen    []int64

	adRefs      []userdata.AccountDataRef
	receipts    []ephemeral.Receipt
	typingRooms map[id.RoomID]bool
	dlChanged   map[id.UserID]bool
	dlLeft      map[id.UserID]bool
	toDevice    []ephemeral.ToDeviceMessage
	tdNext      int64
}

func (r *run) toDeviceOn() bool {
	td := r.c.Req.Extensions.ToDevice
	return td != nil && on(&td.ExtConfig)
}

// prepare reads what every pass needs: memberships, DMs, tags, spaces, and
// acknowledges to-device messages before the extension's since.
func (r *run) prepare(ctx context.Context) error {
	r.typingRooms = map[id.RoomID]bool{}
	r.dlChanged, r.dlLeft = map[id.UserID]bool{}, map[id.UserID]bool{}
	var err error
	if r.ignored, err = r.s.UserData.IgnoredUsers(ctx, r.me); err != nil {
		return err
	}
	if err := r.loadMemberships(ctx); err != nil {
		return err
	}
	if err := r.loadDM(ctx); err != nil {
		return err
	}
	if err := r.loadTags(ctx); err != nil {
		return err
	}
	if err := r.loadSpaces(ctx); err != nil {
		return err
	}
	if r.toDeviceOn() {
		var since int64
		if s := r.c.Req.Extensions.ToDevice.Since; s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return httpapiInvalid("to_device since is not a token this server issued")
			}
			since = n
		}
		if since > 0 {
			// A position past the inbox's counter would acknowledge
			// messages not yet sent.
			latest, err := r.s.Ephemeral.ToDeviceStream(r.me, r.c.Device).Latest(ctx)
			if err != nil {
				return err
			}
			if since > latest {
				return httpapiInvalid("to_device since is not a token this server issued")
			}
		}
		if r.tdNext, err = r.s.Ephemeral.AckToDevice(ctx, r.me, r.c.Device, since); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) loadMemberships(ctx context.Context) error {
	ms, err := r.s.Rooms.UserRooms(ctx, r.me)
	if err != nil {
		return err
	}
	r.mlist = ms
	r.mships = make(map[id.RoomID]*rooms.MembershipRecord, len(ms))
	for i := range ms {
		if !ms[i].Forgotten {
			r.mships[ms[i].RoomID] = &ms[i]
		}
	}
	r.needMships = false
	return nil
}

// loadDM reads m.direct: the rooms that are direct chats.
func (r *run) loadDM(ctx context.Context) error {
	raw, err := r.s.UserData.Get(ctx, r.me, "", "m.direct")
	if err != nil {
		return err
	}
	r.dm = map[id.RoomID]bool{}
	var direct map[string][]id.RoomID
	if raw != nil && json.Unmarshal(raw, &direct) == nil {
		for _, rs := range direct {
			for _, room := range rs {
				r.dm[room] = true
			}
		}
	}
	return nil
}

// usesFilter reports whether any list uses a filter field.
func (r *run) usesFilter(f func(*Filters) bool) bool {
	for _, l := range r.c.Req.Lists {
		if l.Filters != nil && f(l.Filters) {
			return true
		}
	}
	return false
}

// loadTags reads the rooms' tags when a list filters on them.
func (r *run) loadTags(ctx context.Context) error {
	r.tags = map[id.RoomID]map[string]bool{}
	if !r.usesFilter(func(f *Filters) bool { return len(f.Tags) > 0 || len(f.NotTags) > 0 }) {
		return nil
	}
	all, err := r.s.UserData.All(ctx, r.me)
	if err != nil {
		return err
	}
	for _, ad := range all {
		if ad.Type != "m.tag" || ad.RoomID == "" {
			continue
		}
		var c struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(ad.Content, &c) == nil {
			m := map[string]bool{}
			for t := range c.Tags {
				m[t] = true
			}
			r.tags[ad.RoomID] = m
		}
	}
	return nil
}

// loadSpaces reads the children of the spaces lists filter on (only
// spaces the user is joined to; subspaces are not followed).
func (r *run) loadSpaces(ctx context.Context) error {
	r.spaces = map[id.RoomID]map[id.RoomID]bool{}
	want := map[id.RoomID]bool{}
	for _, l := range r.c.Req.Lists {
		if l.Filters != nil {
			for _, sp := range l.Filters.Spaces {
				want[id.RoomID(sp)] = true
			}
		}
	}
	for sp := range want {
		if m := r.mships[sp]; m == nil || m.Membership != "join" {
			continue
		}
		evs, err := r.s.Rooms.CurrentState(ctx, sp, "m.space.child")
		if err != nil {
			return err
		}
		for _, ev := range evs {
			var c struct {
				Via []string `json:"via"`
			}
			if ev.StateKey == nil || json.Unmarshal(ev.Content, &c) != nil || len(c.Via) == 0 {
				continue
			}
			child := id.RoomID(*ev.StateKey)
			if r.spaces[child] == nil {
				r.spaces[child] = map[id.RoomID]bool{}
			}
			r.spaces[child][sp] = true
		}
	}
	return nil
}

// scan reads every stream past the connection's positions and refreshes
// what the connection knows about the user's rooms.
func (r *run) scan(ctx context.Context) error {
	s, t := r.s, &r.st.Tok
	if budget := maxScan - r.scanned; budget > 0 {
		n, full, err := s.Rooms.Events.ReadEach(ctx, &t.Events, readBatch, budget, func(e stream.Entry) error {
			var se rooms.StreamEntry
			if err := json.Unmarshal(e.Data, &se); err != nil {
				return err
			}
			if se.Type == "m.room.member" && se.StateKey != nil && id.UserID(*se.StateKey) == r.me {
				r.needMships = true
			}
			rs := r.st.Rooms[se.RoomID]
			if rs == nil || rs.M != "join" || !rs.Facts {
				return nil
			}
			rs.Last = max(rs.Last, e.Pos)
			if BumpTypes[se.Type] {
				rs.Bump = max(rs.Bump, e.Pos)
			}
			if se.Type == "m.room.encryption" && se.StateKey != nil && *se.StateKey == "" {
				rs.Enc = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		r.scanned += n
		r.more = r.more || full
	} else {
		r.more = true
	}
	if r.needMships {
		if err := r.loadMemberships(ctx); err != nil {
			return err
		}
	}
	if err := r.refreshRooms(ctx); err != nil {
		return err
	}
	// Account data: changes, DM and tag updates, unread count changes.
	dmChanged, tagsChanged := false, false
	if _, _, err := s.UserData.AccountDataStream(r.me).ReadEach(ctx, &t.AccountData, readBatch, 0, func(e stream.Entry) error {
		var ref userdata.AccountDataRef
		if err := json.Unmarshal(e.Data, &ref); err != nil {
			return err
		}
		switch {
		case ref.Type == clientsync.UnreadChangedType:
			if rs := r.st.Rooms[ref.RoomID]; rs != nil {
				rs.Unread = true
			}
			return nil
		case ref.Type == "m.direct" && ref.RoomID == "":
			dmChanged = true
		case ref.Type == "m.tag":
			tagsChanged = true
		}
		for i, have := range r.adRefs {
			if have == ref {
				r.adRefs = append(r.adRefs[:i], r.adRefs[i+1:]...)
				break
			}
		}
		r.adRefs = append(r.adRefs, ref)
		return nil
	}); err != nil {
		return err
	}
	if dmChanged {
		if err := r.loadDM(ctx); err != nil {
			return err
		}
	}
	if tagsChanged {
		if err := r.loadTags(ctx); err != nil {
			return err
		}
	}
	if _, _, err := s.Ephemeral.Receipts.ReadEach(ctx, &t.Receipts, readBatch, 0, func(e stream.Entry) error {
		var rc ephemeral.Receipt
		if err := json.Unmarshal(e.Data, &rc); err != nil {
			return err
		}
		if !r.joined(rc.RoomID) || rc.Private() && rc.UserID != r.me {
			return nil
		}
		if rc.UserID == r.me {
			if rs := r.st.Rooms[rc.RoomID]; rs != nil {
				rs.Unread = true // the user's own receipt changes their counts
			}
		}
		r.receipts = append(r.receipts, rc)
		return nil
	}); err != nil {
		return err
	}
	if un := s.Sync.UnreadChanges; un != nil {
		if _, _, err := un.ReadEach(ctx, &t.Unread, readBatch, 0, func(e stream.Entry) error {
			var ref userdata.AccountDataRef
			if err := json.Unmarshal(e.Data, &ref); err != nil {
				return err
			}
			if rs := r.st.Rooms[ref.RoomID]; rs != nil && r.joined(ref.RoomID) {
				rs.Unread = true
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := r.scanTyping(ctx); err != nil {
		return err
	}
	if src := s.Sync.DeviceLists; src != nil && on(r.c.Req.Extensions.E2EE) {
		pos, err := src.Position(ctx)
		if err != nil {
			return err
		}
		if pos > t.DeviceLists {
			if r.incremental {
				changed, left, err := src.ChangesBetween(ctx, r.me, t.DeviceLists, pos)
				if err != nil {
					return err
				}
				for _, u := range changed {
					r.dlChanged[u] = true
					delete(r.dlLeft, u)
				}
				for _, u := range left {
					r.dlLeft[u] = true
					delete(r.dlChanged, u)
				}
			}
			t.DeviceLists = pos
		}
	}
	if r.toDeviceOn() {
		limit := ephemeral.MaxToDevicePerSync
		if l := r.c.Req.Extensions.ToDevice.Limit; l != nil && *l > 0 {
			limit = int(min(*l, int64(limit)))
		}
		if room := limit - len(r.toDevice); room > 0 {
			msgs, next, err := s.Ephemeral.ToDevice(ctx, r.me, r.c.Device, r.tdNext, room)
			if err != nil {
				return err
			}
			r.tdNext = next
			r.toDevice = append(r.toDevice, msgs...)
			if len(msgs) == room {
				r.more = true
			}
		}
	}
	return nil
}

// scanTyping expires due typing notices in the user's rooms (as /v3/sync
// does: the reader that notices records the change), notes the next
// expiry, then reads the typing stream.
func (r *run) scanTyping(ctx context.Context) error {
	if !on(r.c.Req.Extensions.Typing) {
		return nil
	}
	items, err := r.s.Ephemeral.AllTyping(ctx)
	if err != nil {
		return err
	}
	if r.typingDue, err = r.s.Ephemeral.ExpireDue(ctx, items, r.joined); err != nil {
		return err
	}
	_, _, err = r.s.Ephemeral.Typing.ReadEach(ctx, &r.st.Tok.Typing, readBatch, 0, func(e stream.Entry) error {
		var te ephemeral.TypingEntry
		if err := json.Unmarshal(e.Data, &te); err != nil {
			return err
		}
		if r.joined(te.RoomID) {
			r.typingRooms[te.RoomID] = true
		}
		return nil
	})
	return err
}

func (r *run) joined(room id.RoomID) bool {
	m := r.mships[room]
	return m != nil && m.Membership == "join"
}

// refreshRooms brings the connection's room records in line with the
// memberships, computing the facts of rooms it meets for the first time or
// whose membership changed.
func (r *run) refreshRooms(ctx context.Context) error {
	for room := range r.st.Rooms {
		if r.mships[room] == nil {
			delete(r.st.Rooms, room)
		}
	}
	if len(r.c.Req.Lists) == 0 && len(r.c.Req.RoomSubscriptions) == 0 {
		// A connection for extensions only (Element X's encryption sync):
		// no room needs looking at.
		return nil
	}
	var todo []id.RoomID
	for room, m := range r.mships {
		rs := r.st.Rooms[room]
		if rs == nil {
			rs = &roomState{}
			r.st.Rooms[room] = rs
		}
		if rs.M != m.Membership || !rs.Facts {
			rs.M = m.Membership
			rs.Facts = false
			todo = append(todo, room)
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i] < todo[j] })
	return forEach(ctx, todo, func(ctx context.Context, room id.RoomID) error {
		rs := r.st.Rooms[room]
		err := r.facts(ctx, room, r.mships[room], rs)
		if notFound(err) {
			// An event or room this server does not hold (a remote invite
			// whose event went missing): order the room by its membership
			// rather than fail the whole connection.
			r.s.log().Warn("sliding sync: room facts", "room", room, "err", err)
			rs.Facts, rs.Last, rs.Bump = true, r.mships[room].Pos, r.mships[room].Pos
			return nil
		}
		return err
	})
}

// forEach runs f for every room, a few at a time; the first error wins.
func forEach(ctx context.Context, rs []id.RoomID, f func(context.Context, id.RoomID) error) error {
	if len(rs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	ch := make(chan id.RoomID)
	for i := 0; i < min(parallel, len(rs)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for room := range ch {
				if err := f(ctx, room); err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, room := range rs {
		if ctx.Err() != nil {
			break
		}
		ch <- room
	}
	close(ch)
	wg.Wait()
	return ferr
}

// facts computes a room's bump stamp, newest position, type and
// encryption. rs is only touched by this call while it runs.
func (r *run) facts(ctx context.Context, room id.RoomID, m *rooms.MembershipRecord, rs *roomState) error {
	s := r.s
	rs.Last, rs.Bump = m.Pos, m.Pos
	switch m.Membership {
	case "join":
		var from int64
		seen := 0
		found := false
		for seen < bumpScan {
			page, err := s.Rooms.Timeline(ctx, room, rooms.Backward, from, 0, 20)
			if err != nil {
				return err
			}
			for _, ev := range page.Events {
				if seen == 0 {
					rs.Last = max(ev.Pos, m.Pos)
					rs.Bump = rs.Last
				}
				seen++
				if BumpTypes[ev.Type] && ev.Pos > 0 {
					rs.Bump, found = ev.Pos, true
					break
				}
			}
			if found || page.Next == 0 || len(page.Events) == 0 {
				break
			}
			from = page.Next
		}
		create, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.create", "")
		if err != nil {
			return err
		}
		rs.Type = createType(create)
		enc, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.encryption", "")
		if err != nil {
			return err
		}
		rs.Enc = enc != nil
	case "invite", "knock":
		ev, err := s.Rooms.Event(ctx, m.EventID)
		if err != nil {
			return err
		}
		stripped, err := s.Sync.StrippedState(ctx, ev)
		if err != nil {
			return err
		}
		rs.Type, rs.Enc = nil, false
		var mc struct {
			IsDirect bool `json:"is_direct"`
		}
		_ = json.Unmarshal(ev.Content, &mc)
		rs.InvDM = mc.IsDirect
		for _, raw := range stripped {
			var e struct {
				Type    string `json:"type"`
				Content struct {
					Type *string `json:"type"`
				} `json:"content"`
			}
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			switch e.Type {
			case "m.room.create":
				rs.Type = e.Content.Type
			case "m.room.encryption":
				rs.Enc = true
			}
		}
	default: // leave, ban: ordered by the membership change
		if create, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.create", ""); err == nil {
			rs.Type = createType(create)
		}
		ev, err := s.Rooms.Event(ctx, m.EventID)
		if err != nil {
			return err
		}
		// Kicked or banned by someone else after being joined (MSC4186
		// keeps those rooms in the list; a ban without a join is not).
		rs.Kicked = ev.Sender != r.me && ev.Replaces != nil && membershipOf(ev.Replaces.Content) == "join"
	}
	rs.Facts = true
	return nil
}

func membershipOf(content json.RawMessage) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Membership
}

// notFound reports a 404 from a service (an unknown event or room).
func notFound(err error) bool {
	var he *httpapi.Error
	return err != nil && (errors.As(err, &he) && he.Status == 404 || errors.Is(err, rooms.ErrNoRoom))
}

func createType(ev *rooms.Event) *string {
	if ev == nil {
		return nil
	}
	var c struct {
		Type *string `json:"type"`
	}
	if json.Unmarshal(ev.Content, &c) != nil || c.Type == nil || *c.Type == "" {
		return nil
	}
	return c.Type
}
