package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

const dehydratedPath = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

// newDehydratedDevice is an olm account for a dehydrated device of user:
// its device id is its curve25519 key, as MSC3814 asks.
func newDehydratedDevice(t *testing.T, user id.UserID) *olmDevice {
	t.Helper()
	d := newOlmDevice(t, &mautrix.Client{UserID: user})
	d.c.DeviceID = id.DeviceID(d.curve)
	return d
}

// dehydratedBody is a PUT /dehydrated_device body for d.
func dehydratedBody(t *testing.T, d *olmDevice, name string, otks int) map[string]any {
	t.Helper()
	keys := d.deviceKeys(t)
	delete(keys, "signatures")
	keys["dehydrated"] = true
	keys = d.sign(t, keys)
	one, fb := d.oneTimeKeys(t, otks, true)
	return map[string]any{"device_id": d.c.DeviceID, "initial_device_display_name": name,
		"device_data": map[string]any{"algorithm": "org.matrix.msc3814.v2", "device_pickle": "encrypted-" + name, "nonce": "n"},
		"device_keys": keys, "one_time_keys": one, "fallback_keys": fb}
}

func dehydratedEvents(d *olmDevice) string {
	return dehydratedPath + "/" + url.PathEscape(string(d.c.DeviceID)) + "/events"
}

