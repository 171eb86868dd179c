package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func ruleIDs(t *testing.T, set any, kind string) []string {
	t.Helper()
	m, _ := set.(map[string]any)
	list, _ := m[kind].([]any)
	var out []string
	for _, r := range list {
		out = append(out, r.(map[string]any)["rule_id"].(string))
	}
	return out
}

func TestPushRules(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		const base = "/_matrix/client/v3/pushrules/"

		st, body, _ := do(t, env, "GET", base, tok, "")
		if st != 200 {
			t.Fatalf("GET /pushrules/: %d %v", st, body)
		}
		over := ruleIDs(t, body["global"], "override")
		if len(over) == 0 || over[0] != ".m.rule.master" || len(ruleIDs(t, body["global"], "underride")) != 5 {
			t.Fatalf("defaults: %v", body)
		}
		st, body, _ = do(t, env, "GET", base+"global/override/.m.rule.master/enabled", tok, "")
		if st != 200 || body["enabled"] != false {
			t.Fatalf("master enabled: %d %v", st, body)
		}

		// Bad input, per the spec.
		for _, c := range []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			{"server-default id", "PUT", "global/override/.my.rule", `{"actions":["notify"]}`, 400, "M_INVALID_PARAM"},
			{"unknown kind", "PUT", "global/nope/x", `{"actions":["notify"]}`, 400, "M_INVALID_PARAM"},
			{"missing actions", "PUT", "global/override/x", `{}`, 400, "M_MISSING_PARAM"},
			{"bad action", "PUT", "global/override/x", `{"actions":["shout"]}`, 400, "M_INVALID_PARAM"},
			{"content without pattern", "PUT", "global/content/x", `{"actions":["notify"]}`, 400, "M_MISSING_PARAM"},
			{"room rule not a room", "PUT", "global/room/x", `{"actions":["notify"]}`, 400, "M_INVALID_PARAM"},
			{"unknown before", "PUT", "global/override/x?before=nope", `{"actions":["notify"]}`, 400, "M_UNKNOWN"},
			{"before a default rule", "PUT", "global/override/x?before=.m.rule.message", `{"actions":["notify"]}`, 400, "M_UNKNOWN"},
			{"not JSON", "PUT", "global/override/x", `nope`, 400, "M_NOT_JSON"},
			{"delete default", "DELETE", "global/override/.m.rule.master", ``, 404, "M_NOT_FOUND"},
			{"delete unknown", "DELETE", "global/override/nope", ``, 404, "M_NOT_FOUND"},
			{"get unknown", "GET", "global/override/nope", ``, 404, "M_NOT_FOUND"},
			{"enabled of unknown", "PUT", "global/override/nope/enabled", `{"enabled":true}`, 404, "M_NOT_FOUND"},
			{"enabled missing", "PUT", "global/override/.m.rule.master/enabled", `{}`, 400, "M_MISSING_PARAM"},
		} {
			st, body, _ := do(t, env, c.method, base+c.path, tok, c.body)
			if st != c.status || body["errcode"] != c.code {
				t.Errorf("%s: %d %v, want %d %s", c.name, st, body, c.status, c.code)
			}
		}

		put := func(path, body string) {
			t.Helper()
			if st, b, _ := do(t, env, "PUT", base+path, tok, body); st != 200 {
				t.Fatalf("PUT %s: %d %v", path, st, b)
			}
		}
		put("global/override/b", `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"x.b"}]}`)
		put("global/override/a", `{"actions":["notify"]}`) // new: most important user rule
		put("global/override/c?after=b", `{"actions":[]}`)
		put("global/override/d?before=a", `{"actions":[]}`)
		_, body, _ = do(t, env, "GET", base+"global/", tok, "")
		got := ruleIDs(t, body, "override")
		want := []string{".m.rule.master", "d", "a", "b", "c", ".m.rule.suppress_notices"}
		for i, w := range want {
			if i >= len(got) || got[i] != w {
				t.Fatalf("override order %v, want it to start %v", got, want)
			}
		}
		put("global/content/cake", `{"actions":["notify"],"pattern":"cake*lie"}`)
		put("global/underride/.m.rule.message/actions", `{"actions":["notify",{"set_tweak":"sound","value":"x"}]}`)
		put("global/override/.m.rule.master/enabled", `{"enabled":true}`)
		st, body, _ = do(t, env, "GET", base+"global/content/cake", tok, "")
		if st != 200 || body["pattern"] != "cake*lie" || body["enabled"] != true || body["default"] != false {
			t.Fatalf("content rule: %d %v", st, body)
		}
		if st, b, _ := do(t, env, "DELETE", base+"global/override/a", tok, ""); st != 200 {
			t.Fatalf("delete: %d %v", st, b)
		}

		// /sync carries the ruleset as m.push_rules account data.
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		var found map[string]any
		for _, ev := range resp.AccountData.Events {
			if ev.Type.Type == "m.push_rules" {
				_ = json.Unmarshal(ev.Content.VeryRaw, &found)
			}
		}
		if found == nil {
			t.Fatalf("no m.push_rules in sync account data")
		}
		g := found["global"]
		if ids := ruleIDs(t, g, "override"); len(ids) < 4 || ids[1] != "d" || ids[2] != "b" {
			t.Fatalf("synced override rules %v", ids)
		}
		if ids := ruleIDs(t, g, "content"); len(ids) != 2 || ids[0] != "cake" {
			t.Fatalf("synced content rules %v", ids)
		}
		st, body, _ = do(t, env, "GET", base+"global/override/.m.rule.master/enabled", tok, "")
		if st != 200 || body["enabled"] != true {
			t.Fatalf("master after enabling: %d %v", st, body)
		}
		st, body, _ = do(t, env, "GET", base+"global/underride/.m.rule.message/actions", tok, "")
		if acts, _ := body["actions"].([]any); st != 200 || len(acts) != 2 {
			t.Fatalf("message actions: %d %v", st, body)
		}
		// Clients still cannot write it through the account data endpoint.
		st, body, _ = do(t, env, "PUT", "/_matrix/client/v3/user/"+string(alice.UserID)+"/account_data/m.push_rules", tok, `{"global":{}}`)
		if st != 405 && st != 400 && st != 403 {
			t.Fatalf("account data write of m.push_rules: %d %v", st, body)
		}
	})
}

