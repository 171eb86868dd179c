package clientapi

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Pagination tokens for /messages and /relations are "t<sequence>": a
// position in one room's timeline.
func parseToken(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if !strings.HasPrefix(s, "t") {
		return 0, httpapi.InvalidParam("invalid pagination token %q", s)
	}
	n, err := strconv.ParseInt(s[1:], 10, 64)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("invalid pagination token %q", s)
	}
	return n, nil
}

func formatToken(seq int64) string { return "t" + strconv.FormatInt(seq, 10) }

func validEventType(t string) bool {
	return t != "" && len(t) <= 255 && !strings.ContainsAny(t, "\x00")
}

// decodeContent reads a JSON object body as event content.
func decodeContent(r *httpapi.Request) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := r.DecodeJSON(&obj); err != nil {
		return nil, err
	}
	b, _ := r.Body()
	return json.RawMessage(b), nil
}

// Send serves PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *RoomsAPI) Send(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	typ, txn := r.PathValue("eventType"), r.PathValue("txnId")
	if !validEventType(typ) {
		return nil, httpapi.InvalidParam("invalid event type")
	}
	if txn == "" || len(txn) > 255 {
		return nil, httpapi.InvalidParam("invalid transaction id")
	}
	c, err := decodeContent(r)
	if err != nil {
		return nil, err
	}
	ne := rooms.NewEvent{Type: typ, Sender: r.Caller.UserID, Content: c, TxnID: txn, Device: r.Caller.DeviceID}
	if ne.TS, err = massagedTS(r); err != nil { // appservice.go
		return nil, err
	}
	if typ == "m.room.redaction" {
		var rc struct {
			Redacts id.EventID `json:"redacts"`
		}
		_ = json.Unmarshal(c, &rc)
		ne.Redacts = rc.Redacts
	}
	if err := a.checkThreadTarget(r.Ctx(), room, c); err != nil {
		return nil, err
	}
	// Membership is checked by the room version's auth rules inside Send
	// (one read fewer than checking it here too).
	eid, err := a.Rooms.Send(r.Ctx(), room, ne)
	if errors.Is(err, rooms.ErrNoRoom) {
		return nil, httpapi.Forbidden("you are not in this room")
	}
	if err != nil {
		return nil, err
	}
	return map[string]id.EventID{"event_id": eid}, nil
}

// PutState serves PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *RoomsAPI) PutState(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	typ, skey := r.PathValue("eventType"), r.PathValue("stateKey")
	if !validEventType(typ) {
		return nil, httpapi.InvalidParam("invalid event type")
	}
	c, err := decodeContent(r)
	if err != nil {
		return nil, err
	}
	ctx, me := r.Ctx(), r.Caller.UserID
	switch typ {
	case "m.room.member":
		// Membership changes go through the engine's membership rules too.
		var mc struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(c, &mc)
		if mc.Membership == "" {
			return nil, httpapi.BadJSON("m.room.member content needs a membership")
		}
	case "m.room.canonical_alias":
		if err := a.checkCanonicalAlias(r, room, c); err != nil {
			return nil, err
		}
	}
	if typ != "m.room.member" || skey != string(me) {
		if err := a.requireJoined(ctx, room, me); err != nil {
			return nil, err
		}
	}
	ts, err := massagedTS(r) // appservice.go
	if err != nil {
		return nil, err
	}
	eid, err := a.Rooms.Send(ctx, room, rooms.NewEvent{Type: typ, StateKey: &skey, Sender: me, Content: c, TS: ts})
	if err != nil {
		return nil, err
	}
	return map[string]id.EventID{"event_id": eid}, nil
}

// checkCanonicalAlias refuses aliases that do not point to this room (spec).
func (a *RoomsAPI) checkCanonicalAlias(r *httpapi.Request, room id.RoomID, c json.RawMessage) error {
	var ca struct {
		Alias      *id.RoomAlias  `json:"alias"`
		AltAliases []id.RoomAlias `json:"alt_aliases"`
	}
	if err := json.Unmarshal(c, &ca); err != nil {
		return httpapi.BadJSON("invalid m.room.canonical_alias content")
	}
	all := ca.AltAliases
	if ca.Alias != nil {
		all = append(all, *ca.Alias)
	}
	for _, al := range all {
		if !strings.HasPrefix(string(al), "#") || !strings.Contains(string(al), ":") {
			return httpapi.InvalidParam("invalid alias %q", al)
		}
		if !strings.HasSuffix(string(al), ":"+a.ServerName) {
			continue // remote aliases cannot be checked without federation
		}
		target, err := a.Rooms.ResolveAlias(r.Ctx(), al)
		if err != nil || target != room {
			return &httpapi.Error{Status: 400, Code: "M_BAD_ALIAS", Message: "alias " + string(al) + " does not point to this room"}
		}
	}
	return nil
}

