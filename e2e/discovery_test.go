package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// directorySearch runs a user directory search and returns the user IDs found.
func directorySearch(t *testing.T, env *testenv.Env, c *mautrix.Client, term string, limit int) ([]string, bool) {
	t.Helper()
	req := map[string]any{"search_term": term}
	if limit > 0 {
		req["limit"] = limit
	}
	st, body := doJSON(t, env, "POST", "/_matrix/client/v3/user_directory/search", c.AccessToken, req)
	if st != 200 {
		t.Fatalf("search %q: %d %v", term, st, body)
	}
	var ids []string
	for _, r := range body["results"].([]any) {
		ids = append(ids, r.(map[string]any)["user_id"].(string))
	}
	limited, _ := body["limited"].(bool)
	return ids, limited
}

func TestUserDirectory(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		register(t, env, "dave", "pw") // shares no room with alice, in no public room
		if err := bob.SetDisplayName(ctx, "Zoë Müller"); err != nil {
			t.Fatal(err)
		}
		shared, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "lobby"}); err != nil {
			t.Fatal(err)
		}
		for _, term := range []string{"zoe", "MULL", "zoë müller", "bo", "@bob:cirrus.test"} {
			if got, _ := directorySearch(t, env, alice, term, 0); len(got) != 1 || got[0] != string(bob.UserID) {
				t.Fatalf("search %q found %v, want bob", term, got)
			}
		}
		if got, _ := directorySearch(t, env, alice, "oe", 0); len(got) != 0 {
			t.Fatalf("search inside a word found %v", got)
		}
		// Members of public rooms are found (the directory index is
		// eventually consistent on DynamoDB); users in neither are not.
		eventually(t, "carol in the directory", func() bool {
			got, _ := directorySearch(t, env, alice, "carol", 0)
			return len(got) == 1 && got[0] == string(carol.UserID)
		})
		if got, _ := directorySearch(t, env, alice, "dave", 0); len(got) != 0 {
			t.Fatalf("dave found: %v", got)
		}
		got, limited := directorySearch(t, env, alice, "", 2)
		if len(got) != 2 || !limited {
			t.Fatalf("limit 2 of alice, bob and carol: %v limited=%v", got, limited)
		}

		runBadInput(t, env, []badInput{
			{"no search term", "POST", "/_matrix/client/v3/user_directory/search", alice.AccessToken, `{"limit":3}`, 400, "M_MISSING_PARAM"},
			{"negative limit", "POST", "/_matrix/client/v3/user_directory/search", alice.AccessToken, `{"search_term":"a","limit":-1}`, 400, "M_INVALID_PARAM"},
			{"term not a string", "POST", "/_matrix/client/v3/user_directory/search", alice.AccessToken, `{"search_term":5}`, 400, "M_BAD_JSON"},
			{"not json", "POST", "/_matrix/client/v3/user_directory/search", alice.AccessToken, `nope`, 400, "M_NOT_JSON"},
			{"no token", "POST", "/_matrix/client/v3/user_directory/search", "", `{"search_term":"a"}`, 401, "M_MISSING_TOKEN"},
		})
	})
}

func TestOpenID(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		path := "/_matrix/client/v3/user/" + url.PathEscape(string(alice.UserID)) + "/openid/request_token"
		st, tok := doJSON(t, env, "POST", path, alice.AccessToken, map[string]any{})
		if st != 200 || tok["token_type"] != "Bearer" || tok["matrix_server_name"] != "cirrus.test" || tok["expires_in"] != float64(3600) {
			t.Fatalf("request_token: %d %v", st, tok)
		}
		token, _ := tok["access_token"].(string)
		st, info, _ := do(t, env, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), "", "")
		if st != 200 || info["sub"] != string(alice.UserID) {
			t.Fatalf("userinfo: %d %v", st, info)
		}
		// mautrix-go sends no body at all.
		resp, err := alice.RequestOpenIDToken(context.Background())
		if err != nil || resp.AccessToken == "" || resp.AccessToken == token || resp.ExpiresIn != 3600 {
			t.Fatalf("mautrix RequestOpenIDToken: %+v %v", resp, err)
		}
		st, info, _ = do(t, env, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(resp.AccessToken), "", "")
		if st != 200 || info["sub"] != string(alice.UserID) {
			t.Fatalf("userinfo of the second token: %d %v", st, info)
		}
		runBadInput(t, env, []badInput{
			{"someone else", "POST", path, bob.AccessToken, `{}`, 403, "M_FORBIDDEN"},
			{"not json", "POST", path, alice.AccessToken, `[]`, 400, "M_NOT_JSON"},
			{"no token", "POST", path, "", `{}`, 401, "M_MISSING_TOKEN"},
			{"unknown openid token", "GET", "/_matrix/federation/v1/openid/userinfo?access_token=nope", "", "", 401, "M_UNKNOWN_TOKEN"},
			{"no openid token", "GET", "/_matrix/federation/v1/openid/userinfo", "", "", 401, "M_UNKNOWN_TOKEN"},
			// An access token is not an OpenID token.
			{"access token", "GET", "/_matrix/federation/v1/openid/userinfo?access_token=" + alice.AccessToken, "", "", 401, "M_UNKNOWN_TOKEN"},
		})
	})
}

