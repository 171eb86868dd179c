package clientapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// errRemoteDirectory answers /publicRooms for another server's directory,
// which this server does not fetch over federation yet.
var errRemoteDirectory = httpapi.Forbidden("this server does not list other servers' room directories")

// aliasParam validates the {roomAlias} path parameter: "#local:server".
func aliasParam(r *httpapi.Request) (id.RoomAlias, error) {
	s := r.PathValue("roomAlias")
	local, server, ok := strings.Cut(strings.TrimPrefix(s, "#"), ":")
	if !strings.HasPrefix(s, "#") || !ok || local == "" || server == "" || len(s) > 255 || strings.ContainsAny(s, " \t\r\n\x00") {
		return "", httpapi.InvalidParam("invalid room alias %q", s)
	}
	return id.RoomAlias(s), nil
}

func (a *RoomsAPI) isLocalAlias(al id.RoomAlias) bool {
	return strings.HasSuffix(string(al), ":"+a.ServerName)
}

// aliasRoomLevel reports whether u is joined to the room and may send
// m.room.canonical_alias there: who may manage its aliases and its
// directory entry (as Synapse decides it).
func (a *RoomsAPI) mayManageListing(ctx context.Context, room id.RoomID, u id.UserID) (bool, error) {
	m, err := a.Rooms.Membership(ctx, room, u)
	if err != nil || m != "join" {
		return false, err
	}
	pl, err := a.Rooms.PowerLevels(ctx, room)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(u) >= pl.EventLevel("m.room.canonical_alias", true), nil
}

