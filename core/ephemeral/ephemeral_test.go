package ephemeral

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func forEngines(t *testing.T, f func(t *testing.T, s *Service)) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			s := New(testtable.Open(t, engine), "x", nil)
			s.Devices = func(_ context.Context, u id.UserID) ([]id.DeviceID, error) {
				if u == "@bob:x" {
					return []id.DeviceID{"B1", "B2"}, nil
				}
				return nil, nil
			}
			f(t, s)
		})
	}
}

func entries(t *testing.T, st *stream.Stream) []stream.Entry {
	t.Helper()
	es, _, err := st.Read(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestTypingChangesAndExpiry(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		const room = id.RoomID("!r:x")
		if err := s.SetTyping(ctx, room, "@a:x", true, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTyping(ctx, room, "@a:x", true, time.Minute); err != nil {
			t.Fatal(err)
		}
		if n := len(entries(t, s.Typing)); n != 1 {
			t.Fatalf("a refresh recorded a change: %d entries", n)
		}
		if u, _ := s.TypingUsers(ctx, room); len(u) != 1 || u[0] != "@a:x" {
			t.Fatalf("typing users %v", u)
		}
		if err := s.SetTyping(ctx, room, "@a:x", false, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTyping(ctx, room, "@a:x", false, 0); err != nil {
			t.Fatal(err)
		}
		if n := len(entries(t, s.Typing)); n != 2 {
			t.Fatalf("stop recorded %d entries, want 2 in all", n)
		}

		// Expiry: many readers notice at once, one change is recorded.
		if err := s.SetTyping(ctx, room, "@b:x", true, 30*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
		items, err := s.AllTyping(ctx)
		if err != nil || len(items) != 1 {
			t.Fatalf("all typing %v %v", items, err)
		}
		if u, _ := s.TypingUsers(ctx, room); len(u) != 0 {
			t.Fatalf("expired typist still listed: %v", u)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Expire(ctx, items[0]); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if n := len(entries(t, s.Typing)); n != 4 {
			t.Fatalf("%d typing entries after concurrent expiry, want 4", n)
		}
		if items, _ := s.AllTyping(ctx); len(items) != 0 {
			t.Fatalf("expired item left: %v", items)
		}
	})
}

func TestReceiptsMoveForwardOnly(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		const room = id.RoomID("!r:x")
		var wg sync.WaitGroup
		for seq := int64(1); seq <= 20; seq++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.PutReceipt(ctx, room, "@a:x", ReceiptRead, "", id.EventID("$e"+string(rune('a'+seq))), seq); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		up, err := s.ReadUpTo(ctx, "@a:x", []id.RoomID{room})
		if err != nil || up[room].Seq != 20 {
			t.Fatalf("read up to %+v %v", up, err)
		}
		if err := s.PutReceipt(ctx, room, "@a:x", ReceiptReadPrivate, ThreadMain, "$late", 25); err != nil {
			t.Fatal(err)
		}
		if up, _ := s.ReadUpTo(ctx, "@a:x", []id.RoomID{room}); up[room].Seq != 25 {
			t.Fatalf("the further of public and private receipts: %+v", up[room])
		}
		all, err := s.RoomReceipts(ctx, room)
		if err != nil || len(all) != 2 {
			t.Fatalf("room receipts %v %v", all, err)
		}
		es := entries(t, s.Receipts)
		var last Receipt
		_ = json.Unmarshal(es[len(es)-1].Data, &last)
		if last.EventID != "$late" {
			t.Fatalf("last stream entry %+v", last)
		}
	})
}

func TestToDeviceDeliveryAndAcknowledgement(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		msgs := map[id.UserID]map[id.DeviceID]json.RawMessage{
			"@bob:x":    {"*": json.RawMessage(`{"n":1}`)},
			"@carl:y":   {"C": json.RawMessage(`{"n":2}`)}, // another server: dropped
			"@nobody:x": {"Z": json.RawMessage(`{}`)},      // no such device: dropped
		}
		for range 2 { // the same transaction twice
			if err := s.SendToDevice(ctx, "@a:x", "A1", "txn1", "m.test", msgs); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range []id.DeviceID{"B1", "B2"} {
			got, next, err := s.ToDevice(ctx, "@bob:x", d, 0, MaxToDevicePerSync)
			if err != nil || len(got) != 1 || got[0].Sender != "@a:x" || got[0].Type != "m.test" {
				t.Fatalf("%s: %+v %v", d, got, err)
			}
			if next != 1 {
				t.Fatalf("%s: next %d", d, next)
			}
		}
		// Another transaction to one device only.
		if err := s.SendToDevice(ctx, "@a:x", "A1", "txn2", "m.test", map[id.UserID]map[id.DeviceID]json.RawMessage{"@bob:x": {"B1": json.RawMessage(`{"n":3}`)}}); err != nil {
			t.Fatal(err)
		}
		got, next, err := s.ToDevice(ctx, "@bob:x", "B1", 0, 1)
		if err != nil || len(got) != 1 || next != 1 {
			t.Fatalf("limited read %+v %d %v", got, next, err)
		}
		start, err := s.AckToDevice(ctx, "@bob:x", "B1", 1)
		if err != nil || start != 1 {
			t.Fatalf("ack %d %v", start, err)
		}
		// An older token cannot go back before the acknowledgement.
		if start, err := s.AckToDevice(ctx, "@bob:x", "B1", 0); err != nil || start != 1 {
			t.Fatalf("ack of an old token %d %v", start, err)
		}
		got, next, err = s.ToDevice(ctx, "@bob:x", "B1", start, MaxToDevicePerSync)
		if err != nil || len(got) != 1 || next != 2 {
			t.Fatalf("after ack %+v %d %v", got, next, err)
		}
		var c struct{ N int }
		_ = json.Unmarshal(got[0].Content, &c)
		if c.N != 3 {
			t.Fatalf("message %+v", got[0])
		}
		if _, err := s.AckToDevice(ctx, "@bob:x", "B1", 2); err != nil {
			t.Fatal(err)
		}
		if es := entries(t, s.ToDeviceStream("@bob:x", "B1")); len(es) != 0 {
			t.Fatalf("acknowledged messages not deleted: %d", len(es))
		}
	})
}

// TestExpireDue: due notices of the rooms in scope are expired (and the
// change recorded), the next expiry among the rest is reported, and rooms
// out of scope are left alone.
func TestExpireDue(t *testing.T) {
	forEngines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		start := time.Now().Truncate(time.Millisecond) // the table's TTLs follow the real clock
		now := start
		s.Now = func() time.Time { return now }
		set := func(r id.RoomID, u id.UserID, d time.Duration) {
			if err := s.SetTyping(ctx, r, u, true, d); err != nil {
				t.Fatal(err)
			}
		}
		set("!a:x", "@short:x", time.Second)
		set("!a:x", "@long:x", time.Minute)
		set("!b:x", "@other:x", time.Second)
		now = now.Add(2 * time.Second)
		items, err := s.AllTyping(ctx)
		if err != nil {
			t.Fatal(err)
		}
		due, err := s.ExpireDue(ctx, items, func(r id.RoomID) bool { return r == "!a:x" })
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(time.Minute + 100*time.Millisecond); due == nil || !due.Equal(want) {
			t.Fatalf("next due %v, want %v", due, want)
		}
		if u, _ := s.TypingUsers(ctx, "!a:x"); len(u) != 1 || u[0] != "@long:x" {
			t.Fatalf("typing in !a %v: the expired notice is still there", u)
		}
		left, _ := s.AllTyping(ctx)
		if len(left) != 2 {
			t.Fatalf("%d items left, want 2 (the out-of-scope room is untouched)", len(left))
		}
		if due, _ := s.ExpireDue(ctx, nil, func(id.RoomID) bool { return true }); due != nil {
			t.Fatalf("nothing typing, due %v", due)
		}
	})
}
