package e2e

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// fedUser registers a user on one server of a federation test.
func fedUser(t *testing.T, s *testenv.FedServer, name string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = s.HTTP
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "pw", InitialDeviceDisplayName: "e2e"})
	if err != nil {
		t.Fatalf("register %s on %s: %v", name, s.Name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return c
}

// relogin points a client at a restarted server.
func relogin(t *testing.T, s *testenv.FedServer, c *mautrix.Client) {
	t.Helper()
	c.HomeserverURL, _ = c.HomeserverURL.Parse(s.URL)
	c.Client = s.HTTP
}

// fedBodies returns the message bodies of a room's timeline, oldest first.
func fedBodies(ctx context.Context, c *mautrix.Client, room id.RoomID) ([]string, error) {
	msgs, err := c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := len(msgs.Chunk) - 1; i >= 0; i-- {
		ev := msgs.Chunk[i]
		if ev.Type == event.EventMessage {
			b, _ := ev.Content.Raw["body"].(string)
			out = append(out, b)
		}
	}
	return out, nil
}

func hasBody(ctx context.Context, c *mautrix.Client, room id.RoomID, body string) error {
	got, err := fedBodies(ctx, c, room)
	if err != nil {
		return err
	}
	for _, b := range got {
		if b == body {
			return nil
		}
	}
	return fmt.Errorf("%q not among %q", body, got)
}

// fedGet does a raw request on a federation listener.
func fedDo(t *testing.T, method, url, auth, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := testenv.FedHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func TestFederationKeysAndAuth(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]

	// Our own keys: signed by ourselves, with a validity and old keys.
	resp, err := testenv.FedHTTP.Get(a.FedURL + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var keys mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	if keys.ServerName != a.Name || len(keys.VerifyKeys) != 1 || keys.ValidUntilTS.Before(time.Now()) {
		t.Fatalf("keys %s", raw)
	}
	if err := keys.VerifySelfSignature(); err != nil {
		t.Fatalf("self-signature: %v", err)
	}
	if !strings.Contains(string(raw), `"old_verify_keys"`) {
		t.Fatalf("no old_verify_keys in %s", raw)
	}

	// The notary: A fetches B's keys, caches them and adds its signature.
	for _, q := range []struct{ method, path, body string }{
		{"POST", "/_matrix/key/v2/query", `{"server_keys":{"` + b.Name + `":{}}}`},
		{"GET", "/_matrix/key/v2/query/" + b.Name, ""},
	} {
		st, out := fedDo(t, q.method, a.FedURL+q.path, "", q.body)
		sk, _ := out["server_keys"].([]any)
		if st != 200 || len(sk) != 1 {
			t.Fatalf("%s %s: %d %v", q.method, q.path, st, out)
		}
		one, _ := json.Marshal(sk[0])
		var bk mfed.ServerKeyResponse
		_ = json.Unmarshal(one, &bk)
		if bk.ServerName != b.Name || bk.VerifySelfSignature() != nil {
			t.Fatalf("notary answer %s", one)
		}
		if err := signutil.VerifyJSON(a.Name, onlyKey(keys), keys.VerifyKeys[onlyKey(keys)].Key, json.RawMessage(one)); err != nil {
			t.Fatalf("notary signature: %v in %s", err, one)
		}
	}

	// X-Matrix is required on the federation API.
	path := "/_matrix/federation/v1/query/profile?user_id=@nobody:" + a.Name
	for _, auth := range []string{"", "Bearer abc", `X-Matrix origin="` + b.Name + `",destination="` + a.Name + `",key="ed25519:x",sig="bad"`} {
		st, out := fedDo(t, "GET", a.FedURL+path, auth, "")
		if st != 401 || out["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("auth %q: %d %v", auth, st, out)
		}
	}
	// A signed request from B passes (404: no such user).
	bf := b.App.Server.Federation()
	_, err = bf.Client.QueryProfile(context.Background(), a.Name, id.UserID("@nobody:"+a.Name))
	if status(err) != 404 {
		t.Fatalf("signed profile query: %v", err)
	}
}

func onlyKey(k mfed.ServerKeyResponse) id.KeyID {
	for kid := range k.VerifyKeys {
		return kid
	}
	return ""
}

// sharedRoom: alice on a creates a public room with history; bob on b
// joins it by alias. Returns the room.
func sharedRoom(t *testing.T, a, b *testenv.FedServer, alice, bob *mautrix.Client, history int) id.RoomID {
	t.Helper()
	ctx := context.Background()
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Federated", RoomAliasName: "fed"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < history; i++ {
		if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("history %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	joined, err := bob.JoinRoom(ctx, "#fed:"+a.Name, nil)
	if err != nil {
		t.Fatalf("remote join: %v", err)
	}
	t.Logf("remote join of a room with %d messages took %s", history, time.Since(start))
	if joined.RoomID != room.RoomID {
		t.Fatalf("joined %s, want %s", joined.RoomID, room.RoomID)
	}
	return room.RoomID
}

func TestFederationJoinAndMessages(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	if err := alice.SetDisplayName(ctx, "Alice A"); err != nil {
		t.Fatal(err)
	}
	room := sharedRoom(t, a, b, alice, bob, 5)

	// Bob sees the room's history and state on his own server.
	got, err := fedBodies(ctx, bob, room)
	if err != nil || len(got) != 5 || got[0] != "history 0" || got[4] != "history 4" {
		t.Fatalf("bob's history %q %v", got, err)
	}
	var name event.RoomNameEventContent
	if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "Federated" {
		t.Fatalf("room name on b: %+v %v", name, err)
	}
	// Both servers agree on the members.
	for _, c := range []*mautrix.Client{alice, bob} {
		testenv.Eventually(t, 10*time.Second, "two joined members", func() error {
			m, err := c.JoinedMembers(ctx, room)
			if err != nil {
				return err
			}
			if len(m.Joined) != 2 {
				return fmt.Errorf("members %v", m.Joined)
			}
			return nil
		})
	}

	// Messages both ways, through the federation senders.
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("from alice %d", i)
		if _, err := alice.SendText(ctx, room, msg); err != nil {
			t.Fatal(err)
		}
		d := testenv.Eventually(t, 10*time.Second, "bob sees "+msg, func() error { return hasBody(ctx, bob, room, msg) })
		t.Logf("a → b delivery: %s", d)
		msg = fmt.Sprintf("from bob %d", i)
		if _, err := bob.SendText(ctx, room, msg); err != nil {
			t.Fatal(err)
		}
		d = testenv.Eventually(t, 10*time.Second, "alice sees "+msg, func() error { return hasBody(ctx, alice, room, msg) })
		t.Logf("b → a delivery: %s", d)
	}
	// Same order on both servers.
	ga, _ := fedBodies(ctx, alice, room)
	gb, _ := fedBodies(ctx, bob, room)
	if strings.Join(ga, "|") != strings.Join(gb, "|") {
		t.Fatalf("timelines differ:\na: %q\nb: %q", ga, gb)
	}

	// Profile and directory queries across.
	p, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil || p.DisplayName != "Alice A" {
		t.Fatalf("remote profile %+v %v", p, err)
	}
	al, err := bob.ResolveAlias(ctx, id.RoomAlias("#fed:"+a.Name))
	if err != nil || al.RoomID != room {
		t.Fatalf("remote alias %+v %v", al, err)
	}

	// Bob leaves; alice's server sees it.
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees bob leave", func() error {
		m, err := alice.JoinedMembers(ctx, room)
		if err != nil {
			return err
		}
		if len(m.Joined) != 1 {
			return fmt.Errorf("members %v", m.Joined)
		}
		return nil
	})
	// Alice talks while bob is away; bob comes back (his server's copy of
	// the room is stale, so it joins through a again) and sees it.
	if _, err := alice.SendText(ctx, room, "while bob was away"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if _, err := bob.SendText(ctx, room, "back again"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees bob back", func() error { return hasBody(ctx, alice, room, "back again") })
	if _, err := alice.SendText(ctx, room, "welcome back"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "bob sees alice", func() error { return hasBody(ctx, bob, room, "welcome back") })
}

func TestFederationCatchUp(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 1)

	// B goes down; alice keeps talking (more than one transaction's worth).
	b.Stop()
	const n = 60
	for i := 0; i < n; i++ {
		if _, err := alice.SendText(ctx, room, fmt.Sprintf("while b was down %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // a few failed attempts, backing off
	b.Restart()
	relogin(t, b, bob)
	d := testenv.Eventually(t, 30*time.Second, "bob catches up", func() error {
		got, err := fedBodies(ctx, bob, room)
		if err != nil {
			return err
		}
		want := 1 + n
		if len(got) != want {
			return fmt.Errorf("%d of %d messages", len(got), want)
		}
		return nil
	})
	t.Logf("b caught up on %d messages %s after its restart", n, d)
	got, _ := fedBodies(ctx, bob, room)
	for i := 0; i < n; i++ {
		if got[1+i] != fmt.Sprintf("while b was down %d", i) {
			t.Fatalf("order after catch-up: %q", got)
		}
	}

	// And the other way: A down, bob talks, A comes back.
	a.Stop()
	for i := 0; i < 5; i++ {
		if _, err := bob.SendText(ctx, room, fmt.Sprintf("while a was down %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	a.Restart()
	relogin(t, a, alice)
	d = testenv.Eventually(t, 30*time.Second, "alice catches up", func() error { return hasBody(ctx, alice, room, "while a was down 4") })
	t.Logf("a caught up %s after its restart", d)
}

// craft builds an event in a room on server s's copy, signed with key (s's
// own key when nil), optionally tampered with after signing.
func craft(t *testing.T, s *testenv.FedServer, room id.RoomID, typ string, stateKey *string, sender id.UserID, content map[string]any, key *mfed.SigningKey, tamper func(p *pdu.PDU)) (json.RawMessage, id.EventID) {
	t.Helper()
	f := s.App.Server.Federation()
	c, _ := json.Marshal(content)
	tmpl, err := f.Rooms.BuildTemplate(context.Background(), room, rooms.NewEvent{Type: typ, StateKey: stateKey, Sender: sender, Content: c})
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		key = f.Key
	}
	p := tmpl.PDU
	if err := p.Sign(tmpl.RoomVersion, s.Name, key.ID, key.Priv); err != nil {
		t.Fatal(err)
	}
	eid, err := p.GetEventID(tmpl.RoomVersion)
	if err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		tamper(p)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, eid
}

func TestFederationRejectsBadEvents(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 1)
	bf := b.App.Server.Federation()
	msg := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

	forger := mfed.GenerateSigningKey()
	forger.ID = bf.Key.ID // same key id, another key
	forged, forgedID := craft(t, b, room, "m.room.message", nil, bob.UserID, msg("forged"), forger, nil)
	mallory := id.UserID("@mallory:" + b.Name)
	notMember, notMemberID := craft(t, b, room, "m.room.message", nil, mallory, msg("not a member"), nil, nil)
	empty := ""
	powerGrab, powerGrabID := craft(t, b, room, "m.room.power_levels", &empty, bob.UserID,
		map[string]any{"users": map[string]int{string(bob.UserID): 100}}, nil, nil)
	tampered, tamperedID := craft(t, b, room, "m.room.message", nil, bob.UserID, msg("original"), nil, func(p *pdu.PDU) {
		p.Content = []byte(`{"msgtype":"m.text","body":"tampered"}`)
	})
	good, goodID := craft(t, b, room, "m.room.message", nil, bob.UserID, msg("good"), nil, nil)

	resp, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: "bad-events-1",
		Origin: b.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{forged, notMember, powerGrab, tampered, good}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		id      id.EventID
		errPart string
	}{{forgedID, "signature"}, {notMemberID, "rejected"}, {powerGrabID, "rejected"}, {tamperedID, ""}, {goodID, ""}} {
		r, ok := resp.PDUs[want.id]
		if !ok || (want.errPart == "") != (r.Error == "") || !strings.Contains(r.Error, want.errPart) {
			t.Fatalf("result for %s: %+v (want error containing %q) in %+v", want.id, r, want.errPart, resp.PDUs)
		}
	}
	// Rejected events are invisible to alice; the tampered one is redacted.
	if _, err := alice.GetEvent(ctx, room, notMemberID); err == nil {
		t.Fatal("rejected event is visible")
	}
	if err := hasBody(ctx, alice, room, "good"); err != nil {
		t.Fatal(err)
	}
	ev, err := alice.GetEvent(ctx, room, tamperedID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Content.Raw) != 0 {
		t.Fatalf("event with a bad hash is not redacted: %v", ev.Content.Raw)
	}
	var pl event.PowerLevelsEventContent
	if err := alice.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil || pl.GetUserLevel(bob.UserID) == 100 {
		t.Fatalf("power grab went through: %v %v", pl.Users, err)
	}

	// A repeated transaction id gets the same answer and changes nothing.
	again, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: "bad-events-1",
		Origin: b.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{}})
	if err != nil || len(again.PDUs) != len(resp.PDUs) {
		t.Fatalf("retried transaction: %+v %v", again, err)
	}

	// A transaction must come from the server that signs the request.
	_, err = bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: "spoof",
		Origin: "evil.example", PDUs: []json.RawMessage{}})
	if status(err) != 403 {
		t.Fatalf("spoofed origin: %v", err)
	}
}

