package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ssResp is the part of a sliding sync answer the tests look at.
type ssResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[id.RoomID]*ssRoom      `json:"rooms"`
	Extensions map[string]json.RawMessage `json:"extensions"`
}

type ssRoom struct {
	Name          *string     `json:"name"`
	Initial       bool        `json:"initial"`
	Membership    string      `json:"membership"`
	IsDM          bool        `json:"is_dm"`
	RequiredState []syncEvent `json:"required_state"`
	Timeline      []syncEvent `json:"timeline"`
	PrevBatch     string      `json:"prev_batch"`
	Limited       bool        `json:"limited"`
	NumLive       *int        `json:"num_live"`
	JoinedCount   *int        `json:"joined_count"`
	InvitedCount  *int        `json:"invited_count"`
	Notifications *int        `json:"notification_count"`
	BumpStamp     *int64      `json:"bump_stamp"`
	InviteState   []syncEvent `json:"invite_state"`
	Heroes        []struct {
		UserID id.UserID `json:"user_id"`
	} `json:"heroes"`
	Lists []string `json:"lists"`
}

// ss calls sliding sync and returns the status, the decoded answer (on
// 200) and the raw body.
func ss(t *testing.T, env *testenv.Env, c *mautrix.Client, pos string, timeoutMS int, body any) (int, *ssResp, []byte) {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", strconv.Itoa(timeoutMS))
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	st, _, raw := sendRaw(t, env, "POST", slidingPath+"?"+q.Encode(), c.AccessToken, string(b))
	if st != 200 {
		return st, nil, raw
	}
	var r ssResp
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("sliding sync answer %s: %v", raw, err)
	}
	if r.Pos == "" {
		t.Fatalf("answer without pos: %s", raw)
	}
	return st, &r, raw
}

// mustSS is ss that requires a 200.
func mustSS(t *testing.T, env *testenv.Env, c *mautrix.Client, pos string, timeoutMS int, body any) *ssResp {
	t.Helper()
	st, r, raw := ss(t, env, c, pos, timeoutMS, body)
	if st != 200 {
		t.Fatalf("sliding sync: %d %s", st, raw)
	}
	return r
}

func allRoomsList(rangeEnd, timelineLimit int, requiredState any) map[string]any {
	return map[string]any{"lists": map[string]any{"all": map[string]any{
		"ranges": [][]int{{0, rangeEnd}}, "timeline_limit": timelineLimit, "required_state": requiredState,
	}}}
}

