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

// searchIDs runs a search and returns the result event ids in order.
func searchIDs(t *testing.T, c *mautrix.Client, req *mautrix.ReqSearch) ([]id.EventID, *mautrix.RespSearch) {
	t.Helper()
	resp, err := c.Search(context.Background(), req)
	if err != nil {
		t.Fatalf("search %q: %v", req.SearchTerm, err)
	}
	var out []id.EventID
	for _, r := range resp.Results {
		out = append(out, r.Event.ID)
	}
	return out, resp
}

// searchUntil repeats a search until ok holds (events are indexed by the
// fan-out worker, a moment after they are sent) and returns its answer.
func searchUntil(t *testing.T, c *mautrix.Client, req *mautrix.ReqSearch, ok func(ids []id.EventID, resp *mautrix.RespSearch) bool) ([]id.EventID, *mautrix.RespSearch) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ids, resp := searchIDs(t, c, req)
		if ok(ids, resp) {
			return ids, resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("search %q: still %v (count %d)", req.SearchTerm, ids, resp.Count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// has reports whether the results hold e.
func has(e id.EventID) func([]id.EventID, *mautrix.RespSearch) bool {
	return func(ids []id.EventID, _ *mautrix.RespSearch) bool { return slices.Contains(ids, e) }
}

func sameSet(a []id.EventID, b ...id.EventID) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func TestSearch(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Running club", Topic: "Weekly café meetups"})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		if _, err := bob.JoinRoomByID(ctx, r); err != nil {
			t.Fatal(err)
		}
		m1 := send(t, alice, r, event.EventMessage, text("run run run, run!"))
		m2 := send(t, bob, r, event.EventMessage, text("She runs every morning before work, then cycles home along the river with friends"))
		m3 := send(t, alice, r, event.EventMessage, text("Meet at the Café tonight"))
		m4 := send(t, bob, r, event.EventMessage, text("Nothing to see here"))
		body := []string{"content.body"}
		// The fan-out worker indexes in stream order: once m3 is found,
		// everything before it is indexed too.
		searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "cafe", Keys: body}, has(m3))

		t.Run("stemming", func(t *testing.T) {
			ids, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "running", Keys: body})
			if !sameSet(ids, m1, m2) || resp.Count != 2 {
				t.Fatalf("running: %v (count %d), want %s %s", ids, resp.Count, m1, m2)
			}
			for _, w := range []string{"running", "run", "runs"} {
				if !slices.Contains(resp.Highlights, w) {
					t.Errorf("highlights %q lack %q", resp.Highlights, w)
				}
			}
			// Without keys, the room's name is searched too.
			ids, _ = searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "RUNS"})
			if len(ids) != 3 || !slices.Contains(ids, m1) || !slices.Contains(ids, m2) {
				t.Fatalf("runs in all keys: %v", ids)
			}
			names, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "runs", Keys: []string{"content.name"}})
			if len(names) != 1 || slices.Contains(names, m1) {
				t.Fatalf("runs in names: %v", names)
			}
		})
		t.Run("accents", func(t *testing.T) {
			ids, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "cafe", Keys: body})
			if !slices.Equal(ids, []id.EventID{m3}) || !slices.Contains(resp.Highlights, "Café") {
				t.Fatalf("cafe: %v %q", ids, resp.Highlights)
			}
			topics, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "CAFÉ meetup", Keys: []string{"content.topic"}})
			if len(topics) != 1 {
				t.Fatalf("café meetup in topics: %v", topics)
			}
			// Every word must match.
			if ids, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "cafe running", Keys: body}); len(ids) != 0 {
				t.Fatalf("cafe AND running: %v", ids)
			}
		})
		t.Run("order", func(t *testing.T) {
			rank, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "run", Keys: body})
			if !slices.Equal(rank, []id.EventID{m1, m2}) || !(resp.Results[0].Rank > resp.Results[1].Rank) {
				t.Fatalf("rank order: %v", rank)
			}
			recent, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "run", Keys: body, OrderBy: "recent"})
			if !slices.Equal(recent, []id.EventID{m2, m1}) {
				t.Fatalf("recent order: %v", recent)
			}
		})
		t.Run("filter", func(t *testing.T) {
			ids, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "running", Filter: &mautrix.FilterPart{Senders: []id.UserID{bob.UserID}}})
			if !slices.Equal(ids, []id.EventID{m2}) {
				t.Fatalf("senders filter: %v", ids)
			}
			ids, _ = searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "running", Filter: &mautrix.FilterPart{NotRooms: []id.RoomID{r}}})
			if len(ids) != 0 {
				t.Fatalf("not_rooms filter: %v", ids)
			}
		})
		t.Run("not a member", func(t *testing.T) {
			ids, resp := searchIDs(t, carol, &mautrix.ReqSearch{SearchTerm: "running"})
			if len(ids) != 0 || resp.Count != 0 {
				t.Fatalf("carol sees %v (count %d)", ids, resp.Count)
			}
		})

		// A second room: pagination, groups.
		room2, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r2 := room2.RoomID
		var all []id.EventID
		for i := range 12 {
			c, rr := alice, r
			if i%3 == 0 {
				c, rr = bob, r2
			}
			all = append(all, send(t, c, rr, event.EventMessage, text(fmt.Sprintf("paginated message %d %s", i, repeat(" filler", i)))))
		}
		searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "paginate"}, func(_ []id.EventID, resp *mautrix.RespSearch) bool { return resp.Count == 12 })
		t.Run("pagination", func(t *testing.T) {
			for _, order := range []string{"rank", "recent"} {
				var got []id.EventID
				next, pages := "", 0
				for {
					pages++
					if pages > 10 {
						t.Fatal("pagination does not end")
					}
					ids, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "paginate", OrderBy: order, NextBatch: next, Filter: &mautrix.FilterPart{Limit: 5}})
					if len(ids) > 5 || resp.Count != 12 {
						t.Fatalf("%s page %d: %d results, count %d", order, pages, len(ids), resp.Count)
					}
					got = append(got, ids...)
					if next = resp.NextBatch; next == "" {
						break
					}
				}
				if pages != 3 || len(got) != 12 || !sameSet(got, all...) {
					t.Fatalf("%s: %d pages, %d results: %v", order, pages, len(got), got)
				}
				if order == "recent" {
					want := slices.Clone(all)
					slices.Reverse(want)
					if !slices.Equal(got, want) {
						t.Fatalf("recent pages out of order: %v", got)
					}
				}
			}
		})
		t.Run("groups", func(t *testing.T) {
			ids, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "paginate", OrderBy: "recent",
				Filter: &mautrix.FilterPart{Limit: 6}, Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}, {Key: "sender"}}}})
			byRoom, bySender := resp.Groups["room_id"], resp.Groups["sender"]
			if len(byRoom) != 2 || len(bySender) != 2 {
				t.Fatalf("groups %v", resp.Groups)
			}
			n := 0
			for _, g := range byRoom {
				n += len(g.Results)
				if g.NextBatch == "" || g.Order < 1 {
					t.Fatalf("group %+v", g)
				}
			}
			if n != len(ids) || len(bySender[string(bob.UserID)].Results) != 2 || len(bySender[string(alice.UserID)].Results) != 4 {
				t.Fatalf("groups %+v for %d results", resp.Groups, len(ids))
			}
			// A group's next_batch continues within the group.
			g := byRoom[string(r2)]
			more, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "paginate", OrderBy: "recent", NextBatch: g.NextBatch,
				Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}}}})
			want := []id.EventID{all[3], all[0]} // r2's older two (9 and 6 came first)
			if !slices.Equal(more, want) {
				t.Fatalf("more of r2: %v, want %v", more, want)
			}
		})
		t.Run("context and profiles", func(t *testing.T) {
			st, resp := doJSON(t, env, "POST", "/_matrix/client/v3/search", bob.AccessToken, map[string]any{
				"search_categories": map[string]any{"room_events": map[string]any{
					"search_term": "cafe", "keys": body, "include_state": true,
					"event_context": map[string]any{"before_limit": 1, "after_limit": 2, "include_profile": true},
				}}})
			if st != 200 {
				t.Fatalf("%d %v", st, resp)
			}
			re := resp["search_categories"].(map[string]any)["room_events"].(map[string]any)
			res := re["results"].([]any)[0].(map[string]any)
			c := res["context"].(map[string]any)
			evID := func(v any) id.EventID { return id.EventID(v.(map[string]any)["event_id"].(string)) }
			before, after := c["events_before"].([]any), c["events_after"].([]any)
			if len(before) != 1 || evID(before[0]) != m2 || len(after) != 2 || evID(after[0]) != m4 || evID(after[1]) != all[1] {
				t.Fatalf("context %v", c)
			}
			if c["start"] == "" || c["end"] == "" {
				t.Fatalf("context tokens %v", c)
			}
			profiles := c["profile_info"].(map[string]any)
			if p, _ := profiles[string(alice.UserID)].(map[string]any); p == nil || p["displayname"] != "Alice A." {
				t.Fatalf("profile_info %v", profiles)
			}
			if _, ok := profiles[string(bob.UserID)]; !ok {
				t.Fatalf("no profile for bob (sent the event before): %v", profiles)
			}
			// The context's tokens continue with /messages.
			msgs, err := bob.Messages(ctx, r, c["end"].(string), "", mautrix.DirectionForward, nil, 1)
			if err != nil || len(msgs.Chunk) != 1 || msgs.Chunk[0].ID != all[2] {
				t.Fatalf("after the context: %v %v", msgs, err)
			}
			state := re["state"].(map[string]any)[string(r)].([]any)
			found := false
			for _, e := range state {
				found = found || e.(map[string]any)["type"] == "m.room.name"
			}
			if !found {
				t.Fatalf("state of the room lacks its name: %v", state)
			}
		})
		t.Run("redaction", func(t *testing.T) {
			gone := send(t, alice, r, event.EventMessage, text("ephemeral banana bread"))
			searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "banana"}, has(gone))
			if _, err := alice.RedactEvent(ctx, r, gone); err != nil {
				t.Fatal(err)
			}
			// Gone from the results at once (checked when searching), and
			// from the index once the worker has handled the redaction.
			if ids, _ := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "banana"}); len(ids) != 0 {
				t.Fatalf("after redaction: %v", ids)
			}
			searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "banana"}, func(ids []id.EventID, resp *mautrix.RespSearch) bool {
				return len(ids) == 0 && resp.Count == 0
			})
		})
		t.Run("history visibility", func(t *testing.T) {
			dave := register(t, env, "dave", "pw")
			closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
				InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
			if err != nil {
				t.Fatal(err)
			}
			early := send(t, alice, closed.RoomID, event.EventMessage, text("zeppelin spotted early"))
			if _, err := dave.JoinRoomByID(ctx, closed.RoomID); err != nil {
				t.Fatal(err)
			}
			late := send(t, alice, closed.RoomID, event.EventMessage, text("zeppelin spotted late"))
			searchUntil(t, alice, &mautrix.ReqSearch{SearchTerm: "zeppelin"}, has(late))
			if ids, resp := searchIDs(t, dave, &mautrix.ReqSearch{SearchTerm: "zeppelin"}); !slices.Equal(ids, []id.EventID{late}) || resp.Count != 1 {
				t.Fatalf("dave sees %v (count %d), want only %s", ids, resp.Count, late)
			}
			if ids, _ := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "zeppelin", OrderBy: "recent"}); !slices.Equal(ids, []id.EventID{late, early}) {
				t.Fatalf("alice sees %v", ids)
			}
			// After leaving, what was said later is out of sight.
			if _, err := dave.LeaveRoom(ctx, closed.RoomID); err != nil {
				t.Fatal(err)
			}
			again := send(t, alice, closed.RoomID, event.EventMessage, text("zeppelin spotted again"))
			searchUntil(t, alice, &mautrix.ReqSearch{SearchTerm: "zeppelin"}, has(again))
			if ids, _ := searchIDs(t, dave, &mautrix.ReqSearch{SearchTerm: "zeppelin"}); !slices.Equal(ids, []id.EventID{late}) {
				t.Fatalf("dave after leaving sees %v", ids)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			p := "/_matrix/client/v3/search"
			tok := bob.AccessToken
			q := func(crit string) string { return `{"search_categories":{"room_events":` + crit + `}}` }
			runBadInput(t, env, []badInput{
				{"no token", "POST", p, "", q(`{"search_term":"x"}`), 401, "M_MISSING_TOKEN"},
				{"not json", "POST", p, tok, `nope`, 400, "M_NOT_JSON"},
				{"no categories", "POST", p, tok, `{}`, 400, "M_MISSING_PARAM"},
				{"unknown category", "POST", p, tok, `{"search_categories":{"rooms":{"search_term":"x"}}}`, 400, "M_INVALID_PARAM"},
				{"no search term", "POST", p, tok, q(`{}`), 400, "M_MISSING_PARAM"},
				{"search term not a string", "POST", p, tok, q(`{"search_term":5}`), 400, "M_BAD_JSON"},
				{"bad key", "POST", p, tok, q(`{"search_term":"x","keys":["content.msgtype"]}`), 400, "M_INVALID_PARAM"},
				{"bad order", "POST", p, tok, q(`{"search_term":"x","order_by":"oldest"}`), 400, "M_INVALID_PARAM"},
				{"filter not an object", "POST", p, tok, q(`{"search_term":"x","filter":"f"}`), 400, "M_BAD_JSON"},
				{"filter bad sender", "POST", p, tok, q(`{"search_term":"x","filter":{"senders":["bob"]}}`), 400, "M_INVALID_PARAM"},
				{"bad group", "POST", p, tok, q(`{"search_term":"x","groupings":{"group_by":[{"key":"type"}]}}`), 400, "M_INVALID_PARAM"},
				{"negative context", "POST", p, tok, q(`{"search_term":"x","event_context":{"before_limit":-1}}`), 400, "M_INVALID_PARAM"},
				{"bad next_batch", "POST", p + "?next_batch=garbage", tok, q(`{"search_term":"x"}`), 400, "M_INVALID_PARAM"},
			})
			// A next_batch of another search is refused too.
			_, resp := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "paginate", Filter: &mautrix.FilterPart{Limit: 2}})
			st, b, _ := do(t, env, "POST", p+"?next_batch="+url.QueryEscape(resp.NextBatch), tok, q(`{"search_term":"banana"}`))
			if st != 400 || b["errcode"] != "M_INVALID_PARAM" {
				t.Fatalf("foreign next_batch: %d %v", st, b)
			}
			// No category asked: nothing searched.
			st, b, _ = do(t, env, "POST", p, tok, `{"search_categories":{}}`)
			if st != 200 || len(b["search_categories"].(map[string]any)) != 0 {
				t.Fatalf("empty categories: %d %v", st, b)
			}
		})
	})
}

// TestSearchFederated: events from another server are indexed too (the
// fan-out worker handles remote events like local ones).
func TestSearchFederated(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 3)
	sent, err := alice.SendText(ctx, room, "a quokka waves from afar")
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "quokkas"}, has(sent.EventID))
	if len(ids) != 1 {
		t.Fatalf("bob finds %v", ids)
	}
	// The history fetched when bob joined is searchable on his server too.
	searchUntil(t, bob, &mautrix.ReqSearch{SearchTerm: "history"}, func(ids []id.EventID, _ *mautrix.RespSearch) bool { return len(ids) == 3 })
}
