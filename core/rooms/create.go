package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// SupportedVersions are the room versions this server creates and joins.
// Versions 1 and 2 use the original event format (server-chosen event
// ids, reference pairs): v1events.go.
var SupportedVersions = []id.RoomVersion{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// DefaultVersion is used when createRoom names none.
const DefaultVersion id.RoomVersion = "12"

// StateEvent is one state event of a createRoom request.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRequest is a validated createRoom request.
type CreateRequest struct {
	Creator            id.UserID
	Version            id.RoomVersion
	Preset             string
	Name, Topic        *string
	Alias              id.RoomAlias
	Invite             []id.UserID
	IsDirect           bool
	CreationContent    map[string]json.RawMessage
	InitialState       []StateEvent
	PowerLevelOverride map[string]json.RawMessage
	// CreatorProfile is the creator's displayname/avatar for the join event.
	CreatorProfile map[string]string
}

func rawString(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func content(v any) json.RawMessage { b, _ := json.Marshal(v); return b }

// CreateRoom creates a room: the create event, the creator's join, power
// levels, the preset's rules, initial state, name, topic and invites, each
// event authorized and persisted like any other.
func (s *Service) CreateRoom(ctx context.Context, req CreateRequest) (id.RoomID, error) {
	rv := req.Version
	if rv == "" {
		rv = DefaultVersion
	}
	if !slices.Contains(SupportedVersions, rv) {
		return "", &httpapi.Error{Status: 400, Code: "M_UNSUPPORTED_ROOM_VERSION", Message: "unsupported room version " + string(rv)}
	}
	if req.Alias != "" {
		// The stored mapping only: ResolveAlias could ask an application
		// service, which may be the one creating this room right now.
		if _, err := s.LookupAlias(ctx, req.Alias); err == nil {
			return "", &httpapi.Error{Status: 400, Code: "M_ROOM_IN_USE", Message: "room alias already taken"}
		}
	}
	// m.room.create
	cc := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		cc[k] = v
	}
	cc["room_version"] = rawString(string(rv))
	if rv.CreatorInContent() {
		cc["creator"] = rawString(string(req.Creator))
	} else {
		delete(cc, "creator")
	}
	trusted := req.Preset == "trusted_private_chat"
	if rv.PrivilegedRoomCreators() && trusted && len(req.Invite) > 0 {
		// v12: invitees of a trusted private chat become co-creators.
		var extra []id.UserID
		if raw, ok := cc["additional_creators"]; ok {
			_ = json.Unmarshal(raw, &extra)
		}
		for _, u := range req.Invite {
			if !slices.Contains(extra, u) && u != req.Creator {
				extra = append(extra, u)
			}
		}
		cc["additional_creators"] = content(extra)
	}
	empty := ""
	createEv := NewEvent{Type: "m.room.create", StateKey: &empty, Sender: req.Creator, Content: content(cc)}
	var roomID id.RoomID
	if !rv.RoomIDIsCreateEventID() {
		roomID = s.randomRoomID()
	}
	var created *Event
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		created, err = s.trySend(ctx, roomID, createEv, &createSpec{roomID: roomID, version: rv})
		if err == errRetry {
			continue
		}
		break
	}
	if err != nil {
		return "", err
	}
	roomID = created.RoomID

	send := func(typ, skey string, c json.RawMessage) error {
		k := skey
		_, err := s.Send(ctx, roomID, NewEvent{Type: typ, StateKey: &k, Sender: req.Creator, Content: c})
		return err
	}
	member := map[string]any{"membership": "join"}
	for k, v := range req.CreatorProfile {
		if v != "" {
			member[k] = v
		}
	}
	if err := send("m.room.member", string(req.Creator), content(member)); err != nil {
		return "", err
	}

	// Power levels: the spec's defaults, then the override's top-level keys.
	pl := map[string]any{
		"users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"notifications": map[string]int{"room": 50},
		"events": map[string]int{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
	}
	users := map[string]int{}
	if !rv.PrivilegedRoomCreators() {
		users[string(req.Creator)] = 100
		if trusted {
			for _, u := range req.Invite {
				users[string(u)] = 100
			}
		}
	}
	pl["users"] = users
	if req.Preset == "public_chat" {
		pl["invite"] = 50
	}
	plRaw := map[string]json.RawMessage{}
	for k, v := range pl {
		plRaw[k] = content(v)
	}
	for k, v := range req.PowerLevelOverride {
		plRaw[k] = v
	}
	if err := send("m.room.power_levels", "", content(plRaw)); err != nil {
		return "", err
	}
	if req.Alias != "" {
		if err := send("m.room.canonical_alias", "", content(map[string]string{"alias": string(req.Alias)})); err != nil {
			return "", err
		}
	}
	// Preset rules, unless initial_state sets the same key.
	joinRule, guest := "invite", "can_join"
	if req.Preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	preset := []StateEvent{
		{Type: "m.room.join_rules", Content: content(map[string]string{"join_rule": joinRule})},
		{Type: "m.room.history_visibility", Content: content(map[string]string{"history_visibility": "shared"})},
		{Type: "m.room.guest_access", Content: content(map[string]string{"guest_access": guest})},
	}
	overridden := map[pdu.StateKey]bool{}
	for _, st := range req.InitialState {
		overridden[pdu.StateKey{Type: st.Type, StateKey: st.StateKey}] = true
	}
	if req.Name != nil {
		overridden[pdu.StateKey{Type: "m.room.name"}] = true
	}
	if req.Topic != nil {
		overridden[pdu.StateKey{Type: "m.room.topic"}] = true
	}
	for _, st := range preset {
		if !overridden[pdu.StateKey{Type: st.Type, StateKey: st.StateKey}] {
			if err := send(st.Type, st.StateKey, st.Content); err != nil {
				return "", err
			}
		}
	}
	for _, st := range req.InitialState {
		if (st.Type == "m.room.name" && req.Name != nil) || (st.Type == "m.room.topic" && req.Topic != nil) {
			continue
		}
		if err := send(st.Type, st.StateKey, st.Content); err != nil {
			return "", err
		}
	}
	if req.Name != nil {
		if err := send("m.room.name", "", content(map[string]string{"name": *req.Name})); err != nil {
			return "", err
		}
	}
	if req.Topic != nil {
		t := content(map[string]any{"topic": *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *req.Topic, "mimetype": "text/plain"}}}})
		if err := send("m.room.topic", "", t); err != nil {
			return "", err
		}
	}
	if req.Alias != "" {
		if err := s.CreateAlias(ctx, req.Alias, roomID, req.Creator); err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) {
				return "", err
			}
		}
	}
	for _, u := range req.Invite {
		if err := s.Invite(ctx, roomID, req.Creator, u, "", req.IsDirect); err != nil {
			return "", err
		}
	}
	return roomID, nil
}
