package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// TestSyncWakeUpEveryStream: a held /sync wakes for a write to each kind of
// stream it watches — the room events, the user's account data, the
// device's to-device inbox, the receipts, and the unread counts the fan-out
// worker records — well before the periodic full poll of the counters
// (10 s). On the AWS engines the writes come from other processes than the
// waiting one (the lambda engine: other functions), so this checks that
// every writer's signal reaches the waiter: a missed one would answer only
// at the backstop or the timeout.
func TestSyncWakeUpEveryStream(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		// Let the fan-out worker finish the setup's events, so the first
		// wait starts from quiet streams.
		time.Sleep(time.Second)
		since := doSync(t, env, bob, nil).NextBatch
		for {
			r := doSync(t, env, bob, map[string]string{"since": since, "timeout": "0"})
			if len(r.Rooms.Join) == 0 && len(r.AccountData.Events) == 0 {
				break
			}
			since = r.NextBatch
		}

		var last id.EventID
		countSeen := false // a response showed bob's unread count of 1
		for _, c := range []struct {
			name  string
			write func()
			woke  func(r *syncResp) bool
		}{
			{"room event", func() { last = sendText(t, alice, room.RoomID, "wake") }, func(r *syncResp) bool {
				jr := r.Rooms.Join[room.RoomID]
				return jr != nil && len(jr.Timeline.Events) == 1 && jr.Timeline.Events[0].EventID == last
			}},
			{"unread count", nil, func(r *syncResp) bool {
				// The fan-out worker records bob's notification for the
				// message after the event itself was delivered.
				return countSeen
			}},
			{"account data", func() {
				if err := bob.SetAccountData(ctx, "org.example.wake", map[string]any{"n": 1}); err != nil {
					t.Fatal(err)
				}
			}, func(r *syncResp) bool {
				for _, e := range r.AccountData.Events {
					if e.Type == "org.example.wake" {
						return true
					}
				}
				return false
			}},
			{"to-device", func() {
				req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
					bob.UserID: {bob.DeviceID: {Raw: map[string]any{"n": 1}}}}}
				if _, err := alice.SendToDevice(ctx, event.Type{Type: "org.example.wake", Class: event.ToDeviceEventType}, req); err != nil {
					t.Fatal(err)
				}
			}, func(r *syncResp) bool { return len(r.ToDevice.Events) == 1 }},
			{"receipt", func() {
				if err := carol.MarkRead(ctx, room.RoomID, last); err != nil {
					t.Fatal(err)
				}
			}, func(r *syncResp) bool {
				jr := r.Rooms.Join[room.RoomID]
				return jr != nil && len(jr.Ephemeral.Events) > 0
			}},
		} {
			if c.write == nil && countSeen {
				continue // the count came with the event already
			}
			got := make(chan *syncResp, 1)
			start := time.Now()
			go func() {
				got <- doSync(t, env, bob, map[string]string{"since": since, "timeout": "20000"})
			}()
			if c.write != nil {
				time.Sleep(300 * time.Millisecond) // the long-poll is waiting
				c.write()
			}
			// Answers may split what one write caused (an event, then its
			// unread count): follow them until the change shows.
			deadline := time.Now().Add(8 * time.Second)
			for {
				var r *syncResp
				select {
				case r = <-got:
				case <-time.After(time.Until(deadline)):
					t.Fatalf("%s: no wake-up within %s", c.name, time.Since(start))
				}
				since = r.NextBatch
				if jr := r.Rooms.Join[room.RoomID]; jr != nil && jr.Unread != nil && jr.Unread.Notification == 1 {
					countSeen = true
				}
				if c.woke(r) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: not delivered within %s: %v", c.name, time.Since(start), r.Raw)
				}
				go func() {
					got <- doSync(t, env, bob, map[string]string{"since": since, "timeout": "20000"})
				}()
			}
			if el := time.Since(start); el > 8*time.Second {
				t.Fatalf("%s: woke after %s", c.name, el)
			}
		}

		// An initial sync starts the unread-change stream at its head (a
		// notification was recorded above, so the head is past 0), and a
		// token from before that stream existed (7 parts) is still
		// accepted and answered with a complete one.
		init := doSync(t, env, bob, nil)
		tok, ok := clientsync.ParseToken(init.NextBatch)
		if !ok || tok.NoUnread || tok.Unread == 0 {
			t.Fatalf("initial sync token %q: %+v", init.NextBatch, tok)
		}
		legacy := init.NextBatch[:strings.LastIndexByte(init.NextBatch, '_')]
		r := doSync(t, env, bob, map[string]string{"since": legacy, "timeout": "0"})
		if tok, ok := clientsync.ParseToken(r.NextBatch); !ok || tok.NoUnread || tok.Unread == 0 {
			t.Fatalf("answer to a legacy token: %q", r.NextBatch)
		}
	})
}