func TestFederationServerACL(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1] // b is 127.0.0.1:<port>: an IP literal the ACL can name
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, b, "carol")
	room := sharedRoom(t, a, b, alice, bob, 1)
	if _, err := bob.SendText(ctx, room, "before the acl"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees bob", func() error { return hasBody(ctx, alice, room, "before the acl") })

	if _, err := alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{
		"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true}); err != nil {
		t.Fatal(err)
	}
	// Bob's messages no longer get in.
	if _, err := bob.SendText(ctx, room, "after the acl"); err != nil {
		t.Fatal(err)
	}
	bf := b.App.Server.Federation()
	ext, _, err := bf.Rooms.Extremities(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := hasBody(ctx, alice, room, "after the acl"); err == nil {
		t.Fatal("a denied server's message got in")
	}
	// Every protected endpoint refuses it.
	if _, err := bf.Client.GetStateIDs(ctx, a.Name, room, ext[0]); status(err) != 403 {
		t.Fatalf("state_ids from a denied server: %v", err)
	}
	if _, err := bf.Client.Backfill(ctx, &mfed.ReqBackfill{ServerName: a.Name, RoomID: room, Limit: 5, BackfillFrom: ext}); status(err) != 403 {
		t.Fatalf("backfill from a denied server: %v", err)
	}
	if _, err := bf.Client.MakeJoin(ctx, &mfed.ReqMakeJoin{RoomID: room, UserID: carol.UserID, Via: a.Name, SupportedVersions: []id.RoomVersion{"12"}}); errcode(err) != "M_FORBIDDEN" {
		t.Fatalf("make_join from a denied server: %v", err)
	}
	// B still holds the room, so carol's join happens there; A refuses it.
	if _, err := carol.JoinRoom(ctx, "#fed:"+a.Name, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if m, err := alice.JoinedMembers(ctx, room); err != nil || len(m.Joined) != 2 {
		t.Fatalf("members on a: %v %v", m, err)
	}
	raw, eid := craft(t, b, room, "m.room.message", nil, bob.UserID, map[string]any{"msgtype": "m.text", "body": "direct"}, nil, nil)
	resp, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: "acl-1", Origin: b.Name,
		OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{raw}})
	if err != nil || !strings.Contains(resp.PDUs[eid].Error, "ACL") {
		t.Fatalf("send from a denied server: %+v %v", resp, err)
	}
}

