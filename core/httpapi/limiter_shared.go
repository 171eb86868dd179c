package httpapi

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// NewSharedLimiter returns a limiter whose counts live in the table, so
// that every process (every Lambda instance) shares one limit per
// (class, key). Each class's Rate becomes a fixed window: at most Burst
// requests per Burst/PerSecond (the time the token bucket takes to
// refill), counted in one item per window with an atomic Add; the item
// expires (TTL) a minute after its window ends.
//
// The in-process token bucket still runs first: a request it refuses
// costs no write, and one it admits costs one (a conditional put for the
// first request of a window this process sees, an Add after that). A
// request must pass both, so the shared limit never allows more than the
// per-process one did. If the table fails, the request is let through on
// the per-process limit alone (the table being down is not the client's
// fault).
func NewSharedLimiter(t table.Table, rates map[string]Rate, now func() time.Time) Limiter {
	if now == nil {
		now = time.Now
	}
	return &sharedLimiter{t: t, rates: rates, now: now, local: NewLimiter(rates, now), known: map[table.Key]bool{}}
}

type sharedLimiter struct {
	t     table.Table
	rates map[string]Rate
	now   func() time.Time
	local Limiter

	mu sync.Mutex
	// known are window items this process has seen exist: their next
	// request can Add without first trying to create them.
	known map[table.Key]bool
}

// RateLimitPK is the partition of a (class, key) pair's window counters.
func RateLimitPK(class, key string) string { return "ratelimit#" + class + "\x1f" + key }

// window is a Rate as a fixed window: its length and the requests it admits.
func (r Rate) window() (time.Duration, int64) {
	limit := int64(math.Max(1, math.Floor(r.Burst)))
	length := time.Duration(float64(limit) / r.PerSecond * float64(time.Second))
	if length < time.Second {
		length = time.Second
	}
	return length, limit
}

func (l *sharedLimiter) Allow(ctx context.Context, class, key string) time.Duration {
	rate, ok := l.rates[class]
	if !ok || rate.PerSecond <= 0 {
		return 0
	}
	if wait := l.local.Allow(ctx, class, key); wait > 0 {
		return wait
	}
	length, limit := rate.window()
	now := l.now()
	w := now.UnixMilli() / length.Milliseconds()
	end := time.UnixMilli((w + 1) * length.Milliseconds())
	k := table.Key{PK: RateLimitPK(class, key), SK: strconv.FormatInt(w, 10)}
	n, err := l.count(ctx, k, end)
	if err != nil || n <= limit {
		return 0
	}
	wait := end.Sub(now)
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	return wait
}

// count adds one to the window's counter and returns the new count.
func (l *sharedLimiter) count(ctx context.Context, k table.Key, end time.Time) (int64, error) {
	l.mu.Lock()
	known := l.known[k]
	l.mu.Unlock()
	if !known {
		// The first request of a window creates its item with a TTL (Add
		// alone cannot set one).
		err := l.t.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Num: 1, TTL: end.Add(time.Minute).Unix()}, table.IfNotExists())
		l.mu.Lock()
		if len(l.known) > 50_000 {
			l.known = map[table.Key]bool{} // bound memory; old windows are never asked again
		}
		l.known[k] = true
		l.mu.Unlock()
		if err == nil {
			return 1, nil
		}
		if !errors.Is(err, table.ErrConditionFailed) {
			return 0, err
		}
	}
	return l.t.Add(ctx, k, 1)
}
