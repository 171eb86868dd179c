package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// errRemote is the answer where federation would be needed but the engine
// has no federation (Service.Remote is nil).
var errRemote = httpapi.Forbidden("this server has no federation configured, so it cannot reach other servers")

func (s *Service) profileContent(ctx context.Context, u id.UserID, membership string) map[string]any {
	c := map[string]any{"membership": membership}
	if s.Profile != nil && s.isLocal(u) {
		name, avatar := s.Profile(ctx, u)
		if name != "" {
			c["displayname"] = name
		}
		if avatar != "" {
			c["avatar_url"] = avatar
		}
	}
	return c
}

func (s *Service) setMember(ctx context.Context, r id.RoomID, sender, target id.UserID, c map[string]any) (id.EventID, error) {
	k := string(target)
	return s.Send(ctx, r, NewEvent{Type: "m.room.member", StateKey: &k, Sender: sender, Content: content(c)})
}

func withReason(c map[string]any, reason string) map[string]any {
	if reason != "" {
		c["reason"] = reason
	}
	return c
}

// Invite invites target (a local user) into the room.
func (s *Service) Invite(ctx context.Context, r id.RoomID, sender, target id.UserID, reason string, isDirect bool) error {
	if !s.isLocal(target) && s.Remote == nil {
		return errRemote
	}
	cur, err := s.Membership(ctx, r, target)
	if err != nil {
		return err
	}
	switch cur {
	case "join":
		return httpapi.Forbidden("%s is already in the room", target)
	case "ban":
		return httpapi.Forbidden("%s is banned from the room", target)
	}
	c := s.profileContent(ctx, target, "invite")
	if isDirect {
		c["is_direct"] = true
	}
	if !s.isLocal(target) {
		return s.inviteRemote(ctx, r, sender, target, withReason(c, reason)) // remote.go
	}
	_, err = s.setMember(ctx, r, sender, target, withReason(c, reason))
	return err
}

// Join joins a local user to a room this server knows. For restricted
// rooms (v8+) it fills join_authorised_via_users_server with a local member
// who may invite, when the user qualifies through an allowed room.
func (s *Service) Join(ctx context.Context, r id.RoomID, u id.UserID, reason string) (id.EventID, error) {
	return s.JoinVia(ctx, r, u, reason, nil)
}

// JoinVia is Join, with servers to ask when the room is on other servers
// (the client's server_name/via, or the alias's servers).
func (s *Service) JoinVia(ctx context.Context, r id.RoomID, u id.UserID, reason string, servers []string) (id.EventID, error) {
	if remote, err := s.needsRemoteJoin(ctx, r); err != nil {
		return "", err
	} else if remote {
		return s.joinRemote(ctx, r, u, reason, servers) // remote.go
	}
	if _, err := s.getHead(ctx, r); err != nil {
		if errors.Is(err, ErrNoRoom) {
			return "", httpapi.NotFound("unknown room %s", r)
		}
		return "", err
	}
	cur, err := s.Membership(ctx, r, u)
	if err != nil {
		return "", err
	}
	c := withReason(s.profileContent(ctx, u, "join"), reason)
	if cur != "join" && cur != "invite" {
		if via, err := s.restrictedJoinAuthoriser(ctx, r, u); err != nil {
			return "", err
		} else if via != "" {
			c["join_authorised_via_users_server"] = via
		}
	}
	return s.setMember(ctx, r, u, u, c)
}

// restrictedJoinAuthoriser returns a local user who can vouch for u's join
// under restricted join rules, or "" if the rule is not restricted or u
// qualifies through no allowed room.
func (s *Service) restrictedJoinAuthoriser(ctx context.Context, r id.RoomID, u id.UserID) (id.UserID, error) {
	jr, err := s.CurrentStateEvent(ctx, r, "m.room.join_rules", "")
	if err != nil || jr == nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string    `json:"type"`
			RoomID id.RoomID `json:"room_id"`
		} `json:"allow"`
	}
	_ = json.Unmarshal(jr.Content, &c)
	if c.JoinRule != "restricted" && c.JoinRule != "knock_restricted" {
		return "", nil
	}
	qualified := false
	for _, a := range c.Allow {
		if a.Type == "m.room_membership" {
			if m, err := s.Membership(ctx, a.RoomID, u); err == nil && m == "join" {
				qualified = true
				break
			}
		}
	}
	if !qualified {
		return "", nil
	}
	members, err := s.CurrentState(ctx, r, "m.room.member")
	if err != nil {
		return "", err
	}
	for _, m := range members {
		cand := id.UserID(*m.StateKey)
		if m.Membership() == "join" && s.isLocal(cand) {
			if ok, err := s.CanInvite(ctx, r, cand); err == nil && ok {
				return cand, nil
			}
		}
	}
	return "", nil
}

// CanInvite reports whether u's power level reaches the room's invite level.
func (s *Service) CanInvite(ctx context.Context, r id.RoomID, u id.UserID) (bool, error) {
	pl, err := s.PowerLevels(ctx, r)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(u) >= pl.Invite, nil
}

