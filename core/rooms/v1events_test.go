package rooms_test

import (
	"context"
	jsonv2 "encoding/json/v2"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestLegacyEventFormat: events of v1/v2 rooms are stored in the original
// format (server-chosen id in the event, [id, hashes] references, signed
// and hashed as such), and read back through ParsePDU/EncodePDU unchanged.
func TestLegacyEventFormat(t *testing.T) {
	ctx := context.Background()
	tb := testtable.Open(t, testtable.Engines[0])
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	svc := rooms.New(tb, "cirrus.test", key, nil, nil)
	alice := id.UserID("@alice:cirrus.test")
	getKey := func(server string, kid id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	for _, rv := range []id.RoomVersion{"1", "2"} {
		t.Run("v"+string(rv), func(t *testing.T) {
			room, err := svc.CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Version: rv, Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			eid, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg("hi")})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(eid), "$") || !strings.HasSuffix(string(eid), ":cirrus.test") {
				t.Fatalf("event id %s", eid)
			}
			ev, err := svc.Event(ctx, eid)
			if err != nil {
				t.Fatal(err)
			}
			var v pdu.RoomV1PDU
			if err := jsonv2.Unmarshal(ev.PDU, &v); err != nil {
				t.Fatalf("stored event is not in the v1 format: %v\n%s", err, ev.PDU)
			}
			if v.EventID != eid || len(v.PrevEvents) != 1 || len(v.AuthEvents) < 3 {
				t.Fatalf("event %+v", v)
			}
			for _, ref := range append(v.AuthEvents, v.PrevEvents...) {
				if len(ref.Hashes.SHA256) != 32 {
					t.Fatalf("reference %s has no sha256", ref.ID)
				}
			}
			if !v.VerifyContentHash() {
				t.Fatal("content hash does not verify")
			}
			if err := v.VerifySignature(rv, "cirrus.test", getKey); err != nil {
				t.Fatalf("signature: %v", err)
			}
			// The referenced event's hash is its reference hash.
			prev, err := svc.Event(ctx, v.PrevEvents[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			var pv pdu.RoomV1PDU
			if err := jsonv2.Unmarshal(prev.PDU, &pv); err != nil {
				t.Fatal(err)
			}
			if h, _ := pv.GetReferenceHash(rv); string(h[:]) != string(v.PrevEvents[0].Hashes.SHA256) {
				t.Fatal("prev_events hash is not the reference hash")
			}
			p, err := rooms.ParsePDU(ev.PDU)
			if err != nil || p.InternalMeta.EventID != eid || p.PrevEvents[0] != v.PrevEvents[0].ID {
				t.Fatalf("ParsePDU: %v %+v", err, p)
			}
			if err := rooms.VerifySignature(rv, p, "cirrus.test", getKey); err != nil || !rooms.VerifyContentHash(p) {
				t.Fatalf("converted event does not verify: %v", err)
			}
			again, err := rooms.EncodePDU(p)
			if err != nil || string(again) != string(ev.PDU) {
				t.Fatalf("EncodePDU changed the event:\n%s\n%s", ev.PDU, again)
			}
		})
	}
	// A v3+ event has no event_id and plain references.
	room, err := svc.CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Version: "10"})
	if err != nil {
		t.Fatal(err)
	}
	eid, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg(`"event_id" in a body`)})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := svc.Event(ctx, eid)
	p, err := rooms.ParsePDU(ev.PDU)
	if err != nil || rooms.AsV1(p) != nil {
		t.Fatalf("a v10 event was taken for v1: %v", err)
	}
	if got, _ := p.GetEventID("10"); got != eid {
		t.Fatalf("v10 id %s, want %s", got, eid)
	}
}
