package ephemeral

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

func TestRemoteTypingAndReceipts(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		const room = id.RoomID("!r:x")
		var typed []string
		var receipts []Receipt
		s.OnLocalTyping = func(_ context.Context, r id.RoomID, u id.UserID, typing bool, _ time.Duration) {
			typed = append(typed, string(u)+map[bool]string{true: " on", false: " off"}[typing])
		}
		s.OnLocalReceipt = func(_ context.Context, rc Receipt) { receipts = append(receipts, rc) }

		// Remote users: stored, shown, not echoed to the hooks.
		if err := s.SetRemoteTyping(ctx, room, "@r:remote", true); err != nil {
			t.Fatal(err)
		}
		if u, _ := s.TypingUsers(ctx, room); len(u) != 1 || u[0] != "@r:remote" {
			t.Fatalf("typing users %v", u)
		}
		if err := s.SetRemoteTyping(ctx, room, "@a:x", true); err == nil {
			t.Fatal("a remote server set a local user's typing")
		}
		if err := s.PutRemoteReceipt(ctx, Receipt{RoomID: room, UserID: "@r:remote", Type: ReceiptRead, ThreadID: ThreadMain, EventID: "$e2", TS: 1234, Seq: 2}); err != nil {
			t.Fatal(err)
		}
		// Receipts from afar only move forward too.
		if err := s.PutRemoteReceipt(ctx, Receipt{RoomID: room, UserID: "@r:remote", Type: ReceiptRead, ThreadID: ThreadMain, EventID: "$e1", TS: 9999, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []Receipt{
			{RoomID: room, UserID: "@a:x", Type: ReceiptRead, EventID: "$e2", Seq: 2},
			{RoomID: room, UserID: "@r:remote", Type: ReceiptReadPrivate, EventID: "$e2", Seq: 2},
		} {
			if err := s.PutRemoteReceipt(ctx, bad); err == nil {
				t.Fatalf("accepted %+v", bad)
			}
		}
		rs, err := s.RoomReceipts(ctx, room)
		if err != nil || len(rs) != 1 || rs[0].TS != 1234 || rs[0].EventID != "$e2" || rs[0].ThreadID != ThreadMain {
			t.Fatalf("receipts %+v %v", rs, err)
		}
		if len(typed) != 0 || len(receipts) != 0 {
			t.Fatalf("remote changes reached the hooks: %v %v", typed, receipts)
		}

		// Local users: every change reaches the hooks, private receipts do not.
		if err := s.SetTyping(ctx, room, "@a:x", true, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTyping(ctx, room, "@a:x", true, time.Minute); err != nil { // a refresh
			t.Fatal(err)
		}
		if err := s.SetTyping(ctx, room, "@a:x", false, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutReceipt(ctx, room, "@a:x", ReceiptReadPrivate, "", "$e2", 2); err != nil {
			t.Fatal(err)
		}
		if err := s.PutReceipt(ctx, room, "@a:x", ReceiptRead, "$root", "$e2", 2); err != nil {
			t.Fatal(err)
		}
		if err := s.PutReceipt(ctx, room, "@a:x", ReceiptRead, "$root", "$e1", 1); err != nil { // backwards: nothing
			t.Fatal(err)
		}
		if len(typed) != 3 || typed[0] != "@a:x on" || typed[1] != "@a:x on" || typed[2] != "@a:x off" {
			t.Fatalf("typing hook calls %v", typed)
		}
		if len(receipts) != 1 || receipts[0].Type != ReceiptRead || receipts[0].ThreadID != "$root" || receipts[0].TS == 0 {
			t.Fatalf("receipt hook calls %+v", receipts)
		}

		// A local typist's expiry goes out as a stop.
		if err := s.SetTyping(ctx, room, "@a:x", true, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		items, err := s.AllTyping(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range items {
			if ti.UserID == "@a:x" {
				if err := s.Expire(ctx, ti); err != nil {
					t.Fatal(err)
				}
			}
		}
		if last := typed[len(typed)-1]; last != "@a:x off" || len(typed) != 5 {
			t.Fatalf("after expiry: %v", typed)
		}
	})
}

func TestRemoteTypingExpires(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		now := time.Now()
		s.Now = func() time.Time { return now }
		const room = id.RoomID("!r:x")
		if err := s.SetRemoteTyping(ctx, room, "@r:remote", true); err != nil {
			t.Fatal(err)
		}
		now = now.Add(RemoteTypingTimeout - time.Second)
		if u, _ := s.TypingUsers(ctx, room); len(u) != 1 {
			t.Fatalf("typing users before the timeout: %v", u)
		}
		now = now.Add(2 * time.Second)
		if u, _ := s.TypingUsers(ctx, room); len(u) != 0 {
			t.Fatalf("typing users after the timeout: %v", u)
		}
	})
}
