package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func orderIs(n interface{ Float64() (float64, error) }, want float64) bool {
	f, err := n.Float64()
	return err == nil && f == want
}

func findSyncEvent(evs []syncEvent, typ string) *syncEvent {
	for i := range evs {
		if evs[i].Type == typ {
			return &evs[i]
		}
	}
	return nil
}

// TestAccountDataTagsAndFilters covers account data (global and per room)
// and tags through their endpoints and /sync, and stored filters.
func TestAccountDataTagsAndFilters(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "org.example.a", map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := alice.GetAccountData(ctx, "org.example.a", &got); err != nil || got["x"] != float64(1) {
			t.Fatalf("get account data %v %v", got, err)
		}
		if err := alice.GetAccountData(ctx, "org.example.none", &got); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("missing account data: %v", err)
		}
		if err := alice.SetRoomAccountData(ctx, room.RoomID, "org.example.r", map[string]any{"y": true}); err != nil {
			t.Fatal(err)
		}
		var rgot map[string]any
		if err := alice.GetRoomAccountData(ctx, room.RoomID, "org.example.r", &rgot); err != nil || rgot["y"] != true {
			t.Fatalf("room account data %v %v", rgot, err)
		}
		// Room and global account data do not mix.
		if err := alice.GetAccountData(ctx, "org.example.r", &got); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("room data read as global: %v", err)
		}
		s0 := doSync(t, env, alice, nil)
		if e := findSyncEvent(s0.AccountData.Events, "org.example.a"); e == nil || e.Content["x"] != float64(1) {
			t.Fatalf("initial sync account data %+v", s0.AccountData)
		}
		if e := findSyncEvent(s0.Rooms.Join[room.RoomID].AccountData.Events, "org.example.r"); e == nil {
			t.Fatalf("initial sync room account data %+v", s0.Rooms.Join[room.RoomID].AccountData)
		}

		// Only what changed comes in an incremental sync; the latest value wins.
		if err := alice.SetAccountData(ctx, "org.example.b", map[string]any{"v": 1}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "org.example.b", map[string]any{"v": 2}); err != nil {
			t.Fatal(err)
		}
		s1 := doSync(t, env, alice, map[string]string{"since": s0.NextBatch})
		if len(s1.AccountData.Events) != 1 || s1.AccountData.Events[0].Type != "org.example.b" || s1.AccountData.Events[0].Content["v"] != float64(2) {
			t.Fatalf("incremental account data %+v", s1.AccountData)
		}

		// Tags: stored as m.tag room account data.
		if err := alice.AddTag(ctx, room.RoomID, event.RoomTagFavourite, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTag(ctx, room.RoomID, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.GetTags(ctx, room.RoomID)
		if err != nil || len(tags.Tags) != 2 || !orderIs(tags.Tags[event.RoomTagFavourite].Order, 0.25) {
			t.Fatalf("tags %+v %v", tags, err)
		}
		s2 := doSync(t, env, alice, map[string]string{"since": s1.NextBatch})
		tagEv := findSyncEvent(s2.Rooms.Join[room.RoomID].AccountData.Events, "m.tag")
		if tagEv == nil || len(tagEv.Content["tags"].(map[string]any)) != 2 {
			t.Fatalf("m.tag in sync: %v", s2.Raw)
		}
		if err := alice.RemoveTag(ctx, room.RoomID, "u.work"); err != nil {
			t.Fatal(err)
		}
		if err := alice.RemoveTag(ctx, room.RoomID, "u.never-set"); err != nil {
			t.Fatalf("removing an unset tag: %v", err)
		}
		tags, err = alice.GetTags(ctx, room.RoomID)
		if err != nil || len(tags.Tags) != 1 {
			t.Fatalf("tags after removal %+v %v", tags, err)
		}

		// Server-managed types are refused.
		st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/user/"+string(alice.UserID)+"/account_data/m.fully_read", alice.AccessToken, `{}`)
		if st != 405 || body["errcode"] != "M_BAD_JSON" {
			t.Fatalf("m.fully_read: %d %v", st, body)
		}

		// Filters: upload, read back, use by id.
		fresp, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Types: []event.Type{event.EventMessage}, Limit: 3}}})
		if err != nil || fresp.FilterID == "" || strings.HasPrefix(fresp.FilterID, "{") {
			t.Fatalf("create filter %+v %v", fresp, err)
		}
		st, fbody, _ := do(t, env, "GET", "/_matrix/client/v3/user/"+string(alice.UserID)+"/filter/"+fresp.FilterID, alice.AccessToken, "")
		if st != 200 || fbody["room"] == nil {
			t.Fatalf("get filter %d %v", st, fbody)
		}
		for i := range 5 {
			sendText(t, alice, room.RoomID, fmt.Sprintf("f%d", i))
		}
		fs := doSync(t, env, alice, map[string]string{"filter": fresp.FilterID})
		ftl := fs.Rooms.Join[room.RoomID].Timeline
		if len(ftl.Events) != 3 || !ftl.Limited || strings.Join(msgBodies(ftl.Events), ",") != "f2,f3,f4" {
			t.Fatalf("filtered timeline %+v", ftl)
		}
		// event_fields and the federation format.
		ef := doSync(t, env, alice, map[string]string{"filter": inlineFilter(map[string]any{"event_fields": []string{"type", "content.body"},
			"room": map[string]any{"timeline": map[string]any{"limit": 1}}})})
		raw := ef.Raw["rooms"].(map[string]any)["join"].(map[string]any)[string(room.RoomID)].(map[string]any)["timeline"].(map[string]any)["events"].([]any)[0].(map[string]any)
		if len(raw) != 2 || raw["type"] != "m.room.message" || len(raw["content"].(map[string]any)) != 1 {
			t.Fatalf("event_fields: %v", raw)
		}
		fed := doSync(t, env, alice, map[string]string{"filter": inlineFilter(map[string]any{"event_format": "federation",
			"room": map[string]any{"timeline": map[string]any{"limit": 1}}})})
		fraw := fed.Raw["rooms"].(map[string]any)["join"].(map[string]any)[string(room.RoomID)].(map[string]any)["timeline"].(map[string]any)["events"].([]any)[0].(map[string]any)
		if fraw["auth_events"] == nil || fraw["depth"] == nil || fraw["signatures"] == nil {
			t.Fatalf("federation format: %v", fraw)
		}
		// rooms / not_rooms.
		if nr := doSync(t, env, alice, map[string]string{"filter": inlineFilter(map[string]any{"room": map[string]any{"not_rooms": []string{string(room.RoomID)}}})}); len(nr.Rooms.Join) != 0 {
			t.Fatalf("not_rooms: %v", nr.Rooms.Join)
		}
	})
}

