package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	sqssdk "github.com/aws/aws-sdk-go-v2/service/sqs"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/infra/awstest"
	sqsqueue "github.com/cirrus-matrix/cirrus/infra/sqs"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

const (
	asToken = "as-token-bridge-0123456789"
	hsToken = "hs-token-bridge-0123456789"
	asBot   = id.UserID("@bridgebot:cirrus.test")
)

// fakeAS is an application service: it records the transactions and pings
// the homeserver pushes, fails the next N transactions when asked, and
// creates rooms for queried aliases through the client API.
type fakeAS struct {
	t   *testing.T
	env *testenv.Env

	mu        sync.Mutex
	failNext  int
	failed    []asTxn // the transactions answered 500
	delivered []asTxn // the ones answered 200
	pings     []string
	pingCode  int
	badAuth   int
}

type asTxn struct {
	ID        string
	Events    []map[string]any
	Ephemeral []map[string]any
}

func (f *fakeAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+hsToken {
		f.mu.Lock()
		f.badAuth++
		f.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN"}`))
		return
	}
	p := r.URL.EscapedPath()
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/_matrix/app/v1/transactions/"):
		txnID, _ := url.PathUnescape(strings.TrimPrefix(p, "/_matrix/app/v1/transactions/"))
		var body struct {
			Events    []map[string]any `json:"events"`
			Ephemeral []map[string]any `json:"ephemeral"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		fail := f.failNext > 0
		if fail {
			f.failNext--
			f.failed = append(f.failed, asTxn{txnID, body.Events, body.Ephemeral})
		} else {
			f.delivered = append(f.delivered, asTxn{txnID, body.Events, body.Ephemeral})
		}
		f.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	case r.Method == http.MethodPost && p == "/_matrix/app/v1/ping":
		var body struct {
			TxnID string `json:"transaction_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.pings = append(f.pings, body.TxnID)
		code := f.pingCode
		f.mu.Unlock()
		if code != 0 {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"not today"}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/_matrix/app/v1/rooms/"):
		alias, _ := url.PathUnescape(strings.TrimPrefix(p, "/_matrix/app/v1/rooms/"))
		if !strings.HasPrefix(alias, "#_bridge_lobby") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		local := strings.TrimSuffix(strings.TrimPrefix(alias, "#"), ":cirrus.test")
		st, out := doJSON(f.t, f.env, http.MethodPost, "/_matrix/client/v3/createRoom", asToken,
			map[string]any{"room_alias_name": local, "name": "Bridged lobby", "preset": "public_chat"})
		if st != http.StatusOK {
			f.t.Errorf("appservice creating %s: %d %v", alias, st, out)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/_matrix/app/v1/users/"):
		user, _ := url.PathUnescape(strings.TrimPrefix(p, "/_matrix/app/v1/users/"))
		if !strings.HasPrefix(user, "@_bridge_puppet") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		local := strings.TrimSuffix(strings.TrimPrefix(user, "@"), ":cirrus.test")
		if st, out := asRegister(f.t, f.env, asToken, local); st != http.StatusOK {
			f.t.Errorf("appservice registering %s: %d %v", user, st, out)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	case r.Method == http.MethodGet && p == "/_matrix/app/v1/thirdparty/protocol/bridgenet":
		_, _ = w.Write([]byte(`{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://cirrus.test/icon",` +
			`"field_types":{},"instances":[{"desc":"Bridge network","network_id":"bridgenet","fields":{}}]}`))
	case r.Method == http.MethodGet && p == "/_matrix/app/v1/thirdparty/location/bridgenet":
		ch := r.URL.Query().Get("channel")
		_, _ = fmt.Fprintf(w, `[{"alias":"#_bridge_%s:cirrus.test","protocol":"bridgenet","fields":{"channel":%q}}]`, ch, ch)
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
	}
}

func (f *fakeAS) snapshot() (failed, delivered []asTxn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]asTxn(nil), f.failed...), append([]asTxn(nil), f.delivered...)
}

