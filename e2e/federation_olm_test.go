//go:build goolm

package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// newFedMachineClient is newMachineClient for a user of a federation test.
func newFedMachineClient(t *testing.T, s *testenv.FedServer, name string) *machineClient {
	t.Helper()
	ctx := context.Background()
	m := &machineClient{t: t, c: fedUser(t, s, name), state: mautrix.NewMemoryStateStore()}
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
	// Across servers the room key (a to-device EDU) may arrive a sync
	// after the event it opens (a PDU): like real clients, keep such
	// events and try them again after each sync.
	var pending []*event.Event
	decrypt := func(ctx context.Context, evt *event.Event) {
		dec, err := m.mach.DecryptMegolmEvent(ctx, evt)
		m.mu.Lock()
		defer m.mu.Unlock()
		switch {
		case errors.Is(err, crypto.ErrNoSessionFound):
			pending = append(pending, evt)
		case err != nil:
			m.failures = append(m.failures, err)
		default:
			if msg, ok := dec.Content.Parsed.(*event.MessageEventContent); ok {
				m.received = append(m.received, msg.Body)
			}
		}
	}
	syncer.OnEventType(event.EventEncrypted, decrypt)
	syncer.OnSync(func(ctx context.Context, _ *mautrix.RespSync, _ string) bool {
		m.mu.Lock()
		retry := pending
		pending = nil
		m.mu.Unlock()
		for _, evt := range retry {
			decrypt(ctx, evt)
		}
		return true
	})
	m.c.Syncer = syncer
	return m
}

// TestFederatedOlmMachines: two mautrix OlmMachines on two servers talk in
// an encrypted room. Everything crosses servers: key queries and one-time
// key claims (federation /user/keys/*), the olm-encrypted room keys
// (m.direct_to_device), the megolm events, and the cross-signing keys and
// signatures (device-list EDUs) that make bob trust alice's device.
func TestFederatedOlmMachines(t *testing.T) {
	for _, engine := range []string{"embedded", "aws"} {
		t.Run(engine, func(t *testing.T) { federatedOlmMachines(t, testenv.StartFederationOn(t, engine, 2, nil)) })
	}
}

func federatedOlmMachines(t *testing.T, srv []*testenv.FedServer) {
	a, b := srv[0], srv[1]
	ctx := context.Background()
	alice := newFedMachineClient(t, a, "alice")
	bob := newFedMachineClient(t, b, "bob")
	room, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "secret",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.JoinRoom(ctx, "#secret:"+a.Name, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "alice sees bob joined", func() error {
		alice.syncOnce()
		if !alice.state.IsMembership(ctx, room.RoomID, bob.c.UserID, event.MembershipJoin) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	bob.syncOnce()
	if ok, _ := bob.state.IsEncrypted(ctx, room.RoomID); !ok {
		t.Fatal("bob's client does not see the room as encrypted")
	}

	alice.sendEncrypted(room.RoomID, "hello across servers")
	bob.await("hello across servers")
	bob.sendEncrypted(room.RoomID, "and back again")
	alice.await("and back again")

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
	testenv.Eventually(t, 20*time.Second, "bob trusts alice's device", func() error {
		aliceKeys, err := bob.mach.GetCrossSigningPublicKeys(ctx, alice.c.UserID)
		if err != nil || aliceKeys == nil {
			return fmt.Errorf("alice's cross-signing keys: %+v %v", aliceKeys, err)
		}
		if err := bob.mach.SignUser(ctx, alice.c.UserID, aliceKeys.MasterKey); err != nil {
			return fmt.Errorf("bob signing alice: %v", err)
		}
		devices, err := bob.mach.FetchKeys(ctx, []id.UserID{alice.c.UserID}, true)
		if err != nil {
			return err
		}
		dev := devices[alice.c.UserID][alice.c.DeviceID]
		if dev == nil {
			return fmt.Errorf("alice's device not seen: %v", devices)
		}
		if trust, err := bob.mach.ResolveTrustContext(ctx, dev); err != nil || trust != id.TrustStateCrossSignedVerified {
			return fmt.Errorf("trust %s %v", trust, err)
		}
		return nil
	})
}
