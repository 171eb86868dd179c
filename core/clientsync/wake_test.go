package clientsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestNotifierRouting(t *testing.T) {
	n := &Notifier{EventsStream: "events", DeviceListsStream: "devicelists"}
	a := n.Subscribe("@a:x", "A1")
	b := n.Subscribe("@b:x", "B1")
	defer a.Close()
	defer b.Close()
	woke := func(s *Subscription) Kind {
		select {
		case <-s.C:
		default:
			return 0
		}
		return s.Take()
	}
	n.Notify("events")
	if woke(a) != KindEvents || woke(b) != KindEvents {
		t.Fatal("events must wake everyone")
	}
	n.Notify("accountdata#@a:x")
	if woke(a) != KindAccountData || woke(b) != 0 {
		t.Fatal("account data must wake only its user")
	}
	n.Notify("todevice#@b:x\x1fB1")
	n.Notify("todevice#@b:x\x1fB2")
	if woke(a) != 0 || woke(b) != KindToDevice {
		t.Fatal("to-device must wake only its device")
	}
	n.Notify("receipts")
	n.Notify("typing")
	if woke(a) != KindReceipts|KindTyping {
		t.Fatal("kinds accumulate until taken")
	}
	n.Notify("something-else")
	if woke(a) != 0 {
		t.Fatal("unknown streams wake nobody")
	}
	a.Close()
	n.Notify("events")
	if woke(a) != 0 {
		t.Fatal("closed subscription woken")
	}
	var nilN *Notifier
	nilN.Notify("events") // must not panic
}

func TestPollWaker(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			ctx := context.Background()
			s1 := &stream.Stream{T: tb, Name: "one"}
			s2 := &stream.Stream{T: tb, Name: "two"}
			if _, err := s1.Allocate(ctx); err != nil {
				t.Fatal(err)
			}
			w := &PollWaker{T: tb, MinTick: 20 * time.Millisecond, MaxTick: 50 * time.Millisecond}
			// Nothing past the heads: Watch runs until its context ends.
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			moved, err := w.Watch(short, []table.Key{s1.CounterKey(), s2.CounterKey()}, []int64{1, 0})
			if !errors.Is(err, context.DeadlineExceeded) || moved != nil {
				t.Fatalf("idle watch: %v %v", moved, err)
			}
			// A write to the second stream is noticed.
			go func() {
				time.Sleep(60 * time.Millisecond)
				_, _ = s2.Allocate(ctx)
			}()
			start := time.Now()
			moved, err = w.Watch(ctx, []table.Key{s1.CounterKey(), s2.CounterKey()}, []int64{1, 0})
			if err != nil || len(moved) != 1 || moved[0] != 1 {
				t.Fatalf("watch: %v %v", moved, err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("noticed after %s", el)
			}
			// A counter already past the head (a slot in flight) is
			// reported after one tick, not at once.
			start = time.Now()
			moved, err = w.Watch(ctx, []table.Key{s1.CounterKey()}, []int64{0})
			if err != nil || len(moved) != 1 || time.Since(start) < 15*time.Millisecond {
				t.Fatalf("in-flight slot: %v %v after %s", moved, err, time.Since(start))
			}
		})
	}
}

// TestNotifierSignals: with Signals set, a write to a server-wide stream
// bumps the global signal and a write to a user's own stream that user's
// signal (the items other processes' waiting syncs poll).
func TestNotifierSignals(t *testing.T) {
	tb := testtable.Open(t, testtable.Engines[0])
	ctx := context.Background()
	n := &Notifier{EventsStream: "events", UnreadStream: "unread", Signals: tb}
	num := func(k table.Key) int64 {
		it, err := tb.Get(ctx, k)
		if errors.Is(err, table.ErrNotFound) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return it.Num
	}
	for _, c := range []struct {
		stream string
		want   table.Key
	}{
		{"events", SignalGlobal},
		{"unread", SignalGlobal},
		{"receipts", SignalGlobal},
		{"typing", SignalGlobal},
		{"accountdata#@a:x", SignalKey("@a:x")},
		{"todevice#@b:x\x1fB1", SignalKey("@b:x")},
	} {
		before := [3]int64{num(SignalGlobal), num(SignalKey("@a:x")), num(SignalKey("@b:x"))}
		n.Notify(c.stream)
		after := [3]int64{num(SignalGlobal), num(SignalKey("@a:x")), num(SignalKey("@b:x"))}
		for i, k := range []table.Key{SignalGlobal, SignalKey("@a:x"), SignalKey("@b:x")} {
			want := before[i]
			if k == c.want {
				want++
			}
			if after[i] != want {
				t.Errorf("%q: %v went %d → %d, want %d", c.stream, k, before[i], after[i], want)
			}
		}
	}
	n.Notify("something-else")
	if num(SignalGlobal) != 4 {
		t.Errorf("an unknown stream bumped a signal")
	}
	// One commit to many streams: every waiter concerned wakes, and each
	// signal is bumped once.
	sub := n.Subscribe("@b:x", "B2")
	defer sub.Close()
	g, a, b := num(SignalGlobal), num(SignalKey("@a:x")), num(SignalKey("@b:x"))
	n.NotifyMany([]string{"todevice#@b:x\x1fB1", "todevice#@b:x\x1fB2", "todevice#@b:x\x1fB3", "todevice#@a:x\x1fA1", "events", "receipts"})
	if got := [3]int64{num(SignalGlobal) - g, num(SignalKey("@a:x")) - a, num(SignalKey("@b:x")) - b}; got != [3]int64{1, 1, 1} {
		t.Errorf("NotifyMany bumped global, @a, @b by %v, want once each", got)
	}
	select {
	case <-sub.C:
		if k := sub.Take(); k != KindToDevice|KindEvents|KindReceipts {
			t.Errorf("woken for %b", k)
		}
	default:
		t.Error("NotifyMany did not wake the device's waiter")
	}
}

