package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func typingUsers(jr *syncJoined) ([]any, bool) {
	if jr == nil {
		return nil, false
	}
	e := findSyncEvent(jr.Ephemeral.Events, "m.typing")
	if e == nil {
		return nil, false
	}
	u, _ := e.Content["user_ids"].([]any)
	return u, true
}

// TestTyping: typing shows in the room's ephemeral events, stops when asked
// and expires by itself.
func TestTyping(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		since := doSync(t, env, bob, nil).NextBatch

		if _, err := alice.UserTyping(ctx, room.RoomID, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		s1 := doSync(t, env, bob, map[string]string{"since": since})
		if u, ok := typingUsers(s1.Rooms.Join[room.RoomID]); !ok || len(u) != 1 || u[0] != string(alice.UserID) {
			t.Fatalf("typing: %v", s1.Raw)
		}
		// A refresh changes nothing others see.
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		s2 := doSync(t, env, bob, map[string]string{"since": s1.NextBatch})
		if len(s2.Rooms.Join) != 0 {
			t.Fatalf("typing refresh produced an update: %v", s2.Raw)
		}
		if _, err := alice.UserTyping(ctx, room.RoomID, false, 0); err != nil {
			t.Fatal(err)
		}
		s3 := doSync(t, env, bob, map[string]string{"since": s2.NextBatch})
		if u, ok := typingUsers(s3.Rooms.Join[room.RoomID]); !ok || len(u) != 0 {
			t.Fatalf("typing stop: %v", s3.Raw)
		}

		// Expiry: a long-poll returns with the emptied list once the
		// timeout passes, although nobody writes anything.
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		s4 := doSync(t, env, bob, map[string]string{"since": s3.NextBatch})
		if u, _ := typingUsers(s4.Rooms.Join[room.RoomID]); len(u) != 1 {
			t.Fatalf("typing again: %v", s4.Raw)
		}
		start := time.Now()
		s5 := doSync(t, env, bob, map[string]string{"since": s4.NextBatch, "timeout": "20000"})
		u, ok := typingUsers(s5.Rooms.Join[room.RoomID])
		if !ok || len(u) != 0 {
			t.Fatalf("typing did not expire: %v", s5.Raw)
		}
		if el := time.Since(start); el > 15*time.Second {
			t.Fatalf("expiry noticed after %s", el)
		}
		// The initial sync shows only current typists.
		if _, ok := typingUsers(doSync(t, env, bob, nil).Rooms.Join[room.RoomID]); ok {
			t.Fatalf("expired typing in an initial sync")
		}
	})
}