// canRead checks that the caller may read the room's current state: joined,
// or the room is world-readable.
func (a *RoomsAPI) canRead(r *httpapi.Request, room id.RoomID) (string, error) {
	m, err := a.Rooms.Membership(r.Ctx(), room, r.Caller.UserID)
	if err != nil {
		return "", err
	}
	if m == "join" {
		return m, nil
	}
	if _, err := a.Rooms.RoomVersion(r.Ctx(), room); err != nil {
		return "", httpapi.Forbidden("you are not in this room")
	}
	hv, err := a.Rooms.CurrentStateEvent(r.Ctx(), room, "m.room.history_visibility", "")
	if err == nil && hv != nil && strings.Contains(string(hv.Content), `"world_readable"`) {
		return m, nil
	}
	if m == "leave" || m == "ban" {
		return m, nil // state as of leaving: callers handle
	}
	return "", httpapi.Forbidden("you are not in this room")
}

// GetState serves GET /rooms/{roomId}/state.
func (a *RoomsAPI) GetState(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	m, err := a.canRead(r, room)
	if err != nil {
		return nil, err
	}
	var evs []*rooms.Event
	if m == "leave" || m == "ban" {
		me, err := a.Rooms.CurrentStateEvent(r.Ctx(), room, "m.room.member", string(r.Caller.UserID))
		if err != nil || me == nil {
			return nil, httpapi.Forbidden("you are not in this room")
		}
		ids, err := a.Rooms.StateIDsAt(r.Ctx(), me, true)
		if err != nil {
			return nil, err
		}
		list := make([]id.EventID, 0, len(ids))
		for _, v := range ids {
			list = append(list, v)
		}
		if evs, err = a.Rooms.EventsByID(r.Ctx(), list); err != nil {
			return nil, err
		}
	} else if evs, err = a.Rooms.CurrentState(r.Ctx(), room, ""); err != nil {
		return nil, err
	}
	return a.Rooms.Format(r.Ctx(), evs, viewer(r))
}

// GetStateEvent serves GET /rooms/{roomId}/state/{eventType}/{stateKey}
// (format=content, the default, or format=event).
func (a *RoomsAPI) GetStateEvent(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	typ, skey := r.PathValue("eventType"), r.PathValue("stateKey")
	format := r.URL.Query().Get("format")
	if format != "" && format != "content" && format != "event" {
		return nil, httpapi.InvalidParam("format must be content or event")
	}
	m, err := a.canRead(r, room)
	if err != nil {
		return nil, err
	}
	var ev *rooms.Event
	if m == "leave" || m == "ban" {
		me, err := a.Rooms.CurrentStateEvent(r.Ctx(), room, "m.room.member", string(r.Caller.UserID))
		if err != nil || me == nil {
			return nil, httpapi.Forbidden("you are not in this room")
		}
		ids, err := a.Rooms.StateIDsAt(r.Ctx(), me, true)
		if err != nil {
			return nil, err
		}
		for k, v := range ids {
			if k.Type == typ && k.StateKey == skey {
				ev, err = a.Rooms.Event(r.Ctx(), v)
				if err != nil {
					return nil, err
				}
			}
		}
	} else if ev, err = a.Rooms.CurrentStateEvent(r.Ctx(), room, typ, skey); err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, httpapi.NotFound("no such state event")
	}
	f, err := a.Rooms.Format(r.Ctx(), []*rooms.Event{ev}, viewer(r))
	if err != nil {
		return nil, err
	}
	if format == "event" {
		return f[0], nil
	}
	return f[0].Content, nil
}

// GetEvent serves GET /rooms/{roomId}/event/{eventId}.
func (a *RoomsAPI) GetEvent(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.Rooms.Event(r.Ctx(), id.EventID(r.PathValue("eventId")))
	if err != nil {
		return nil, err
	}
	if ev.RoomID != room {
		return nil, httpapi.NotFound("event not found")
	}
	visible, err := a.Rooms.CanSee(r.Ctx(), r.Caller.UserID, []*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, httpapi.NotFound("event not found")
	}
	f, err := a.Rooms.Format(r.Ctx(), visible, viewer(r))
	if err != nil {
		return nil, err
	}
	return f[0], nil
}

// Redact serves PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *RoomsAPI) Redact(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	target := id.EventID(r.PathValue("eventId"))
	txn := r.PathValue("txnId")
	var body struct {
		Reason string `json:"reason"`
	}
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	ctx, me := r.Ctx(), r.Caller.UserID
	if err := a.requireJoined(ctx, room, me); err != nil {
		return nil, err
	}
	ev, err := a.Rooms.Event(ctx, target)
	if err != nil || ev.RoomID != room {
		return nil, httpapi.NotFound("event not found")
	}
	// Others' events need the redact power level (the auth rules only check
	// this for events of the redactor's own server, and only on receipt).
	if ev.Sender != me {
		pl, err := a.Rooms.PowerLevels(ctx, room)
		if err != nil {
			return nil, err
		}
		if pl.UserLevel(me) < pl.Redact {
			return nil, httpapi.Forbidden("you may not redact other users' events")
		}
	}
	c := map[string]any{"redacts": target}
	if body.Reason != "" {
		c["reason"] = body.Reason
	}
	cb, _ := json.Marshal(c)
	eid, err := a.Rooms.Send(ctx, room, rooms.NewEvent{Type: "m.room.redaction", Sender: me, Content: cb, Redacts: target, TxnID: "redact:" + txn, Device: r.Caller.DeviceID})
	if err != nil {
		return nil, err
	}
	return map[string]id.EventID{"event_id": eid}, nil
}

