package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Space hierarchy limits.
const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	// hierarchyMaxRooms bounds one walk of a space (every page re-walks it).
	hierarchyMaxRooms = 500
)

// roomView is what the caller may learn about a local room.
type roomView struct {
	summary    *rooms.PublicRoom
	membership string
	allowed    []id.RoomID // rooms whose members may join a restricted room
	accessible bool
}

// viewRoom reads a local room's summary and decides whether u (empty when
// unauthenticated) may see it: members and invitees may, and anyone may
// see rooms that are world readable, public, knockable, or restricted to
// members of a room u is joined to. Unknown rooms are nil.
func (a *DiscoveryAPI) viewRoom(ctx context.Context, r id.RoomID, u id.UserID) (*roomView, error) {
	pr, err := a.Rooms.RoomSummary(ctx, r)
	if errors.Is(err, rooms.ErrNoRoom) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v := &roomView{summary: pr}
	if jr, err := a.Rooms.CurrentStateEvent(ctx, r, "m.room.join_rules", ""); err != nil {
		return nil, err
	} else if jr != nil {
		var c struct {
			Allow []struct {
				Type   string    `json:"type"`
				RoomID id.RoomID `json:"room_id"`
			} `json:"allow"`
		}
		_ = json.Unmarshal(jr.Content, &c)
		for _, al := range c.Allow {
			if al.Type == "m.room_membership" && al.RoomID != "" {
				v.allowed = append(v.allowed, al.RoomID)
			}
		}
	}
	if u != "" {
		if v.membership, err = a.Rooms.Membership(ctx, r, u); err != nil {
			return nil, err
		}
	}
	switch {
	case v.membership == "join" || v.membership == "invite" || v.membership == "knock":
		v.accessible = true
	case v.membership == "ban":
		v.accessible = false
	case pr.WorldReadable:
		v.accessible = true
	case pr.JoinRule == "public" || pr.JoinRule == "knock" || pr.JoinRule == "knock_restricted":
		v.accessible = true
	case (pr.JoinRule == "restricted") && u != "":
		for _, ar := range v.allowed {
			m, err := a.Rooms.Membership(ctx, ar, u)
			if err != nil {
				return nil, err
			}
			if m == "join" {
				v.accessible = true
				break
			}
		}
	}
	return v, nil
}

// chunk is the room summary object of the spec, with extra fields.
func (a *DiscoveryAPI) chunk(ctx context.Context, v *roomView) (map[string]any, error) {
	b, err := json.Marshal(v.summary)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	rv, err := a.Rooms.RoomVersion(ctx, v.summary.RoomID)
	if err != nil {
		return nil, err
	}
	out["room_version"] = rv
	if enc, err := a.Rooms.CurrentStateEvent(ctx, v.summary.RoomID, "m.room.encryption", ""); err != nil {
		return nil, err
	} else if enc != nil {
		var c struct {
			Algorithm string `json:"algorithm"`
		}
		if json.Unmarshal(enc.Content, &c) == nil && c.Algorithm != "" {
			out["encryption"] = c.Algorithm
		}
	}
	if len(v.allowed) > 0 && (v.summary.JoinRule == "restricted" || v.summary.JoinRule == "knock_restricted") {
		out["allowed_room_ids"] = v.allowed
	}
	return out, nil
}

// RoomSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// for local rooms. Without authentication only rooms anyone may see are
// described; a room the caller may not see is 404 like an unknown one.
func (a *DiscoveryAPI) RoomSummary(r *httpapi.Request) (any, error) {
	target := r.PathValue("roomIdOrAlias")
	var rid id.RoomID
	switch {
	case strings.HasPrefix(target, "!"):
		rid = id.RoomID(target)
	case strings.HasPrefix(target, "#"):
		if !strings.Contains(target, ":") {
			return nil, httpapi.InvalidParam("%q is not a room alias", target)
		}
		resolved, err := a.Rooms.ResolveAlias(r.Ctx(), id.RoomAlias(target))
		if err != nil {
			return nil, err
		}
		rid = resolved
	default:
		return nil, httpapi.InvalidParam("%q is neither a room ID nor a room alias", target)
	}
	var u id.UserID
	if r.Caller != nil {
		u = r.Caller.UserID
	}
	v, err := a.viewRoom(r.Ctx(), rid, u)
	if err != nil {
		return nil, err
	}
	if v == nil && a.RemoteHierarchy != nil {
		// A room this server does not hold: its servers describe it.
		return a.remoteSummary(r, rid, append(r.URL.Query()["via"], viaOf(rid)...), u)
	}
	if v == nil || !v.accessible {
		return nil, httpapi.NotFound("room not found")
	}
	out, err := a.chunk(r.Ctx(), v)
	if err != nil {
		return nil, err
	}
	if r.Caller != nil {
		m := v.membership
		if m == "" {
			m = "leave"
		}
		out["membership"] = m
	}
	return out, nil
}

