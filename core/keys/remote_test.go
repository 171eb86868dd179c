package keys_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/keys"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// oneRoom: @alice:test and @bob:remote are joined to !r:test.
type oneRoom struct{}

func (oneRoom) UserRooms(_ context.Context, u id.UserID) ([]rooms.MembershipRecord, error) {
	return []rooms.MembershipRecord{{RoomID: "!r:test", Membership: "join"}}, nil
}
func (oneRoom) CurrentState(context.Context, id.RoomID, string) ([]*rooms.Event, error) {
	member := func(u string) *rooms.Event {
		sk := u
		ev := &rooms.Event{RoomID: "!r:test"}
		ev.Type, ev.StateKey, ev.Content = "m.room.member", &sk, json.RawMessage(`{"membership":"join"}`)
		return ev
	}
	return []*rooms.Event{member("@alice:test"), member("@bob:remote")}, nil
}

// fakeRemote is bob's server: it answers /user/devices from its devices
// and counts the requests.
type fakeRemote struct {
	mu       sync.Mutex
	devices  []keys.UserDevice
	streamID int64
	fetches  int
	queries  int
	down     bool
	sent     []string
}

func (f *fakeRemote) QueryUserKeys(_ context.Context, server string, want map[id.UserID][]id.DeviceID) (*keys.QueryResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.down {
		return nil, errors.New("unreachable")
	}
	res := &keys.QueryResult{DeviceKeys: map[id.UserID]map[id.DeviceID]json.RawMessage{}}
	for u := range want {
		res.DeviceKeys[u] = map[id.DeviceID]json.RawMessage{}
		for _, d := range f.devices {
			res.DeviceKeys[u][d.DeviceID] = d.Keys
		}
	}
	return res, nil
}

func (f *fakeRemote) ClaimUserKeys(context.Context, string, map[id.UserID]map[id.DeviceID]string) (map[id.UserID]map[id.DeviceID]map[string]json.RawMessage, error) {
	return nil, errors.New("not in this test")
}

func (f *fakeRemote) UserDevices(_ context.Context, server string, u id.UserID) (*keys.UserDevices, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.down {
		return nil, errors.New("unreachable")
	}
	return &keys.UserDevices{UserID: u, StreamID: f.streamID, Devices: slices.Clone(f.devices)}, nil
}

func (f *fakeRemote) SendEDU(_ context.Context, dests []string, typ string, _ any) error {
	f.sent = append(f.sent, typ)
	return nil
}

func TestRemoteDeviceListCache(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			const alice, bob = id.UserID("@alice:test"), id.UserID("@bob:remote")
			svc := keys.New(testtable.Open(t, engine), "test", oneRoom{}, noDevices{}, nil, nil)
			fed := &fakeRemote{}
			svc.Fed = fed
			b1, b2, b3 := newSigner(t, bob, "B1"), newSigner(t, bob, "B2"), newSigner(t, bob, "B3")
			fed.devices = []keys.UserDevice{{DeviceID: "B1", Keys: b1.deviceKeys(t), DisplayName: "phone"}}
			pos, _ := svc.Position(ctx)

			query := func() map[id.DeviceID]json.RawMessage {
				t.Helper()
				res, err := svc.Query(ctx, alice, map[id.UserID][]id.DeviceID{bob: nil}, 0)
				if err != nil {
					t.Fatalf("query: %v", err)
				}
				if len(res.Failures) != 0 {
					t.Fatalf("query failures: %v", res.Failures)
				}
				return res.DeviceKeys[bob]
			}
			if got := query(); len(got) != 1 || got["B1"] == nil {
				t.Fatalf("first query: %s", got)
			}
			query()
			if fed.fetches != 1 || fed.queries != 0 {
				t.Fatalf("a shared-room user is fetched once and then cached: %d fetches, %d queries", fed.fetches, fed.queries)
			}
			// An update that follows on (prev_id = what we have) is applied.
			upd := func(d *signer, stream int64, prev ...int64) json.RawMessage {
				b, _ := json.Marshal(keys.DeviceListUpdate{UserID: bob, DeviceID: d.dev, StreamID: stream, PrevID: prev, Keys: d.deviceKeys(t)})
				return b
			}
			if err := svc.ApplyDeviceListUpdate(ctx, "remote", upd(b2, 1)); err != nil {
				t.Fatal(err)
			}
			if got := query(); len(got) != 2 || fed.fetches != 1 {
				t.Fatalf("after an update: %d devices, %d fetches", len(got), fed.fetches)
			}
			// From another server: refused.
			if err := svc.ApplyDeviceListUpdate(ctx, "evil", upd(b3, 2, 1)); err == nil {
				t.Fatal("an update about another server's user was accepted")
			}
			// A gap (stream 3 after 1): the list is fetched again at once.
			fed.devices = append(fed.devices, keys.UserDevice{DeviceID: "B2", Keys: b2.deviceKeys(t)}, keys.UserDevice{DeviceID: "B3", Keys: b3.deviceKeys(t)})
			fed.streamID = 3
			if err := svc.ApplyDeviceListUpdate(ctx, "remote", upd(b3, 3, 2)); err != nil {
				t.Fatal(err)
			}
			if fed.fetches != 2 {
				t.Fatalf("a gap did not resync: %d fetches", fed.fetches)
			}
			if got := query(); len(got) != 3 || fed.fetches != 2 {
				t.Fatalf("after the resync: %d devices, %d fetches", len(got), fed.fetches)
			}
			// Deletion.
			del, _ := json.Marshal(keys.DeviceListUpdate{UserID: bob, DeviceID: "B1", StreamID: 4, PrevID: []int64{3}, Deleted: true})
			if err := svc.ApplyDeviceListUpdate(ctx, "remote", del); err != nil {
				t.Fatal(err)
			}
			if got := query(); len(got) != 2 || got["B1"] != nil {
				t.Fatalf("after a deletion: %s", got)
			}
			changed, _, _, err := svc.ChangedSince(ctx, alice, pos)
			if err != nil || !slices.Contains(changed, bob) {
				t.Fatalf("changes: %v %v", changed, err)
			}
			// A device signed by someone else is not taken from the server.
			forged := newSigner(t, bob, "B9")
			fed.devices = []keys.UserDevice{{DeviceID: "B9", Keys: forged.sign(t, map[string]any{"user_id": bob, "device_id": "B9",
				"algorithms": []string{"x"}, "keys": map[string]string{"ed25519:B9": b1.pub, "curve25519:B9": "c"}})}}
			fed.streamID = 9
			if err := svc.ApplyDeviceListUpdate(ctx, "remote", upd(b3, 9, 8)); err != nil {
				t.Fatal(err)
			}
			if got := query(); got["B9"] != nil {
				t.Fatal("a device whose keys its own key did not sign was stored")
			}
		})
	}
}

