package clientsync

import (
	"context"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
)

// Kind is a set of streams (a bit per stream of the token).
type Kind uint8

// The streams of a token.
const (
	KindEvents Kind = 1 << iota
	KindAccountData
	KindReceipts
	KindTyping
	KindToDevice
	KindDeviceLists
	KindPresence
	KindAll = KindEvents | KindAccountData | KindReceipts | KindTyping | KindToDevice | KindDeviceLists | KindPresence
)

// Notifier wakes the /sync requests waiting in this process. Writers call
// Notify with the name of the stream they appended to, right after the
// commit; a waiter subscribes before it reads the streams, so a change that
// lands between its read and its wait still wakes it.
type Notifier struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// EventsStream and DeviceListsStream are the names of those global
	// streams (the others have fixed names or per-user prefixes).
	EventsStream      string
	DeviceListsStream string
	PresenceStream    string
}

// Subscription is one waiting request.
type Subscription struct {
	n       *Notifier
	adName  string
	tdName  string
	C       chan struct{}
	mu      sync.Mutex
	pending Kind
}

// Subscribe registers a waiter for user's device.
func (n *Notifier) Subscribe(u id.UserID, d id.DeviceID) *Subscription {
	s := &Subscription{n: n, C: make(chan struct{}, 1),
		adName: userdata.StreamPrefix + string(u),
		tdName: ephemeral.ToDeviceStreamPrefix + string(u) + "\x1f" + string(d)}
	n.mu.Lock()
	if n.subs == nil {
		n.subs = map[*Subscription]struct{}{}
	}
	n.subs[s] = struct{}{}
	n.mu.Unlock()
	return s
}

// Close removes the subscription.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	delete(s.n.subs, s)
	s.n.mu.Unlock()
}

// Take returns the kinds notified since the last Take.
func (s *Subscription) Take() Kind {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.pending
	s.pending = 0
	return k
}

func (s *Subscription) wake(k Kind) {
	s.mu.Lock()
	s.pending |= k
	s.mu.Unlock()
	select {
	case s.C <- struct{}{}:
	default:
	}
}

// Notify wakes the waiters a change to the named stream concerns.
func (n *Notifier) Notify(stream string) {
	if n == nil {
		return
	}
	var k Kind
	switch {
	case stream == n.EventsStream:
		k = KindEvents
	case stream == ephemeral.ReceiptsStream:
		k = KindReceipts
	case stream == ephemeral.TypingStream:
		k = KindTyping
	case stream == n.DeviceListsStream && stream != "":
		k = KindDeviceLists
	case stream == n.PresenceStream && stream != "":
		k = KindPresence
	case strings.HasPrefix(stream, userdata.StreamPrefix):
		k = KindAccountData
	case strings.HasPrefix(stream, ephemeral.ToDeviceStreamPrefix):
		k = KindToDevice
	default:
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.subs {
		switch {
		case k == KindAccountData && s.adName != stream, k == KindToDevice && s.tdName != stream:
			continue
		}
		s.wake(k)
	}
}

// Waker notices changes made by other processes (other Lambda instances).
// Watch returns when the counter of one of the watched streams has moved
// past the position the caller has read up to (heads[i] for keys[i]), with
// the indices that did, or when ctx ends (nil, ctx.Err()).
type Waker interface {
	Watch(ctx context.Context, keys []table.Key, heads []int64) ([]int, error)
}

// PollWaker is the Waker for DynamoDB: it reads the streams' counter items
// with one strongly consistent GetMany (BatchGetItem) per tick, starting
// at MinTick and slowing down by half each tick to MaxTick. It sleeps a tick
// before its first read, so a slot that is allocated but not yet committed
// makes the caller re-read at most once per tick.
type PollWaker struct {
	T       table.Table
	MinTick time.Duration
	MaxTick time.Duration
}

// Default poll ticks.
const (
	DefaultMinTick = 200 * time.Millisecond
	DefaultMaxTick = time.Second
)

// Watch implements Waker.
func (p *PollWaker) Watch(ctx context.Context, keys []table.Key, heads []int64) ([]int, error) {
	tick, maxTick := p.MinTick, p.MaxTick
	if tick <= 0 {
		tick = DefaultMinTick
	}
	if maxTick < tick {
		maxTick = max(DefaultMaxTick, tick)
	}
	idx := make(map[table.Key]int, len(keys))
	for i, k := range keys {
		idx[k] = i
	}
	timer := time.NewTimer(tick)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		items, err := p.T.GetMany(ctx, keys)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		var moved []int
		for _, it := range items {
			if i, ok := idx[it.Key()]; ok && it.Num > heads[i] {
				moved = append(moved, i)
			}
		}
		if len(moved) > 0 {
			return moved, nil
		}
		tick = min(tick*3/2, maxTick)
		timer.Reset(tick)
	}
}
