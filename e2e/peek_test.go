package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// peekResult is one GET /events answer.
type peekResult struct {
	status  int
	body    map[string]any
	elapsed time.Duration
}

func peek(t *testing.T, env *testenv.Env, token string, room id.RoomID, from string, timeoutMS int) peekResult {
	t.Helper()
	q := url.Values{"room_id": {string(room)}, "timeout": {strconv.Itoa(timeoutMS)}}
	if from != "" {
		q.Set("from", from)
	}
	start := time.Now()
	st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/events?"+q.Encode(), token, "")
	return peekResult{st, body, time.Since(start)}
}

func chunkBodies(body map[string]any) []string {
	var out []string
	chunk, _ := body["chunk"].([]any)
	for _, e := range chunk {
		c, _ := e.(map[string]any)["content"].(map[string]any)
		if b, ok := c["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

func TestPeekEvents(t *testing.T) {
	forEachEngineWith(t, map[string]string{"CIRRUS_GUEST_ACCESS": "true"}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		public, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		send := func(room id.RoomID, body string) {
			t.Helper()
			if _, err := alice.SendText(ctx, room, body); err != nil {
				t.Fatal(err)
			}
		}
		send(public.RoomID, "before")

		// Nothing new, no wait: an empty chunk, end == start.
		r := peek(t, env, bob.AccessToken, public.RoomID, "", 0)
		if r.status != 200 || len(r.body["chunk"].([]any)) != 0 || r.body["start"] != r.body["end"] || r.body["end"] == nil {
			t.Fatalf("peek now: %d %v", r.status, r.body)
		}
		now := r.body["end"].(string)

		// Nothing new within the timeout: waits, then an empty chunk.
		r = peek(t, env, bob.AccessToken, public.RoomID, now, 700)
		if r.status != 200 || len(r.body["chunk"].([]any)) != 0 || r.body["end"] != now {
			t.Fatalf("peek timeout: %d %v", r.status, r.body)
		}
		if r.elapsed < 600*time.Millisecond {
			t.Fatalf("peek with timeout 700ms answered after %s", r.elapsed)
		}

		// A message sent while bob (not joined) waits wakes him.
		done := make(chan peekResult, 1)
		go func() { done <- peek(t, env, bob.AccessToken, public.RoomID, now, 20000) }()
		time.Sleep(300 * time.Millisecond)
		send(public.RoomID, "news")
		var got peekResult
		select {
		case got = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("the long-poll did not wake on the new message")
		}
		if got.status != 200 {
			t.Fatalf("peek long-poll: %d %v", got.status, got.body)
		}
		if b := chunkBodies(got.body); len(b) != 1 || b[0] != "news" {
			t.Fatalf("peek long-poll chunk = %v (%v)", b, got.body)
		}
		if got.elapsed > 10*time.Second || got.body["start"] != now || got.body["end"] == now {
			t.Fatalf("peek long-poll took %s, start %v end %v", got.elapsed, got.body["start"], got.body["end"])
		}
		chunk := got.body["chunk"].([]any)
		if ev := chunk[0].(map[string]any); ev["room_id"] != string(public.RoomID) || ev["sender"] != string(alice.UserID) || ev["event_id"] == nil {
			t.Fatalf("peeked event = %v", ev)
		}

		// The /messages tokens work as from: paging back over the two
		// messages gives the position before them, and peeking from there
		// gives both, in order.
		msgs, err := alice.Messages(ctx, public.RoomID, "", "", mautrix.DirectionBackward, nil, 2)
		if err != nil {
			t.Fatal(err)
		}
		r = peek(t, env, bob.AccessToken, public.RoomID, msgs.End, 0)
		if b := chunkBodies(r.body); r.status != 200 || len(b) != 2 || b[0] != "before" || b[1] != "news" {
			t.Fatalf("peek from a /messages token %s: %d %v", msgs.End, r.status, r.body)
		}

		// A guest may peek a world-readable room.
		st, reg, _ := do(t, env, http.MethodPost, "/_matrix/client/v3/register?kind=guest", "", `{}`)
		if st != 200 {
			t.Fatalf("guest registration: %d %v", st, reg)
		}
		guest := reg["access_token"].(string)
		if r := peek(t, env, guest, public.RoomID, now, 0); r.status != 200 || len(chunkBodies(r.body)) != 1 {
			t.Fatalf("guest peek: %d %v", r.status, r.body)
		}

		// Rooms that are not world readable, or do not exist: 403.
		for _, room := range []id.RoomID{private.RoomID, "!nothere:cirrus.test"} {
			for name, tok := range map[string]string{"bob": bob.AccessToken, "guest": guest} {
				if r := peek(t, env, tok, room, "", 0); r.status != 403 || r.body["errcode"] != "M_FORBIDDEN" {
					t.Errorf("%s peeking %s: %d %v, want 403 M_FORBIDDEN", name, room, r.status, r.body)
				}
			}
		}
		// Members may use it on their own non-world-readable rooms.
		send(private.RoomID, "secret")
		if r := peek(t, env, alice.AccessToken, private.RoomID, "t0", 0); r.status != 200 || len(chunkBodies(r.body)) != 1 {
			t.Fatalf("member on a private room: %d %v", r.status, r.body)
		}

		// Bad input.
		for _, tc := range []struct{ q, code string }{
			{"", "M_MISSING_PARAM"},
			{"room_id=nope", "M_INVALID_PARAM"},
			{"room_id=" + url.QueryEscape(string(public.RoomID)) + "&from=s12_3", "M_INVALID_PARAM"},
			{"room_id=" + url.QueryEscape(string(public.RoomID)) + "&timeout=soon", "M_INVALID_PARAM"},
		} {
			if st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/events?"+tc.q, bob.AccessToken, ""); st != 400 || body["errcode"] != tc.code {
				t.Errorf("GET /events?%s: %d %v, want 400 %s", tc.q, st, body, tc.code)
			}
		}
		if st, body, _ := do(t, env, http.MethodGet, "/_matrix/client/v3/events?room_id="+url.QueryEscape(string(public.RoomID)), "", ""); st != 401 {
			t.Errorf("anonymous peek: %d %v", st, body)
		}
	})
}
