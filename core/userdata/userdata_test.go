package userdata

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestTagsUnderConcurrency(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			s := &Service{T: testtable.Open(t, engine)}
			ctx := context.Background()
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := s.SetTag(ctx, "@a:x", "!r:x", fmt.Sprintf("u.%d", i), json.RawMessage(`{"order":0.5}`)); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			tags, err := s.Tags(ctx, "@a:x", "!r:x")
			if err != nil || len(tags) != 10 {
				t.Fatalf("%d tags after concurrent adds: %v", len(tags), err)
			}
			if err := s.DeleteTag(ctx, "@a:x", "!r:x", "u.3"); err != nil {
				t.Fatal(err)
			}
			if tags, _ := s.Tags(ctx, "@a:x", "!r:x"); len(tags) != 9 {
				t.Fatalf("%d tags after delete", len(tags))
			}
			es, _, err := s.AccountDataStream("@a:x").Read(ctx, 0, 0)
			if err != nil || len(es) != 11 {
				t.Fatalf("%d stream entries, want one per change (11): %v", len(es), err)
			}
		})
	}
}

func TestAccountDataAndFilters(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			s := &Service{T: testtable.Open(t, engine)}
			ctx := context.Background()
			for _, v := range []string{`{"v":1}`, `{"v":2}`} {
				if err := s.Set(ctx, "@a:x", "", "org.x", json.RawMessage(v)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Set(ctx, "@a:x", "!r:x", "org.x", json.RawMessage(`{"room":true}`)); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetMany(ctx, "@a:x", []AccountDataRef{{Type: "org.x"}, {RoomID: "!r:x", Type: "org.x"}, {Type: "org.none"}})
			if err != nil || len(got) != 2 || string(got[0].Content) != `{"v":2}` || got[1].RoomID != "!r:x" {
				t.Fatalf("get many %+v %v", got, err)
			}
			all, err := s.All(ctx, "@a:x")
			if err != nil || len(all) != 2 {
				t.Fatalf("all %+v %v", all, err)
			}
			if c, err := s.Get(ctx, "@b:x", "", "org.x"); err != nil || c != nil {
				t.Fatalf("another user's data: %s %v", c, err)
			}
			id1, err := s.PutFilter(ctx, "@a:x", []byte(`{"room":{}}`))
			if err != nil {
				t.Fatal(err)
			}
			id2, _ := s.PutFilter(ctx, "@a:x", []byte(`{"room":{}}`))
			id3, _ := s.PutFilter(ctx, "@a:x", []byte(`{}`))
			if id1 != id2 || id1 == id3 || id1[0] == '{' {
				t.Fatalf("filter ids %q %q %q", id1, id2, id3)
			}
			if f, _ := s.GetFilter(ctx, "@a:x", id1); string(f) != `{"room":{}}` {
				t.Fatalf("filter %s", f)
			}
			if f, _ := s.GetFilter(ctx, "@b:x", id1); f != nil {
				t.Fatal("another user's filter readable")
			}
		})
	}
}

func TestPresence(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			s := &Service{T: testtable.Open(t, engine), Now: func() time.Time { return now }}
			ctx := context.Background()
			if p, _ := s.Presence(ctx, "@a:x"); p.Presence != PresenceOffline {
				t.Fatalf("no record: %+v", p)
			}
			if err := s.TouchPresence(ctx, "@a:x", PresenceOnline); err != nil {
				t.Fatal(err)
			}
			now = now.Add(30 * time.Second)
			_ = s.TouchPresence(ctx, "@a:x", PresenceOnline) // within a minute: no write
			p, _ := s.Presence(ctx, "@a:x")
			if p.Presence != PresenceOnline || *p.LastActiveAgo != 30_000 || p.CurrentlyActive == nil || !*p.CurrentlyActive {
				t.Fatalf("online %+v", p)
			}
			now = now.Add(10 * time.Minute)
			if p, _ := s.Presence(ctx, "@a:x"); p.Presence != PresenceUnavailable {
				t.Fatalf("idle user still online: %+v", p)
			}
			msg := "away"
			if err := s.SetPresence(ctx, "@a:x", PresenceUnavailable, &msg); err != nil {
				t.Fatal(err)
			}
			if err := s.TouchPresence(ctx, "@a:x", PresenceOffline); err != nil {
				t.Fatal(err)
			}
			if p, _ := s.Presence(ctx, "@a:x"); p.Presence != PresenceOffline || p.StatusMsg == nil || *p.StatusMsg != "away" {
				t.Fatalf("offline keeps the status message: %+v", p)
			}
		})
	}
}

// TestPresenceReannounced: a user who keeps syncing online is reported to
// OnPresence when the state changes and again every reannounceEvery, not
// at each refresh of last_active.
func TestPresenceReannounced(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	start := now
	var announced []time.Duration
	s := &Service{T: testtable.Open(t, "bolt"), Now: func() time.Time { return now }}
	s.OnPresence = func(context.Context, id.UserID) { announced = append(announced, now.Sub(start)) }
	ctx := context.Background()
	for now.Sub(start) <= 60*time.Minute {
		if err := s.TouchPresence(ctx, "@a:x", PresenceOnline); err != nil {
			t.Fatal(err)
		}
		now = now.Add(30 * time.Second)
	}
	want := []time.Duration{0, 25 * time.Minute, 50 * time.Minute}
	if fmt.Sprint(announced) != fmt.Sprint(want) {
		t.Fatalf("announced at %v, want %v", announced, want)
	}
	// Going offline is announced once; staying offline is not repeated.
	announced = nil
	for range 3 {
		now = now.Add(30 * time.Minute)
		if err := s.TouchPresence(ctx, "@a:x", PresenceOffline); err != nil {
			t.Fatal(err)
		}
	}
	if len(announced) != 1 {
		t.Fatalf("offline announced %d times, want once", len(announced))
	}
}
