package rooms

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// RemoteKnocker is what the engine needs from federation to knock on a
// room held only by other servers (federation.Service implements it).
type RemoteKnocker interface {
	// KnockRemote knocks on r through one of servers with the member
	// event content given, and records the knock as u's membership.
	KnockRemote(ctx context.Context, r id.RoomID, u id.UserID, content map[string]any, servers []string) (id.EventID, error)
}

// KnockVia is Knock, with servers to ask when the room is on other servers
// (the client's via/server_name, or the alias's servers).
func (s *Service) KnockVia(ctx context.Context, r id.RoomID, u id.UserID, reason string, servers []string) error {
	remote, err := s.needsRemoteJoin(ctx, r)
	if err != nil {
		return err
	}
	if !remote {
		return s.Knock(ctx, r, u, reason)
	}
	k, ok := s.Remote.(RemoteKnocker)
	if !ok {
		return errRemote
	}
	if held, _ := s.HasRoom(ctx, r); held {
		if more, err := s.JoinedServers(ctx, r); err == nil {
			servers = append(servers, more...)
		}
	}
	_, err = k.KnockRemote(ctx, r, u, withReason(s.profileContent(ctx, u, "knock"), reason), servers)
	return err
}
