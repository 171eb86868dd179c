package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Third-party invites. Cirrus does not talk to identity servers itself (a
// client's /invite with id_server is refused), but rooms can hold an
// m.room.third_party_invite made elsewhere, and the spec's completion of
// such an invite needs no identity server from us: an identity server
// tells the invitee's server of the binding (/3pid/onbind), which asks
// the inviter's server to exchange the signed token for a real invite
// (/exchange_third_party_invite); the signature is checked against the
// public keys of the m.room.third_party_invite event.

// signedTPI is the identity server's signed block of a third-party invite.
type signedTPI struct {
	MXID       id.UserID                    `json:"mxid"`
	Token      string                       `json:"token"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// exchangeBody is the partial member event of exchange_third_party_invite.
type exchangeBody struct {
	Type     string    `json:"type"`
	RoomID   id.RoomID `json:"room_id"`
	Sender   id.UserID `json:"sender"`
	StateKey id.UserID `json:"state_key"`
	Content  struct {
		Membership       string `json:"membership"`
		ThirdPartyInvite *struct {
			DisplayName string          `json:"display_name"`
			Signed      json.RawMessage `json:"signed"`
		} `json:"third_party_invite"`
	} `json:"content"`
}

// ExchangeThirdPartyInvite serves PUT
// /_matrix/federation/v1/exchange_third_party_invite/{roomId}.
func (s *Service) ExchangeThirdPartyInvite(r *httpapi.Request) (any, error) {
	room := id.RoomID(r.PathValue("roomId"))
	var b exchangeBody
	if err := r.DecodeJSON(&b); err != nil {
		return nil, err
	}
	if serverOf(b.StateKey) != r.Origin {
		return nil, httpapi.Forbidden("the invited user %s does not belong to %s", b.StateKey, r.Origin)
	}
	if err := s.exchangeTPI(r.Ctx(), room, b); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// exchangeTPI checks a third-party invite's signed token against the room's
// m.room.third_party_invite and sends the invite it stands for.
func (s *Service) exchangeTPI(ctx context.Context, room id.RoomID, b exchangeBody) error {
	tpi := b.Content.ThirdPartyInvite
	switch {
	case b.Type != "m.room.member":
		return httpapi.InvalidParam("type must be m.room.member")
	case b.RoomID != room:
		return httpapi.InvalidParam("room_id does not match the path")
	case b.Content.Membership != "invite":
		return httpapi.InvalidParam("membership must be invite")
	case tpi == nil || len(tpi.Signed) == 0:
		return httpapi.MissingParam("content.third_party_invite.signed is required")
	}
	if _, _, err := b.StateKey.Parse(); err != nil {
		return httpapi.InvalidParam("invalid state_key %q", b.StateKey)
	}
	var signed signedTPI
	if err := json.Unmarshal(tpi.Signed, &signed); err != nil || signed.Token == "" || signed.MXID == "" {
		return httpapi.InvalidParam("signed needs mxid, token and signatures")
	}
	if signed.MXID != b.StateKey {
		return httpapi.InvalidParam("signed.mxid is not the invited user")
	}
	if !s.isLocal(b.Sender) {
		return httpapi.Forbidden("the inviter %s is not on this server", b.Sender)
	}
	if ok, err := s.Rooms.HasRoom(ctx, room); err != nil {
		return err
	} else if !ok {
		return httpapi.NotFound("unknown room")
	}
	ev, err := s.Rooms.CurrentStateEvent(ctx, room, "m.room.third_party_invite", signed.Token)
	if err != nil {
		return err
	}
	if ev == nil {
		return httpapi.Forbidden("no third-party invite with this token in the room")
	}
	if ev.Sender != b.Sender {
		return httpapi.Forbidden("the third-party invite was sent by %s, not %s", ev.Sender, b.Sender)
	}
	var c struct {
		DisplayName string        `json:"display_name"`
		PublicKey   id.SigningKey `json:"public_key"`
		PublicKeys  []struct {
			PublicKey id.SigningKey `json:"public_key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(ev.Content, &c); err != nil || (c.PublicKey == "" && len(c.PublicKeys) == 0) {
		return httpapi.Forbidden("the third-party invite has been revoked")
	}
	keys := []id.SigningKey{c.PublicKey}
	for _, k := range c.PublicKeys {
		keys = append(keys, k.PublicKey)
	}
	verified := false
	for _, k := range keys {
		if k == "" {
			continue
		}
		// Keys may be url-safe base64; the verifier wants the standard form.
		std := id.SigningKey(strings.NewReplacer("-", "+", "_", "/").Replace(string(k)))
		if signutil.VerifyJSONAny(std, tpi.Signed) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return httpapi.Forbidden("the signed token does not carry a valid signature of the third-party invite's keys")
	}
	name := tpi.DisplayName
	if name == "" {
		name = c.DisplayName
	}
	return s.Rooms.InviteThirdParty(ctx, room, b.Sender, b.StateKey, map[string]any{
		"display_name": name, "signed": json.RawMessage(tpi.Signed)})
}

