package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// fedSyncer follows one client's /sync stream on its own server.
type fedSyncer struct {
	t     *testing.T
	c     *mautrix.Client
	since string
	// seen collects every ephemeral event of every room, in arrival order.
	seen []syncEvent
}

func newFedSyncer(t *testing.T, c *mautrix.Client) *fedSyncer {
	fs := &fedSyncer{t: t, c: c}
	fs.sync(0)
	return fs
}

// sync makes one /sync call (long-polling up to timeout) and returns it.
func (fs *fedSyncer) sync(timeout time.Duration) *syncResp {
	fs.t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if fs.since != "" {
		q.Set("since", fs.since)
	}
	u := fs.c.HomeserverURL.JoinPath("/_matrix/client/v3/sync")
	u.RawQuery = q.Encode()
	raw, err := fs.c.MakeFullRequest(context.Background(), mautrix.FullRequest{Method: http.MethodGet, URL: u.String()})
	if err != nil {
		fs.t.Fatalf("sync of %s: %v", fs.c.UserID, err)
	}
	var r syncResp
	if err := json.Unmarshal(raw, &r); err != nil {
		fs.t.Fatalf("sync answer %s: %v", raw, err)
	}
	fs.since = r.NextBatch
	for _, jr := range r.Rooms.Join {
		fs.seen = append(fs.seen, jr.Ephemeral.Events...)
	}
	return &r
}

// until syncs until cond holds for a room's ephemeral events of one sync.
func (fs *fedSyncer) until(what string, room id.RoomID, cond func(evs []syncEvent) error) {
	fs.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error = fmt.Errorf("nothing yet")
	for time.Now().Before(deadline) {
		r := fs.sync(2 * time.Second)
		if jr := r.Rooms.Join[room]; jr != nil {
			if last = cond(jr.Ephemeral.Events); last == nil {
				return
			}
		}
	}
	fs.t.Fatalf("%s (%s): %v", what, fs.c.UserID, last)
}

func typists(evs []syncEvent) ([]string, bool) {
	e := findSyncEvent(evs, "m.typing")
	if e == nil {
		return nil, false
	}
	var out []string
	us, _ := e.Content["user_ids"].([]any)
	for _, u := range us {
		s, _ := u.(string)
		out = append(out, s)
	}
	return out, true
}

func wantTyping(users ...id.UserID) func([]syncEvent) error {
	return func(evs []syncEvent) error {
		got, ok := typists(evs)
		if !ok {
			return fmt.Errorf("no m.typing in %v", evs)
		}
		want := []string{}
		for _, u := range users {
			want = append(want, string(u))
		}
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			return fmt.Errorf("typing %v, want %v", got, want)
		}
		return nil
	}
}

// receiptOf finds user's receipt of type typ for ev in m.receipt events.
func receiptOf(evs []syncEvent, ev id.EventID, typ string, user id.UserID) map[string]any {
	for _, e := range evs {
		if e.Type != "m.receipt" {
			continue
		}
		byType, _ := e.Content[string(ev)].(map[string]any)
		users, _ := byType[typ].(map[string]any)
		if r, ok := users[string(user)].(map[string]any); ok {
			return r
		}
	}
	return nil
}

func wantReceipt(ev id.EventID, user id.UserID, thread string) func([]syncEvent) error {
	return func(evs []syncEvent) error {
		r := receiptOf(evs, ev, "m.read", user)
		if r == nil {
			return fmt.Errorf("no m.read of %s for %s in %v", user, ev, evs)
		}
		if th, _ := r["thread_id"].(string); th != thread {
			return fmt.Errorf("receipt %v, want thread %q", r, thread)
		}
		if ts, _ := r["ts"].(float64); ts <= 0 {
			return fmt.Errorf("receipt without ts: %v", r)
		}
		return nil
	}
}

func wantPresence(t *testing.T, c *mautrix.Client, of id.UserID, state event.Presence, msg string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%s sees %s %s", c.UserID, of, state), func() error {
		p, err := c.GetPresence(context.Background(), of)
		if err != nil {
			return err
		}
		if p.Presence != state || p.StatusMsg != msg {
			return fmt.Errorf("presence %+v", p)
		}
		return nil
	})
}

// waitJoined waits until c's server counts n joined members in room.
func waitJoined(t *testing.T, c *mautrix.Client, room id.RoomID, n int) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "members", func() error {
		m, err := c.JoinedMembers(context.Background(), room)
		if err != nil {
			return err
		}
		if len(m.Joined) != n {
			return fmt.Errorf("members %v", m.Joined)
		}
		return nil
	})
}

