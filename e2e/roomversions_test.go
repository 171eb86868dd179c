package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// TestEveryRoomVersion creates a room of each version 1–12, joins, sends,
// changes state, reads back through /messages, /event, /state and /sync,
// and redacts; v1/v2 events carry server-chosen ids ($opaque:server).
func TestEveryRoomVersion(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		legacyID := regexp.MustCompile(`^\$[A-Za-z0-9_-]+:` + regexp.QuoteMeta(env.Vars["CIRRUS_SERVER_NAME"]) + `$`)
		hashID := regexp.MustCompile(`^\$[A-Za-z0-9_+/-]{43}$`)
		for v := 1; v <= 12; v++ {
			rv := id.RoomVersion(fmt.Sprint(v))
			t.Run("v"+string(rv), func(t *testing.T) {
				room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: rv, Preset: "public_chat", Name: "v" + string(rv)})
				if err != nil {
					t.Fatal(err)
				}
				r := room.RoomID
				var create map[string]any
				if err := alice.StateEvent(ctx, r, event.StateCreate, "", &create); err != nil {
					t.Fatal(err)
				}
				if create["room_version"] != string(rv) {
					t.Fatalf("create content %v", create)
				}
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					t.Fatalf("join: %v", err)
				}
				sent, err := bob.SendText(ctx, r, "hello v"+string(rv))
				if err != nil {
					t.Fatalf("send: %v", err)
				}
				want := hashID
				if v <= 2 {
					want = legacyID
				}
				if !want.MatchString(string(sent.EventID)) {
					t.Fatalf("event id %s has the wrong format for v%s", sent.EventID, rv)
				}
				// v3 ids are standard base64 and may hold "/": read back by id
				// on every engine (on Lambda the escaped path must survive).
				got, err := alice.GetEvent(ctx, r, sent.EventID)
				if err != nil || got.Content.Raw["body"] != "hello v"+string(rv) || got.Sender != bob.UserID {
					t.Fatalf("read back: %v %v", got, err)
				}
				if _, err := alice.SendStateEvent(ctx, r, event.StateTopic, "", map[string]string{"topic": "t" + string(rv)}); err != nil {
					t.Fatalf("state: %v", err)
				}
				var topic map[string]any
				if err := bob.StateEvent(ctx, r, event.StateTopic, "", &topic); err != nil || topic["topic"] != "t"+string(rv) {
					t.Fatalf("topic %v %v", topic, err)
				}
				// Moderation: alice (PL 100, or creator in v12) redacts bob's message.
				red, err := alice.RedactEvent(ctx, r, sent.EventID, mautrix.ReqRedact{Reason: "gone"})
				if err != nil {
					t.Fatalf("redact: %v", err)
				}
				if !want.MatchString(string(red.EventID)) {
					t.Fatalf("redaction id %s", red.EventID)
				}
				msgs, err := bob.Messages(ctx, r, "", "", mautrix.DirectionBackward, nil, 50)
				if err != nil {
					t.Fatal(err)
				}
				var found, foundRed bool
				for _, ev := range msgs.Chunk {
					switch ev.ID {
					case sent.EventID:
						found = true
						if ev.Sender != bob.UserID || len(ev.Content.Raw) != 0 {
							t.Fatalf("redacted event still has content %v", ev.Content.Raw)
						}
					case red.EventID:
						foundRed = true
					}
				}
				if !found || !foundRed {
					t.Fatalf("/messages lacks the message (%v) or its redaction (%v)", found, foundRed)
				}
				// Membership: bob leaves and alice bans him.
				if _, err := bob.LeaveRoom(ctx, r); err != nil {
					t.Fatalf("leave: %v", err)
				}
				if _, err := alice.BanUser(ctx, r, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
					t.Fatalf("ban: %v", err)
				}
				if _, err := bob.JoinRoomByID(ctx, r); errcode(err) != "M_FORBIDDEN" {
					t.Fatalf("banned join: %v", err)
				}
				// /sync shows the room with its timeline.
				resp, err := alice.SyncRequest(ctx, 0, "", "", true, event.PresenceOnline)
				if err != nil {
					t.Fatal(err)
				}
				jr, ok := resp.Rooms.Join[r]
				if !ok {
					t.Fatalf("room not in sync")
				}
				var ban bool
				for _, ev := range jr.Timeline.Events {
					if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) && ev.Content.Raw["membership"] == "ban" {
						ban = true
					}
				}
				if !ban {
					t.Fatalf("sync timeline lacks the ban: %d events", len(jr.Timeline.Events))
				}
			})
		}
		for _, bad := range []string{"0", "13", "99", "1.5"} {
			st, body, _ := do(t, env, http.MethodPost, "/_matrix/client/v3/createRoom", alice.AccessToken, `{"room_version":"`+bad+`"}`)
			if st != http.StatusBadRequest || body["errcode"] != "M_UNSUPPORTED_ROOM_VERSION" {
				t.Fatalf("version %q: %d %v", bad, st, body)
			}
		}
		caps, err := alice.Capabilities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"1", "2", "12"} {
			if caps.RoomVersions == nil || caps.RoomVersions.Available[v] != "stable" {
				t.Fatalf("capabilities lack stable v%s: %+v", v, caps.RoomVersions)
			}
		}
	})
}
