package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// login logs user in on a new device and returns the client.
func login(t *testing.T, env *testenv.Env, user, password, deviceName string) *mautrix.Client {
	t.Helper()
	c := newClient(t, env)
	if _, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, Password: password,
		InitialDeviceDisplayName: deviceName, StoreCredentials: true}); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// passwordAuth is an m.login.password auth dict for a UIA session.
func passwordAuth(session, user, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]string{"type": "m.id.user", "user": user}}
}

// uiaSession makes the first (challenge) request of a UIA endpoint and
// returns the session, checking the offered flow is [m.login.password].
func uiaSession(t *testing.T, env *testenv.Env, method, path, token, body string) string {
	t.Helper()
	st, resp, _ := do(t, env, method, path, token, body)
	flows, _ := resp["flows"].([]any)
	session, _ := resp["session"].(string)
	if st != 401 || session == "" || len(flows) != 1 {
		t.Fatalf("%s %s challenge: %d %v", method, path, st, resp)
	}
	stages, _ := flows[0].(map[string]any)["stages"].([]any)
	if len(stages) != 1 || stages[0] != "m.login.password" {
		t.Fatalf("flows %v, want [[m.login.password]]", flows)
	}
	return session
}

func TestDevices(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		phone := login(t, env, "alice", "pw", "phone")

		list, err := alice.GetDevicesInfo(ctx)
		if err != nil || len(list.Devices) != 2 {
			t.Fatalf("devices: %+v %v", list, err)
		}
		for _, d := range list.Devices {
			if d.LastSeenTS == 0 || d.LastSeenIP == "" {
				t.Errorf("device %s has no last-seen time or address: %+v", d.DeviceID, d)
			}
		}
		info, err := alice.GetDeviceInfo(ctx, phone.DeviceID)
		if err != nil || info.DisplayName != "phone" || info.DeviceID != phone.DeviceID {
			t.Fatalf("device info: %+v %v", info, err)
		}

		// Rename, then read it back.
		if err := alice.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "old phone"}); err != nil {
			t.Fatal(err)
		}
		if info, err = phone.GetDeviceInfo(ctx, phone.DeviceID); err != nil || info.DisplayName != "old phone" {
			t.Fatalf("after rename: %+v %v", info, err)
		}
		// A body without display_name changes nothing.
		if st, body, _ := do(t, env, "PUT", "/_matrix/client/v3/devices/"+string(phone.DeviceID), alice.AccessToken, `{}`); st != 200 || len(body) != 0 {
			t.Fatalf("empty update: %d %v", st, body)
		}
		// Unknown devices are 404, and so are other users' devices.
		if _, err := alice.GetDeviceInfo(ctx, "NOSUCHDEVICE"); errcode(err) != "M_NOT_FOUND" || status(err) != 404 {
			t.Fatalf("unknown device: %v", err)
		}
		if err := alice.SetDeviceInfo(ctx, "NOSUCHDEVICE", &mautrix.ReqDeviceInfo{DisplayName: "x"}); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("rename unknown device: %v", err)
		}
		bob := register(t, env, "bob", "bobpw")
		if _, err := bob.GetDeviceInfo(ctx, phone.DeviceID); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("bob reads alice's device: %v", err)
		}
		if err := bob.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "mine"}); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("bob renames alice's device: %v", err)
		}

		// Deleting a device takes the caller's password.
		path := "/_matrix/client/v3/devices/" + string(phone.DeviceID)
		session := uiaSession(t, env, "DELETE", path, alice.AccessToken, `{}`)
		st, body := doJSON(t, env, "DELETE", path, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "alice", "wrong")})
		if st != 401 || body["errcode"] != "M_FORBIDDEN" || body["session"] != session {
			t.Fatalf("wrong password: %d %v", st, body)
		}
		// Bob's password for alice's identifier, or alice's identifier with bob's
		// token: neither works.
		st, body = doJSON(t, env, "DELETE", path, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "bob", "bobpw")})
		if st != 401 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("someone else's identifier: %d %v", st, body)
		}
		st, body = doJSON(t, env, "DELETE", path, bob.AccessToken, map[string]any{"auth": passwordAuth(session, "alice", "pw")})
		if st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("alice's session used by bob: %d %v", st, body)
		}
		// The session is bound to this device: it cannot delete another one.
		st, body = doJSON(t, env, "DELETE", "/_matrix/client/v3/devices/"+string(alice.DeviceID), alice.AccessToken, map[string]any{"auth": passwordAuth(session, "alice", "pw")})
		if st != 403 {
			t.Fatalf("session for another device: %d %v", st, body)
		}
		st, body = doJSON(t, env, "DELETE", path, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "@alice:cirrus.test", "pw")})
		if st != 200 || len(body) != 0 {
			t.Fatalf("delete: %d %v", st, body)
		}
		if _, err := phone.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("deleted device's token still works: %v", err)
		}
		if list, _ := alice.GetDevicesInfo(ctx); len(list.Devices) != 1 || list.Devices[0].DeviceID != alice.DeviceID {
			t.Fatalf("devices after delete: %+v", list)
		}
		// Deleting it again is a success (mautrix sends the deprecated "user").
		err = alice.DeleteDevice(ctx, phone.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword}, User: "alice", Password: "pw"}})
		if err != nil {
			t.Fatalf("delete again: %v", err)
		}

		// Bulk deletion.
		d1 := login(t, env, "alice", "pw", "d1")
		d2 := login(t, env, "alice", "pw", "d2")
		d3 := login(t, env, "alice", "pw", "d3")
		req := map[string]any{"devices": []id.DeviceID{d1.DeviceID, d2.DeviceID, "GONE"}}
		session = uiaSession(t, env, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, mustMarshal(t, req))
		// The session covers exactly that list.
		st, body = doJSON(t, env, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken,
			map[string]any{"devices": []id.DeviceID{d3.DeviceID}, "auth": passwordAuth(session, "alice", "pw")})
		if st != 403 {
			t.Fatalf("session for another list: %d %v", st, body)
		}
		req["auth"] = passwordAuth(session, "alice", "pw")
		if st, body = doJSON(t, env, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, req); st != 200 {
			t.Fatalf("delete_devices: %d %v", st, body)
		}
		for _, c := range []*mautrix.Client{d1, d2} {
			if _, err := c.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
				t.Fatalf("%s still works: %v", c.DeviceID, err)
			}
		}
		if _, err := d3.Whoami(ctx); err != nil {
			t.Fatalf("d3 was not in the list: %v", err)
		}
		// The spent session cannot be used again.
		req["devices"] = []id.DeviceID{d3.DeviceID}
		if st, body = doJSON(t, env, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, req); st != 404 {
			t.Fatalf("spent session: %d %v", st, body)
		}
		// Deleting one's own current device logs it out.
		err = d3.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{d3.DeviceID}, Auth: passwordAuth("", "alice", "pw")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d3.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("d3 after deleting itself: %v", err)
		}
	})
}

func TestDevicesBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		dev := "/_matrix/client/v3/devices/" + string(alice.DeviceID)
		long := `{"display_name":"` + repeat("x", 300) + `"}`
		runBadInput(t, env, []badInput{
			{"devices without token", "GET", "/_matrix/client/v3/devices", "", "", 401, "M_MISSING_TOKEN"},
			{"devices bad token", "GET", "/_matrix/client/v3/devices", "syt_nope", "", 401, "M_UNKNOWN_TOKEN"},
			{"device without token", "GET", dev, "", "", 401, "M_MISSING_TOKEN"},
			{"rename not json", "PUT", dev, tok, "nope", 400, "M_NOT_JSON"},
			{"rename empty body", "PUT", dev, tok, "", 400, "M_NOT_JSON"},
			{"rename wrong type", "PUT", dev, tok, `{"display_name":5}`, 400, "M_BAD_JSON"},
			{"rename too long", "PUT", dev, tok, long, 400, "M_INVALID_PARAM"},
			{"rename unknown", "PUT", "/_matrix/client/v3/devices/NOPE", tok, `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
			{"delete not json", "DELETE", dev, tok, "nope", 400, "M_NOT_JSON"},
			{"delete auth wrong type", "DELETE", dev, tok, `{"auth":"x"}`, 400, "M_BAD_JSON"},
			{"delete unknown session", "DELETE", dev, tok, `{"auth":{"type":"m.login.password","session":"nope"}}`, 404, "M_NOT_FOUND"},
			{"delete wrong stage", "DELETE", dev, tok, `{"auth":{"type":"m.login.dummy"}}`, 401, "M_UNKNOWN"},
			{"delete missing password", "DELETE", dev, tok, `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}}`, 401, "M_MISSING_PARAM"},
			{"delete missing identifier", "DELETE", dev, tok, `{"auth":{"type":"m.login.password","password":"pw"}}`, 401, "M_MISSING_PARAM"},
			{"delete_devices not json", "POST", "/_matrix/client/v3/delete_devices", tok, "[]", 400, "M_NOT_JSON"},
			{"delete_devices missing devices", "POST", "/_matrix/client/v3/delete_devices", tok, `{}`, 400, "M_MISSING_PARAM"},
			{"delete_devices wrong type", "POST", "/_matrix/client/v3/delete_devices", tok, `{"devices":"ABC"}`, 400, "M_BAD_JSON"},
			{"delete_devices without token", "POST", "/_matrix/client/v3/delete_devices", "", `{"devices":[]}`, 401, "M_MISSING_TOKEN"},
		})
	})
}

// badInput is one bad request and the error it must get.
type badInput struct {
	name, method, path, token, body string
	status                          int
	code                            string
}

func runBadInput(t *testing.T, env *testenv.Env, cases []badInput) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := do(t, env, tc.method, tc.path, tc.token, tc.body)
			if st != tc.status || body["errcode"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", st, body, tc.status, tc.code)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("no error message in %v", body)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// doJSON is do with a body marshalled from v.
func doJSON(t *testing.T, env *testenv.Env, method, path, token string, v any) (int, map[string]any) {
	t.Helper()
	st, body, _ := do(t, env, method, path, token, mustMarshal(t, v))
	return st, body
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }
