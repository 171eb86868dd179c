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