// SetAlias serves PUT /directory/room/{roomAlias}.
func (a *RoomsAPI) SetAlias(r *httpapi.Request) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		RoomID *string `json:"room_id"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.RoomID == nil {
		return nil, httpapi.MissingParam("room_id is required")
	}
	if !validRoomID(*body.RoomID) {
		return nil, httpapi.InvalidParam("invalid room_id %q", *body.RoomID)
	}
	if err := a.Rooms.ValidAlias(al); err != nil {
		return nil, err
	}
	if err := a.AppServices.exclusiveAlias(al, r.Caller); err != nil {
		return nil, err
	}
	room, ctx := id.RoomID(*body.RoomID), r.Ctx()
	if _, err := a.Rooms.RoomVersion(ctx, room); err != nil {
		return nil, httpapi.NotFound("room %s not found", room)
	}
	if m, err := a.Rooms.Membership(ctx, room, r.Caller.UserID); err != nil {
		return nil, err
	} else if m != "join" {
		return nil, httpapi.Forbidden("you must be in the room to create an alias for it")
	}
	if err := a.Rooms.CreateAlias(ctx, al, room, r.Caller.UserID); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// GetAlias serves GET /directory/room/{roomAlias}.
func (a *RoomsAPI) GetAlias(r *httpapi.Request) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	if !a.isLocalAlias(al) {
		if a.Rooms.Remote == nil {
			return nil, httpapi.NotFound("room alias %s is on another server, which this server cannot ask", al)
		}
		room, servers, err := a.Rooms.Remote.QueryAlias(r.Ctx(), al)
		if err != nil {
			return nil, err
		}
		return map[string]any{"room_id": room, "servers": servers}, nil
	}
	room, err := a.Rooms.ResolveAlias(r.Ctx(), al)
	if err != nil {
		return nil, err
	}
	servers, err := a.Rooms.RoomServers(r.Ctx(), room)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": room, "servers": servers}, nil
}

// DeleteAlias serves DELETE /directory/room/{roomAlias}: the alias's creator
// may delete it, and so may a member with the power to send
// m.room.canonical_alias in its room. If the room's canonical alias event
// names the alias, it is updated too (when the caller may).
func (a *RoomsAPI) DeleteAlias(r *httpapi.Request) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	if !a.isLocalAlias(al) {
		return nil, httpapi.InvalidParam("room alias %s does not belong to this server", al)
	}
	ctx, me := r.Ctx(), r.Caller.UserID
	ai, err := a.Rooms.LookupAlias(ctx, al)
	if err != nil {
		return nil, err
	}
	mayManage, err := a.mayManageListing(ctx, ai.RoomID, me)
	if err != nil {
		return nil, err
	}
	if ai.Creator != me && !mayManage {
		return nil, httpapi.Forbidden("you may not delete this alias")
	}
	if err := a.Rooms.RemoveAlias(ctx, ai); err != nil {
		return nil, err
	}
	if mayManage {
		a.dropFromCanonicalAlias(ctx, ai.RoomID, me, al)
	}
	return httpapi.Empty{}, nil
}

// dropFromCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias, if it is there (best effort: the alias is gone
// either way).
func (a *RoomsAPI) dropFromCanonicalAlias(ctx context.Context, room id.RoomID, me id.UserID, al id.RoomAlias) {
	ev, err := a.Rooms.CurrentStateEvent(ctx, room, "m.room.canonical_alias", "")
	if err != nil || ev == nil {
		return
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(ev.Content, &c) != nil {
		return
	}
	changed := false
	var main id.RoomAlias
	if json.Unmarshal(c["alias"], &main) == nil && main == al {
		delete(c, "alias")
		changed = true
	}
	var alt []id.RoomAlias
	if json.Unmarshal(c["alt_aliases"], &alt) == nil && slices.Contains(alt, al) {
		alt = slices.DeleteFunc(alt, func(x id.RoomAlias) bool { return x == al })
		c["alt_aliases"], _ = json.Marshal(alt)
		changed = true
	}
	if !changed {
		return
	}
	b, _ := json.Marshal(c)
	empty := ""
	_, _ = a.Rooms.Send(ctx, room, rooms.NewEvent{Type: "m.room.canonical_alias", StateKey: &empty, Sender: me, Content: b})
}

// worldReadable reports whether the room's history is world-readable now.
func (a *RoomsAPI) worldReadable(ctx context.Context, room id.RoomID) bool {
	hv, err := a.Rooms.CurrentStateEvent(ctx, room, "m.room.history_visibility", "")
	if err != nil || hv == nil {
		return false
	}
	var c struct {
		V string `json:"history_visibility"`
	}
	return json.Unmarshal(hv.Content, &c) == nil && c.V == "world_readable"
}

// RoomAliases serves GET /rooms/{roomId}/aliases: for members, or anyone
// when the room is world-readable.
func (a *RoomsAPI) RoomAliases(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	m, err := a.Rooms.Membership(ctx, room, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	if m != "join" && !a.worldReadable(ctx, room) {
		return nil, httpapi.Forbidden("you are not a member of this room")
	}
	list, err := a.Rooms.RoomAliases(ctx, room)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": list}, nil
}

// GetDirectoryVisibility serves GET /directory/list/room/{roomId}.
func (a *RoomsAPI) GetDirectoryVisibility(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.Rooms.RoomVersion(r.Ctx(), room); err != nil {
		return nil, httpapi.NotFound("room not found")
	}
	public, err := a.Rooms.DirectoryVisibility(r.Ctx(), room)
	if err != nil {
		return nil, err
	}
	v := "private"
	if public {
		v = "public"
	}
	return map[string]string{"visibility": v}, nil
}

// SetDirectoryVisibility serves PUT /directory/list/room/{roomId}: members
// with the power to send m.room.canonical_alias may publish or hide a room.
func (a *RoomsAPI) SetDirectoryVisibility(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	public := true
	if body.Visibility != nil {
		switch *body.Visibility {
		case "public":
		case "private":
			public = false
		default:
			return nil, httpapi.InvalidParam("visibility must be public or private")
		}
	}
	ctx := r.Ctx()
	if _, err := a.Rooms.RoomVersion(ctx, room); err != nil {
		return nil, httpapi.NotFound("room not found")
	}
	ok, err := a.mayManageListing(ctx, room, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.Forbidden("you need the power to change the room's canonical alias to change its directory listing")
	}
	if err := a.Rooms.SetDirectoryVisibility(ctx, room, public); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// PublicRoomsQuery is a /publicRooms request (rooms.PublicRoomsQuery).
type PublicRoomsQuery = rooms.PublicRoomsQuery

// maxPublicRooms caps one page of the directory.
const maxPublicRooms = 500

// PublicRoomsGet serves GET /publicRooms.
func (a *RoomsAPI) PublicRoomsGet(r *httpapi.Request) (any, error) {
	q, err := rooms.PublicRoomsQueryOf(r)
	if err != nil {
		return nil, err
	}
	return a.publicRooms(r, q)
}

// PublicRoomsPost serves POST /publicRooms.
func (a *RoomsAPI) PublicRoomsPost(r *httpapi.Request) (any, error) {
	var q PublicRoomsQuery
	if err := r.DecodeJSON(&q); err != nil {
		return nil, err
	}
	if q.Limit != nil && *q.Limit < 0 {
		return nil, httpapi.InvalidParam("limit must not be negative")
	}
	return a.publicRooms(r, q)
}

// Directory pagination tokens: "n" or "p" and the base64url of a room id,
// for the rooms after (n) or before (p) that room in room-id order.
func directoryToken(dir byte, room id.RoomID) string {
	return string(dir) + base64.RawURLEncoding.EncodeToString([]byte(room))
}

func parseDirectoryToken(s string) (byte, id.RoomID, error) {
	if len(s) < 2 || (s[0] != 'n' && s[0] != 'p') {
		return 0, "", httpapi.InvalidParam("invalid pagination token %q", s)
	}
	b, err := base64.RawURLEncoding.DecodeString(s[1:])
	if err != nil || !validRoomID(string(b)) {
		return 0, "", httpapi.InvalidParam("invalid pagination token %q", s)
	}
	return s[0], id.RoomID(b), nil
}

func (a *RoomsAPI) publicRooms(r *httpapi.Request, q PublicRoomsQuery) (any, error) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.ServerName {
		if strings.ContainsAny(server, "/ \x00@#!") {
			return nil, httpapi.InvalidParam("invalid server name %q", server)
		}
		if a.RemotePublicRooms == nil {
			return nil, errRemoteDirectory
		}
		return a.RemotePublicRooms(r.Ctx(), server, q)
	}
	return a.ListPublicRooms(r.Ctx(), q)
}

// ListPublicRooms answers a directory query from this server's directory
// (for our clients and, through federation, for other servers).
func (a *RoomsAPI) ListPublicRooms(ctx context.Context, q PublicRoomsQuery) (any, error) {
	if q.IncludeAllNetworks && q.ThirdPartyInstance != "" {
		return nil, httpapi.InvalidParam("third_party_instance_id can only be used when include_all_networks is false")
	}
	dir, mark := byte('n'), id.RoomID("")
	if q.Since != "" {
		var err error
		if dir, mark, err = parseDirectoryToken(q.Since); err != nil {
			return nil, err
		}
	}
	limit := maxPublicRooms
	if q.Limit != nil && *q.Limit > 0 && *q.Limit < maxPublicRooms {
		limit = int(*q.Limit)
	}
	resp := map[string]any{"chunk": []*rooms.PublicRoom{}}
	var all []id.RoomID
	var err error
	switch {
	case q.ThirdPartyInstance != "":
		// Only the rooms an application service published for that network.
		all, err = a.Rooms.NetworkRooms(ctx, q.ThirdPartyInstance)
	case q.IncludeAllNetworks:
		all, err = a.Rooms.PublishedRooms(ctx)
		if err == nil {
			var nets []id.RoomID
			if nets, err = a.Rooms.NetworkRooms(ctx, ""); err == nil {
				all = append(all, nets...)
				slices.Sort(all)
				all = slices.Compact(all)
			}
		}
	default:
		all, err = a.Rooms.PublishedRooms(ctx)
	}
	if err != nil {
		return nil, err
	}
	resp["total_room_count_estimate"] = len(all)
	// Walk from the token in its direction, summarising rooms until the page
	// is full and one more match shows whether another page exists.
	i := sort.Search(len(all), func(i int) bool { return all[i] > mark })
	step := 1
	if dir == 'p' {
		i = sort.Search(len(all), func(i int) bool { return all[i] >= mark }) - 1
		step = -1
	}
	var term string
	var types []*string
	if q.Filter != nil {
		term, types = strings.ToLower(strings.TrimSpace(q.Filter.GenericSearchTerm)), q.Filter.RoomTypes
	}
	var chunk []*rooms.PublicRoom
	more := false
	for ; i >= 0 && i < len(all); i += step {
		pr, err := a.Rooms.RoomSummary(ctx, all[i])
		if errors.Is(err, rooms.ErrNoRoom) {
			continue
		} else if err != nil {
			return nil, err
		}
		if !matchPublicRoom(pr, term, types) {
			continue
		}
		if len(chunk) == limit {
			more = true
			break
		}
		chunk = append(chunk, pr)
	}
	if dir == 'p' {
		slices.Reverse(chunk)
	}
	if len(chunk) > 0 {
		resp["chunk"] = chunk
		first, last := chunk[0].RoomID, chunk[len(chunk)-1].RoomID
		if dir == 'n' && more || dir == 'p' {
			resp["next_batch"] = directoryToken('n', last)
		}
		if dir == 'p' && more || dir == 'n' && q.Since != "" {
			resp["prev_batch"] = directoryToken('p', first)
		}
	}
	return resp, nil
}

// matchPublicRoom applies a directory filter: the search term (any case)
// within the name, topic or canonical alias, and the room types (a nil
// entry standing for rooms without a type).
func matchPublicRoom(pr *rooms.PublicRoom, term string, types []*string) bool {
	if term != "" && !strings.Contains(strings.ToLower(pr.Name), term) &&
		!strings.Contains(strings.ToLower(pr.Topic), term) &&
		!strings.Contains(strings.ToLower(string(pr.CanonicalAlias)), term) {
		return false
	}
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == nil && pr.RoomType == "" || t != nil && *t == pr.RoomType {
			return true
		}
	}
	return false
}
