package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// registerAdmin creates a server admin through shared-secret registration.
func registerAdmin(t *testing.T, env *testenv.Env, name string) string {
	t.Helper()
	n := nonce(t, env)
	st, body := doJSON(t, env, http.MethodPost, "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": name,
		"password": "pw", "admin": true, "mac": registrationMAC(sharedSecret, n, name, "pw", true, "")})
	tok, _ := body["access_token"].(string)
	if st != 200 || tok == "" {
		t.Fatalf("register admin: %d %v", st, body)
	}
	return tok
}

// expect checks an answer's status and errcode ("" for success).
func expect(t *testing.T, what string, st int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if st != wantStatus || (wantCode != "" && body["errcode"] != wantCode) {
		t.Fatalf("%s: %d %v, want %d %s", what, st, body, wantStatus, wantCode)
	}
}

func TestAdminWhois(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_REGISTRATION_SHARED_SECRET": sharedSecret}, func(t *testing.T, env *testenv.Env) {
		root := registerAdmin(t, env, "root")
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		const whois = "/_matrix/client/v3/admin/whois/"

		// A user may look themself up; others need a server admin.
		st, body, _ := do(t, env, http.MethodGet, whois+string(alice.UserID), alice.AccessToken, "")
		expect(t, "whois self", st, body, 200, "")
		if body["user_id"] != string(alice.UserID) {
			t.Fatalf("whois self: %v", body)
		}
		st, body, _ = do(t, env, http.MethodGet, whois+string(bob.UserID), alice.AccessToken, "")
		expect(t, "whois another user", st, body, 403, "M_FORBIDDEN")
		st, body, _ = do(t, env, http.MethodGet, whois+"@nobody:cirrus.test", alice.AccessToken, "")
		expect(t, "whois an unknown user as a non-admin", st, body, 403, "M_FORBIDDEN")

		st, body, _ = do(t, env, http.MethodGet, whois+string(bob.UserID), root, "")
		expect(t, "admin whois", st, body, 200, "")
		devs, _ := body["devices"].(map[string]any)
		dev, _ := devs[string(bob.DeviceID)].(map[string]any)
		sessions, _ := dev["sessions"].([]any)
		if len(devs) != 1 || len(sessions) != 1 {
			t.Fatalf("whois devices: %v", body)
		}
		conns, _ := sessions[0].(map[string]any)["connections"].([]any)
		if len(conns) != 1 {
			t.Fatalf("whois connections: %v", sessions)
		}
		conn := conns[0].(map[string]any)
		if ls, _ := conn["last_seen"].(float64); ls <= 0 {
			t.Fatalf("connection without last_seen: %v", conn)
		}
		if ua, _ := conn["user_agent"].(string); !strings.Contains(ua, "mautrix") {
			t.Fatalf("connection user agent %q, want the mautrix client's", ua)
		}
		if env.Vars["CIRRUS_STORAGE"] != "aws" || env.URL != "http://apigateway.test" {
			if ip, _ := conn["ip"].(string); ip == "" {
				t.Fatalf("connection without ip: %v", conn)
			}
		}
		st, body, _ = do(t, env, http.MethodGet, whois+"@nobody:cirrus.test", root, "")
		expect(t, "whois unknown", st, body, 404, "M_NOT_FOUND")
		st, body, _ = do(t, env, http.MethodGet, whois+"@bob:elsewhere.test", root, "")
		expect(t, "whois remote", st, body, 400, "M_INVALID_PARAM")
		st, body, _ = do(t, env, http.MethodGet, whois+"not-a-user", root, "")
		expect(t, "whois bad id", st, body, 400, "M_INVALID_PARAM")
		st, body, _ = do(t, env, http.MethodGet, whois+string(bob.UserID), "", "")
		expect(t, "whois without a token", st, body, 401, "M_MISSING_TOKEN")
	})
}

