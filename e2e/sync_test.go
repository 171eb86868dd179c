package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// syncResp is the part of a /sync answer the tests look at, decoded
// without mautrix's own interpretation.
type syncResp struct {
	NextBatch   string         `json:"next_batch"`
	AccountData syncEvents     `json:"account_data"`
	ToDevice    syncEvents     `json:"to_device"`
	Rooms       syncRooms      `json:"rooms"`
	Raw         map[string]any `json:"-"`
}

type syncEvents struct {
	Events []syncEvent `json:"events"`
}

type syncEvent struct {
	Type     string         `json:"type"`
	EventID  id.EventID     `json:"event_id"`
	Sender   id.UserID      `json:"sender"`
	StateKey *string        `json:"state_key"`
	Content  map[string]any `json:"content"`
	RoomID   id.RoomID      `json:"room_id"`
	Unsigned map[string]any `json:"unsigned"`
}

type syncRooms struct {
	Join   map[id.RoomID]*syncJoined `json:"join"`
	Invite map[id.RoomID]*struct {
		InviteState syncEvents `json:"invite_state"`
	} `json:"invite"`
	Knock map[id.RoomID]*struct {
		KnockState syncEvents `json:"knock_state"`
	} `json:"knock"`
	Leave map[id.RoomID]*syncJoined `json:"leave"`
}

type syncJoined struct {
	Summary  map[string]any `json:"summary"`
	State    syncEvents     `json:"state"`
	Timeline struct {
		Events    []syncEvent `json:"events"`
		Limited   bool        `json:"limited"`
		PrevBatch string      `json:"prev_batch"`
	} `json:"timeline"`
	Ephemeral   syncEvents `json:"ephemeral"`
	AccountData syncEvents `json:"account_data"`
	Unread      *struct {
		Highlight    int `json:"highlight_count"`
		Notification int `json:"notification_count"`
	} `json:"unread_notifications"`
}

// doSync calls /sync with raw query parameters.
func doSync(t *testing.T, env *testenv.Env, c *mautrix.Client, params map[string]string) *syncResp {
	t.Helper()
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	st, body, raw := doRaw(t, env, "GET", "/_matrix/client/v3/sync?"+q.Encode(), c.AccessToken, "")
	if st != 200 {
		t.Fatalf("sync %v: %d %s", params, st, raw)
	}
	var r syncResp
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("sync answer %s: %v", raw, err)
	}
	r.Raw = body
	if r.NextBatch == "" {
		t.Fatalf("sync answer without next_batch: %s", raw)
	}
	return &r
}

