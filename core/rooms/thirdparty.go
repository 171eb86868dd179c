package rooms

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// InviteThirdParty sends the invite that completes a third-party invite:
// sender (a local user, who sent the room's m.room.third_party_invite)
// invites target with content carrying third_party_invite (display name
// and the identity server's signed block). The auth rules check the
// signature against the m.room.third_party_invite event's public keys.
// A remote target's server countersigns it, as with any invite.
func (s *Service) InviteThirdParty(ctx context.Context, r id.RoomID, sender, target id.UserID, tpi map[string]any) error {
	if !s.isLocal(target) && s.Remote == nil {
		return errRemote
	}
	c := map[string]any{"membership": "invite", "third_party_invite": tpi}
	if !s.isLocal(target) {
		return s.inviteRemote(ctx, r, sender, target, c)
	}
	_, err := s.setMember(ctx, r, sender, target, c)
	return err
}