// spaceChild is one valid m.space.child event of a room.
type spaceChild struct {
	roomID    id.RoomID
	via       []string
	order     string
	suggested bool
	ts        int64
	stripped  map[string]any
}

// spaceChildren reads a room's valid m.space.child events (a via list
// that is not empty), in the spec's order: by `order` (rooms without a
// valid one last), then by the event's timestamp, then by room ID.
func (a *DiscoveryAPI) spaceChildren(ctx context.Context, r id.RoomID) ([]spaceChild, error) {
	evs, err := a.Rooms.CurrentState(ctx, r, "m.space.child")
	if err != nil {
		return nil, err
	}
	var out []spaceChild
	for _, ev := range evs {
		if ev.StateKey == nil || !strings.HasPrefix(*ev.StateKey, "!") {
			continue
		}
		var c struct {
			Via       []string        `json:"via"`
			Order     json.RawMessage `json:"order"`
			Suggested bool            `json:"suggested"`
		}
		if json.Unmarshal(ev.Content, &c) != nil || len(c.Via) == 0 {
			continue
		}
		var order string
		if json.Unmarshal(c.Order, &order) != nil || !validOrder(order) {
			order = ""
		}
		out = append(out, spaceChild{
			roomID: id.RoomID(*ev.StateKey), via: c.Via, order: order, suggested: c.Suggested, ts: ev.OriginServerTS,
			stripped: map[string]any{
				"type": ev.Type, "state_key": *ev.StateKey, "content": ev.Content,
				"sender": ev.Sender, "origin_server_ts": ev.OriginServerTS,
			},
		})
	}
	sortChildren(out)
	return out, nil
}

// sortChildren orders space children as the spec says: by `order` (rooms
// without a valid one last), then by the event's timestamp, then by id.
func sortChildren(out []spaceChild) {
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if (x.order == "") != (y.order == "") {
			return x.order != ""
		}
		if x.order != y.order {
			return x.order < y.order
		}
		if x.ts != y.ts {
			return x.ts < y.ts
		}
		return x.roomID < y.roomID
	})
}

// validOrder: at most 50 characters, each printable ASCII.
func validOrder(s string) bool {
	if s == "" || len(s) > 50 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// hierarchyToken names a position in a walk and the parameters it was
// made with (which later pages may not change).
func hierarchyToken(offset int, suggested bool, maxDepth int64) string {
	return fmt.Sprintf("h%d_%t_%d", offset, suggested, maxDepth)
}

// Hierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy over
// local rooms: a breadth-first walk of m.space.child events from the room,
// each room the caller may see described once (rooms it may not see, and
// rooms on other servers, are left out and not walked into). Pages are
// offsets into the walk, which is re-done for each page.
func (a *DiscoveryAPI) Hierarchy(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	root := id.RoomID(r.PathValue("roomId"))
	q := r.URL.Query()
	suggested := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return nil, httpapi.InvalidParam("suggested_only must be true or false")
	}
	maxDepth, err := r.QueryInt("max_depth", -1, 0, 1<<20)
	if err != nil {
		return nil, err
	}
	limit, err := r.QueryInt("limit", hierarchyDefaultLimit, 1, 1<<30)
	if err != nil {
		return nil, err
	}
	limit = min(limit, hierarchyMaxLimit)
	offset := 0
	if from := q.Get("from"); from != "" {
		head, _, _ := strings.Cut(strings.TrimPrefix(from, "h"), "_")
		n, err := strconv.Atoi(head)
		if err != nil || n < 0 || hierarchyToken(n, suggested, maxDepth) != from {
			return nil, httpapi.InvalidParam("unknown from token, or suggested_only or max_depth changed")
		}
		offset = n
	}
	me := r.Caller.UserID
	v, err := a.viewRoom(ctx, root, me)
	if err != nil {
		return nil, err
	}
	rw := &remoteWalk{a: a, suggested: suggested, known: map[id.RoomID]map[string]any{}, gone: map[id.RoomID]bool{}}
	if v == nil && a.RemoteHierarchy != nil {
		// A space this server does not hold: ask the servers its id names.
		if e, _ := rw.entry(ctx, root, viaOf(root), me); e == nil {
			return nil, httpapi.Forbidden("you may not see room %s", root)
		}
	} else if v == nil || !v.accessible {
		return nil, httpapi.Forbidden("you may not see room %s", root)
	}
	type queued struct {
		room  id.RoomID
		via   []string
		depth int64
	}
	queue := []queued{{root, viaOf(root), 0}}
	seen := map[id.RoomID]bool{root: true}
	var walk []map[string]any
	for len(queue) > 0 && len(walk) < hierarchyMaxRooms && len(walk) < offset+int(limit)+1 {
		cur := queue[0]
		queue = queue[1:]
		view := v
		if cur.room != root {
			if view, err = a.viewRoom(ctx, cur.room, me); err != nil {
				return nil, err
			}
		}
		var entry map[string]any
		var children []spaceChild
		switch {
		case view == nil && a.RemoteHierarchy != nil:
			// Not held here: described by the servers of its m.space.child via.
			if entry, children = rw.entry(ctx, cur.room, cur.via, me); entry == nil {
				continue
			}
		case view == nil || !view.accessible:
			continue
		default:
			if entry, err = a.chunk(ctx, view); err != nil {
				return nil, err
			}
			if children, err = a.spaceChildren(ctx, cur.room); err != nil {
				return nil, err
			}
		}
		state := []map[string]any{}
		for _, c := range children {
			state = append(state, c.stripped)
			if (suggested && !c.suggested) || seen[c.roomID] || (maxDepth >= 0 && cur.depth >= maxDepth) {
				continue
			}
			seen[c.roomID] = true
			queue = append(queue, queued{c.roomID, c.via, cur.depth + 1})
		}
		entry["children_state"] = state
		walk = append(walk, entry)
	}
	out := map[string]any{"rooms": []map[string]any{}}
	if offset >= len(walk) {
		return out, nil
	}
	end := min(offset+int(limit), len(walk))
	out["rooms"] = walk[offset:end]
	if end < len(walk) {
		out["next_batch"] = hierarchyToken(end, suggested, maxDepth)
	}
	return out, nil
}