func TestNotificationsAndUnreadCounts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		cr, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := cr.RoomID
		if _, err := alice.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		carol := register(t, env, "carol", "pw") // three members: not a one-to-one room
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		send := func(c *mautrix.Client, content map[string]any) id.EventID {
			t.Helper()
			r, err := c.SendMessageEvent(ctx, room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		send(bob, map[string]any{"msgtype": "m.text", "body": "hello"})
		send(bob, map[string]any{"msgtype": "m.notice", "body": "a notice"}) // suppressed
		send(alice, map[string]any{"msgtype": "m.text", "body": "my own"})   // never notifies its sender
		last := send(bob, map[string]any{"msgtype": "m.text", "body": "hey you", "m.mentions": map[string]any{"user_ids": []string{string(alice.UserID)}}})

		const notifs = "/_matrix/client/v3/notifications"
		var st int
		var body map[string]any
		var list []any
		// The fan-out worker records notifications after the send returns.
		testenv.Eventually(t, 10*time.Second, "two notifications", func() error {
			st, body, _ = do(t, env, "GET", notifs, alice.AccessToken, "")
			list, _ = body["notifications"].([]any)
			if st != 200 || len(list) != 2 {
				return fmt.Errorf("notifications: %d %v", st, body)
			}
			return nil
		})
		first := list[0].(map[string]any)
		if first["read"] != false || first["room_id"] != string(room) || first["event"].(map[string]any)["event_id"] != string(last) {
			t.Fatalf("newest notification: %v", first)
		}
		st, body, _ = do(t, env, "GET", notifs+"?only=highlight", alice.AccessToken, "")
		if list, _ := body["notifications"].([]any); st != 200 || len(list) != 1 {
			t.Fatalf("highlights: %d %v", st, body)
		}
		st, body, _ = do(t, env, "GET", notifs+"?limit=1", alice.AccessToken, "")
		if list, _ := body["notifications"].([]any); st != 200 || len(list) != 1 || body["next_token"] == nil {
			t.Fatalf("first page: %d %v", st, body)
		}
		st, body, _ = do(t, env, "GET", notifs+"?limit=1&from="+body["next_token"].(string), alice.AccessToken, "")
		if list, _ := body["notifications"].([]any); st != 200 || len(list) != 1 || body["next_token"] != nil {
			t.Fatalf("second page: %d %v", st, body)
		}
		for _, bad := range []string{"?from=x", "?limit=0", "?only=all"} {
			if st, body, _ := do(t, env, "GET", notifs+bad, alice.AccessToken, ""); st != 400 || body["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %v", bad, st, body)
			}
		}

		unread := func() (int, int) {
			t.Helper()
			resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr := resp.Rooms.Join[room]
			if jr == nil || jr.UnreadNotifications == nil {
				t.Fatalf("no unread counts for the room")
			}
			return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount
		}
		if n, h := unread(); n != 2 || h != 1 {
			t.Fatalf("unread %d, highlights %d; want 2, 1", n, h)
		}
		if err := alice.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if n, h := unread(); n != 0 || h != 0 {
			t.Fatalf("after the receipt: unread %d, highlights %d", n, h)
		}
		_, body, _ = do(t, env, "GET", notifs, alice.AccessToken, "")
		if list, _ := body["notifications"].([]any); len(list) != 2 || list[0].(map[string]any)["read"] != true {
			t.Fatalf("notifications after the receipt: %v", body)
		}

		// Disabling .m.rule.message stops plain messages notifying.
		if st, b, _ := do(t, env, "PUT", "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled", alice.AccessToken, `{"enabled":false}`); st != 200 {
			t.Fatalf("disable: %d %v", st, b)
		}
		send(bob, map[string]any{"msgtype": "m.text", "body": "quiet"})
		// A mention after it still notifies; once it is counted the worker
		// has passed "quiet" too (it handles events in order).
		send(bob, map[string]any{"msgtype": "m.text", "body": "psst", "m.mentions": map[string]any{"user_ids": []string{string(alice.UserID)}}})
		testenv.Eventually(t, 10*time.Second, "the mention counted", func() error {
			if n, h := unread(); n != 1 || h != 1 {
				return fmt.Errorf("unread %d, highlights %d; want 1, 1 (.m.rule.message disabled)", n, h)
			}
			return nil
		})
	})
}