// maxOnBindInvites bounds the exchanges one (unauthenticated) /onbind
// request can make us do.
const maxOnBindInvites = 50

// OnBind serves PUT /_matrix/federation/v1/3pid/onbind: an identity server
// tells us one of our users bound a third-party identifier that has
// pending invites. Each invite is exchanged with the inviter's server (or
// here, when the inviter is ours); the answer says the notification was
// processed, and invites that could not be exchanged are logged.
func (s *Service) OnBind(r *httpapi.Request) (any, error) {
	var b struct {
		Medium  string    `json:"medium"`
		Address string    `json:"address"`
		MXID    id.UserID `json:"mxid"`
		Invites []struct {
			Medium      string          `json:"medium"`
			Address     string          `json:"address"`
			MXID        id.UserID       `json:"mxid"`
			RoomID      id.RoomID       `json:"room_id"`
			Sender      id.UserID       `json:"sender"`
			Signed      json.RawMessage `json:"signed"`
			DisplayName string          `json:"display_name"`
		} `json:"invites"`
	}
	if err := r.DecodeJSON(&b); err != nil {
		return nil, err
	}
	switch {
	case b.Medium == "" || b.Address == "" || b.MXID == "":
		return nil, httpapi.MissingParam("medium, address and mxid are required")
	case b.Invites == nil:
		return nil, httpapi.MissingParam("invites is required")
	case len(b.Invites) > maxOnBindInvites:
		return nil, httpapi.InvalidParam("at most %d invites per notification", maxOnBindInvites)
	case !s.isLocal(b.MXID):
		return nil, httpapi.InvalidParam("%s is not a user of this server", b.MXID)
	}
	for i, inv := range b.Invites {
		switch {
		case inv.Medium == "" || inv.Address == "" || inv.MXID == "" || inv.RoomID == "" || inv.Sender == "" || len(inv.Signed) == 0:
			return nil, httpapi.MissingParam("invites[%d]: medium, address, mxid, room_id, sender and signed are required", i)
		case inv.MXID != b.MXID:
			return nil, httpapi.InvalidParam("invites[%d] is for another user", i)
		case serverOf(inv.Sender) == "":
			return nil, httpapi.InvalidParam("invites[%d]: invalid sender", i)
		}
	}
	ctx := r.Ctx()
	for _, inv := range b.Invites {
		var eb exchangeBody
		eb.Type, eb.RoomID, eb.Sender, eb.StateKey = "m.room.member", inv.RoomID, inv.Sender, inv.MXID
		eb.Content.Membership = "invite"
		eb.Content.ThirdPartyInvite = &struct {
			DisplayName string          `json:"display_name"`
			Signed      json.RawMessage `json:"signed"`
		}{inv.DisplayName, inv.Signed}
		var err error
		if server := serverOf(inv.Sender); server == s.ServerName {
			err = s.exchangeTPI(ctx, inv.RoomID, eb)
		} else {
			err = s.Client.MakeRequest(ctx, server, true, http.MethodPut,
				mfed.URLPath{"v1", "exchange_third_party_invite", inv.RoomID}, eb, nil)
		}
		if err != nil {
			s.Log.Info("third-party invite exchange failed", "room", inv.RoomID, "sender", inv.Sender, "user", b.MXID, "err", err)
		}
	}
	return httpapi.Empty{}, nil
}
