package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// Rooms of versions 1 and 2 (server-chosen event ids, reference pairs)
// shared between two servers: remote join, messages both ways, a state
// change, an invite across, and leaves.

func TestFederationLegacyRoomVersions(t *testing.T) {
	for _, rv := range []id.RoomVersion{"1", "2"} {
		t.Run("v"+string(rv), func(t *testing.T) {
			legacyRoomOverFederation(t, testenv.StartFederation(t, 2, nil), rv)
		})
	}
}

func TestFederationLegacyRoomVersionAWS(t *testing.T) {
	legacyRoomOverFederation(t, testenv.StartFederationOn(t, "aws", 2, nil), "1")
}

func legacyRoomOverFederation(t *testing.T, srv []*testenv.FedServer, rv id.RoomVersion) {
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, b, "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old room", RoomVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := alice.SendText(ctx, room, "before bob"); err != nil {
		t.Fatal(err)
	}
	// An invite to a server not in the room, rejected through
	// make_leave/send_leave.
	dave := fedUser(t, b, "dave")
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
		t.Fatalf("invite to a v%s room: %v", rv, err)
	}
	testenv.Eventually(t, 20*time.Second, "dave's invite on b", func() error {
		st, err := dave.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			return err
		}
		if _, ok := st.Rooms.Invite[room]; !ok {
			return fmt.Errorf("no invite in dave's sync")
		}
		return nil
	})
	if _, err := dave.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("rejecting the invite: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, "a sees the rejection", func() error {
		var m event.MemberEventContent
		if err := alice.StateEvent(ctx, room, event.StateMember, string(dave.UserID), &m); err != nil {
			return err
		}
		if m.Membership != event.MembershipLeave {
			return fmt.Errorf("dave is %s", m.Membership)
		}
		return nil
	})
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Name}}); err != nil {
		t.Fatalf("remote join of a v%s room: %v", rv, err)
	}
	var create event.CreateEventContent
	if err := bob.StateEvent(ctx, room, event.StateCreate, "", &create); err != nil || create.RoomVersion != rv {
		t.Fatalf("create event on b: %+v %v", create, err)
	}
	if err := hasBody(ctx, bob, room, "before bob"); err != nil {
		t.Fatalf("history on b: %v", err)
	}
	// Events carry ids chosen by their own server (the v1/v2 format).
	sentA, err := alice.SendText(ctx, room, "from alice")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "bob sees alice's message", func() error { return hasBody(ctx, bob, room, "from alice") })
	sentB, err := bob.SendText(ctx, room, "from bob")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "alice sees bob's message", func() error { return hasBody(ctx, alice, room, "from bob") })
	for _, c := range []struct {
		eid    id.EventID
		server string
	}{{sentA.EventID, a.Name}, {sentB.EventID, b.Name}} {
		if !strings.HasSuffix(string(c.eid), ":"+c.server) {
			t.Fatalf("event id %s is not named by %s", c.eid, c.server)
		}
	}
	ev, err := alice.GetEvent(ctx, room, sentB.EventID)
	if err != nil || ev.Sender != bob.UserID {
		t.Fatalf("bob's event on a: %+v %v", ev, err)
	}
	ga, _ := fedBodies(ctx, alice, room)
	gb, _ := fedBodies(ctx, bob, room)
	if strings.Join(ga, "|") != strings.Join(gb, "|") {
		t.Fatalf("timelines differ:\na: %q\nb: %q", ga, gb)
	}

	// Over federation, a serves the events in their version's format: the
	// id in the event, references as [id, {"sha256": hash}] pairs.
	bf := b.App.Server.Federation()
	wire, err := bf.Client.GetEvent(ctx, a.Name, sentA.EventID)
	if err != nil || len(wire.PDUs) != 1 {
		t.Fatalf("GET /event from a: %+v %v", wire, err)
	}
	var v1 struct {
		EventID    id.EventID        `json:"event_id"`
		PrevEvents []json.RawMessage `json:"prev_events"`
	}
	if err := json.Unmarshal(wire.PDUs[0], &v1); err != nil || v1.EventID != sentA.EventID || len(v1.PrevEvents) == 0 ||
		!strings.HasPrefix(string(v1.PrevEvents[0]), `["$`) || !strings.Contains(string(v1.PrevEvents[0]), `"sha256"`) {
		t.Fatalf("event from a is not in the v%s format: %s (%v)", rv, wire.PDUs[0], err)
	}

	// Events b crafts itself: a good one is accepted, one whose content
	// does not match its hash is redacted, a forged signature is refused.
	good, goodID := craftLegacy(t, b, room, bob.UserID, "crafted good", nil, nil)
	tampered, tamperedID := craftLegacy(t, b, room, bob.UserID, "original", nil, func(c map[string]any) { c["body"] = "tampered" })
	forger := mfed.GenerateSigningKey()
	forger.ID = bf.Key.ID
	forged, forgedID := craftLegacy(t, b, room, bob.UserID, "forged", forger, nil)
	resp, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: "legacy-" + string(rv),
		Origin: b.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{good, tampered, forged}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		id      id.EventID
		errPart string
	}{{goodID, ""}, {tamperedID, ""}, {forgedID, "signature"}} {
		r, ok := resp.PDUs[want.id]
		if !ok || (want.errPart == "") != (r.Error == "") || !strings.Contains(r.Error, want.errPart) {
			t.Fatalf("result for %s: %+v (want error containing %q) in %+v", want.id, r, want.errPart, resp.PDUs)
		}
	}
	if err := hasBody(ctx, alice, room, "crafted good"); err != nil {
		t.Fatal(err)
	}
	if tev, err := alice.GetEvent(ctx, room, tamperedID); err != nil || len(tev.Content.Raw) != 0 {
		t.Fatalf("event with a bad content hash is not redacted: %+v %v", tev, err)
	}
	if _, err := alice.GetEvent(ctx, room, forgedID); err == nil {
		t.Fatal("event with a forged signature is visible")
	}

	// A state change on a reaches b.
	if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "legacy topic"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "bob sees the topic", func() error {
		var topic event.TopicEventContent
		if err := bob.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil {
			return err
		}
		if topic.Topic != "legacy topic" {
			return fmt.Errorf("topic %q", topic.Topic)
		}
		return nil
	})

	// An invite across (countersigned by b in the v1 format), accepted.
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("invite to a v%s room: %v", rv, err)
	}
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	members := func(c *mautrix.Client, want int) func() error {
		return func() error {
			m, err := c.JoinedMembers(ctx, room)
			if err != nil {
				return err
			}
			if len(m.Joined) != want {
				return fmt.Errorf("members %v, want %d", m.Joined, want)
			}
			return nil
		}
	}
	testenv.Eventually(t, 20*time.Second, "three members on a", members(alice, 3))
	testenv.Eventually(t, 20*time.Second, "three members on b", members(bob, 3))

	// Bob leaves; a sees it, and carol still gets alice's messages.
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("leave: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, "alice sees bob leave", members(alice, 2))
	if _, err := alice.SendText(ctx, room, "after bob"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "carol sees alice", func() error { return hasBody(ctx, carol, room, "after bob") })
}

// craftLegacy builds a message of a v1/v2 room on server s (its own event
// id and reference pairs), signed with key (s's own when nil), its content
// changed after signing by tamper.
func craftLegacy(t *testing.T, s *testenv.FedServer, room id.RoomID, sender id.UserID, body string, key *mfed.SigningKey, tamper func(map[string]any)) (json.RawMessage, id.EventID) {
	t.Helper()
	f := s.App.Server.Federation()
	c, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
	tmpl, err := f.Rooms.BuildTemplate(context.Background(), room, rooms.NewEvent{Type: "m.room.message", Sender: sender, Content: c})
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		key = f.Key
	}
	p := tmpl.PDU
	if _, err := rooms.SignPDU(tmpl.RoomVersion, p, s.Name, key); err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		m := map[string]any{}
		_ = json.Unmarshal(p.Content, &m)
		tamper(m)
		p.Content, _ = json.Marshal(m)
	}
	raw, err := rooms.EncodePDU(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, p.InternalMeta.EventID
}
