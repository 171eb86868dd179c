package e2e

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func passwordLogin(ctx context.Context, c *mautrix.Client, user, password string) error {
	_, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, Password: password, StoreCredentials: true})
	return err
}

func TestChangePassword(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "old pw")
		other := login(t, env, "alice", "old pw", "other")
		const path = "/_matrix/client/v3/account/password"

		session := uiaSession(t, env, "POST", path, alice.AccessToken, `{"new_password":"new pw"}`)
		st, body := doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"new_password": "new pw", "auth": passwordAuth(session, "alice", "new pw")})
		if st != 401 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("wrong current password: %d %v", st, body)
		}
		st, body = doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"new_password": "new pw", "auth": passwordAuth(session, "alice", "old pw")})
		if st != 200 || len(body) != 0 {
			t.Fatalf("change: %d %v", st, body)
		}
		// logout_devices defaults to true: the other device is gone, this one stays.
		if _, err := other.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("other device after the change: %v", err)
		}
		if _, err := alice.Whoami(ctx); err != nil {
			t.Fatalf("the requesting device was logged out: %v", err)
		}
		if err := passwordLogin(ctx, newClient(t, env), "alice", "old pw"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("old password still works: %v", err)
		}
		if err := passwordLogin(ctx, newClient(t, env), "alice", "new pw"); err != nil {
			t.Fatalf("new password: %v", err)
		}

		// logout_devices: false keeps the other sessions.
		keep := login(t, env, "alice", "new pw", "keep")
		st, body = doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"new_password": "third pw", "logout_devices": false,
			"auth": passwordAuth("", "alice", "new pw")})
		if st != 200 {
			t.Fatalf("change keeping devices: %d %v", st, body)
		}
		if _, err := keep.Whoami(ctx); err != nil {
			t.Fatalf("logout_devices=false logged out another device: %v", err)
		}
		caps, err := alice.Capabilities(ctx)
		if err != nil || caps.ChangePassword == nil || !caps.ChangePassword.Enabled {
			t.Fatalf("m.change_password: %+v %v", caps, err)
		}
	})
}

func TestDeactivate(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		other := login(t, env, "alice", "pw", "other")
		if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
			t.Fatal(err)
		}
		const path = "/_matrix/client/v3/account/deactivate"
		session := uiaSession(t, env, "POST", path, alice.AccessToken, `{}`)
		st, body := doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"erase": true, "auth": passwordAuth(session, "alice", "nope")})
		if st != 401 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("wrong password: %d %v", st, body)
		}
		st, body = doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"erase": true, "auth": passwordAuth(session, "alice", "pw")})
		if st != 200 || body["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate: %d %v", st, body)
		}
		for _, c := range []*mautrix.Client{alice, other} {
			if _, err := c.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
				t.Fatalf("token survives deactivation: %v", err)
			}
		}
		err := passwordLogin(ctx, newClient(t, env), "alice", "pw")
		if errcode(err) != "M_USER_DEACTIVATED" || status(err) != 403 {
			t.Fatalf("login after deactivation: %v", err)
		}
		if err := passwordLogin(ctx, newClient(t, env), "alice", "wrong"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("wrong password after deactivation: %v", err)
		}
		// The name stays taken, and the profile is gone.
		if _, err := newClient(t, env).RegisterAvailable(ctx, "alice"); errcode(err) != "M_USER_IN_USE" {
			t.Fatalf("name of a deactivated account: %v", err)
		}
		if st, body, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@alice:cirrus.test", "", ""); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("profile after deactivation: %d %v", st, body)
		}
	})
}

