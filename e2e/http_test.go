package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// sendRaw makes a raw request and returns the status, headers and body.
func sendRaw(t *testing.T, env *testenv.Env, method, path, token, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := env.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// do sends a raw request and decodes the JSON answer (which must be an
// object whenever the server says it is JSON).
func do(t *testing.T, env *testenv.Env, method, path, token, body string) (int, map[string]any, http.Header) {
	t.Helper()
	status, h, raw := sendRaw(t, env, method, path, token, body)
	var out map[string]any
	if len(raw) > 0 && h.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
		}
	}
	return status, out, h
}

func TestBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		big := `{"type":"m.login.password","password":"` + strings.Repeat("x", 2<<20) + `"}`
		cases := []struct {
			name, method, path, token, body string
			status                          int
			code                            string
		}{
			{"unknown path", "GET", "/_matrix/client/v3/nonsense", "", "", 404, "M_UNRECOGNIZED"},
			{"unknown prefix", "POST", "/foo", "", "{}", 404, "M_UNRECOGNIZED"},
			{"wrong method", "DELETE", "/_matrix/client/v3/login", "", "", 405, "M_UNRECOGNIZED"},
			{"not json", "POST", "/_matrix/client/v3/login", "", "not json", 400, "M_NOT_JSON"},
			{"empty body", "POST", "/_matrix/client/v3/login", "", "", 400, "M_NOT_JSON"},
			{"json array", "POST", "/_matrix/client/v3/login", "", "[1,2]", 400, "M_NOT_JSON"},
			{"wrong type", "POST", "/_matrix/client/v3/login", "", `{"type":5}`, 400, "M_BAD_JSON"},
			{"missing login type", "POST", "/_matrix/client/v3/login", "", `{"password":"x"}`, 400, "M_MISSING_PARAM"},
			{"unknown login type", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.magic"}`, 400, "M_UNKNOWN"},
			{"missing user", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","password":"x"}`, 400, "M_MISSING_PARAM"},
			{"too large", "POST", "/_matrix/client/v3/login", "", big, 413, "M_TOO_LARGE"},
			{"missing token", "GET", "/_matrix/client/v3/account/whoami", "", "", 401, "M_MISSING_TOKEN"},
			{"unknown token", "GET", "/_matrix/client/v3/account/whoami", "syt_nope", "", 401, "M_UNKNOWN_TOKEN"},
			{"bad username", "POST", "/_matrix/client/v3/register", "", `{"username":"Bad Name!","password":"x"}`, 400, "M_INVALID_USERNAME"},
			{"register without password", "POST", "/_matrix/client/v3/register", "", `{"username":"dave","auth":{"type":"m.login.dummy"}}`, 400, "M_MISSING_PARAM"},
			{"register bad kind", "POST", "/_matrix/client/v3/register?kind=robot", "", `{}`, 400, "M_INVALID_PARAM"},
			{"guest registration off", "POST", "/_matrix/client/v3/register?kind=guest", "", `{}`, 403, "M_FORBIDDEN"},
			{"available without username", "GET", "/_matrix/client/v3/register/available", "", "", 400, "M_MISSING_PARAM"},
			{"available bad name", "GET", "/_matrix/client/v3/register/available?username=%20x", "", "", 400, "M_INVALID_USERNAME"},
			{"refresh unknown", "POST", "/_matrix/client/v3/refresh", "", `{"refresh_token":"syr_x"}`, 401, "M_UNKNOWN_TOKEN"},
			{"token validity when not in token mode", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", "", 403, "M_FORBIDDEN"},
			{"uia unknown session", "POST", "/_matrix/client/v3/register", "", `{"username":"erin","password":"x","auth":{"type":"m.login.dummy","session":"nope"}}`, 404, "M_NOT_FOUND"},
		}
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
		t.Run("cors preflight", func(t *testing.T) {
			st, _, h := do(t, env, "OPTIONS", "/_matrix/client/v3/login", "", "")
			if st != 204 && st != 200 || h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Fatalf("preflight: %d %v", st, h)
			}
			_, _, h = do(t, env, "GET", "/_matrix/client/v3/account/whoami", alice.AccessToken, "")
			if h.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("no CORS header on a normal answer: %v", h)
			}
		})
		t.Run("token in query", func(t *testing.T) {
			st, body, _ := do(t, env, "GET", "/_matrix/client/v3/account/whoami?access_token="+alice.AccessToken, "", "")
			if st != 200 || body["user_id"] != string(alice.UserID) {
				t.Fatalf("whoami with query token: %d %v", st, body)
			}
		})
	})
}

