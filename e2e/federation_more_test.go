package e2e

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// fedEngines runs a federation test on the embedded engine and on the AWS
// stand-ins.
func fedEngines(t *testing.T, n int, f func(t *testing.T, srv []*testenv.FedServer)) {
	for _, eng := range []string{"embedded", "aws"} {
		t.Run(eng, func(t *testing.T) { f(t, testenv.StartFederationOn(t, eng, n, nil)) })
	}
}

// paginateAll pages a room backwards with small pages until the end,
// returning message bodies oldest first; it fails on repeated events.
func paginateAll(t *testing.T, c *mautrix.Client, room id.RoomID, pageSize int) []string {
	t.Helper()
	ctx := context.Background()
	seen := map[id.EventID]bool{}
	var bodies []string
	from := ""
	for i := 0; i < 200; i++ {
		msgs, err := c.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, pageSize)
		if err != nil {
			t.Fatalf("messages from %q: %v", from, err)
		}
		for _, ev := range msgs.Chunk {
			if seen[ev.ID] {
				t.Fatalf("event %s returned twice", ev.ID)
			}
			seen[ev.ID] = true
			if ev.Type == event.EventMessage {
				b, _ := ev.Content.Raw["body"].(string)
				bodies = append(bodies, b)
			}
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	for i, j := 0, len(bodies)-1; i < j; i, j = i+1, j-1 {
		bodies[i], bodies[j] = bodies[j], bodies[i]
	}
	return bodies
}

// TestFederationBackfillOnPagination: b joins a room with more history than
// a join fetches; paginating back on b reaches a's earlier messages through
// /backfill, in order, each once, and the room's creation.
func TestFederationBackfillOnPagination(t *testing.T) {
	fedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		const n = 75
		room := sharedRoom(t, a, b, alice, bob, n)
		ctx := context.Background()
		// /timestamp_to_event on b for a time before b's copy begins: a
		// knows the answer (the room's creation).
		created, err := alice.Messages(ctx, room, "", "", mautrix.DirectionForward, nil, 1)
		if err != nil || len(created.Chunk) != 1 {
			t.Fatalf("a's first event: %+v %v", created, err)
		}
		near, err := bob.TimestampToEvent(ctx, room, time.UnixMilli(0), mautrix.DirectionForward)
		if err != nil || near.EventID != created.Chunk[0].ID {
			t.Fatalf("timestamp_to_event on b: %+v %v (want %s)", near, err, created.Chunk[0].ID)
		}
		// The federation endpoint: a answers b for the newest event.
		latest, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(latest.Chunk) != 1 {
			t.Fatal(err)
		}
		fts, err := b.App.Server.Federation().Client.TimestampToEvent(ctx, a.Name, room, time.Now().Add(time.Minute), mautrix.DirectionBackward)
		if err != nil || fts.EventID != latest.Chunk[0].ID {
			t.Fatalf("federation timestamp_to_event: %+v %v (want %s)", fts, err, latest.Chunk[0].ID)
		}
		// A server not in the room is refused.
		if _, err := srv[0].App.Server.Federation().Client.TimestampToEvent(ctx, b.Name, id.RoomID("!nosuchroom:"+b.Name), time.Now(), mautrix.DirectionBackward); status(err) != 404 {
			t.Fatalf("timestamp_to_event for an unknown room: %v", err)
		}
		got := paginateAll(t, bob, room, 15)
		var want []string
		for i := 0; i < n; i++ {
			want = append(want, fmt.Sprintf("history %d", i))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("bob paginated %d messages:\n%q", len(got), got)
		}
		// The room's creation came back too, and a second pass (all stored
		// now) gives the same answer.
		msgs, err := bob.Messages(context.Background(), room, "", "", mautrix.DirectionForward, nil, 5)
		if err != nil || len(msgs.Chunk) == 0 || msgs.Chunk[0].Type != event.StateCreate {
			t.Fatalf("first event on b: %+v %v", msgs, err)
		}
		if again := paginateAll(t, bob, room, 40); strings.Join(again, "|") != strings.Join(want, "|") {
			t.Fatalf("second pass %q", again)
		}
	})
}

