package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

const sharedSecret = "a shared secret of some length"

// registrationMAC is what Synapse's register_new_matrix_user computes.
func registrationMAC(secret, nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00"))
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte("\x00" + userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func nonce(t *testing.T, env *testenv.Env) string {
	t.Helper()
	st, body, _ := do(t, env, "GET", "/_synapse/admin/v1/register", "", "")
	n, _ := body["nonce"].(string)
	if st != 200 || n == "" {
		t.Fatalf("nonce: %d %v", st, body)
	}
	return n
}

// storedAccount reads an account's flags straight from the table.
func storedAccount(t *testing.T, env *testenv.Env, user string) map[string]any {
	t.Helper()
	it, err := env.Apps[0].Table.Get(context.Background(), table.Key{PK: "user#" + user, SK: "account"})
	if err != nil {
		t.Fatalf("account %s: %v", user, err)
	}
	var out map[string]any
	if err := json.Unmarshal(it.Data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSharedSecretRegistration(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			// Works with public registration closed.
			env := testenv.Start(t, engine, map[string]string{"CIRRUS_REGISTRATION": "closed", "CIRRUS_REGISTRATION_SHARED_SECRET": sharedSecret})
			const path = "/_synapse/admin/v1/register"

			n := nonce(t, env)
			req := map[string]any{"nonce": n, "username": "root", "displayname": "The Admin", "password": "pw", "admin": true,
				"mac": registrationMAC(sharedSecret, n, "root", "pw", true, "")}
			st, body := doJSON(t, env, "POST", path, "", req)
			tok, _ := body["access_token"].(string)
			if st != 200 || body["user_id"] != "@root:cirrus.test" || tok == "" || body["device_id"] == nil || body["home_server"] != "cirrus.test" {
				t.Fatalf("register: %d %v", st, body)
			}
			if st, who, _ := do(t, env, "GET", "/_matrix/client/v3/account/whoami", tok, ""); st != 200 || who["user_id"] != "@root:cirrus.test" {
				t.Fatalf("whoami: %d %v", st, who)
			}
			if acct := storedAccount(t, env, "@root:cirrus.test"); acct["admin"] != true {
				t.Fatalf("not marked admin: %v", acct)
			}
			if st, p, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@root:cirrus.test/displayname", "", ""); st != 200 || p["displayname"] != "The Admin" {
				t.Fatalf("display name: %d %v", st, p)
			}
			if err := passwordLogin(context.Background(), newClient(t, env), "root", "pw"); err != nil {
				t.Fatalf("login: %v", err)
			}
			// The nonce works once.
			if st, body = doJSON(t, env, "POST", path, "", req); st != 400 || body["errcode"] != "M_UNKNOWN" {
				t.Fatalf("nonce reuse: %d %v", st, body)
			}

			// Not admin, with a user type, no display name (defaults to the username).
			n = nonce(t, env)
			st, body = doJSON(t, env, "POST", path, "", map[string]any{"nonce": n, "username": "helper", "password": "pw2", "user_type": "bot",
				"mac": registrationMAC(sharedSecret, n, "helper", "pw2", false, "bot")})
			if st != 200 || body["user_id"] != "@helper:cirrus.test" {
				t.Fatalf("register bot: %d %v", st, body)
			}
			if acct := storedAccount(t, env, "@helper:cirrus.test"); acct["admin"] == true {
				t.Fatalf("marked admin: %v", acct)
			}
			if st, p, _ := do(t, env, "GET", "/_matrix/client/v3/profile/@helper:cirrus.test", "", ""); st != 200 || p["displayname"] != "helper" {
				t.Fatalf("default display name: %d %v", st, p)
			}

			// A wrong MAC (here: admin claimed but notadmin signed) is refused and spends the nonce.
			n = nonce(t, env)
			bad := map[string]any{"nonce": n, "username": "sneaky", "password": "pw", "admin": true,
				"mac": registrationMAC(sharedSecret, n, "sneaky", "pw", false, "")}
			if st, body = doJSON(t, env, "POST", path, "", bad); st != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("wrong mac: %d %v", st, body)
			}
			bad["admin"], bad["mac"] = false, registrationMAC(sharedSecret, n, "sneaky", "pw", false, "")
			if st, body = doJSON(t, env, "POST", path, "", bad); st != 400 {
				t.Fatalf("nonce after a wrong mac: %d %v", st, body)
			}
			// A taken name.
			n = nonce(t, env)
			st, body = doJSON(t, env, "POST", path, "", map[string]any{"nonce": n, "username": "root", "password": "x",
				"mac": registrationMAC(sharedSecret, n, "root", "x", false, "")})
			if st != 400 || body["errcode"] != "M_USER_IN_USE" {
				t.Fatalf("taken name: %d %v", st, body)
			}

			runBadInput(t, env, []badInput{
				{"not json", "POST", path, "", "x", 400, "M_NOT_JSON"},
				{"missing nonce", "POST", path, "", `{"username":"a","password":"b","mac":"00"}`, 400, "M_MISSING_PARAM"},
				{"missing username", "POST", path, "", `{"nonce":"n","password":"b","mac":"00"}`, 400, "M_MISSING_PARAM"},
				{"missing password", "POST", path, "", `{"nonce":"n","username":"a","mac":"00"}`, 400, "M_MISSING_PARAM"},
				{"missing mac", "POST", path, "", `{"nonce":"n","username":"a","password":"b"}`, 400, "M_MISSING_PARAM"},
				{"admin wrong type", "POST", path, "", `{"nonce":"n","username":"a","password":"b","mac":"00","admin":"yes"}`, 400, "M_BAD_JSON"},
				{"bad username", "POST", path, "", `{"nonce":"n","username":"Not Valid","password":"b","mac":"00"}`, 400, "M_INVALID_USERNAME"},
				{"unknown user type", "POST", path, "", `{"nonce":"n","username":"a","password":"b","mac":"00","user_type":"wizard"}`, 400, "M_INVALID_PARAM"},
				{"unknown nonce", "POST", path, "", `{"nonce":"nope","username":"a","password":"b","mac":"00"}`, 400, "M_UNKNOWN"},
			})
		})
	}
}

func TestSharedSecretRegistrationOff(t *testing.T) {
	env := testenv.Start(t, "embedded", nil)
	runBadInput(t, env, []badInput{
		{"nonce", "GET", "/_synapse/admin/v1/register", "", "", 400, "M_UNKNOWN"},
		{"register", "POST", "/_synapse/admin/v1/register", "", `{"nonce":"n","username":"a","password":"b","mac":"00"}`, 400, "M_UNKNOWN"},
	})
}
