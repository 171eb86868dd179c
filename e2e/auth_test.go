// Package e2e drives Cirrus over HTTP as real clients do (mautrix-go), on
// every engine of internal/testenv.
package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func newClient(t *testing.T, env *testenv.Env) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(env.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = env.HTTP
	return c
}

// register creates a user through the dummy UIA flow and returns a client
// logged in as it.
func register(t *testing.T, env *testenv.Env, name, password string) *mautrix.Client {
	t.Helper()
	c := newClient(t, env)
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: password, InitialDeviceDisplayName: "e2e"})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return c
}

func forEachEngine(t *testing.T, f func(t *testing.T, env *testenv.Env)) {
	forEachEngineWith(t, nil, f)
}

// forEachEngineWith runs f on every engine with extra settings.
func forEachEngineWith(t *testing.T, vars map[string]string, f func(t *testing.T, env *testenv.Env)) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) { f(t, testenv.Start(t, engine, vars)) })
	}
}

func errcode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode
	}
	return ""
}

func status(err error) int {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode
	}
	return 0
}

func TestRegisterLoginWhoami(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "correct horse")
		if alice.UserID != "@alice:cirrus.test" {
			t.Fatalf("user id %s", alice.UserID)
		}
		who, err := alice.Whoami(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if who.UserID != alice.UserID || who.DeviceID != alice.DeviceID {
			t.Fatalf("whoami %+v, want %s/%s", who, alice.UserID, alice.DeviceID)
		}

		// The same name again is taken.
		_, err = newClient(t, env).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Alice", Password: "x"})
		if errcode(err) != "M_USER_IN_USE" {
			t.Fatalf("second registration: %v", err)
		}
		avail, err := newClient(t, env).RegisterAvailable(ctx, "bob")
		if err != nil || !avail.Available {
			t.Fatalf("bob available: %v %v", avail, err)
		}
		if _, err := newClient(t, env).RegisterAvailable(ctx, "alice"); errcode(err) != "M_USER_IN_USE" {
			t.Fatalf("alice available: %v", err)
		}

		// Log in on a second device, by localpart and by full id.
		for _, user := range []string{"alice", "@alice:cirrus.test"} {
			c := newClient(t, env)
			resp, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, Password: "correct horse", StoreCredentials: true})
			if err != nil {
				t.Fatalf("login as %s: %v", user, err)
			}
			if resp.UserID != alice.UserID || resp.DeviceID == alice.DeviceID {
				t.Fatalf("login response %+v", resp)
			}
			if who, err := c.Whoami(ctx); err != nil || who.DeviceID != resp.DeviceID {
				t.Fatalf("whoami after login: %v %v", who, err)
			}
		}
		bad := newClient(t, env)
		_, err = bad.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong"})
		if errcode(err) != "M_FORBIDDEN" || status(err) != http.StatusForbidden {
			t.Fatalf("wrong password: %v", err)
		}
		_, err = bad.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "nobody"}, Password: "wrong"})
		if errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("unknown user: %v", err)
		}

		// Logout kills exactly that token; logout/all kills the rest.
		if _, err := alice.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" || status(err) != 401 {
			t.Fatalf("whoami after logout: %v", err)
		}
		c := newClient(t, env)
		if _, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "correct horse", StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		other := newClient(t, env)
		if _, err := other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "correct horse", StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Whoami(ctx); errcode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("whoami after logout/all: %v", err)
		}
	})
}

func TestDiscovery(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		c := newClient(t, env)
		v, err := c.Versions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !v.ContainsGreaterOrEqual(mautrix.SpecV111) {
			t.Fatalf("versions %+v", v.Versions)
		}
		flows, err := c.GetLoginFlows(ctx)
		if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
			t.Fatalf("login flows %+v %v", flows, err)
		}
		if _, err := c.Capabilities(ctx); errcode(err) != "M_MISSING_TOKEN" {
			t.Fatalf("capabilities without token: %v", err)
		}
		alice := register(t, env, "carol", "pw")
		caps, err := alice.Capabilities(ctx)
		if err != nil || caps.RoomVersions == nil || caps.RoomVersions.Default != "12" {
			t.Fatalf("capabilities %+v %v", caps, err)
		}
		var wk struct {
			Homeserver struct {
				BaseURL string `json:"base_url"`
			} `json:"m.homeserver"`
		}
		if _, err := c.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: env.URL + "/.well-known/matrix/client", ResponseJSON: &wk}); err != nil || wk.Homeserver.BaseURL == "" {
			t.Fatalf("well-known client: %+v %v", wk, err)
		}
		_, err = c.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: env.URL + "/.well-known/matrix/server"})
		if errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("well-known server without delegation: %v", err)
		}
	})
}
