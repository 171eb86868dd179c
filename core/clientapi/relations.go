package clientapi

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Relations pages default to this many children and never hold more than
// maxRelationsLimit (the spec lets the server clamp).
const (
	defaultRelationsLimit = 10
	maxRelationsLimit     = 100
)

// optToken parses an optional "t<seq>" query parameter.
func optToken(r *httpapi.Request, name string) (int64, bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, false, nil
	}
	n, err := parseToken(s)
	return n, err == nil, err
}

// pageLimit reads a limit parameter: def when absent or 0, at most max.
func pageLimit(r *httpapi.Request, def, max int64) (int, error) {
	n, err := r.QueryInt("limit", def, 0, 1<<31)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		n = def
	}
	return int(min(n, max)), nil
}

// visibleEvent loads an event of the room that the caller may see, or
// answers M_NOT_FOUND (the spec does not tell the two apart).
func (a *RoomsAPI) visibleEvent(ctx context.Context, room id.RoomID, e id.EventID, u id.UserID) (*rooms.Event, error) {
	ev, err := a.Rooms.Event(ctx, e)
	if err != nil || ev.RoomID != room {
		return nil, httpapi.NotFound("event not found")
	}
	vis, err := a.Rooms.CanSee(ctx, u, []*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(vis) == 0 {
		return nil, httpapi.NotFound("event not found")
	}
	return ev, nil
}

// Relations serves GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *RoomsAPI) Relations(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	rq := rooms.RelationsQuery{Parent: id.EventID(r.PathValue("eventId")), RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"), Dir: rooms.Backward}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		rq.Dir = rooms.Forward
	default:
		return nil, httpapi.InvalidParam("dir must be b or f")
	}
	if rq.From, rq.HasFrom, err = optToken(r, "from"); err != nil {
		return nil, err
	}
	if rq.To, rq.HasTo, err = optToken(r, "to"); err != nil {
		return nil, err
	}
	if rq.Limit, err = pageLimit(r, defaultRelationsLimit, maxRelationsLimit); err != nil {
		return nil, err
	}
	_, recurseGiven := q["recurse"]
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		rq.Recurse = true
	default:
		return nil, httpapi.InvalidParam("recurse must be true or false")
	}
	ctx := r.Ctx()
	if _, err := a.visibleEvent(ctx, room, rq.Parent, r.Caller.UserID); err != nil {
		return nil, err
	}
	evs, next, more, err := a.Rooms.Relations(ctx, room, r.Caller.UserID, rq)
	if err != nil {
		return nil, err
	}
	chunk, err := a.Rooms.Format(ctx, evs, viewer(r))
	if err != nil {
		return nil, err
	}
	if chunk == nil {
		chunk = []rooms.ClientEvent{}
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		resp["next_batch"] = formatToken(next)
	}
	if rq.HasFrom {
		resp["prev_batch"] = formatToken(rq.From)
	}
	if recurseGiven {
		depth := 1
		if rq.Recurse {
			depth = rooms.MaxRelationDepth
		}
		resp["recursion_depth"] = depth
	}
	return resp, nil
}

// Threads serves GET /v1/rooms/{roomId}/threads.
func (a *RoomsAPI) Threads(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	tq := rooms.ThreadsQuery{Room: room}
	switch r.URL.Query().Get("include") {
	case "", "all":
	case "participated":
		tq.Participated = true
	default:
		return nil, httpapi.InvalidParam("include must be all or participated")
	}
	limit, err := r.QueryInt("limit", defaultRelationsLimit, 1, 1<<31)
	if err != nil {
		return nil, err
	}
	tq.Limit = int(min(limit, maxRelationsLimit))
	if tq.Before, tq.HasBefore, err = optToken(r, "from"); err != nil {
		return nil, err
	}
	if _, err := a.canRead(r, room); err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	roots, next, more, err := a.Rooms.Threads(ctx, tq, viewer(r))
	if err != nil {
		return nil, err
	}
	chunk, err := a.Rooms.Format(ctx, roots, viewer(r))
	if err != nil {
		return nil, err
	}
	if chunk == nil {
		chunk = []rooms.ClientEvent{}
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		resp["next_batch"] = formatToken(next)
	}
	return resp, nil
}

// checkThreadTarget refuses to start a thread off an event that itself
// relates to another (spec "Validation of m.thread relationships": 400
// M_UNKNOWN).
func (a *RoomsAPI) checkThreadTarget(ctx context.Context, room id.RoomID, c json.RawMessage) error {
	var rc struct {
		RelatesTo *struct {
			RelType string     `json:"rel_type"`
			EventID id.EventID `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(c, &rc) != nil || rc.RelatesTo == nil || rc.RelatesTo.RelType != "m.thread" {
		return nil
	}
	target, err := a.Rooms.Event(ctx, rc.RelatesTo.EventID)
	if err != nil || target.RoomID != room {
		return nil // an unknown root is not ours to judge
	}
	var tc struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(target.Content, &tc) == nil && tc.RelatesTo != nil && tc.RelatesTo.RelType != "" {
		return httpapi.BadRequest("cannot start a thread from an event that has a relation")
	}
	return nil
}
