package clientapi

import (
	"context"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// RoomsAPI serves the room endpoints: creation, membership, state, sending
// and reading events.
type RoomsAPI struct {
	ServerName string
	Rooms      *rooms.Service
	// Ignored, if set, returns the users a user ignores (m.ignored_user_list):
	// their non-state events are left out of /messages.
	Ignored func(ctx context.Context, u id.UserID) (map[id.UserID]bool, error)
	// Backfill, if set, fetches up to limit events older than the start of
	// our copy of a room from other servers (federation); it returns how
	// many it stored below the earliest one.
	Backfill func(ctx context.Context, r id.RoomID, limit int) (int, error)
	// RemotePublicRooms, if set, asks another server for its room
	// directory (/publicRooms?server=).
	RemotePublicRooms func(ctx context.Context, server string, q PublicRoomsQuery) (any, error)
	// RemoteTimestamp, if set, asks the room's other servers for the event
	// closest to ts (/timestamp_to_event in a room known here only in part).
	RemoteTimestamp func(ctx context.Context, r id.RoomID, ts int64, dir byte) (id.EventID, int64, bool, error)
	// AppServices enforces application services' exclusive alias
	// namespaces (nil: none configured).
	AppServices *AppServiceAPI
}

// ignoredBy returns the users u ignores (none without an Ignored hook).
func (a *RoomsAPI) ignoredBy(ctx context.Context, u id.UserID) (map[id.UserID]bool, error) {
	if a.Ignored == nil {
		return nil, nil
	}
	return a.Ignored(ctx, u)
}

// roomIDParam validates the {roomId} path parameter.
func roomIDParam(r *httpapi.Request) (id.RoomID, error) {
	s := r.PathValue("roomId")
	if !validRoomID(s) {
		return "", httpapi.InvalidParam("invalid room ID %q", s)
	}
	return id.RoomID(s), nil
}

func validRoomID(s string) bool {
	if len(s) < 2 || len(s) > 255 || s[0] != '!' {
		return false
	}
	return !strings.ContainsAny(s, " \x00")
}

func validUserID(u id.UserID) bool {
	_, _, err := u.ParseAndValidateRelaxed()
	return err == nil && len(u) <= 255
}

// member checks that the caller is joined to the room (M_FORBIDDEN otherwise).
func (a *RoomsAPI) requireJoined(ctx context.Context, room id.RoomID, u id.UserID) error {
	m, err := a.Rooms.Membership(ctx, room, u)
	if err != nil {
		return err
	}
	if m != "join" {
		if _, err := a.Rooms.RoomVersion(ctx, room); err != nil {
			return httpapi.Forbidden("you are not in this room")
		}
		return httpapi.Forbidden("you are not joined to this room")
	}
	return nil
}

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []id.UserID                `json:"invite"`
	Invite3PID                []json.RawMessage          `json:"invite_3pid"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []rooms.StateEvent         `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

// CreateRoom serves POST /createRoom.
func (a *RoomsAPI) CreateRoom(r *httpapi.Request) (any, error) {
	var req createRoomRequest
	if err := r.DecodeOptionalJSON(&req); err != nil {
		return nil, err
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		return nil, httpapi.InvalidParam("visibility must be public or private")
	}
	switch req.Preset {
	case "":
		req.Preset = "private_chat"
		if req.Visibility == "public" {
			req.Preset = "public_chat"
		}
	case "private_chat", "public_chat", "trusted_private_chat":
	default:
		return nil, httpapi.InvalidParam("unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if !validUserID(u) {
			return nil, httpapi.InvalidParam("invalid user ID %q in invite", u)
		}
	}
	if len(req.Invite3PID) > 0 {
		return nil, httpapi.ThreepidDenied("third-party invites are not supported on this server")
	}
	for _, st := range req.InitialState {
		if st.Type == "" || len(st.Content) == 0 || st.Content[0] != '{' {
			return nil, httpapi.BadJSON("initial_state events need a type and an object content")
		}
		if st.Type == "m.room.create" {
			return nil, httpapi.BadJSON("initial_state must not contain m.room.create")
		}
	}
	if _, ok := req.CreationContent["room_version"]; ok {
		delete(req.CreationContent, "room_version")
	}
	cr := rooms.CreateRequest{Creator: r.Caller.UserID, Version: id.RoomVersion(req.RoomVersion), Preset: req.Preset,
		Name: req.Name, Topic: req.Topic, Invite: req.Invite, IsDirect: req.IsDirect,
		CreationContent: req.CreationContent, InitialState: req.InitialState, PowerLevelOverride: req.PowerLevelContentOverride}
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \x00") {
			return nil, httpapi.InvalidParam("room_alias_name must be a bare localpart")
		}
		cr.Alias = id.RoomAlias("#" + req.RoomAliasName + ":" + a.ServerName)
		if err := a.Rooms.ValidAlias(cr.Alias); err != nil {
			return nil, err
		}
		if err := a.AppServices.exclusiveAlias(cr.Alias, r.Caller); err != nil {
			return nil, err
		}
	}
	if a.Rooms.Profile != nil {
		name, avatar := a.Rooms.Profile(r.Ctx(), r.Caller.UserID)
		cr.CreatorProfile = map[string]string{"displayname": name, "avatar_url": avatar}
	}
	room, err := a.Rooms.CreateRoom(r.Ctx(), cr)
	if err != nil {
		return nil, err
	}
	if req.Visibility == "public" {
		if err := a.Rooms.SetDirectoryVisibility(r.Ctx(), room, true); err != nil {
			return nil, err
		}
	}
	return map[string]id.RoomID{"room_id": room}, nil
}

