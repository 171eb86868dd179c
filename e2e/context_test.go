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

func bodies(evs []*event.Event) []string {
	out := []string{}
	for _, e := range evs {
		if b, ok := e.Content.Raw["body"].(string); ok {
			out = append(out, b)
		} else {
			out = append(out, e.Type.Type)
		}
	}
	return out
}

func TestEventContext(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "before"})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		if _, err := bob.JoinRoomByID(ctx, r); err != nil {
			t.Fatal(err)
		}
		ids := map[string]id.EventID{}
		for i := range 10 {
			c := alice
			if i == 2 {
				c = bob
			}
			b := fmt.Sprintf("m%d", i)
			ids[b] = send(t, c, r, event.EventMessage, text(b))
			if i == 7 {
				if _, err := alice.SendStateEvent(ctx, r, event.StateRoomName, "", map[string]string{"name": "after"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		onlyMessages := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}
		resp, err := bob.Context(ctx, r, ids["m5"], onlyMessages, 4)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Event.ID != ids["m5"] || !slices.Equal(bodies(resp.EventsBefore), []string{"m4", "m3"}) || !slices.Equal(bodies(resp.EventsAfter), []string{"m6", "m7"}) {
			t.Fatalf("context %v / %s / %v", bodies(resp.EventsBefore), resp.Event.ID, bodies(resp.EventsAfter))
		}
		// The tokens continue with /messages without a gap or a repeat.
		back, err := bob.Messages(ctx, r, resp.Start, "", mautrix.DirectionBackward, onlyMessages, 3)
		if err != nil || !slices.Equal(bodies(back.Chunk), []string{"m2", "m1", "m0"}) {
			t.Fatalf("messages before the context: %v %v", bodies(back.Chunk), err)
		}
		fwd, err := bob.Messages(ctx, r, resp.End, "", mautrix.DirectionForward, onlyMessages, 5)
		if err != nil || !slices.Equal(bodies(fwd.Chunk), []string{"m8", "m9"}) {
			t.Fatalf("messages after the context: %v %v", bodies(fwd.Chunk), err)
		}
		// The state is the state at the last event returned, filtered too.
		stateName := func(state []*event.Event) string {
			for _, e := range state {
				if e.Type == event.StateRoomName {
					return e.Content.Raw["name"].(string)
				}
			}
			return ""
		}
		if n := stateName(resp.State); n != "" {
			t.Fatalf("state not filtered: %v", resp.State)
		}
		resp, err = bob.Context(ctx, r, ids["m5"], nil, 4)
		if err != nil || stateName(resp.State) != "before" || len(resp.EventsBefore)+len(resp.EventsAfter) != 4 {
			t.Fatalf("state at m7: %q, %v", stateName(resp.State), err)
		}
		resp, err = bob.Context(ctx, r, ids["m7"], nil, 4)
		if err != nil || stateName(resp.State) != "after" || resp.EventsAfter[0].Type != event.StateRoomName {
			t.Fatalf("state after the rename: %q %v %v", stateName(resp.State), bodies(resp.EventsAfter), err)
		}
		// Lazy loading: only the members who sent something returned.
		lazy := &mautrix.FilterPart{Types: []event.Type{event.EventMessage, event.StateMember}, LazyLoadMembers: true}
		members := func(resp *mautrix.RespContext) []string {
			var out []string
			for _, e := range resp.State {
				if e.Type == event.StateMember {
					out = append(out, *e.StateKey)
				}
			}
			slices.Sort(out)
			return out
		}
		resp, err = bob.Context(ctx, r, ids["m6"], lazy, 2)
		if err != nil || !slices.Equal(members(resp), []string{string(alice.UserID)}) {
			t.Fatalf("lazy members around m6: %v %v", members(resp), err)
		}
		resp, err = bob.Context(ctx, r, ids["m3"], lazy, 2)
		if err != nil || !slices.Equal(members(resp), []string{string(alice.UserID), string(bob.UserID)}) {
			t.Fatalf("lazy members around m3: %v %v", members(resp), err)
		}
		// limit=0: the event alone.
		st, body, _ := do(t, env, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(r))+"/context/"+url.PathEscape(string(ids["m1"]))+"?limit=0", bob.AccessToken, "")
		if st != 200 || len(body["events_before"].([]any)) != 0 || len(body["events_after"].([]any)) != 0 || body["event"] == nil {
			t.Fatalf("limit 0: %d %v", st, body)
		}
		// Near the start of the room, start points before everything.
		resp, err = bob.Context(ctx, r, ids["m0"], nil, 100)
		if err != nil || resp.EventsBefore[len(resp.EventsBefore)-1].Type != event.StateCreate || resp.Start != "t0" {
			t.Fatalf("context at the start: %v %q %v", bodies(resp.EventsBefore), resp.Start, err)
		}
		// Outsiders of a room with shared history see nothing.
		carol := register(t, env, "carol", "pw")
		if _, err := carol.Context(ctx, r, ids["m1"], nil, 2); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("context for an outsider: %v", err)
		}
	})
}