func TestFederationInvites(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")

	// An invite-only room: bob gets in by invite only.
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "before bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err == nil {
		t.Fatal("joined an invite-only room without an invite")
	}
	if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("remote invite: %v", err)
	}
	// B recorded the invite (countersigned), with the room's stripped state.
	bf := b.App.Server.Federation()
	m, err := bf.Rooms.MembershipOf(ctx, bob.UserID, room.RoomID)
	if err != nil || m == nil || m.Membership != "invite" {
		t.Fatalf("invite on b: %+v %v", m, err)
	}
	inv, err := bf.Rooms.Event(ctx, m.EventID)
	if err != nil || !strings.Contains(string(inv.PDU), "invite_room_state") || !strings.Contains(string(inv.PDU), "Secret") {
		t.Fatalf("invite event on b: %v %v", inv, err)
	}
	// Bob's client sees the preview in /sync's invite_state.
	sync, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	named := false
	if ir := sync.Rooms.Invite[room.RoomID]; ir != nil {
		for _, ev := range ir.State.Events {
			named = named || (ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "Secret")
		}
	}
	if !named {
		t.Fatalf("bob's invite_state lacks the room's name: %+v", sync.Rooms.Invite[room.RoomID])
	}
	// Bob accepts: joins through the inviting server.
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join after invite: %v", err)
	}
	if err := hasBody(ctx, bob, room.RoomID, "before bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctx, room.RoomID, "thanks"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees bob", func() error { return hasBody(ctx, alice, room.RoomID, "thanks") })

	// A second invite, rejected: the leave goes through make_leave/send_leave.
	room2, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom inviting a remote user: %v", err)
	}
	if _, err := bob.LeaveRoom(ctx, room2.RoomID); err != nil {
		t.Fatalf("rejecting a remote invite: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees the rejection", func() error {
		var mem event.MemberEventContent
		if err := alice.StateEvent(ctx, room2.RoomID, event.StateMember, string(bob.UserID), &mem); err != nil {
			return err
		}
		if mem.Membership != event.MembershipLeave {
			return fmt.Errorf("membership %s", mem.Membership)
		}
		return nil
	})
	if m, _ := bf.Rooms.MembershipOf(ctx, bob.UserID, room2.RoomID); m == nil || m.Membership != "leave" {
		t.Fatalf("rejected invite on b: %+v", m)
	}
}