// resolveRoom turns a room id or a local alias into a room id.
func (a *RoomsAPI) resolveRoom(ctx context.Context, s string) (id.RoomID, error) {
	switch {
	case strings.HasPrefix(s, "!") && validRoomID(s):
		return id.RoomID(s), nil
	case strings.HasPrefix(s, "#"):
		return a.Rooms.ResolveAlias(ctx, id.RoomAlias(s))
	}
	return "", httpapi.InvalidParam("%q is neither a room ID nor a room alias", s)
}

type reasonBody struct {
	Reason string    `json:"reason"`
	UserID id.UserID `json:"user_id"`
}

// JoinByIDOrAlias serves POST /join/{roomIdOrAlias}. A room on another
// server is joined through the servers named by via (or the deprecated
// server_name), or those the alias's server names.
func (a *RoomsAPI) JoinByIDOrAlias(r *httpapi.Request) (any, error) {
	s := r.PathValue("roomIdOrAlias")
	servers := append(r.URL.Query()["via"], r.URL.Query()["server_name"]...)
	if strings.HasPrefix(s, "#") {
		room, more, err := a.Rooms.ResolveAliasServers(r.Ctx(), id.RoomAlias(s))
		if err != nil {
			return nil, err
		}
		return a.join(r, room, append(servers, more...))
	}
	room, err := a.resolveRoom(r.Ctx(), s)
	if err != nil {
		return nil, err
	}
	return a.join(r, room, servers)
}

// Join serves POST /rooms/{roomId}/join.
func (a *RoomsAPI) Join(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return a.join(r, room, nil)
}

func (a *RoomsAPI) join(r *httpapi.Request, room id.RoomID, servers []string) (any, error) {
	var body struct {
		Reason string          `json:"reason"`
		TPI    json.RawMessage `json:"third_party_signed"`
	}
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	if len(body.TPI) > 0 && string(body.TPI) != "null" {
		return nil, httpapi.Forbidden("third-party invites are not supported on this server")
	}
	if _, err := a.Rooms.JoinVia(r.Ctx(), room, r.Caller.UserID, body.Reason, servers); err != nil {
		return nil, err
	}
	return map[string]id.RoomID{"room_id": room}, nil
}

