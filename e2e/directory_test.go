package e2e

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// eventually polls f until it holds: the secondary index behind the room
// directory is eventually consistent on DynamoDB.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAliases(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Aliased"})
		if err != nil {
			t.Fatal(err)
		}
		const cheese = id.RoomAlias("#cheese:cirrus.test")
		if _, err := alice.CreateAlias(ctx, cheese, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateAlias(ctx, cheese, room.RoomID); errcode(err) != "M_UNKNOWN" || status(err) != 409 {
			t.Fatalf("alias taken: %v", err)
		}
		// Only members may point aliases at a room.
		if _, err := bob.CreateAlias(ctx, "#bobs:cirrus.test", room.RoomID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("alias by a non-member: %v", err)
		}
		res, err := newClient(t, env).ResolveAlias(ctx, cheese)
		if err != nil || res.RoomID != room.RoomID || !slices.Contains(res.Servers, "cirrus.test") {
			t.Fatalf("resolve (no token): %+v %v", res, err)
		}
		if _, err := bob.GetAliases(ctx, room.RoomID); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("aliases for a non-member: %v", err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.CreateAlias(ctx, "#bobs:cirrus.test", room.RoomID); err != nil {
			t.Fatal(err)
		}
		list, err := bob.GetAliases(ctx, room.RoomID)
		if err != nil || len(list.Aliases) != 2 || !slices.Contains(list.Aliases, cheese) {
			t.Fatalf("aliases %+v %v", list, err)
		}
		// Bob (power 0) may not delete Alice's alias; Carol may not delete
		// Bob's; Bob may delete his own; Alice (power 100) may delete any.
		if _, err := bob.DeleteAlias(ctx, cheese); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("delete by a stranger to the alias: %v", err)
		}
		if _, err := carol.DeleteAlias(ctx, "#bobs:cirrus.test"); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("delete by carol: %v", err)
		}
		if _, err := bob.DeleteAlias(ctx, "#bobs:cirrus.test"); err != nil {
			t.Fatalf("delete own alias: %v", err)
		}
		if _, err := bob.ResolveAlias(ctx, "#bobs:cirrus.test"); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("deleted alias resolves: %v", err)
		}
		if _, err := bob.CreateAlias(ctx, "#bobs2:cirrus.test", room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.DeleteAlias(ctx, "#bobs2:cirrus.test"); err != nil {
			t.Fatalf("moderator deletes: %v", err)
		}
		// Deleting the canonical alias updates m.room.canonical_alias.
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateCanonicalAlias, "", map[string]any{"alias": cheese}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.DeleteAlias(ctx, cheese); err != nil {
			t.Fatal(err)
		}
		var ca map[string]any
		if err := alice.StateEvent(ctx, room.RoomID, event.StateCanonicalAlias, "", &ca); err != nil || ca["alias"] != nil {
			t.Fatalf("canonical alias after deleting it: %v %v", ca, err)
		}
		list, err = alice.GetAliases(ctx, room.RoomID)
		if err != nil || len(list.Aliases) != 0 {
			t.Fatalf("aliases left: %+v %v", list, err)
		}
		// A world-readable room's aliases are for anyone.
		if _, err := alice.CreateAlias(ctx, "#open:cirrus.test", room.RoomID); err != nil {
			t.Fatal(err)
		}
		dave := register(t, env, "dave", "pw")
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateHistoryVisibility, "", map[string]string{"history_visibility": "world_readable"}); err != nil {
			t.Fatal(err)
		}
		if list, err := dave.GetAliases(ctx, room.RoomID); err != nil || len(list.Aliases) != 1 {
			t.Fatalf("world-readable aliases: %+v %v", list, err)
		}
	})
}

func getVisibility(t *testing.T, env *testenv.Env, room id.RoomID) string {
	t.Helper()
	st, body, _ := do(t, env, "GET", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(string(room)), "", "")
	if st != 200 {
		t.Fatalf("directory visibility: %d %v", st, body)
	}
	v, _ := body["visibility"].(string)
	return v
}