// Messages serves GET /rooms/{roomId}/messages.
func (a *RoomsAPI) Messages(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return nil, httpapi.InvalidParam("dir must be b or f")
	}
	limit, err := r.QueryInt("limit", 10, 0, 1000)
	if err != nil {
		return nil, err
	}
	// A token tN stands between events N and N+1 of the room's timeline.
	ctx := r.Ctx()
	d := byte(dir[0])
	var start int64
	if fs := q.Get("from"); fs != "" {
		if start, err = parseToken(fs); err != nil {
			return nil, err
		}
	} else if d == rooms.Backward {
		if start, err = a.Rooms.LatestSeq(ctx, room); err != nil {
			return nil, err
		}
	}
	var bound int64 // exclusive bound for rooms.Timeline, 0 = none
	if ts := q.Get("to"); ts != "" {
		to, err := parseToken(ts)
		if err != nil {
			return nil, err
		}
		bound = to // backward: events after `to`
		if d == rooms.Forward {
			bound = to + 1 // forward: events up to `to`
		}
		if d == rooms.Backward && to == 0 {
			bound = 0
		}
	}
	var f *RoomEventFilter
	if fs := q.Get("filter"); fs != "" {
		f = &RoomEventFilter{}
		if err := json.Unmarshal([]byte(fs), f); err != nil {
			return nil, httpapi.InvalidParam("filter is not a valid RoomEventFilter")
		}
		if f.Limit > 0 && int64(f.Limit) < limit {
			limit = int64(f.Limit)
		}
	}
	if _, err := a.canRead(r, room); err != nil {
		return nil, err
	}
	var chunk []*rooms.Event
	cursor := start + 1 // rooms.Timeline reads backward below its from
	if d == rooms.Forward {
		cursor = start // and forward above it
	}
	endSeq, more := start, true
	// Reaching the start of our copy of a room joined over federation, ask
	// the room's other servers for what came before (once per request).
	backfilled := false
	backfill := func() bool {
		if d != rooms.Backward || bound != 0 || backfilled || a.Backfill == nil {
			return false
		}
		backfilled = true
		n, err := a.Backfill(ctx, room, max(int(limit)-len(chunk), 20))
		return err == nil && n > 0
	}
	for len(chunk) < int(limit) && more {
		page, err := a.Rooms.Timeline(ctx, room, d, cursor, bound, int(limit)-len(chunk))
		if err != nil {
			return nil, err
		}
		if len(page.Events) == 0 {
			if backfill() {
				continue
			}
			more = false
			break
		}
		last := page.Events[len(page.Events)-1].Seq
		cursor = last
		endSeq = last
		if d == rooms.Backward {
			endSeq = last - 1
		}
		vis, err := a.Rooms.CanSee(ctx, r.Caller.UserID, page.Events)
		if err != nil {
			return nil, err
		}
		ignored, err := a.ignoredBy(ctx, r.Caller.UserID)
		if err != nil {
			return nil, err
		}
		for _, ev := range vis {
			if f.Match(ev) && (ev.IsState() || !ignored[ev.Sender]) {
				chunk = append(chunk, ev)
			}
		}
		more = page.Next != 0 || backfill()
	}
	out, err := a.Rooms.Format(ctx, chunk, viewer(r))
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []rooms.ClientEvent{}
	}
	resp := map[string]any{"chunk": out, "start": formatToken(start)}
	if more && endSeq != start || len(chunk) > 0 && more {
		resp["end"] = formatToken(endSeq)
	}
	if f != nil && f.LazyLoadMembers {
		resp["state"] = a.lazyMembers(r, room, chunk)
	}
	return resp, nil
}

// lazyMembers returns the member events of the senders in chunk (for
// lazy_load_members).
func (a *RoomsAPI) lazyMembers(r *httpapi.Request, room id.RoomID, chunk []*rooms.Event) []rooms.ClientEvent {
	seen := map[id.UserID]bool{}
	var evs []*rooms.Event
	for _, ev := range chunk {
		if seen[ev.Sender] {
			continue
		}
		seen[ev.Sender] = true
		if m, err := a.Rooms.CurrentStateEvent(r.Ctx(), room, "m.room.member", string(ev.Sender)); err == nil && m != nil {
			evs = append(evs, m)
		}
	}
	out, err := a.Rooms.Format(r.Ctx(), evs, viewer(r))
	if err != nil || out == nil {
		return []rooms.ClientEvent{}
	}
	return out
}
