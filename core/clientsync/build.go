package clientsync

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// initial answers a sync without a since token: the current state of every
// room, with positions taken first so that nothing committed later is lost.
func (r *run) initial(ctx context.Context, tdStart int64) (*Response, error) {
	s := r.s
	w := newWindow(Token{}, tdStart)
	r.w = w
	var err error
	for _, h := range []struct {
		st  *stream.Stream
		pos *int64
	}{{r.st.events, &w.head.Events}, {r.st.accountData, &w.head.AccountData}, {r.st.receipts, &w.head.Receipts}, {r.st.typing, &w.head.Typing}} {
		if *h.pos, err = s.head(ctx, h.st); err != nil {
			return nil, err
		}
	}
	if s.DeviceLists != nil {
		if w.head.DeviceLists, err = s.DeviceLists.Position(ctx); err != nil {
			return nil, err
		}
	}
	if r.st.presence != nil {
		if w.head.Presence, err = s.head(ctx, r.st.presence); err != nil {
			return nil, err
		}
	}
	if r.st.unread != nil {
		// An initial sync reports every room's counts: the next sync
		// needs only the changes after this.
		if w.head.Unread, err = s.head(ctx, r.st.unread); err != nil {
			return nil, err
		}
	}
	if err := r.loadMemberships(ctx); err != nil {
		return nil, err
	}
	if err := r.scanToDevice(ctx); err != nil {
		return nil, err
	}
	if err := r.initialPresence(ctx); err != nil {
		return nil, err
	}
	resp, _, err := r.build(ctx)
	return resp, err
}

// markEvery is how far a stream moves between checkpoint updates.
const markEvery = 256

func markKey(st *stream.Stream) table.Key { return table.Key{PK: "mark#" + st.Name, SK: "mark"} }

// head is a position of st that every earlier position has committed by.
// It reads the stream from a checkpoint kept beside it (see moveMark), so
// the read stays short however long the stream grows.
func (s *Service) head(ctx context.Context, st *stream.Stream) (int64, error) {
	var mark int64
	it, err := s.T.Get(ctx, markKey(st))
	switch {
	case errors.Is(err, table.ErrNotFound):
	case err != nil:
		return 0, err
	default:
		mark = it.Num
	}
	next := mark
	if _, _, err := st.ReadEach(ctx, &next, readBatch, 0, func(stream.Entry) error { return nil }); err != nil {
		return 0, err
	}
	if next-mark >= markEvery {
		s.moveMark(ctx, st, next)
	}
	return next, nil
}

// crossedMark moves st's checkpoint to pos when a reader's scan from
// `from` to pos crossed a multiple of markEvery (so each stretch of the
// stream costs each reader at most one checkpoint update).
func (s *Service) crossedMark(ctx context.Context, st *stream.Stream, from, pos int64) {
	if pos/markEvery != from/markEvery {
		s.moveMark(ctx, st, pos)
	}
}

// moveMark moves the checkpoint forward to pos (never back). pos must be a
// position Read returned as next. Best effort: losing a race to another
// reader is as good.
func (s *Service) moveMark(ctx context.Context, st *stream.Stream, pos int64) {
	k := markKey(st)
	cond := table.IfNotExists()
	var version int64
	it, err := s.T.Get(ctx, k)
	switch {
	case errors.Is(err, table.ErrNotFound):
	case err != nil:
		return
	default:
		if it.Num >= pos {
			return
		}
		cond, version = table.IfVersion(it.Version), it.Version
	}
	_ = s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Num: pos, Version: version + 1}, cond)
}

// emptyResponse is the answer when nothing arrived before the timeout.
func (r *run) emptyResponse(ctx context.Context) *Response {
	resp := &Response{NextBatch: r.w.head.String(), Rooms: newRooms()}
	r.addDeviceExtras(ctx, resp)
	return resp
}