// TestLazyLoadingAndIgnoredUsers: lazy-loaded member state, and ignored
// users' messages hidden from /sync and /messages (their state is kept).
func TestLazyLoadingAndIgnoredUsers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		dave := register(t, env, "dave", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Big"})
		if err != nil {
			t.Fatal(err)
		}
		// Seven members: bob sees five heroes, so the last to join is
		// neither a hero nor a sender.
		extra := []*mautrix.Client{register(t, env, "erin", "pw"), register(t, env, "frank", "pw"), register(t, env, "grace", "pw")}
		for _, c := range append([]*mautrix.Client{bob, carol, dave}, extra...) {
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		last := extra[2].UserID
		for i := range 12 {
			sendText(t, carol, room.RoomID, fmt.Sprintf("c%d", i))
		}
		lazy := inlineFilter(map[string]any{"room": map[string]any{"state": map[string]any{"lazy_load_members": true}}})
		s := doSync(t, env, bob, map[string]string{"filter": lazy})
		jr := s.Rooms.Join[room.RoomID]
		if hasState(jr.State.Events, "m.room.member", string(carol.UserID)) == nil && hasState(jr.Timeline.Events, "m.room.member", string(carol.UserID)) == nil {
			t.Fatalf("lazy loading dropped the sender's member event: %+v", jr.State.Events)
		}
		if hasState(jr.State.Events, "m.room.member", string(bob.UserID)) == nil {
			t.Fatalf("lazy loading dropped the user's own member event")
		}
		if hasState(jr.State.Events, "m.room.name", "") == nil {
			t.Fatalf("lazy loading dropped other state")
		}
		if hasState(jr.State.Events, "m.room.member", string(last)) != nil {
			t.Fatalf("lazy loading sent a member who is neither sender nor hero")
		}
		full := doSync(t, env, bob, nil).Rooms.Join[room.RoomID]
		if hasState(full.State.Events, "m.room.member", string(last)) == nil {
			t.Fatalf("full state lacks a member")
		}

		// Bob ignores carol.
		since := s.NextBatch
		if err := bob.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(carol.UserID): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		sendText(t, carol, room.RoomID, "ignored")
		keep := sendText(t, dave, room.RoomID, "heard")
		s2 := doSync(t, env, bob, map[string]string{"since": since})
		j2 := s2.Rooms.Join[room.RoomID]
		if j2 == nil || strings.Join(msgBodies(j2.Timeline.Events), ",") != "heard" || j2.Timeline.Events[len(j2.Timeline.Events)-1].EventID != keep {
			t.Fatalf("ignored user's message in sync: %v", s2.Raw)
		}
		if findSyncEvent(s2.AccountData.Events, "m.ignored_user_list") == nil {
			t.Fatalf("ignore list not synced")
		}
		resp, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if ev.Sender == carol.UserID {
				t.Fatalf("/messages shows an ignored user's message: %s", ev.Content.Raw["body"])
			}
		}
		if len(resp.Chunk) != 1 {
			t.Fatalf("/messages: %d messages", len(resp.Chunk))
		}
		// carol's state events still reach bob.
		if err := carol.SetDisplayName(ctx, "Caroline"); err != nil {
			t.Fatal(err)
		}
		s3 := doSync(t, env, bob, map[string]string{"since": s2.NextBatch})
		if j := s3.Rooms.Join[room.RoomID]; j == nil || hasState(j.Timeline.Events, "m.room.member", string(carol.UserID)) == nil {
			t.Fatalf("ignored user's state event hidden: %v", s3.Raw)
		}
	})
}

