package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/goolm/session"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// TestEncryptedConversation is two E2EE clients talking through the
// server with real olm and megolm (mautrix-go's pure Go implementation):
// alice finds bob's device through /keys/query, checks its signature,
// claims one of its one-time keys, opens an olm session with it and sends
// bob a megolm room key in an olm-encrypted m.room_key; bob decrypts it
// and then decrypts alice's megolm-encrypted room message.
//
// The olm message travels by /sendToDevice and /sync when the server has
// them, else as an m.room.encrypted event in the room (read back with
// /messages); the megolm message is always a room event.
func TestEncryptedConversation(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := newOlmDevice(t, register(t, env, "alice", "pw"))
		bob := newOlmDevice(t, register(t, env, "bob", "pw"))
		alice.upload(t, env, 5, true)
		bob.upload(t, env, 5, true)

		room, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.c.UserID},
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}

		// Alice: bob's device keys, verified against bob's own signature.
		keys := queryKeys(t, alice.c, bob.c.UserID).DeviceKeys[bob.c.UserID][bob.c.DeviceID]
		bobEd, bobCurve := keys.Keys.GetEd25519(bob.c.DeviceID), keys.Keys.GetCurve25519(bob.c.DeviceID)
		raw, _ := json.Marshal(keys)
		if ok, err := signatures.VerifySignatureJSON(json.RawMessage(raw), bob.c.UserID, string(bob.c.DeviceID), bobEd); !ok || err != nil {
			t.Fatalf("bob's device keys do not verify: %v", err)
		}
		// …and one of his one-time keys, signed by that device.
		claimed, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			bob.c.UserID: {bob.c.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		var otk mautrix.OneTimeKey
		for _, k := range claimed.OneTimeKeys[bob.c.UserID][bob.c.DeviceID] {
			otk = k
		}
		if ok, err := signatures.VerifySignatureJSON(otk.RawData, bob.c.UserID, string(bob.c.DeviceID), bobEd); !ok || err != nil {
			t.Fatalf("claimed one-time key does not verify: %v", err)
		}
		olmOut, err := alice.acc.NewOutboundSession(bobCurve, otk.Key)
		if err != nil {
			t.Fatal(err)
		}

		// The megolm session for the room, shared in an m.room_key.
		group, err := session.NewMegolmOutboundSession()
		if err != nil {
			t.Fatal(err)
		}
		roomKey := map[string]any{
			"type":           "m.room_key",
			"sender":         alice.c.UserID,
			"sender_device":  alice.c.DeviceID,
			"keys":           map[string]any{"ed25519": alice.ed},
			"recipient":      bob.c.UserID,
			"recipient_keys": map[string]any{"ed25519": bobEd},
			"content": map[string]any{"algorithm": id.AlgorithmMegolmV1, "room_id": room.RoomID,
				"session_id": group.ID(), "session_key": group.Key()},
		}
		plain, _ := json.Marshal(roomKey)
		msgType, ciphertext, err := olmOut.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		if msgType != id.OlmMsgTypePreKey {
			t.Fatalf("first olm message has type %d", msgType)
		}
		olmContent := map[string]any{
			"algorithm":  id.AlgorithmOlmV1,
			"sender_key": alice.curve,
			"ciphertext": map[string]any{string(bobCurve): map[string]any{"type": msgType, "body": string(ciphertext)}},
		}
		body, olmPath := deliverOlm(t, env, alice, bob, room.RoomID, olmContent)
		t.Logf("olm message delivered by %s", olmPath)

		// Bob: the pre-key message opens his side of the olm session.
		var olmEv struct {
			SenderKey  id.Curve25519 `json:"sender_key"`
			Ciphertext map[id.Curve25519]struct {
				Type id.OlmMsgType `json:"type"`
				Body string        `json:"body"`
			} `json:"ciphertext"`
		}
		if err := json.Unmarshal(body, &olmEv); err != nil {
			t.Fatal(err)
		}
		mine := olmEv.Ciphertext[bob.curve]
		olmIn, err := bob.acc.NewInboundSessionFrom(&olmEv.SenderKey, mine.Body)
		if err != nil {
			t.Fatalf("bob cannot open the olm session: %v", err)
		}
		if err := bob.acc.RemoveOneTimeKeys(olmIn); err != nil {
			t.Fatal(err)
		}
		decrypted, err := olmIn.Decrypt(mine.Body, mine.Type)
		if err != nil {
			t.Fatalf("bob cannot decrypt the olm message: %v", err)
		}
		var gotKey struct {
			Type          string    `json:"type"`
			Sender        id.UserID `json:"sender"`
			Recipient     id.UserID `json:"recipient"`
			RecipientKeys struct {
				Ed25519 id.Ed25519 `json:"ed25519"`
			} `json:"recipient_keys"`
			Keys struct {
				Ed25519 id.Ed25519 `json:"ed25519"`
			} `json:"keys"`
			Content struct {
				RoomID     id.RoomID    `json:"room_id"`
				SessionID  id.SessionID `json:"session_id"`
				SessionKey string       `json:"session_key"`
			} `json:"content"`
		}
		if err := json.Unmarshal(decrypted, &gotKey); err != nil {
			t.Fatal(err)
		}
		// Bob checks the olm payload is for him and from the device the
		// server listed for alice.
		aliceKeys := queryKeys(t, bob.c, alice.c.UserID).DeviceKeys[alice.c.UserID][alice.c.DeviceID]
		if gotKey.Type != "m.room_key" || gotKey.Recipient != bob.c.UserID || gotKey.RecipientKeys.Ed25519 != bob.ed ||
			gotKey.Sender != alice.c.UserID || gotKey.Keys.Ed25519 != aliceKeys.Keys.GetEd25519(alice.c.DeviceID) ||
			olmEv.SenderKey != aliceKeys.Keys.GetCurve25519(alice.c.DeviceID) || gotKey.Content.RoomID != room.RoomID {
			t.Fatalf("room key payload %s", decrypted)
		}
		inbound, err := session.NewMegolmInboundSession([]byte(gotKey.Content.SessionKey))
		if err != nil {
			t.Fatal(err)
		}

		// Alice's encrypted message, through the room.
		inner, _ := json.Marshal(map[string]any{"type": "m.room.message", "room_id": room.RoomID,
			"content": map[string]any{"msgtype": "m.text", "body": "hello bob, this is secret"}})
		megolmCT, err := group.Encrypt(inner)
		if err != nil {
			t.Fatal(err)
		}
		sent, err := alice.c.SendMessageEvent(ctx, room.RoomID, event.EventEncrypted, map[string]any{
			"algorithm": id.AlgorithmMegolmV1, "sender_key": alice.curve, "device_id": alice.c.DeviceID,
			"session_id": group.ID(), "ciphertext": string(megolmCT)})
		if err != nil {
			t.Fatal(err)
		}
		ev := findEvent(t, bob.c, room.RoomID, sent.EventID)
		var enc struct {
			SessionID  id.SessionID `json:"session_id"`
			Ciphertext string       `json:"ciphertext"`
		}
		if err := json.Unmarshal(ev.Content.VeryRaw, &enc); err != nil {
			t.Fatal(err)
		}
		if enc.SessionID != inbound.ID() {
			t.Fatalf("session %s, bob has %s", enc.SessionID, inbound.ID())
		}
		clear, index, err := inbound.Decrypt([]byte(enc.Ciphertext))
		if err != nil {
			t.Fatalf("bob cannot decrypt the room message: %v", err)
		}
		var msg struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		_ = json.Unmarshal(clear, &msg)
		if msg.Content.Body != "hello bob, this is secret" || index != 0 {
			t.Fatalf("decrypted %s (index %d)", clear, index)
		}

		// Bob answers on the olm session (now an ordinary message), which
		// alice decrypts: the session is established both ways.
		answerType, answer, err := olmIn.Encrypt([]byte(`{"type":"m.dummy","content":{}}`))
		if err != nil || answerType != id.OlmMsgTypeMsg {
			t.Fatalf("bob's answer: type %d %v", answerType, err)
		}
		if got, err := olmOut.Decrypt(string(answer), answerType); err != nil || string(got) != `{"type":"m.dummy","content":{}}` {
			t.Fatalf("alice decrypts bob's answer: %s %v", got, err)
		}
	})
}