func TestPushers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		const set, list = "/_matrix/client/v3/pushers/set", "/_matrix/client/v3/pushers"
		pusher := func(changes map[string]any) map[string]any {
			p := map[string]any{"kind": "http", "app_id": "com.example.app", "pushkey": "key1",
				"app_display_name": "App", "device_display_name": "Phone", "lang": "en",
				"data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only"}}
			for k, v := range changes {
				if v == "<absent>" {
					delete(p, k)
				} else {
					p[k] = v
				}
			}
			return p
		}
		for _, c := range []struct {
			name    string
			changes map[string]any
			code    string
		}{
			{"no kind", map[string]any{"kind": "<absent>"}, "M_MISSING_PARAM"},
			{"no app_id", map[string]any{"app_id": "<absent>"}, "M_MISSING_PARAM"},
			{"no pushkey", map[string]any{"pushkey": "<absent>"}, "M_MISSING_PARAM"},
			{"long app_id", map[string]any{"app_id": strings.Repeat("a", 65)}, "M_INVALID_PARAM"},
			{"long pushkey", map[string]any{"pushkey": strings.Repeat("k", 513)}, "M_INVALID_PARAM"},
			{"no lang", map[string]any{"lang": "<absent>"}, "M_MISSING_PARAM"},
			{"no data", map[string]any{"data": "<absent>"}, "M_MISSING_PARAM"},
			{"no url", map[string]any{"data": map[string]any{}}, "M_MISSING_PARAM"},
			{"wrong path", map[string]any{"data": map[string]any{"url": "https://push.example/notify"}}, "M_INVALID_PARAM"},
			{"not http", map[string]any{"data": map[string]any{"url": "ftp://push.example/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"},
			{"unknown kind", map[string]any{"kind": "carrier-pigeon"}, "M_INVALID_PARAM"},
		} {
			if st, body := doJSON(t, env, "POST", set, alice.AccessToken, pusher(c.changes)); st != 400 || body["errcode"] != c.code {
				t.Errorf("%s: %d %v, want 400 %s", c.name, st, body, c.code)
			}
		}
		count := func(tok string) int {
			t.Helper()
			st, body := doJSON(t, env, "GET", list, tok, nil)
			ps, _ := body["pushers"].([]any)
			if st != 200 || ps == nil {
				t.Fatalf("GET /pushers: %d %v", st, body)
			}
			return len(ps)
		}
		if n := count(alice.AccessToken); n != 0 {
			t.Fatalf("%d pushers before any", n)
		}
		for _, c := range []struct {
			who    string
			body   map[string]any
			alice  int
			bobHas int
		}{
			{"alice", pusher(nil), 1, 0},
			{"alice", pusher(map[string]any{"pushkey": "key2"}), 2, 0},
			{"alice", pusher(map[string]any{"lang": "de"}), 2, 0}, // replaces key1
			{"bob", pusher(map[string]any{"append": true}), 2, 1}, // both keep key1
			{"bob", pusher(nil), 1, 1},                            // takes key1 from alice
			{"bob", pusher(map[string]any{"kind": nil}), 1, 0},    // deletes
		} {
			tok := alice.AccessToken
			if c.who == "bob" {
				tok = bob.AccessToken
			}
			if st, body := doJSON(t, env, "POST", set, tok, c.body); st != 200 {
				t.Fatalf("set %v: %d %v", c.body, st, body)
			}
			if a, b := count(alice.AccessToken), count(bob.AccessToken); a != c.alice || b != c.bobHas {
				t.Fatalf("after %s set %v: alice %d, bob %d pushers; want %d, %d", c.who, c.body, a, b, c.alice, c.bobHas)
			}
		}
		_, body := doJSON(t, env, "GET", list, alice.AccessToken, nil)
		p := body["pushers"].([]any)[0].(map[string]any)
		if p["pushkey"] != "key2" || p["data"].(map[string]any)["format"] != "event_id_only" || p["app_display_name"] != "App" {
			t.Fatalf("stored pusher: %v", p)
		}
	})
}

