package userdata

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestRemotePresence(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			now := time.UnixMilli(1_000_000_000)
			s := &Service{T: testtable.Open(t, engine), Now: func() time.Time { return now }}
			var changed []id.UserID
			s.OnPresence = func(_ context.Context, u id.UserID) { changed = append(changed, u) }
			const remote = id.UserID("@r:remote")
			msg := "away"
			if err := s.PutRemotePresence(ctx, RemotePresence{UserID: remote, Presence: PresenceUnavailable, StatusMsg: &msg, LastActiveAgo: 30_000}); err != nil {
				t.Fatal(err)
			}
			st, err := s.Presence(ctx, remote)
			if err != nil || st.Presence != PresenceUnavailable || st.StatusMsg == nil || *st.StatusMsg != "away" || *st.LastActiveAgo != 30_000 {
				t.Fatalf("presence %+v %v", st, err)
			}
			if err := s.PutRemotePresence(ctx, RemotePresence{UserID: remote, Presence: "asleep"}); err == nil {
				t.Fatal("an invalid state was stored")
			}
			// Online and recently active: currently active.
			now = now.Add(time.Minute)
			if err := s.PutRemotePresence(ctx, RemotePresence{UserID: remote, Presence: PresenceOnline, LastActiveAgo: 1000}); err != nil {
				t.Fatal(err)
			}
			st, _ = s.Presence(ctx, remote)
			if st.Presence != PresenceOnline || st.StatusMsg != nil || st.CurrentlyActive == nil || !*st.CurrentlyActive {
				t.Fatalf("presence %+v", st)
			}
			// Both remote updates changed something; the invalid one did not.
			if len(changed) != 2 || changed[0] != remote || changed[1] != remote {
				t.Fatalf("remote presence changes reported: %v", changed)
			}
			changed = nil
			if err := s.PutRemotePresence(ctx, RemotePresence{UserID: remote, Presence: PresenceOnline, LastActiveAgo: 1000}); err != nil {
				t.Fatal(err)
			}
			if len(changed) != 0 {
				t.Fatalf("a repeat was reported: %v", changed)
			}
			// Local changes do: explicit ones always, syncs when the state moves.
			if err := s.SetPresence(ctx, "@a:x", PresenceOnline, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.TouchPresence(ctx, "@a:x", PresenceOnline); err != nil {
				t.Fatal(err)
			}
			now = now.Add(2 * time.Minute)
			if err := s.TouchPresence(ctx, "@a:x", PresenceOnline); err != nil { // a refresh of last_active
				t.Fatal(err)
			}
			if err := s.TouchPresence(ctx, "@a:x", PresenceUnavailable); err != nil {
				t.Fatal(err)
			}
			if len(changed) != 2 {
				t.Fatalf("local presence changes reported: %v", changed)
			}
		})
	}
}