func TestTimestampToEvent(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		r := room.RoomID
		m0 := send(t, alice, r, event.EventMessage, text("m0"))
		time.Sleep(20 * time.Millisecond)
		between := time.Now()
		time.Sleep(20 * time.Millisecond)
		m1 := send(t, alice, r, event.EventMessage, text("m1"))
		ev1, err := alice.GetEvent(ctx, r, m1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := alice.TimestampToEvent(ctx, r, between, mautrix.DirectionForward)
		if err != nil || got.EventID != m1 || got.Timestamp.UnixMilli() != ev1.Timestamp {
			t.Fatalf("forward from between: %+v %v", got, err)
		}
		if got, err = alice.TimestampToEvent(ctx, r, between, mautrix.DirectionBackward); err != nil || got.EventID != m0 {
			t.Fatalf("backward from between: %+v %v", got, err)
		}
		// An exact timestamp matches in both directions.
		exact := time.UnixMilli(ev1.Timestamp)
		for _, d := range []mautrix.Direction{mautrix.DirectionForward, mautrix.DirectionBackward} {
			if got, err = alice.TimestampToEvent(ctx, r, exact, d); err != nil || got.EventID != m1 {
				t.Fatalf("exact %c: %+v %v", d, got, err)
			}
		}
		if _, err := alice.TimestampToEvent(ctx, r, time.Now().Add(time.Hour), mautrix.DirectionForward); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("nothing after: %v", err)
		}
		if _, err := alice.TimestampToEvent(ctx, r, time.UnixMilli(1), mautrix.DirectionBackward); errcode(err) != "M_NOT_FOUND" {
			t.Fatalf("nothing before: %v", err)
		}
		first, err := alice.TimestampToEvent(ctx, r, time.UnixMilli(1), mautrix.DirectionForward)
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := alice.GetEvent(ctx, r, first.EventID); err != nil || ev.Type != event.StateCreate {
			t.Fatalf("the first event is the create event: %+v %v", ev, err)
		}
		bob := register(t, env, "bob", "pw")
		if _, err := bob.TimestampToEvent(ctx, r, between, mautrix.DirectionForward); errcode(err) != "M_FORBIDDEN" {
			t.Fatalf("outsider: %v", err)
		}
	})
}

func TestContextBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		tok := alice.AccessToken
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		e := send(t, alice, room.RoomID, event.EventMessage, text("x"))
		cx := "/_matrix/client/v3/rooms/" + string(room.RoomID) + "/context/" + string(e)
		ts := "/_matrix/client/v1/rooms/" + string(room.RoomID) + "/timestamp_to_event"
		runBadInput(t, env, []badInput{
			{"context without token", "GET", cx, "", "", 401, "M_MISSING_TOKEN"},
			{"context bad limit", "GET", cx + "?limit=lots", tok, "", 400, "M_INVALID_PARAM"},
			{"context negative limit", "GET", cx + "?limit=-1", tok, "", 400, "M_INVALID_PARAM"},
			{"context bad filter", "GET", cx + "?filter=%7Bnope", tok, "", 400, "M_INVALID_PARAM"},
			{"context unknown event", "GET", "/_matrix/client/v3/rooms/" + string(room.RoomID) + "/context/$nope", tok, "", 404, "M_NOT_FOUND"},
			{"context event of another room", "GET", "/_matrix/client/v3/rooms/" + string(other.RoomID) + "/context/" + string(e), tok, "", 404, "M_NOT_FOUND"},
			{"context bad room", "GET", "/_matrix/client/v3/rooms/nope/context/" + string(e), tok, "", 400, "M_INVALID_PARAM"},
			{"timestamp without ts", "GET", ts + "?dir=f", tok, "", 400, "M_MISSING_PARAM"},
			{"timestamp bad ts", "GET", ts + "?dir=f&ts=noon", tok, "", 400, "M_INVALID_PARAM"},
			{"timestamp without dir", "GET", ts + "?ts=5", tok, "", 400, "M_MISSING_PARAM"},
			{"timestamp bad dir", "GET", ts + "?ts=5&dir=x", tok, "", 400, "M_INVALID_PARAM"},
			{"timestamp unknown room", "GET", "/_matrix/client/v1/rooms/!nope:cirrus.test/timestamp_to_event?ts=5&dir=f", tok, "", 403, "M_FORBIDDEN"},
		})
	})
}