// TestFederationEDUs: typing, receipts (threaded, never private) and
// presence cross between two servers both ways and show in /sync and GET
// /presence, on both engines.
func TestFederationEDUs(t *testing.T) {
	for _, engine := range []string{"embedded", "aws"} {
		t.Run(engine, func(t *testing.T) {
			srv := testenv.StartFederationOn(t, engine, 2, nil)
			a, b := srv[0], srv[1]
			ctx := context.Background()
			alice := fedUser(t, a, "alice")
			bob := fedUser(t, b, "bob")
			room := sharedRoom(t, a, b, alice, bob, 0)
			waitJoined(t, alice, room, 2)
			waitJoined(t, bob, room, 2)
			as, bs := newFedSyncer(t, alice), newFedSyncer(t, bob)

			// Typing a → b, then stop.
			if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			bs.until("bob sees alice typing", room, wantTyping(alice.UserID))
			if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
				t.Fatal(err)
			}
			bs.until("bob sees alice stop", room, wantTyping())
			// And b → a.
			if _, err := bob.UserTyping(ctx, room, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			as.until("alice sees bob typing", room, wantTyping(bob.UserID))

			// Receipts: bob reads alice's message; alice's server shows it.
			ev1 := sendText(t, alice, room, "read me")
			testenv.Eventually(t, 20*time.Second, "bob has the message", func() error { return hasBody(ctx, bob, room, "read me") })
			if err := bob.SendReceipt(ctx, room, ev1, event.ReceiptTypeReadPrivate, nil); err != nil {
				t.Fatal(err)
			}
			if err := bob.SendReceipt(ctx, room, ev1, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			as.until("alice sees bob's receipt", room, wantReceipt(ev1, bob.UserID, ""))
			// A threaded receipt keeps its thread.
			ev2 := sendText(t, alice, room, "and me")
			testenv.Eventually(t, 20*time.Second, "bob has the second message", func() error { return hasBody(ctx, bob, room, "and me") })
			if err := bob.SendReceipt(ctx, room, ev2, event.ReceiptTypeRead, map[string]any{"thread_id": "main"}); err != nil {
				t.Fatal(err)
			}
			as.until("alice sees bob's threaded receipt", room, wantReceipt(ev2, bob.UserID, "main"))
			// The other way.
			ev3 := sendText(t, bob, room, "from bob")
			testenv.Eventually(t, 20*time.Second, "alice has bob's message", func() error { return hasBody(ctx, alice, room, "from bob") })
			if err := alice.SendReceipt(ctx, room, ev3, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			bs.until("bob sees alice's receipt", room, wantReceipt(ev3, alice.UserID, ""))
			// Bob's private receipt never reached alice's server.
			for _, e := range as.seen {
				if receiptOf([]syncEvent{e}, ev1, "m.read.private", bob.UserID) != nil {
					t.Fatalf("a private receipt crossed over: %v", e.Content)
				}
			}

			// Presence both ways, read with GET /presence on the other server
			// and in the other user's incremental /sync.
			first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
				t.Fatal(err)
			}
			wantPresence(t, alice, bob.UserID, event.PresenceUnavailable, "lunch")
			since := first.NextBatch
			testenv.Eventually(t, 20*time.Second, "bob's presence in alice's /sync", func() error {
				resp, err := alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOnline)
				if err != nil {
					return err
				}
				since = resp.NextBatch
				for _, ev := range resp.Presence.Events {
					if ev.Sender == bob.UserID && ev.Content.Raw["presence"] == string(event.PresenceUnavailable) {
						return nil
					}
				}
				return fmt.Errorf("no presence of %s yet", bob.UserID)
			})
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here"}); err != nil {
				t.Fatal(err)
			}
			wantPresence(t, bob, alice.UserID, event.PresenceOnline, "here")
		})
	}
}

// TestFederationEDUsCatchUp: receipts and presence made while a
// destination is down reach it when it comes back.
func TestFederationEDUsCatchUp(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 0)
	waitJoined(t, alice, room, 2)
	ev := sendText(t, bob, room, "hello from b")
	testenv.Eventually(t, 20*time.Second, "alice has the message", func() error { return hasBody(ctx, alice, room, "hello from b") })

	b.Stop()
	if err := alice.SendReceipt(ctx, room, ev, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "while b was down"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a few failed attempts, backing off
	b.Restart()
	relogin(t, b, bob)
	bs := &fedSyncer{t: t, c: bob}
	bs.until("bob sees alice's receipt after b's restart", room, wantReceipt(ev, alice.UserID, ""))
	wantPresence(t, bob, alice.UserID, event.PresenceUnavailable, "while b was down")
}

