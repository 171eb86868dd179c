package federation_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/federation"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/infra/keyfile"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestRotateKey: rotation records the old key (listed in old_verify_keys
// of a self-signed response) and replaces the stored key; rotating the
// same old key again (a second process) returns the key stored by the
// first instead of replacing it once more.
func TestRotateKey(t *testing.T) {
	for _, engine := range testtable.Engines {
		for _, storeKind := range []string{"table", "file"} {
			t.Run(engine+"/"+storeKind, func(t *testing.T) {
				ctx := context.Background()
				tbl := testtable.Open(t, engine)
				var store signing.Store = signing.TableStore{T: tbl}
				if storeKind == "file" {
					store = keyfile.Store{Path: filepath.Join(t.TempDir(), "signing.key")}
				}
				cur, err := signing.LoadOrCreate(ctx, store)
				if err != nil {
					t.Fatal(err)
				}
				at := time.UnixMilli(1_700_000_000_000)
				next, err := federation.RotateKey(ctx, tbl, store, cur, at)
				if err != nil {
					t.Fatal(err)
				}
				if next.ID == cur.ID {
					t.Fatalf("same key id after rotation: %s", next.ID)
				}
				if loaded, err := signing.LoadOrCreate(ctx, store); err != nil || loaded.ID != next.ID {
					t.Fatalf("stored key %v %v, want %s", loaded, err, next.ID)
				}
				again, err := federation.RotateKey(ctx, tbl, store, cur, at.Add(time.Second))
				if err != nil || again.ID != next.ID {
					t.Fatalf("second rotation of the old key: %v %v, want %s", again, err, next.ID)
				}
				old, err := federation.OwnOldKeys(ctx, tbl)
				if err != nil {
					t.Fatal(err)
				}
				if len(old) != 1 || old[cur.ID].Key != cur.Pub || old[cur.ID].ExpiredTS != at.UnixMilli() {
					t.Fatalf("old keys %+v", old)
				}
				raw, err := federation.OwnKeysWithOld("a.example", next, old, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				var resp mfed.ServerKeyResponse
				if err := json.Unmarshal(raw, &resp); err != nil {
					t.Fatal(err)
				}
				if err := resp.VerifySelfSignature(); err != nil {
					t.Fatal(err)
				}
				ok, found := resp.OldVerifyKeys[cur.ID]
				if !found || ok.Key != cur.Pub || ok.ExpiredTS.UnixMilli() != at.UnixMilli() || len(resp.VerifyKeys) != 1 {
					t.Fatalf("key response %s", raw)
				}
			})
		}
	}
}

// TestKeyStoreOldKeys: a response with old_verify_keys stores both keys;
// the old one is valid until its expiry.
func TestKeyStoreOldKeys(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			ks := &federation.KeyStore{T: testtable.Open(t, engine)}
			oldKey, _ := signing.Generate()
			newKey, _ := signing.Generate()
			expired := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
			for i, k := range []*signing.Key{oldKey, newKey} {
				var old map[id.KeyID]federation.OldKey
				if i == 1 {
					old = map[id.KeyID]federation.OldKey{oldKey.ID: {Key: oldKey.Pub, ExpiredTS: expired.UnixMilli()}}
				}
				raw, err := federation.OwnKeysWithOld("other.example", k, old, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				var resp mfed.ServerKeyResponse
				if err := json.Unmarshal(raw, &resp); err != nil {
					t.Fatal(err)
				}
				if err := ks.StoreKeys(ctx, &resp); err != nil {
					t.Fatalf("store response %d: %v", i, err)
				}
			}
			got, valid, ok, err := ks.VerifyKey(ctx, "other.example", newKey.ID)
			if err != nil || !ok || got != newKey.Pub || valid.Before(time.Now()) {
				t.Fatalf("new key %v %v %v %v", got, valid, ok, err)
			}
			got, valid, ok, err = ks.VerifyKey(ctx, "other.example", oldKey.ID)
			if err != nil || !ok || got != oldKey.Pub || !valid.Equal(expired) {
				t.Fatalf("old key %v %v %v %v", got, valid, ok, err)
			}
		})
	}
}