// Knock serves POST /knock/{roomIdOrAlias}. A room on another server is
// knocked on through the servers named by via (or the deprecated
// server_name), or those the alias's server names.
func (a *RoomsAPI) Knock(r *httpapi.Request) (any, error) {
	s := r.PathValue("roomIdOrAlias")
	servers := append(r.URL.Query()["via"], r.URL.Query()["server_name"]...)
	var room id.RoomID
	if strings.HasPrefix(s, "#") {
		rid, more, err := a.Rooms.ResolveAliasServers(r.Ctx(), id.RoomAlias(s))
		if err != nil {
			return nil, err
		}
		room, servers = rid, append(servers, more...)
	} else {
		rid, err := a.resolveRoom(r.Ctx(), s)
		if err != nil {
			return nil, err
		}
		room = rid
	}
	var body reasonBody
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	if err := a.Rooms.KnockVia(r.Ctx(), room, r.Caller.UserID, body.Reason, servers); err != nil {
		return nil, err
	}
	return map[string]id.RoomID{"room_id": room}, nil
}

// membershipAction serves invite, kick, ban and unban, which share a body.
func (a *RoomsAPI) membershipAction(action string) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		room, err := roomIDParam(r)
		if err != nil {
			return nil, err
		}
		var body struct {
			reasonBody
			IsDirect bool   `json:"is_direct"`
			IDServer string `json:"id_server"`
		}
		if err := r.DecodeJSON(&body); err != nil {
			return nil, err
		}
		if body.UserID == "" {
			if action == "invite" && body.IDServer != "" {
				return nil, httpapi.ThreepidDenied("third-party invites are not supported on this server")
			}
			return nil, httpapi.MissingParam("user_id is required")
		}
		if !validUserID(body.UserID) {
			return nil, httpapi.InvalidParam("invalid user_id %q", body.UserID)
		}
		ctx, me := r.Ctx(), r.Caller.UserID
		if err := a.requireJoined(ctx, room, me); err != nil {
			return nil, err
		}
		switch action {
		case "invite":
			err = a.Rooms.Invite(ctx, room, me, body.UserID, body.Reason, body.IsDirect)
		case "kick":
			err = a.Rooms.Kick(ctx, room, me, body.UserID, body.Reason)
		case "ban":
			err = a.Rooms.Ban(ctx, room, me, body.UserID, body.Reason)
		case "unban":
			err = a.Rooms.Unban(ctx, room, me, body.UserID, body.Reason)
		}
		if err != nil {
			return nil, err
		}
		return httpapi.Empty{}, nil
	}
}

// Invite, Kick, Ban and Unban serve POST /rooms/{roomId}/<action>.
func (a *RoomsAPI) Invite(r *httpapi.Request) (any, error) { return a.membershipAction("invite")(r) }

// Kick serves POST /rooms/{roomId}/kick.
func (a *RoomsAPI) Kick(r *httpapi.Request) (any, error) { return a.membershipAction("kick")(r) }

// Ban serves POST /rooms/{roomId}/ban.
func (a *RoomsAPI) Ban(r *httpapi.Request) (any, error) { return a.membershipAction("ban")(r) }

// Unban serves POST /rooms/{roomId}/unban.
func (a *RoomsAPI) Unban(r *httpapi.Request) (any, error) { return a.membershipAction("unban")(r) }