// registrationYAML is three services: a live bridge, one whose URL is
// closed (connection failures) and one without URL.
func registrationYAML(liveURL string) string {
	return fmt.Sprintf(`id: bridge
url: %q
as_token: %s
hs_token: %s
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
protocols: [bridgenet]
namespaces:
  users:
    - exclusive: true
      regex: "@_bridge_.*:cirrus\\.test"
  aliases:
    - exclusive: true
      regex: "#_bridge_.*:cirrus\\.test"
  rooms: []
---
id: dead
url: "http://127.0.0.1:1"
as_token: as-token-dead-0123456789
hs_token: hs-token-dead-0123456789
sender_localpart: deadbot
namespaces:
  users:
    - exclusive: false
      regex: "@_dead_.*"
---
id: nourl
url: null
as_token: as-token-nourl-0123456789
hs_token: hs-token-nourl-0123456789
sender_localpart: nourlbot
namespaces: {}
`, liveURL, asToken, hsToken)
}

// startWithAppService starts a server with the fake service registered and
// runs the delivery worker: in-process for the all-in-one engines, as the
// AppserviceSender Lambda behind an SQS event source for lambda.
func startWithAppService(t *testing.T, engine string) (*testenv.Env, *fakeAS) {
	f := &fakeAS{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	vars := map[string]string{
		"CIRRUS_APPSERVICE_YAML":      registrationYAML(srv.URL),
		"CIRRUS_APPSERVICE_RETRY_MIN": "200ms",
		"CIRRUS_APPSERVICE_RETRY_MAX": "1s",
		// Rate limits on: the bridge (rate_limited: false) must not hit them.
		"CIRRUS_RATE_LIMITS": "true",
	}
	if engine != "embedded" {
		// A queue of this test's own: the stand-in's default queue is
		// shared by every test server.
		cfg := awstest.Require(t, "SQS")
		spec := resources.AppServiceQueue
		spec.Name = fmt.Sprintf("cirrus-as-%d.fifo", time.Now().UnixNano())
		u, _, err := sqsqueue.EnsureQueue(context.Background(), sqssdk.NewFromConfig(cfg), spec)
		if err != nil {
			t.Fatal(err)
		}
		vars["CIRRUS_APPSERVICE_QUEUE_URL"] = u
	}
	env := testenv.Start(t, engine, vars)
	f.env = env
	worker := env.Apps[len(env.Apps)-1]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if engine == "lambda" {
			testenv.SQSEventSource(ctx, worker.Queues[resources.AppServiceQueue.Name], worker.HandleAppServiceSQS)
		} else {
			worker.RunAppServiceSender(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return env, f
}

func asRegister(t *testing.T, env *testenv.Env, token, username string) (int, map[string]any) {
	t.Helper()
	return doJSON(t, env, http.MethodPost, "/_matrix/client/v3/register", token,
		map[string]any{"type": "m.login.application_service", "username": username, "inhibit_login": true})
}

func TestAppServiceIdentity(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env, _ := startWithAppService(t, engine)

			// Registration with the as_token, in the namespace only.
			st, out := asRegister(t, env, asToken, "_bridge_alice")
			if st != http.StatusOK || out["user_id"] != "@_bridge_alice:cirrus.test" {
				t.Fatalf("appservice register: %d %v", st, out)
			}
			if _, ok := out["access_token"]; ok {
				t.Errorf("inhibit_login registration returned a token: %v", out)
			}
			for _, c := range []struct {
				token, user string
				status      int
				code        string
			}{
				{"", "_bridge_bob", 401, "M_MISSING_TOKEN"},
				{"not-a-token", "_bridge_bob", 401, "M_UNKNOWN_TOKEN"},
				{asToken, "outsider", 400, "M_EXCLUSIVE"},
				{"as-token-dead-0123456789", "_bridge_bob", 400, "M_EXCLUSIVE"}, // another service's namespace
				{asToken, "_bridge_alice", 400, "M_USER_IN_USE"},
			} {
				st, out := asRegister(t, env, c.token, c.user)
				if st != c.status || out["errcode"] != c.code {
					t.Errorf("register %s with %q: %d %v, want %d %s", c.user, c.token, st, out, c.status, c.code)
				}
			}

			// A normal user cannot take a name or an alias of the exclusive namespaces.
			c := newClient(t, env)
			_, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "_bridge_mallory", Password: "pw"})
			if errcode(err) != "M_EXCLUSIVE" || status(err) != 400 {
				t.Errorf("normal registration in the namespace: %v", err)
			}
			st, out = do2(t, env, http.MethodGet, "/_matrix/client/v3/register/available?username=_bridge_mallory", "")
			if st != 400 || out["errcode"] != "M_EXCLUSIVE" {
				t.Errorf("available in the namespace: %d %v", st, out)
			}
			alice := register(t, env, "alice", "pw")
			room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Name: "r"})
			if err != nil {
				t.Fatal(err)
			}
			st, out = doJSON(t, env, http.MethodPut, "/_matrix/client/v3/directory/room/"+url.PathEscape("#_bridge_taken:cirrus.test"),
				alice.AccessToken, map[string]any{"room_id": room.RoomID})
			if st != 400 || out["errcode"] != "M_EXCLUSIVE" {
				t.Errorf("normal user's alias in the namespace: %d %v", st, out)
			}
			_, err = alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomAliasName: "_bridge_room"})
			if errcode(err) != "M_EXCLUSIVE" {
				t.Errorf("createRoom with an alias in the namespace: %v", err)
			}

			// Identity assertion.
			for _, c := range []struct {
				query, user string
				status      int
				code        string
			}{
				{"", string(asBot), 200, ""},
				{"?user_id=" + url.QueryEscape("@_bridge_alice:cirrus.test"), "@_bridge_alice:cirrus.test", 200, ""},
				{"?user_id=" + url.QueryEscape("@alice:cirrus.test"), "", 403, "M_FORBIDDEN"},         // outside the namespace
				{"?user_id=" + url.QueryEscape("@_bridge_ghost:cirrus.test"), "", 403, "M_FORBIDDEN"}, // not registered
				{"?user_id=" + url.QueryEscape("@_bridge_alice:cirrus.test") + "&device_id=NOPE", "", 400, "M_UNKNOWN_DEVICE"},
			} {
				st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/account/whoami"+c.query, asToken)
				if st != c.status || (c.user != "" && out["user_id"] != c.user) || (c.code != "" && out["errcode"] != c.code) {
					t.Errorf("whoami%s: %d %v, want %d %s%s", c.query, st, out, c.status, c.user, c.code)
				}
			}

			// Login as a namespaced user with the as_token, then use that device.
			st, out = doJSON(t, env, http.MethodPost, "/_matrix/client/v3/login", asToken, map[string]any{
				"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "_bridge_alice"}})
			if st != 200 || out["user_id"] != "@_bridge_alice:cirrus.test" || out["access_token"] == nil {
				t.Fatalf("appservice login: %d %v", st, out)
			}
			dev := out["device_id"].(string)
			st, out = do2(t, env, http.MethodGet, "/_matrix/client/v3/account/whoami?user_id="+url.QueryEscape("@_bridge_alice:cirrus.test")+"&device_id="+dev, asToken)
			if st != 200 || out["device_id"] != dev {
				t.Errorf("whoami with device_id: %d %v", st, out)
			}
			st, out = doJSON(t, env, http.MethodPost, "/_matrix/client/v3/login", asToken, map[string]any{
				"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}})
			if st != 400 || out["errcode"] != "M_EXCLUSIVE" {
				t.Errorf("appservice login outside its namespace: %d %v", st, out)
			}
			st, out = doJSON(t, env, http.MethodPost, "/_matrix/client/v3/login", "", map[string]any{
				"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "_bridge_alice"}})
			if st != 401 || out["errcode"] != "M_MISSING_TOKEN" {
				t.Errorf("appservice login without token: %d %v", st, out)
			}

			// Devices: a service creates and deletes its users' devices
			// (no access token, no user-interactive auth).
			ghostQ := "?user_id=" + url.QueryEscape("@_bridge_alice:cirrus.test")
			if st, out := doJSON(t, env, http.MethodPut, "/_matrix/client/v3/devices/BRIDGEDEV"+ghostQ, asToken, map[string]any{"display_name": "bridge"}); st != 200 {
				t.Fatalf("appservice device creation: %d %v", st, out)
			}
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/devices/BRIDGEDEV"+ghostQ, asToken); st != 200 || out["display_name"] != "bridge" {
				t.Errorf("created device: %d %v", st, out)
			}
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/account/whoami"+ghostQ+"&device_id=BRIDGEDEV", asToken); st != 200 || out["device_id"] != "BRIDGEDEV" {
				t.Errorf("whoami on the created device: %d %v", st, out)
			}
			if st, out := doJSON(t, env, http.MethodPut, "/_matrix/client/v3/devices/NOSUCHDEV", alice.AccessToken, map[string]any{"display_name": "x"}); st != 404 {
				t.Errorf("a user's PUT of an unknown device: %d %v", st, out)
			}
			if st, out, _ := do(t, env, http.MethodDelete, "/_matrix/client/v3/devices/BRIDGEDEV"+ghostQ, asToken, ""); st != 200 {
				t.Errorf("appservice device deletion: %d %v", st, out)
			}
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/account/whoami"+ghostQ+"&device_id=BRIDGEDEV", asToken); st != 400 || out["errcode"] != "M_UNKNOWN_DEVICE" {
				t.Errorf("whoami on the deleted device: %d %v", st, out)
			}

			// rate_limited: false: many registrations in a row stay unthrottled
			// (the register class allows a burst of 10).
			for i := range 15 {
				if st, out := asRegister(t, env, asToken, fmt.Sprintf("_bridge_burst%d", i)); st != 200 {
					t.Fatalf("appservice registration %d: %d %v", i, st, out)
				}
			}
		})
	}
}

