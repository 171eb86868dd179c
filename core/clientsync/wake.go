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
	KindUnread
	KindAll = KindEvents | KindAccountData | KindReceipts | KindTyping | KindToDevice | KindDeviceLists | KindPresence | KindUnread
)

// Notifier wakes the /sync requests waiting in this process. Writers call
// Notify with the name of the stream they appended to, right after the
// commit; a waiter subscribes before it reads the streams, so a change that
// lands between its read and its wait still wakes it.
//
// With Signals set (deployments where several processes write: every
// CIRRUS_STORAGE=aws one), Notify also bumps a signal item in the table
// after the commit, so that waiting requests of other processes poll one
// or two small items instead of every stream's counter: SignalGlobal for
// the server-wide streams, SignalKey(u) for a user's own streams (account
// data, to-device).
type Notifier struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// EventsStream, DeviceListsStream, PresenceStream and UnreadStream are
	// the names of those global streams (the others have fixed names or
	// per-user prefixes).
	EventsStream      string
	DeviceListsStream string
	PresenceStream    string
	UnreadStream      string
	// Signals, if set, is the table the signal items are bumped in.
	Signals table.Table
	// OnSignalError, if set, is told of a failed bump (the waiters'
	// periodic full poll still finds the change).
	OnSignalError func(err error)
}

// SignalGlobal is the signal item bumped after every write to a
// server-wide stream (events, receipts, typing, device lists, presence,
// unread counts).
var SignalGlobal = table.Key{PK: "wake", SK: "global"}

// SignalKey is user u's signal item, bumped after writes to u's account
// data or to-device streams.
func SignalKey(u id.UserID) table.Key { return table.Key{PK: "user#" + string(u), SK: "wake"} }

// signalTimeout bounds one bump (it follows a commit the writer waits on).
const signalTimeout = 2 * time.Second

// signal bumps the item of the given stream kind (user: the owner of a
// per-user stream).
func (n *Notifier) signal(k Kind, u id.UserID) {
	if n.Signals == nil {
		return
	}
	key := SignalGlobal
	if k == KindAccountData || k == KindToDevice {
		if u == "" {
			return
		}
		key = SignalKey(u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), signalTimeout)
	defer cancel()
	if _, err := n.Signals.Add(ctx, key, 1); err != nil && n.OnSignalError != nil {
		n.OnSignalError(err)
	}
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
	if k, owner := n.wakeLocal(stream); k != 0 {
		n.signal(k, owner)
	}
}

// NotifyMany is Notify for one commit that changed several streams: each
// signal item is bumped once (a bump after the commit covers all of it).
func (n *Notifier) NotifyMany(streams []string) {
	if n == nil {
		return
	}
	type sig struct {
		global bool
		owner  id.UserID
	}
	done := map[sig]bool{}
	for _, st := range streams {
		k, owner := n.wakeLocal(st)
		if k == 0 {
			continue
		}
		g := sig{owner: owner}
		if k != KindAccountData && k != KindToDevice {
			g = sig{global: true}
		}
		if !done[g] {
			done[g] = true
			n.signal(k, owner)
		}
	}
}

// wakeLocal wakes this process's waiters for a change to the stream and
// returns its kind (0: not a stream syncs watch) and, for a per-user
// stream, its owner.
func (n *Notifier) wakeLocal(stream string) (Kind, id.UserID) {
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
	case stream == n.UnreadStream && stream != "":
		k = KindUnread
	case strings.HasPrefix(stream, userdata.StreamPrefix):
		k = KindAccountData
	case strings.HasPrefix(stream, ephemeral.ToDeviceStreamPrefix):
		k = KindToDevice
	default:
		return 0, ""
	}
	n.mu.Lock()
	for s := range n.subs {
		switch {
		case k == KindAccountData && s.adName != stream, k == KindToDevice && s.tdName != stream:
			continue
		}
		s.wake(k)
	}
	n.mu.Unlock()
	var owner id.UserID
	switch k {
	case KindAccountData:
		owner = id.UserID(strings.TrimPrefix(stream, userdata.StreamPrefix))
	case KindToDevice:
		u, _, _ := strings.Cut(strings.TrimPrefix(stream, ephemeral.ToDeviceStreamPrefix), "\x1f")
		owner = id.UserID(u)
	}
	return k, owner
}

// Waker notices changes made by other processes (other Lambda instances).
// Watch returns when the counter of one of the watched streams has moved
// past the position the caller has read up to (heads[i] for keys[i]), with
// the indices that did, or when ctx ends (nil, ctx.Err()).
type Waker interface {
	Watch(ctx context.Context, keys []table.Key, heads []int64) ([]int, error)
}

// SignalWaker is a Waker that can also watch the Notifier's signal items
// (WatchSignals), far cheaper than every stream counter.
type SignalWaker interface {
	Waker
	WatchSignals(ctx context.Context, ws *WatchSet) ([]int, error)
}