func TestAdminSuspend(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_REGISTRATION_SHARED_SECRET": sharedSecret}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		root := registerAdmin(t, env, "root")
		other := registerAdmin(t, env, "root2")
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		const path = "/_matrix/client/v1/admin/suspend/"
		b := path + string(bob.UserID)

		// Authorisation first: a non-admin learns nothing, not even existence.
		for _, target := range []string{string(bob.UserID), "@nobody:cirrus.test", "@x:elsewhere.test"} {
			st, body, _ := do(t, env, http.MethodGet, path+target, alice.AccessToken, "")
			expect(t, "non-admin get "+target, st, body, 403, "M_FORBIDDEN")
			st, body, _ = do(t, env, http.MethodPut, path+target, alice.AccessToken, `{"suspended":true}`)
			expect(t, "non-admin put "+target, st, body, 403, "M_FORBIDDEN")
		}
		st, body, _ := do(t, env, http.MethodGet, b, root, "")
		expect(t, "get", st, body, 200, "")
		if body["suspended"] != false {
			t.Fatalf("fresh account suspended: %v", body)
		}
		for _, tc := range []struct{ path, body, code string }{
			{path + "@x:elsewhere.test", `{"suspended":true}`, "M_INVALID_PARAM"},
			{path + "bob", `{"suspended":true}`, "M_INVALID_PARAM"},
			{b, `{}`, "M_MISSING_PARAM"},
			{b, `{"suspended":"yes"}`, "M_BAD_JSON"},
			{b, `[]`, "M_NOT_JSON"},
		} {
			st, body, _ := do(t, env, http.MethodPut, tc.path, root, tc.body)
			expect(t, "put "+tc.path+" "+tc.body, st, body, 400, tc.code)
		}
		st, body, _ = do(t, env, http.MethodGet, path+"@nobody:cirrus.test", root, "")
		expect(t, "get unknown", st, body, 404, "M_NOT_FOUND")
		st, body, _ = do(t, env, http.MethodPut, path+"@root2:cirrus.test", root, `{"suspended":true}`)
		expect(t, "suspend another admin", st, body, 403, "M_FORBIDDEN")
		_ = other

		// Before the suspension: a room, and a message of bob's.
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		own, err := bob.SendText(ctx, room.RoomID, "before")
		if err != nil {
			t.Fatal(err)
		}
		other2, err := bob.SendText(ctx, room.RoomID, "second")
		if err != nil {
			t.Fatal(err)
		}
		second, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}

		st, body, _ = do(t, env, http.MethodPut, b, root, `{"suspended":true}`)
		expect(t, "suspend", st, body, 200, "")
		if body["suspended"] != true {
			t.Fatalf("suspend answer %v", body)
		}
		st, body, _ = do(t, env, http.MethodGet, b, root, "")
		if st != 200 || body["suspended"] != true {
			t.Fatalf("get after suspend: %d %v", st, body)
		}
		// A new login is suspended too.
		bob2 := login(t, env, "bob", "pw", "second")
		for _, c := range []*mautrix.Client{bob, bob2} {
			if _, err := c.SendText(ctx, room.RoomID, "while suspended"); errcode(err) != "M_USER_SUSPENDED" || status(err) != 403 {
				t.Fatalf("send while suspended: %v", err)
			}
		}
		forbidden := []struct {
			name string
			do   func() error
		}{
			{"create room", func() error { _, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{}); return err }},
			{"join", func() error { _, err := bob.JoinRoomByID(ctx, second.RoomID); return err }},
			{"invite", func() error {
				_, err := bob.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: alice.UserID})
				return err
			}},
			{"state", func() error {
				_, err := bob.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]string{"topic": "x"})
				return err
			}},
			{"display name", func() error { return bob.SetDisplayName(ctx, "new name") }},
		}
		for _, f := range forbidden {
			if err := f.do(); errcode(err) != "M_USER_SUSPENDED" {
				t.Fatalf("%s while suspended: %v", f.name, err)
			}
		}
		// Still allowed: reading, syncing, redacting one's own events
		// (both ways), leaving.
		if _, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10); err != nil {
			t.Fatalf("read while suspended: %v", err)
		}
		if _, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline); err != nil {
			t.Fatalf("sync while suspended: %v", err)
		}
		if _, err := bob.RedactEvent(ctx, room.RoomID, own.EventID); err != nil {
			t.Fatalf("redact own event while suspended: %v", err)
		}
		red := map[string]any{"redacts": other2.EventID}
		if _, err := bob.SendMessageEvent(ctx, room.RoomID, event.EventRedaction, red); err != nil {
			t.Fatalf("redact own event through /send while suspended: %v", err)
		}
		alicesMsg, err := alice.SendText(ctx, room.RoomID, "alice's")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.RedactEvent(ctx, room.RoomID, alicesMsg.EventID); errcode(err) != "M_USER_SUSPENDED" {
			t.Fatalf("redact another's event while suspended: %v", err)
		}
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("leave while suspended: %v", err)
		}

		st, body, _ = do(t, env, http.MethodPut, b, root, `{"suspended":false}`)
		expect(t, "unsuspend", st, body, 200, "")
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join after unsuspension: %v", err)
		}
		if _, err := bob2.SendText(ctx, room.RoomID, "back"); err != nil {
			t.Fatalf("send after unsuspension: %v", err)
		}
	})
}

