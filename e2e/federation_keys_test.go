package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// fedUpload publishes a device's keys (n one-time keys and a fallback key)
// through its own client.
func (d *olmDevice) fedUpload(t *testing.T, n int) {
	t.Helper()
	otks, fbks := d.oneTimeKeys(t, n, true)
	body := map[string]any{"device_keys": d.deviceKeys(t), "one_time_keys": otks, "fallback_keys": fbks}
	if _, err := d.c.MakeRequest(context.Background(), "POST", d.c.BuildClientURL("v3", "keys", "upload"), body, nil); err != nil {
		t.Fatalf("upload keys of %s: %v", d.c.DeviceID, err)
	}
}

// fedLogin logs a user in again: a new device.
func fedLogin(t *testing.T, s *testenv.FedServer, user id.UserID) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = s.HTTP
	resp, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(user)}, Password: "pw", StoreCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	c.UserID, c.AccessToken, c.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return c
}

// keyChanges is GET /keys/changes.
func keyChanges(ctx context.Context, c *mautrix.Client, from string) (changed, left []id.UserID, err error) {
	var resp struct {
		Changed []id.UserID `json:"changed"`
		Left    []id.UserID `json:"left"`
	}
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": from})
	_, err = c.MakeRequest(ctx, "GET", u, nil, &resp)
	return resp.Changed, resp.Left, err
}

// toDeviceOf syncs c once (no wait) and returns the to-device events of
// the given type and the next token.
func toDeviceOf(ctx context.Context, c *mautrix.Client, since, typ string) ([]*event.Event, string, error) {
	resp, err := c.SyncRequest(ctx, 0, since, "", false, "")
	if err != nil {
		return nil, since, err
	}
	var out []*event.Event
	for _, ev := range resp.ToDevice.Events {
		if ev.Type.Type == typ {
			out = append(out, ev)
		}
	}
	return out, resp.NextBatch, nil
}

func TestFederatedKeys(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { federatedKeys(t, testenv.StartFederation(t, 2, nil)) })
	t.Run("aws", func(t *testing.T) { federatedKeys(t, testenv.StartFederationOn(t, "aws", 2, nil)) })
}

