package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Knocking over federation (room versions 7+): the resident side
// (make_knock, send_knock) and the knocking side (KnockRemote).

// MakeKnock serves GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (s *Service) MakeKnock(r *httpapi.Request) (any, error) { return s.membershipTemplate(r, "knock") }

// SendKnock serves PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}:
// the knock is checked, persisted and relayed, and the answer carries the
// room's state for the knocker's client (full PDUs, the create event
// first, as the spec requires since v1.16).
func (s *Service) SendKnock(r *httpapi.Request) (any, error) {
	ev, _, err := s.receiveMembership(r, "knock")
	if err != nil {
		return nil, err
	}
	return map[string]any{"knock_room_state": s.roomPreviewState(r.Ctx(), ev.RoomID, "")}, nil
}

// roomPreviewState is the state shown to invitees and knockers: the
// room-describing state events, and sender's member event if given.
func (s *Service) roomPreviewState(ctx context.Context, room id.RoomID, sender id.UserID) []json.RawMessage {
	out := []json.RawMessage{}
	for _, typ := range inviteStateTypes {
		if ev, err := s.Rooms.CurrentStateEvent(ctx, room, typ, ""); err == nil && ev != nil {
			out = append(out, ev.PDU)
		}
	}
	if sender != "" {
		if ev, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.member", string(sender)); err == nil && ev != nil {
			out = append(out, ev.PDU)
		}
	}
	return out
}

// KnockRemote knocks on a room this server is not in, through one of the
// servers given (the client's via/server_name, the alias's servers) or the
// room id's server. The knock is kept as the user's membership (with the
// room's stripped state for their client) until the room answers with an
// invite, or the knock is withdrawn.
func (s *Service) KnockRemote(ctx context.Context, room id.RoomID, u id.UserID, content map[string]any, servers []string) (id.EventID, error) {
	servers = slices.Clone(servers)
	if _, sv, ok := strings.Cut(string(room), ":"); ok {
		servers = append(servers, sv)
	}
	cands := s.candidates(servers)
	if len(cands) == 0 {
		return "", httpapi.NotFound("no server to knock on %s through (give server_name or via)", room)
	}
	var lastErr error
	for _, server := range cands {
		eid, err := s.knockVia(ctx, server, room, u, content)
		if err == nil {
			return eid, nil
		}
		s.Log.Info("remote knock failed", "room", room, "via", server, "err", err)
		lastErr = err
	}
	return "", lastErr
}

// knockVia runs the knock handshake with one resident server.
func (s *Service) knockVia(ctx context.Context, server string, room id.RoomID, u id.UserID, content map[string]any) (id.EventID, error) {
	mk, err := s.Client.MakeKnock(ctx, &mfed.ReqMakeKnock{RoomID: room, UserID: u, Via: server, SupportedVersions: rooms.SupportedVersions})
	if err != nil {
		return "", remoteError(server, err)
	}
	rv := mk.RoomVersion
	if !supportedVersion(rv) {
		return "", incompatibleVersion(rv)
	}
	if !rv.Knocks() {
		return "", httpapi.Forbidden("room version %s does not allow knocking", rv)
	}
	p, err := s.templateFrom(rv, mk.Event, room, u, "knock")
	if err != nil {
		return "", &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: server + ": " + err.Error()}
	}
	eid, raw, err := s.signTemplate(rv, p, content)
	if err != nil {
		return "", err
	}
	resp, err := s.Client.SendKnock(ctx, &mfed.ReqSendKnock{RoomID: room, EventID: eid, Event: raw, Via: server})
	if err != nil {
		return "", remoteError(server, err)
	}
	// Keep the room's preview for the knocker's client, stripped, and only
	// events of this room that carry their server's valid signature.
	stripped := []json.RawMessage{}
	for _, st := range resp.KnockRoomState {
		sp, sid, err := parseEvent(rv, st)
		if err != nil || roomOf(rv, sp, sid) != room {
			continue
		}
		if _, err := s.checkEvent(ctx, rv, sp); err != nil {
			continue
		}
		stripped = append(stripped, strippedState(st))
	}
	rec := p.Clone()
	rec.Unsigned, _ = json.Marshal(map[string]any{"knock_room_state": stripped})
	if _, err := s.Rooms.StoreStrayMembership(ctx, room, rv, eid, rec, true); err != nil {
		return "", err
	}
	return eid, nil
}

// previewServers are the servers of the senders of the stripped state kept
// with an invite or a knock (unsigned invite_room_state/knock_room_state):
// servers in the room, to withdraw a knock through when the room id names
// none.
func previewServers(raw json.RawMessage) []string {
	var f struct {
		Unsigned struct {
			Invite []struct {
				Sender id.UserID `json:"sender"`
			} `json:"invite_room_state"`
			Knock []struct {
				Sender id.UserID `json:"sender"`
			} `json:"knock_room_state"`
		} `json:"unsigned"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return nil
	}
	var out []string
	for _, st := range append(f.Unsigned.Invite, f.Unsigned.Knock...) {
		if sv := serverOf(st.Sender); sv != "" {
			out = append(out, sv)
		}
	}
	return out
}
