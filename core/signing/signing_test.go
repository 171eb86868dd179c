package signing_test

import (
	"context"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/infra/keyfile"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestOneKeyForEveryProcess: processes starting at once all end up with
// the same key, and later starts load it.
func TestOneKeyForEveryProcess(t *testing.T) {
	stores := map[string]signing.Store{
		"file":   keyfile.Store{Path: filepath.Join(t.TempDir(), "signing.key")},
		"bolt":   signing.TableStore{T: testtable.Open(t, "bolt")},
		"dynamo": signing.TableStore{T: testtable.Open(t, "dynamo")},
	}
	for name, st := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			keys := make([]*signing.Key, 8)
			var wg sync.WaitGroup
			for i := range keys {
				wg.Add(1)
				go func() {
					defer wg.Done()
					k, err := signing.LoadOrCreate(ctx, st)
					if err != nil {
						t.Error(err)
						return
					}
					keys[i] = k
				}()
			}
			wg.Wait()
			for _, k := range keys[1:] {
				if k == nil || k.ID != keys[0].ID || k.Pub != keys[0].Pub {
					t.Fatalf("processes disagree on the key: %v vs %v", k, keys[0])
				}
			}
			if !regexp.MustCompile(`^ed25519:[a-zA-Z0-9_]+$`).MatchString(string(keys[0].ID)) {
				t.Fatalf("key id %q breaks the spec's grammar", keys[0].ID)
			}
			again, err := signing.LoadOrCreate(ctx, st)
			if err != nil || again.ID != keys[0].ID {
				t.Fatalf("reload: %v %v", again, err)
			}
		})
	}
}