// TestWatchSignals: a waiting request polls the signal items; it must wake
// for every committed write whose stream it watches, also when the write's
// signal was lost (the periodic full read), and must not wake for a signal
// that moved no watched counter.
func TestWatchSignals(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			ctx := context.Background()
			events := &stream.Stream{T: tb, Name: "events"}
			mine := &stream.Stream{T: tb, Name: "accountdata#@me:x"}
			bump := func(k table.Key) {
				if _, err := tb.Add(ctx, k, 1); err != nil {
					t.Fatal(err)
				}
			}
			w := &PollWaker{T: tb, MinTick: 10 * time.Millisecond, MaxTick: 20 * time.Millisecond, FullEvery: time.Hour}
			newSet := func() *WatchSet {
				items, err := tb.GetMany(ctx, []table.Key{SignalGlobal, SignalKey("@me:x")})
				if err != nil {
					t.Fatal(err)
				}
				seen := make([]int64, 2)
				for _, it := range items {
					if it.Key() == SignalGlobal {
						seen[0] = it.Num
					} else {
						seen[1] = it.Num
					}
				}
				heads := []int64{0, 0}
				for i, st := range []*stream.Stream{events, mine} {
					if heads[i], err = st.Latest(ctx); err != nil {
						t.Fatal(err)
					}
				}
				return &WatchSet{Counters: []table.Key{events.CounterKey(), mine.CounterKey()}, Heads: heads,
					Signals: []table.Key{SignalGlobal, SignalKey("@me:x")}, Seen: seen}
			}
			for _, c := range []struct {
				name  string
				write func()
				want  []int // nil: no wake-up
			}{
				{"server-wide write and signal", func() { _, _ = events.Allocate(ctx); bump(SignalGlobal) }, []int{0}},
				{"own stream write and signal", func() { _, _ = mine.Allocate(ctx); bump(SignalKey("@me:x")) }, []int{1}},
				{"signal of a stream not watched", func() { bump(SignalGlobal) }, nil},
				{"another user's signal", func() { bump(SignalKey("@other:x")) }, nil},
			} {
				ws := newSet()
				go func() {
					time.Sleep(30 * time.Millisecond)
					c.write()
				}()
				short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				moved, err := w.WatchSignals(short, ws)
				cancel()
				if c.want == nil {
					if !errors.Is(err, context.DeadlineExceeded) || moved != nil {
						t.Errorf("%s: woke with %v %v", c.name, moved, err)
					}
					continue
				}
				if err != nil || len(moved) != 1 || moved[0] != c.want[0] {
					t.Errorf("%s: moved %v err %v, want %v", c.name, moved, err, c.want)
				}
			}
			// A write whose signal was lost (its writer died after the
			// commit) is found by the periodic full read.
			ws := newSet()
			if _, err := events.Allocate(ctx); err != nil {
				t.Fatal(err)
			}
			lossy := &PollWaker{T: tb, MinTick: 10 * time.Millisecond, MaxTick: 20 * time.Millisecond, FullEvery: 100 * time.Millisecond}
			start := time.Now()
			short, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			moved, err := lossy.WatchSignals(short, ws)
			if err != nil || len(moved) != 1 || moved[0] != 0 {
				t.Fatalf("lost signal: moved %v err %v after %s", moved, err, time.Since(start))
			}
		})
	}
}
