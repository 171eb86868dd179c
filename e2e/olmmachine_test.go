//go:build goolm

// This test drives mautrix-go's own E2EE client implementation (the
// crypto.OlmMachine) against the server. The crypto package needs an olm
// backend chosen at build time: the goolm tag selects the pure Go one
// (without it, crypto links libolm through cgo). Run it with
//
//	go test -tags goolm -run TestOlmMachines ./e2e/

package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// machineClient is a mautrix client with an OlmMachine, synced by hand.
type machineClient struct {
	t     *testing.T
	c     *mautrix.Client
	mach  *crypto.OlmMachine
	state mautrix.StateStore
	since string

	mu       sync.Mutex
	received []string // bodies of decrypted m.room.message events
	failures []error
}

func newMachineClient(t *testing.T, env *testenv.Env, name string) *machineClient {
	t.Helper()
	ctx := context.Background()
	m := &machineClient{t: t, c: register(t, env, name, "pw"), state: mautrix.NewMemoryStateStore()}
	m.c.StateStore = m.state
	m.mach = crypto.NewOlmMachine(m.c, nil, crypto.NewMemoryStore(nil), m.state.(crypto.StateStore))
	if err := m.mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("%s publishing keys: %v", name, err)
	}
	syncer := mautrix.NewDefaultSyncer()
	syncer.OnEvent(m.c.StateStoreSyncHandler)
	syncer.OnSync(m.mach.ProcessSyncResponse)
	syncer.OnEventType(event.StateMember, m.mach.HandleMemberEvent)
	syncer.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) {
		dec, err := m.mach.DecryptMegolmEvent(ctx, evt)
		m.mu.Lock()
		defer m.mu.Unlock()
		if err != nil {
			m.failures = append(m.failures, err)
			return
		}
		if msg, ok := dec.Content.Parsed.(*event.MessageEventContent); ok {
			m.received = append(m.received, msg.Body)
		}
	})
	m.c.Syncer = syncer
	return m
}

// syncOnce runs one /sync and feeds it to the syncer (and so the machine).
func (m *machineClient) syncOnce() {
	m.t.Helper()
	ctx := context.Background()
	resp, err := m.c.SyncRequest(ctx, 500, m.since, "", false, event.PresenceOnline)
	if err != nil {
		m.t.Fatalf("%s sync: %v", m.c.UserID, err)
	}
	if err := m.c.Syncer.ProcessResponse(ctx, resp, m.since); err != nil {
		m.t.Fatalf("%s processing sync: %v", m.c.UserID, err)
	}
	m.since = resp.NextBatch
}

// sendEncrypted encrypts a text message for the room's members (sharing
// the megolm session with their devices first when needed) and sends it.
func (m *machineClient) sendEncrypted(room id.RoomID, body string) {
	m.t.Helper()
	ctx := context.Background()
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
	enc, err := m.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, content)
	if errors.Is(err, crypto.ErrNoGroupSession) || errors.Is(err, crypto.ErrSessionExpired) || errors.Is(err, crypto.ErrSessionNotShared) {
		members, err := m.state.GetRoomJoinedOrInvitedMembers(ctx, room)
		if err != nil {
			m.t.Fatal(err)
		}
		if err := m.mach.ShareGroupSession(ctx, room, members); err != nil {
			m.t.Fatalf("%s sharing the group session: %v", m.c.UserID, err)
		}
		enc, err = m.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, content)
		if err != nil {
			m.t.Fatal(err)
		}
	} else if err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.c.SendMessageEvent(ctx, room, event.EventEncrypted, enc); err != nil {
		m.t.Fatal(err)
	}
}

// await syncs until want was decrypted (or fails after a while).
func (m *machineClient) await(want string) {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		m.syncOnce()
		m.mu.Lock()
		got, fails := append([]string(nil), m.received...), append([]error(nil), m.failures...)
		m.mu.Unlock()
		for _, b := range got {
			if b == want {
				return
			}
		}
		if len(fails) > 0 {
			m.t.Fatalf("%s could not decrypt: %v", m.c.UserID, fails)
		}
	}
	m.t.Fatalf("%s never decrypted %q", m.c.UserID, want)
}

func TestOlmMachines(t *testing.T) {
	forEachEngine(t, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := newMachineClient(t, env, "alice")
		bob := newMachineClient(t, env, "bob")
		room, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.c.UserID},
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		alice.syncOnce()
		bob.syncOnce()
		if ok, _ := alice.state.IsEncrypted(ctx, room.RoomID); !ok {
			t.Fatalf("alice's client does not see the room as encrypted")
		}

		alice.sendEncrypted(room.RoomID, "hello from alice's olm machine")
		bob.await("hello from alice's olm machine")
		bob.sendEncrypted(room.RoomID, "and hello back from bob")
		alice.await("and hello back from bob")

		// Cross-signing with mautrix's implementation: both publish keys
		// (the first upload needs no password), alice signs her device with
		// her self-signing key, bob signs alice's master key with his
		// user-signing key; bob's machine then trusts alice's device
		// through the signatures the server merged into /keys/query.
		for _, m := range []*machineClient{alice, bob} {
			keys, err := m.mach.GenerateCrossSigningKeys()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.mach.PublishCrossSigningKeys(ctx, keys, nil); err != nil {
				t.Fatalf("%s publishing cross-signing keys: %v", m.c.UserID, err)
			}
		}
		if err := alice.mach.SignOwnDevice(ctx, alice.mach.OwnIdentity()); err != nil {
			t.Fatalf("alice signing her device: %v", err)
		}
		aliceKeys, err := bob.mach.GetCrossSigningPublicKeys(ctx, alice.c.UserID)
		if err != nil || aliceKeys == nil {
			t.Fatalf("bob fetching alice's cross-signing keys: %+v %v", aliceKeys, err)
		}
		if err := bob.mach.SignUser(ctx, alice.c.UserID, aliceKeys.MasterKey); err != nil {
			t.Fatalf("bob signing alice: %v", err)
		}
		devices, err := bob.mach.FetchKeys(ctx, []id.UserID{alice.c.UserID}, true)
		if err != nil {
			t.Fatal(err)
		}
		dev := devices[alice.c.UserID][alice.c.DeviceID]
		if dev == nil {
			t.Fatalf("bob does not see alice's device: %v", devices)
		}
		if trust, err := bob.mach.ResolveTrustContext(ctx, dev); err != nil || trust != id.TrustStateCrossSignedVerified {
			t.Fatalf("bob's trust in alice's device: %s %v", trust, err)
		}
	})
}