// WatchSet is what a waiting request watches: the streams' counters with
// the positions it has read up to, and the signal items with the values it
// saw before it read the streams.
type WatchSet struct {
	Counters []table.Key
	Heads    []int64
	Signals  []table.Key
	// Seen are the signals' values read (strongly) before the streams
	// were; WatchSignals moves them forward as it sees them move.
	Seen []int64
	// SignalCounters, if set, lists for each signal the indices of the
	// counters its writers move: only those are read when it moves.
	SignalCounters [][]int
}

// PollWaker is the Waker for DynamoDB. It polls with eventually consistent
// reads (half the read units), starting at MinTick and slowing down by half
// each tick to MaxTick. It sleeps a tick before its first read, so a slot
// that is allocated but not yet committed makes the caller re-read at most
// once per tick.
//
// An eventually consistent read may miss a write of about the last second;
// that is safe here because a miss only delays the wake-up to a later tick
// (the items only grow, and the next read sees it), and everything a woken
// request reads afterwards — the counters that say which streams moved, the
// streams themselves — is read strongly.
type PollWaker struct {
	T       table.Table
	MinTick time.Duration
	MaxTick time.Duration
	// FullEvery is how often WatchSignals also polls the stream counters
	// themselves, so that a write whose signal bump was lost (its process
	// died between the commit and the bump) is still found while the
	// request waits. Zero means DefaultFullEvery.
	FullEvery time.Duration
}

// Default poll ticks.
const (
	DefaultMinTick   = 200 * time.Millisecond
	DefaultMaxTick   = time.Second
	DefaultFullEvery = 15 * time.Second
)

func (p *PollWaker) ticks() (time.Duration, time.Duration) {
	tick, maxTick := p.MinTick, p.MaxTick
	if tick <= 0 {
		tick = DefaultMinTick
	}
	if maxTick < tick {
		maxTick = max(DefaultMaxTick, tick)
	}
	return tick, maxTick
}

// movedPast returns the indices of keys whose item's Num is past heads.
func movedPast(items []table.Item, keys []table.Key, heads []int64) []int {
	idx := make(map[table.Key]int, len(keys))
	for i, k := range keys {
		idx[k] = i
	}
	var moved []int
	for _, it := range items {
		if i, ok := idx[it.Key()]; ok && it.Num > heads[i] {
			moved = append(moved, i)
		}
	}
	return moved
}

func sleepTick(ctx context.Context, timer *time.Timer) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// Watch implements Waker: it polls the counters themselves.
func (p *PollWaker) Watch(ctx context.Context, keys []table.Key, heads []int64) ([]int, error) {
	tick, maxTick := p.ticks()
	timer := time.NewTimer(tick)
	defer timer.Stop()
	for {
		if err := sleepTick(ctx, timer); err != nil {
			return nil, err
		}
		items, err := table.GetManyEventual(ctx, p.T, keys)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if moved := movedPast(items, keys, heads); len(moved) > 0 {
			return moved, nil
		}
		tick = min(tick*3/2, maxTick)
		timer.Reset(tick)
	}
}

// WatchSignals implements SignalWaker: each tick it reads the signal
// items; when one has moved past ws.Seen it reads the counters (strongly)
// and returns the indices of those past ws.Heads, or, if none is (the
// signal was for something else), goes on waiting. Every FullEvery it reads
// the counters even without a signal.
func (p *PollWaker) WatchSignals(ctx context.Context, ws *WatchSet) ([]int, error) {
	tick, maxTick := p.ticks()
	full := p.FullEvery
	if full <= 0 {
		full = DefaultFullEvery
	}
	lastFull := time.Now()
	timer := time.NewTimer(tick)
	defer timer.Stop()
	for {
		if err := sleepTick(ctx, timer); err != nil {
			return nil, err
		}
		// The periodic backstop may read eventually consistently (a write
		// it misses is found by the next one); after a signal the counters
		// are read strongly, since the write that bumped it must show.
		backstop := time.Since(lastFull) >= full
		check := false
		keys := ws.Counters // the counters to read
		if !backstop {
			items, err := table.GetManyEventual(ctx, p.T, ws.Signals)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, err
			}
			// Record what was seen before reading the counters: a bump
			// after that read makes the item larger than this again.
			nums := make(map[table.Key]int64, len(items))
			for _, it := range items {
				nums[it.Key()] = it.Num
			}
			var subset []table.Key
			for i, k := range ws.Signals {
				if nums[k] > ws.Seen[i] {
					ws.Seen[i], check = nums[k], true
					if ws.SignalCounters != nil {
						for _, c := range ws.SignalCounters[i] {
							subset = append(subset, ws.Counters[c])
						}
					}
				}
			}
			if ws.SignalCounters != nil {
				keys = subset
			}
		}
		if backstop {
			lastFull = time.Now()
		}
		if check || backstop {
			var items []table.Item
			var err error
			if check {
				items, err = p.T.GetMany(ctx, keys)
			} else {
				items, err = table.GetManyEventual(ctx, p.T, ws.Counters)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, err
			}
			if moved := movedPast(items, ws.Counters, ws.Heads); len(moved) > 0 {
				return moved, nil
			}
		}
		tick = min(tick*3/2, maxTick)
		timer.Reset(tick)
	}
}