// hierarchyRooms fetches one page of a space hierarchy: its room IDs and next_batch.
func hierarchyRooms(t *testing.T, env *testenv.Env, c *mautrix.Client, room id.RoomID, query string) ([]id.RoomID, string, map[string]any) {
	t.Helper()
	st, body, _ := do(t, env, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(room))+"/hierarchy?"+query, c.AccessToken, "")
	if st != 200 {
		t.Fatalf("hierarchy %s: %d %v", query, st, body)
	}
	var ids []id.RoomID
	for _, r := range body["rooms"].([]any) {
		ids = append(ids, id.RoomID(r.(map[string]any)["room_id"].(string)))
	}
	next, _ := body["next_batch"].(string)
	return ids, next, body
}

func sameRooms(a []id.RoomID, b ...id.RoomID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHierarchyAndSummary(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		create := func(c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
			t.Helper()
			resp, err := c.CreateRoom(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp.RoomID
		}
		space := create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", RoomAliasName: "space",
			CreationContent: map[string]any{"type": "m.space"}})
		roomA := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "A",
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		roomB := create(bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "B (bob's, invite only)"})
		roomC := create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "C"})
		child := func(parent, kid id.RoomID, content map[string]any) {
			t.Helper()
			if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, string(kid), content); err != nil {
				t.Fatal(err)
			}
		}
		child(space, roomA, map[string]any{"via": []string{"cirrus.test"}, "order": "b", "suggested": true})
		child(space, roomB, map[string]any{"via": []string{"cirrus.test"}, "order": "a"})
		child(space, "!elsewhere:remote.test", map[string]any{"via": []string{"remote.test"}})
		child(space, roomC, map[string]any{}) // no via: not a child
		child(roomA, roomC, map[string]any{"via": []string{"cirrus.test"}})

		// B is bob's invite-only room, the remote room is unknown here:
		// neither is listed; C is reached through A.
		rooms, next, body := hierarchyRooms(t, env, alice, space, "")
		if !sameRooms(rooms, space, roomA, roomC) || next != "" {
			t.Fatalf("hierarchy %v (next %q), want space, A, C", rooms, next)
		}
		top := body["rooms"].([]any)[0].(map[string]any)
		if top["room_type"] != "m.space" || top["name"] != "Space" || top["join_rule"] != "public" || top["num_joined_members"] != float64(1) {
			t.Fatalf("space chunk %v", top)
		}
		if cs := top["children_state"].([]any); len(cs) != 3 {
			t.Fatalf("children_state %v, want the 3 with via", cs)
		}
		if a := body["rooms"].([]any)[1].(map[string]any); a["encryption"] != "m.megolm.v1.aes-sha2" || a["room_version"] == nil {
			t.Fatalf("room A chunk %v", a)
		}
		if rooms, _, _ := hierarchyRooms(t, env, alice, space, "max_depth=1"); !sameRooms(rooms, space, roomA) {
			t.Fatalf("max_depth=1: %v", rooms)
		}
		if rooms, _, _ := hierarchyRooms(t, env, alice, space, "suggested_only=true"); !sameRooms(rooms, space, roomA) {
			t.Fatalf("suggested_only: %v", rooms)
		}
		// Pages.
		var all []id.RoomID
		q := "limit=1"
		for i := 0; i < 5; i++ {
			page, next, _ := hierarchyRooms(t, env, alice, space, q)
			all = append(all, page...)
			if next == "" {
				break
			}
			q = "limit=1&from=" + url.QueryEscape(next)
		}
		if !sameRooms(all, space, roomA, roomC) {
			t.Fatalf("paginated: %v", all)
		}
		_, first, _ := hierarchyRooms(t, env, alice, space, "limit=1")

		// Room summaries: without a token only for rooms anyone may see.
		st, sum, _ := do(t, env, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#space:cirrus.test"), "", "")
		if st != 200 || sum["room_id"] != string(space) || sum["room_type"] != "m.space" || sum["membership"] != nil || sum["room_version"] == nil {
			t.Fatalf("anonymous summary: %d %v", st, sum)
		}
		st, sum, _ = do(t, env, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(string(roomA)), alice.AccessToken, "")
		if st != 200 || sum["membership"] != "join" || sum["name"] != "A" || sum["encryption"] != "m.megolm.v1.aes-sha2" {
			t.Fatalf("member's summary: %d %v", st, sum)
		}
		st, sum, _ = do(t, env, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(string(space)), bob.AccessToken, "")
		if st != 200 || sum["membership"] != "leave" {
			t.Fatalf("non-member's summary of a public room: %d %v", st, sum)
		}

		hpath := "/_matrix/client/v1/rooms/" + url.PathEscape(string(space)) + "/hierarchy"
		spath := "/_matrix/client/v1/room_summary/"
		runBadInput(t, env, []badInput{
			{"hierarchy of a room bob may not see", "GET", "/_matrix/client/v1/rooms/" + url.PathEscape(string(roomA)) + "/hierarchy", bob.AccessToken, "", 403, "M_FORBIDDEN"},
			{"hierarchy of an unknown room", "GET", "/_matrix/client/v1/rooms/" + url.PathEscape("!nope:cirrus.test") + "/hierarchy", alice.AccessToken, "", 403, "M_FORBIDDEN"},
			{"limit zero", "GET", hpath + "?limit=0", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"negative max_depth", "GET", hpath + "?max_depth=-1", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"suggested_only not a bool", "GET", hpath + "?suggested_only=maybe", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"unknown from", "GET", hpath + "?from=xyz", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"from with other suggested_only", "GET", hpath + "?limit=1&suggested_only=true&from=" + url.QueryEscape(first), alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"hierarchy without token", "GET", hpath, "", "", 401, "M_MISSING_TOKEN"},
			{"anonymous summary of a private room", "GET", spath + url.PathEscape(string(roomA)), "", "", 404, "M_NOT_FOUND"},
			{"summary of a room bob may not see", "GET", spath + url.PathEscape(string(roomA)), bob.AccessToken, "", 404, "M_NOT_FOUND"},
			{"summary of an unknown room", "GET", spath + url.PathEscape("!nope:cirrus.test"), alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"summary of an unknown alias", "GET", spath + url.PathEscape("#nope:cirrus.test"), alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"summary of neither", "GET", spath + "nope", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
		})
	})
}