// TestReceiptsAndUnreadCounts: public and private receipts, threads, read
// markers, and the unread and highlight counts they drive.
func TestReceiptsAndUnreadCounts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		aSince := doSync(t, env, alice, nil).NextBatch
		e1 := sendText(t, alice, room.RoomID, "one")
		sendText(t, alice, room.RoomID, "two")
		mention, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "hey bob", "m.mentions": map[string]any{"user_ids": []string{string(bob.UserID)}}})
		if err != nil {
			t.Fatal(err)
		}
		// The counts come from the fan-out worker, shortly after the sends.
		var b0 *syncResp
		testenv.Eventually(t, 10*time.Second, "unread counts 3, 1", func() error {
			b0 = doSync(t, env, bob, nil)
			if u := b0.Rooms.Join[room.RoomID].Unread; u == nil || u.Notification != 3 || u.Highlight != 1 {
				return fmt.Errorf("unread before reading: %+v", u)
			}
			return nil
		})

		// Bob reads up to e1 publicly: alice sees it, bob's count drops.
		if err := bob.MarkRead(ctx, room.RoomID, e1); err != nil {
			t.Fatal(err)
		}
		a1 := doSync(t, env, alice, map[string]string{"since": aSince})
		rc := findSyncEvent(a1.Rooms.Join[room.RoomID].Ephemeral.Events, "m.receipt")
		if rc == nil {
			t.Fatalf("no receipt for alice: %v", a1.Raw)
		}
		byType, _ := rc.Content[string(e1)].(map[string]any)
		readers, _ := byType["m.read"].(map[string]any)
		if readers[string(bob.UserID)] == nil {
			t.Fatalf("receipt content %v", rc.Content)
		}
		b1 := doSync(t, env, bob, map[string]string{"since": b0.NextBatch})
		if u := b1.Rooms.Join[room.RoomID].Unread; u == nil || u.Notification != 2 || u.Highlight != 1 {
			t.Fatalf("unread after reading one: %+v", u)
		}

		// A private receipt further on: only bob sees it; it clears his counts.
		if err := bob.SendReceipt(ctx, room.RoomID, mention.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		a2 := doSync(t, env, alice, map[string]string{"since": a1.NextBatch})
		if len(a2.Rooms.Join) != 0 {
			t.Fatalf("alice saw bob's private receipt: %v", a2.Raw)
		}
		b2 := doSync(t, env, bob, map[string]string{"since": b1.NextBatch})
		jr := b2.Rooms.Join[room.RoomID]
		if jr == nil || findSyncEvent(jr.Ephemeral.Events, "m.receipt") == nil || jr.Unread.Notification != 0 || jr.Unread.Highlight != 0 {
			t.Fatalf("bob's private receipt: %v", b2.Raw)
		}
		// The initial sync hides others' private receipts too.
		for _, e := range doSync(t, env, alice, nil).Rooms.Join[room.RoomID].Ephemeral.Events {
			if e.Type == "m.receipt" {
				for _, v := range e.Content {
					if _, ok := v.(map[string]any)["m.read.private"]; ok {
						t.Fatalf("private receipt leaked in an initial sync: %v", e.Content)
					}
				}
			}
		}
		// A receipt never moves backwards.
		if err := bob.MarkRead(ctx, room.RoomID, mention.EventID); err != nil {
			t.Fatal(err)
		}
		a3 := doSync(t, env, alice, map[string]string{"since": a2.NextBatch})
		if err := bob.MarkRead(ctx, room.RoomID, e1); err != nil {
			t.Fatal(err)
		}
		if a4 := doSync(t, env, alice, map[string]string{"since": a3.NextBatch}); len(a4.Rooms.Join) != 0 {
			t.Fatalf("receipt moved backwards: %v", a4.Raw)
		}
		// Threaded receipt.
		if err := bob.SendReceipt(ctx, room.RoomID, mention.EventID, event.ReceiptTypeRead, map[string]any{"thread_id": "main"}); err != nil {
			t.Fatal(err)
		}
		a5 := doSync(t, env, alice, map[string]string{"since": a3.NextBatch})
		raw, _ := json.Marshal(a5.Raw)
		if !strings.Contains(string(raw), `"thread_id":"main"`) {
			t.Fatalf("threaded receipt: %s", raw)
		}

		// Read markers: m.fully_read lands in room account data.
		if err := bob.SetReadMarkers(ctx, room.RoomID, &mautrix.ReqSetReadMarkers{FullyRead: e1, Read: e1}); err != nil {
			t.Fatal(err)
		}
		b3 := doSync(t, env, bob, map[string]string{"since": b2.NextBatch})
		fr := findSyncEvent(b3.Rooms.Join[room.RoomID].AccountData.Events, "m.fully_read")
		if fr == nil || fr.Content["event_id"] != string(e1) {
			t.Fatalf("fully read marker: %v", b3.Raw)
		}
		var got map[string]any
		if err := bob.GetRoomAccountData(ctx, room.RoomID, "m.fully_read", &got); err != nil || got["event_id"] != string(e1) {
			t.Fatalf("m.fully_read readable: %v %v", got, err)
		}
		// The receipt endpoint sets it too, forward only.
		if err := bob.SendReceipt(ctx, room.RoomID, mention.EventID, "m.fully_read", nil); err != nil {
			t.Fatal(err)
		}
		if err := bob.GetRoomAccountData(ctx, room.RoomID, "m.fully_read", &got); err != nil || got["event_id"] != string(mention.EventID) {
			t.Fatalf("m.fully_read via receipt: %v %v", got, err)
		}
	})
}