// doRaw is do that also returns the raw body (and tolerates non-objects).
func doRaw(t *testing.T, env *testenv.Env, method, path, token, body string) (int, map[string]any, []byte) {
	t.Helper()
	status, _, raw := sendRaw(t, env, method, path, token, body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return status, out, raw
}

func msgBodies(evs []syncEvent) []string {
	var out []string
	for _, e := range evs {
		if b, ok := e.Content["body"].(string); ok && e.Type == "m.room.message" {
			out = append(out, b)
		}
	}
	return out
}

func hasState(evs []syncEvent, typ, key string) *syncEvent {
	for i, e := range evs {
		if e.Type == typ && e.StateKey != nil && *e.StateKey == key {
			return &evs[i]
		}
	}
	return nil
}

func sendText(t *testing.T, c *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

func TestSyncInitialAndIncremental(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Chat", Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 12 {
			sendText(t, alice, room.RoomID, fmt.Sprintf("m%d", i))
			if i >= 2 {
				want = append(want, fmt.Sprintf("m%d", i))
			}
		}

		// Alice's initial sync: the last 10 events (the default limit), a
		// limited timeline, and the state at its start.
		a0 := doSync(t, env, alice, nil)
		jr := a0.Rooms.Join[room.RoomID]
		if jr == nil {
			t.Fatalf("room missing from initial sync: %v", a0.Raw)
		}
		if got := msgBodies(jr.Timeline.Events); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("initial timeline bodies %v", got)
		}
		if !strings.HasPrefix(jr.Timeline.PrevBatch, "t") {
			t.Fatalf("prev_batch %q", jr.Timeline.PrevBatch)
		}
		if jr.Summary["m.joined_member_count"] != float64(1) || jr.Unread == nil {
			t.Fatalf("summary %v unread %v", jr.Summary, jr.Unread)
		}
		if len(jr.Timeline.Events) != 10 || !jr.Timeline.Limited || hasState(jr.State.Events, "m.room.create", "") == nil ||
			hasState(jr.State.Events, "m.room.name", "") == nil || hasState(jr.State.Events, "m.room.member", string(alice.UserID)) == nil {
			t.Fatalf("timeline %d limited %v, state %d", len(jr.Timeline.Events), jr.Timeline.Limited, len(jr.State.Events))
		}

		// Nothing new: an incremental sync is empty and keeps the token.
		a1 := doSync(t, env, alice, map[string]string{"since": a0.NextBatch})
		if len(a1.Rooms.Join) != 0 {
			t.Fatalf("empty incremental sync has rooms: %v", a1.Raw)
		}

		// Bob is invited: an invite with stripped state.
		b0 := doSync(t, env, bob, nil)
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		b1 := doSync(t, env, bob, map[string]string{"since": b0.NextBatch})
		inv := b1.Rooms.Invite[room.RoomID]
		if inv == nil {
			t.Fatalf("no invite: %v", b1.Raw)
		}
		if hasState(inv.InviteState.Events, "m.room.create", "") == nil || hasState(inv.InviteState.Events, "m.room.name", "") == nil ||
			hasState(inv.InviteState.Events, "m.room.member", string(bob.UserID)) == nil {
			t.Fatalf("invite_state %+v", inv.InviteState.Events)
		}
		for _, e := range inv.InviteState.Events {
			if e.EventID != "" {
				t.Fatalf("stripped state event with an event id: %+v", e)
			}
		}

		// Bob joins: the room arrives with its full state.
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		b2 := doSync(t, env, bob, map[string]string{"since": b1.NextBatch})
		jb := b2.Rooms.Join[room.RoomID]
		if jb == nil || len(b2.Rooms.Invite) != 0 {
			t.Fatalf("join not in sync: %v", b2.Raw)
		}
		all := append(append([]syncEvent{}, jb.State.Events...), jb.Timeline.Events...)
		if hasState(all, "m.room.create", "") == nil || hasState(all, "m.room.power_levels", "") == nil ||
			hasState(jb.Timeline.Events, "m.room.member", string(bob.UserID)) == nil {
			t.Fatalf("newly joined room lacks state: %+v", jb)
		}
		if jb.Summary["m.joined_member_count"] != float64(2) {
			t.Fatalf("summary %v", jb.Summary)
		}
		heroes, _ := jb.Summary["m.heroes"].([]any)
		if len(heroes) != 1 || heroes[0] != string(alice.UserID) {
			t.Fatalf("heroes %v", jb.Summary)
		}

		// A message reaches both, once.
		eid := sendText(t, alice, room.RoomID, "hello bob")
		b3 := doSync(t, env, bob, map[string]string{"since": b2.NextBatch})
		tl := b3.Rooms.Join[room.RoomID]
		if tl == nil || len(tl.Timeline.Events) != 1 || tl.Timeline.Events[0].EventID != eid || tl.Timeline.Limited {
			t.Fatalf("incremental timeline: %v", b3.Raw)
		}
		if len(tl.State.Events) != 0 {
			t.Fatalf("unlimited incremental sync with state: %+v", tl.State.Events)
		}
		// The counts come from the fan-out worker: with the event, or in a
		// later response of their own (with no events repeated).
		next := b3.NextBatch
		unread := tl.Unread
		testenv.Eventually(t, 10*time.Second, "unread count 1", func() error {
			if unread != nil && unread.Notification == 1 {
				return nil
			}
			b := doSync(t, env, bob, map[string]string{"since": next, "timeout": "1000"})
			next = b.NextBatch
			if r := b.Rooms.Join[room.RoomID]; r != nil {
				if len(r.Timeline.Events) != 0 {
					t.Fatalf("event repeated: %v", b.Raw)
				}
				unread = r.Unread
			}
			return fmt.Errorf("unread %+v", unread)
		})
		// A later sync may report the counts again (the worker's change
		// record can land after the response that had them), never the event.
		b4 := doSync(t, env, bob, map[string]string{"since": next})
		if r := b4.Rooms.Join[room.RoomID]; r != nil && len(r.Timeline.Events) != 0 {
			t.Fatalf("event repeated: %v", b4.Raw)
		}
		// The same since token gives the same answer again.
		again := doSync(t, env, bob, map[string]string{"since": b2.NextBatch})
		if r := again.Rooms.Join[room.RoomID]; r == nil || len(r.Timeline.Events) != 1 || r.Timeline.Events[0].EventID != eid {
			t.Fatalf("replayed sync: %v", again.Raw)
		}

		// mautrix parses the answers.
		if _, err := bob.SyncRequest(ctx, 0, b2.NextBatch, "", false, ""); err != nil {
			t.Fatalf("mautrix sync: %v", err)
		}
		// full_state repeats the whole state even with a since token.
		fs := doSync(t, env, bob, map[string]string{"since": b3.NextBatch, "full_state": "true"})
		if r := fs.Rooms.Join[room.RoomID]; r == nil || hasState(append(r.State.Events, r.Timeline.Events...), "m.room.create", "") == nil {
			t.Fatalf("full_state: %v", fs.Raw)
		}
	})
}