func TestDiscoveryMisc(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		// Nothing configured: no support information, no TURN.
		if st, body, _ := do(t, env, "GET", "/.well-known/matrix/support", "", ""); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("support unconfigured: %d %v", st, body)
		}
		if st, body, _ := do(t, env, "GET", "/_matrix/client/v3/voip/turnServer", alice.AccessToken, ""); st != 200 || len(body) != 0 {
			t.Fatalf("turnServer unconfigured: %d %v", st, body)
		}
		// Third-party networks: none.
		if st, body, _ := do(t, env, "GET", "/_matrix/client/v3/thirdparty/protocols", alice.AccessToken, ""); st != 200 || len(body) != 0 {
			t.Fatalf("protocols: %d %v", st, body)
		}
		// Mutual rooms.
		shared, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		st, body, _ := do(t, env, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape(string(bob.UserID)), alice.AccessToken, "")
		if j, _ := body["joined"].([]any); st != 200 || len(j) != 1 || j[0] != string(shared.RoomID) || body["count"] != float64(1) {
			t.Fatalf("mutual rooms: %d %v", st, body)
		}
		st, body, _ = do(t, env, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape("@nobody:cirrus.test"), alice.AccessToken, "")
		if j, _ := body["joined"].([]any); st != 200 || len(j) != 0 {
			t.Fatalf("mutual rooms with nobody: %d %v", st, body)
		}
		tp := "/_matrix/client/v3/thirdparty/"
		runBadInput(t, env, []badInput{
			{"unknown protocol", "GET", tp + "protocol/irc", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"location in unknown protocol", "GET", tp + "location/irc", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"user in unknown protocol", "GET", tp + "user/irc", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"location without alias", "GET", tp + "location", alice.AccessToken, "", 400, "M_MISSING_PARAM"},
			{"location by alias", "GET", tp + "location?alias=%23a%3Acirrus.test", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"user without userid", "GET", tp + "user", alice.AccessToken, "", 400, "M_MISSING_PARAM"},
			{"user by userid", "GET", tp + "user?userid=%40a%3Acirrus.test", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"turn without token", "GET", "/_matrix/client/v3/voip/turnServer", "", "", 401, "M_MISSING_TOKEN"},
			{"mutual rooms without user", "GET", "/_matrix/client/v1/mutual_rooms", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"mutual rooms with oneself", "GET", "/_matrix/client/v1/mutual_rooms?user_id=" + url.QueryEscape(string(alice.UserID)), alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"mutual rooms with a bad user id", "GET", "/_matrix/client/v1/mutual_rooms?user_id=bob", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"mutual rooms bad from", "GET", "/_matrix/client/v1/mutual_rooms?from=x&user_id=" + url.QueryEscape(string(bob.UserID)), alice.AccessToken, "", 400, "M_INVALID_PARAM"},
		})
	})
}

