package federation

import (
	"crypto/ed25519"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// TestParseEventV1: events of room versions 1 and 2 carry their id and
// [id, hashes] references; parseEvent takes the id from the event and keeps
// the format for storing (rooms.EncodePDU gives back the same bytes).
func TestParseEventV1(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	ref := func(e string) pdu.V1EventReference {
		return pdu.V1EventReference{ID: id.EventID(e), Hashes: pdu.Hashes{SHA256: make([]byte, 32)}}
	}
	v := &pdu.RoomV1PDU{
		EventID: "$abc:remote.test", RoomID: "!r:remote.test", Sender: "@a:remote.test", Type: "m.room.message",
		Content: []byte(`{"body":"hi","msgtype":"m.text"}`), Depth: 5, OriginServerTS: 1,
		AuthEvents: []pdu.V1EventReference{ref("$create:remote.test")}, PrevEvents: []pdu.V1EventReference{ref("$prev:remote.test")},
	}
	if err := v.Sign("1", "remote.test", "ed25519:k", priv); err != nil {
		t.Fatal(err)
	}
	raw, err := canonicaljson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, rv := range []id.RoomVersion{"1", "2"} {
		p, eid, err := parseEvent(rv, raw)
		if err != nil {
			t.Fatalf("v%s: %v", rv, err)
		}
		if eid != "$abc:remote.test" || p.InternalMeta.EventID != eid || p.PrevEvents[0] != "$prev:remote.test" || p.AuthEvents[0] != "$create:remote.test" {
			t.Fatalf("v%s: %s %+v", rv, eid, p)
		}
		if roomOf(rv, p, eid) != "!r:remote.test" {
			t.Fatalf("room %s", roomOf(rv, p, eid))
		}
		back, err := rooms.EncodePDU(p)
		if err != nil || string(back) != string(raw) {
			t.Fatalf("re-encoded differently:\n%s\n%s", raw, back)
		}
	}
	// The other format for a version is refused.
	if _, _, err := parseEvent("10", raw); err == nil {
		t.Fatal("a v1 event parsed as room v10")
	}
	v3 := []byte(`{"auth_events":["$a"],"content":{},"depth":1,"origin_server_ts":1,"prev_events":["$b"],"room_id":"!r:remote.test","sender":"@a:remote.test","type":"m.room.message"}`)
	if _, _, err := parseEvent("1", v3); err == nil {
		t.Fatal("a v3+ event parsed as room v1")
	}
	bad := []byte(`{"auth_events":[],"content":{},"depth":1,"event_id":"nope","origin_server_ts":1,"prev_events":[],"room_id":"!r:remote.test","sender":"@a:remote.test","type":"m.room.message"}`)
	if _, _, err := parseEvent("1", bad); err == nil {
		t.Fatal("an event id without a server was accepted")
	}
}
