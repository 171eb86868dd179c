package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// fanoutRoom makes a three-member room (so plain messages notify under the
// default rules): the reader, and two senders.
func fanoutRoom(t *testing.T, env *testenv.Env) (reader, a, b *mautrix.Client, room id.RoomID) {
	t.Helper()
	ctx := context.Background()
	reader = register(t, env, "reader", "pw")
	a = register(t, env, "senda", "pw")
	b = register(t, env, "sendb", "pw")
	cr, err := a.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{reader, b} {
		if _, err := c.JoinRoomByID(ctx, cr.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	return reader, a, b, cr.RoomID
}

// notificationIDs lists the event ids of the user's notifications (all pages).
func notificationIDs(t *testing.T, env *testenv.Env, c *mautrix.Client) []string {
	t.Helper()
	var out []string
	from := ""
	for {
		path := "/_matrix/client/v3/notifications?limit=50"
		if from != "" {
			path += "&from=" + from
		}
		st, body, _ := do(t, env, "GET", path, c.AccessToken, "")
		if st != 200 {
			t.Fatalf("notifications: %d %v", st, body)
		}
		list, _ := body["notifications"].([]any)
		for _, n := range list {
			ev, _ := n.(map[string]any)["event"].(map[string]any)
			out = append(out, fmt.Sprint(ev["event_id"]))
		}
		next, _ := body["next_token"].(string)
		if next == "" {
			return out
		}
		from = next
	}
}

func unreadCount(t *testing.T, c *mautrix.Client, room id.RoomID) (int, int) {
	t.Helper()
	resp, err := c.SyncRequest(context.Background(), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	jr := resp.Rooms.Join[room]
	if jr == nil || jr.UnreadNotifications == nil {
		return -1, -1
	}
	return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount
}

// expectNotified waits until the reader has exactly the wanted
// notifications (each once) and the matching unread count.
func expectNotified(t *testing.T, env *testenv.Env, reader *mautrix.Client, room id.RoomID, want map[id.EventID]bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d notifications", len(want)), func() error {
		got := notificationIDs(t, env, reader)
		seen := map[string]int{}
		for _, e := range got {
			seen[e]++
		}
		for e, n := range seen {
			if n != 1 {
				t.Fatalf("event %s notified %d times", e, n)
			}
			if !want[id.EventID(e)] {
				t.Fatalf("unexpected notification for %s", e)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d notifications of %d", len(got), len(want))
		}
		if n, _ := unreadCount(t, reader, room); n != len(want) {
			return fmt.Errorf("unread count %d, want %d", n, len(want))
		}
		return nil
	})
}

// TestFanoutConcurrentSendersNotifyOnce: messages sent concurrently by two
// users reach a syncing reader exactly once, and the worker records
// exactly one notification per message, with the unread count to match.
func TestFanoutConcurrentSendersNotifyOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		reader, a, b, room := fanoutRoom(t, env)
		first := doSync(t, env, reader, nil)
		const each = 8
		var mu sync.Mutex
		sent := map[id.EventID]bool{}
		var wg sync.WaitGroup
		for _, c := range []*mautrix.Client{a, b} {
			wg.Go(func() {
				for i := range each {
					r, err := c.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("m", i)})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					sent[r.EventID] = true
					mu.Unlock()
				}
			})
		}
		sendersDone := make(chan struct{})
		go func() {
			wg.Wait()
			close(sendersDone)
		}()
		// The reader syncs while they send (and for a while after: a loaded
		// machine makes the sends slow).
		seen := map[id.EventID]int{}
		since := first.NextBatch
		many := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1000}}})
		deadline := time.Now().Add(2 * time.Minute)
		var doneAt time.Time
		for len(seen) < 2*each && time.Now().Before(deadline) {
			if doneAt.IsZero() {
				select {
				case <-sendersDone:
					doneAt = time.Now()
				default:
				}
			} else if time.Since(doneAt) > 20*time.Second {
				break
			}
			s := doSync(t, env, reader, map[string]string{"since": since, "timeout": "2000", "filter": many})
			if jr := s.Rooms.Join[room]; jr != nil && jr.Timeline.Limited {
				t.Fatalf("limited timeline with a limit of 1000: %v", s.Raw)
			}
			since = s.NextBatch
			if jr := s.Rooms.Join[room]; jr != nil {
				for _, e := range jr.Timeline.Events {
					if e.Type == "m.room.message" {
						seen[e.EventID]++
					}
				}
			}
		}
		wg.Wait()
		if len(seen) != 2*each {
			t.Fatalf("reader saw %d of %d messages", len(seen), 2*each)
		}
		for e, n := range seen {
			if n != 1 || !sent[e] {
				t.Fatalf("%s seen %d times (sent: %v)", e, n, sent[e])
			}
		}
		expectNotified(t, env, reader, room, sent)
	})
}

// TestFanoutRetriesAndRedelivery: a handler that fails once holds the
// cursor at its event, which is then processed after the retry; a worker
// that "died" before saving its cursor (the cursor moved back) handles the
// events again without a second notification or count.
func TestFanoutRetriesAndRedelivery(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		reader, a, _, room := fanoutRoom(t, env)
		var mu sync.Mutex
		calls := map[id.EventID]int{}
		failed := false
		for _, app := range env.Apps {
			app.Server.Fanout().Register("flaky", func(ctx context.Context, ev *rooms.Event) error {
				mu.Lock()
				defer mu.Unlock()
				if ev.Type != "m.room.message" {
					return nil
				}
				calls[ev.EventID]++
				if !failed {
					failed = true
					return errors.New("fails once")
				}
				return nil
			})
		}
		want := map[id.EventID]bool{}
		var ids []id.EventID
		for i := range 3 {
			eid := sendText(t, a, room, fmt.Sprint("retry ", i))
			want[eid] = true
			ids = append(ids, eid)
		}
		expectNotified(t, env, reader, room, want)
		mu.Lock()
		if calls[ids[0]] != 2 || calls[ids[1]] != 1 || calls[ids[2]] != 1 {
			t.Errorf("handler calls %v: want the failed event twice, the others once", calls)
		}
		mu.Unlock()

		// The worker dies after its handlers ran, before its cursor moved:
		// the cursor goes back to the start and every event comes again.
		for _, app := range env.Apps {
			if err := app.Table.Put(ctx, table.Item{PK: "fanout", SK: "cursor", Num: 0, Version: 1000}, table.Cond{}); err != nil {
				t.Fatal(err)
			}
			_ = app.Server.Fanout().Wake(ctx, 0)
			break // one table
		}
		testenv.Eventually(t, 30*time.Second, "events handled again", func() error {
			mu.Lock()
			defer mu.Unlock()
			if calls[ids[2]] < 2 {
				return fmt.Errorf("calls %v", calls)
			}
			return nil
		})
		// A new event proves the worker is past the replay.
		eid := sendText(t, a, room, "after the replay")
		want[eid] = true
		expectNotified(t, env, reader, room, want)
	})
}