func TestRegistrationUIA(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		st, body, _ := do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"frank","password":"pw"}`)
		if st != 401 {
			t.Fatalf("first step: %d %v", st, body)
		}
		session, _ := body["session"].(string)
		flows, _ := body["flows"].([]any)
		if session == "" || len(flows) != 1 {
			t.Fatalf("challenge %v", body)
		}
		// A stage that is not offered is refused with the challenge again.
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"frank","password":"pw","auth":{"type":"m.login.recaptcha","session":"`+session+`"}}`)
		if st != 401 || body["session"] != session || body["errcode"] == nil {
			t.Fatalf("unoffered stage: %d %v", st, body)
		}
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"frank","password":"pw","auth":{"type":"m.login.dummy","session":"`+session+`"}}`)
		if st != 200 || body["user_id"] != "@frank:cirrus.test" || body["access_token"] == nil {
			t.Fatalf("completion: %d %v", st, body)
		}
		// The session is used up.
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"frank2","password":"pw","auth":{"type":"m.login.dummy","session":"`+session+`"}}`)
		if st != 404 {
			t.Fatalf("session reuse: %d %v", st, body)
		}
		// inhibit_login registers without a token.
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"gina","password":"pw","inhibit_login":true,"auth":{"type":"m.login.dummy"}}`)
		if st != 200 || body["user_id"] != "@gina:cirrus.test" || body["access_token"] != nil {
			t.Fatalf("inhibit_login: %d %v", st, body)
		}
	})
}

func TestRegistrationModes(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		env := testenv.Start(t, "embedded", map[string]string{"CIRRUS_REGISTRATION": "closed"})
		st, body, _ := do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"x","password":"pw"}`)
		if st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("closed: %d %v", st, body)
		}
	})
	t.Run("token", func(t *testing.T) {
		env := testenv.Start(t, "embedded", map[string]string{"CIRRUS_REGISTRATION": "token", "CIRRUS_REGISTRATION_TOKENS": "letmein, other"})
		st, body, _ := do(t, env, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein", "", "")
		if st != 200 || body["valid"] != true {
			t.Fatalf("validity: %d %v", st, body)
		}
		st, body, _ = do(t, env, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=nope", "", "")
		if st != 200 || body["valid"] != false {
			t.Fatalf("validity of a bad token: %d %v", st, body)
		}
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"hal","password":"pw","auth":{"type":"m.login.dummy"}}`)
		if st != 401 || body["errcode"] == nil {
			t.Fatalf("dummy stage in token mode: %d %v", st, body)
		}
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"hal","password":"pw","auth":{"type":"m.login.registration_token","token":"wrong"}}`)
		if st != 401 || body["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("wrong token: %d %v", st, body)
		}
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"hal","password":"pw","auth":{"type":"m.login.registration_token","token":"other"}}`)
		if st != 200 || body["user_id"] != "@hal:cirrus.test" {
			t.Fatalf("right token: %d %v", st, body)
		}
	})
	t.Run("guest", func(t *testing.T) {
		env := testenv.Start(t, "embedded", map[string]string{"CIRRUS_GUEST_ACCESS": "true"})
		st, body, _ := do(t, env, "POST", "/_matrix/client/v3/register?kind=guest", "", `{}`)
		tok, _ := body["access_token"].(string)
		if st != 200 || tok == "" {
			t.Fatalf("guest: %d %v", st, body)
		}
		st, who, _ := do(t, env, "GET", "/_matrix/client/v3/account/whoami", tok, "")
		if st != 200 || who["is_guest"] != true {
			t.Fatalf("guest whoami: %d %v", st, who)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		env := testenv.Start(t, "embedded", map[string]string{"CIRRUS_RATE_LIMITS": "true"})
		var last int
		var body map[string]any
		for range 30 {
			last, body, _ = do(t, env, "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"x"},"password":"y"}`)
			if last == 429 {
				break
			}
		}
		if last != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" || body["retry_after_ms"] == nil {
			t.Fatalf("no rate limit after 30 logins: %d %v", last, body)
		}
	})
}

func TestRefreshTokens(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		st, body, _ := do(t, env, "POST", "/_matrix/client/v3/register", "", `{"username":"ivy","password":"pw","refresh_token":true,"auth":{"type":"m.login.dummy"}}`)
		rt, _ := body["refresh_token"].(string)
		if st != 200 || rt == "" || body["expires_in_ms"] == nil {
			t.Fatalf("register with refresh: %d %v", st, body)
		}
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/refresh", "", `{"refresh_token":"`+rt+`"}`)
		newTok, _ := body["access_token"].(string)
		if st != 200 || newTok == "" || body["refresh_token"] == rt {
			t.Fatalf("refresh: %d %v", st, body)
		}
		if st, _, _ := do(t, env, "GET", "/_matrix/client/v3/account/whoami", newTok, ""); st != 200 {
			t.Fatalf("new token does not work: %d", st)
		}
		// The old refresh token is spent.
		st, body, _ = do(t, env, "POST", "/_matrix/client/v3/refresh", "", `{"refresh_token":"`+rt+`"}`)
		if st != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
			t.Fatalf("reuse of refresh token: %d %v", st, body)
		}
	})
}
