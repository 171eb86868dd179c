package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Invites through the v1 API, for servers that predate v2: served, and
// used when an invitee's server does not know v2.

// v1RoomVersions are the versions a v1 invite may be for (spec: a server
// receiving one must assume "1" or "2").
var v1RoomVersions = []id.RoomVersion{"1", "2"}

// InviteV1 serves PUT /_matrix/federation/v1/invite/{roomId}/{eventId}.
// The body is the event itself, the stripped room state in its
// unsigned.invite_room_state, and no room version: the spec tells us to
// assume "1" or "2". When we hold the room, or the stripped state carries
// the create event (required since v1.16), the version named there is
// used instead; a version we do not support is M_INCOMPATIBLE_ROOM_VERSION.
// The answer is the v1 shape [200, {"event": …}].
func (s *Service) InviteV1(r *httpapi.Request) (any, error) {
	body, err := r.Body()
	if err != nil {
		return nil, err
	}
	var ev struct {
		Type     string `json:"type"`
		Unsigned struct {
			InviteRoomState []json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, httpapi.BadJSON("the body is not an event: %v", err)
	}
	if ev.Type != "m.room.member" {
		return nil, httpapi.InvalidParam("not a membership event")
	}
	room := id.RoomID(r.PathValue("roomId"))
	rv, err := s.v1InviteVersion(r.Ctx(), room, ev.Unsigned.InviteRoomState)
	if err != nil {
		return nil, err
	}
	signed, err := s.acceptInvite(r, rv, body, ev.Unsigned.InviteRoomState)
	if err != nil {
		return nil, err
	}
	return []any{http.StatusOK, map[string]any{"event": signed}}, nil
}

// v1InviteVersion picks the room version of a v1 invite.
func (s *Service) v1InviteVersion(ctx context.Context, room id.RoomID, stripped []json.RawMessage) (id.RoomVersion, error) {
	if rv, err := s.Rooms.RoomVersion(ctx, room); err == nil {
		return rv, nil
	}
	rv := id.RoomVersion("1")
	for _, raw := range stripped {
		var c struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			Content  struct {
				RoomVersion id.RoomVersion `json:"room_version"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &c) == nil && c.Type == "m.room.create" && c.StateKey == "" {
			if c.Content.RoomVersion != "" {
				rv = c.Content.RoomVersion
			}
			break
		}
	}
	if !supportedVersion(rv) {
		return "", incompatibleVersion(rv)
	}
	return rv, nil
}

// sendInviteV1 offers an invite through the v1 API (only for room versions
// 1 and 2, which is all a v1 server assumes): the event with the stripped
// state in unsigned, the answer [200, {"event": …}].
func (s *Service) sendInviteV1(ctx context.Context, server string, rv id.RoomVersion, room id.RoomID, eventID id.EventID, raw []byte, strip []json.RawMessage) (json.RawMessage, error) {
	if !slices.Contains(v1RoomVersions, rv) {
		return nil, incompatibleVersion(rv)
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, err
	}
	if strip == nil {
		strip = []json.RawMessage{}
	}
	ev["unsigned"], _ = json.Marshal(map[string]any{"invite_room_state": strip})
	var resp []json.RawMessage
	path := mfed.URLPath{"v1", "invite", room, eventID}
	if err := s.Client.MakeRequest(ctx, server, true, http.MethodPut, path, ev, &resp); err != nil {
		return nil, err
	}
	if len(resp) != 2 {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " answered the v1 invite in an unknown shape"}
	}
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(resp[1], &out); err != nil || len(out.Event) == 0 {
		return nil, &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + " answered the v1 invite without the event"}
	}
	return out.Event, nil
}

// v2Unknown reports whether a server's error means it does not serve the
// endpoint (404, or M_UNRECOGNIZED).
func v2Unknown(err error) bool {
	if remoteStatus(err) == http.StatusNotFound {
		return true
	}
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode == "M_UNRECOGNIZED"
	}
	return false
}
