package httpapi_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// TestSharedLimiter: two limiters over one table (two processes) together
// admit no more than one limit per window; per-process limiters would
// admit twice as much.
func TestSharedLimiter(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var mu sync.Mutex
	now := time.Now().Truncate(5 * time.Second) // a 5 s window boundary (the table expires items by the real clock)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rates := map[string]httpapi.Rate{"send": {PerSecond: 1, Burst: 5}} // 5 per 5 s window
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		shared bool
		want   int
	}{{"per process", false, 10}, {"shared", true, 5}} {
		t.Run(tc.name, func(t *testing.T) {
			mk := func() httpapi.Limiter {
				if tc.shared {
					return httpapi.NewSharedLimiter(db, rates, clock)
				}
				return httpapi.NewLimiter(rates, clock)
			}
			a, b := mk(), mk()
			key := "@u:" + tc.name
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for i := range 20 {
				l := a
				if i%2 == 1 {
					l = b
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if l.Allow(ctx, "send", key) == 0 {
						allowed.Add(1)
					}
				}()
			}
			wg.Wait()
			if got := allowed.Load(); got != int64(tc.want) {
				t.Fatalf("allowed %d of 20, want %d", got, tc.want)
			}
			if !tc.shared {
				return
			}
			// A refusal says when the window ends; other keys and classes
			// are untouched.
			if wait := a.Allow(ctx, "send", key); wait <= 0 || wait > 5*time.Second {
				t.Fatalf("wait %v", wait)
			}
			if a.Allow(ctx, "send", key+"x") != 0 || a.Allow(ctx, "other", key) != 0 {
				t.Fatal("another key or an unlimited class was limited")
			}
			// The next window admits again (the in-process buckets refill too).
			mu.Lock()
			now = now.Add(5 * time.Second)
			mu.Unlock()
			if a.Allow(ctx, "send", key) != 0 || b.Allow(ctx, "send", key) != 0 {
				t.Fatal("the next window refused")
			}
		})
	}
}