// TestPresence: set and read presence; only users who share a room see it.
func TestPresence(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		eve := register(t, env, "eve", "pw")
		room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
			t.Fatal(err)
		}
		p, err := bob.GetPresence(ctx, alice.UserID)
		if err != nil || p.Presence != event.PresenceUnavailable || p.StatusMsg != "lunch" {
			t.Fatalf("presence %+v %v", p, err)
		}
		if _, err := eve.GetPresence(ctx, alice.UserID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("presence to a stranger: %v", err)
		}
		// Syncing marks the user online.
		doSync(t, env, alice, map[string]string{"set_presence": "online"})
		if p, err := alice.GetPresence(ctx, alice.UserID); err != nil || p.Presence != event.PresenceOnline || p.StatusMsg != "lunch" {
			t.Fatalf("presence after sync %+v %v", p, err)
		}
		if p, err := bob.GetPresence(ctx, eve.UserID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("presence of a stranger: %+v %v", p, err)
		}
		if p, err := eve.GetPresence(ctx, eve.UserID); err != nil || p.Presence != event.PresenceOffline {
			t.Fatalf("own presence without a record: %+v %v", p, err)
		}
	})
}

// TestUserDataBadInput sends malformed or unauthorised requests to every
// endpoint of this family.
func TestUserDataBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		other, _ := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		ev := sendText(t, alice, room.RoomID, "x")
		me, you, r, o := string(alice.UserID), string(bob.UserID), string(room.RoomID), string(other.RoomID)
		tok := alice.AccessToken
		s0 := doSync(t, env, alice, nil)
		future := "s999999999_0_0_0_0_0"
		cases := []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			// /sync
			{"sync garbage token", "GET", "/sync?since=garbage", "", 400, "M_INVALID_PARAM"},
			{"sync short token", "GET", "/sync?since=s1_2", "", 400, "M_INVALID_PARAM"},
			{"sync negative token", "GET", "/sync?since=s-1_0_0_0_0_0", "", 400, "M_INVALID_PARAM"},
			{"sync token from the future", "GET", "/sync?since=" + future, "", 400, "M_INVALID_PARAM"},
			{"sync good token", "GET", "/sync?since=" + s0.NextBatch, "", 200, ""},
			{"sync bad timeout", "GET", "/sync?timeout=soon", "", 400, "M_INVALID_PARAM"},
			{"sync negative timeout", "GET", "/sync?timeout=-5", "", 400, "M_INVALID_PARAM"},
			{"sync bad full_state", "GET", "/sync?full_state=maybe", "", 400, "M_INVALID_PARAM"},
			{"sync bad set_presence", "GET", "/sync?set_presence=busy", "", 400, "M_INVALID_PARAM"},
			{"sync unknown filter", "GET", "/sync?filter=nope", "", 400, "M_INVALID_PARAM"},
			{"sync broken inline filter", "GET", "/sync?filter=%7Bnope", "", 400, "M_INVALID_PARAM"},
			{"sync invalid inline filter", "GET", "/sync?filter=" + urlq(`{"event_format":"xml"}`), "", 400, "M_INVALID_PARAM"},
			// filters
			{"filter for another user", "POST", "/user/" + you + "/filter", `{}`, 403, "M_FORBIDDEN"},
			{"filter bad user", "POST", "/user/bob/filter", `{}`, 400, "M_INVALID_PARAM"},
			{"filter not json", "POST", "/user/" + me + "/filter", `nope`, 400, "M_NOT_JSON"},
			{"filter wrong shape", "POST", "/user/" + me + "/filter", `{"room":{"timeline":{"limit":"ten"}}}`, 400, "M_BAD_JSON"},
			{"filter bad format", "POST", "/user/" + me + "/filter", `{"event_format":"xml"}`, 400, "M_INVALID_PARAM"},
			{"filter negative limit", "POST", "/user/" + me + "/filter", `{"room":{"timeline":{"limit":-1}}}`, 400, "M_INVALID_PARAM"},
			{"filter bad sender", "POST", "/user/" + me + "/filter", `{"room":{"timeline":{"senders":["bob"]}}}`, 400, "M_INVALID_PARAM"},
			{"filter bad room", "POST", "/user/" + me + "/filter", `{"room":{"rooms":["room"]}}`, 400, "M_INVALID_PARAM"},
			{"filter bad field path", "POST", "/user/" + me + "/filter", `{"event_fields":["content."]}`, 400, "M_INVALID_PARAM"},
			{"get unknown filter", "GET", "/user/" + me + "/filter/nope", "", 404, "M_NOT_FOUND"},
			{"get another user's filter", "GET", "/user/" + you + "/filter/x", "", 403, "M_FORBIDDEN"},
			// account data
			{"account data of another user", "PUT", "/user/" + you + "/account_data/org.x", `{}`, 403, "M_FORBIDDEN"},
			{"read another user's account data", "GET", "/user/" + you + "/account_data/org.x", "", 403, "M_FORBIDDEN"},
			{"account data not json", "PUT", "/user/" + me + "/account_data/org.x", `x`, 400, "M_NOT_JSON"},
			{"account data array", "PUT", "/user/" + me + "/account_data/org.x", `[1]`, 400, "M_NOT_JSON"},
			{"account data push rules", "PUT", "/user/" + me + "/account_data/m.push_rules", `{}`, 405, "M_BAD_JSON"},
			{"room fully_read", "PUT", "/user/" + me + "/rooms/" + r + "/account_data/m.fully_read", `{}`, 405, "M_BAD_JSON"},
			{"room account data bad room", "PUT", "/user/" + me + "/rooms/nope/account_data/org.x", `{}`, 400, "M_INVALID_PARAM"},
			{"room account data bad room get", "GET", "/user/" + me + "/rooms/nope/account_data/org.x", "", 400, "M_INVALID_PARAM"},
			{"missing room account data", "GET", "/user/" + me + "/rooms/" + r + "/account_data/org.none", "", 404, "M_NOT_FOUND"},
			{"ignore list wrong shape", "PUT", "/user/" + me + "/account_data/m.ignored_user_list", `{"ignored_users":[]}`, 400, "M_BAD_JSON"},
			{"ignore yourself", "PUT", "/user/" + me + "/account_data/m.ignored_user_list", `{"ignored_users":{"` + me + `":{}}}`, 400, "M_INVALID_PARAM"},
			// tags
			{"tags of another user", "GET", "/user/" + you + "/rooms/" + r + "/tags", "", 403, "M_FORBIDDEN"},
			{"tag bad room", "PUT", "/user/" + me + "/rooms/nope/tags/u.x", `{}`, 400, "M_INVALID_PARAM"},
			{"tag order not a number", "PUT", "/user/" + me + "/rooms/" + r + "/tags/u.x", `{"order":"first"}`, 400, "M_BAD_JSON"},
			{"tag too long", "PUT", "/user/" + me + "/rooms/" + r + "/tags/" + strings.Repeat("t", 256), `{}`, 400, "M_INVALID_PARAM"},
			{"tag not json", "PUT", "/user/" + me + "/rooms/" + r + "/tags/u.x", `x`, 400, "M_NOT_JSON"},
			{"delete another user's tag", "DELETE", "/user/" + you + "/rooms/" + r + "/tags/u.x", "", 403, "M_FORBIDDEN"},
			// typing
			{"typing for another user", "PUT", "/rooms/" + r + "/typing/" + you, `{"typing":true}`, 403, "M_FORBIDDEN"},
			{"typing without typing", "PUT", "/rooms/" + r + "/typing/" + me, `{"timeout":1000}`, 400, "M_BAD_JSON"},
			{"typing wrong type", "PUT", "/rooms/" + r + "/typing/" + me, `{"typing":"yes"}`, 400, "M_BAD_JSON"},
			{"typing negative timeout", "PUT", "/rooms/" + r + "/typing/" + me, `{"typing":true,"timeout":-1}`, 400, "M_INVALID_PARAM"},
			{"typing not a member", "PUT", "/rooms/" + o + "/typing/" + me, `{"typing":true}`, 403, "M_FORBIDDEN"},
			{"typing bad room", "PUT", "/rooms/nope/typing/" + me, `{"typing":true}`, 400, "M_INVALID_PARAM"},
			// receipts
			{"receipt bad type", "POST", "/rooms/" + r + "/receipt/m.seen/" + string(ev), `{}`, 400, "M_INVALID_PARAM"},
			{"receipt bad event", "POST", "/rooms/" + r + "/receipt/m.read/nope", `{}`, 400, "M_INVALID_PARAM"},
			{"receipt unknown event", "POST", "/rooms/" + r + "/receipt/m.read/$nope", `{}`, 404, "M_NOT_FOUND"},
			{"receipt empty thread", "POST", "/rooms/" + r + "/receipt/m.read/" + string(ev), `{"thread_id":""}`, 400, "M_INVALID_PARAM"},
			{"receipt thread not a string", "POST", "/rooms/" + r + "/receipt/m.read/" + string(ev), `{"thread_id":5}`, 400, "M_INVALID_PARAM"},
			{"receipt thread on fully_read", "POST", "/rooms/" + r + "/receipt/m.fully_read/" + string(ev), `{"thread_id":"main"}`, 400, "M_INVALID_PARAM"},
			{"receipt not a member", "POST", "/rooms/" + o + "/receipt/m.read/" + string(ev), `{}`, 403, "M_FORBIDDEN"},
			{"receipt event of another room", "POST", "/rooms/" + r + "/receipt/m.read/$" + strings.Repeat("a", 43), `{}`, 404, "M_NOT_FOUND"},
			// read markers
			{"read markers not json", "POST", "/rooms/" + r + "/read_markers", `x`, 400, "M_NOT_JSON"},
			{"read markers wrong type", "POST", "/rooms/" + r + "/read_markers", `{"m.fully_read":5}`, 400, "M_BAD_JSON"},
			{"read markers bad event", "POST", "/rooms/" + r + "/read_markers", `{"m.read":"nope"}`, 400, "M_INVALID_PARAM"},
			{"read markers unknown event", "POST", "/rooms/" + r + "/read_markers", `{"m.fully_read":"$nope"}`, 404, "M_NOT_FOUND"},
			{"read markers not a member", "POST", "/rooms/" + o + "/read_markers", `{"m.fully_read":"` + string(ev) + `"}`, 403, "M_FORBIDDEN"},
			// to-device
			{"to-device without messages", "PUT", "/sendToDevice/m.test/t1", `{}`, 400, "M_BAD_JSON"},
			{"to-device bad user", "PUT", "/sendToDevice/m.test/t2", `{"messages":{"bob":{"D":{}}}}`, 400, "M_INVALID_PARAM"},
			{"to-device message not an object", "PUT", "/sendToDevice/m.test/t3", `{"messages":{"` + you + `":{"D":"hi"}}}`, 400, "M_BAD_JSON"},
			{"to-device not json", "PUT", "/sendToDevice/m.test/t4", `x`, 400, "M_NOT_JSON"},
			// presence
			{"presence of another user", "PUT", "/presence/" + you + "/status", `{"presence":"online"}`, 403, "M_FORBIDDEN"},
			{"presence missing", "PUT", "/presence/" + me + "/status", `{}`, 400, "M_MISSING_PARAM"},
			{"presence unknown state", "PUT", "/presence/" + me + "/status", `{"presence":"busy"}`, 400, "M_INVALID_PARAM"},
			{"presence bad user", "GET", "/presence/bob/status", "", 400, "M_INVALID_PARAM"},
			{"presence of a stranger", "GET", "/presence/" + you + "/status", "", 403, "M_FORBIDDEN"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				st, body, _ := do(t, env, tc.method, "/_matrix/client/v3"+tc.path, tok, tc.body)
				if st != tc.status || (tc.code != "" && body["errcode"] != tc.code) {
					t.Fatalf("got %d %v, want %d %s", st, body, tc.status, tc.code)
				}
			})
		}
		// Without a token every endpoint refuses.
		for _, p := range []string{"/sync", "/user/" + me + "/filter/x", "/user/" + me + "/account_data/x", "/presence/" + me + "/status"} {
			if st, body, _ := do(t, env, "GET", "/_matrix/client/v3"+p, "", ""); st != 401 || body["errcode"] != "M_MISSING_TOKEN" {
				t.Fatalf("%s without a token: %d %v", p, st, body)
			}
		}
	})
}