// do2 is do without the headers.
func do2(t *testing.T, env *testenv.Env, method, path, token string) (int, map[string]any) {
	t.Helper()
	st, out, _ := do(t, env, method, path, token, "")
	return st, out
}

func TestAppServiceTransactions(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env, f := startWithAppService(t, engine)
			ctx := context.Background()
			if st, out := asRegister(t, env, asToken, "_bridge_alice"); st != 200 {
				t.Fatalf("register: %d %v", st, out)
			}
			ghost := id.UserID("@_bridge_alice:cirrus.test")
			alice := register(t, env, "alice", "pw")
			// A room the service does not know about: nothing of it is pushed.
			quiet, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "quiet"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SendText(ctx, quiet.RoomID, "not for the bridge"); err != nil {
				t.Fatal(err)
			}
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "bridged", Invite: []id.UserID{ghost}})
			if err != nil {
				t.Fatal(err)
			}
			// The first push fails: its retry must be the same transaction.
			f.mu.Lock()
			f.failNext = 1
			f.mu.Unlock()
			st, out := doJSON(t, env, http.MethodPost, "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/join?user_id="+url.QueryEscape(string(ghost)), asToken, map[string]any{})
			if st != 200 {
				t.Fatalf("ghost join: %d %v", st, out)
			}
			var sent []id.EventID
			for i := range 3 {
				r, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%d", i))
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, r.EventID)
			}
			// The ghost answers, masquerading, with the time the message had
			// on the bridged network.
			ghostSend := "/_matrix/client/v3/rooms/" + string(room.RoomID) + "/send/m.room.message/t1?user_id=" + url.QueryEscape(string(ghost))
			if st, out := doJSON(t, env, http.MethodPut, ghostSend+"&ts=yesterday", asToken, map[string]any{"msgtype": "m.text", "body": "x"}); st != 400 || out["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("bad ts: %d %v", st, out)
			}
			st, out = doJSON(t, env, http.MethodPut, ghostSend+"&ts=1500000000000", asToken, map[string]any{"msgtype": "m.text", "body": "from the bridge"})
			if st != 200 {
				t.Fatalf("ghost send: %d %v", st, out)
			}
			bridged := id.EventID(out["event_id"].(string))
			sent = append(sent, bridged)

			var got []id.EventID
			testenv.Eventually(t, 20*time.Second, "events pushed to the appservice", func() error {
				_, delivered := f.snapshot()
				got = got[:0]
				for _, txn := range delivered {
					for _, ev := range txn.Events {
						got = append(got, id.EventID(ev["event_id"].(string)))
					}
				}
				if !containsInOrder(got, sent) {
					return fmt.Errorf("delivered %v, want %v in order", got, sent)
				}
				return nil
			})
			failedTxns, delivered := f.snapshot()
			// Exactly once: no event in two delivered transactions.
			seen := map[id.EventID]bool{}
			for _, e := range got {
				if seen[e] {
					t.Errorf("event %s delivered twice", e)
				}
				seen[e] = true
			}
			// The failed attempt was retried with the same txnId and events.
			if len(failedTxns) != 1 {
				t.Fatalf("%d failed attempts, want 1", len(failedTxns))
			}
			failed := failedTxns[0]
			var retried *asTxn
			for i := range delivered {
				if delivered[i].ID == failed.ID {
					retried = &delivered[i]
				}
			}
			if retried == nil {
				t.Fatalf("failed transaction %s never retried; delivered %v", failed.ID, delivered)
			}
			if fmt.Sprint(asEventIDs(retried.Events)) != fmt.Sprint(asEventIDs(failed.Events)) {
				t.Errorf("retry of %s changed its events: %v, then %v", failed.ID, asEventIDs(failed.Events), asEventIDs(retried.Events))
			}
			// Events are in the client format, and nothing from the quiet room came.
			for _, txn := range delivered {
				for _, ev := range txn.Events {
					if ev["room_id"] != string(room.RoomID) {
						t.Errorf("pushed an event of %v", ev["room_id"])
					}
					if ev["type"] == nil || ev["sender"] == nil || ev["content"] == nil {
						t.Errorf("event not in client format: %v", ev)
					}
					if ev["event_id"] == string(bridged) && (ev["origin_server_ts"] != float64(1500000000000) || ev["sender"] != string(ghost)) {
						t.Errorf("bridged message: %v", ev)
					}
				}
			}
			f.mu.Lock()
			bad := f.badAuth
			f.mu.Unlock()
			if bad != 0 {
				t.Errorf("%d requests without the hs_token", bad)
			}
		})
	}
}

