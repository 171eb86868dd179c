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
			roomID: id.RoomID(*ev.StateKey), order: order, suggested: c.Suggested, ts: ev.OriginServerTS,
			stripped: map[string]any{
				"type": ev.Type, "state_key": *ev.StateKey, "content": ev.Content,
				"sender": ev.Sender, "origin_server_ts": ev.OriginServerTS,
			},
		})
	}
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
	return out, nil
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
	v, err := a.viewRoom(ctx, root, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	if v == nil || !v.accessible {
		return nil, httpapi.Forbidden("you may not see room %s", root)
	}
	type queued struct {
		room  id.RoomID
		depth int64
	}
	queue := []queued{{root, 0}}
	seen := map[id.RoomID]bool{root: true}
	var walk []map[string]any
	for len(queue) > 0 && len(walk) < hierarchyMaxRooms && len(walk) < offset+int(limit)+1 {
		cur := queue[0]
		queue = queue[1:]
		view := v
		if cur.room != root {
			if view, err = a.viewRoom(ctx, cur.room, r.Caller.UserID); err != nil {
				return nil, err
			}
			if view == nil || !view.accessible {
				continue
			}
		}
		entry, err := a.chunk(ctx, view)
		if err != nil {
			return nil, err
		}
		children, err := a.spaceChildren(ctx, cur.room)
		if err != nil {
			return nil, err
		}
		state := []map[string]any{}
		for _, c := range children {
			state = append(state, c.stripped)
			if (suggested && !c.suggested) || seen[c.roomID] || (maxDepth >= 0 && cur.depth >= maxDepth) {
				continue
			}
			seen[c.roomID] = true
			queue = append(queue, queued{c.roomID, cur.depth + 1})
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