// TestFederationKnock: bob on b knocks on alice's knock-only room on a
// (make_knock/send_knock), sees it in his sync's knock section; alice
// sees the knock, invites him, and he joins.
func TestFederationKnock(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "private_chat", Name: "Knock here",
		InitialState: []*event.Event{joinRules("knock")}})
	if err != nil {
		t.Fatal(err)
	}
	r := room.RoomID
	if _, err := alice.SendText(ctx, r, "members only"); err != nil {
		t.Fatal(err)
	}
	// Without a server to ask, the knock cannot go anywhere (v12 room ids
	// name no server).
	if _, err := bob.KnockRoom(ctx, string(r), &mautrix.ReqKnockRoom{Reason: "hi"}); errcode(err) != "M_NOT_FOUND" {
		t.Fatalf("knock without via: %v", err)
	}
	if _, err := bob.KnockRoom(ctx, string(r), &mautrix.ReqKnockRoom{Reason: "let me in", Via: []string{a.Name}}); err != nil {
		t.Fatalf("remote knock: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees the knock", func() error {
		var mem event.MemberEventContent
		if err := alice.StateEvent(ctx, r, event.StateMember, string(bob.UserID), &mem); err != nil {
			return err
		}
		if mem.Membership != event.MembershipKnock || mem.Reason != "let me in" {
			return fmt.Errorf("bob's membership on a: %+v", mem)
		}
		return nil
	})
	sync, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	kr, ok := sync.Rooms.Knock[r]
	if !ok {
		t.Fatalf("the room is not in bob's knock section: %+v", sync.Rooms)
	}
	// The preview a's server answered the knock with: the room's name (and
	// bob's own knock, last).
	named := false
	for _, ev := range kr.State.Events {
		if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "Knock here" {
			named = true
		}
	}
	if !named || len(kr.State.Events) < 2 || kr.State.Events[len(kr.State.Events)-1].Type != event.StateMember {
		t.Fatalf("bob's knock_state lacks the room's preview: %+v", kr.State.Events)
	}
	// A knock on a room that is not knockable is refused by its server.
	closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.KnockRoom(ctx, string(closed.RoomID), &mautrix.ReqKnockRoom{Via: []string{a.Name}}); errcode(err) != "M_FORBIDDEN" {
		t.Fatalf("knock on an invite-only room: %v", err)
	}
	// Dave knocks and thinks better of it: the withdrawal goes through a
	// (the v12 room id names no server; the knock's room state does).
	dave := fedUser(t, b, "dave")
	if _, err := dave.KnockRoom(ctx, string(r), &mautrix.ReqKnockRoom{Via: []string{a.Name}}); err != nil {
		t.Fatalf("dave's knock: %v", err)
	}
	if _, err := dave.LeaveRoom(ctx, r); err != nil {
		t.Fatalf("withdraw the remote knock: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees the withdrawal", func() error {
		var mem event.MemberEventContent
		if err := alice.StateEvent(ctx, r, event.StateMember, string(dave.UserID), &mem); err != nil {
			return err
		}
		if mem.Membership != event.MembershipLeave {
			return fmt.Errorf("dave on a: %s", mem.Membership)
		}
		return nil
	})
	// Alice lets bob in.
	if _, err := alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite the knocker: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "bob is invited", func() error {
		m, err := b.App.Server.Federation().Rooms.MembershipOf(ctx, bob.UserID, r)
		if err != nil || m == nil || m.Membership != "invite" {
			return fmt.Errorf("bob on b: %+v %v", m, err)
		}
		return nil
	})
	if _, err := bob.JoinRoomByID(ctx, r); err != nil {
		t.Fatalf("join after the invite: %v", err)
	}
	if err := hasBody(ctx, bob, r, "members only"); err != nil {
		t.Fatal(err)
	}
}