// TestToDevice: messages reach the addressed device once, stay until a
// later sync acknowledges them, and a repeated transaction is not resent.
func TestToDevice(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		bob2 := login(t, env, "bob", "pw", "second")
		b0 := doSync(t, env, bob, nil)
		c0 := doSync(t, env, bob2, nil)

		one := map[id.UserID]map[id.DeviceID]*event.Content{bob.UserID: {bob.DeviceID: {Raw: map[string]any{"n": 1}}}}
		if _, err := alice.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{Messages: one}); err != nil {
			t.Fatal(err)
		}
		b1 := doSync(t, env, bob, map[string]string{"since": b0.NextBatch})
		if len(b1.ToDevice.Events) != 1 || b1.ToDevice.Events[0].Sender != alice.UserID || b1.ToDevice.Events[0].Type != "org.example.ping" ||
			b1.ToDevice.Events[0].Content["n"] != float64(1) {
			t.Fatalf("to-device: %v", b1.Raw)
		}
		// Not acknowledged yet: the same since token delivers it again.
		if again := doSync(t, env, bob, map[string]string{"since": b0.NextBatch}); len(again.ToDevice.Events) != 1 {
			t.Fatalf("unacknowledged message not redelivered: %v", again.Raw)
		}
		// Acknowledged by the next since: gone, also for old tokens.
		if b2 := doSync(t, env, bob, map[string]string{"since": b1.NextBatch}); len(b2.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged message delivered again: %v", b2.Raw)
		}
		if old := doSync(t, env, bob, map[string]string{"since": b0.NextBatch}); len(old.ToDevice.Events) != 0 {
			t.Fatalf("deleted message came back for an old token: %v", old.Raw)
		}
		// The other device got nothing.
		if c1 := doSync(t, env, bob2, map[string]string{"since": c0.NextBatch}); len(c1.ToDevice.Events) != 0 {
			t.Fatalf("message for another device: %v", c1.Raw)
		}

		// "*" reaches every device; a repeated transaction id is a no-op.
		body := `{"messages":{"` + string(bob.UserID) + `":{"*":{"n":2}},"@someone:elsewhere.example":{"X":{"n":3}}}}`
		for range 2 {
			st, resp, _ := do(t, env, "PUT", "/_matrix/client/v3/sendToDevice/org.example.ping/txn-all", alice.AccessToken, body)
			if st != 200 {
				t.Fatalf("send to *: %d %v", st, resp)
			}
		}
		c2 := doSync(t, env, bob2, map[string]string{"since": c0.NextBatch})
		if len(c2.ToDevice.Events) != 1 || c2.ToDevice.Events[0].Content["n"] != float64(2) {
			t.Fatalf("second device, * message: %v", c2.Raw)
		}
		// Initial syncs deliver pending messages too.
		init := doSync(t, env, bob, nil)
		if len(init.ToDevice.Events) != 1 || init.ToDevice.Events[0].Content["n"] != float64(2) {
			t.Fatalf("first device, * message in an initial sync: %v", init.Raw)
		}

		// A long-poll wakes for a to-device message.
		got := make(chan *syncResp, 1)
		go func() { got <- doSync(t, env, bob2, map[string]string{"since": c2.NextBatch, "timeout": "20000"}) }()
		time.Sleep(300 * time.Millisecond)
		st, resp, _ := do(t, env, "PUT", "/_matrix/client/v3/sendToDevice/org.example.ping/txn-wake", alice.AccessToken,
			`{"messages":{"`+string(bob.UserID)+`":{"`+string(bob2.DeviceID)+`":{"n":4}}}}`)
		if st != 200 {
			t.Fatalf("send: %d %v", st, resp)
		}
		select {
		case r := <-got:
			if len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Content["n"] != float64(4) {
				t.Fatalf("woken sync: %v", r.Raw)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("long-poll not woken by a to-device message")
		}
	})
}