// TestFederationForgedEDUs: EDUs about users of another server than the
// sender, about users not in the room, or from a server the room's ACL
// denies are ignored.
func TestFederationForgedEDUs(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 0)
	waitJoined(t, alice, room, 2)
	ev := sendText(t, alice, room, "target")
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "mine"}); err != nil {
		t.Fatal(err)
	}
	as := newFedSyncer(t, alice)
	bf := b.App.Server.Federation()
	mallory := id.UserID("@mallory:" + b.Name)
	carol := fedUser(t, a, "carol") // a's user, not in the room
	edu := func(typ string, content any) json.RawMessage {
		raw, _ := json.Marshal(map[string]any{"edu_type": typ, "content": content})
		return raw
	}
	typing := func(u id.UserID) json.RawMessage {
		return edu("m.typing", map[string]any{"room_id": room, "user_id": u, "typing": true})
	}
	receipt := func(u id.UserID, typ string) json.RawMessage {
		return edu("m.receipt", map[string]any{string(room): map[string]any{typ: map[string]any{
			string(u): map[string]any{"event_ids": []id.EventID{ev}, "data": map[string]any{"ts": 1}}}}})
	}
	send := func(txn string, edus ...json.RawMessage) {
		t.Helper()
		_, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: txn,
			Origin: b.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{}, EDUs: edus})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("forged-1",
		typing(alice.UserID), typing(carol.UserID), typing(mallory), // not b's user; not b's user; not joined
		receipt(alice.UserID, "m.read"), receipt(mallory, "m.read"), receipt(bob.UserID, "m.read.private"),
		edu("m.presence", map[string]any{"push": []any{map[string]any{"user_id": alice.UserID, "presence": "offline", "status_msg": "forged", "last_active_ago": 1}}}),
		// And one genuine typing notice, to know the others were looked at.
		typing(bob.UserID))
	as.until("alice sees only bob typing", room, wantTyping(bob.UserID))
	p, err := alice.GetPresence(ctx, alice.UserID)
	if err != nil || p.Presence != event.PresenceOnline || p.StatusMsg != "mine" {
		t.Fatalf("alice's presence was changed by b: %+v %v", p, err)
	}
	for _, u := range []id.UserID{alice.UserID, mallory, bob.UserID} {
		for _, typ := range []string{"m.read", "m.read.private"} {
			for _, e := range as.seen {
				if receiptOf([]syncEvent{e}, ev, typ, u) != nil {
					t.Fatalf("forged %s receipt of %s accepted: %v", typ, u, e.Content)
				}
			}
		}
	}

	// A server the room's ACL denies is not heard.
	if _, err := alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{
		"allow": []string{"*"}, "deny": []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	send("forged-2", receipt(bob.UserID, "m.read"))
	// Bob's own (genuine) receipt from a denied server: a has nothing
	// (EDUs are applied before /send answers).
	as.sync(0)
	for _, e := range as.seen {
		if receiptOf([]syncEvent{e}, ev, "m.read", bob.UserID) != nil {
			t.Fatalf("a receipt from an ACL-denied server was accepted: %v", e.Content)
		}
	}
}

// TestFederationEDUDestinationsFollowJoins: a's cached list of the room's
// servers (filled by the first EDU) never leaves out a server that joined
// afterwards.
func TestFederationEDUDestinationsFollowJoins(t *testing.T) {
	srv := testenv.StartFederation(t, 3, nil)
	a, b, c := srv[0], srv[1], srv[2]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, c, "carol")
	room := sharedRoom(t, a, b, alice, bob, 0)
	waitJoined(t, alice, room, 2)
	bs := newFedSyncer(t, bob)
	if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	bs.until("bob sees alice typing", room, wantTyping(alice.UserID))

	if _, err := carol.JoinRoom(ctx, "#fed:"+a.Name, nil); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	waitJoined(t, alice, room, 3)
	cs := newFedSyncer(t, carol)
	// Still typing: a refresh goes to every server of the room, c included.
	if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cs.until("carol sees alice typing", room, wantTyping(alice.UserID))
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "for c too"}); err != nil {
		t.Fatal(err)
	}
	wantPresence(t, carol, alice.UserID, event.PresenceUnavailable, "for c too")
}

// TestFederationPresenceOnJoin: presence set before two users shared a
// room reaches the other server when they come to share one.
func TestFederationPresenceOnJoin(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "set before"}); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "me too"}); err != nil {
		t.Fatal(err)
	}
	sharedRoom(t, a, b, alice, bob, 0)
	wantPresence(t, bob, alice.UserID, event.PresenceUnavailable, "set before")
	wantPresence(t, alice, bob.UserID, event.PresenceOnline, "me too")
}