// TestFederationInviteV1: the v1 invite API answers [200, {event}] with
// the event countersigned, and the invite reaches the invitee.
func TestFederationInviteV1(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Old style"})
	if err != nil {
		t.Fatal(err)
	}
	af, bf := a.App.Server.Federation(), b.App.Server.Federation()
	invite := func(stateKey string, withCreate bool) (json.RawMessage, id.EventID) {
		raw, eid := craft(t, a, room.RoomID, "m.room.member", &stateKey, alice.UserID, map[string]any{"membership": "invite"}, nil, nil)
		var ev map[string]any
		_ = json.Unmarshal(raw, &ev)
		var strip []json.RawMessage
		if withCreate {
			ce, err := af.Rooms.CurrentStateEvent(ctx, room.RoomID, "m.room.create", "")
			if err != nil {
				t.Fatal(err)
			}
			strip = append(strip, ce.PDU)
		}
		ev["unsigned"] = map[string]any{"invite_room_state": strip}
		out, _ := json.Marshal(ev)
		return out, eid
	}
	put := func(eid id.EventID, body json.RawMessage) ([]json.RawMessage, error) {
		var resp []json.RawMessage
		err := af.Client.MakeRequest(ctx, b.Name, true, http.MethodPut, mfed.URLPath{"v1", "invite", room.RoomID, eid}, body, &resp)
		return resp, err
	}
	// Without the create event in the stripped state, the spec's assumed
	// room version (1 or 2) is not this event's format.
	body, eid := invite(string(bob.UserID), false)
	if _, err := put(eid, body); status(err) != 400 {
		t.Fatalf("v1 invite without the create event: %v", err)
	}
	// Not a user of b.
	body, eid = invite("@carol:"+a.Name, true)
	if _, err := put(eid, body); err == nil {
		t.Fatal("v1 invite of another server's user accepted")
	}
	body, eid = invite(string(bob.UserID), true)
	resp, err := put(eid, body)
	if err != nil {
		t.Fatalf("v1 invite: %v", err)
	}
	var status int
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	if len(resp) != 2 || json.Unmarshal(resp[0], &status) != nil || status != 200 || json.Unmarshal(resp[1], &out) != nil {
		t.Fatalf("v1 answer %s", resp)
	}
	var signed pdu.PDU
	if err := jsonv2.Unmarshal(out.Event, &signed); err != nil {
		t.Fatal(err)
	}
	if _, ok := signed.Signatures[b.Name]; !ok {
		t.Fatalf("not countersigned by b: %s", out.Event)
	}
	if m, err := bf.Rooms.MembershipOf(ctx, bob.UserID, room.RoomID); err != nil || m == nil || m.Membership != "invite" || m.EventID != eid {
		t.Fatalf("bob's invite on b: %+v %v", m, err)
	}
}

