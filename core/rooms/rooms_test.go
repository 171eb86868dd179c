package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func newEngines(t *testing.T, tb table.Table, n int) []*rooms.Service {
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*rooms.Service, n)
	for i := range out {
		// Separate engines over one table: what separate Lambda instances are.
		out[i] = rooms.New(tb, "cirrus.test", key, nil, nil)
	}
	return out
}

func msg(body string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return b
}

// TestConcurrentSenders: many writers on several engine instances send into
// one room; every acknowledged event is stored exactly once, the room's
// sequence is dense, the local DAG linear, and stream order follows room order.
func TestConcurrentSenders(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tb := testtable.Open(t, engine)
			svcs := newEngines(t, tb, 3)
			alice := id.UserID("@alice:cirrus.test")
			for _, v := range []id.RoomVersion{"10", "12"} {
				t.Run("v"+string(v), func(t *testing.T) {
					room, err := svcs[0].CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Version: v, Preset: "public_chat"})
					if err != nil {
						t.Fatal(err)
					}
					before, _ := svcs[0].LatestSeq(ctx, room)
					const writers, each = 6, 8
					var mu sync.Mutex
					acked := map[id.EventID]bool{}
					var wg sync.WaitGroup
					for w := range writers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							svc := svcs[w%len(svcs)]
							for i := range each {
								eid, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg(fmt.Sprintf("%d-%d", w, i)),
									TxnID: fmt.Sprintf("t%d-%d", w, i), Device: "DEV"})
								if err != nil {
									t.Error(err)
									return
								}
								mu.Lock()
								if acked[eid] {
									t.Errorf("event %s acknowledged twice", eid)
								}
								acked[eid] = true
								mu.Unlock()
							}
						}()
					}
					wg.Wait()
					last, _ := svcs[0].LatestSeq(ctx, room)
					if last-before != writers*each {
						t.Fatalf("room grew by %d events, want %d", last-before, writers*each)
					}
					page, err := svcs[1].Timeline(ctx, room, rooms.Forward, 0, 0, 1000)
					if err != nil {
						t.Fatal(err)
					}
					seen := map[id.EventID]bool{}
					var prevID id.EventID
					var prevPos int64
					for i, ev := range page.Events {
						if ev.Seq != int64(i+1) {
							t.Fatalf("event %d has seq %d", i, ev.Seq)
						}
						var p struct {
							Prev []id.EventID `json:"prev_events"`
						}
						_ = json.Unmarshal(ev.PDU, &p)
						if i > 0 && (len(p.Prev) != 1 || p.Prev[0] != prevID) {
							t.Fatalf("event %d: prev_events %v, want [%s] (DAG not linear)", i, p.Prev, prevID)
						}
						if ev.Pos <= prevPos {
							t.Fatalf("event %d: stream position %d not after %d", i, ev.Pos, prevPos)
						}
						prevID, prevPos = ev.EventID, ev.Pos
						seen[ev.EventID] = true
					}
					for eid := range acked {
						if !seen[eid] {
							t.Fatalf("acknowledged event %s missing from the timeline", eid)
						}
					}
					// A retried transaction id returns the same event and stores nothing.
					again, err := svcs[2].Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg("x"), TxnID: "t0-0", Device: "DEV"})
					if err != nil || !acked[again] {
						t.Fatalf("txn retry gave %s %v", again, err)
					}
					if l2, _ := svcs[0].LatestSeq(ctx, room); l2 != last {
						t.Fatalf("txn retry stored a new event")
					}
				})
			}
		})
	}
}

func TestAuthorization(t *testing.T) {
	ctx := context.Background()
	tb := testtable.Open(t, "bolt")
	svc := newEngines(t, tb, 1)[0]
	alice, bob := id.UserID("@alice:cirrus.test"), id.UserID("@bob:cirrus.test")
	room, err := svc.CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: bob, Content: msg("hi")}); err == nil {
		t.Fatal("a non-member sent a message")
	}
	if _, err := svc.Join(ctx, room, bob, ""); err == nil {
		t.Fatal("joined an invite-only room without an invite")
	}
	if err := svc.Invite(ctx, room, alice, bob, "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Join(ctx, room, bob, ""); err != nil {
		t.Fatal(err)
	}
	empty := ""
	if _, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.name", StateKey: &empty, Sender: bob, Content: json.RawMessage(`{"name":"x"}`)}); err == nil {
		t.Fatal("power level 0 changed the room name")
	}
	if _, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.name", StateKey: &empty, Sender: alice, Content: json.RawMessage(`{"name":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Ban(ctx, room, alice, bob, "spam"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Join(ctx, room, bob, ""); err == nil {
		t.Fatal("banned user rejoined")
	}
}