// RemoteSpace is a space as a server describes it over federation
// (/hierarchy): the room's summary with its children_state, the summaries
// of the children the asking server may reach, and the children it may not.
type RemoteSpace struct {
	Room         map[string]any   `json:"room"`
	Children     []map[string]any `json:"children"`
	Inaccessible []id.RoomID      `json:"inaccessible_children"`
}

// viaOf is the server a room id names (none for v12 room ids).
func viaOf(r id.RoomID) []string {
	if _, sv, ok := strings.Cut(string(r), ":"); ok && sv != "" {
		return []string{sv}
	}
	return nil
}

// remoteWalk keeps what servers said during one hierarchy walk, so a
// child described in its parent's answer is not asked for again.
type remoteWalk struct {
	a         *DiscoveryAPI
	suggested bool
	known     map[id.RoomID]map[string]any
	gone      map[id.RoomID]bool
	described map[id.RoomID][]spaceChild // spaces already asked for
}

// entry describes a room this server does not hold, for u (nil when no
// server describes it or u may not see it), with its space children.
func (w *remoteWalk) entry(ctx context.Context, room id.RoomID, via []string, u id.UserID) (map[string]any, []spaceChild) {
	if w.gone[room] {
		return nil, nil
	}
	sum := w.known[room]
	children, asked := w.described[room]
	if !asked && (sum == nil || sum["room_type"] == "m.space") {
		// Spaces are asked for themselves: their children are needed too.
		sp, err := w.a.RemoteHierarchy(ctx, via, room, w.suggested)
		if err == nil && sp != nil && sp.Room != nil {
			sum = sp.Room
			children = childrenFromState(sp.Room["children_state"])
			if w.described == nil {
				w.described = map[id.RoomID][]spaceChild{}
			}
			w.described[room], w.known[room] = children, sum
			for _, c := range sp.Children {
				if rid, _ := c["room_id"].(string); rid != "" {
					w.known[id.RoomID(rid)] = c
				}
			}
			for _, g := range sp.Inaccessible {
				w.gone[g] = true
			}
		}
	}
	if sum == nil {
		return nil, nil
	}
	if rid, _ := sum["room_id"].(string); rid != string(room) || !w.a.remoteAccessible(ctx, room, sum, u) {
		return nil, nil
	}
	out := make(map[string]any, len(sum))
	for k, v := range sum {
		if k != "children_state" {
			out[k] = v
		}
	}
	return out, children
}

// childrenFromState reads the children_state of a server's answer as
// space children (valid ones only, in the spec's order).
func childrenFromState(v any) []spaceChild {
	list, _ := v.([]any)
	var out []spaceChild
	for _, it := range list {
		m, _ := it.(map[string]any)
		skey, _ := m["state_key"].(string)
		if m["type"] != "m.space.child" || !strings.HasPrefix(skey, "!") {
			continue
		}
		raw, _ := json.Marshal(m["content"])
		var c struct {
			Via       []string        `json:"via"`
			Order     json.RawMessage `json:"order"`
			Suggested bool            `json:"suggested"`
		}
		if json.Unmarshal(raw, &c) != nil || len(c.Via) == 0 {
			continue
		}
		var order string
		if json.Unmarshal(c.Order, &order) != nil || !validOrder(order) {
			order = ""
		}
		ts, _ := m["origin_server_ts"].(float64)
		out = append(out, spaceChild{roomID: id.RoomID(skey), via: c.Via, order: order, suggested: c.Suggested, ts: int64(ts), stripped: m})
	}
	sortChildren(out)
	return out
}

