package server

import (
	"context"
	"net/netip"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/netguard"
	"github.com/cirrus-matrix/cirrus/core/push"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// withPush adds push rules, notifications and the unread counts /sync
// reports. It runs after withSync: the rules live in the account data that
// service keeps (and /sync shows).
//
// Push rules are evaluated by the fan-out worker (core/fanout: in-process
// in the all-in-one, the FanoutWorker Lambda on AWS), once per event and
// idempotently: notifications, unread counts and push gateway delivery.
// Each notifying event also records the room in the server-wide "unread"
// stream (one entry per event, not per member) so a waiting /sync wakes and
// reports the room's new counts.
func (s *Server) withPush() *Server {
	rules := &push.Rules{UserData: s.userDataAPI.UserData}
	// Pusher URLs come from users: never let them reach internal hosts.
	allow := netguard.PublicAddress
	if s.cfg.PushAllowPrivate {
		allow = func(netip.Addr) bool { return true }
		s.deps.Log.Warn("CIRRUS_PUSH_ALLOW_PRIVATE=true: push gateways may be on loopback and private addresses (tests only)")
	}
	pushers := &push.Pushers{T: s.deps.Table}
	unread := &stream.Stream{T: s.deps.Table, Name: "unread", Now: s.deps.Now}
	s.syncAPI.Service.UnreadChanges = unread
	s.syncAPI.Service.Notifier.UnreadStream = unread.Name
	ev := &push.Evaluator{T: s.deps.Table, Rooms: s.rooms, Rules: rules,
		ServerName: s.cfg.Client.ServerName, Log: s.deps.Log, Now: s.deps.Now,
		Gateway:     &push.Gateway{Pushers: pushers, Log: s.deps.Log, Client: netguard.NewClient(allow)},
		Changes:     unread,
		ChangeEntry: clientsync.UnreadChangedEntry,
		Notify:      s.syncAPI.Service.Notifier.Notify}
	s.fanout.Register("push", ev.Handle)
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

func (u unreadCounts) Markers(ctx context.Context, user id.UserID, room id.RoomID, afterSeq int64, max int) ([]clientsync.UnreadMarker, error) {
	ms, err := push.Markers(ctx, u.t, user, room, afterSeq, max)
	out := make([]clientsync.UnreadMarker, len(ms))
	for i, m := range ms {
		out[i] = clientsync.UnreadMarker(m)
	}
	return out, err
}
