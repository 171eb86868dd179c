package httpapi

import (
	"context"
	"sync"
	"time"
)

// Rate is a token bucket: Burst requests at once, refilled at PerSecond.
type Rate struct {
	PerSecond float64
	Burst     float64
}

// NewLimiter returns an in-process token-bucket limiter per (class, key).
// Each process (each Lambda instance) limits on its own: it stops floods
// that hit one instance, which is what a small server needs; a shared limit
// across instances would cost a table write per request.
func NewLimiter(rates map[string]Rate, now func() time.Time) Limiter {
	if now == nil {
		now = time.Now
	}
	return &bucketLimiter{rates: rates, now: now, buckets: map[string]*bucket{}}
}

type bucket struct {
	tokens float64
	last   time.Time
}

type bucketLimiter struct {
	mu      sync.Mutex
	rates   map[string]Rate
	now     func() time.Time
	buckets map[string]*bucket
}

func (l *bucketLimiter) Allow(_ context.Context, class, key string) time.Duration {
	rate, ok := l.rates[class]
	if !ok || rate.PerSecond <= 0 {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 100_000 {
		l.buckets = map[string]*bucket{} // bound memory under a spray of keys
	}
	k := class + "\x00" + key
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: rate.Burst, last: now}
		l.buckets[k] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * rate.PerSecond
	if b.tokens > rate.Burst {
		b.tokens = rate.Burst
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	wait := time.Duration((1 - b.tokens) / rate.PerSecond * float64(time.Second))
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	return wait
}
