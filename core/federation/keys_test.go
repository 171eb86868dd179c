package federation_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/cirrus-matrix/cirrus/core/federation"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestKeyStore(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			ks := &federation.KeyStore{T: testtable.Open(t, engine)}
			key, err := signing.Generate()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := federation.OwnKeys("other.example", key, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var resp mfed.ServerKeyResponse
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			// A response for another name than the one asked is refused.
			if err := ks.StoreKeys(federation.WithKeysFor(ctx, "victim.example"), &resp); err == nil {
				t.Fatal("stored keys of other.example when asking victim.example")
			}
			// A bad self-signature is refused.
			bad := resp
			bad.Raw = []byte(string(raw[:len(raw)-3]) + `"}`)
			if err := ks.StoreKeys(ctx, &bad); err == nil {
				t.Fatal("stored keys with a broken self-signature")
			}
			if err := ks.StoreKeys(federation.WithKeysFor(ctx, "other.example"), &resp); err != nil {
				t.Fatal(err)
			}
			got, err := ks.LoadKeys(ctx, "other.example", time.Minute)
			if err != nil || got == nil || !got.HasKey(key.ID) {
				t.Fatalf("load: %v %v", got, err)
			}
			k, valid, ok, err := ks.VerifyKey(ctx, "other.example", key.ID)
			if err != nil || !ok || k != key.Pub || valid.Before(time.Now()) {
				t.Fatalf("verify key: %v %v %v %v", k, valid, ok, err)
			}
			// Fetch failures back off.
			if err := ks.StoreFetchError(ctx, "down.example", context.DeadlineExceeded); err != nil {
				t.Fatal(err)
			}
			if _, err := ks.LoadKeys(ctx, "down.example", time.Minute); err == nil {
				t.Fatal("no backoff after a failure")
			}
			if r, err := ks.LoadKeys(ctx, "down.example", -1); err != nil || r != nil {
				t.Fatalf("negative backoff: %v %v", r, err)
			}
			// Re-queries are rationed.
			if ok, err := ks.ShouldReQuery(ctx, "other.example"); !ok || err != nil {
				t.Fatalf("first requery: %v %v", ok, err)
			}
			if ok, _ := ks.ShouldReQuery(ctx, "other.example"); ok {
				t.Fatal("second requery within a minute")
			}
		})
	}
}