func urlq(s string) string { return url.QueryEscape(s) }

// inlineFilter is a filter for the filter query parameter.
func inlineFilter(f map[string]any) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// TestSyncConcurrentSendersExactlyOnce has several clients send at once
// while a reader follows with incremental syncs: every acknowledged event
// arrives exactly once.
func TestSyncConcurrentSendersExactlyOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		owner := register(t, env, "owner", "pw")
		room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		reader := register(t, env, "reader", "pw")
		if _, err := reader.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		const senders, each = 4, 8
		clients := make([]*mautrix.Client, senders)
		for i := range clients {
			clients[i] = register(t, env, fmt.Sprintf("sender%d", i), "pw")
			if _, err := clients[i].JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		f := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1000, "types": []string{"m.room.message"}}}})
		since := doSync(t, env, reader, map[string]string{"filter": f}).NextBatch

		var mu sync.Mutex
		acked := map[id.EventID]bool{}
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					resp, err := c.SendText(ctx, room.RoomID, fmt.Sprintf("%d/%d", i, j))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					acked[resp.EventID] = true
					mu.Unlock()
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()

		seen := map[id.EventID]int{}
		deadline := time.Now().Add(90 * time.Second)
		finished := false
		for time.Now().Before(deadline) {
			select {
			case <-done:
				finished = true
			default:
			}
			r := doSync(t, env, reader, map[string]string{"since": since, "filter": f, "timeout": "1000"})
			if jr := r.Rooms.Join[room.RoomID]; jr != nil {
				if jr.Timeline.Limited {
					t.Fatalf("timeline limited with a limit of 1000")
				}
				for _, e := range jr.Timeline.Events {
					seen[e.EventID]++
					if seen[e.EventID] > 1 {
						t.Fatalf("event %s delivered twice", e.EventID)
					}
				}
			}
			since = r.NextBatch
			mu.Lock()
			all := len(seen) >= senders*each
			mu.Unlock()
			if finished && all {
				break
			}
		}
		if t.Failed() {
			return
		}
		if len(seen) != senders*each || len(acked) != senders*each {
			t.Fatalf("saw %d events, %d acknowledged, want %d", len(seen), len(acked), senders*each)
		}
		for e := range acked {
			if seen[e] != 1 {
				t.Fatalf("acknowledged event %s seen %d times", e, seen[e])
			}
		}
	})
}

// TestSyncLimitedTimelineAndPrevBatch: a gap larger than the limit gives a
// limited timeline, the state that changed in the gap, and a prev_batch
// from which /messages continues without skipping or repeating.
func TestSyncLimitedTimelineAndPrevBatch(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room.RoomID, "before")
		f := inlineFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})
		since := doSync(t, env, bob, map[string]string{"filter": f}).NextBatch

		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]string{"name": "New"}); err != nil {
			t.Fatal(err)
		}
		for i := range 15 {
			sendText(t, alice, room.RoomID, fmt.Sprintf("g%d", i))
		}
		r := doSync(t, env, bob, map[string]string{"since": since, "filter": f})
		jr := r.Rooms.Join[room.RoomID]
		if jr == nil || !jr.Timeline.Limited || len(jr.Timeline.Events) != 5 {
			t.Fatalf("want a limited timeline of 5: %v", r.Raw)
		}
		if got := strings.Join(msgBodies(jr.Timeline.Events), ","); got != "g10,g11,g12,g13,g14" {
			t.Fatalf("timeline %s", got)
		}
		name := hasState(jr.State.Events, "m.room.name", "")
		if name == nil || name.Content["name"] != "New" {
			t.Fatalf("state delta lacks the new name: %+v", jr.State.Events)
		}
		if hasState(jr.State.Events, "m.room.create", "") != nil {
			t.Fatalf("unchanged state in the delta: %+v", jr.State.Events)
		}
		// /messages from prev_batch: g9 … g0, the name change, "before".
		var back []string
		from := jr.Timeline.PrevBatch
		for range 10 {
			resp, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				back = append(back, ev.Content.Raw["body"].(string))
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		want := "g9,g8,g7,g6,g5,g4,g3,g2,g1,g0,before"
		if strings.Join(back, ",") != want {
			t.Fatalf("/messages from prev_batch gave %v, want %s", back, want)
		}
		// The initial sync's prev_batch works the same way.
		init := doSync(t, env, bob, map[string]string{"filter": f})
		ij := init.Rooms.Join[room.RoomID]
		resp, err := bob.Messages(ctx, room.RoomID, ij.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(resp.Chunk) != 1 || resp.Chunk[0].Content.Raw["body"] != "g9" {
			t.Fatalf("messages before the initial timeline: %+v %v", resp, err)
		}
	})
}