// TestSlidingSyncListsAndIncremental: the initial answer lists the user's
// rooms by recent activity with their count and room data; an incremental
// answer brings only the room with a new message, and only that message;
// an unchanged connection answers nothing new; invites show with their
// stripped state; ranges pick rooms out of the sorted list.
func TestSlidingSyncListsAndIncremental(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		var rs []id.RoomID
		for _, name := range []string{"one", "two", "three"} {
			r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: name, Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.JoinRoomByID(ctx, r.RoomID); err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r.RoomID)
		}
		sendText(t, alice, rs[1], "in two")
		sendText(t, alice, rs[2], "in three")
		sendText(t, alice, rs[0], "in one") // one is now the most recent
		want := []id.RoomID{rs[0], rs[2], rs[1]}

		body := allRoomsList(9, 1, [][]string{{"m.room.name", ""}, {"m.room.create", ""}})
		r := mustSS(t, env, bob, "", 0, body)
		if r.Lists["all"].Count != 3 {
			t.Fatalf("count = %d, want 3: %+v", r.Lists["all"].Count, r.Lists)
		}
		if len(r.Rooms) != 3 {
			t.Fatalf("rooms = %d, want 3", len(r.Rooms))
		}
		var last int64 = 1 << 62
		for i, room := range want {
			rm := r.Rooms[room]
			if rm == nil || !rm.Initial || rm.BumpStamp == nil {
				t.Fatalf("room %d: %+v", i, rm)
			}
			if *rm.BumpStamp >= last {
				t.Fatalf("room %d bump_stamp %d not below the previous %d: order wrong", i, *rm.BumpStamp, last)
			}
			last = *rm.BumpStamp
			if len(rm.Timeline) != 1 || !rm.Limited || rm.PrevBatch == "" {
				t.Fatalf("room %d timeline: %+v", i, rm)
			}
			if rm.JoinedCount == nil || *rm.JoinedCount != 2 || rm.Membership != "join" || rm.Notifications == nil {
				t.Fatalf("room %d counts/membership: %+v", i, rm)
			}
			if hasState(rm.RequiredState, "m.room.name", "") == nil || hasState(rm.RequiredState, "m.room.create", "") == nil ||
				hasState(rm.RequiredState, "m.room.member", string(bob.UserID)) != nil {
				t.Fatalf("room %d required_state: %+v", i, rm.RequiredState)
			}
			if rm.Name == nil || *rm.Name == "" {
				t.Fatalf("room %d has no name", i)
			}
		}
		if got := msgBodies(r.Rooms[rs[0]].Timeline); len(got) != 1 || got[0] != "in one" {
			t.Fatalf("room one's timeline: %v", got)
		}

		// The same range picked out of the sorted list.
		r2 := mustSS(t, env, bob, "", 0, allRoomsList(1, 1, [][]string{}))
		if len(r2.Rooms) != 2 || r2.Rooms[rs[0]] == nil || r2.Rooms[rs[2]] == nil {
			t.Fatalf("range [0,1] gave %v", keysOf(r2.Rooms))
		}

		// Nothing changed: no rooms, except for unread counts the fan-out
		// worker records after the events (no timeline then).
		for i := 0; ; i++ {
			r = mustSS(t, env, bob, r.Pos, 1000, body)
			if len(r.Rooms) == 0 {
				break
			}
			for room, rm := range r.Rooms {
				if len(rm.Timeline) != 0 || rm.Initial || rm.Notifications == nil {
					t.Fatalf("unchanged room %s sent again: %+v", room, rm)
				}
			}
			if i == 5 {
				t.Fatalf("rooms keep coming: %v", keysOf(r.Rooms))
			}
		}
		// A new message: only its room, only the message, not initial.
		ev := sendText(t, alice, rs[1], "new in two")
		r = mustSS(t, env, bob, r.Pos, 0, body)
		if len(r.Rooms) != 1 || r.Rooms[rs[1]] == nil {
			t.Fatalf("incremental rooms %v, want only %s", keysOf(r.Rooms), rs[1])
		}
		rm := r.Rooms[rs[1]]
		if rm.Initial || len(rm.Timeline) != 1 || rm.Timeline[0].EventID != ev || rm.NumLive == nil || *rm.NumLive != 1 {
			t.Fatalf("incremental room: %+v", rm)
		}
		if len(rm.RequiredState) != 0 {
			t.Fatalf("unchanged state sent again: %+v", rm.RequiredState)
		}

		// An invite shows in an is_invite list with its stripped state.
		inv, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "invite me", Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		invBody := map[string]any{"lists": map[string]any{
			"all":     map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1, "required_state": [][]string{}},
			"invites": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1, "required_state": [][]string{}, "filters": map[string]any{"is_invite": true}},
		}}
		r = mustSS(t, env, bob, r.Pos, 0, invBody)
		if r.Lists["invites"].Count != 1 || r.Lists["all"].Count != 4 {
			t.Fatalf("list counts %+v", r.Lists)
		}
		ir := r.Rooms[inv.RoomID]
		if ir == nil || ir.Membership != "invite" || hasState(ir.InviteState, "m.room.name", "") == nil || !ir.IsDM {
			t.Fatalf("invite: %+v", ir)
		}
	})
}

func keysOf(m map[id.RoomID]*ssRoom) []id.RoomID {
	var out []id.RoomID
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSlidingSyncLongPoll: a request with a pos and a timeout waits, and a
// message from another user wakes it well before the timeout.
func TestSlidingSyncLongPoll(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice, bob, room := aliceAndBobInPublicRoom(t, env)
		body := allRoomsList(9, 5, [][]string{})
		r := mustSS(t, env, bob, "", 0, body)
		// Drain what the setup still causes (counts from the fan-out worker).
		for i := 0; i < 5; i++ {
			r = mustSS(t, env, bob, r.Pos, 1000, body)
			if len(r.Rooms) == 0 {
				break
			}
		}
		// A held request with nothing new answers at its timeout, empty.
		start := time.Now()
		r = mustSS(t, env, bob, r.Pos, 1500, body)
		if len(r.Rooms) != 0 || time.Since(start) < time.Second {
			t.Fatalf("idle long-poll answered after %s with %v", time.Since(start), keysOf(r.Rooms))
		}
		got := make(chan *ssResp, 1)
		start = time.Now()
		go func() {
			_, resp, _ := ss(t, env, bob, r.Pos, 20000, body)
			got <- resp
		}()
		time.Sleep(500 * time.Millisecond)
		ev := sendText(t, alice, room.RoomID, "wake up")
		select {
		case resp := <-got:
			if resp == nil {
				t.Fatal("long-poll failed")
			}
			rm := resp.Rooms[room.RoomID]
			if rm == nil || len(rm.Timeline) == 0 || rm.Timeline[len(rm.Timeline)-1].EventID != ev {
				t.Fatalf("woke with %+v", resp.Rooms)
			}
			t.Logf("woke %s after the send", time.Since(start)-500*time.Millisecond)
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up within %s", time.Since(start))
		}
	})
}

