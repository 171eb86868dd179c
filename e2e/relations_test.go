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

func send(t *testing.T, c *mautrix.Client, room id.RoomID, typ event.Type, content map[string]any) id.EventID {
	t.Helper()
	resp, err := c.SendMessageEvent(context.Background(), room, typ, content)
	if err != nil {
		t.Fatalf("send %s: %v", typ.Type, err)
	}
	return resp.EventID
}

func text(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func edit(of id.EventID, body string, withNewContent bool) map[string]any {
	c := text("* " + body)
	c["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": of}
	if withNewContent {
		c["m.new_content"] = text(body)
	}
	return c
}

func threadReply(root id.EventID, body string) map[string]any {
	c := text(body)
	c["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": root, "is_falling_back": true}
	return c
}

// rawEvent fetches an event as JSON.
func rawEvent(t *testing.T, env *testenv.Env, c *mautrix.Client, room id.RoomID, e id.EventID) map[string]any {
	t.Helper()
	st, body, _ := do(t, env, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/event/"+url.PathEscape(string(e)), c.AccessToken, "")
	if st != 200 {
		t.Fatalf("get event %s: %d %v", e, st, body)
	}
	return body
}

// relationsOf returns unsigned["m.relations"] of a JSON event.
func relationsOf(ev map[string]any) map[string]any {
	u, _ := ev["unsigned"].(map[string]any)
	r, _ := u["m.relations"].(map[string]any)
	return r
}

func eventIDs(evs []*event.Event) []id.EventID {
	out := []id.EventID{}
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestRelationsAndAggregations(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		root := send(t, alice, r, event.EventMessage, text("root"))

		// Edits: the most recent valid one is bundled; the content stays.
		edit1 := send(t, alice, r, event.EventMessage, edit(root, "v1", true))
		time.Sleep(3 * time.Millisecond)
		edit2 := send(t, alice, r, event.EventMessage, edit(root, "v2", true))
		time.Sleep(3 * time.Millisecond)
		foreign := send(t, bob, r, event.EventMessage, edit(root, "bob's", true))
		bad := send(t, alice, r, event.EventMessage, edit(root, "no new content", false))
		ev := rawEvent(t, env, carol, r, root)
		if ev["content"].(map[string]any)["body"] != "root" {
			t.Fatalf("original content replaced: %v", ev["content"])
		}
		rep, _ := relationsOf(ev)["m.replace"].(map[string]any)
		if rep == nil || rep["event_id"] != string(edit2) || rep["content"].(map[string]any)["m.new_content"].(map[string]any)["body"] != "v2" {
			t.Fatalf("m.replace bundle %v (want %s)", relationsOf(ev), edit2)
		}
		// An edit of an edit is not an edit.
		editOfEdit := send(t, alice, r, event.EventMessage, edit(edit1, "edit of edit", true))
		if rels := relationsOf(rawEvent(t, env, alice, r, edit1)); rels["m.replace"] != nil {
			t.Fatalf("edit of an edit bundled: %v", rels)
		}

		// Threads and references.
		t1 := send(t, bob, r, event.EventMessage, threadReply(root, "t1"))
		t2 := send(t, alice, r, event.EventMessage, threadReply(root, "t2"))
		t3 := send(t, bob, r, event.EventMessage, threadReply(root, "t3"))
		ref := send(t, carol, r, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "see above",
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})
		react := send(t, carol, r, event.EventReaction, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": t1, "key": "👍"}})
		check := func(c *mautrix.Client, count int, latest id.EventID, participated bool) {
			t.Helper()
			rels := relationsOf(rawEvent(t, env, c, r, root))
			th, _ := rels["m.thread"].(map[string]any)
			le, _ := th["latest_event"].(map[string]any)
			if th == nil || th["count"] != float64(count) || le["event_id"] != string(latest) || th["current_user_participated"] != participated {
				t.Fatalf("thread summary for %s: %v", c.UserID, rels)
			}
			refs, _ := rels["m.reference"].(map[string]any)
			if refs == nil || fmt.Sprint(refs["chunk"]) != fmt.Sprint([]any{map[string]any{"event_id": string(ref)}}) {
				t.Fatalf("references: %v", rels)
			}
		}
		check(alice, 3, t3, true) // the root's sender
		check(bob, 3, t3, true)   // replied
		check(carol, 3, t3, false)
		// A thread cannot start from an event that has a relation.
		if _, err := alice.SendMessageEvent(ctx, r, event.EventMessage, threadReply(t1, "nested")); errcode(err) != "M_UNKNOWN" || status(err) != 400 {
			t.Fatalf("thread off a thread reply: %v", err)
		}

		// /relations: every child, newest first, paged without gaps.
		all := []id.EventID{react, ref, t3, t2, t1, editOfEdit, bad, foreign, edit2, edit1}
		direct := slices.DeleteFunc(slices.Clone(all), func(e id.EventID) bool { return e == react || e == editOfEdit })
		var got []id.EventID
		from := ""
		for range 10 {
			resp, err := carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{Limit: 3, From: from})
			if err != nil {
				t.Fatal(err)
			}
			if resp.RecursionDepth != 0 {
				t.Fatalf("recursion_depth without recurse: %+v", resp)
			}
			got = append(got, eventIDs(resp.Chunk)...)
			if resp.NextBatch == "" {
				break
			}
			from = resp.NextBatch
		}
		if !slices.Equal(got, direct) {
			t.Fatalf("relations backward %v, want %v", got, direct)
		}
		resp, err := carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{Dir: mautrix.DirectionForward, Limit: 4})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), []id.EventID{edit1, edit2, foreign, bad}) || resp.NextBatch == "" {
			t.Fatalf("relations forward %v %v", eventIDs(resp.Chunk), err)
		}
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{Dir: mautrix.DirectionForward, From: resp.NextBatch, Limit: 2})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), []id.EventID{t1, t2}) || resp.PrevBatch == "" {
			t.Fatalf("relations forward, page 2: %v %+v %v", eventIDs(resp.Chunk), resp, err)
		}
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), []id.EventID{t3, t2, t1}) {
			t.Fatalf("thread relations %v %v", eventIDs(resp.Chunk), err)
		}
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, EventType: event.EventMessage})
		if err != nil || len(resp.Chunk) != 3 {
			t.Fatalf("thread relations of type m.room.message %v %v", eventIDs(resp.Chunk), err)
		}
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, EventType: event.EventReaction})
		if err != nil || len(resp.Chunk) != 0 {
			t.Fatalf("thread relations of type m.reaction %v %v", eventIDs(resp.Chunk), err)
		}
		// `to` stops the page: from the newest down to (not including) edit2.
		mid, err := carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{To: mid.NextBatch})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), direct[:7]) {
			t.Fatalf("relations to a token %v %v", eventIDs(resp.Chunk), err)
		}
		// Recursion reaches the reaction on a thread reply.
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{Recurse: true, Limit: 50})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), all) || resp.RecursionDepth != 3 {
			t.Fatalf("recursive relations %v depth %d %v", eventIDs(resp.Chunk), resp.RecursionDepth, err)
		}
		st, body, _ := do(t, env, "GET", "/_matrix/client/v1/rooms/"+string(r)+"/relations/"+string(root)+"?recurse=false", carol.AccessToken, "")
		if st != 200 || body["recursion_depth"] != float64(1) {
			t.Fatalf("recurse=false: %d %v", st, body)
		}

		// Redacting a thread reply takes it out of the thread.
		if _, err := bob.RedactEvent(ctx, r, t3); err != nil {
			t.Fatal(err)
		}
		check(carol, 2, t2, false)
		resp, err = carol.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{RelationType: event.RelThread})
		if err != nil || !slices.Equal(eventIDs(resp.Chunk), []id.EventID{t2, t1}) {
			t.Fatalf("thread relations after a redaction %v %v", eventIDs(resp.Chunk), err)
		}

		// Someone outside a room without world-readable history sees nothing.
		dave := register(t, env, "dave", "pw")
		if _, err := dave.GetRelations(ctx, r, root, &mautrix.ReqGetRelations{}); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("relations for an outsider: %v", err)
		}
	})
}