// TestSyncLongPoll: a waiting sync returns soon after an event arrives, and
// an idle one returns after its timeout.
func TestSyncLongPoll(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		alice, bob, room := aliceAndBobInPublicRoom(t, env)
		since := doSync(t, env, bob, nil).NextBatch

		start := time.Now()
		idle := doSync(t, env, bob, map[string]string{"since": since, "timeout": "600"})
		if el := time.Since(start); el < 400*time.Millisecond || el > 10*time.Second || len(idle.Rooms.Join) != 0 {
			t.Fatalf("idle long-poll took %s: %v", el, idle.Raw)
		}
		since = idle.NextBatch

		got := make(chan *syncResp, 1)
		start = time.Now()
		go func() {
			got <- doSync(t, env, bob, map[string]string{"since": since, "timeout": "20000"})
		}()
		time.Sleep(300 * time.Millisecond)
		eid := sendText(t, alice, room.RoomID, "wake up")
		select {
		case r := <-got:
			if el := time.Since(start); el > 15*time.Second {
				t.Fatalf("long-poll answered after %s", el)
			}
			jr := r.Rooms.Join[room.RoomID]
			if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].EventID != eid {
				t.Fatalf("long-poll answer %v", r.Raw)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("long-poll did not return")
		}
	})
}

// TestSyncMembershipSections covers invites, rejected invites, kicks, bans,
// knocks, include_leave and ignored inviters.
func TestSyncMembershipSections(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		carol := register(t, env, "carol", "pw")
		s0 := doSync(t, env, bob, nil).NextBatch

		// An invite bob rejects: the room moves to leave with the leave event.
		r1, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		s1 := doSync(t, env, bob, map[string]string{"since": s0})
		if s1.Rooms.Invite[r1.RoomID] == nil {
			t.Fatalf("invite missing: %v", s1.Raw)
		}
		if _, err := bob.LeaveRoom(ctx, r1.RoomID); err != nil {
			t.Fatal(err)
		}
		s2 := doSync(t, env, bob, map[string]string{"since": s1.NextBatch})
		lr := s2.Rooms.Leave[r1.RoomID]
		if lr == nil || len(lr.Timeline.Events) != 1 || lr.Timeline.Events[0].Content["membership"] != "leave" || len(s2.Rooms.Invite) != 0 {
			t.Fatalf("rejected invite: %v", s2.Raw)
		}

		// A kick: the leave section holds the timeline up to the kick.
		r2, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, r2.RoomID); err != nil {
			t.Fatal(err)
		}
		s3 := doSync(t, env, bob, map[string]string{"since": s2.NextBatch})
		if s3.Rooms.Join[r2.RoomID] == nil {
			t.Fatalf("joined room missing: %v", s3.Raw)
		}
		sendText(t, alice, r2.RoomID, "last words")
		if _, err := alice.KickUser(ctx, r2.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, r2.RoomID, "after the kick")
		s4 := doSync(t, env, bob, map[string]string{"since": s3.NextBatch})
		kr := s4.Rooms.Leave[r2.RoomID]
		if kr == nil || s4.Rooms.Join[r2.RoomID] != nil {
			t.Fatalf("kick not in leave: %v", s4.Raw)
		}
		n := len(kr.Timeline.Events)
		if n < 2 || kr.Timeline.Events[n-1].Type != "m.room.member" || kr.Timeline.Events[n-1].Content["membership"] != "leave" ||
			strings.Join(msgBodies(kr.Timeline.Events), ",") != "last words" {
			t.Fatalf("kick timeline %+v", kr.Timeline.Events)
		}
		// Nothing more about r2 afterwards, although alice goes on talking.
		sendText(t, alice, r2.RoomID, "still talking")
		s5 := doSync(t, env, bob, map[string]string{"since": s4.NextBatch})
		if s5.Rooms.Leave[r2.RoomID] != nil || s5.Rooms.Join[r2.RoomID] != nil {
			t.Fatalf("left room still synced: %v", s5.Raw)
		}

		// A ban.
		r3, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, r3.RoomID); err != nil {
			t.Fatal(err)
		}
		s6 := doSync(t, env, bob, map[string]string{"since": s5.NextBatch})
		if _, err := alice.BanUser(ctx, r3.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		s7 := doSync(t, env, bob, map[string]string{"since": s6.NextBatch})
		br := s7.Rooms.Leave[r3.RoomID]
		if br == nil || br.Timeline.Events[len(br.Timeline.Events)-1].Content["membership"] != "ban" {
			t.Fatalf("ban: %v", s7.Raw)
		}

		// Initial syncs show left rooms only with include_leave.
		plain := doSync(t, env, bob, nil)
		if len(plain.Rooms.Leave) != 0 {
			t.Fatalf("left rooms without include_leave: %v", plain.Rooms.Leave)
		}
		withLeave := doSync(t, env, bob, map[string]string{"filter": inlineFilter(map[string]any{"room": map[string]any{"include_leave": true}})})
		if withLeave.Rooms.Leave[r2.RoomID] == nil || withLeave.Rooms.Leave[r3.RoomID] == nil {
			t.Fatalf("include_leave: %v", withLeave.Raw)
		}
		if got := msgBodies(withLeave.Rooms.Leave[r2.RoomID].Timeline.Events); strings.Join(got, ",") != "last words" {
			t.Fatalf("archived timeline goes past the kick: %v", got)
		}

		// A knock.
		r4, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.KnockRoom(ctx, r4.RoomID.String(), &mautrix.ReqKnockRoom{}); err != nil {
			t.Fatal(err)
		}
		s8 := doSync(t, env, bob, map[string]string{"since": s7.NextBatch})
		if k := s8.Rooms.Knock[r4.RoomID]; k == nil || hasState(k.KnockState.Events, "m.room.join_rules", "") == nil {
			t.Fatalf("knock: %v", s8.Raw)
		}

		// Invites from ignored users are not shown.
		if err := bob.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(carol.UserID): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		r5, _ := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		s9 := doSync(t, env, bob, map[string]string{"since": s8.NextBatch})
		if s9.Rooms.Invite[r5.RoomID] != nil {
			t.Fatalf("invite from an ignored user: %v", s9.Raw)
		}
		if init := doSync(t, env, bob, nil); init.Rooms.Invite[r5.RoomID] != nil {
			t.Fatalf("invite from an ignored user in an initial sync")
		}
	})
}