// build assembles the response from the window (or, for an initial sync,
// from the current data up to the heads).
func (r *run) build(ctx context.Context) (*Response, bool, error) {
	w := r.w
	initial := r.req.Since == nil
	if err := r.ensureMemberships(ctx); err != nil {
		return nil, false, err
	}
	resp := &Response{NextBatch: w.head.String(), Rooms: newRooms()}

	// Account data: all of it on an initial sync, else what changed.
	var ads []userdata.AccountData
	var err error
	if initial || r.req.FullState {
		if ads, err = r.s.UserData.All(ctx, r.me()); err != nil {
			return nil, false, err
		}
		if r.s.DefaultAccountData != nil {
			have := map[string]bool{}
			for _, ad := range ads {
				if ad.RoomID == "" {
					have[ad.Type] = true
				}
			}
			for _, d := range r.s.DefaultAccountData(r.me()) {
				if !have[d.Type] {
					ads = append(ads, d)
				}
			}
		}
	} else if len(w.ad) > 0 {
		if ads, err = r.s.UserData.GetMany(ctx, r.me(), w.ad); err != nil {
			return nil, false, err
		}
	}
	roomAD := map[id.RoomID][]userdata.AccountData{}
	global := newList()
	for _, ad := range ads {
		if ad.RoomID != "" {
			roomAD[ad.RoomID] = append(roomAD[ad.RoomID], ad)
			continue
		}
		if r.f.AccountData.MatchType(ad.Type) {
			global.Events = append(global.Events, adEvent(ad))
		}
	}
	if r.f.AccountData.Limit > 0 && len(global.Events) > r.f.AccountData.Limit {
		global.Events = global.Events[:r.f.AccountData.Limit]
	}
	resp.AccountData = &global

	byRoom := map[id.RoomID][]posEntry{}
	for _, e := range w.events {
		byRoom[e.RoomID] = append(byRoom[e.RoomID], e)
	}
	receipts := map[id.RoomID][]ephemeral.Receipt{}
	for _, rc := range w.receipts {
		receipts[rc.RoomID] = append(receipts[rc.RoomID], rc)
	}

	ms := append(w.mships[:0:0], w.mships...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].RoomID < ms[j].RoomID })
	var unreadRooms []id.RoomID
	for i := range ms {
		rec := &ms[i]
		room := rec.RoomID
		if !r.f.IncludesRoom(room) {
			continue
		}
		now, err := r.membershipAt(ctx, rec, w.head.Events)
		if err != nil {
			return nil, false, err
		}
		var before mstate
		if !initial {
			if before, err = r.membershipAt(ctx, rec, w.since.Events); err != nil {
				return nil, false, err
			}
		}
		changed := initial || now.pos > w.since.Events
		rc := &roomCtx{room: room, rec: rec, now: now, before: before, entries: byRoom[room],
			receipts: receipts[room], ad: roomAD[room]}
		switch now.m {
		case "join":
			jr, err := r.joinedRoom(ctx, rc)
			if err != nil {
				return nil, false, err
			}
			if jr != nil {
				resp.Rooms.Join[room] = jr
				unreadRooms = append(unreadRooms, room)
			}
		case "invite", "knock":
			if !changed {
				continue
			}
			ev, err := r.s.Rooms.Event(ctx, now.ev)
			if err != nil {
				return nil, false, err
			}
			if now.m == "invite" && r.ignored[ev.Sender] {
				continue // invites from ignored users are not shown
			}
			stripped, err := r.strippedState(ctx, ev)
			if err != nil {
				return nil, false, err
			}
			if now.m == "invite" {
				resp.Rooms.Invite[room] = &InvitedRoom{InviteState: stripped}
			} else {
				resp.Rooms.Knock[room] = &KnockedRoom{KnockState: stripped}
			}
		case "leave", "ban":
			if rec.Forgotten {
				continue
			}
			archived := r.f.Room.IncludeLeave && (initial || r.req.FullState)
			if !archived && (initial || !changed || before.m == "leave" || before.m == "ban") {
				continue
			}
			if !archived && before.m == "" {
				continue // the user was never in the room before this window
			}
			lr, err := r.leftRoom(ctx, rc, archived)
			if err != nil {
				return nil, false, err
			}
			resp.Rooms.Leave[room] = lr
		}
	}
	if err := r.addUnread(ctx, resp, unreadRooms); err != nil {
		return nil, false, err
	}
	if err := r.addPresence(ctx, resp); err != nil {
		return nil, false, err
	}
	if len(w.toDevice) > 0 || initial {
		td := newList()
		for _, m := range w.toDevice {
			b, _ := json.Marshal(m)
			td.Events = append(td.Events, b)
		}
		resp.ToDevice = &td
	}
	if r.s.DeviceLists != nil && (len(w.dl.changed) > 0 || len(w.dl.left) > 0) {
		resp.DeviceLists = &DeviceLists{Changed: sortedUsers(w.dl.changed), Left: sortedUsers(w.dl.left)}
	}
	empty := resp.empty()
	r.addDeviceExtras(ctx, resp)
	return resp, empty, nil
}

// addDeviceExtras adds the E2EE key counts when a DeviceListSource is set.
func (r *run) addDeviceExtras(ctx context.Context, resp *Response) {
	src := r.s.DeviceLists
	if src == nil {
		return
	}
	if counts, err := src.OneTimeKeyCounts(ctx, r.me(), r.req.Device); err == nil {
		resp.OneTimeKeysCount = counts
	} else {
		r.s.log().Warn("sync: one-time key counts", "err", err)
	}
	if types, err := src.UnusedFallbackKeyTypes(ctx, r.me(), r.req.Device); err == nil {
		resp.UnusedFallbackKeyTypes, resp.unusedFallbackKeyTypesOK = types, true
	} else {
		r.s.log().Warn("sync: fallback key types", "err", err)
	}
}

func sortedUsers(m map[id.UserID]bool) []id.UserID {
	out := make([]id.UserID, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// adEvent is an account data event: {"type", "content"}.
func adEvent(ad userdata.AccountData) json.RawMessage {
	b, _ := json.Marshal(struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	}{ad.Type, ad.Content})
	return b
}