// Leave leaves (or rejects an invite, or withdraws a knock).
func (s *Service) Leave(ctx context.Context, r id.RoomID, u id.UserID, reason string) error {
	cur, err := s.Membership(ctx, r, u)
	if err != nil {
		if errors.Is(err, ErrNoRoom) {
			return httpapi.NotFound("unknown room")
		}
		return err
	}
	if cur == "" || cur == "leave" {
		if s.Remote != nil {
			// An invite (or knock) to a room on another server.
			if m, err := s.MembershipOf(ctx, u, r); err == nil && m != nil && (m.Membership == "invite" || m.Membership == "knock") {
				return s.Remote.LeaveRemote(ctx, r, u, reason)
			}
		}
		return httpapi.Forbidden("you are not in this room")
	}
	if cur == "ban" {
		return httpapi.Forbidden("you are banned from this room")
	}
	_, err = s.setMember(ctx, r, u, u, withReason(map[string]any{"membership": "leave"}, reason))
	return err
}

// Kick, Ban and Unban change another user's membership.
func (s *Service) Kick(ctx context.Context, r id.RoomID, sender, target id.UserID, reason string) error {
	cur, err := s.Membership(ctx, r, target)
	if err != nil {
		return err
	}
	if cur != "join" && cur != "invite" && cur != "knock" {
		return httpapi.Forbidden("%s is not in the room", target)
	}
	_, err = s.setMember(ctx, r, sender, target, withReason(map[string]any{"membership": "leave"}, reason))
	return err
}

// Ban bans target.
func (s *Service) Ban(ctx context.Context, r id.RoomID, sender, target id.UserID, reason string) error {
	_, err := s.setMember(ctx, r, sender, target, withReason(map[string]any{"membership": "ban"}, reason))
	return err
}

// Unban lifts a ban (target's membership becomes leave).
func (s *Service) Unban(ctx context.Context, r id.RoomID, sender, target id.UserID, reason string) error {
	cur, err := s.Membership(ctx, r, target)
	if err != nil {
		return err
	}
	if cur != "ban" {
		return httpapi.Forbidden("%s is not banned", target)
	}
	_, err = s.setMember(ctx, r, sender, target, withReason(map[string]any{"membership": "leave"}, reason))
	return err
}

// Knock asks to join a room whose join rule allows knocking (v7+).
func (s *Service) Knock(ctx context.Context, r id.RoomID, u id.UserID, reason string) error {
	if _, err := s.getHead(ctx, r); err != nil {
		if errors.Is(err, ErrNoRoom) {
			return httpapi.NotFound("unknown room (knocking on rooms of other servers needs federation)")
		}
		return err
	}
	_, err := s.setMember(ctx, r, u, u, withReason(s.profileContent(ctx, u, "knock"), reason))
	return err
}

// membershipItem is the per-user membership index item. Its Version is the
// stream position of the membership event, so a read-modify-write of the
// record (Forget) can be conditioned on no membership change in between.
func membershipItem(u id.UserID, m MembershipRecord) table.Item {
	k := membershipKey(u, m.RoomID)
	d, _ := json.Marshal(m)
	return table.Item{PK: k.PK, SK: k.SK, Data: d, Num: m.Pos, Version: m.Pos}
}

// Forget hides a room the user has left from their account. It is
// conditioned on the record not changing meanwhile: a rejoin racing the
// forget must not be overwritten by the old "leave" record.
func (s *Service) Forget(ctx context.Context, r id.RoomID, u id.UserID) error {
	for range maxAttempts {
		it, err := s.T.Get(ctx, membershipKey(u, r))
		if errors.Is(err, table.ErrNotFound) {
			return httpapi.NotFound("you have never been in this room")
		}
		if err != nil {
			return err
		}
		var m MembershipRecord
		if err := json.Unmarshal(it.Data, &m); err != nil {
			return err
		}
		if m.Membership == "join" || m.Membership == "invite" || m.Membership == "knock" {
			return &httpapi.Error{Status: 400, Code: "M_UNKNOWN", Message: "leave the room before forgetting it"}
		}
		m.Forgotten = true
		it.Data, _ = json.Marshal(m)
		err = s.T.Put(ctx, it, table.IfVersion(it.Version))
		if !errors.Is(err, table.ErrConditionFailed) {
			return err
		}
	}
	return httpapi.LimitExceeded(100)
}

// LeaveAllRooms leaves every room the user is joined to, invited to or
// knocking on (account deactivation).
func (s *Service) LeaveAllRooms(ctx context.Context, u id.UserID) error {
	ms, err := s.UserRooms(ctx, u)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Membership == "join" || m.Membership == "invite" || m.Membership == "knock" {
			if err := s.Leave(ctx, m.RoomID, u, ""); err != nil {
				s.Log.Warn("leaving room on deactivation", "room", m.RoomID, "user", u, "err", err)
			}
		}
	}
	return nil
}

// ProfileChanged re-sends the user's member event in every joined room with
// the new displayname and avatar.
func (s *Service) ProfileChanged(ctx context.Context, u id.UserID, displayname, avatarURL string) error {
	ms, err := s.UserRooms(ctx, u)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Membership != "join" {
			continue
		}
		c := map[string]any{"membership": "join"}
		if displayname != "" {
			c["displayname"] = displayname
		}
		if avatarURL != "" {
			c["avatar_url"] = avatarURL
		}
		if _, err := s.setMember(ctx, m.RoomID, u, u, c); err != nil {
			s.Log.Warn("profile update in room", "room", m.RoomID, "user", u, "err", err)
		}
	}
	return nil
}