// TestSyncDeviceLists: with the key store present, /sync carries the E2EE
// parts: device-list changes (a new member's devices are news) and the
// device's one-time key counts.
func TestSyncDeviceLists(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		s0 := doSync(t, env, alice, nil)
		if _, ok := s0.Raw["device_one_time_keys_count"]; !ok {
			t.Fatalf("no one-time key counts: %v", s0.Raw)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		s1 := doSync(t, env, alice, map[string]string{"since": s0.NextBatch})
		dl, _ := s1.Raw["device_lists"].(map[string]any)
		changed, _ := dl["changed"].([]any)
		if len(changed) != 1 || changed[0] != string(bob.UserID) {
			t.Fatalf("device_lists after bob joined: %v", s1.Raw["device_lists"])
		}
		if s2 := doSync(t, env, alice, map[string]string{"since": s1.NextBatch}); s2.Raw["device_lists"] != nil {
			t.Fatalf("device-list change repeated: %v", s2.Raw["device_lists"])
		}
	})
}

// TestSyncTokenSurvivesRestart: a token from before a restart continues
// exactly where it stopped.
func TestSyncTokenSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	env := testenv.Start(t, "embedded", nil)
	alice := register(t, env, "alice", "pw")
	room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	since := doSync(t, env, alice, nil).NextBatch
	eid := sendText(t, alice, room.RoomID, "across the restart")
	for _, a := range env.Apps {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	env2 := testenv.Start(t, "embedded", map[string]string{"CIRRUS_DATA_DIR": env.Vars["CIRRUS_DATA_DIR"]})
	alice.Client = env2.HTTP
	r := doSync(t, env2, alice, map[string]string{"since": since})
	jr := r.Rooms.Join[room.RoomID]
	if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].EventID != eid {
		t.Fatalf("after the restart: %v", r.Raw)
	}
}

// aliceAndBobInPublicRoom registers alice and bob and joins them both to a
// public room alice creates.
func aliceAndBobInPublicRoom(t *testing.T, env *testenv.Env) (alice, bob *mautrix.Client, room *mautrix.RespCreateRoom) {
	t.Helper()
	ctx := context.Background()
	alice = register(t, env, "alice", "pw")
	bob = register(t, env, "bob", "pw")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	return alice, bob, room
}