// Leave serves POST /rooms/{roomId}/leave.
func (a *RoomsAPI) Leave(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body reasonBody
	if err := r.DecodeOptionalJSON(&body); err != nil {
		return nil, err
	}
	if err := a.Rooms.Leave(r.Ctx(), room, r.Caller.UserID, body.Reason); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// Forget serves POST /rooms/{roomId}/forget.
func (a *RoomsAPI) Forget(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if err := a.Rooms.Forget(r.Ctx(), room, r.Caller.UserID); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// JoinedRooms serves GET /joined_rooms.
func (a *RoomsAPI) JoinedRooms(r *httpapi.Request) (any, error) {
	ms, err := a.Rooms.UserRooms(r.Ctx(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	out := []id.RoomID{}
	for _, m := range ms {
		if m.Membership == "join" {
			out = append(out, m.RoomID)
		}
	}
	return map[string]any{"joined_rooms": out}, nil
}

// JoinedMembers serves GET /rooms/{roomId}/joined_members.
func (a *RoomsAPI) JoinedMembers(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if err := a.requireJoined(r.Ctx(), room, r.Caller.UserID); err != nil {
		return nil, err
	}
	members, err := a.Rooms.CurrentState(r.Ctx(), room, "m.room.member")
	if err != nil {
		return nil, err
	}
	joined := map[id.UserID]map[string]any{}
	for _, m := range members {
		if m.Membership() != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(m.Content, &c)
		joined[id.UserID(*m.StateKey)] = map[string]any{"display_name": c.DisplayName, "avatar_url": c.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

// Members serves GET /rooms/{roomId}/members (membership, not_membership, at).
func (a *RoomsAPI) Members(r *httpapi.Request) (any, error) {
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	mine, err := a.Rooms.Membership(ctx, room, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	if mine != "join" && mine != "leave" && mine != "ban" {
		return nil, httpapi.Forbidden("you are not in this room")
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	for _, m := range []string{want, notWant} {
		if m != "" && m != "join" && m != "invite" && m != "knock" && m != "leave" && m != "ban" {
			return nil, httpapi.InvalidParam("unknown membership %q", m)
		}
	}
	var members []*rooms.Event
	if at := q.Get("at"); at != "" || mine != "join" {
		// State at a point in the timeline: the `at` token, or the moment
		// the caller left.
		ev, err := a.eventAtToken(ctx, room, at, r.Caller.UserID, mine)
		if err != nil {
			return nil, err
		}
		ids, err := a.Rooms.StateIDsAt(ctx, ev, true)
		if err != nil {
			return nil, err
		}
		var mids []id.EventID
		for k, v := range ids {
			if k.Type == "m.room.member" {
				mids = append(mids, v)
			}
		}
		if members, err = a.Rooms.EventsByID(ctx, mids); err != nil {
			return nil, err
		}
	} else if members, err = a.Rooms.CurrentState(ctx, room, "m.room.member"); err != nil {
		return nil, err
	}
	var keep []*rooms.Event
	for _, m := range members {
		ms := m.Membership()
		if (want != "" && ms != want) || (notWant != "" && ms == notWant) {
			continue
		}
		keep = append(keep, m)
	}
	chunk, err := a.Rooms.Format(ctx, keep, viewer(r))
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": chunk}, nil
}

// eventAtToken finds the last event at a pagination token, or the caller's
// leave event if they are no longer joined.
func (a *RoomsAPI) eventAtToken(ctx context.Context, room id.RoomID, at string, u id.UserID, mine string) (*rooms.Event, error) {
	if mine != "join" {
		me, err := a.Rooms.CurrentStateEvent(ctx, room, "m.room.member", string(u))
		if err != nil || me == nil {
			return nil, httpapi.Forbidden("you are not in this room")
		}
		if at == "" {
			return me, nil
		}
	}
	tok, err := parseToken(at)
	if err != nil {
		return nil, err
	}
	page, err := a.Rooms.Timeline(ctx, room, rooms.Backward, tok+1, 0, 1)
	if err != nil {
		return nil, err
	}
	if len(page.Events) == 0 {
		return nil, httpapi.NotFound("no event at that token")
	}
	return page.Events[0], nil
}

func viewer(r *httpapi.Request) rooms.Viewer {
	return rooms.Viewer{UserID: r.Caller.UserID, Device: r.Caller.DeviceID}
}
