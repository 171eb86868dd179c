package fanout_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/fanout"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// fixture is an event stream with events kept in memory (the worker only
// needs the stream and a loader).
type fixture struct {
	t  table.Table
	st *stream.Stream
	mu sync.Mutex
	ev map[id.EventID]*rooms.Event
}

func newFixture(t *testing.T, engine string) *fixture {
	tb := testtable.Open(t, engine)
	return &fixture{t: tb, st: &stream.Stream{T: tb, Name: "events", Grace: 200 * time.Millisecond},
		ev: map[id.EventID]*rooms.Event{}}
}

// persist commits one event to the stream (as the room engine does).
func (f *fixture) persist(t testing.TB, name string) int64 {
	eid := id.EventID("$" + name)
	entry, _ := json.Marshal(rooms.StreamEntry{RoomID: "!r:test", EventID: eid, Type: "m.room.message", Sender: "@a:test"})
	// The event is stored before its stream entry commits (the room engine
	// writes both in one transaction).
	pos, err := f.st.Append(context.Background(), func(pos int64) ([]byte, []table.Op, error) {
		f.mu.Lock()
		f.ev[eid] = &rooms.Event{EventID: eid, RoomID: "!r:test", Pos: pos, Seq: pos}
		f.mu.Unlock()
		return entry, nil, nil
	})
	if err != nil {
		t.Error(err)
		return 0
	}
	return pos
}

func (f *fixture) load(_ context.Context, ids []id.EventID) ([]*rooms.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*rooms.Event
	for _, e := range ids {
		if ev := f.ev[e]; ev != nil {
			c := *ev
			out = append(out, &c)
		}
	}
	return out, nil
}

func (f *fixture) worker() *fanout.Worker {
	return &fanout.Worker{T: f.t, Stream: f.st, Load: f.load, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

// recorder counts handler calls per event and remembers the order.
type recorder struct {
	mu    sync.Mutex
	count map[id.EventID]int
	order []int64
}

func (r *recorder) handle(_ context.Context, ev *rooms.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == nil {
		r.count = map[id.EventID]int{}
	}
	r.count[ev.EventID]++
	r.order = append(r.order, ev.Pos)
	return nil
}

func TestDrainInOrderOnce(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine)
			ctx := context.Background()
			w := f.worker()
			w.Batch = 7 // several reads per drain
			var rec recorder
			w.Register("rec", rec.handle)
			for i := range 30 {
				f.persist(t, fmt.Sprint("a", i))
			}
			if err := w.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				f.persist(t, fmt.Sprint("b", i))
			}
			if err := w.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			if err := w.Drain(ctx); err != nil { // nothing new: nothing handled again
				t.Fatal(err)
			}
			if len(rec.order) != 35 {
				t.Fatalf("handled %d events, want 35", len(rec.order))
			}
			for i, p := range rec.order {
				if p != int64(i+1) {
					t.Fatalf("event %d handled at position %d: out of order %v", i, p, rec.order)
				}
			}
			if pos, _ := w.Position(ctx); pos != 35 {
				t.Fatalf("cursor at %d, want 35", pos)
			}
		})
	}
}

// A handler that fails stops the cursor at its event; the event is retried
// after the backoff and every event is then handled exactly once by the
// handler that counts only its successes.
func TestFailingHandlerRetried(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine)
			ctx := context.Background()
			w := f.worker()
			var ok recorder
			var failed atomic.Int32
			w.Register("flaky", func(ctx context.Context, ev *rooms.Event) error {
				if ev.EventID == "$e5" && failed.Add(1) <= 2 {
					return errors.New("temporary failure")
				}
				return ok.handle(ctx, ev)
			})
			for i := range 10 {
				f.persist(t, fmt.Sprint("e", i))
			}
			if err := w.Drain(ctx); err == nil {
				t.Fatal("drain succeeded past a failing handler")
			}
			if pos, _ := w.Position(ctx); pos != 5 { // $e5 is at position 6
				t.Fatalf("cursor at %d after the failure, want 5", pos)
			}
			if err := w.Drain(ctx); !errors.Is(err, fanout.ErrBackoff) && err == nil {
				t.Fatalf("second drain: %v", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := w.Drain(ctx)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("never recovered: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if len(ok.order) != 10 {
				t.Fatalf("handled %d events, want 10 (%v)", len(ok.order), ok.order)
			}
			for e, n := range ok.count {
				if n != 1 {
					t.Errorf("%s handled %d times", e, n)
				}
			}
			if got := failed.Load(); got != 3 {
				t.Errorf("the failing event was attempted %d times, want 3", got)
			}
		})
	}
}