// TestFederationKeyRotation: a rotates its signing key (the
// CIRRUS_SIGNING_KEY_ROTATE_FROM setting at restart). Its key response
// lists the old key in old_verify_keys; c, which first fetches a's keys
// after the rotation, still verifies the room's events signed with the
// old key and joins; b, which knew only the old key, takes new events.
func TestFederationKeyRotation(t *testing.T) {
	fedEngines(t, 3, func(t *testing.T, srv []*testenv.FedServer) {
		a, b, c := srv[0], srv[1], srv[2]
		ctx := context.Background()
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		carol := fedUser(t, c, "carol")
		room := sharedRoom(t, a, b, alice, bob, 3)
		oldKey := a.App.Server.Federation().Key
		a.Vars["CIRRUS_SIGNING_KEY_ROTATE_FROM"] = string(oldKey.ID)
		a.Restart()
		relogin(t, a, alice)
		newKey := a.App.Server.Federation().Key
		if newKey.ID == oldKey.ID || newKey.Pub == oldKey.Pub {
			t.Fatalf("key not rotated: %s", newKey.ID)
		}

		resp, err := testenv.FedHTTP.Get(a.FedURL + "/_matrix/key/v2/server")
		if err != nil {
			t.Fatal(err)
		}
		var keys mfed.ServerKeyResponse
		err = json.NewDecoder(resp.Body).Decode(&keys)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := keys.VerifySelfSignature(); err != nil {
			t.Fatalf("self-signature: %v", err)
		}
		old, ok := keys.OldVerifyKeys[oldKey.ID]
		if _, cur := keys.VerifyKeys[newKey.ID]; !cur || len(keys.VerifyKeys) != 1 || !ok || old.Key != oldKey.Pub || old.ExpiredTS.IsZero() {
			t.Fatalf("keys after rotation: verify %v old %v", keys.VerifyKeys, keys.OldVerifyKeys)
		}

		// c meets a only now: the room's old events verify with the old key.
		if _, err := carol.JoinRoom(ctx, "#fed:"+a.Name, nil); err != nil {
			t.Fatalf("join after the rotation: %v", err)
		}
		if err := hasBody(ctx, carol, room, "history 0"); err != nil {
			t.Fatal(err)
		}
		// New events are signed with the new key; b learns it.
		anew, err := alice.SendText(ctx, room, "signed anew")
		if err != nil {
			t.Fatal(err)
		}
		for i, cl := range []*mautrix.Client{bob, carol} {
			testenv.Eventually(t, 20*time.Second, "the new event arrives", func() error {
				if err := hasBody(ctx, cl, room, "signed anew"); err != nil {
					ev, gerr := srv[i+1].App.Server.Federation().Rooms.Event(ctx, anew.EventID)
					if gerr == nil {
						return fmt.Errorf("%w (on %s: outlier %t rejected %t soft-failed %t)", err, srv[i+1].Name, ev.Outlier, ev.Rejected, ev.SoftFailed)
					}
					// Why: hand it to the server again and show its answer.
					f := srv[i+1].App.Server.Federation()
					if got, ferr := f.Client.GetEvent(ctx, a.Name, anew.EventID); ferr == nil && len(got.PDUs) == 1 {
						return fmt.Errorf("%w (on %s: %v; again: %+v)", err, srv[i+1].Name, gerr, f.ProcessPDUs(ctx, a.Name, got.PDUs))
					}
					return fmt.Errorf("%w (on %s: %v)", err, srv[i+1].Name, gerr)
				}
				return nil
			})
		}
		// A later start with the setting still there changes nothing.
		a.Restart()
		relogin(t, a, alice)
		if k := a.App.Server.Federation().Key; k.ID != newKey.ID {
			t.Fatalf("rotated again: %s", k.ID)
		}
		// An event signed with the old key after it expired is refused.
		late, lateID := craft(t, a, room, "m.room.message", nil, alice.UserID, map[string]any{"msgtype": "m.text", "body": "late"}, oldKey, nil)
		tx, err := a.App.Server.Federation().Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: c.Name, TxnID: "late-1",
			Origin: a.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{late}})
		if err != nil {
			t.Fatal(err)
		}
		if r := tx.PDUs[lateID]; r.Error == "" {
			t.Fatalf("an event signed with the expired key was accepted: %+v", tx.PDUs)
		}
	})
}

// TestFederationPublicRooms: a's directory over federation, and
// /publicRooms?server= on b asking a (GET and filtered POST).
func TestFederationPublicRooms(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	for _, name := range []string{"Gardening", "Cooking"} {
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name, Visibility: "public"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Unlisted"}); err != nil {
		t.Fatal(err)
	}
	names := func(chunk []*mautrix.PublicRoomInfo) string {
		var out []string
		for _, r := range chunk {
			out = append(out, r.Name)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	got, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a.Name})
	if err != nil {
		t.Fatalf("publicRooms?server=: %v", err)
	}
	if names(got.Chunk) != "Cooking,Gardening" || got.TotalRoomCountEstimate != 2 {
		t.Fatalf("a's directory seen from b: %+v", got)
	}
	// Pages through the remote directory.
	page, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a.Name, Limit: 1})
	if err != nil || len(page.Chunk) != 1 || page.NextBatch == "" {
		t.Fatalf("first page %+v %v", page, err)
	}
	page2, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a.Name, Limit: 1, Since: page.NextBatch})
	if err != nil || len(page2.Chunk) != 1 || page2.Chunk[0].RoomID == page.Chunk[0].RoomID {
		t.Fatalf("second page %+v %v", page2, err)
	}
	var filtered mautrix.RespPublicRooms
	st, _ := doJSONFed(t, bob, http.MethodPost, "/_matrix/client/v3/publicRooms?server="+a.Name,
		map[string]any{"filter": map[string]any{"generic_search_term": "cook"}}, &filtered)
	if st != 200 || names(filtered.Chunk) != "Cooking" {
		t.Fatalf("filtered remote directory: %d %+v", st, filtered)
	}
	// The federation endpoint needs a signed request.
	if st, _ := fedDo(t, "GET", a.FedURL+"/_matrix/federation/v1/publicRooms", "", ""); st != 401 {
		t.Fatalf("unsigned publicRooms: %d", st)
	}
	// A server that does not answer is an error, not an empty directory.
	if _, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "127.0.0.1:1"}); err == nil {
		t.Fatal("unreachable server's directory answered")
	}
}