func TestThreadsList(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		if _, err := bob.JoinRoomByID(ctx, r); err != nil {
			t.Fatal(err)
		}
		threads := func(c *mautrix.Client, query string) ([]id.EventID, string) {
			t.Helper()
			st, body, _ := do(t, env, "GET", "/_matrix/client/v1/rooms/"+string(r)+"/threads?"+query, c.AccessToken, "")
			if st != 200 {
				t.Fatalf("threads %s: %d %v", query, st, body)
			}
			var ids []id.EventID
			for _, e := range body["chunk"].([]any) {
				em := e.(map[string]any)
				if relationsOf(em)["m.thread"] == nil {
					t.Fatalf("thread root without its summary: %v", em)
				}
				ids = append(ids, id.EventID(em["event_id"].(string)))
			}
			next, _ := body["next_batch"].(string)
			return ids, next
		}
		a := send(t, alice, r, event.EventMessage, text("thread A"))
		b := send(t, bob, r, event.EventMessage, text("thread B"))
		c := send(t, alice, r, event.EventMessage, text("thread C"))
		send(t, alice, r, event.EventMessage, text("not a thread"))
		send(t, alice, r, event.EventMessage, threadReply(a, "a1"))
		send(t, alice, r, event.EventMessage, threadReply(b, "b1"))
		send(t, alice, r, event.EventMessage, threadReply(c, "c1"))
		send(t, bob, r, event.EventMessage, threadReply(a, "a2")) // A is the most recently active now
		if ids, next := threads(bob, ""); !slices.Equal(ids, []id.EventID{a, c, b}) || next != "" {
			t.Fatalf("threads %v next %q", ids, next)
		}
		// Paging.
		ids, next := threads(bob, "limit=2")
		if !slices.Equal(ids, []id.EventID{a, c}) || next == "" {
			t.Fatalf("first page %v %q", ids, next)
		}
		if ids, next = threads(bob, "limit=2&from="+next); !slices.Equal(ids, []id.EventID{b}) || next != "" {
			t.Fatalf("second page %v %q", ids, next)
		}
		// Bob started B and replied in A.
		if ids, _ := threads(bob, "include=participated"); !slices.Equal(ids, []id.EventID{a, b}) {
			t.Fatalf("bob's threads %v", ids)
		}
		if ids, _ := threads(alice, "include=participated"); !slices.Equal(ids, []id.EventID{a, c, b}) {
			t.Fatalf("alice's threads %v", ids)
		}
	})
}

func TestRelationsBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		root := send(t, alice, room.RoomID, event.EventMessage, text("root"))
		base := "/_matrix/client/v1/rooms/" + string(room.RoomID)
		rel := base + "/relations/" + string(root)
		runBadInput(t, env, []badInput{
			{"relations without token", "GET", rel, "", "", 401, "M_MISSING_TOKEN"},
			{"relations bad room", "GET", "/_matrix/client/v1/rooms/nope/relations/" + string(root), tok, "", 400, "M_INVALID_PARAM"},
			{"relations unknown event", "GET", base + "/relations/$nope", tok, "", 404, "M_NOT_FOUND"},
			{"relations event of another room", "GET", "/_matrix/client/v1/rooms/!other:cirrus.test/relations/" + string(root), tok, "", 404, "M_NOT_FOUND"},
			{"relations bad dir", "GET", rel + "?dir=up", tok, "", 400, "M_INVALID_PARAM"},
			{"relations bad from", "GET", rel + "?from=yesterday", tok, "", 400, "M_INVALID_PARAM"},
			{"relations bad to", "GET", rel + "?to=t-1", tok, "", 400, "M_INVALID_PARAM"},
			{"relations bad limit", "GET", rel + "?limit=many", tok, "", 400, "M_INVALID_PARAM"},
			{"relations negative limit", "GET", rel + "?limit=-2", tok, "", 400, "M_INVALID_PARAM"},
			{"relations bad recurse", "GET", rel + "?recurse=yes", tok, "", 400, "M_INVALID_PARAM"},
			{"threads bad include", "GET", base + "/threads?include=mine", tok, "", 400, "M_INVALID_PARAM"},
			{"threads zero limit", "GET", base + "/threads?limit=0", tok, "", 400, "M_INVALID_PARAM"},
			{"threads bad from", "GET", base + "/threads?from=x1", tok, "", 400, "M_INVALID_PARAM"},
			{"threads unknown room", "GET", "/_matrix/client/v1/rooms/!nope:cirrus.test/threads", tok, "", 403, "M_FORBIDDEN"},
			{"threads bad room", "GET", "/_matrix/client/v1/rooms/nope/threads", tok, "", 400, "M_INVALID_PARAM"},
		})
	})
}
