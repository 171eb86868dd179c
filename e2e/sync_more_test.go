package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// rawRoom is a joined or left room of a /sync answer, kept raw so tests
// can tell a missing key from an empty one.
type rawRoom map[string]json.RawMessage

func rawRooms(t *testing.T, raw []byte, section string) map[id.RoomID]rawRoom {
	t.Helper()
	var resp struct {
		Rooms map[string]map[id.RoomID]rawRoom `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Rooms[section]
}

func eventsOf(t *testing.T, raw json.RawMessage) []syncEvent {
	t.Helper()
	var l struct {
		Events []syncEvent `json:"events"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatal(err)
		}
	}
	return l.Events
}

func syncRaw(t *testing.T, env *testenv.Env, c *mautrix.Client, query string) []byte {
	t.Helper()
	st, _, raw := doRaw(t, env, "GET", "/_matrix/client/v3/sync?"+query, c.AccessToken, "")
	if st != 200 {
		t.Fatalf("sync %s: %d %s", query, st, raw)
	}
	return raw
}

func nextBatch(t *testing.T, raw []byte) string {
	var r struct {
		NextBatch string `json:"next_batch"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.NextBatch
}

// TestSyncPresence: a presence change (set with PUT /presence or with
// /sync's set_presence) reaches the incremental /sync of a user sharing a
// room, and not of a user who shares none.
func TestSyncPresence(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		stranger := register(t, env, "stranger", "pw")
		cr, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, cr.RoomID); err != nil {
			t.Fatal(err)
		}
		since := nextBatch(t, syncRaw(t, env, bob, ""))
		strangerSince := nextBatch(t, syncRaw(t, env, stranger, ""))
		if st, b, _ := do(t, env, "PUT", "/_matrix/client/v3/presence/"+string(alice.UserID)+"/status", alice.AccessToken,
			`{"presence":"unavailable","status_msg":"lunch"}`); st != 200 {
			t.Fatalf("set presence: %d %v", st, b)
		}
		presenceOf := func(c *mautrix.Client, since *string, who id.UserID) map[string]any {
			raw := syncRaw(t, env, c, "timeout=3000&since="+urlq(*since))
			*since = nextBatch(t, raw)
			var r struct {
				Presence struct {
					Events []struct {
						Type    string         `json:"type"`
						Sender  id.UserID      `json:"sender"`
						Content map[string]any `json:"content"`
					} `json:"events"`
				} `json:"presence"`
			}
			_ = json.Unmarshal(raw, &r)
			for _, e := range r.Presence.Events {
				if e.Sender == who && e.Type == "m.presence" {
					return e.Content
				}
			}
			return nil
		}
		testenv.Eventually(t, 15*time.Second, "alice's presence in bob's sync", func() error {
			c := presenceOf(bob, &since, alice.UserID)
			if c == nil || c["presence"] != "unavailable" || c["status_msg"] != "lunch" {
				return fmt.Errorf("presence %v", c)
			}
			return nil
		})
		// An initial sync has it too (members of the user's rooms).
		var initial struct {
			Presence struct {
				Events []struct {
					Sender  id.UserID      `json:"sender"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"presence"`
		}
		if err := json.Unmarshal(syncRaw(t, env, bob, ""), &initial); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range initial.Presence.Events {
			if e.Sender == alice.UserID && e.Content["presence"] == "unavailable" {
				found = true
			}
			if e.Sender == stranger.UserID {
				t.Fatalf("initial sync has the presence of a stranger: %+v", initial)
			}
		}
		if !found {
			t.Fatalf("initial sync lacks alice's presence: %+v", initial)
		}
		if c := presenceOf(stranger, &strangerSince, alice.UserID); c != nil {
			t.Fatalf("a user sharing no room got alice's presence: %v", c)
		}
		// set_presence=offline on alice's own sync is a change too.
		syncRaw(t, env, alice, "set_presence=offline")
		testenv.Eventually(t, 15*time.Second, "alice offline", func() error {
			if c := presenceOf(bob, &since, alice.UserID); c == nil || c["presence"] != "offline" {
				return fmt.Errorf("presence %v", c)
			}
			return nil
		})
		if st, b, _ := doRaw(t, env, "GET", "/_matrix/client/v3/sync?set_presence=away", bob.AccessToken, ""); st != 400 {
			t.Fatalf("set_presence=away: %d %s", st, b)
		}
	})
}

// TestSyncStateAfter: with use_state_after=true the joined room carries
// state_after (the state up to the end of the timeline) and no state;
// without it, state and no state_after.
func TestSyncStateAfter(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		cr, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := cr.RoomID
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		since := nextBatch(t, syncRaw(t, env, bob, ""))
		topic, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "after"})
		if err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "hello")

		// Incremental, use_state_after: the topic is in state_after even
		// though it is also in the timeline; no state key at all.
		raw := syncRaw(t, env, bob, "use_state_after=true&since="+urlq(since))
		jr := rawRooms(t, raw, "join")[room]
		if jr == nil {
			t.Fatalf("room missing: %s", raw)
		}
		if _, ok := jr["state"]; ok {
			t.Fatalf("state present with use_state_after: %s", raw)
		}
		sa := eventsOf(t, jr["state_after"])
		if e := hasState(sa, "m.room.topic", ""); e == nil || e.EventID != topic.EventID {
			t.Fatalf("state_after lacks the new topic: %s", raw)
		}
		if hasState(sa, "m.room.create", "") != nil {
			t.Fatalf("incremental state_after has unchanged state: %s", raw)
		}

		// Without it: state, and no state_after.
		raw = syncRaw(t, env, bob, "since="+urlq(since))
		jr = rawRooms(t, raw, "join")[room]
		if _, ok := jr["state_after"]; ok {
			t.Fatalf("state_after without use_state_after: %s", raw)
		}
		if _, ok := jr["state"]; !ok {
			t.Fatalf("no state key: %s", raw)
		}

		// Initial sync with a one-event timeline: state_after is the whole
		// state at the timeline's end (new topic included).
		raw = syncRaw(t, env, bob, "use_state_after=true&filter="+urlq(`{"room":{"timeline":{"limit":1}}}`))
		jr = rawRooms(t, raw, "join")[room]
		sa = eventsOf(t, jr["state_after"])
		if hasState(sa, "m.room.create", "") == nil || hasState(sa, "m.room.member", string(bob.UserID)) == nil {
			t.Fatalf("initial state_after incomplete: %s", raw)
		}
		if e := hasState(sa, "m.room.topic", ""); e == nil || e.EventID != topic.EventID {
			t.Fatalf("initial state_after lacks the topic: %s", raw)
		}
		if _, ok := jr["state"]; ok {
			t.Fatalf("initial sync has state with use_state_after: %s", raw)
		}
		if st, b, _ := doRaw(t, env, "GET", "/_matrix/client/v3/sync?use_state_after=yes", bob.AccessToken, ""); st != 400 {
			t.Fatalf("use_state_after=yes: %d %s", st, b)
		}
		_, vb, _ := do(t, env, "GET", "/_matrix/client/versions", "", "")
		if uf, _ := vb["unstable_features"].(map[string]any); uf["org.matrix.msc4222"] != true {
			t.Fatalf("versions does not advertise state_after: %v", vb)
		}
	})
}

// TestSyncThreadUnreadCounts: with unread_thread_notifications the main
// timeline's count leaves thread events out and each thread has its own;
// threaded receipts clear only their thread's count.
func TestSyncThreadUnreadCounts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		reader, a, _, room := fanoutRoom(t, env)
		root := sendText(t, a, room, "root")
		reply := func(body string) id.EventID {
			r, err := a.SendMessageEvent(context.Background(), room, event.EventMessage, map[string]any{
				"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
			})
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		reply("in thread 1")
		last := reply("in thread 2")

		threaded := "filter=" + urlq(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		type counts struct {
			Notif int `json:"notification_count"`
			High  int `json:"highlight_count"`
		}
		read := func(q string) (counts, map[id.EventID]counts) {
			jr := rawRooms(t, syncRaw(t, env, reader, q), "join")[room]
			var main counts
			var byThread map[id.EventID]counts
			_ = json.Unmarshal(jr["unread_notifications"], &main)
			_ = json.Unmarshal(jr["unread_thread_notifications"], &byThread)
			return main, byThread
		}
		testenv.Eventually(t, 15*time.Second, "three notifications counted", func() error {
			if all, th := read(""); all.Notif != 3 || th != nil {
				return fmt.Errorf("without the filter: %+v %v", all, th)
			}
			return nil
		})
		main, th := read(threaded)
		if main.Notif != 1 || th[root].Notif != 2 || len(th) != 1 {
			t.Fatalf("threaded counts: main %+v threads %v", main, th)
		}
		receipt := func(ev id.EventID, thread string) {
			if st, b, _ := do(t, env, "POST", "/_matrix/client/v3/rooms/"+string(room)+"/receipt/m.read/"+string(ev),
				reader.AccessToken, `{"thread_id":"`+thread+`"}`); st != 200 {
				t.Fatalf("receipt: %d %v", st, b)
			}
		}
		receipt(last, string(root)) // the thread is read
		main, th = read(threaded)
		if main.Notif != 1 || len(th) != 0 {
			t.Fatalf("after the thread receipt: main %+v threads %v", main, th)
		}
		receipt(root, "main") // and the main timeline
		if main, th = read(threaded); main.Notif != 0 || len(th) != 0 {
			t.Fatalf("after the main receipt: main %+v threads %v", main, th)
		}
	})
}

// TestBarePushRulesPath: GET /pushrules/ (trailing slash, as the spec
// writes it) answers the whole ruleset on every engine, including through
// the API Gateway emulator, which routes a trailing slash as API Gateway
// does.
func TestBarePushRulesPath(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		for _, p := range []string{"/_matrix/client/v3/pushrules/", "/_matrix/client/v3/pushrules/global/"} {
			st, body, _ := do(t, env, "GET", p, alice.AccessToken, "")
			if st != 200 {
				t.Fatalf("%s: %d %v", p, st, body)
			}
			set := body
			if p == "/_matrix/client/v3/pushrules/" {
				set, _ = body["global"].(map[string]any)
			}
			if _, ok := set["override"]; !ok {
				t.Fatalf("%s: no override rules in %v", p, body)
			}
		}
		if st, body, _ := do(t, env, "GET", "/_matrix/client/v3/pushrules/", "", ""); st != 401 {
			t.Fatalf("unauthenticated: %d %v", st, body)
		}
	})
}