// doJSONFed sends a client request with a JSON body and decodes the answer.
func doJSONFed(t *testing.T, c *mautrix.Client, method, path string, body, out any) (int, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	}
	req, _ := http.NewRequest(method, c.HomeserverURL.String()+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

// TestFederationHierarchy: bob on b is in a space of a's whose children he
// is not in; b walks them through a's /hierarchy (inaccessible children
// left out), and /room_summary describes a room b does not hold.
func TestFederationHierarchy(t *testing.T) {
	fedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		ctx := context.Background()
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		mk := func(name, preset string, space bool) id.RoomID {
			req := &mautrix.ReqCreateRoom{Preset: preset, Name: name}
			if space {
				req.CreationContent = map[string]any{"type": "m.space"}
			}
			r, err := alice.CreateRoom(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return r.RoomID
		}
		space := mk("Space", "public_chat", true)
		sub := mk("Subspace", "public_chat", true)
		open := mk("Open", "public_chat", false)
		secret := mk("Secret", "private_chat", false)
		deep := mk("Deep", "public_chat", false)
		child := func(parent, c id.RoomID, suggested bool) {
			if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, string(c),
				map[string]any{"via": []string{a.Name}, "suggested": suggested}); err != nil {
				t.Fatal(err)
			}
		}
		child(space, open, true)
		child(space, secret, false)
		child(space, sub, false)
		child(sub, deep, false)
		if _, err := bob.JoinRoom(ctx, string(space), &mautrix.ReqJoinRoom{Via: []string{a.Name}}); err != nil {
			t.Fatalf("join the space: %v", err)
		}
		h, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
		if err != nil {
			t.Fatalf("hierarchy on b: %v", err)
		}
		var got []string
		for _, r := range h.Rooms {
			got = append(got, r.Name)
			if r.RoomID == space && len(r.ChildrenState) != 3 {
				t.Fatalf("space children_state %d", len(r.ChildrenState))
			}
			if r.RoomID == sub && len(r.ChildrenState) != 1 {
				t.Fatalf("subspace children_state %d", len(r.ChildrenState))
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != "Deep,Open,Space,Subspace" {
			t.Fatalf("rooms seen from b: %q", got)
		}
		hs, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{SuggestedOnly: true})
		if err != nil || len(hs.Rooms) != 2 {
			t.Fatalf("suggested only: %+v %v", hs, err)
		}

		// The federation answer itself, asked as b.
		var fh struct {
			Room         map[string]any   `json:"room"`
			Children     []map[string]any `json:"children"`
			Inaccessible []id.RoomID      `json:"inaccessible_children"`
		}
		bf := b.App.Server.Federation()
		if _, _, err := bf.Client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: a.Name, Method: http.MethodGet,
			Path: mfed.URLPath{"v1", "hierarchy", space}, Authenticate: true, ResponseJSON: &fh}); err != nil {
			t.Fatal(err)
		}
		if fh.Room["room_id"] != string(space) || len(fh.Children) != 2 || len(fh.Inaccessible) != 1 || fh.Inaccessible[0] != secret {
			t.Fatalf("federation hierarchy: %+v", fh)
		}
		err = bf.Client.MakeRequest(ctx, a.Name, true, http.MethodGet, mfed.URLPath{"v1", "hierarchy", secret}, nil, nil)
		if status(err) != 404 {
			t.Fatalf("hierarchy of a room b may not see: %v", err)
		}

		// Summaries of rooms b does not hold.
		summary := func(r id.RoomID) (int, map[string]any) {
			var out map[string]any
			st, _ := doJSONFed(t, bob, http.MethodGet, "/_matrix/client/v1/room_summary/"+url.PathEscape(string(r))+"?via="+a.Name, nil, &out)
			return st, out
		}
		if st, sum := summary(open); st != 200 || sum["name"] != "Open" || sum["membership"] != "leave" || sum["num_joined_members"] != float64(1) {
			t.Fatalf("remote summary: %d %v", st, sum)
		}
		if st, sum := summary(secret); st != 404 {
			t.Fatalf("summary of a private remote room: %d %v", st, sum)
		}
	})
}