func TestRemoteSigningKeysAndMembership(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			const alice, bob = id.UserID("@alice:test"), id.UserID("@bob:remote")
			svc := keys.New(testtable.Open(t, engine), "test", oneRoom{}, noDevices{}, nil, nil)
			fed := &fakeRemote{}
			svc.Fed = fed
			b1 := newSigner(t, bob, "B1")
			fed.devices = []keys.UserDevice{{DeviceID: "B1", Keys: b1.deviceKeys(t)}}
			master := func(pub string) json.RawMessage {
				b, _ := json.Marshal(map[string]any{"user_id": bob, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + pub: pub}})
				return b
			}
			query := func() *keys.QueryResult {
				t.Helper()
				res, err := svc.Query(ctx, alice, map[id.UserID][]id.DeviceID{bob: nil}, 0)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			if res := query(); res.MasterKeys[bob] != nil || fed.fetches != 1 {
				t.Fatalf("first query: %+v, %d fetches", res.MasterKeys, fed.fetches)
			}
			// The signing-key EDU lands in the synced copy.
			upd, _ := json.Marshal(keys.SigningKeyUpdate{UserID: bob, MasterKey: master(b1.pub)})
			if err := svc.ApplySigningKeyUpdate(ctx, "remote", upd); err != nil {
				t.Fatal(err)
			}
			if res := query(); !strings.Contains(string(res.MasterKeys[bob]), b1.pub) || fed.fetches != 1 {
				t.Fatalf("after the signing-key update: %s, %d fetches", res.MasterKeys[bob], fed.fetches)
			}
			// Bob's membership changes: the copy is dropped and fetched again.
			sk := string(bob)
			ev := &rooms.Event{RoomID: "!r:test"}
			ev.Type, ev.StateKey, ev.Content = "m.room.member", &sk, json.RawMessage(`{"membership":"leave"}`)
			svc.OnEvent(ctx, ev)
			query()
			if fed.fetches != 2 {
				t.Fatalf("a membership change did not drop the copy: %d fetches", fed.fetches)
			}
			// Their server down: a failure, not an error.
			svc.OnEvent(ctx, ev)
			fed.down = true
			res, err := svc.Query(ctx, alice, map[id.UserID][]id.DeviceID{bob: nil, alice: nil}, 0)
			if err != nil || res.Failures["remote"] == nil || res.DeviceKeys[alice] == nil {
				t.Fatalf("unreachable server: %+v %v", res, err)
			}
		})
	}
}
