package server

import (
	"context"
	"net/netip"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/netguard"
	"github.com/cirrus-matrix/cirrus/core/push"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// withPush adds push rules, notifications and the unread counts /sync
// reports. It runs after withSync: the rules live in the account data that
// service keeps (and /sync shows).
//
// Push rules are evaluated inline in the room engine's OnPersist, in the
// process that persisted the event, before the hooks that wake waiting
// syncs (so a woken /sync sees the counts). The FanoutQueue is not used yet.
// Delivery to HTTP push gateways runs in a goroutine: reliable in the
// all-in-one, best effort on Lambda (a frozen instance delays it, a
// recycled one loses it) until it moves to a queue worker.
func (s *Server) withPush() *Server {
	rules := &push.Rules{UserData: s.userDataAPI.UserData}
	// Pusher URLs come from users: never let them reach internal hosts.
	allow := netguard.PublicAddress
	if s.cfg.PushAllowPrivate {
		allow = func(netip.Addr) bool { return true }
		s.deps.Log.Warn("CIRRUS_PUSH_ALLOW_PRIVATE=true: push gateways may be on loopback and private addresses (tests only)")
	}
	pushers := &push.Pushers{T: s.deps.Table}
	ev := &push.Evaluator{T: s.deps.Table, Rooms: s.rooms, Rules: rules,
		ServerName: s.cfg.Client.ServerName, Log: s.deps.Log, Now: s.deps.Now,
		Gateway: &push.Gateway{Pushers: pushers, Log: s.deps.Log, Client: netguard.NewClient(allow)}}
	prev := s.rooms.OnPersist
	s.rooms.OnPersist = func(e *rooms.Event) {
		ev.OnPersist(e)
		if prev != nil {
			prev(e)
		}
	}
	s.syncAPI.Service.Unread = unreadCounts{s.deps.Table}
	// Clients learn the push rules from /sync: send the server's defaults
	// until the user has changed a rule (and so stored the ruleset).
	s.syncAPI.Service.DefaultAccountData = func(u id.UserID) []userdata.AccountData {
		c, err := push.DefaultContent(u)
		if err != nil {
			return nil
		}
		return []userdata.AccountData{{AccountDataRef: userdata.AccountDataRef{Type: userdata.TypePushRules}, Content: c}}
	}
	s.pushAPI = &clientapi.PushAPI{Rules: rules, Pushers: pushers, T: s.deps.Table, Rooms: s.rooms, Ephemeral: s.userDataAPI.Ephemeral}
	return s
}

type unreadCounts struct{ t table.Table }

func (u unreadCounts) Counts(ctx context.Context, user id.UserID, room id.RoomID, afterSeq int64, max int) (int, int, error) {
	return push.Counts(ctx, u.t, user, room, afterSeq, max)
}