// pushSetup starts a local push gateway, gives alice a pusher pointing at
// it, and has bob send alice a message in a shared room. It returns what the
// gateway receives, the sent event and the sender.
func pushSetup(t *testing.T, env *testenv.Env) (<-chan map[string]any, id.EventID, id.UserID) {
	t.Helper()
	ctx := context.Background()
	got := make(chan map[string]any, 10)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		got <- b
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	t.Cleanup(gw.Close)
	alice := register(t, env, "alice", "pw")
	bob := register(t, env, "bob", "pw")
	st, body := doJSON(t, env, "POST", "/_matrix/client/v3/pushers/set", alice.AccessToken, map[string]any{
		"kind": "http", "app_id": "com.example", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en",
		"data": map[string]any{"url": gw.URL + "/_matrix/push/v1/notify"}})
	if st != 200 {
		t.Fatalf("set pusher: %d %v", st, body)
	}
	cr, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(ctx, cr.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := bob.SendMessageEvent(ctx, cr.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "ping"})
	if err != nil {
		t.Fatal(err)
	}
	return got, sent.EventID, bob.UserID
}

// TestPushGatewayRefusesInternalHosts: by default a pusher URL on loopback
// is never contacted (users must not reach internal hosts through us).
func TestPushGatewayRefusesInternalHosts(t *testing.T) {
	got, _, _ := pushSetup(t, testenv.Start(t, "embedded", nil))
	select {
	case <-got:
		t.Fatal("the server contacted a push gateway on loopback")
	case <-time.After(1500 * time.Millisecond):
	}
}

func TestPushGatewayDelivery(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_PUSH_ALLOW_PRIVATE": "true"}, func(t *testing.T, env *testenv.Env) {
		got, sent, sender := pushSetup(t, env)
		select {
		case b := <-got:
			n := b["notification"].(map[string]any)
			if n["event_id"] != string(sent) || n["sender"] != string(sender) {
				t.Fatalf("pushed %v", n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the push gateway got nothing")
		}
	})
}

// TestInitialSyncHasDefaultPushRules: a user who never changed a rule still
// gets m.push_rules (the server defaults) in an initial /sync, as clients
// read their notification settings from there.
func TestInitialSyncHasDefaultPushRules(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		st, body, _ := do(t, env, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, "")
		if st != 200 {
			t.Fatalf("sync: %d %v", st, body)
		}
		ad, _ := body["account_data"].(map[string]any)
		events, _ := ad["events"].([]any)
		for _, e := range events {
			ev, _ := e.(map[string]any)
			if ev["type"] != "m.push_rules" {
				continue
			}
			c, _ := ev["content"].(map[string]any)
			g, _ := c["global"].(map[string]any)
			over, _ := g["override"].([]any)
			for _, r := range over {
				if rm, _ := r.(map[string]any); rm["rule_id"] == ".m.rule.master" {
					return
				}
			}
			t.Fatalf("m.push_rules without .m.rule.master: %v", c)
		}
		t.Fatalf("initial sync has no m.push_rules: %v", ad)
	})
}
