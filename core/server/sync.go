package server

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// SyncConfig is the /sync settings.
type SyncConfig struct {
	// MaxWait caps a long-poll (CIRRUS_SYNC_MAX_WAIT; under API Gateway's
	// 30 s). Zero means clientsync.DefaultMaxWait.
	MaxWait time.Duration
	// Poll makes waiting syncs also watch the streams' counters in the
	// table, for deployments where other processes write too (every
	// CIRRUS_STORAGE=aws deployment). Without it only this process's own
	// writes wake them, which is exact for the embedded all-in-one.
	Poll bool
}

// withSync adds /sync and the user data endpoints (filters, account data,
// tags, presence, typing, receipts, read markers, to-device): the services,
// the notifier that wakes waiting syncs after each write in this process,
// and the room hook that feeds it.
func (s *Server) withSync() *Server {
	t, now := s.deps.Table, s.deps.Now
	n := &clientsync.Notifier{EventsStream: s.rooms.Events.Name}
	ud := &userdata.Service{T: t, Now: now, Notify: n.Notify}
	eph := ephemeral.New(t, s.cfg.Client.ServerName, now)
	eph.Notify = n.Notify
	eph.NotifyMany = n.NotifyMany
	eph.Devices = func(ctx context.Context, u id.UserID) ([]id.DeviceID, error) {
		devs, err := s.accounts.Devices(ctx, u)
		if err != nil {
			return nil, err
		}
		out := make([]id.DeviceID, len(devs))
		for i, d := range devs {
			out[i] = d.ID
		}
		return out, nil
	}
	svc := &clientsync.Service{T: t, Rooms: s.rooms, UserData: ud, Ephemeral: eph, Notifier: n,
		MaxWait: s.cfg.Sync.MaxWait, Log: s.deps.Log, Now: now}
	if s.cfg.Sync.Poll {
		svc.Waker = &clientsync.PollWaker{T: t}
		// Every process bumps the signal items after its writes, so
		// waiting syncs poll those instead of every stream counter.
		n.Signals = t
		n.OnSignalError = func(err error) { s.deps.Log.Warn("sync: bumping a wake-up signal", "err", err) }
	}
	// Presence changes of local users go into the presence stream that
	// incremental syncs read (other hooks, such as federation's, chain
	// after this one).
	svc.Presence = &stream.Stream{T: t, Name: "presence", Now: now}
	n.PresenceStream = svc.Presence.Name
	prevPresence := ud.OnPresence
	ud.OnPresence = func(ctx context.Context, u id.UserID) {
		if prevPresence != nil {
			prevPresence(ctx, u)
		}
		svc.PresenceChanged(ctx, u)
	}
	if s.keys != nil {
		svc.DeviceLists = s.keys
		svc.DeviceListCounter = s.keys.Changes.CounterKey()
		n.DeviceListsStream = s.keys.Changes.Name
		s.keys.Notify = n.Notify // key uploads wake waiting syncs too
	}
	prev := s.rooms.OnPersist
	s.rooms.OnPersist = func(ev *rooms.Event) {
		if prev != nil {
			prev(ev) // device-list and federation hooks first: their writes are then visible too
		}
		n.Notify(s.rooms.Events.Name)
		if s.keys != nil && ev.Type == "m.room.member" {
			n.Notify(s.keys.Changes.Name)
		}
		// Then the fan-out worker's wake-up (push rules, counts, gateways
		// and the other registered handlers run there, core/fanout).
		s.fanout.OnPersist(ev)
	}
	if s.fed != nil {
		// Typing, receipts and presence to and from other servers.
		s.fed.EnableEphemeralEDUs(eph, ud)
		s.fanout.Register("federation-presence", s.fed.PresenceOnJoin(ud))
	}
	s.roomsAPI.Ignored = ud.IgnoredUsers
	s.syncAPI = &clientapi.SyncAPI{Service: svc, UserData: ud}
	s.userDataAPI = &clientapi.UserDataAPI{ServerName: s.cfg.Client.ServerName, UserData: ud, Ephemeral: eph, Rooms: s.rooms}
	return s
}