// TestSlidingSyncRoomSubscriptions: a subscribed room outside every list
// range is sent with its own timeline limit and required_state (wildcards,
// $LAZY members, $ME).
func TestSlidingSyncRoomSubscriptions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "old"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, old.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 6; i++ {
			sendText(t, alice, old.RoomID, "old "+strconv.Itoa(i))
		}
		recent, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, recent.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, recent.RoomID, "recent")

		body := allRoomsList(0, 1, [][]string{})
		body["room_subscriptions"] = map[string]any{string(old.RoomID): map[string]any{
			"timeline_limit": 5,
			"required_state": [][]string{{"*", "*"}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}},
		}}
		r := mustSS(t, env, bob, "", 0, body)
		if len(r.Rooms) != 2 || r.Rooms[recent.RoomID] == nil {
			t.Fatalf("rooms %v", keysOf(r.Rooms))
		}
		rm := r.Rooms[old.RoomID]
		if rm == nil || len(rm.Timeline) != 5 || !rm.Limited || len(rm.Lists) != 0 {
			t.Fatalf("subscribed room: %+v", rm)
		}
		if hasState(rm.RequiredState, "m.room.create", "") == nil || hasState(rm.RequiredState, "m.room.power_levels", "") == nil {
			t.Fatalf("wildcard state missing: %+v", rm.RequiredState)
		}
		// Lazy members: the senders of the timeline (alice) and $ME (bob),
		// not carol.
		if hasState(rm.RequiredState, "m.room.member", string(alice.UserID)) == nil ||
			hasState(rm.RequiredState, "m.room.member", string(bob.UserID)) == nil ||
			hasState(rm.RequiredState, "m.room.member", string(carol.UserID)) != nil {
			t.Fatalf("members in required_state: %+v", rm.RequiredState)
		}
		// Raising the subscription's timeline limit expands the timeline.
		body["room_subscriptions"] = map[string]any{string(old.RoomID): map[string]any{
			"timeline_limit": 8, "required_state": [][]string{{"*", "*"}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}},
		}}
		r = mustSS(t, env, bob, r.Pos, 0, body)
		rm = r.Rooms[old.RoomID]
		if rm == nil || len(rm.Timeline) != 8 {
			t.Fatalf("expanded room: %+v", rm)
		}
		// A subscription to a room bob is not in is ignored.
		other, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		body["room_subscriptions"] = map[string]any{string(other.RoomID): map[string]any{"timeline_limit": 5, "required_state": [][]string{{"*", "*"}}}}
		r = mustSS(t, env, bob, r.Pos, 0, body)
		if r.Rooms[other.RoomID] != nil {
			t.Fatalf("room bob is not in was sent: %+v", r.Rooms[other.RoomID])
		}
	})
}

