package keys_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/keys"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// signer is a device's ed25519 identity for tests.
type signer struct {
	user id.UserID
	dev  id.DeviceID
	pub  string
	priv ed25519.PrivateKey
}

func newSigner(t testing.TB, u id.UserID, d id.DeviceID) *signer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{user: u, dev: d, pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign adds the device's signature to obj (the spec's JSON signing).
func (s *signer) sign(t testing.TB, obj map[string]any) json.RawMessage {
	t.Helper()
	unsigned := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			unsigned[k] = v
		}
	}
	canon, err := canonicaljson.Marshal(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(s.priv, canon))
	obj["signatures"] = map[string]any{string(s.user): map[string]string{"ed25519:" + string(s.dev): sig}}
	b, _ := json.Marshal(obj)
	return b
}

func (s *signer) deviceKeys(t testing.TB) json.RawMessage {
	return s.sign(t, map[string]any{
		"user_id": s.user, "device_id": s.dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + string(s.dev): s.pub, "curve25519:" + string(s.dev): "curve-" + string(s.dev)},
	})
}

func (s *signer) otk(t testing.TB, n int, fallback bool) json.RawMessage {
	obj := map[string]any{"key": fmt.Sprintf("otk-key-%d", n)}
	if fallback {
		obj["fallback"] = true
	}
	return s.sign(t, obj)
}

type noDevices struct{}

func (noDevices) Devices(context.Context, id.UserID) ([]accounts.Device, error) { return nil, nil }

type noRooms struct{}

func (noRooms) UserRooms(context.Context, id.UserID) ([]rooms.MembershipRecord, error) {
	return nil, nil
}
func (noRooms) CurrentState(context.Context, id.RoomID, string) ([]*rooms.Event, error) {
	return nil, nil
}

// TestConcurrentClaims races many claimers (as separate service instances,
// like separate Lambda processes) for a device's one-time keys: every key
// must be handed out exactly once, and the losers get the fallback key.
func TestConcurrentClaims(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			ctx := context.Background()
			const user, dev = id.UserID("@alice:test"), id.DeviceID("ALICE")
			sg := newSigner(t, user, dev)
			owner := keys.New(tb, "test", noRooms{}, noDevices{}, nil, nil)
			const keysUploaded, claimers = 30, 60
			otks := map[string]json.RawMessage{}
			for i := range keysUploaded {
				otks[fmt.Sprintf("signed_curve25519:K%03d", i)] = sg.otk(t, i, false)
			}
			counts, err := owner.Upload(ctx, user, dev, &keys.UploadRequest{
				DeviceKeys:   sg.deviceKeys(t),
				OneTimeKeys:  otks,
				FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB1": sg.otk(t, 999, true)},
			})
			if err != nil || counts["signed_curve25519"] != keysUploaded {
				t.Fatalf("upload: %v %v", counts, err)
			}
			var mu sync.Mutex
			got := map[string]int{}
			var wg sync.WaitGroup
			for i := range claimers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					svc := keys.New(tb, "test", noRooms{}, noDevices{}, nil, nil)
					res, err := svc.Claim(ctx, map[id.UserID]map[id.DeviceID]string{user: {dev: "signed_curve25519"}}, 0)
					if err != nil {
						t.Errorf("claimer %d: %v", i, err)
						return
					}
					for name := range res.OneTimeKeys[user][dev] {
						mu.Lock()
						got[name]++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			for i := range keysUploaded {
				name := fmt.Sprintf("signed_curve25519:K%03d", i)
				if got[name] != 1 {
					t.Errorf("%s handed out %d times", name, got[name])
				}
			}
			if got["signed_curve25519:FB1"] != claimers-keysUploaded {
				t.Errorf("fallback handed out %d times, want %d (all claims: %v)", got["signed_curve25519:FB1"], claimers-keysUploaded, got)
			}
			counts, err = owner.OneTimeKeyCounts(ctx, user, dev)
			if err != nil || counts["signed_curve25519"] != 0 {
				t.Fatalf("counts after claims: %v %v", counts, err)
			}
			unused, err := owner.UnusedFallbackKeyTypes(ctx, user, dev)
			if err != nil || len(unused) != 0 {
				t.Fatalf("fallback still unused: %v %v", unused, err)
			}
			// A new fallback key is unused again.
			if _, err := owner.Upload(ctx, user, dev, &keys.UploadRequest{FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB2": sg.otk(t, 1000, true)}}); err != nil {
				t.Fatal(err)
			}
			if unused, _ = owner.UnusedFallbackKeyTypes(ctx, user, dev); !slices.Equal(unused, []string{"signed_curve25519"}) {
				t.Fatalf("unused fallback types %v", unused)
			}
		})
	}
}

