package clientapi

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// maxContextLimit caps the events around the one asked for.
const maxContextLimit = 100

// scanTimeline reads up to n events of the room from position `after` (the
// sequence to start beyond, exclusive) in direction d, keeping those the
// caller may see and the filter keeps. It returns them and the sequence of
// the last event it consumed (so tokens neither skip nor repeat events),
// or `after` if it consumed none.
func (a *RoomsAPI) scanTimeline(ctx context.Context, u id.UserID, room id.RoomID, d byte, after int64, n int, f *RoomEventFilter) ([]*rooms.Event, int64, error) {
	var out []*rooms.Event
	last, cursor := after, after
	for len(out) < n {
		page, err := a.Rooms.Timeline(ctx, room, d, cursor, 0, max(n-len(out), 10))
		if err != nil {
			return nil, 0, err
		}
		if len(page.Events) == 0 {
			break
		}
		vis, err := a.Rooms.CanSee(ctx, u, page.Events)
		if err != nil {
			return nil, 0, err
		}
		visible := make(map[id.EventID]bool, len(vis))
		for _, ev := range vis {
			visible[ev.EventID] = true
		}
		for _, ev := range page.Events {
			if len(out) == n {
				break
			}
			last = ev.Seq
			if visible[ev.EventID] && f.Match(ev) {
				out = append(out, ev)
			}
		}
		cursor = page.Events[len(page.Events)-1].Seq
		if page.Next == 0 {
			break
		}
	}
	return out, last, nil
}

// Context serves GET /rooms/{roomId}/context/{eventId}: up to limit events
// around the event (half before, half after), tokens for /messages on both
// sides, and the state at the last event returned.
func (a *RoomsAPI) Context(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := r.QueryInt("limit", 10, 0, 1<<31)
	if err != nil {
		return nil, err
	}
	limit = min(limit, maxContextLimit)
	var f *RoomEventFilter
	if fs := r.URL.Query().Get("filter"); fs != "" {
		f = &RoomEventFilter{}
		if err := json.Unmarshal([]byte(fs), f); err != nil {
			return nil, httpapi.InvalidParam("filter is not a valid RoomEventFilter")
		}
	}
	ctx, u := r.Ctx(), r.Caller.UserID
	ev, err := a.visibleEvent(ctx, room, id.EventID(r.PathValue("eventId")), u)
	if err != nil {
		return nil, err
	}
	nBefore := int(limit / 2)
	nAfter := int(limit) - nBefore
	before, first, err := a.scanTimeline(ctx, u, room, rooms.Backward, ev.Seq, nBefore, f)
	if err != nil {
		return nil, err
	}
	after, last, err := a.scanTimeline(ctx, u, room, rooms.Forward, ev.Seq, nAfter, f)
	if err != nil {
		return nil, err
	}
	// State at the last event returned, lazily loaded members if asked.
	at := ev
	if len(after) > 0 {
		at = after[len(after)-1]
	}
	ids, err := a.Rooms.StateIDsAt(ctx, at, true)
	if err != nil {
		return nil, err
	}
	senders := map[id.UserID]bool{ev.Sender: true}
	for _, e := range append(before, after...) {
		senders[e.Sender] = true
	}
	lazy := f != nil && f.LazyLoadMembers
	stateIDs := make([]id.EventID, 0, len(ids))
	for k, v := range ids {
		if lazy && k.Type == "m.room.member" && !senders[id.UserID(k.StateKey)] {
			continue
		}
		stateIDs = append(stateIDs, v)
	}
	stateEvs, err := a.Rooms.EventsByID(ctx, stateIDs)
	if err != nil {
		return nil, err
	}
	var state []*rooms.Event
	for _, e := range stateEvs {
		if f.Match(e) {
			state = append(state, e)
		}
	}
	v := viewer(r)
	format := func(evs []*rooms.Event) ([]rooms.ClientEvent, error) {
		out, err := a.Rooms.Format(ctx, evs, v)
		if out == nil {
			out = []rooms.ClientEvent{}
		}
		return out, err
	}
	resp := map[string]any{
		// tN stands between events N and N+1: backward from `start` reads
		// what precedes the last event consumed before; forward from `end`
		// what follows the last consumed after.
		"start": formatToken(first - 1),
		"end":   formatToken(last),
	}
	for name, evs := range map[string][]*rooms.Event{"events_before": before, "events_after": after, "state": state} {
		if resp[name], err = format(evs); err != nil {
			return nil, err
		}
	}
	one, err := format([]*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	resp["event"] = one[0]
	return resp, nil
}

// TimestampToEvent serves GET /v1/rooms/{roomId}/timestamp_to_event.
func (a *RoomsAPI) TimestampToEvent(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	ts, d, err := rooms.TimestampQueryOf(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.canRead(r, room); err != nil {
		return nil, err
	}
	ev, err := a.Rooms.EventNearTime(r.Ctx(), r.Caller.UserID, room, ts, d)
	if err != nil {
		return nil, err
	}
	// Our copy of a room joined over federation may lack its early
	// history: with no answer here, or a forward answer that older history
	// could beat, the room's other servers are asked.
	if a.RemoteTimestamp != nil && (ev == nil || d == rooms.Forward && ev.OriginServerTS > ts) {
		if eid, ets, ok, err := a.RemoteTimestamp(r.Ctx(), room, ts, d); err == nil && ok {
			if ev == nil || ets < ev.OriginServerTS {
				return map[string]any{"event_id": eid, "origin_server_ts": ets}, nil
			}
		}
	}
	if ev == nil {
		way := "forward"
		if d == rooms.Backward {
			way = "backward"
		}
		return nil, httpapi.NotFound("no event found from %d going %s", ts, way)
	}
	return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginServerTS}, nil
}