// TestSlidingSyncToDeviceAndE2EE: the e2ee extension reports the device's
// key counts and other users' device changes; the to_device extension
// delivers messages once, acknowledged by the next since.
func TestSlidingSyncToDeviceAndE2EE(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice, bob, _ := aliceAndBobInPublicRoom(t, env)
		bobDev := newOlmDevice(t, bob)
		if n := bobDev.upload(t, env, 5, true); n != 5 {
			t.Fatalf("uploaded %d", n)
		}
		body := func(since string) map[string]any {
			// As Element X's encryption sync: its own connection, no lists.
			b := map[string]any{"conn_id": "encryption"}
			td := map[string]any{"enabled": true}
			if since != "" {
				td["since"] = since
			}
			b["extensions"] = map[string]any{"to_device": td, "e2ee": map[string]any{"enabled": true}}
			return b
		}
		r := mustSS(t, env, bob, "", 0, body(""))
		var e2ee struct {
			DeviceLists *struct {
				Changed []id.UserID `json:"changed"`
			} `json:"device_lists"`
			Counts   map[string]int `json:"device_one_time_keys_count"`
			Fallback []string       `json:"device_unused_fallback_key_types"`
		}
		var td struct {
			NextBatch string      `json:"next_batch"`
			Events    []syncEvent `json:"events"`
		}
		if err := json.Unmarshal(r.Extensions["e2ee"], &e2ee); err != nil {
			t.Fatalf("e2ee %s: %v", r.Extensions["e2ee"], err)
		}
		if e2ee.Counts["signed_curve25519"] != 5 || len(e2ee.Fallback) != 1 || e2ee.Fallback[0] != "signed_curve25519" {
			t.Fatalf("e2ee counts: %+v", e2ee)
		}
		if err := json.Unmarshal(r.Extensions["to_device"], &td); err != nil || td.NextBatch == "" || len(td.Events) != 0 {
			t.Fatalf("to_device %s: %v", r.Extensions["to_device"], err)
		}

		// alice sends bob a to-device message and publishes keys.
		req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			bob.UserID: {bob.DeviceID: {Raw: map[string]any{"secret": "s1"}}}}}
		if _, err := alice.SendToDevice(ctx, event.Type{Type: "org.example.msg", Class: event.ToDeviceEventType}, req); err != nil {
			t.Fatal(err)
		}
		newOlmDevice(t, alice).upload(t, env, 1, false)

		var gotMsg, gotChange bool
		pos, since := r.Pos, td.NextBatch
		deadline := time.Now().Add(10 * time.Second)
		for (!gotMsg || !gotChange) && time.Now().Before(deadline) {
			r = mustSS(t, env, bob, pos, 2000, body(since))
			pos = r.Pos
			td.Events = nil
			_ = json.Unmarshal(r.Extensions["to_device"], &td)
			since = td.NextBatch
			for _, e := range td.Events {
				if e.Type == "org.example.msg" && e.Sender == alice.UserID && e.Content["secret"] == "s1" {
					if gotMsg {
						t.Fatal("to-device message delivered twice")
					}
					gotMsg = true
				}
			}
			e2ee.DeviceLists = nil
			_ = json.Unmarshal(r.Extensions["e2ee"], &e2ee)
			if e2ee.DeviceLists != nil {
				for _, u := range e2ee.DeviceLists.Changed {
					if u == alice.UserID {
						gotChange = true
					}
				}
			}
		}
		if !gotMsg || !gotChange {
			t.Fatalf("to-device message %v, device change %v", gotMsg, gotChange)
		}
		// Acknowledged: a fresh connection from the same since sees nothing.
		r = mustSS(t, env, bob, "", 0, body(since))
		_ = json.Unmarshal(r.Extensions["to_device"], &td)
		if len(td.Events) != 0 {
			t.Fatalf("acknowledged messages came back: %+v", td.Events)
		}
	})
}