// remoteAccessible decides whether u may see a room described by another
// server: members, invitees and knockers may, and anyone may see rooms
// that are world readable, public or knockable, or restricted to members
// of a room u is joined to.
func (a *DiscoveryAPI) remoteAccessible(ctx context.Context, room id.RoomID, sum map[string]any, u id.UserID) bool {
	if u != "" {
		if m, err := a.Rooms.MembershipOf(ctx, u, room); err == nil && m != nil {
			switch m.Membership {
			case "join", "invite", "knock":
				return true
			case "ban":
				return false
			}
		}
	}
	if wr, _ := sum["world_readable"].(bool); wr {
		return true
	}
	switch jr, _ := sum["join_rule"].(string); jr {
	case "public", "knock", "knock_restricted":
		return true
	case "restricted":
		allowed, _ := sum["allowed_room_ids"].([]any)
		for _, al := range allowed {
			if rid, _ := al.(string); rid != "" && u != "" {
				if m, err := a.Rooms.Membership(ctx, id.RoomID(rid), u); err == nil && m == "join" {
					return true
				}
			}
		}
	}
	return false
}

// remoteSummary serves /room_summary for a room this server does not hold,
// from the room's entry in a server's /hierarchy answer.
func (a *DiscoveryAPI) remoteSummary(r *httpapi.Request, room id.RoomID, via []string, u id.UserID) (any, error) {
	sp, err := a.RemoteHierarchy(r.Ctx(), via, room, false)
	if err != nil || sp == nil || sp.Room == nil {
		return nil, httpapi.NotFound("room not found")
	}
	if rid, _ := sp.Room["room_id"].(string); rid != string(room) || !a.remoteAccessible(r.Ctx(), room, sp.Room, u) {
		return nil, httpapi.NotFound("room not found")
	}
	out := map[string]any{}
	for k, v := range sp.Room {
		if k != "children_state" {
			out[k] = v
		}
	}
	if r.Caller != nil {
		m := "leave"
		if rec, err := a.Rooms.MembershipOf(r.Ctx(), u, room); err == nil && rec != nil {
			m = rec.Membership
		}
		out["membership"] = m
	}
	return out, nil
}

// serverView is viewRoom for another server: a room is accessible to it
// when anyone may see it, when it is restricted (the asking server checks
// allowed_room_ids for its users), or when the server has a member in it.
func (a *DiscoveryAPI) serverView(ctx context.Context, r id.RoomID, origin string) (*roomView, error) {
	v, err := a.viewRoom(ctx, r, "")
	if err != nil || v == nil || v.accessible {
		return v, err
	}
	if v.summary.JoinRule == "restricted" || v.summary.JoinRule == "knock_restricted" {
		v.accessible = true
		return v, nil
	}
	servers, err := a.Rooms.JoinedServers(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, sv := range servers {
		if sv == origin {
			v.accessible = true
		}
	}
	return v, nil
}

// ServerHierarchy answers another server's /hierarchy request: the room
// and its m.space.child events, and one level of children: those the
// server may reach described, those it may not listed as inaccessible,
// those unknown here left out. 404 when the room is unknown here or the
// server may not see it.
func (a *DiscoveryAPI) ServerHierarchy(ctx context.Context, origin string, room id.RoomID, suggested bool) (*RemoteSpace, error) {
	v, err := a.serverView(ctx, room, origin)
	if err != nil {
		return nil, err
	}
	if v == nil || !v.accessible {
		return nil, httpapi.NotFound("room not found")
	}
	entry, err := a.chunk(ctx, v)
	if err != nil {
		return nil, err
	}
	children, err := a.spaceChildren(ctx, room)
	if err != nil {
		return nil, err
	}
	out := &RemoteSpace{Room: entry, Children: []map[string]any{}, Inaccessible: []id.RoomID{}}
	state := []map[string]any{}
	for _, c := range children {
		state = append(state, c.stripped)
		if suggested && !c.suggested {
			continue
		}
		cv, err := a.serverView(ctx, c.roomID, origin)
		if err != nil {
			return nil, err
		}
		switch {
		case cv == nil:
		case !cv.accessible:
			out.Inaccessible = append(out.Inaccessible, c.roomID)
		default:
			ce, err := a.chunk(ctx, cv)
			if err != nil {
				return nil, err
			}
			out.Children = append(out.Children, ce)
		}
	}
	entry["children_state"] = state
	return out, nil
}