// TestFederationThirdPartyInvites: an identity server's /3pid/onbind on
// b makes b exchange the signed token with a, which checks it against the
// room's m.room.third_party_invite and invites bob; bad requests get the
// spec's errors.
func TestFederationThirdPartyInvites(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "3pid"})
	if err != nil {
		t.Fatal(err)
	}
	is := mfed.GenerateSigningKey() // the identity server's key
	if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateThirdPartyInvite, "tok1", map[string]any{
		"display_name": "b...@example.org", "key_validity_url": "https://id.example/_matrix/identity/v2/pubkey/isvalid",
		"public_key": is.Pub, "public_keys": []map[string]any{{"public_key": is.Pub}}}); err != nil {
		t.Fatal(err)
	}
	sign := func(key *mfed.SigningKey, mxid id.UserID, token string) map[string]any {
		obj := map[string]any{"mxid": mxid, "token": token}
		sig, err := key.SignJSON(obj)
		if err != nil {
			t.Fatal(err)
		}
		obj["signatures"] = map[string]any{"id.example": map[string]any{string(key.ID): sig}}
		return obj
	}
	onbind := func(body any) int {
		raw, _ := json.Marshal(body)
		st, _ := fedDo(t, "PUT", b.FedURL+"/_matrix/federation/v1/3pid/onbind", "", string(raw))
		return st
	}
	inv := func(signed map[string]any) map[string]any {
		return map[string]any{"medium": "email", "address": "bob@example.org", "mxid": bob.UserID,
			"room_id": room.RoomID, "sender": alice.UserID, "signed": signed}
	}
	for _, bad := range []map[string]any{
		{"medium": "email", "address": "bob@example.org"},
		{"medium": "email", "address": "bob@example.org", "mxid": "@bob:elsewhere.example", "invites": []any{}},
		{"medium": "email", "address": "bob@example.org", "mxid": bob.UserID, "invites": []any{map[string]any{"medium": "email"}}},
	} {
		if st := onbind(bad); st != 400 {
			t.Fatalf("onbind %v: %d", bad, st)
		}
	}
	// An exchange whose token is signed by another key is refused by a.
	bf := b.App.Server.Federation()
	exchange := func(signed map[string]any, sender id.UserID) error {
		body := map[string]any{"type": "m.room.member", "room_id": room.RoomID, "sender": sender, "state_key": bob.UserID,
			"content": map[string]any{"membership": "invite", "third_party_invite": map[string]any{"display_name": "bob", "signed": signed}}}
		return bf.Client.MakeRequest(ctx, a.Name, true, http.MethodPut, mfed.URLPath{"v1", "exchange_third_party_invite", room.RoomID}, body, nil)
	}
	if err := exchange(sign(mfed.GenerateSigningKey(), bob.UserID, "tok1"), alice.UserID); status(err) != 403 {
		t.Fatalf("forged token: %v", err)
	}
	if err := exchange(sign(is, bob.UserID, "no-such-token"), alice.UserID); status(err) != 403 {
		t.Fatalf("unknown token: %v", err)
	}
	if err := exchange(sign(is, bob.UserID, "tok1"), id.UserID("@mallory:"+a.Name)); status(err) != 403 {
		t.Fatalf("another sender: %v", err)
	}
	if m, _ := bf.Rooms.MembershipOf(ctx, bob.UserID, room.RoomID); m != nil {
		t.Fatalf("refused exchanges left a membership: %+v", m)
	}
	// A well-formed exchange passes every check of ours and reaches the
	// auth rules, where mautrix-go v0.32.0's eventauth refuses every
	// third-party invite (it reads the public keys from the member event
	// instead of the m.room.third_party_invite event, and the signed block
	// as a string): the exchange answers 403 and nobody is invited. When
	// the library is fixed this part fails and should expect the invite.
	err = exchange(sign(is, bob.UserID, "tok1"), alice.UserID)
	if status(err) != 403 || !strings.Contains(err.Error(), "third party invite") {
		t.Fatalf("valid exchange: %v", err)
	}
	// The identity server's notification: b exchanges with a, which
	// answers as above; onbind itself was processed.
	if st := onbind(map[string]any{"medium": "email", "address": "bob@example.org", "mxid": bob.UserID,
		"invites": []any{inv(sign(is, bob.UserID, "tok1"))}}); st != 200 {
		t.Fatalf("onbind: %d", st)
	}
	if m, _ := bf.Rooms.MembershipOf(ctx, bob.UserID, room.RoomID); m != nil {
		t.Fatalf("an invite was recorded although a refused it: %+v", m)
	}
}