// TestSlidingSyncErrors: bad input gets the spec's error codes.
func TestSlidingSyncErrors(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		r := mustSS(t, env, alice, "", 0, allRoomsList(9, 1, [][]string{}))
		for _, c := range []struct {
			name   string
			client *mautrix.Client
			path   string
			body   string
			status int
			code   string
		}{
			{"unknown pos", alice, slidingPath + "?pos=987654", `{}`, 400, "M_UNKNOWN_POS"},
			{"malformed pos", alice, slidingPath + "?pos=abc", `{}`, 400, "M_UNKNOWN_POS"},
			{"another user's pos", bob, slidingPath + "?pos=" + r.Pos, `{}`, 400, "M_UNKNOWN_POS"},
			{"another connection's pos", alice, slidingPath + "?pos=" + r.Pos, `{"conn_id":"other"}`, 400, "M_UNKNOWN_POS"},
			{"not JSON", alice, slidingPath, `{"lists":`, 400, "M_NOT_JSON"},
			{"not an object", alice, slidingPath, `[1]`, 400, "M_NOT_JSON"},
			{"wrong shape", alice, slidingPath, `{"lists": 5}`, 400, "M_BAD_JSON"},
			{"reversed range", alice, slidingPath, `{"lists":{"a":{"ranges":[[5,2]],"timeline_limit":1}}}`, 400, "M_INVALID_PARAM"},
			{"negative range", alice, slidingPath, `{"lists":{"a":{"ranges":[[-1,2]],"timeline_limit":1}}}`, 400, "M_INVALID_PARAM"},
			{"range of three", alice, slidingPath, `{"lists":{"a":{"ranges":[[0,1,2]],"timeline_limit":1}}}`, 400, "M_INVALID_PARAM"},
			{"negative timeline_limit", alice, slidingPath, `{"lists":{"a":{"ranges":[[0,1]],"timeline_limit":-1}}}`, 400, "M_INVALID_PARAM"},
			{"bad required_state", alice, slidingPath, `{"lists":{"a":{"ranges":[[0,1]],"required_state":[["a"]]}}}`, 400, "M_INVALID_PARAM"},
			{"bad timeout", alice, slidingPath + "?timeout=soon", `{}`, 400, "M_INVALID_PARAM"},
			{"bad set_presence", alice, slidingPath, `{"set_presence":"busy"}`, 400, "M_INVALID_PARAM"},
			{"to_device since from the future", alice, slidingPath, `{"extensions":{"to_device":{"enabled":true,"since":"999999"}}}`, 400, "M_INVALID_PARAM"},
			{"to_device since not a number", alice, slidingPath, `{"extensions":{"to_device":{"enabled":true,"since":"x"}}}`, 400, "M_INVALID_PARAM"},
			{"no token", nil, slidingPath, `{}`, 401, "M_MISSING_TOKEN"},
		} {
			token := ""
			if c.client != nil {
				token = c.client.AccessToken
			}
			st, body, raw := doRaw(t, env, "POST", c.path, token, c.body)
			if st != c.status || body["errcode"] != c.code {
				t.Errorf("%s: %d %s, want %d %s", c.name, st, raw, c.status, c.code)
			}
		}
		// An unchanged connection keeps its pos (nothing is written).
		if again := mustSS(t, env, alice, r.Pos, 0, allRoomsList(9, 1, [][]string{})); again.Pos != r.Pos {
			t.Fatalf("idle answer moved pos %s -> %s", r.Pos, again.Pos)
		}
		// Concurrent requests on one pos (a retry while the first still
		// runs) each get their own new pos, and both stay usable.
		if _, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{}); err != nil {
			t.Fatal(err)
		}
		type res struct {
			r   *ssResp
			raw []byte
		}
		ch := make(chan res, 2)
		for i := 0; i < 2; i++ {
			go func() {
				_, rr, raw := ss(t, env, alice, r.Pos, 0, allRoomsList(9, 1, [][]string{}))
				ch <- res{rr, raw}
			}()
		}
		a, b := <-ch, <-ch
		if a.r == nil || b.r == nil || a.r.Pos == b.r.Pos {
			t.Fatalf("concurrent requests: %s / %s", a.raw, b.raw)
		}
		for _, p := range []string{a.r.Pos, b.r.Pos} {
			if st, _, raw := ss(t, env, alice, p, 0, allRoomsList(9, 1, [][]string{})); st != 200 {
				t.Fatalf("pos %s after concurrent requests: %d %s", p, st, raw)
			}
		}
		// Once the client used a pos made from r.Pos, r.Pos is forgotten.
		if st, _, raw := ss(t, env, alice, r.Pos, 0, allRoomsList(9, 1, [][]string{})); st != 400 {
			t.Fatalf("pos the client moved past: %d %s", st, raw)
		}
		// /versions advertises the feature.
		st, body, _ := doRaw(t, env, "GET", "/_matrix/client/versions", "", "")
		uf, _ := body["unstable_features"].(map[string]any)
		if st != 200 || uf["org.matrix.simplified_msc3575"] != true {
			t.Fatalf("versions: %v", body)
		}
	})
}

