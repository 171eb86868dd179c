package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func TestRoomLifecycle(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Lobby", Topic: "chat", Preset: "private_chat", RoomAliasName: "lobby"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(room.RoomID), "!") {
			t.Fatalf("room id %s", room.RoomID)
		}
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx, room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "Lobby" {
			t.Fatalf("name %+v %v", name, err)
		}
		state, err := alice.State(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []event.Type{event.StateCreate, event.StatePowerLevels, event.StateJoinRules, event.StateHistoryVisibility, event.StateTopic, event.StateCanonicalAlias} {
			if state[typ] == nil {
				t.Fatalf("missing %s in state %v", typ.Type, state)
			}
		}
		if state[event.StateCreate][""].Content.Raw["room_version"] != "12" {
			t.Fatalf("default room version: %v", state[event.StateCreate][""].Content.Raw)
		}

		// Bob cannot join an invite-only room, then can after an invite.
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("uninvited join: %v", err)
		}
		if _, err := bob.SendText(ctx, room.RoomID, "hi"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("send before join: %v", err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoom(ctx, "#lobby:cirrus.test", nil); err != nil {
			t.Fatalf("join by alias: %v", err)
		}
		joined, err := bob.JoinedRooms(ctx)
		if err != nil || len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != room.RoomID {
			t.Fatalf("joined rooms %+v %v", joined, err)
		}
		members, err := alice.JoinedMembers(ctx, room.RoomID)
		if err != nil || len(members.Joined) != 2 {
			t.Fatalf("joined members %+v %v", members, err)
		}

		// Bob (power 0) may talk but not rename the room.
		sent, err := bob.SendText(ctx, room.RoomID, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]string{"name": "mine"}); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("rename by bob: %v", err)
		}
		ev, err := alice.GetEvent(ctx, room.RoomID, sent.EventID)
		if err != nil || ev.Content.Raw["body"] != "hello" || ev.Sender != bob.UserID {
			t.Fatalf("get event %+v %v", ev, err)
		}

		// Redaction strips content and says why.
		if _, err := alice.RedactEvent(ctx, room.RoomID, sent.EventID, mautrix.ReqRedact{Reason: "rude"}); err != nil {
			t.Fatal(err)
		}
		ev, err = bob.GetEvent(ctx, room.RoomID, sent.EventID)
		if err != nil || len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil {
			t.Fatalf("redacted event %+v %v", ev, err)
		}

		// Kick, ban, unban.
		if _, err := alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx, room.RoomID, "still here?"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("send after kick: %v", err)
		}
		if _, err := alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("invite banned: %v", err)
		}
		if _, err := alice.UnbanUser(ctx, room.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.ForgetRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("forget after leaving: %v", err)
		}
		// Alice leaves; the room stays readable to nobody new.
		if _, err := alice.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "gone"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("send after leave: %v", err)
		}
	})
}

func TestRoomVersionsAndPresets(t *testing.T) {
	env := testenv.Start(t, "embedded", nil)
	ctx := context.Background()
	alice := register(t, env, "alice", "pw")
	bob := register(t, env, "bob", "pw")
	for _, v := range []id.RoomVersion{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: v, Preset: "public_chat"})
		if err != nil {
			t.Fatalf("v%s: %v", v, err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("v%s public join: %v", v, err)
		}
		if _, err := bob.SendText(ctx, room.RoomID, "hi"); err != nil {
			t.Fatalf("v%s send: %v", v, err)
		}
	}
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "99"}); errcode(err) != "M_UNSUPPORTED_ROOM_VERSION" {
		t.Fatalf("unknown version: %v", err)
	}
	// trusted_private_chat in v12: invitees become creators (unlimited power).
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]string{"name": "ours"}); err != nil {
		t.Fatalf("co-creator rename: %v", err)
	}
}

// TestMessagesPagination pages a room both ways and checks that tokens
// neither skip nor repeat events.
func TestMessagesPagination(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		const n = 23
		for i := range n {
			if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		var back []string
		from := ""
		for pages := 0; pages < 20; pages++ {
			resp, err := alice.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 5)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				back = append(back, ev.Content.Raw["body"].(string))
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(back) != n || back[0] != fmt.Sprintf("m%d", n-1) || back[n-1] != "m0" {
			t.Fatalf("backward pages gave %d events: %v", len(back), back)
		}
		var fwd []string
		from = "t0"
		for pages := 0; pages < 20; pages++ {
			resp, err := alice.Messages(ctx, room.RoomID, from, "", mautrix.DirectionForward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				fwd = append(fwd, ev.Content.Raw["body"].(string))
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(fwd) != n || fwd[0] != "m0" || fwd[n-1] != fmt.Sprintf("m%d", n-1) {
			t.Fatalf("forward pages gave %d events: %v", len(fwd), fwd)
		}
	})
}

// TestConcurrentSendersHTTP: several clients send into one room at once;
// every acknowledged event is in the timeline exactly once, in one order.
func TestConcurrentSendersHTTP(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		owner := register(t, env, "owner", "pw")
		room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		const senders, each = 5, 6
		var mu sync.Mutex
		acked := map[id.EventID]bool{}
		var wg sync.WaitGroup
		for s := range senders {
			c := register(t, env, fmt.Sprintf("s%d", s), "pw")
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					resp, err := c.SendText(ctx, room.RoomID, fmt.Sprintf("%d/%d", s, i))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					acked[resp.EventID] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		resp, err := owner.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[id.EventID]bool{}
		for _, ev := range resp.Chunk {
			if seen[ev.ID] {
				t.Fatalf("event %s twice", ev.ID)
			}
			seen[ev.ID] = true
		}
		if len(seen) != len(acked) {
			t.Fatalf("timeline has %d messages, %d acknowledged", len(seen), len(acked))
		}
		for e := range acked {
			if !seen[e] {
				t.Fatalf("acknowledged %s missing", e)
			}
		}
	})
}

func TestRoomBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		r := string(room.RoomID)
		cases := []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			{"bad preset", "POST", "/_matrix/client/v3/createRoom", `{"preset":"party"}`, 400, "M_INVALID_PARAM"},
			{"bad visibility", "POST", "/_matrix/client/v3/createRoom", `{"visibility":"secret"}`, 400, "M_INVALID_PARAM"},
			{"bad invitee", "POST", "/_matrix/client/v3/createRoom", `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
			{"alias taken", "POST", "/_matrix/client/v3/createRoom", `{"room_alias_name":"x1"}`, 200, ""},
			{"alias taken again", "POST", "/_matrix/client/v3/createRoom", `{"room_alias_name":"x1"}`, 400, "M_ROOM_IN_USE"},
			{"bad room id", "PUT", "/_matrix/client/v3/rooms/nope/send/m.room.message/t1", `{}`, 400, "M_INVALID_PARAM"},
			{"unknown room", "PUT", "/_matrix/client/v3/rooms/!nope:cirrus.test/send/m.room.message/t1", `{}`, 403, "M_FORBIDDEN"},
			{"send not json", "PUT", "/_matrix/client/v3/rooms/" + r + "/send/m.room.message/t2", `body`, 400, "M_NOT_JSON"},
			{"send array", "PUT", "/_matrix/client/v3/rooms/" + r + "/send/m.room.message/t3", `[]`, 400, "M_NOT_JSON"},
			{"too large", "PUT", "/_matrix/client/v3/rooms/" + r + "/send/m.room.message/t4", `{"body":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE"},
			{"messages bad dir", "GET", "/_matrix/client/v3/rooms/" + r + "/messages?dir=x", ``, 400, "M_INVALID_PARAM"},
			{"messages bad token", "GET", "/_matrix/client/v3/rooms/" + r + "/messages?dir=b&from=zzz", ``, 400, "M_INVALID_PARAM"},
			{"messages bad limit", "GET", "/_matrix/client/v3/rooms/" + r + "/messages?dir=b&limit=-1", ``, 400, "M_INVALID_PARAM"},
			{"missing event", "GET", "/_matrix/client/v3/rooms/" + r + "/event/$nope", ``, 404, "M_NOT_FOUND"},
			{"missing state", "GET", "/_matrix/client/v3/rooms/" + r + "/state/m.room.topic/", ``, 404, "M_NOT_FOUND"},
			{"invite without user", "POST", "/_matrix/client/v3/rooms/" + r + "/invite", `{}`, 400, "M_MISSING_PARAM"},
			{"invite bad user", "POST", "/_matrix/client/v3/rooms/" + r + "/invite", `{"user_id":"bob"}`, 400, "M_INVALID_PARAM"},
			{"join unknown alias", "POST", "/_matrix/client/v3/join/%23nope:cirrus.test", `{}`, 404, "M_NOT_FOUND"},
			{"join garbage", "POST", "/_matrix/client/v3/join/garbage", `{}`, 400, "M_INVALID_PARAM"},
			{"member without membership", "PUT", "/_matrix/client/v3/rooms/" + r + "/state/m.room.member/@alice:cirrus.test", `{}`, 400, "M_BAD_JSON"},
			{"members bad filter", "GET", "/_matrix/client/v3/rooms/" + r + "/members?membership=dancing", ``, 400, "M_INVALID_PARAM"},
			{"forget while joined", "POST", "/_matrix/client/v3/rooms/" + r + "/forget", `{}`, 400, "M_UNKNOWN"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				st, body, _ := do(t, env, tc.method, tc.path, tok, tc.body)
				if st != tc.status || (tc.code != "" && body["errcode"] != tc.code) {
					t.Fatalf("got %d %v, want %d %s", st, body, tc.status, tc.code)
				}
			})
		}
	})
}