// TestClaimOrder checks one-time keys come out in upload order.
func TestClaimOrder(t *testing.T) {
	tb := testtable.Open(t, "bolt")
	ctx := context.Background()
	const user, dev = id.UserID("@bob:test"), id.DeviceID("BOB")
	sg := newSigner(t, user, dev)
	s := keys.New(tb, "test", noRooms{}, noDevices{}, nil, nil)
	for i, name := range []string{"signed_curve25519:zzz", "signed_curve25519:aaa", "signed_curve25519:mmm"} {
		if _, err := s.Upload(ctx, user, dev, &keys.UploadRequest{OneTimeKeys: map[string]json.RawMessage{name: sg.otk(t, i, false)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"signed_curve25519:zzz", "signed_curve25519:aaa", "signed_curve25519:mmm"} {
		name, key, err := s.ClaimKey(ctx, user, dev, "signed_curve25519")
		if err != nil || name != want || key == nil {
			t.Fatalf("claim: %s %s %v, want %s", name, key, err, want)
		}
	}
	if name, key, err := s.ClaimKey(ctx, user, dev, "signed_curve25519"); err != nil || key != nil {
		t.Fatalf("claim from an empty device: %s %s %v", name, key, err)
	}
}

// TestConcurrentBackupWrites has several writers upload overlapping keys to
// one backup version: the count must equal the number of distinct sessions,
// and for each session the best key must win.
func TestConcurrentBackupWrites(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			ctx := context.Background()
			const user = id.UserID("@carol:test")
			s := keys.New(tb, "test", noRooms{}, noDevices{}, nil, nil)
			v, err := s.CreateBackup(ctx, user, "m.megolm_backup.v1.curve25519-aes-sha2", json.RawMessage(`{"public_key":"abc"}`))
			if err != nil {
				t.Fatal(err)
			}
			const writers, sessions = 6, 40
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var ups []keys.RoomKeyUpload
					for i := range sessions {
						raw := fmt.Sprintf(`{"first_message_index":%d,"forwarded_count":0,"is_verified":false,"session_data":{"w":%d}}`, w+i%3, w)
						k, err := keys.ParseRoomKey(json.RawMessage(raw))
						if err != nil {
							t.Error(err)
							return
						}
						ups = append(ups, keys.RoomKeyUpload{Room: "!r:test", Session: id.SessionID(fmt.Sprintf("s%02d", i)), Key: k})
					}
					if _, err := s.PutRoomKeys(ctx, user, v, ups); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			info, err := s.GetBackup(ctx, user, v)
			if err != nil || info.Count != sessions {
				t.Fatalf("backup info %+v %v, want count %d", info, err, sessions)
			}
			got, err := s.RoomKeys(ctx, user, v, keys.RoomKeySelector{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range sessions {
				var k struct {
					FMI int `json:"first_message_index"`
				}
				_ = json.Unmarshal(got["!r:test"][id.SessionID(fmt.Sprintf("s%02d", i))], &k)
				if k.FMI != i%3 {
					t.Errorf("session %d kept first_message_index %d, want %d (writer 0's)", i, k.FMI, i%3)
				}
			}
		})
	}
}