// TestFederationBackfillState: events b backfills get the state they had
// on a (the room's topic then, not the state b first saw): b's /state_ids
// for an early event matches a's.
func TestFederationBackfillState(t *testing.T) {
	fedEngines(t, 2, func(t *testing.T, srv []*testenv.FedServer) {
		a, b := srv[0], srv[1]
		ctx := context.Background()
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "hist"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		ids := map[string]id.EventID{}
		for _, phase := range []string{"early", "late"} {
			if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": phase + " topic"}); err != nil {
				t.Fatal(err)
			}
			for i := range 40 {
				r, err := alice.SendText(ctx, room, fmt.Sprintf("%s %d", phase, i))
				if err != nil {
					t.Fatal(err)
				}
				ids[fmt.Sprintf("%s %d", phase, i)] = r.EventID
			}
		}
		if _, err := bob.JoinRoom(ctx, "#hist:"+a.Name, nil); err != nil {
			t.Fatal(err)
		}
		if got := paginateAll(t, bob, room, 20); len(got) != 80 {
			t.Fatalf("bob paginated %d messages", len(got))
		}
		stateIDs := func(from, to *testenv.FedServer, ev id.EventID) []id.EventID {
			t.Helper()
			resp, err := from.App.Server.Federation().Client.GetStateIDs(ctx, to.Name, room, ev)
			if err != nil {
				t.Fatalf("%s asking %s for the state at %s: %v", from.Name, to.Name, ev, err)
			}
			out := slices.Clone(resp.PDUs)
			slices.Sort(out)
			return out
		}
		for _, msg := range []string{"early 3", "early 39", "late 10"} {
			onA, onB := stateIDs(b, a, ids[msg]), stateIDs(a, b, ids[msg])
			if !slices.Equal(onA, onB) {
				var diff []string
				for _, e := range onA {
					if !slices.Contains(onB, e) {
						ev, _ := alice.GetEvent(ctx, room, e)
						diff = append(diff, fmt.Sprintf("only on a: %s %v", ev.Type.Type, ev.Content.Raw))
					}
				}
				for _, e := range onB {
					if !slices.Contains(onA, e) {
						ev, _ := alice.GetEvent(ctx, room, e)
						diff = append(diff, fmt.Sprintf("only on b: %s %v", ev.Type.Type, ev.Content.Raw))
					}
				}
				t.Errorf("state before %q differs: %s", msg, strings.Join(diff, "; "))
			}
		}
	})
}