// An event whose handler never succeeds is parked after MaxAttempts so
// the events behind it proceed.
func TestPoisonEventParked(t *testing.T) {
	f := newFixture(t, "bolt")
	ctx := context.Background()
	w := f.worker()
	w.MaxAttempts = 3
	var rec recorder
	w.Register("poison", func(ctx context.Context, ev *rooms.Event) error {
		if ev.EventID == "$p1" {
			return errors.New("never works")
		}
		return rec.handle(ctx, ev)
	})
	for i := range 3 {
		f.persist(t, fmt.Sprint("p", i))
	}
	for range 100 {
		if w.Drain(ctx) == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	parked, err := w.Parked(ctx)
	if err != nil || len(parked) != 1 || parked[0] != 2 {
		t.Fatalf("parked %v (%v), want [2]", parked, err)
	}
	if len(rec.order) != 2 {
		t.Fatalf("handled %v, want the two good events", rec.order)
	}
}

// Several workers (as on several machines) drain while writers commit and
// one writer dies holding a slot: every event is handled, in order per
// worker pass, none skipped, and the cursor ends at the head.
func TestConcurrentWorkersAndWriters(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			f := newFixture(t, engine)
			ctx := context.Background()
			var rec recorder
			workers := make([]*fanout.Worker, 3)
			for i := range workers {
				workers[i] = f.worker()
				workers[i].Register("rec", rec.handle)
			}
			// A writer that allocates and never commits (crashed).
			if _, err := f.st.Allocate(ctx); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			const writers, each = 4, 15
			for wi := range writers {
				wg.Go(func() {
					for i := range each {
						f.persist(t, fmt.Sprint("w", wi, "-", i))
					}
				})
			}
			stop := make(chan struct{})
			var wwg sync.WaitGroup
			for _, w := range workers {
				wwg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						_ = w.Drain(ctx)
						time.Sleep(time.Millisecond)
					}
				})
			}
			wg.Wait()
			want := writers * each
			deadline := time.Now().Add(20 * time.Second)
			for {
				rec.mu.Lock()
				n := len(rec.count)
				rec.mu.Unlock()
				if n == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("handled %d distinct events, want %d", n, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			close(stop)
			wwg.Wait()
			head, _ := f.st.Latest(ctx)
			if err := workers[0].Drain(ctx); err != nil {
				t.Fatal(err)
			}
			if pos, _ := workers[0].Position(ctx); pos != head {
				t.Fatalf("cursor %d, head %d", pos, head)
			}
		})
	}
}

// Handle (the Lambda path) reports the whole batch as failed while the
// event at the cursor fails, and nothing once it succeeds.
func TestHandleReportsFailures(t *testing.T) {
	f := newFixture(t, "bolt")
	ctx := context.Background()
	w := f.worker()
	var fail atomic.Bool
	fail.Store(true)
	w.Register("x", func(context.Context, *rooms.Event) error {
		if fail.Load() {
			return errors.New("down")
		}
		return nil
	})
	f.persist(t, "h")
	msgs := []queue.Received{{ID: "m1"}, {ID: "m2"}}
	if got := w.Handle(ctx, msgs); len(got) != 2 {
		t.Fatalf("failed ids %v, want both", got)
	}
	fail.Store(false)
	time.Sleep(20 * time.Millisecond)
	if got := w.Handle(ctx, msgs); len(got) != 0 {
		t.Fatalf("failed ids %v after recovery", got)
	}
}

// sentQueue keeps what is sent to it.
type sentQueue struct {
	mu   sync.Mutex
	sent []queue.Message
}

func (q *sentQueue) Send(_ context.Context, m ...queue.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = append(q.sent, m...)
	return nil
}
func (q *sentQueue) Receive(context.Context, int, time.Duration) ([]queue.Received, error) {
	return nil, nil
}
func (q *sentQueue) Delete(context.Context, string) error                       { return nil }
func (q *sentQueue) SetVisibility(context.Context, string, time.Duration) error { return nil }

// TestSweepDrainsEventsWithoutWakeUps: events whose wake-up messages were
// lost are handled once a sweep's wake-up arrives; sweeps within a minute
// share a deduplication id.
func TestSweepDrainsEventsWithoutWakeUps(t *testing.T) {
	f := newFixture(t, "bolt")
	ctx := context.Background()
	q := &sentQueue{}
	w := f.worker()
	w.Q = q
	now := time.Unix(1_000_000, 0)
	w.Now = func() time.Time { return now }
	var rec recorder
	w.Register("x", rec.handle)
	for _, n := range []string{"a", "b", "c"} {
		f.persist(t, n) // committed, but no wake-up is ever sent
	}
	if err := w.WakeSweep(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	if err := w.WakeSweep(ctx); err != nil {
		t.Fatal(err)
	}
	if len(q.sent) != 2 || q.sent[0].DedupID != q.sent[1].DedupID || q.sent[0].Group != fanout.WakeGroup {
		t.Fatalf("sweep messages %+v: want two with one dedup id in the wake group", q.sent)
	}
	msgs := []queue.Received{{ID: "s1", Body: q.sent[0].Body}}
	if failed := w.Handle(ctx, msgs); len(failed) != 0 {
		t.Fatalf("failed %v", failed)
	}
	if len(rec.order) != 3 {
		t.Fatalf("handled %v after the sweep, want the 3 events", rec.order)
	}
	now = now.Add(time.Minute)
	_ = w.WakeSweep(ctx)
	if q.sent[2].DedupID == q.sent[0].DedupID {
		t.Fatal("a sweep a minute later has the same dedup id")
	}
}