func federatedKeys(t *testing.T, srv []*testenv.FedServer) {
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := newOlmDevice(t, fedUser(t, a, "alice"))
	bob := newOlmDevice(t, fedUser(t, b, "bob"))
	alice.fedUpload(t, 2)
	bob.fedUpload(t, 3)
	room := sharedRoom(t, a, b, alice.c, bob.c, 0)
	first, err := alice.c.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	since := first.NextBatch

	// Alice on A sees Bob's device, as his server signed it off.
	q := queryKeys(t, alice.c, bob.c.UserID)
	if len(q.Failures) != 0 {
		t.Fatalf("failures: %v", q.Failures)
	}
	dk, ok := q.DeviceKeys[bob.c.UserID][bob.c.DeviceID]
	if !ok || dk.Keys.GetEd25519(bob.c.DeviceID) != bob.ed || dk.Unsigned["device_display_name"] != "e2e" {
		t.Fatalf("bob's device over federation: %+v", q.DeviceKeys)
	}
	// And B sees Alice's (the other way round).
	if q := queryKeys(t, bob.c, alice.c.UserID); q.DeviceKeys[alice.c.UserID][alice.c.DeviceID].Keys.GetCurve25519(alice.c.DeviceID) != alice.curve {
		t.Fatalf("alice's device over federation: %+v", q)
	}

	// Claims go to B every time: three one-time keys, each once, then the
	// fallback key.
	seen := map[id.KeyID]bool{}
	for i := 0; i < 4; i++ {
		resp, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			bob.c.UserID: {bob.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.OneTimeKeys[bob.c.UserID][bob.c.DeviceID]
		if len(got) != 1 || len(resp.Failures) != 0 {
			t.Fatalf("claim %d: %+v", i, resp)
		}
		for kid, k := range got {
			if seen[kid] {
				t.Fatalf("one-time key %s handed out twice", kid)
			}
			seen[kid] = true
			if k.Fallback != (i == 3) {
				t.Fatalf("claim %d: fallback=%v", i, k.Fallback)
			}
		}
	}

	// Bob logs in on a second device and uploads its keys: B tells A,
	// and Alice's /keys/changes, /sync and next query show it.
	bob2 := newOlmDevice(t, fedLogin(t, b, bob.c.UserID))
	bob2.fedUpload(t, 1)
	testenv.Eventually(t, 20*time.Second, "alice's /keys/changes names bob", func() error {
		changed, _, err := keyChanges(ctx, alice.c, since)
		if err != nil {
			return err
		}
		if !slices.Contains(changed, bob.c.UserID) {
			return fmt.Errorf("changed = %v", changed)
		}
		return nil
	})
	resp, err := alice.c.SyncRequest(ctx, 0, since, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(resp.DeviceLists.Changed, bob.c.UserID) {
		t.Fatalf("sync device_lists: %+v", resp.DeviceLists)
	}
	since = resp.NextBatch
	testenv.Eventually(t, 10*time.Second, "alice's query sees bob's new device", func() error {
		q := queryKeys(t, alice.c, bob.c.UserID)
		if _, ok := q.DeviceKeys[bob.c.UserID][bob2.c.DeviceID]; !ok || len(q.DeviceKeys[bob.c.UserID]) != 2 {
			return fmt.Errorf("devices: %v", q.DeviceKeys[bob.c.UserID])
		}
		return nil
	})

	// Bob renames that device: B announces it, and A's cached copy of
	// Bob's device list (what Alice's query reads) carries the new name.
	if err := bob.c.SetDeviceInfo(ctx, bob2.c.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "bob's laptop"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "alice's query sees the device's new name", func() error {
		q := queryKeys(t, alice.c, bob.c.UserID)
		if dk, ok := q.DeviceKeys[bob.c.UserID][bob2.c.DeviceID]; !ok || dk.Unsigned["device_display_name"] != "bob's laptop" {
			return fmt.Errorf("bob's second device: %+v", dk)
		}
		return nil
	})

	// A to-device message from A reaches Bob's first device on B, once.
	_, err = alice.c.SendToDevice(ctx, event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob.c.UserID: {bob.c.DeviceID: {Raw: map[string]any{"n": 1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var bobSince string
	var got []*event.Event
	testenv.Eventually(t, 20*time.Second, "bob's device gets the message", func() error {
		evs, next, err := toDeviceOf(ctx, bob.c, bobSince, "org.example.ping")
		if err != nil {
			return err
		}
		bobSince = next
		got = append(got, evs...)
		if len(got) == 0 {
			return fmt.Errorf("nothing yet")
		}
		return nil
	})
	if len(got) != 1 || got[0].Sender != alice.c.UserID || got[0].Content.Raw["n"] != float64(1) {
		t.Fatalf("to-device over federation: %+v", got)
	}
	if evs, _, _ := toDeviceOf(ctx, bob2.c, "", "org.example.ping"); len(evs) != 0 {
		t.Fatalf("bob's other device got %d messages", len(evs))
	}

	// The same EDU twice (a retried transaction's content in a new one)
	// is delivered once.
	edu, _ := json.Marshal(map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
		"sender": bob.c.UserID, "type": "org.example.dup", "message_id": "dup-1",
		"messages": map[string]any{string(alice.c.UserID): map[string]any{"*": map[string]any{"x": true}}}}})
	bf := b.App.Server.Federation()
	for i := range 2 {
		if _, err := bf.Client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: a.Name, TxnID: fmt.Sprintf("dup-edu-%d", i),
			Origin: b.Name, OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{}, EDUs: []json.RawMessage{edu}}); err != nil {
			t.Fatal(err)
		}
	}
	dups, _, err := toDeviceOf(ctx, alice.c, "", "org.example.dup")
	if err != nil || len(dups) != 1 {
		t.Fatalf("duplicate EDU delivered %d times (%v)", len(dups), err)
	}

	// Bob deletes his second device: Alice hears of it and stops seeing it.
	if err := deleteDeviceWithPassword(ctx, bob.c, bob2.c.DeviceID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the deleted device disappears for alice", func() error {
		changed, _, err := keyChanges(ctx, alice.c, since)
		if err != nil {
			return err
		}
		q := queryKeys(t, alice.c, bob.c.UserID)
		if !slices.Contains(changed, bob.c.UserID) || len(q.DeviceKeys[bob.c.UserID]) != 1 {
			return fmt.Errorf("changed %v, devices %v", changed, q.DeviceKeys[bob.c.UserID])
		}
		return nil
	})

	// Bob leaves the only shared room: Alice's changes list him as left.
	if _, err := bob.c.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "bob is left", func() error {
		_, left, err := keyChanges(ctx, alice.c, since)
		if err != nil {
			return err
		}
		if !slices.Contains(left, bob.c.UserID) {
			return fmt.Errorf("left = %v", left)
		}
		return nil
	})
	// Without a shared room nothing is cached, but a query still asks B.
	if q := queryKeys(t, alice.c, bob.c.UserID); len(q.DeviceKeys[bob.c.UserID]) != 1 {
		t.Fatalf("query without a shared room: %+v", q.DeviceKeys)
	}
}

// deleteDeviceWithPassword deletes a device, completing the password stage.
func deleteDeviceWithPassword(ctx context.Context, c *mautrix.Client, dev id.DeviceID) error {
	err := c.DeleteDevice(ctx, dev, &mautrix.ReqDeleteDevice[any]{})
	var he mautrix.HTTPError
	if err == nil {
		return nil
	}
	if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != 401 {
		return err
	}
	var uia struct {
		Session string `json:"session"`
	}
	_ = json.Unmarshal([]byte(he.ResponseBody), &uia)
	return c.DeleteDevice(ctx, dev, &mautrix.ReqDeleteDevice[any]{Auth: map[string]any{"type": "m.login.password", "session": uia.Session,
		"identifier": map[string]any{"type": "m.id.user", "user": string(c.UserID)}, "password": "pw"}})
}

