package clientsync

import (
	"context"
	"encoding/json"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// Scan limits: one request reads at most maxScan room events from the global
// stream; past that it answers with what it has (its next_batch is where it
// stopped, so the client's next sync continues there without waiting).
const (
	readBatch = 1000
	maxScan   = 20000
)

// posEntry is an event stream entry with its position.
type posEntry struct {
	Pos int64
	rooms.StreamEntry
}

// window is what an incremental sync has read so far: every stream from the
// since token up to head, keeping only what concerns the user.
type window struct {
	since Token
	head  Token

	events   []posEntry
	ad       []userdata.AccountDataRef
	receipts []ephemeral.Receipt
	typing   map[id.RoomID]bool
	// presence are users whose presence changed.
	presence map[id.UserID]bool
	// unread are rooms whose unread counts changed (UnreadChangedType).
	unread   map[id.RoomID]bool
	toDevice []ephemeral.ToDeviceMessage
	dl       struct{ changed, left map[id.UserID]bool }
	// more is set when a read stopped at a limit: answer now.
	more    bool
	scanned int

	mships      []rooms.MembershipRecord
	mshipByRoom map[id.RoomID]*rooms.MembershipRecord
	haveMships  bool
	// typingDue is when the next typing notice in the user's rooms expires.
	typingDue *time.Time
}

func newWindow(since Token, tdStart int64) *window {
	h := since
	h.ToDevice = tdStart
	w := &window{since: since, head: h, typing: map[id.RoomID]bool{}, unread: map[id.RoomID]bool{}, presence: map[id.UserID]bool{}}
	w.dl.changed, w.dl.left = map[id.UserID]bool{}, map[id.UserID]bool{}
	return w
}

// news reports whether anything read may concern the user.
func (w *window) news() bool {
	return len(w.events) > 0 || len(w.ad) > 0 || len(w.receipts) > 0 || len(w.typing) > 0 || len(w.unread) > 0 || len(w.presence) > 0 ||
		len(w.toDevice) > 0 || len(w.dl.changed) > 0 || len(w.dl.left) > 0
}

// heads returns the read positions for the given kinds (for the Waker).
func (w *window) heads(kinds []Kind) []int64 {
	out := make([]int64, len(kinds))
	for i, k := range kinds {
		switch k {
		case KindEvents:
			out[i] = w.head.Events
		case KindAccountData:
			out[i] = w.head.AccountData
		case KindReceipts:
			out[i] = w.head.Receipts
		case KindTyping:
			out[i] = w.head.Typing
		case KindToDevice:
			out[i] = w.head.ToDevice
		case KindDeviceLists:
			out[i] = w.head.DeviceLists
		case KindPresence:
			out[i] = w.head.Presence
		case KindUnread:
			out[i] = w.head.Unread
		}
	}
	return out
}

func (w *window) setMemberships(ms []rooms.MembershipRecord) {
	w.mships, w.haveMships = ms, true
	w.mshipByRoom = make(map[id.RoomID]*rooms.MembershipRecord, len(ms))
	for i := range w.mships {
		w.mshipByRoom[w.mships[i].RoomID] = &w.mships[i]
	}
}

func (w *window) joined(r id.RoomID) bool {
	m := w.mshipByRoom[r]
	return m != nil && m.Membership == "join"
}

// run is the state of one request.
type run struct {
	s       *Service
	req     *Request
	st      streams
	f       *filter.Filter
	w       *window
	viewer  rooms.Viewer
	ignored map[id.UserID]bool
}

func (r *run) me() id.UserID { return r.req.User }

// ensureMemberships reads the membership index unless the request has.
func (r *run) ensureMemberships(ctx context.Context) error {
	if r.w.haveMships {
		return nil
	}
	return r.loadMemberships(ctx)
}

func (r *run) loadMemberships(ctx context.Context) error {
	ms, err := r.s.Rooms.UserRooms(ctx, r.me())
	if err != nil {
		return err
	}
	r.w.setMemberships(ms)
	return nil
}

// scan reads the given streams past the window's head. The membership
// index is read only when something read needs it.
func (r *run) scan(ctx context.Context, k Kind) error {
	if k&KindEvents != 0 {
		if err := r.scanEvents(ctx); err != nil {
			return err
		}
	}
	if k&KindAccountData != 0 {
		if err := r.scanAccountData(ctx); err != nil {
			return err
		}
	}
	if k&KindReceipts != 0 {
		if err := r.scanReceipts(ctx); err != nil {
			return err
		}
	}
	if k&KindTyping != 0 {
		if err := r.scanTyping(ctx); err != nil {
			return err
		}
	}
	if k&KindToDevice != 0 {
		if err := r.scanToDevice(ctx); err != nil {
			return err
		}
	}
	if k&KindDeviceLists != 0 {
		if err := r.scanDeviceLists(ctx); err != nil {
			return err
		}
	}
	if k&KindPresence != 0 && r.st.presence != nil {
		if err := r.ensureMemberships(ctx); err != nil {
			return err
		}
		if err := r.scanPresence(ctx); err != nil {
			return err
		}
	}
	if k&KindUnread != 0 && r.st.unread != nil {
		if err := r.scanUnread(ctx); err != nil {
			return err
		}
	}
	return nil
}

// scanUnread reads the server-wide unread-change stream: rooms the user is
// joined to whose counts changed are reported again.
func (r *run) scanUnread(ctx context.Context) error {
	if err := r.ensureMemberships(ctx); err != nil {
		return err
	}
	w := r.w
	from := w.head.Unread
	defer func() { r.s.crossedMark(ctx, r.st.unread, from, w.head.Unread) }()
	_, _, err := r.st.unread.ReadEach(ctx, &w.head.Unread, readBatch, 0, func(e stream.Entry) error {
		var ref userdata.AccountDataRef
		if err := json.Unmarshal(e.Data, &ref); err != nil {
			return err
		}
		if w.joined(ref.RoomID) && r.f.IncludesRoom(ref.RoomID) {
			w.unread[ref.RoomID] = true
		}
		return nil
	})
	return err
}

func (r *run) scanEvents(ctx context.Context) error {
	w := r.w
	var batch []posEntry
	aboutMe := false
	budget := maxScan - w.scanned
	if budget <= 0 {
		w.more = true
		return nil
	}
	from := w.head.Events
	n, full, err := r.st.events.ReadEach(ctx, &w.head.Events, readBatch, budget, func(e stream.Entry) error {
		var se rooms.StreamEntry
		if err := json.Unmarshal(e.Data, &se); err != nil {
			return err
		}
		if se.Type == "m.room.member" && se.StateKey != nil && id.UserID(*se.StateKey) == r.me() {
			aboutMe = true
		}
		batch = append(batch, posEntry{Pos: e.Pos, StreamEntry: se})
		return nil
	})
	if err != nil {
		return err
	}
	w.scanned += n
	w.more = w.more || full
	r.s.crossedMark(ctx, r.st.events, from, w.head.Events)
	// The membership index is read after the stream, so every membership
	// change the stream showed is in it (a later one is unwound by
	// membershipAt).
	if !w.haveMships || aboutMe {
		if err := r.loadMemberships(ctx); err != nil {
			return err
		}
	}
	for _, e := range batch {
		if r.interesting(e) {
			w.events = append(w.events, e)
		}
	}
	return nil
}

// interesting reports whether an event stream entry can matter to the
// user: it is in a room they are joined to, or whose membership changed in
// the window, or it is about their own membership.
func (r *run) interesting(e posEntry) bool {
	if e.Type == "m.room.member" && e.StateKey != nil && id.UserID(*e.StateKey) == r.me() {
		return true
	}
	if !r.f.IncludesRoom(e.RoomID) {
		return false
	}
	m := r.w.mshipByRoom[e.RoomID]
	return m != nil && (m.Membership == "join" || m.Pos > r.w.since.Events)
}

func (r *run) scanAccountData(ctx context.Context) error {
	w := r.w
	from := w.head.AccountData
	defer func() { r.s.crossedMark(ctx, r.st.accountData, from, w.head.AccountData) }()
	_, _, err := r.st.accountData.ReadEach(ctx, &w.head.AccountData, readBatch, 0, func(e stream.Entry) error {
		var ref userdata.AccountDataRef
		if err := json.Unmarshal(e.Data, &ref); err != nil {
			return err
		}
		if ref.Type == UnreadChangedType {
			w.unread[ref.RoomID] = true
			return nil
		}
		for i, have := range w.ad {
			if have == ref {
				w.ad = append(w.ad[:i], w.ad[i+1:]...)
				break
			}
		}
		w.ad = append(w.ad, ref)
		return nil
	})
	return err
}

func (r *run) scanReceipts(ctx context.Context) error {
	if err := r.ensureMemberships(ctx); err != nil {
		return err
	}
	w := r.w
	from := w.head.Receipts
	defer func() { r.s.crossedMark(ctx, r.st.receipts, from, w.head.Receipts) }()
	_, _, err := r.st.receipts.ReadEach(ctx, &w.head.Receipts, readBatch, 0, func(e stream.Entry) error {
		var rc ephemeral.Receipt
		if err := json.Unmarshal(e.Data, &rc); err != nil {
			return err
		}
		if w.joined(rc.RoomID) && r.f.IncludesRoom(rc.RoomID) && (!rc.Private() || rc.UserID == r.me()) {
			w.receipts = append(w.receipts, rc)
		}
		return nil
	})
	return err
}

// scanTyping first expires the typing notices in the user's rooms whose time
// has passed (expireTyping), then reads the stream.
func (r *run) scanTyping(ctx context.Context) error {
	if err := r.expireTyping(ctx); err != nil {
		return err
	}
	if err := r.ensureMemberships(ctx); err != nil {
		return err
	}
	w := r.w
	from := w.head.Typing
	defer func() { r.s.crossedMark(ctx, r.st.typing, from, w.head.Typing) }()
	_, _, err := r.st.typing.ReadEach(ctx, &w.head.Typing, readBatch, 0, func(e stream.Entry) error {
		var te ephemeral.TypingEntry
		if err := json.Unmarshal(e.Data, &te); err != nil {
			return err
		}
		if w.joined(te.RoomID) && r.f.IncludesRoom(te.RoomID) {
			w.typing[te.RoomID] = true
		}
		return nil
	})
	return err
}

// expireTyping expires the typing notices in the user's rooms whose time
// has passed (the reader that notices records the change; see
// ephemeral.Expire) and notes when the next one is due.
func (r *run) expireTyping(ctx context.Context) error {
	w := r.w
	items, err := r.s.Ephemeral.AllTyping(ctx)
	if err != nil {
		return err
	}
	if len(items) > 0 {
		if err := r.ensureMemberships(ctx); err != nil {
			return err
		}
	}
	w.typingDue, err = r.s.Ephemeral.ExpireDue(ctx, items, w.joined)
	return err
}

func (r *run) scanToDevice(ctx context.Context) error {
	w := r.w
	room := ephemeral.MaxToDevicePerSync - len(w.toDevice)
	if room <= 0 {
		return nil
	}
	msgs, next, err := r.s.Ephemeral.ToDevice(ctx, r.me(), r.req.Device, w.head.ToDevice, room)
	if err != nil {
		return err
	}
	w.head.ToDevice = next
	w.toDevice = append(w.toDevice, msgs...)
	if len(msgs) == room {
		w.more = true // more may be waiting: let the client come back at once
	}
	return nil
}

func (r *run) scanDeviceLists(ctx context.Context) error {
	src := r.s.DeviceLists
	if src == nil {
		return nil
	}
	w := r.w
	pos, err := src.Position(ctx)
	if err != nil {
		return err
	}
	if pos <= w.head.DeviceLists {
		return nil
	}
	changed, left, err := src.ChangesBetween(ctx, r.me(), w.head.DeviceLists, pos)
	if err != nil {
		return err
	}
	w.head.DeviceLists = pos
	for _, u := range changed {
		w.dl.changed[u] = true
		delete(w.dl.left, u)
	}
	for _, u := range left {
		w.dl.left[u] = true
		delete(w.dl.changed, u)
	}
	return nil
}