// deliverOlm gets alice's olm event content to bob: by /sendToDevice and
// /sync if the server has them, else as a room event. It returns the
// content as bob received it and how it came.
func deliverOlm(t *testing.T, env *testenv.Env, alice, bob *olmDevice, room id.RoomID, content map[string]any) (json.RawMessage, string) {
	t.Helper()
	ctx := context.Background()
	st, _, _ := do(t, env, "GET", "/_matrix/client/v3/sync?timeout=0", bob.c.AccessToken, "")
	haveSync := st == 200
	if haveSync {
		since := syncBatch(t, env, bob, "")
		st, resp := doJSON(t, env, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/olm1", alice.c.AccessToken,
			map[string]any{"messages": map[string]any{string(bob.c.UserID): map[string]any{string(bob.c.DeviceID): content}}})
		if st == 200 {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				var resp struct {
					NextBatch string `json:"next_batch"`
					ToDevice  struct {
						Events []struct {
							Sender  id.UserID       `json:"sender"`
							Type    string          `json:"type"`
							Content json.RawMessage `json:"content"`
						} `json:"events"`
					} `json:"to_device"`
				}
				syncInto(t, env, bob, since, &resp)
				for _, ev := range resp.ToDevice.Events {
					if ev.Type == "m.room.encrypted" && ev.Sender == alice.c.UserID {
						return ev.Content, "to-device"
					}
				}
				since = resp.NextBatch
			}
			t.Fatalf("the to-device message never reached bob's /sync")
		} else if st != 404 {
			t.Fatalf("sendToDevice: %d %v", st, resp)
		}
	}
	sent, err := alice.c.SendMessageEvent(ctx, room, event.EventEncrypted, content)
	if err != nil {
		t.Fatal(err)
	}
	ev := findEvent(t, bob.c, room, sent.EventID)
	return ev.Content.VeryRaw, "room event"
}

func syncBatch(t *testing.T, env *testenv.Env, d *olmDevice, since string) string {
	var resp struct {
		NextBatch string `json:"next_batch"`
	}
	syncInto(t, env, d, since, &resp)
	return resp.NextBatch
}

func syncInto(t *testing.T, env *testenv.Env, d *olmDevice, since string, v any) {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=1000"
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	st, body, _ := do(t, env, "GET", path, d.c.AccessToken, "")
	if st != 200 {
		t.Fatalf("sync: %d %v", st, body)
	}
	b, _ := json.Marshal(body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// findEvent reads a room's timeline backwards until it finds the event.
func findEvent(t *testing.T, c *mautrix.Client, room id.RoomID, eid id.EventID) *event.Event {
	t.Helper()
	msgs, err := c.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range msgs.Chunk {
		if ev.ID == eid {
			return ev
		}
	}
	t.Fatalf("event %s not in %s's timeline", eid, room)
	return nil
}