func TestFederatedKeysUnreachableServer(t *testing.T) {
	srv := testenv.StartFederation(t, 1, nil)
	ctx := context.Background()
	alice := fedUser(t, srv[0], "alice")
	ghost := id.UserID("@ghost:127.0.0.1:1") // nothing listens on port 1
	start := time.Now()
	var q mautrix.RespQueryKeys
	body := map[string]any{"device_keys": map[string]any{string(ghost): []string{}, string(alice.UserID): []string{}}, "timeout": 3000}
	if _, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "keys", "query"), body, &q); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Failures["127.0.0.1:1"]; !ok {
		t.Fatalf("failures: %v", q.Failures)
	}
	if _, ok := q.DeviceKeys[alice.UserID]; !ok {
		t.Fatalf("local keys are missing beside the failure: %+v", q.DeviceKeys)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("query took %s despite a 3 s timeout", d)
	}
	claim, err := alice.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{ghost: {"DEV": id.KeyAlgorithmSignedCurve25519}}, Timeout: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := claim.Failures["127.0.0.1:1"]; !ok {
		t.Fatalf("claim failures: %v", claim.Failures)
	}
}

// TestFederatedKeysEndpoints drives /user/devices and /user/keys/* directly
// as another server, including their bad inputs.
func TestFederatedKeysEndpoints(t *testing.T) {
	srv := testenv.StartFederation(t, 2, nil)
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := newOlmDevice(t, fedUser(t, a, "alice"))
	alice.fedUpload(t, 1)
	bf := b.App.Server.Federation()
	call := func(method string, path mfed.URLPath, body, out any) int {
		t.Helper()
		err := bf.Client.MakeRequest(ctx, a.Name, true, method, path, body, out)
		if err == nil {
			return 200
		}
		return status(err)
	}

	var devs struct {
		UserID   id.UserID `json:"user_id"`
		StreamID *int64    `json:"stream_id"`
		Devices  []struct {
			DeviceID    id.DeviceID        `json:"device_id"`
			Keys        mautrix.DeviceKeys `json:"keys"`
			DisplayName string             `json:"device_display_name"`
		} `json:"devices"`
	}
	if st := call("GET", mfed.URLPath{"v1", "user", "devices", alice.c.UserID}, nil, &devs); st != 200 {
		t.Fatalf("/user/devices: %d", st)
	}
	if devs.UserID != alice.c.UserID || devs.StreamID == nil || len(devs.Devices) != 1 ||
		devs.Devices[0].DisplayName != "e2e" || devs.Devices[0].Keys.Keys.GetEd25519(alice.c.DeviceID) != alice.ed {
		t.Fatalf("/user/devices: %+v", devs)
	}
	var claimed struct {
		OneTimeKeys map[id.UserID]map[id.DeviceID]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if st := call("POST", mfed.URLPath{"v1", "user", "keys", "claim"}, map[string]any{"one_time_keys": map[string]any{
		string(alice.c.UserID): map[string]string{string(alice.c.DeviceID): "signed_curve25519"}}}, &claimed); st != 200 ||
		len(claimed.OneTimeKeys[alice.c.UserID][alice.c.DeviceID]) != 1 {
		t.Fatalf("/user/keys/claim: %d %+v", st, claimed)
	}

	for _, tc := range []struct {
		name   string
		method string
		path   mfed.URLPath
		body   any
		want   int
	}{
		{"devices of a remote user", "GET", mfed.URLPath{"v1", "user", "devices", "@bob:" + b.Name}, nil, 400},
		{"devices of a bad user id", "GET", mfed.URLPath{"v1", "user", "devices", "nobody"}, nil, 400},
		{"query without device_keys", "POST", mfed.URLPath{"v1", "user", "keys", "query"}, map[string]any{}, 400},
		{"query with a bad list", "POST", mfed.URLPath{"v1", "user", "keys", "query"}, map[string]any{"device_keys": map[string]any{string(alice.c.UserID): 3}}, 400},
		{"claim without one_time_keys", "POST", mfed.URLPath{"v1", "user", "keys", "claim"}, map[string]any{}, 400},
	} {
		if st := call(tc.method, tc.path, tc.body, nil); st != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, st, tc.want)
		}
	}
	// Without X-Matrix: refused.
	if st, _ := fedDo(t, "POST", a.FedURL+"/_matrix/federation/v1/user/keys/query", "", `{"device_keys":{}}`); st != 401 {
		t.Fatalf("unauthenticated query: %d", st)
	}
	// A query for users of other servers answers only for ours.
	var q keysQueryAnswer
	if st := call("POST", mfed.URLPath{"v1", "user", "keys", "query"}, map[string]any{"device_keys": map[string]any{
		string(alice.c.UserID): []string{}, "@bob:" + b.Name: []string{}}}, &q); st != 200 || len(q.DeviceKeys) != 1 || q.DeviceKeys[alice.c.UserID] == nil {
		t.Fatalf("query: %d %+v", st, q)
	}
}

type keysQueryAnswer struct {
	DeviceKeys map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
}