func TestDehydratedDevice(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := register(t, env, "alice", "pw")
		bob := register(t, env, "bob", "pw")
		tok := alice.AccessToken

		if st, body := doJSON(t, env, http.MethodGet, "/_matrix/client/versions", "", nil); st != 200 ||
			body["unstable_features"].(map[string]any)["org.matrix.msc3814"] != true {
			t.Fatalf("versions: %v", body)
		}
		if st, body := doJSON(t, env, http.MethodGet, dehydratedPath, tok, nil); st != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("GET before any upload: %d %v", st, body)
		}

		// Bad uploads are refused and leave nothing behind.
		d1 := newDehydratedDevice(t, alice.UserID)
		for _, tc := range []struct {
			name    string
			mutate  func(map[string]any)
			errcode string
		}{
			{"no device_data", func(b map[string]any) { delete(b, "device_data") }, "M_MISSING_PARAM"},
			{"no algorithm", func(b map[string]any) { b["device_data"] = map[string]any{"x": 1} }, "M_MISSING_PARAM"},
			{"no device id", func(b map[string]any) { delete(b, "device_id") }, "M_MISSING_PARAM"},
			{"no device keys", func(b map[string]any) { delete(b, "device_keys") }, "M_MISSING_PARAM"},
			{"keys of another device", func(b map[string]any) { b["device_id"] = "OTHER" }, "M_INVALID_PARAM"},
			{"device id in use", func(b map[string]any) { b["device_id"] = alice.DeviceID }, "M_INVALID_PARAM"},
		} {
			body := dehydratedBody(t, d1, "bad", 1)
			tc.mutate(body)
			if st, resp := doJSON(t, env, http.MethodPut, dehydratedPath, tok, body); st != 400 || resp["errcode"] != tc.errcode {
				t.Fatalf("%s: %d %v", tc.name, st, resp)
			}
		}
		devs, err := alice.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 1 {
			t.Fatalf("devices after refused uploads: %+v %v", devs, err)
		}

		// A good upload: a device others can encrypt to.
		st, resp := doJSON(t, env, http.MethodPut, dehydratedPath, tok, dehydratedBody(t, d1, "first", 2))
		if st != 200 || resp["device_id"] != string(d1.c.DeviceID) {
			t.Fatalf("PUT: %d %v", st, resp)
		}
		st, resp = doJSON(t, env, http.MethodGet, dehydratedPath, tok, nil)
		data, _ := resp["device_data"].(map[string]any)
		if st != 200 || resp["device_id"] != string(d1.c.DeviceID) || data["device_pickle"] != "encrypted-first" {
			t.Fatalf("GET: %d %v", st, resp)
		}
		q := queryKeys(t, bob, alice.UserID)
		dk, ok := q.DeviceKeys[alice.UserID][d1.c.DeviceID]
		if !ok || dk.Keys.GetEd25519(d1.c.DeviceID) != d1.ed || dk.Unsigned["device_display_name"] != "first" {
			t.Fatalf("bob does not see the dehydrated device: %+v", q.DeviceKeys)
		}
		claim, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			alice.UserID: {d1.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil || len(claim.OneTimeKeys[alice.UserID][d1.c.DeviceID]) != 1 {
			t.Fatalf("claim: %+v %v", claim, err)
		}

		// Bob sends it a message; the events endpoint hands it out in
		// batches and deletes nothing.
		if _, err := bob.SendToDevice(ctx, event.Type{Type: "m.room.encrypted", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.UserID: {d1.c.DeviceID: {Raw: map[string]any{"ciphertext": "x"}}}}}); err != nil {
			t.Fatal(err)
		}
		st, resp = doJSON(t, env, http.MethodPost, dehydratedEvents(d1), tok, map[string]any{})
		evs, _ := resp["events"].([]any)
		next, _ := resp["next_batch"].(string)
		if st != 200 || len(evs) != 1 || next == "" || evs[0].(map[string]any)["sender"] != string(bob.UserID) {
			t.Fatalf("events: %d %v", st, resp)
		}
		st, resp = doJSON(t, env, http.MethodPost, dehydratedEvents(d1), tok, map[string]any{"next_batch": next})
		if evs, _ := resp["events"].([]any); st != 200 || len(evs) != 0 || resp["next_batch"] == nil {
			t.Fatalf("events after next_batch: %d %v", st, resp)
		}
		st, resp = doJSON(t, env, http.MethodGet, dehydratedEvents(d1), tok, nil)
		if evs, _ := resp["events"].([]any); st != 200 || len(evs) != 1 {
			t.Fatalf("events again from the start: %d %v", st, resp)
		}
		if st, resp := doJSON(t, env, http.MethodPost, dehydratedEvents(d1), tok, map[string]any{"next_batch": "nope"}); st != 400 || resp["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("bad next_batch: %d %v", st, resp)
		}
		if st, resp := doJSON(t, env, http.MethodPost, dehydratedPath+"/"+string(alice.DeviceID)+"/events", tok, map[string]any{}); st != 403 || resp["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("events of a device that is not the dehydrated one: %d %v", st, resp)
		}
		if st, _ := doJSON(t, env, http.MethodPost, dehydratedEvents(d1), bob.AccessToken, map[string]any{}); st != 403 {
			t.Fatalf("bob read alice's dehydrated device: %d", st)
		}

		// A new upload replaces the old device, keys and all.
		d2 := newDehydratedDevice(t, alice.UserID)
		if st, resp := doJSON(t, env, http.MethodPut, dehydratedPath, tok, dehydratedBody(t, d2, "second", 1)); st != 200 || resp["device_id"] != string(d2.c.DeviceID) {
			t.Fatalf("second PUT: %d %v", st, resp)
		}
		q = queryKeys(t, bob, alice.UserID)
		if _, old := q.DeviceKeys[alice.UserID][d1.c.DeviceID]; old || q.DeviceKeys[alice.UserID][d2.c.DeviceID].DeviceID != d2.c.DeviceID {
			t.Fatalf("after replacement: %+v", q.DeviceKeys[alice.UserID])
		}
		if _, err := alice.GetDeviceInfo(ctx, d1.c.DeviceID); err == nil {
			t.Fatal("the replaced device still exists")
		}
		if st, _ := doJSON(t, env, http.MethodPost, dehydratedEvents(d1), tok, map[string]any{}); st != 403 {
			t.Fatalf("events of the replaced device: %d", st)
		}

		// DELETE removes it; a second DELETE finds nothing.
		if st, resp := doJSON(t, env, http.MethodDelete, dehydratedPath, tok, nil); st != 200 || resp["device_id"] != string(d2.c.DeviceID) {
			t.Fatalf("DELETE: %d %v", st, resp)
		}
		if _, err := alice.GetDeviceInfo(ctx, d2.c.DeviceID); err == nil {
			t.Fatal("the deleted device still exists")
		}
		for _, m := range []string{http.MethodGet, http.MethodDelete} {
			if st, resp := doJSON(t, env, m, dehydratedPath, tok, nil); st != 404 || resp["errcode"] != "M_NOT_FOUND" {
				t.Fatalf("%s after DELETE: %d %v", m, st, resp)
			}
		}
		// Deleting it as an ordinary device also ends it.
		d3 := newDehydratedDevice(t, alice.UserID)
		// DELETE /devices/{deviceId} with a "/" in the id does not reach its
		// route on the Lambda path (algnhsa unescapes the path): use an id
		// without one here.
		d3.c.DeviceID = id.DeviceID(strings.ReplaceAll(string(d3.c.DeviceID), "/", "_"))
		if st, _ := doJSON(t, env, http.MethodPut, dehydratedPath, tok, dehydratedBody(t, d3, "third", 1)); st != 200 {
			t.Fatal("third PUT")
		}
		if err := deleteDeviceWithPassword(ctx, alice, d3.c.DeviceID); err != nil {
			t.Fatal(err)
		}
		if st, _ := doJSON(t, env, http.MethodGet, dehydratedPath, tok, nil); st != 404 {
			t.Fatalf("GET after deleting the device through /devices: %d", st)
		}
		if st, _ := doJSON(t, env, http.MethodGet, dehydratedPath, "", nil); st != 401 {
			t.Fatalf("anonymous GET: %d", st)
		}
	})
}