func setVisibility(t *testing.T, env *testenv.Env, token string, room id.RoomID, v string) (int, map[string]any) {
	t.Helper()
	return doJSON(t, env, "PUT", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(string(room)), token, map[string]string{"visibility": v})
}

func publicRoomIDs(resp *mautrix.RespPublicRooms) []id.RoomID {
	var out []id.RoomID
	for _, r := range resp.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

func TestPublicRoomDirectory(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		anon := newClient(t, env)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Cheese Lovers",
			Topic: "All things dairy", RoomAliasName: "cheese"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if v := getVisibility(t, env, room.RoomID); v != "private" {
			t.Fatalf("visibility %q", v)
		}
		if st, body := setVisibility(t, env, bob.AccessToken, room.RoomID, "public"); st != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("publish by power 0: %d %v", st, body)
		}
		if st, body := setVisibility(t, env, alice.AccessToken, room.RoomID, "public"); st != 200 {
			t.Fatalf("publish: %d %v", st, body)
		}
		if v := getVisibility(t, env, room.RoomID); v != "public" {
			t.Fatalf("visibility after publishing %q", v)
		}
		var entry *mautrix.PublicRoomInfo
		eventually(t, "the room in /publicRooms", func() bool {
			resp, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Chunk {
				if r.RoomID == room.RoomID {
					entry = r
				}
			}
			return entry != nil
		})
		if entry.Name != "Cheese Lovers" || entry.Topic != "All things dairy" || entry.CanonicalAlias != "#cheese:cirrus.test" ||
			entry.NumJoinedMembers != 2 || entry.WorldReadable || entry.GuestCanJoin || entry.JoinRule != "public" || entry.RoomType != "" {
			t.Fatalf("directory entry %+v", entry)
		}

		// More rooms: visibility in createRoom, a space, and paging.
		want := []id.RoomID{room.RoomID}
		for i := range 4 {
			r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: fmt.Sprintf("room %d", i)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, r.RoomID)
		}
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "A space",
			CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, space.RoomID)
		slices.Sort(want)
		eventually(t, "all rooms in the directory", func() bool {
			resp, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
			return err == nil && len(resp.Chunk) == len(want)
		})
		var got []id.RoomID
		since, pages := "", 0
		var pageTokens []string
		for {
			resp, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2, Since: since})
			if err != nil {
				t.Fatal(err)
			}
			if resp.TotalRoomCountEstimate != len(want) || len(resp.Chunk) > 2 {
				t.Fatalf("page %+v", resp)
			}
			if pages > 0 && resp.PrevBatch == "" {
				t.Fatalf("page %d has no prev_batch", pages)
			}
			got = append(got, publicRoomIDs(resp)...)
			pageTokens = append(pageTokens, since)
			pages++
			if resp.NextBatch == "" || pages > 10 {
				break
			}
			since = resp.NextBatch
		}
		if !slices.Equal(got, want) || pages != 3 {
			t.Fatalf("paged %v in %d pages, want %v", got, pages, want)
		}
		// prev_batch of the last page gives the page before it.
		last, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2, Since: pageTokens[2]})
		if err != nil {
			t.Fatal(err)
		}
		prev, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2, Since: last.PrevBatch})
		if err != nil || !slices.Equal(publicRoomIDs(prev), want[2:4]) || prev.NextBatch == "" || prev.PrevBatch == "" {
			t.Fatalf("previous page %+v %v, want %v", prev, err, want[2:4])
		}

		// Filters (POST).
		post := func(body map[string]any) (int, map[string]any) {
			return doJSON(t, env, "POST", "/_matrix/client/v3/publicRooms", alice.AccessToken, body)
		}
		chunkIDs := func(body map[string]any) []string {
			var out []string
			ch, _ := body["chunk"].([]any)
			for _, c := range ch {
				out = append(out, c.(map[string]any)["room_id"].(string))
			}
			return out
		}
		st, body := post(map[string]any{"filter": map[string]any{"generic_search_term": "DAIRY"}})
		if ids := chunkIDs(body); st != 200 || len(ids) != 1 || ids[0] != string(room.RoomID) {
			t.Fatalf("search by topic: %d %v", st, body)
		}
		st, body = post(map[string]any{"filter": map[string]any{"generic_search_term": "#cheese"}})
		if ids := chunkIDs(body); st != 200 || len(ids) != 1 {
			t.Fatalf("search by alias: %d %v", st, body)
		}
		st, body = post(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})
		if ids := chunkIDs(body); st != 200 || len(ids) != 1 || ids[0] != string(space.RoomID) {
			t.Fatalf("spaces: %d %v", st, body)
		}
		if ch := body["chunk"].([]any); ch[0].(map[string]any)["room_type"] != "m.space" {
			t.Fatalf("room_type: %v", ch)
		}
		st, body = post(map[string]any{"filter": map[string]any{"room_types": []any{nil}}, "limit": 3})
		if ids := chunkIDs(body); st != 200 || len(ids) != 3 || body["next_batch"] == nil {
			t.Fatalf("rooms without type, limit 3: %d %v", st, body)
		}
		st, body = post(map[string]any{"filter": map[string]any{"room_types": []any{nil}}, "since": body["next_batch"]})
		if ids := chunkIDs(body); st != 200 || len(ids) != 2 || body["next_batch"] != nil {
			t.Fatalf("second page of rooms without type: %d %v", st, body)
		}
		st, body = post(map[string]any{"third_party_instance_id": "irc"})
		if ids := chunkIDs(body); st != 200 || len(ids) != 0 {
			t.Fatalf("third-party network: %d %v", st, body)
		}
		st, body = post(map[string]any{"include_all_networks": true})
		if ids := chunkIDs(body); st != 200 || len(ids) != len(want) {
			t.Fatalf("all networks: %d %v", st, body)
		}

		// Unpublishing takes the room out at once (checked against the
		// strongly consistent directory item, whatever the index says).
		if st, body := setVisibility(t, env, alice.AccessToken, room.RoomID, "private"); st != 200 {
			t.Fatalf("unpublish: %d %v", st, body)
		}
		resp, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil || slices.Contains(publicRoomIDs(resp), room.RoomID) {
			t.Fatalf("unpublished room listed: %v %v", publicRoomIDs(resp), err)
		}
	})
}

func TestDirectoryBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "here"})
		if err != nil {
			t.Fatal(err)
		}
		r := url.PathEscape(string(room.RoomID))
		const dir = "/_matrix/client/v3/directory/room/"
		runBadInput(t, env, []badInput{
			{"alias without colon", "GET", dir + "%23nocolon", "", "", 400, "M_INVALID_PARAM"},
			{"alias without hash", "GET", dir + "plain:cirrus.test", "", "", 400, "M_INVALID_PARAM"},
			{"unknown alias", "GET", dir + "%23nope:cirrus.test", "", "", 404, "M_NOT_FOUND"},
			{"set without token", "PUT", dir + "%23a:cirrus.test", "", `{"room_id":"` + string(room.RoomID) + `"}`, 401, "M_MISSING_TOKEN"},
			{"set without room_id", "PUT", dir + "%23a:cirrus.test", tok, `{}`, 400, "M_MISSING_PARAM"},
			{"set bad room_id", "PUT", dir + "%23a:cirrus.test", tok, `{"room_id":"nope"}`, 400, "M_INVALID_PARAM"},
			{"set room_id wrong type", "PUT", dir + "%23a:cirrus.test", tok, `{"room_id":5}`, 400, "M_BAD_JSON"},
			{"set not json", "PUT", dir + "%23a:cirrus.test", tok, `room`, 400, "M_NOT_JSON"},
			{"set remote alias", "PUT", dir + "%23a:elsewhere.example", tok, `{"room_id":"` + string(room.RoomID) + `"}`, 400, "M_INVALID_PARAM"},
			{"set unknown room", "PUT", dir + "%23a:cirrus.test", tok, `{"room_id":"!nope:cirrus.test"}`, 404, "M_NOT_FOUND"},
			{"set taken", "PUT", dir + "%23here:cirrus.test", tok, `{"room_id":"` + string(room.RoomID) + `"}`, 409, "M_UNKNOWN"},
			{"delete unknown", "DELETE", dir + "%23nope:cirrus.test", tok, "", 404, "M_NOT_FOUND"},
			{"delete remote", "DELETE", dir + "%23x:elsewhere.example", tok, "", 400, "M_INVALID_PARAM"},
			{"aliases bad room", "GET", "/_matrix/client/v3/rooms/nope/aliases", tok, "", 400, "M_INVALID_PARAM"},
			{"aliases unknown room", "GET", "/_matrix/client/v3/rooms/!nope:cirrus.test/aliases", tok, "", 403, "M_FORBIDDEN"},
			{"visibility unknown room", "GET", "/_matrix/client/v3/directory/list/room/!nope:cirrus.test", "", "", 404, "M_NOT_FOUND"},
			{"visibility bad room", "GET", "/_matrix/client/v3/directory/list/room/nope", "", "", 400, "M_INVALID_PARAM"},
			{"set visibility bad value", "PUT", "/_matrix/client/v3/directory/list/room/" + r, tok, `{"visibility":"secret"}`, 400, "M_INVALID_PARAM"},
			{"set visibility wrong type", "PUT", "/_matrix/client/v3/directory/list/room/" + r, tok, `{"visibility":1}`, 400, "M_BAD_JSON"},
			{"set visibility unknown room", "PUT", "/_matrix/client/v3/directory/list/room/!nope:cirrus.test", tok, `{"visibility":"public"}`, 404, "M_NOT_FOUND"},
			{"public rooms negative limit", "GET", "/_matrix/client/v3/publicRooms?limit=-1", "", "", 400, "M_INVALID_PARAM"},
			{"public rooms bad limit", "GET", "/_matrix/client/v3/publicRooms?limit=ten", "", "", 400, "M_INVALID_PARAM"},
			{"public rooms bad since", "GET", "/_matrix/client/v3/publicRooms?since=garbage", "", "", 400, "M_INVALID_PARAM"},
			{"public rooms bad networks flag", "GET", "/_matrix/client/v3/publicRooms?include_all_networks=maybe", "", "", 400, "M_INVALID_PARAM"},
			{"public rooms bad server name", "GET", "/_matrix/client/v3/publicRooms?server=not%20a%20server", "", "", 400, "M_INVALID_PARAM"},
			// .invalid never resolves (RFC 2606): the remote directory cannot be reached.
			{"public rooms unreachable server", "GET", "/_matrix/client/v3/publicRooms?server=elsewhere.invalid", "", "", 502, "M_UNKNOWN"},
			{"post without token", "POST", "/_matrix/client/v3/publicRooms", "", `{}`, 401, "M_MISSING_TOKEN"},
			{"post limit wrong type", "POST", "/_matrix/client/v3/publicRooms", tok, `{"limit":"ten"}`, 400, "M_BAD_JSON"},
			{"post negative limit", "POST", "/_matrix/client/v3/publicRooms", tok, `{"limit":-3}`, 400, "M_INVALID_PARAM"},
			{"post filter wrong type", "POST", "/_matrix/client/v3/publicRooms", tok, `{"filter":"cheese"}`, 400, "M_BAD_JSON"},
			{"post room_types wrong type", "POST", "/_matrix/client/v3/publicRooms", tok, `{"filter":{"room_types":"m.space"}}`, 400, "M_BAD_JSON"},
			{"post networks and instance", "POST", "/_matrix/client/v3/publicRooms", tok, `{"include_all_networks":true,"third_party_instance_id":"irc"}`, 400, "M_INVALID_PARAM"},
			{"post bad since", "POST", "/_matrix/client/v3/publicRooms", tok, `{"since":"n!!!"}`, 400, "M_INVALID_PARAM"},
		})
	})
}