// TestSlidingSyncExtensionsAndMembership: the account_data, receipts and
// typing extensions carry the initial data and later changes for the rooms
// in the lists; the user's own read receipt resets the room's unread count;
// a room the user leaves is sent once more with its leave, then drops out
// of the list.
func TestSlidingSyncExtensionsAndMembership(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice, bob, room := aliceAndBobInPublicRoom(t, env)
		if err := bob.SetAccountData(ctx, "org.example.global", map[string]any{"v": 1}); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetRoomAccountData(ctx, room.RoomID, "org.example.room", map[string]any{"v": 2}); err != nil {
			t.Fatal(err)
		}
		ev := sendText(t, alice, room.RoomID, "hello bob")
		if err := alice.MarkRead(ctx, room.RoomID, ev); err != nil {
			t.Fatal(err)
		}
		body := allRoomsList(9, 3, [][]string{})
		body["extensions"] = map[string]any{
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true},
			"typing":       map[string]any{"enabled": true},
		}
		type exts struct {
			AccountData struct {
				Global []syncEvent               `json:"global"`
				Rooms  map[id.RoomID][]syncEvent `json:"rooms"`
			} `json:"account_data"`
			Receipts struct {
				Rooms map[id.RoomID]syncEvent `json:"rooms"`
			} `json:"receipts"`
			Typing struct {
				Rooms map[id.RoomID]syncEvent `json:"rooms"`
			} `json:"typing"`
		}
		decodeExt := func(r *ssResp) exts {
			var e exts
			b, _ := json.Marshal(r.Extensions)
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			return e
		}
		r := mustSS(t, env, bob, "", 0, body)
		e := decodeExt(r)
		foundGlobal := false
		for _, g := range e.AccountData.Global {
			foundGlobal = foundGlobal || g.Type == "org.example.global"
		}
		if !foundGlobal || len(e.AccountData.Rooms[room.RoomID]) != 1 || e.AccountData.Rooms[room.RoomID][0].Type != "org.example.room" {
			t.Fatalf("initial account data: %+v", e.AccountData)
		}
		rc, ok := e.Receipts.Rooms[room.RoomID]
		if !ok || rc.Type != "m.receipt" || rc.Content[string(ev)] == nil {
			t.Fatalf("initial receipts: %+v", e.Receipts)
		}

		// Changes: typing, account data; each shows in a later answer.
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetAccountData(ctx, "org.example.global", map[string]any{"v": 3}); err != nil {
			t.Fatal(err)
		}
		pos := r.Pos
		var sawTyping, sawAD bool
		deadline := time.Now().Add(10 * time.Second)
		for (!sawTyping || !sawAD) && time.Now().Before(deadline) {
			r = mustSS(t, env, bob, pos, 2000, body)
			pos = r.Pos
			e = decodeExt(r)
			if tr, ok := e.Typing.Rooms[room.RoomID]; ok {
				users, _ := tr.Content["user_ids"].([]any)
				sawTyping = sawTyping || len(users) == 1 && users[0] == string(alice.UserID)
			}
			for _, g := range e.AccountData.Global {
				if g.Type == "org.example.global" && g.Content["v"] == float64(3) {
					sawAD = true
				}
			}
		}
		if !sawTyping || !sawAD {
			t.Fatalf("typing %v, account data %v", sawTyping, sawAD)
		}

		// bob's unread count, then his read receipt clears it.
		ev2 := sendText(t, alice, room.RoomID, "unread")
		count := func(want int) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				r = mustSS(t, env, bob, pos, 2000, body)
				pos = r.Pos
				if rm := r.Rooms[room.RoomID]; rm != nil && rm.Notifications != nil && *rm.Notifications == want {
					return
				}
			}
			t.Fatalf("notification_count never became %d", want)
		}
		count(2)
		if err := bob.MarkRead(ctx, room.RoomID, ev2); err != nil {
			t.Fatal(err)
		}
		count(0)

		// bob leaves: the room comes once more with his leave, then the
		// list no longer counts it.
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		r = mustSS(t, env, bob, pos, 5000, body)
		rm := r.Rooms[room.RoomID]
		if rm == nil || rm.Membership != "leave" || len(rm.Timeline) == 0 || rm.Timeline[len(rm.Timeline)-1].Type != "m.room.member" {
			t.Fatalf("left room: %+v", rm)
		}
		sendText(t, alice, room.RoomID, "after bob left")
		r = mustSS(t, env, bob, r.Pos, 0, body)
		if r.Lists["all"].Count != 0 || r.Rooms[room.RoomID] != nil {
			t.Fatalf("after leaving: count %d, room %+v", r.Lists["all"].Count, r.Rooms[room.RoomID])
		}

		// A room bob is kicked from stays listed, on a new connection too;
		// the room he left himself does not come back.
		kick, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, kick.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.KickUser(ctx, kick.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		r = mustSS(t, env, bob, "", 0, body)
		kr := r.Rooms[kick.RoomID]
		if r.Lists["all"].Count != 1 || kr == nil || kr.Membership != "leave" || r.Rooms[room.RoomID] != nil {
			t.Fatalf("new connection after a kick: count %d, rooms %v", r.Lists["all"].Count, keysOf(r.Rooms))
		}
	})
}