// TestDiscoveryConfigured checks the support and TURN endpoints with their settings.
func TestDiscoveryConfigured(t *testing.T) {
	env := testenv.Start(t, "embedded", map[string]string{
		"CIRRUS_SUPPORT_CONTACTS":   "m.role.admin=@admin:cirrus.test,m.role.security=security@cirrus.test",
		"CIRRUS_SUPPORT_PAGE":       "https://cirrus.test/help",
		"CIRRUS_TURN_URIS":          "turn:turn.cirrus.test?transport=udp,turns:turn.cirrus.test",
		"CIRRUS_TURN_SHARED_SECRET": "turn-secret",
		"CIRRUS_TURN_TTL":           "1h",
	})
	alice := register(t, env, "alice", "pw")
	st, body, _ := do(t, env, "GET", "/.well-known/matrix/support", "", "")
	contacts, _ := body["contacts"].([]any)
	if st != 200 || body["support_page"] != "https://cirrus.test/help" || len(contacts) != 2 ||
		contacts[0].(map[string]any)["matrix_id"] != "@admin:cirrus.test" || contacts[1].(map[string]any)["role"] != "m.role.security" {
		t.Fatalf("support: %d %v", st, body)
	}
	st, body, _ = do(t, env, "GET", "/_matrix/client/v3/voip/turnServer", alice.AccessToken, "")
	user, _ := body["username"].(string)
	mac := hmac.New(sha1.New, []byte("turn-secret"))
	mac.Write([]byte(user))
	if st != 200 || !strings.HasSuffix(user, ":"+string(alice.UserID)) || body["ttl"] != float64(3600) ||
		body["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || len(body["uris"].([]any)) != 2 {
		t.Fatalf("turnServer: %d %v", st, body)
	}
}

func TestRoomInitialSync(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "peek"})
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range []string{"one", "two", "three"} {
			if _, err := alice.SendText(ctx, room.RoomID, body); err != nil {
				t.Fatal(err)
			}
		}
		if err := alice.AddTag(ctx, room.RoomID, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room.RoomID)) + "/initialSync"
		st, body, _ := do(t, env, "GET", path, alice.AccessToken, "")
		if st != 200 || body["room_id"] != string(room.RoomID) || body["membership"] != "join" || body["visibility"] != "private" {
			t.Fatalf("initialSync: %d %v", st, body)
		}
		msgs := body["messages"].(map[string]any)
		chunk := msgs["chunk"].([]any)
		var texts []string
		for _, e := range chunk {
			if c, ok := e.(map[string]any)["content"].(map[string]any)["body"].(string); ok {
				texts = append(texts, c)
			}
		}
		if strings.Join(texts, ",") != "one,two,three" || msgs["end"] == nil {
			t.Fatalf("messages in order: %v (%v)", texts, msgs)
		}
		// The end token continues forward with /messages: nothing newer.
		st, later, _ := do(t, env, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room.RoomID))+"/messages?dir=f&from="+url.QueryEscape(msgs["end"].(string)), alice.AccessToken, "")
		if st != 200 || len(later["chunk"].([]any)) != 0 {
			t.Fatalf("after end: %d %v", st, later)
		}
		if len(body["state"].([]any)) < 5 {
			t.Fatalf("state: %v", body["state"])
		}
		ad := body["account_data"].([]any)
		if len(ad) != 1 || ad[0].(map[string]any)["type"] != "m.tag" {
			t.Fatalf("account_data: %v", ad)
		}
		runBadInput(t, env, []badInput{
			{"not a member", "GET", path, bob.AccessToken, "", 403, "M_FORBIDDEN"},
			{"bad room id", "GET", "/_matrix/client/v3/rooms/nope/initialSync", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"no token", "GET", path, "", "", 401, "M_MISSING_TOKEN"},
		})
	})
}