// TestFederationThreeServersConverge: three servers, concurrent messages
// and a state conflict (two admins on two servers set the topic at the
// same moment); all three end with the same timeline set and state.
func TestFederationThreeServersConverge(t *testing.T) {
	srv := testenv.StartFederation(t, 3, nil)
	a, b, c := srv[0], srv[1], srv[2]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, c, "carol")
	room := sharedRoom(t, a, b, alice, bob, 2)
	if _, err := carol.JoinRoom(ctx, "#fed:"+a.Name, nil); err != nil {
		t.Fatal(err)
	}
	clients := []*mautrix.Client{alice, bob, carol}
	for _, cl := range clients {
		testenv.Eventually(t, 10*time.Second, "three members everywhere", func() error {
			m, err := cl.JoinedMembers(ctx, room)
			if err != nil {
				return err
			}
			if len(m.Joined) != 3 {
				return fmt.Errorf("%d members", len(m.Joined))
			}
			return nil
		})
	}
	// Everyone talks at once.
	done := make(chan error, 3)
	for i, cl := range clients {
		go func() {
			for j := 0; j < 5; j++ {
				if _, err := cl.SendText(ctx, room, fmt.Sprintf("%d-%d", i, j)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range clients {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, cl := range clients {
		testenv.Eventually(t, 15*time.Second, "all 15 messages", func() error {
			got, err := fedBodies(ctx, cl, room)
			if err != nil {
				return err
			}
			n := 0
			for _, g := range got {
				if len(g) == 3 && g[1] == '-' {
					n++
				}
			}
			if n != 15 {
				return fmt.Errorf("%d of 15", n)
			}
			return nil
		})
	}

	// A state conflict: alice makes bob and carol admins, then both set
	// the topic concurrently.
	var pl event.PowerLevelsEventContent
	if err := alice.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	if pl.Users == nil {
		pl.Users = map[id.UserID]int{}
	}
	pl.Users[bob.UserID], pl.Users[carol.UserID] = 100, 100
	if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*mautrix.Client{bob, carol} {
		testenv.Eventually(t, 10*time.Second, "power arrives", func() error {
			var got event.PowerLevelsEventContent
			if err := cl.StateEvent(ctx, room, event.StatePowerLevels, "", &got); err != nil {
				return err
			}
			if got.GetUserLevel(bob.UserID) != 100 || got.GetUserLevel(carol.UserID) != 100 {
				return fmt.Errorf("levels %v", got.Users)
			}
			return nil
		})
	}
	for _, cl := range []*mautrix.Client{bob, carol} {
		go func() {
			_, err := cl.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "by " + string(cl.UserID)})
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// A message from alice merges the forks.
	if _, err := alice.SendText(ctx, room, "merge"); err != nil {
		t.Fatal(err)
	}
	topicOf := func(cl *mautrix.Client) string {
		var tc event.TopicEventContent
		_ = cl.StateEvent(ctx, room, event.StateTopic, "", &tc)
		return tc.Topic
	}
	testenv.Eventually(t, 15*time.Second, "same topic on all servers", func() error {
		for _, cl := range clients {
			if err := hasBody(ctx, cl, room, "merge"); err != nil {
				return err
			}
		}
		ta, tb, tcar := topicOf(alice), topicOf(bob), topicOf(carol)
		if ta == "" || ta != tb || tb != tcar {
			return fmt.Errorf("topics %q %q %q", ta, tb, tcar)
		}
		return nil
	})
	t.Logf("converged on topic %q", topicOf(alice))
}

// TestFederationAWS runs a pair on the aws engine (DynamoDB, SQS FIFO and
// S3 stand-ins, each server with its own table and queues): remote join,
// messages both ways through SQS, catch-up after a restart.
func TestFederationAWS(t *testing.T) {
	srv := testenv.StartFederationOn(t, "aws", 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 3)
	if err := hasBody(ctx, bob, room, "history 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room, "over sqs"); err != nil {
		t.Fatal(err)
	}
	d := testenv.Eventually(t, 20*time.Second, "bob sees it", func() error { return hasBody(ctx, bob, room, "over sqs") })
	t.Logf("a → b delivery on aws: %s", d)
	if _, err := bob.SendText(ctx, room, "and back"); err != nil {
		t.Fatal(err)
	}
	d = testenv.Eventually(t, 20*time.Second, "alice sees it", func() error { return hasBody(ctx, alice, room, "and back") })
	t.Logf("b → a delivery on aws: %s", d)

	b.Stop()
	for i := 0; i < 5; i++ {
		if _, err := alice.SendText(ctx, room, fmt.Sprintf("missed %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	b.Restart()
	relogin(t, b, bob)
	d = testenv.Eventually(t, 30*time.Second, "bob catches up", func() error { return hasBody(ctx, bob, room, "missed 4") })
	t.Logf("b caught up on aws %s after its restart", d)
}

// TestFederationSenderLambda drives the federation queue through the
// FederationSender Lambda's handler (SQS batch in, partial batch failures
// out) instead of the in-process worker.
func TestFederationSenderLambda(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 0)
	a.StopSender()
	q := a.App.Queues[resources.FederationQueue.Name]
	batch := func() events.SQSEvent {
		t.Helper()
		var ev events.SQSEvent
		for len(ev.Records) == 0 {
			msgs, err := q.Receive(ctx, queue.MaxBatch, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				ev.Records = append(ev.Records, events.SQSMessage{MessageId: m.ID, Body: string(m.Body), ReceiptHandle: m.Receipt,
					Attributes: map[string]string{"MessageGroupId": m.Group, "ApproximateReceiveCount": fmt.Sprint(m.ReceiveCount)}})
			}
		}
		return ev
	}

	if _, err := alice.SendText(ctx, room, "via lambda"); err != nil {
		t.Fatal(err)
	}
	resp, err := a.App.HandleFederationSQS(ctx, batch())
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("handler: %+v %v", resp, err)
	}
	if err := hasBody(ctx, bob, room, "via lambda"); err != nil {
		t.Fatal(err)
	}

	// A destination down: the batch reports failures and the message comes
	// back after its backoff, with the same transaction.
	b.Stop()
	if _, err := alice.SendText(ctx, room, "after a failure"); err != nil {
		t.Fatal(err)
	}
	failing := batch()
	resp, err = a.App.HandleFederationSQS(ctx, failing)
	if err != nil || len(resp.BatchItemFailures) != len(failing.Records) {
		t.Fatalf("handler with b down: %+v %v", resp, err)
	}
	b.Restart()
	relogin(t, b, bob)
	retry := batch() // visible again once the backoff has passed
	if retry.Records[0].MessageId != failing.Records[0].MessageId {
		t.Fatalf("another message came first: %s", retry.Records[0].MessageId)
	}
	resp, err = a.App.HandleFederationSQS(ctx, retry)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("handler after b is back: %+v %v", resp, err)
	}
	if err := hasBody(ctx, bob, room, "after a failure"); err != nil {
		t.Fatal(err)
	}
}

// TestFederationRestrictedJoin: a room restricted to members of another
// room; the resident server vouches for the join (and countersigns it).
func TestFederationRestrictedJoin(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, b, "carol")
	lobby := sharedRoom(t, a, b, alice, bob, 0)
	inner, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
		Type: event.StateJoinRules, StateKey: new(""),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted",
			"allow": []map[string]any{{"type": "m.room_membership", "room_id": lobby}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, string(inner.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Name}}); err != nil {
		t.Fatalf("restricted join of a member of the allowed room: %v", err)
	}
	var mem event.MemberEventContent
	if err := alice.StateEvent(ctx, inner.RoomID, event.StateMember, string(bob.UserID), &mem); err != nil || mem.Membership != event.MembershipJoin {
		t.Fatalf("bob on a: %+v %v", mem, err)
	}
	if mem.JoinAuthorisedViaUsersServer != alice.UserID {
		t.Fatalf("join vouched for by %q", mem.JoinAuthorisedViaUsersServer)
	}
	// Carol is in no allowed room: refused.
	if _, err := carol.JoinRoom(ctx, string(inner.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Name}}); errcode(err) != "M_FORBIDDEN" {
		t.Fatalf("restricted join of a stranger: %v", err)
	}
}
