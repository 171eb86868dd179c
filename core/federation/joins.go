package federation

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Joins, leaves and invites between servers: the resident side (make_join,
// send_join, make_leave, send_leave, invite) and the joining side
// (rooms.Remote: JoinRemote, LeaveRemote, SignInvite, QueryAlias).

func incompatibleVersion(rv id.RoomVersion) error {
	return (&httpapi.Error{Status: http.StatusBadRequest, Code: "M_INCOMPATIBLE_ROOM_VERSION",
		Message: "your server does not support this room's version " + string(rv)}).With("room_version", rv)
}

// membershipTemplate serves make_join and make_leave.
func (s *Service) membershipTemplate(r *httpapi.Request, membership string) (any, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	user := id.UserID(r.PathValue("userId"))
	if serverOf(user) != r.Origin {
		return nil, httpapi.Forbidden("user %s does not belong to server %s", user, r.Origin)
	}
	if ok, err := s.Rooms.HasRoom(ctx, room); err != nil {
		return nil, err
	} else if !ok {
		return nil, httpapi.NotFound("unknown room")
	}
	if err := s.checkACL(ctx, room, r.Origin); err != nil {
		return nil, err
	}
	rv, err := s.Rooms.RoomVersion(ctx, room)
	if err != nil {
		return nil, err
	}
	if membership == "join" || membership == "knock" {
		vers := r.URL.Query()["ver"]
		if len(vers) == 0 {
			if membership == "knock" {
				return nil, httpapi.MissingParam("ver is required")
			}
			vers = []string{"1"}
		}
		if !slices.Contains(vers, string(rv)) {
			return nil, incompatibleVersion(rv)
		}
		if membership == "knock" && !rv.Knocks() {
			return nil, httpapi.Forbidden("room version %s does not allow knocking", rv)
		}
	}
	content := map[string]any{"membership": membership}
	if membership == "join" {
		via, err := s.restrictedVia(ctx, room, user)
		if err != nil {
			return nil, err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	c, _ := json.Marshal(content)
	k := string(user)
	t, err := s.Rooms.BuildTemplate(ctx, room, rooms.NewEvent{Type: "m.room.member", StateKey: &k, Sender: user, Content: c})
	if err != nil {
		return nil, err
	}
	if content["join_authorised_via_users_server"] == nil {
		pre := t.Auth
		if rv.RoomIDIsCreateEventID() {
			pre = slices.DeleteFunc(slices.Clone(pre), func(p *pdu.PDU) bool { return p.Type == "m.room.create" })
		}
		if pre == nil {
			pre = []*pdu.PDU{}
		}
		if err := eventauth.Authorize(rv, t.PDU, pre, s.eventGetter(ctx, nil), s.keyFunc(ctx)); err != nil {
			return nil, httpapi.Forbidden("%s", authMessage(err))
		}
	}
	raw, err := rooms.EncodePDU(t.PDU) // v1/v2: event id and reference pairs
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_version": rv, "event": json.RawMessage(raw)}, nil
}

// restrictedVia returns the local user who vouches for a join under
// restricted join rules ("" when the rule is not restricted or the user is
// already invited or joined); 403 when the user qualifies through no
// allowed room.
func (s *Service) restrictedVia(ctx context.Context, room id.RoomID, u id.UserID) (id.UserID, error) {
	jr, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.join_rules", "")
	if err != nil || jr == nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
	}
	_ = json.Unmarshal(jr.Content, &c)
	if c.JoinRule != "restricted" && c.JoinRule != "knock_restricted" {
		return "", nil
	}
	if m, err := s.Rooms.Membership(ctx, room, u); err != nil {
		return "", err
	} else if m == "join" || m == "invite" {
		return "", nil
	}
	via, err := s.Rooms.RestrictedJoinAuthoriser(ctx, room, u)
	if err != nil {
		return "", err
	}
	if via == "" {
		if c.JoinRule == "knock_restricted" {
			return "", nil // may still knock; the join itself will fail auth
		}
		return "", httpapi.Forbidden("%s is not a member of any room that grants access", u)
	}
	return via, nil
}

// MakeJoin serves GET /_matrix/federation/v1/make_join/{roomId}/{userId}.
func (s *Service) MakeJoin(r *httpapi.Request) (any, error) { return s.membershipTemplate(r, "join") }

// MakeLeave serves GET /_matrix/federation/v1/make_leave/{roomId}/{userId}.
func (s *Service) MakeLeave(r *httpapi.Request) (any, error) { return s.membershipTemplate(r, "leave") }

// receiveMembership checks and persists a join or leave sent by the
// joining server itself (send_join, send_leave), and relays it to the
// other servers of the room.
func (s *Service) receiveMembership(r *httpapi.Request, membership string) (*rooms.Event, *pdu.PDU, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	eid := id.EventID(r.PathValue("eventId"))
	body, err := r.Body()
	if err != nil {
		return nil, nil, err
	}
	rv, err := s.Rooms.RoomVersion(ctx, room)
	if err != nil {
		return nil, nil, err
	}
	if err := s.checkACL(ctx, room, r.Origin); err != nil {
		return nil, nil, err
	}
	p, got, err := parseEvent(rv, body)
	if err != nil {
		return nil, nil, httpapi.BadJSON("%v", err)
	}
	switch {
	case got != eid:
		return nil, nil, httpapi.BadJSON("event id %s does not match the event (%s)", eid, got)
	case p.RoomID != room:
		return nil, nil, httpapi.BadJSON("event is for another room")
	case p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey != string(p.Sender):
		return nil, nil, httpapi.BadJSON("not a membership event of its sender")
	case serverOf(p.Sender) != r.Origin:
		return nil, nil, httpapi.Forbidden("sender %s does not belong to %s", p.Sender, r.Origin)
	}
	var c struct {
		Membership string    `json:"membership"`
		Via        id.UserID `json:"join_authorised_via_users_server"`
	}
	_ = json.Unmarshal(p.Content, &c)
	if c.Membership != membership {
		return nil, nil, httpapi.BadJSON("membership must be %s", membership)
	}
	if p, err = s.checkEvent(ctx, rv, p); err != nil {
		return nil, nil, httpapi.Forbidden("%v", err)
	}
	if membership == "join" && c.Via != "" && s.isLocal(c.Via) {
		// Restricted join vouched for by one of our users: countersign.
		if _, err := rooms.SignPDU(rv, p, s.ServerName, s.Key); err != nil {
			return nil, nil, err
		}
	}
	if err := s.receivePDU(ctx, r.Origin, rv, p, eid, true); err != nil {
		var rej *rejectedError
		if errors.As(err, &rej) {
			return nil, nil, httpapi.Forbidden("%s", rej.reason)
		}
		return nil, nil, err
	}
	ev, err := s.Rooms.Event(ctx, eid)
	if err != nil {
		return nil, nil, err
	}
	if ev.Rejected || ev.SoftFailed {
		return nil, nil, httpapi.Forbidden("the %s is not allowed by the room's current state", membership)
	}
	if err := s.Sender.Enqueue(ctx, ev, r.Origin); err != nil {
		s.Log.Error("queueing a relayed membership", "event_id", eid, "err", err)
	}
	return ev, p, nil
}

// SendJoin serves PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}.
func (s *Service) SendJoin(r *httpapi.Request) (any, error) {
	ev, _, err := s.receiveMembership(r, "join")
	if err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	st, err := s.Rooms.StateBefore(ctx, ev)
	if err != nil {
		return nil, err
	}
	ids := make([]id.EventID, 0, len(st))
	for _, e := range st {
		ids = append(ids, e)
	}
	state, err := s.Rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	chain, err := s.Rooms.AuthChain(ctx, append(slices.Clone(state), ev))
	if err != nil {
		return nil, err
	}
	servers, err := s.Rooms.JoinedServers(ctx, ev.RoomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"origin":          s.ServerName,
		"event":           json.RawMessage(ev.PDU),
		"state":           rawPDUs(state),
		"auth_chain":      rawPDUs(chain),
		"members_omitted": false,
		"servers_in_room": servers,
	}, nil
}

// SendLeave serves PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}.
func (s *Service) SendLeave(r *httpapi.Request) (any, error) {
	if _, _, err := s.receiveMembership(r, "leave"); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// supportedVersion reports whether this server handles a room version.
func supportedVersion(rv id.RoomVersion) bool { return slices.Contains(rooms.SupportedVersions, rv) }

// Invite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: a
// remote user invites one of ours. We countersign, and when no local user
// is in the room, record the invite so the user sees it.
func (s *Service) Invite(r *httpapi.Request) (any, error) {
	var body struct {
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
		RoomVersion     id.RoomVersion    `json:"room_version"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.RoomVersion == "" {
		return nil, httpapi.MissingParam("room_version is required")
	}
	if !supportedVersion(body.RoomVersion) {
		return nil, incompatibleVersion(body.RoomVersion)
	}
	signed, err := s.acceptInvite(r, body.RoomVersion, body.Event, body.InviteRoomState)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": signed}, nil
}

// acceptInvite checks an invite of one of our users sent by the inviting
// server (v1 and v2), countersigns it, and when no local user is in the
// room records it so the invitee sees it. It returns the signed event.
func (s *Service) acceptInvite(r *httpapi.Request, rv id.RoomVersion, evRaw json.RawMessage, inviteState []json.RawMessage) (json.RawMessage, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	eid := id.EventID(r.PathValue("eventId"))
	p, got, err := parseEvent(rv, evRaw)
	if err != nil {
		return nil, httpapi.BadJSON("%v", err)
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(p.Content, &c)
	switch {
	case got != eid:
		return nil, httpapi.BadJSON("event id %s does not match the event (%s)", eid, got)
	case p.RoomID != room:
		return nil, httpapi.BadJSON("event is for another room")
	case p.Type != "m.room.member" || p.StateKey == nil || c.Membership != "invite":
		return nil, httpapi.BadJSON("not an invite")
	case !s.isLocal(id.UserID(*p.StateKey)):
		return nil, httpapi.BadJSON("the invited user is not on this server")
	case serverOf(p.Sender) != r.Origin:
		return nil, httpapi.Forbidden("sender %s does not belong to %s", p.Sender, r.Origin)
	}
	held, err := s.Rooms.HasRoom(ctx, room)
	if err != nil {
		return nil, err
	}
	if held {
		if err := s.checkACL(ctx, room, r.Origin); err != nil {
			return nil, err
		}
		if m, err := s.Rooms.Membership(ctx, room, id.UserID(*p.StateKey)); err == nil && m == "ban" {
			return nil, httpapi.Forbidden("the user is banned from this room")
		}
	}
	if p, err = s.checkEvent(ctx, rv, p); err != nil {
		return nil, httpapi.Forbidden("%v", err)
	}
	signed, err := rooms.SignPDU(rv, p, s.ServerName, s.Key)
	if err != nil {
		return nil, err
	}
	inRoom := false
	if held {
		servers, err := s.Rooms.JoinedServers(ctx, room)
		if err != nil {
			return nil, err
		}
		inRoom = slices.Contains(servers, s.ServerName)
	}
	if !inRoom {
		// Keep the stripped state for the invitee's client in unsigned.
		rec := p.Clone()
		stripped := make([]json.RawMessage, 0, len(inviteState))
		for _, st := range inviteState {
			stripped = append(stripped, strippedState(st))
		}
		rec.Unsigned, _ = json.Marshal(map[string]any{"invite_room_state": stripped})
		if _, err := s.Rooms.StoreStrayMembership(ctx, room, rv, eid, rec, true); err != nil {
			return nil, err
		}
	}
	return json.RawMessage(signed), nil
}

// strippedState reduces a state event to the stripped form clients get in
// invite_state (type, state_key, sender, content).
func strippedState(raw json.RawMessage) json.RawMessage {
	var f struct {
		Type     string          `json:"type"`
		StateKey string          `json:"state_key"`
		Sender   string          `json:"sender"`
		Content  json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return raw
	}
	out, _ := json.Marshal(f)
	return out
}

// --- The joining side (rooms.Remote). ---

var _ rooms.Remote = (*Service)(nil)

// candidates orders the servers to try: those given, without ourselves,
// each once.
func (s *Service) candidates(servers []string) []string {
	var out []string
	for _, sv := range servers {
		if sv != "" && sv != s.ServerName && !slices.Contains(out, sv) && validServerName(sv) {
			out = append(out, sv)
		}
	}
	return out
}

// JoinRemote implements rooms.Remote.
func (s *Service) JoinRemote(ctx context.Context, room id.RoomID, u id.UserID, servers []string, content map[string]any) (id.EventID, error) {
	cands := s.candidates(servers)
	if len(cands) == 0 {
		return "", httpapi.NotFound("no server to join %s through (give server_name or via)", room)
	}
	var lastErr error
	for _, server := range cands {
		eid, err := s.joinVia(ctx, server, room, u, content)
		if err == nil {
			return eid, nil
		}
		s.Log.Info("remote join failed", "room", room, "via", server, "err", err)
		lastErr = err
	}
	return "", lastErr
}

// templateFrom parses and checks a make_join/make_leave answer.
func (s *Service) templateFrom(rv id.RoomVersion, raw json.RawMessage, room id.RoomID, u id.UserID, membership string) (*pdu.PDU, error) {
	var p pdu.PDU
	if rooms.LegacyEventFormat(rv) {
		// v1/v2: reference pairs and an event id (ours replaces it).
		lp, err := rooms.ParsePDU(raw)
		if err != nil || rooms.AsV1(lp) == nil {
			return nil, fmt.Errorf("invalid template: not a room v%s event (event_id, reference pairs)", rv)
		}
		p = *lp
	} else if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("invalid template: %w", err)
	}
	var c map[string]any
	_ = json.Unmarshal(p.Content, &c)
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey != string(u) || p.Sender != u || p.RoomID != room || c["membership"] != membership {
		return nil, errors.New("the template is not a " + membership + " of this user in this room")
	}
	return &p, nil
}

// signTemplate completes a template as ours: content, timestamp, origin,
// hashes and our signature.
func (s *Service) signTemplate(rv id.RoomVersion, p *pdu.PDU, extra map[string]any) (id.EventID, []byte, error) {
	var c map[string]any
	_ = json.Unmarshal(p.Content, &c)
	for k, v := range extra {
		if k != "membership" && k != "join_authorised_via_users_server" {
			c[k] = v
		}
	}
	p.Content, _ = json.Marshal(c)
	p.OriginServerTS = s.now().UnixMilli()
	p.Signatures, p.Hashes, p.Unsigned = nil, nil, nil
	if len(p.DeprecatedOrigin) > 0 {
		p.DeprecatedOrigin, _ = json.Marshal(s.ServerName)
	}
	if rooms.LegacyEventFormat(rv) {
		// v1/v2: the sending server names the event.
		p.InternalMeta.EventID = rooms.NewLegacyEventID(s.ServerName)
		raw, err := rooms.SignPDU(rv, p, s.ServerName, s.Key)
		return p.InternalMeta.EventID, raw, err
	}
	raw, err := rooms.SignPDU(rv, p, s.ServerName, s.Key)
	if err != nil {
		return "", nil, err
	}
	eid, err := p.GetEventID(rv)
	if err != nil {
		return "", nil, err
	}
	p.InternalMeta.EventID = eid
	return eid, raw, err
}

// joinVia runs the join handshake with one resident server.
func (s *Service) joinVia(ctx context.Context, server string, room id.RoomID, u id.UserID, content map[string]any) (id.EventID, error) {
	mj, err := s.Client.MakeJoin(ctx, &mfed.ReqMakeJoin{RoomID: room, UserID: u, Via: server, SupportedVersions: rooms.SupportedVersions})
	if err != nil {
		return "", remoteError(server, err)
	}
	rv := mj.RoomVersion
	if !supportedVersion(rv) {
		return "", &httpapi.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION", Message: "room version " + string(rv) + " is not supported here"}
	}
	p, err := s.templateFrom(rv, mj.Event, room, u, "join")
	if err != nil {
		return "", &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + ": " + err.Error()}
	}
	eid, raw, err := s.signTemplate(rv, p, content)
	if err != nil {
		return "", err
	}
	resp, err := s.Client.SendJoin(ctx, &mfed.ReqSendJoin{RoomID: room, EventID: eid, Event: raw, Via: server})
	if err != nil {
		return "", remoteError(server, err)
	}
	join := p
	if len(resp.Event) > 0 {
		// The resident's copy carries its countersignature (restricted joins).
		if jp, jid, err := parseEvent(rv, resp.Event); err == nil && jid == eid {
			if rooms.VerifySignature(rv, jp, s.ServerName, s.keyFunc(ctx)) == nil {
				join = jp
			}
		}
	}
	imported, err := s.importEvents(ctx, rv, room, append(slices.Clone(resp.AuthChain), resp.State...))
	if err != nil {
		return "", err
	}
	state := rooms.StateMap{}
	for _, sraw := range resp.State {
		sp, sid, err := parseEvent(rv, sraw)
		if err != nil || sp.StateKey == nil {
			continue
		}
		if ip := imported[sid]; ip != nil && !ip.InternalMeta.Rejected {
			state[pdu.StateKey{Type: sp.Type, StateKey: *sp.StateKey}] = sid
		}
	}
	createID := state[pdu.StateKey{Type: "m.room.create"}]
	if createID == "" {
		return "", &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " sent a room state without a create event"}
	}
	if rv.RoomIDIsCreateEventID() && id.RoomID("!"+strings.TrimPrefix(string(createID), "$")) != room {
		return "", &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " sent the create event of another room"}
	}
	join.InternalMeta.EventID = eid
	if err := s.authAgainst(ctx, rv, join, state); err != nil {
		return "", &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + ": the join does not pass the room's rules: " + authMessage(err)}
	}
	history := s.fetchHistory(ctx, server, rv, room, join.PrevEvents)
	var historyBase rooms.StateMap
	if len(history) > 0 {
		// The history's own state (as at the oldest of it), so its events
		// are not judged by the state at the join.
		if historyBase, err = s.stateBeforeRemote(ctx, server, rv, room, history[0].EventID); err != nil {
			s.Log.Info("join: state before the history", "room", room, "via", server, "err", err)
			historyBase = nil
		}
	}
	_, err = s.Rooms.CreateJoinedRoom(ctx, rooms.JoinedRoom{RoomID: room, RoomVersion: rv, State: state, Join: join, JoinID: eid,
		History: history, HistoryBase: historyBase})
	if errors.Is(err, rooms.ErrRoomExists) {
		// We hold a copy already (a stale one, or another local user joined
		// at the same moment): the join's state from the resident replaces it.
		_, err = s.Rooms.PersistRemote(ctx, rooms.RemoteEvent{RoomID: room, RoomVersion: rv, EventID: eid, PDU: join,
			StateBefore: state, ResetExtremities: true})
	}
	if err != nil {
		return "", err
	}
	return eid, nil
}

// historyOnJoin is how many earlier events a join fetches, so members who
// join see the recent conversation.
const historyOnJoin = 50

// fetchHistory backfills the events before a join (best effort): each is
// checked (signature, hash, auth against its auth events) and returned
// oldest first.
func (s *Service) fetchHistory(ctx context.Context, server string, rv id.RoomVersion, room id.RoomID, from []id.EventID) []rooms.Outlier {
	out, err := s.fetchBackfill(ctx, server, rv, room, from, historyOnJoin)
	if err != nil {
		s.Log.Info("backfill on join failed", "room", room, "via", server, "err", err)
	}
	return out
}

// LeaveRemote implements rooms.Remote: rejecting an invite (or withdrawing
// a knock) through the server that sent it.
func (s *Service) LeaveRemote(ctx context.Context, room id.RoomID, u id.UserID, reason string) error {
	m, err := s.Rooms.MembershipOf(ctx, u, room)
	if err != nil {
		return err
	}
	var servers []string
	if m != nil && m.EventID != "" {
		if ev, err := s.Rooms.Event(ctx, m.EventID); err == nil {
			servers = append(servers, serverOf(ev.Sender))
			servers = append(servers, previewServers(ev.PDU)...)
		}
	}
	if _, server, ok := strings.Cut(string(room), ":"); ok {
		servers = append(servers, server)
	}
	var lastErr error = httpapi.NotFound("no server to leave %s through", room)
	for _, server := range s.candidates(servers) {
		ml, err := s.Client.MakeLeave(ctx, &mfed.ReqMakeLeave{RoomID: room, UserID: u, Via: server})
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		rv := ml.RoomVersion
		if !supportedVersion(rv) {
			lastErr = incompatibleVersion(rv)
			continue
		}
		p, err := s.templateFrom(rv, ml.Event, room, u, "leave")
		if err != nil {
			lastErr = err
			continue
		}
		extra := map[string]any{}
		if reason != "" {
			extra["reason"] = reason
		}
		eid, raw, err := s.signTemplate(rv, p, extra)
		if err != nil {
			return err
		}
		if err := s.Client.SendLeave(ctx, &mfed.ReqSendLeave{RoomID: room, EventID: eid, Event: raw, Via: server}); err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		if held, _ := s.Rooms.HasRoom(ctx, room); held {
			return nil // the leave comes back to us through the room
		}
		_, err = s.Rooms.StoreStrayMembership(ctx, room, rv, eid, p, false)
		return err
	}
	return lastErr
}

// inviteStateTypes are the state events an invitee's server is shown.
var inviteStateTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// SignInvite implements rooms.Remote.
func (s *Service) SignInvite(ctx context.Context, rv id.RoomVersion, room id.RoomID, eventID id.EventID, raw []byte) ([]byte, error) {
	var f struct {
		StateKey id.UserID `json:"state_key"`
		Sender   id.UserID `json:"sender"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	target := serverOf(f.StateKey)
	if ok, err := s.aclAllows(ctx, room, target); err != nil {
		return nil, err
	} else if !ok {
		return nil, httpapi.Forbidden("server %s is denied by the room's server ACL", target)
	}
	var strip []json.RawMessage
	for _, typ := range inviteStateTypes {
		if ev, err := s.Rooms.CurrentStateEvent(ctx, room, typ, ""); err == nil && ev != nil {
			strip = append(strip, ev.PDU)
		}
	}
	if ev, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.member", string(f.Sender)); err == nil && ev != nil {
		strip = append(strip, ev.PDU)
	}
	var signed json.RawMessage
	resp, err := s.Client.SendInvite(ctx, &mfed.ReqSendInvite{RoomID: room, UserID: f.StateKey, EventID: eventID,
		Event: raw, InviteRoomState: strip, RoomVersion: rv})
	if err != nil && v2Unknown(err) {
		// An old server without the v2 API (invite_v1.go).
		s.Log.Info("invitee's server does not serve the v2 invite API, trying v1", "server", target, "err", err)
		signed, err = s.sendInviteV1(ctx, target, rv, room, eventID, raw, strip)
		var he *httpapi.Error
		if errors.As(err, &he) {
			return nil, err
		}
	} else if err == nil {
		signed = resp.Event
	}
	if err != nil {
		return nil, remoteError(target, err)
	}
	p, got, err := parseEvent(rv, signed)
	if err != nil || got != eventID {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: target + " returned another event for the invite"}
	}
	if err := rooms.VerifySignature(rv, p, target, s.keyFunc(ctx)); err != nil {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: target + " did not sign the invite: " + err.Error()}
	}
	return rooms.EncodePDU(p)
}

// QueryAlias implements rooms.Remote.
func (s *Service) QueryAlias(ctx context.Context, a id.RoomAlias) (id.RoomID, []string, error) {
	_, server, ok := strings.Cut(string(a), ":")
	if !ok || !validServerName(server) {
		return "", nil, httpapi.InvalidParam("invalid room alias %q", a)
	}
	resp, err := s.Client.QueryDirectory(ctx, server, a)
	if err != nil {
		if remoteStatus(err) == http.StatusNotFound {
			return "", nil, httpapi.NotFound("room alias %s not found", a)
		}
		return "", nil, remoteError(server, err)
	}
	return resp.RoomID, resp.Servers, nil
}

// QueryRemoteProfile asks a user's server for their profile.
func (s *Service) QueryRemoteProfile(ctx context.Context, u id.UserID, field string) (map[string]any, error) {
	server := serverOf(u)
	if server == "" {
		return nil, httpapi.InvalidParam("invalid user id")
	}
	q := map[string][]string{"user_id": {string(u)}}
	if field != "" {
		q["field"] = []string{field}
	}
	var out map[string]any
	if err := s.Client.Query(ctx, server, "profile", q, &out); err != nil {
		// Unreachable or refusing: to the client there is no profile to show
		// (the endpoint knows only 200, 403 and 404).
		s.Log.Info("remote profile query failed", "user", u, "err", err)
		return nil, httpapi.NotFound("profile not found (%s did not answer)", server)
	}
	return out, nil
}