func TestLoginToken(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		flows, err := newClient(t, env).GetLoginFlows(ctx)
		if err != nil || !flows.HasFlow(mautrix.AuthTypeToken) {
			t.Fatalf("login flows %+v %v", flows, err)
		}
		st, body, _ := do(t, env, "GET", "/_matrix/client/v3/login", "", "")
		found := false
		for _, f := range body["flows"].([]any) {
			m := f.(map[string]any)
			if m["type"] == "m.login.token" && m["get_login_token"] == true {
				found = true
			}
		}
		if st != 200 || !found {
			t.Fatalf("no m.login.token flow with get_login_token: %v", body)
		}

		alice := register(t, env, "alice", "pw")
		caps, err := alice.Capabilities(ctx)
		if err != nil || caps.GetLoginToken == nil || !caps.GetLoginToken.Enabled {
			t.Fatalf("m.get_login_token: %+v %v", caps, err)
		}
		const path = "/_matrix/client/v1/login/get_token"
		session := uiaSession(t, env, "POST", path, alice.AccessToken, `{}`)
		st, body = doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "alice", "pw")})
		tok, _ := body["login_token"].(string)
		if st != 200 || tok == "" || body["expires_in_ms"] != float64(120000) {
			t.Fatalf("get_token: %d %v", st, body)
		}
		// UIA is asked again every time.
		if st, _ := doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{}); st != 401 {
			t.Fatalf("second get_token without auth: %d", st)
		}

		c := newClient(t, env)
		resp, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: tok, InitialDeviceDisplayName: "scanned", StoreCredentials: true})
		if err != nil || resp.UserID != alice.UserID || resp.DeviceID == alice.DeviceID {
			t.Fatalf("token login: %+v %v", resp, err)
		}
		if who, err := c.Whoami(ctx); err != nil || who.UserID != alice.UserID {
			t.Fatalf("whoami after token login: %+v %v", who, err)
		}
		// Single use.
		_, err = newClient(t, env).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: tok})
		if errcode(err) != "M_FORBIDDEN" || status(err) != 403 {
			t.Fatalf("token reuse: %v", err)
		}
		runBadInput(t, env, []badInput{
			{"token login without token", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.token"}`, 400, "M_MISSING_PARAM"},
			{"token login wrong type", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.token","token":7}`, 400, "M_BAD_JSON"},
			{"token login unknown token", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.token","token":"syl_nope"}`, 403, "M_FORBIDDEN"},
			{"token login bad device", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.token","token":"x","device_id":"a b"}`, 400, "M_INVALID_PARAM"},
			{"get_token without token", "POST", path, "", `{}`, 401, "M_MISSING_TOKEN"},
			{"get_token not json", "POST", path, alice.AccessToken, `nope`, 400, "M_NOT_JSON"},
			{"get_token auth wrong type", "POST", path, alice.AccessToken, `{"auth":[]}`, 400, "M_BAD_JSON"},
			{"get_token wrong password", "POST", path, alice.AccessToken, mustMarshal(t, map[string]any{"auth": passwordAuth("", "alice", "bad")}), 401, "M_FORBIDDEN"},
		})
	})
}

func TestAccountBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		const pw, deact = "/_matrix/client/v3/account/password", "/_matrix/client/v3/account/deactivate"
		runBadInput(t, env, []badInput{
			{"password without token", "POST", pw, "", `{"new_password":"x"}`, 401, "M_MISSING_TOKEN"},
			{"password not json", "POST", pw, tok, "x", 400, "M_NOT_JSON"},
			{"password empty body", "POST", pw, tok, "", 400, "M_NOT_JSON"},
			{"password missing new_password", "POST", pw, tok, `{}`, 400, "M_MISSING_PARAM"},
			{"password wrong type", "POST", pw, tok, `{"new_password":1}`, 400, "M_BAD_JSON"},
			{"password logout_devices wrong type", "POST", pw, tok, `{"new_password":"x","logout_devices":"yes"}`, 400, "M_BAD_JSON"},
			{"password too long", "POST", pw, tok, `{"new_password":"` + repeat("x", 600) + `"}`, 400, "M_INVALID_PARAM"},
			{"password unknown session", "POST", pw, tok, `{"new_password":"x","auth":{"type":"m.login.password","session":"nope"}}`, 404, "M_NOT_FOUND"},
			{"deactivate without token", "POST", deact, "", `{}`, 401, "M_MISSING_TOKEN"},
			{"deactivate not json", "POST", deact, tok, "x", 400, "M_NOT_JSON"},
			{"deactivate erase wrong type", "POST", deact, tok, `{"erase":"yes"}`, 400, "M_BAD_JSON"},
			{"deactivate wrong stage", "POST", deact, tok, `{"auth":{"type":"m.login.dummy"}}`, 401, "M_UNKNOWN"},
			{"deactivate other user's identifier", "POST", deact, tok, `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"pw"}}`, 401, "M_FORBIDDEN"},
			{"deactivate bad identifier type", "POST", deact, tok, `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.thirdparty"},"password":"pw"}}`, 401, "M_UNKNOWN"},
		})
	})
}