// TestAppServiceEphemeral: a service with receive_ephemeral gets the
// typing notices, receipts and presence of the rooms it is interested in,
// in its transactions' ephemeral list; private receipts only of its own
// users.
func TestAppServiceEphemeral(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env, f := startWithAppService(t, engine)
			ctx := context.Background()
			if st, out := asRegister(t, env, asToken, "_bridge_bob"); st != 200 {
				t.Fatalf("register: %d %v", st, out)
			}
			ghost := id.UserID("@_bridge_bob:cirrus.test")
			alice := register(t, env, "alice", "pw")
			quiet, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "quiet"})
			if err != nil {
				t.Fatal(err)
			}
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "bridged", Invite: []id.UserID{ghost}})
			if err != nil {
				t.Fatal(err)
			}
			if st, out := doJSON(t, env, http.MethodPost, "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/join?user_id="+url.QueryEscape(string(ghost)), asToken, map[string]any{}); st != 200 {
				t.Fatalf("ghost join: %d %v", st, out)
			}
			msg, err := alice.SendText(ctx, room.RoomID, "hello bridge")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.UserTyping(ctx, quiet.RoomID, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.UserTyping(ctx, room.RoomID, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			receipt := func(token, path string) {
				t.Helper()
				if st, out := doJSON(t, env, http.MethodPost, path, token, map[string]any{}); st != 200 {
					t.Fatalf("receipt %s: %d %v", path, st, out)
				}
			}
			base := "/_matrix/client/v3/rooms/" + string(room.RoomID) + "/receipt/"
			receipt(alice.AccessToken, base+"m.read.private/"+url.PathEscape(string(msg.EventID)))
			receipt(asToken, base+"m.read.private/"+url.PathEscape(string(msg.EventID))+"?user_id="+url.QueryEscape(string(ghost)))
			receipt(alice.AccessToken, base+"m.read/"+url.PathEscape(string(msg.EventID)))
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: "online", StatusMsg: "bridging"}); err != nil {
				t.Fatal(err)
			}

			var eph []map[string]any
			testenv.Eventually(t, 20*time.Second, "ephemeral data pushed", func() error {
				_, delivered := f.snapshot()
				eph = eph[:0]
				for _, txn := range delivered {
					eph = append(eph, txn.Ephemeral...)
				}
				kinds := map[string]int{}
				for _, e := range eph {
					kinds[e["type"].(string)]++
				}
				if kinds["m.typing"] < 1 || kinds["m.receipt"] < 2 || kinds["m.presence"] < 1 {
					return fmt.Errorf("ephemeral so far: %v", eph)
				}
				return nil
			})
			var typing, presence bool
			receipts := map[string]bool{} // user/type
			for _, e := range eph {
				content, _ := e["content"].(map[string]any)
				switch e["type"] {
				case "m.typing":
					if e["room_id"] != string(room.RoomID) {
						t.Errorf("typing of another room pushed: %v", e)
					}
					if fmt.Sprint(content["user_ids"]) == fmt.Sprint([]any{string(alice.UserID)}) {
						typing = true
					}
				case "m.receipt":
					if e["room_id"] != string(room.RoomID) {
						t.Errorf("receipt without the room: %v", e)
					}
					for _, byType := range content {
						for typ, users := range byType.(map[string]any) {
							for u := range users.(map[string]any) {
								receipts[u+"/"+typ] = true
							}
						}
					}
				case "m.presence":
					if e["sender"] == string(alice.UserID) && content["presence"] == "online" && content["status_msg"] == "bridging" {
						presence = true
					}
				}
			}
			if !typing || !presence {
				t.Errorf("typing %v, presence %v in %v", typing, presence, eph)
			}
			if !receipts[string(alice.UserID)+"/m.read"] || !receipts[string(ghost)+"/m.read.private"] {
				t.Errorf("receipts pushed: %v", receipts)
			}
			if receipts[string(alice.UserID)+"/m.read.private"] {
				t.Errorf("another user's private receipt was pushed: %v", receipts)
			}
		})
	}
}

func asEventIDs(evs []map[string]any) []any {
	out := make([]any, len(evs))
	for i, ev := range evs {
		out[i] = ev["event_id"]
	}
	return out
}

// containsInOrder reports whether want appears in got as a subsequence.
func containsInOrder(got, want []id.EventID) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestAppServicePingDirectoryQueries(t *testing.T) {
	for _, engine := range testenv.Engines {
		t.Run(engine, func(t *testing.T) {
			env, f := startWithAppService(t, engine)
			ctx := context.Background()
			alice := register(t, env, "alice", "pw")

			// Ping.
			st, out := doJSON(t, env, http.MethodPost, "/_matrix/client/v1/appservice/bridge/ping", asToken, map[string]any{"transaction_id": "meow"})
			if st != 200 || out["duration_ms"] == nil {
				t.Fatalf("ping: %d %v", st, out)
			}
			f.mu.Lock()
			pings := append([]string(nil), f.pings...)
			f.mu.Unlock()
			if len(pings) != 1 || pings[0] != "meow" {
				t.Errorf("ping transaction ids: %v", pings)
			}
			f.mu.Lock()
			f.pingCode = 403
			f.mu.Unlock()
			st, out = doJSON(t, env, http.MethodPost, "/_matrix/client/v1/appservice/bridge/ping", asToken, map[string]any{})
			if st != 502 || out["errcode"] != "M_BAD_STATUS" || out["status"] != float64(403) || !strings.Contains(fmt.Sprint(out["body"]), "not today") {
				t.Errorf("ping of a failing service: %d %v", st, out)
			}
			for _, c := range []struct {
				path, token string
				status      int
				code        string
			}{
				{"/_matrix/client/v1/appservice/bridge/ping", alice.AccessToken, 403, "M_FORBIDDEN"},
				{"/_matrix/client/v1/appservice/dead/ping", asToken, 403, "M_FORBIDDEN"},
				{"/_matrix/client/v1/appservice/dead/ping", "as-token-dead-0123456789", 502, "M_CONNECTION_FAILED"},
				{"/_matrix/client/v1/appservice/nourl/ping", "as-token-nourl-0123456789", 400, "M_URL_NOT_SET"},
			} {
				st, out := doJSON(t, env, http.MethodPost, c.path, c.token, map[string]any{})
				if st != c.status || out["errcode"] != c.code {
					t.Errorf("POST %s: %d %v, want %d %s", c.path, st, out, c.status, c.code)
				}
			}
			if st, out, _ := do(t, env, http.MethodPost, "/_matrix/client/v1/appservice/bridge/ping", asToken, "[]"); st != 400 || out["errcode"] != "M_NOT_JSON" {
				t.Errorf("ping with a bad body: %d %v", st, out)
			}

			// An alias of the namespace that does not exist yet: the service
			// is asked and creates the room; then it resolves and can be joined.
			lobby := id.RoomAlias("#_bridge_lobby:cirrus.test")
			resolved, err := alice.ResolveAlias(ctx, lobby)
			if err != nil {
				t.Fatalf("alias query: %v", err)
			}
			if _, err := alice.JoinRoom(ctx, string(lobby), nil); err != nil {
				t.Fatalf("join by the queried alias: %v", err)
			}
			if _, err := alice.ResolveAlias(ctx, "#_bridge_nothing:cirrus.test"); errcode(err) != "M_NOT_FOUND" {
				t.Errorf("alias the service does not know: %v", err)
			}

			// A user of the namespace that does not exist yet: the service is
			// asked and registers it.
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/profile/"+url.PathEscape("@_bridge_puppet1:cirrus.test"), alice.AccessToken); st != 200 || out["displayname"] != "_bridge_puppet1" {
				t.Errorf("profile of a user the service creates on demand: %d %v", st, out)
			}
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/profile/"+url.PathEscape("@_bridge_nobody:cirrus.test"), alice.AccessToken); st != 404 {
				t.Errorf("profile of a user the service does not know: %d %v", st, out)
			}

			// The service's network directory.
			path := "/_matrix/client/v3/directory/list/appservice/bridgenet/" + url.PathEscape(string(resolved.RoomID))
			if st, out := doJSON(t, env, http.MethodPut, path, alice.AccessToken, map[string]any{"visibility": "public"}); st != 403 || out["errcode"] != "M_FORBIDDEN" {
				t.Errorf("a user publishing in a network directory: %d %v", st, out)
			}
			if st, out := doJSON(t, env, http.MethodPut, path, asToken, map[string]any{"visibility": "secret"}); st != 400 || out["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("bad visibility: %d %v", st, out)
			}
			if st, out := doJSON(t, env, http.MethodPut, path, asToken, map[string]any{}); st != 400 || out["errcode"] != "M_MISSING_PARAM" {
				t.Errorf("missing visibility: %d %v", st, out)
			}
			if st, out := doJSON(t, env, http.MethodPut, path, asToken, map[string]any{"visibility": "public"}); st != 200 {
				t.Fatalf("publishing in the network directory: %d %v", st, out)
			}
			listed := func(q string) bool {
				st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/publicRooms"+q, alice.AccessToken)
				if st != 200 {
					t.Fatalf("publicRooms%s: %d %v", q, st, out)
				}
				for _, r := range out["chunk"].([]any) {
					if r.(map[string]any)["room_id"] == string(resolved.RoomID) {
						return true
					}
				}
				return false
			}
			eventually(t, "room listed under its network", func() bool {
				return listed("?third_party_instance_id=bridgenet") && listed("?include_all_networks=true")
			})
			if listed("") || listed("?third_party_instance_id=othernet") {
				t.Errorf("network room listed in the main or another network's directory")
			}
			if st, _ := doJSON(t, env, http.MethodPut, path, asToken, map[string]any{"visibility": "private"}); st != 200 {
				t.Fatalf("unpublishing: %d", st)
			}
			eventually(t, "room gone from the network directory", func() bool { return !listed("?third_party_instance_id=bridgenet") })

			// Third-party lookups reach the service of the protocol.
			st, out = do2(t, env, http.MethodGet, "/_matrix/client/v3/thirdparty/protocols", alice.AccessToken)
			if p, ok := out["bridgenet"].(map[string]any); st != 200 || !ok || p["icon"] != "mxc://cirrus.test/icon" {
				t.Errorf("protocols: %d %v", st, out)
			}
			status, raw := rawGet(t, env, "/_matrix/client/v3/thirdparty/location/bridgenet?channel=lobby", alice.AccessToken)
			if status != 200 || !strings.Contains(raw, `"#_bridge_lobby:cirrus.test"`) {
				t.Errorf("location lookup: %d %s", status, raw)
			}
			if st, out := do2(t, env, http.MethodGet, "/_matrix/client/v3/thirdparty/protocol/nonet", alice.AccessToken); st != 404 {
				t.Errorf("unknown protocol: %d %v", st, out)
			}
		})
	}
}

func rawGet(t *testing.T, env *testenv.Env, path, token string) (int, string) {
	t.Helper()
	st, _, raw := sendRaw(t, env, http.MethodGet, path, token, "")
	return st, string(raw)
}
