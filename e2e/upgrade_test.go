package e2e

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

func upgrade(t *testing.T, env *testenv.Env, c *mautrix.Client, room id.RoomID, body map[string]any) (int, map[string]any) {
	t.Helper()
	return doJSON(t, env, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/upgrade", c.AccessToken, body)
}

func stateContent(t *testing.T, c *mautrix.Client, room id.RoomID, typ event.Type, key string) map[string]any {
	t.Helper()
	var out map[string]any
	if err := c.StateEvent(context.Background(), room, typ, key, &out); err != nil {
		t.Fatalf("state %s/%s in %s: %v", typ.Type, key, room, err)
	}
	return out
}

func membership(t *testing.T, c *mautrix.Client, room id.RoomID, u id.UserID) string {
	t.Helper()
	m, _ := stateContent(t, c, room, event.StateMember, string(u))["membership"].(string)
	return m
}

func TestRoomUpgrade(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		dave := register(t, env, "dave", "pw")
		old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "10", Preset: "private_chat", Name: "Old times",
			Topic: "history", RoomAliasName: "up", Visibility: "public",
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		o := old.RoomID
		if _, err := alice.CreateAlias(ctx, "#up2:cirrus.test", o); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := alice.InviteUser(ctx, o, &mautrix.ReqInviteUser{UserID: c.UserID}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.JoinRoomByID(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.BanUser(ctx, o, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, o, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
			t.Fatal(err)
		}

		if st, body := upgrade(t, env, bob, o, map[string]any{"new_version": "12"}); st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("upgrade by power 0: %d %v", st, body)
		}
		if st, body := upgrade(t, env, alice, o, map[string]any{"new_version": "99"}); st != 400 || body["errcode"] != "M_UNSUPPORTED_ROOM_VERSION" {
			t.Fatalf("unknown version: %d %v", st, body)
		}
		st, body := upgrade(t, env, alice, o, map[string]any{"new_version": "12"})
		if st != 200 {
			t.Fatalf("upgrade: %d %v", st, body)
		}
		n := id.RoomID(body["replacement_room"].(string))

		// The old room: tombstone, no canonical alias, quietened.
		if tomb := stateContent(t, alice, o, event.StateTombstone, ""); tomb["replacement_room"] != string(n) {
			t.Fatalf("tombstone %v", tomb)
		}
		if ca := stateContent(t, alice, o, event.StateCanonicalAlias, ""); len(ca) != 0 {
			t.Fatalf("old canonical alias %v", ca)
		}
		pl := stateContent(t, alice, o, event.StatePowerLevels, "")
		if pl["events_default"] != float64(50) || pl["invite"] != float64(50) {
			t.Fatalf("old power levels %v", pl)
		}
		if _, err := bob.SendText(ctx, o, "still here"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("talking in the old room: %v", err)
		}

		// The new room.
		cr := stateContent(t, alice, n, event.StateCreate, "")
		pred, _ := cr["predecessor"].(map[string]any)
		if cr["room_version"] != "12" || pred["room_id"] != string(o) || pred["event_id"] == nil {
			t.Fatalf("create %v", cr)
		}
		if name := stateContent(t, alice, n, event.StateRoomName, ""); name["name"] != "Old times" {
			t.Fatalf("name %v", name)
		}
		if topic := stateContent(t, alice, n, event.StateTopic, ""); topic["topic"] != "history" {
			t.Fatalf("topic %v", topic)
		}
		if enc := stateContent(t, alice, n, event.StateEncryption, ""); enc["algorithm"] != "m.megolm.v1.aes-sha2" {
			t.Fatalf("encryption %v", enc)
		}
		if jr := stateContent(t, alice, n, event.StateJoinRules, ""); jr["join_rule"] != "invite" {
			t.Fatalf("join rules %v", jr)
		}
		npl := stateContent(t, alice, n, event.StatePowerLevels, "")
		users, _ := npl["users"].(map[string]any)
		if _, ok := users[string(alice.UserID)]; ok || npl["events"].(map[string]any)["m.room.tombstone"] != float64(100) {
			t.Fatalf("new power levels (v12: the creator is not in users) %v", npl)
		}
		if ca := stateContent(t, alice, n, event.StateCanonicalAlias, ""); ca["alias"] != "#up:cirrus.test" {
			t.Fatalf("new canonical alias %v", ca)
		}
		if m := membership(t, alice, n, carol.UserID); m != "ban" {
			t.Fatalf("carol in the new room: %q", m)
		}
		for _, u := range []id.UserID{bob.UserID, dave.UserID} {
			if m := membership(t, alice, n, u); m != "invite" {
				t.Fatalf("%s in the new room: %q", u, m)
			}
		}
		if _, err := bob.JoinRoomByID(ctx, n); err != nil {
			t.Fatalf("bob follows the tombstone: %v", err)
		}
		for _, al := range []id.RoomAlias{"#up:cirrus.test", "#up2:cirrus.test"} {
			if res, err := bob.ResolveAlias(ctx, al); err != nil || res.RoomID != n {
				t.Fatalf("%s resolves to %+v %v", al, res, err)
			}
		}
		if list, err := alice.GetAliases(ctx, n); err != nil || len(list.Aliases) != 2 {
			t.Fatalf("new room aliases %+v %v", list, err)
		}
		if list, err := alice.GetAliases(ctx, o); err != nil || len(list.Aliases) != 0 {
			t.Fatalf("old room aliases %+v %v", list, err)
		}
		if getVisibility(t, env, n) != "public" || getVisibility(t, env, o) != "private" {
			t.Fatalf("directory: new %s old %s", getVisibility(t, env, n), getVisibility(t, env, o))
		}

		// Back down to v10 (creators get an explicit 100), a space keeping its children.
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, space.RoomID, event.StateSpaceChild, string(n), map[string]any{"via": []string{"cirrus.test"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, space.RoomID, event.StateSpaceChild, "!gone:cirrus.test", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		st, body = upgrade(t, env, alice, space.RoomID, map[string]any{"new_version": "10"})
		if st != 200 {
			t.Fatalf("space upgrade: %d %v", st, body)
		}
		ns := id.RoomID(body["replacement_room"].(string))
		if cr := stateContent(t, alice, ns, event.StateCreate, ""); cr["type"] != "m.space" || cr["creator"] != string(alice.UserID) {
			t.Fatalf("space create %v", cr)
		}
		if users := stateContent(t, alice, ns, event.StatePowerLevels, "")["users"].(map[string]any); users[string(alice.UserID)] != float64(100) {
			t.Fatalf("space power levels %v", users)
		}
		if via := stateContent(t, alice, ns, event.StateSpaceChild, string(n))["via"]; via == nil {
			t.Fatal("space child not copied")
		}
		var removed map[string]any
		if err := alice.StateEvent(ctx, ns, event.StateSpaceChild, "!gone:cirrus.test", &removed); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("removed space child copied: %v %v", removed, err)
		}
		if jr := stateContent(t, alice, ns, event.StateJoinRules, ""); jr["join_rule"] != "public" {
			t.Fatalf("public join rule %v", jr)
		}
	})
}

func TestUpgradeBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		up := "/_matrix/client/v3/rooms/" + string(room.RoomID) + "/upgrade"
		runBadInput(t, env, []badInput{
			{"no token", "POST", up, "", `{"new_version":"11"}`, 401, "M_MISSING_TOKEN"},
			{"no body", "POST", up, alice.AccessToken, ``, 400, "M_NOT_JSON"},
			{"no version", "POST", up, alice.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
			{"version not a string", "POST", up, alice.AccessToken, `{"new_version":11}`, 400, "M_BAD_JSON"},
			{"unsupported version", "POST", up, alice.AccessToken, `{"new_version":"13"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"bad additional creator", "POST", up, alice.AccessToken, `{"new_version":"12","additional_creators":["bob"]}`, 400, "M_INVALID_PARAM"},
			{"not a member", "POST", up, bob.AccessToken, `{"new_version":"11"}`, 403, "M_FORBIDDEN"},
			{"unknown room", "POST", "/_matrix/client/v3/rooms/!nope:cirrus.test/upgrade", alice.AccessToken, `{"new_version":"11"}`, 403, "M_FORBIDDEN"},
			{"bad room", "POST", "/_matrix/client/v3/rooms/nope/upgrade", alice.AccessToken, `{"new_version":"11"}`, 400, "M_INVALID_PARAM"},
		})
	})
}

func TestReports(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		rude := send(t, bob, room.RoomID, event.EventMessage, text("rude"))
		r := "/_matrix/client/v3/rooms/" + string(room.RoomID)
		if st, body := doJSON(t, env, "POST", r+"/report/"+string(rude), alice.AccessToken, map[string]any{"reason": "rude", "score": -50}); st != 200 || len(body) != 0 {
			t.Fatalf("report event: %d %v", st, body)
		}
		if err := alice.ReportEvent(ctx, room.RoomID, rude, ""); err != nil {
			t.Fatalf("report without a reason: %v", err)
		}
		if err := carol.ReportRoom(ctx, room.RoomID, "bad place"); err != nil {
			t.Fatalf("room report by a non-member: %v", err)
		}
		reps, _, err := rooms.New(env.Apps[0].Table, "cirrus.test", nil, nil, nil).Reports(ctx, "", 10)
		if err != nil || len(reps) != 3 {
			t.Fatalf("stored reports %+v %v", reps, err)
		}
		find := func(f func(rooms.Report) bool) *rooms.Report {
			if i := slices.IndexFunc(reps, f); i >= 0 {
				return &reps[i]
			}
			t.Fatalf("no such report in %+v", reps)
			return nil
		}
		if rr := find(func(x rooms.Report) bool { return x.EventID == "" }); rr.RoomID != room.RoomID || rr.Reporter != carol.UserID || rr.Reason != "bad place" || rr.ReceivedTS == 0 {
			t.Fatalf("room report %+v", rr)
		}
		if er := find(func(x rooms.Report) bool { return x.Reason == "rude" }); er.EventID != rude || er.Sender != bob.UserID || er.Reporter != alice.UserID || er.Score == nil || *er.Score != -50 {
			t.Fatalf("event report %+v", er)
		}
		find(func(x rooms.Report) bool { return x.Reason == "" && x.EventID == rude && x.Score == nil })
		other, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		carols := send(t, carol, other.RoomID, event.EventMessage, text("mine"))
		runBadInput(t, env, []badInput{
			{"outsider reports an event", "POST", r + "/report/" + string(rude), carol.AccessToken, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
			{"unknown event", "POST", r + "/report/$nope", alice.AccessToken, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
			{"event of another room", "POST", r + "/report/" + string(carols), alice.AccessToken, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
			{"score too high", "POST", r + "/report/" + string(rude), alice.AccessToken, `{"reason":"x","score":10}`, 400, "M_INVALID_PARAM"},
			{"score too low", "POST", r + "/report/" + string(rude), alice.AccessToken, `{"score":-101}`, 400, "M_INVALID_PARAM"},
			{"score not a number", "POST", r + "/report/" + string(rude), alice.AccessToken, `{"score":"bad"}`, 400, "M_BAD_JSON"},
			{"reason not a string", "POST", r + "/report/" + string(rude), alice.AccessToken, `{"reason":5}`, 400, "M_BAD_JSON"},
			{"reason too long", "POST", r + "/report/" + string(rude), alice.AccessToken, `{"reason":"` + repeat("x", 5000) + `"}`, 400, "M_INVALID_PARAM"},
			{"event report not json", "POST", r + "/report/" + string(rude), alice.AccessToken, `report`, 400, "M_NOT_JSON"},
			{"event report without token", "POST", r + "/report/" + string(rude), "", `{}`, 401, "M_MISSING_TOKEN"},
			{"room report without reason", "POST", r + "/report", carol.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
			{"room report reason not a string", "POST", r + "/report", carol.AccessToken, `{"reason":[]}`, 400, "M_BAD_JSON"},
			{"room report unknown room", "POST", "/_matrix/client/v3/rooms/!nope:cirrus.test/report", carol.AccessToken, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
			{"room report bad room", "POST", "/_matrix/client/v3/rooms/nope/report", carol.AccessToken, `{"reason":"x"}`, 400, "M_INVALID_PARAM"},
		})
	})
}