func TestAdminLock(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_REGISTRATION_SHARED_SECRET": sharedSecret}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		root := registerAdmin(t, env, "root")
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		bob2 := login(t, env, "bob", "pw", "second")
		const path = "/_matrix/client/v1/admin/lock/"
		b := path + string(bob.UserID)

		st, body, _ := do(t, env, http.MethodGet, b, alice.AccessToken, "")
		expect(t, "non-admin get", st, body, 403, "M_FORBIDDEN")
		st, body, _ = do(t, env, http.MethodPut, b, root, `{"locked":1}`)
		expect(t, "lock with a number", st, body, 400, "M_BAD_JSON")
		st, body, _ = do(t, env, http.MethodPut, b, root, `{"locked":true}`)
		expect(t, "lock", st, body, 200, "")
		st, body, _ = do(t, env, http.MethodGet, b, root, "")
		if st != 200 || body["locked"] != true {
			t.Fatalf("get after lock: %d %v", st, body)
		}
		// Every request but logout: 401 M_USER_LOCKED with soft_logout.
		for _, p := range []string{"/_matrix/client/v3/account/whoami", "/_matrix/client/v3/sync?timeout=0", "/_matrix/client/v3/devices"} {
			st, body, _ := do(t, env, http.MethodGet, p, bob.AccessToken, "")
			expect(t, "locked "+p, st, body, 401, "M_USER_LOCKED")
			if body["soft_logout"] != true {
				t.Fatalf("locked %s without soft_logout: %v", p, body)
			}
		}
		if err := passwordLogin(ctx, newClient(t, env), "bob", "pw"); errcode(err) != "M_USER_LOCKED" {
			t.Fatalf("login while locked: %v", err)
		}
		// Tokens survive the lock: unlocked, the same session works again.
		st, body, _ = do(t, env, http.MethodPut, b, root, `{"locked":false}`)
		expect(t, "unlock", st, body, 200, "")
		if _, err := bob.Whoami(ctx); err != nil {
			t.Fatalf("whoami after unlock: %v", err)
		}
		st, body, _ = do(t, env, http.MethodPut, b, root, `{"locked":true}`)
		expect(t, "lock again", st, body, 200, "")
		if _, err := bob2.Logout(ctx); err != nil {
			t.Fatalf("logout while locked: %v", err)
		}
		st, body, _ = do(t, env, http.MethodPost, "/_matrix/client/v3/logout/all", bob.AccessToken, "{}")
		expect(t, "logout/all while locked", st, body, 200, "")
		st, body, _ = do(t, env, http.MethodGet, "/_matrix/client/v3/account/whoami", bob.AccessToken, "")
		expect(t, "after logout", st, body, 401, "M_UNKNOWN_TOKEN")
	})
}

func TestReportUser(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		report := func(user, body string) (int, map[string]any) {
			st, b, _ := do(t, env, http.MethodPost, "/_matrix/client/v3/users/"+user+"/report", alice.AccessToken, body)
			return st, b
		}
		st, body := report(string(bob.UserID), `{"reason":"spam"}`)
		expect(t, "report", st, body, 200, "")
		st, body = report(string(bob.UserID), `{}`)
		expect(t, "no reason", st, body, 400, "M_MISSING_PARAM")
		st, body = report(string(bob.UserID), `{"reason":7}`)
		expect(t, "reason not a string", st, body, 400, "M_BAD_JSON")
		st, body = report("bob", `{"reason":"x"}`)
		expect(t, "bad user id", st, body, 400, "M_INVALID_PARAM")
		st, body = report(string(bob.UserID), `{"reason":"`+strings.Repeat("x", 5000)+`"}`)
		expect(t, "long reason", st, body, 400, "M_INVALID_PARAM")
		// Unknown users get the same answer (existence is not disclosed).
		st, body = report("@nobody:cirrus.test", `{"reason":"ghost"}`)
		expect(t, "unknown user", st, body, 200, "")
		st, body, _ = do(t, env, http.MethodPost, "/_matrix/client/v3/users/"+string(bob.UserID)+"/report", "", `{"reason":"x"}`)
		expect(t, "no token", st, body, 401, "M_MISSING_TOKEN")

		page, err := env.Apps[0].Table.Query(context.Background(), table.Query{PK: "reports"})
		if err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		for _, it := range page.Items {
			var r map[string]any
			if err := json.Unmarshal(it.Data, &r); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		if len(got) != 1 || got[0]["reported_user_id"] != string(bob.UserID) || got[0]["reason"] != "spam" || got[0]["user_id"] != string(alice.UserID) {
			t.Fatalf("stored reports: %v", got)
		}
	})
}

func TestPolicyServerWellKnown(t *testing.T) {
	const key = "6yhHGKhCiXTSEN2ksjV7kX_N6rBQZ3Xb-M7LlC6NS-s"
	forEachEngineWith(t, map[string]string{"CIRRUS_POLICY_SERVER_KEYS": "ed25519=" + key}, func(t *testing.T, env *testenv.Env) {
		st, body, _ := do(t, env, http.MethodGet, "/.well-known/matrix/policy_server", "", "")
		expect(t, "policy server", st, body, 200, "")
		keys, _ := body["public_keys"].(map[string]any)
		if keys["ed25519"] != key {
			t.Fatalf("policy server keys: %v", body)
		}
	})
	env := testenv.Start(t, "embedded", nil)
	st, body, _ := do(t, env, http.MethodGet, "/.well-known/matrix/policy_server", "", "")
	expect(t, "no policy server", st, body, 404, "M_NOT_FOUND")
}