func TestThreePIDs(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		st, body, _ := do(t, env, "GET", "/_matrix/client/v3/account/3pid", tok, "")
		if list, ok := body["threepids"].([]any); st != 200 || !ok || len(list) != 0 {
			t.Fatalf("3pid list: %d %v", st, body)
		}
		for _, path := range []string{"/_matrix/client/v3/account/3pid/delete", "/_matrix/client/v3/account/3pid/unbind"} {
			st, body, _ := do(t, env, "POST", path, tok, `{"medium":"email","address":"a@example.org","id_server":"id.example.org"}`)
			if st != 200 || body["id_server_unbind_result"] != "no-support" {
				t.Fatalf("%s: %d %v", path, st, body)
			}
		}
		caps, err := alice.Capabilities(context.Background())
		if err != nil || caps.ThreePIDChanges == nil || caps.ThreePIDChanges.Enabled {
			t.Fatalf("m.3pid_changes must be off: %+v %v", caps, err)
		}
		email := `{"client_secret":"s3cret","email":"a@example.org","send_attempt":1}`
		msisdn := `{"client_secret":"s3cret","country":"GB","phone_number":"07700900001","send_attempt":1}`
		creds := `{"client_secret":"s3cret","id_server":"id.example.org","id_access_token":"abc","sid":"123"}`
		const v3 = "/_matrix/client/v3"
		runBadInput(t, env, []badInput{
			// What a server without 3PID support answers, per endpoint.
			{"register email", "POST", v3 + "/register/email/requestToken", "", email, 403, "M_THREEPID_DENIED"},
			{"register msisdn", "POST", v3 + "/register/msisdn/requestToken", "", msisdn, 403, "M_THREEPID_DENIED"},
			{"account email", "POST", v3 + "/account/3pid/email/requestToken", "", email, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"account msisdn", "POST", v3 + "/account/3pid/msisdn/requestToken", "", msisdn, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"password email", "POST", v3 + "/account/password/email/requestToken", "", email, 400, "M_THREEPID_NOT_FOUND"},
			{"password msisdn", "POST", v3 + "/account/password/msisdn/requestToken", "", msisdn, 400, "M_THREEPID_NOT_FOUND"},
			{"add", "POST", v3 + "/account/3pid/add", tok, `{"client_secret":"s3cret","sid":"123"}`, 403, "M_THREEPID_AUTH_FAILED"},
			{"legacy add", "POST", v3 + "/account/3pid", tok, `{"three_pid_creds":` + creds + `}`, 403, "M_THREEPID_AUTH_FAILED"},
			{"bind", "POST", v3 + "/account/3pid/bind", tok, creds, 400, "M_SERVER_NOT_TRUSTED"},

			// Bad input.
			{"email not json", "POST", v3 + "/register/email/requestToken", "", "x", 400, "M_NOT_JSON"},
			{"email missing secret", "POST", v3 + "/register/email/requestToken", "", `{"email":"a@example.org","send_attempt":1}`, 400, "M_MISSING_PARAM"},
			{"email bad secret", "POST", v3 + "/account/3pid/email/requestToken", "", `{"client_secret":"no spaces!","email":"a@example.org","send_attempt":1}`, 400, "M_INVALID_PARAM"},
			{"email missing address", "POST", v3 + "/account/password/email/requestToken", "", `{"client_secret":"s","send_attempt":1}`, 400, "M_MISSING_PARAM"},
			{"email missing send_attempt", "POST", v3 + "/register/email/requestToken", "", `{"client_secret":"s","email":"a@example.org"}`, 400, "M_MISSING_PARAM"},
			{"email send_attempt wrong type", "POST", v3 + "/register/email/requestToken", "", `{"client_secret":"s","email":"a@example.org","send_attempt":"1"}`, 400, "M_BAD_JSON"},
			{"email id_server without token", "POST", v3 + "/register/email/requestToken", "", `{"client_secret":"s","email":"a@example.org","send_attempt":1,"id_server":"id.example.org"}`, 400, "M_MISSING_PARAM"},
			{"msisdn missing country", "POST", v3 + "/register/msisdn/requestToken", "", `{"client_secret":"s","phone_number":"1","send_attempt":1}`, 400, "M_MISSING_PARAM"},
			{"msisdn missing number", "POST", v3 + "/account/3pid/msisdn/requestToken", "", `{"client_secret":"s","country":"GB","send_attempt":1}`, 400, "M_MISSING_PARAM"},
			{"list without token", "GET", v3 + "/account/3pid", "", "", 401, "M_MISSING_TOKEN"},
			{"add without token", "POST", v3 + "/account/3pid/add", "", `{}`, 401, "M_MISSING_TOKEN"},
			{"add not json", "POST", v3 + "/account/3pid/add", tok, "x", 400, "M_NOT_JSON"},
			{"add missing sid", "POST", v3 + "/account/3pid/add", tok, `{"client_secret":"s"}`, 400, "M_MISSING_PARAM"},
			{"add missing secret", "POST", v3 + "/account/3pid/add", tok, `{"sid":"1"}`, 400, "M_MISSING_PARAM"},
			{"add bad sid", "POST", v3 + "/account/3pid/add", tok, `{"client_secret":"s","sid":"a/b"}`, 400, "M_INVALID_PARAM"},
			{"legacy add missing creds", "POST", v3 + "/account/3pid", tok, `{}`, 400, "M_MISSING_PARAM"},
			{"legacy add creds wrong type", "POST", v3 + "/account/3pid", tok, `{"three_pid_creds":1}`, 400, "M_BAD_JSON"},
			{"bind missing id_server", "POST", v3 + "/account/3pid/bind", tok, `{"client_secret":"s","sid":"1","id_access_token":"t"}`, 400, "M_MISSING_PARAM"},
			{"bind missing token", "POST", v3 + "/account/3pid/bind", tok, `{"client_secret":"s","sid":"1","id_server":"x"}`, 400, "M_MISSING_PARAM"},
			{"delete missing medium", "POST", v3 + "/account/3pid/delete", tok, `{"address":"a@example.org"}`, 400, "M_MISSING_PARAM"},
			{"delete bad medium", "POST", v3 + "/account/3pid/delete", tok, `{"medium":"pigeon","address":"a"}`, 400, "M_INVALID_PARAM"},
			{"delete missing address", "POST", v3 + "/account/3pid/delete", tok, `{"medium":"email"}`, 400, "M_MISSING_PARAM"},
			{"unbind not json", "POST", v3 + "/account/3pid/unbind", tok, "[]", 400, "M_NOT_JSON"},
			{"unbind without token", "POST", v3 + "/account/3pid/unbind", "", `{"medium":"email","address":"a"}`, 401, "M_MISSING_TOKEN"},
		})
	})
}
