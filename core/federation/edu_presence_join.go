package federation

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// PresenceOnJoin returns a fan-out handler (core/fanout) that shares
// presence when a room gains a member: a server whose user joined hears
// the presence of our users in the room, and the room's servers hear the
// presence of our user who joined. Presence otherwise only travels when it
// changes, so without this a new room-mate would see "offline" until then.
// Sending presence again is harmless, so the handler is idempotent. It is
// best effort: a failure is logged, not returned, so that it never holds up
// the fan-out stream (push, the federation outbox) behind it.
func (s *Service) PresenceOnJoin(ud *userdata.Service) func(ctx context.Context, ev *rooms.Event) error {
	return func(ctx context.Context, ev *rooms.Event) error {
		if err := s.presenceOnJoin(ctx, ud, ev); err != nil {
			s.Log.Warn("sharing presence with a new room member", "event_id", ev.EventID, "err", err)
		}
		return nil
	}
}

func (s *Service) presenceOnJoin(ctx context.Context, ud *userdata.Service, ev *rooms.Event) error {
	if s.Sender.Q == nil || ev.Type != "m.room.member" || ev.StateKey == nil || ev.Outlier || ev.Rejected || ev.SoftFailed ||
		ev.Membership() != "join" || wasJoined(ev) {
		return nil
	}
	target := id.UserID(*ev.StateKey)
	if s.isLocal(target) {
		dests, err := s.RoomDestinations(ctx, ev.RoomID)
		if err != nil {
			return err
		}
		return s.sendPresenceOf(ctx, ud, dests, []id.UserID{target})
	}
	server := serverOf(target)
	if ok, err := s.aclAllows(ctx, ev.RoomID, server); err != nil || !ok {
		return err
	}
	members, err := s.Rooms.CurrentState(ctx, ev.RoomID, "m.room.member")
	if err != nil {
		return err
	}
	var ours []id.UserID
	for _, m := range members {
		if u := id.UserID(*m.StateKey); m.Membership() == "join" && s.isLocal(u) {
			ours = append(ours, u)
		}
	}
	return s.sendPresenceOf(ctx, ud, []string{server}, ours)
}

// wasJoined reports whether a join event only replaced an earlier join
// (a profile change, not a new member).
func wasJoined(ev *rooms.Event) bool {
	if ev.Replaces == nil {
		return false
	}
	var c struct {
		Membership string `json:"membership"`
	}
	return json.Unmarshal(ev.Replaces.Content, &c) == nil && c.Membership == "join"
}

// sendPresenceOf sends the presence of users who have any to share (not
// plain offline) to the destinations, in m.presence EDUs of up to 100
// updates.
func (s *Service) sendPresenceOf(ctx context.Context, ud *userdata.Service, dests []string, users []id.UserID) error {
	if len(dests) == 0 {
		return nil
	}
	var push []userdata.RemotePresence
	flush := func() error {
		if len(push) == 0 {
			return nil
		}
		err := s.SendEDU(ctx, dests, EDUPresence, presenceContent{Push: push})
		push = nil
		return err
	}
	for _, u := range users {
		st, err := ud.Presence(ctx, u)
		if err != nil {
			return err
		}
		if st.LastActiveAgo == nil { // never set: nothing to tell
			continue
		}
		push = append(push, remotePresenceOf(u, st))
		if len(push) == 100 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// remotePresenceOf is a presence status as an m.presence update.
func remotePresenceOf(u id.UserID, st *userdata.PresenceStatus) userdata.RemotePresence {
	p := userdata.RemotePresence{UserID: u, Presence: st.Presence, StatusMsg: st.StatusMsg}
	if st.LastActiveAgo != nil {
		p.LastActiveAgo = *st.LastActiveAgo
	}
	if st.CurrentlyActive != nil {
		p.CurrentlyActive = *st.CurrentlyActive
	}
	return p
}
