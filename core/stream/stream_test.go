package stream_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestConcurrentWritersAndReaders has many writers commit entries (some
// "crash" after allocating) while readers follow the stream; every reader
// must see every committed entry exactly once, in increasing order.
func TestConcurrentWritersAndReaders(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			s := &stream.Stream{T: tb, Name: "test", Grace: 300 * time.Millisecond}
			ctx := context.Background()
			const writers, perWriter = 8, 25
			var mu sync.Mutex
			committed := map[string]bool{}
			var maxCommitted int64
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWriter {
						// Both ways of allocating, mixed: positions must never collide.
						allocate := s.Reserve
						if rand.IntN(4) == 0 {
							allocate = s.Allocate
						}
						p, err := allocate(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						if rand.IntN(10) == 0 {
							continue // a crashed writer: the slot stays open until a reader voids it
						}
						data := fmt.Sprintf("w%d-%d", w, i)
						err = tb.Transact(ctx, []table.Op{s.ClaimOp(p, []byte(data))})
						if errors.Is(err, table.ErrConditionFailed) {
							continue // voided by a reader: a real writer would retry with a new position
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						committed[data] = true
						maxCommitted = max(maxCommitted, p)
						mu.Unlock()
					}
				}()
			}
			readers := 3
			results := make([][]stream.Entry, readers)
			done := make(chan struct{})
			var rwg sync.WaitGroup
			for r := range readers {
				rwg.Add(1)
				go func() {
					defer rwg.Done()
					var after int64
					final := false
					for {
						es, next, err := s.Read(ctx, after, 7)
						if err != nil {
							t.Error(err)
							return
						}
						results[r] = append(results[r], es...)
						if next < after {
							t.Errorf("token went back from %d to %d", after, next)
						}
						after = next
						mu.Lock()
						target := maxCommitted
						mu.Unlock()
						// Slots abandoned after the last commit are never read
						// past (nothing follows them), so stop at the last
						// committed position.
						if final && after >= target {
							return
						}
						select {
						case <-done:
							final = true
						default:
						}
						time.Sleep(time.Millisecond)
					}
				}()
			}
			wg.Wait()
			close(done)
			rwg.Wait()
			for r, es := range results {
				seen := map[string]bool{}
				var last int64
				for _, e := range es {
					if e.Pos <= last {
						t.Fatalf("reader %d: position %d after %d", r, e.Pos, last)
					}
					last = e.Pos
					if seen[string(e.Data)] {
						t.Fatalf("reader %d: %s twice", r, e.Data)
					}
					seen[string(e.Data)] = true
				}
				for d := range committed {
					if !seen[d] {
						t.Fatalf("reader %d never saw committed entry %s", r, d)
					}
				}
				if len(seen) != len(committed) {
					t.Fatalf("reader %d saw %d entries, %d committed", r, len(seen), len(committed))
				}
			}
		})
	}
}

func TestVoidedSlotRejectsLateWriter(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			now := time.Now()
			s := &stream.Stream{T: tb, Name: "late", Grace: time.Second, Now: func() time.Time { return now }}
			ctx := context.Background()
			p1, _ := s.Allocate(ctx)
			p2, _ := s.Allocate(ctx)
			if err := tb.Transact(ctx, []table.Op{s.ClaimOp(p2, []byte("second"))}); err != nil {
				t.Fatal(err)
			}
			es, next, err := s.Read(ctx, 0, 0)
			if err != nil || len(es) != 0 || next != 0 {
				t.Fatalf("read past an open gap: %v %d %v", es, next, err)
			}
			now = now.Add(2 * time.Second) // the first writer is presumed dead
			es, next, err = s.Read(ctx, 0, 0)
			if err != nil || len(es) != 1 || string(es[0].Data) != "second" || next != p2 {
				t.Fatalf("after grace: %v %d %v", es, next, err)
			}
			err = tb.Transact(ctx, []table.Op{s.ClaimOp(p1, []byte("first"))})
			var txe *table.TxError
			if !errors.As(err, &txe) || !s.IsClaimOp(s.ClaimOp(p1, nil)) {
				t.Fatalf("late writer must lose its slot, got %v", err)
			}
		})
	}
}

// TestCounterCoversStoredPositions checks what sync tokens and watchers rely
// on: after claims and voids (by writers and by readers), the counter item is
// at least every stored position, on every engine.
func TestCounterCoversStoredPositions(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			now := time.Now()
			s := &stream.Stream{T: tb, Name: "cover", Grace: time.Second, Now: func() time.Time { return now }}
			ctx := context.Background()
			counter := func() int64 {
				t.Helper()
				n, err := s.Latest(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			reserve := func() int64 {
				t.Helper()
				p, err := s.Reserve(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			p1 := reserve()
			if err := tb.Transact(ctx, []table.Op{s.ClaimOp(p1, []byte("one"))}); err != nil {
				t.Fatal(err)
			}
			if c := counter(); c < p1 {
				t.Fatalf("counter %d below claimed %d", c, p1)
			}
			p2 := reserve()
			if err := s.Void(ctx, p2); err != nil { // a writer gives up its slot
				t.Fatal(err)
			}
			if c := counter(); c < p2 {
				t.Fatalf("counter %d below voided %d", c, p2)
			}
			abandoned := reserve() // a writer that never comes back
			p4 := reserve()
			if err := tb.Transact(ctx, []table.Op{s.ClaimOp(p4, []byte("four"))}); err != nil {
				t.Fatal(err)
			}
			now = now.Add(2 * time.Second)
			es, next, err := s.Read(ctx, 0, 0)
			if err != nil || len(es) != 2 || next != p4 {
				t.Fatalf("read: %v next %d err %v", es, next, err)
			}
			if c := counter(); c < next || c < abandoned {
				t.Fatalf("counter %d below the read position %d", c, next)
			}
			// The abandoned writer lost its slot to the reader.
			err = tb.Transact(ctx, []table.Op{s.ClaimOp(abandoned, []byte("late"))})
			if !errors.Is(err, table.ErrConditionFailed) {
				t.Fatalf("late claim of a voided slot: %v", err)
			}
			// Append works on top, past everything stored.
			p, err := s.Append(ctx, func(int64) ([]byte, []table.Op, error) { return []byte("five"), nil, nil })
			if err != nil || p <= p4 {
				t.Fatalf("append at %d (after %d): %v", p, p4, err)
			}
		})
	}
}

// TestReserveAfterRestart reopens the embedded engine: positions reserved
// in memory but never stored may be handed out again, but nothing stored
// (claimed or voided) is.
func TestReserveAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cirrus.db")
	ctx := context.Background()
	open := func() (*bolt.DB, *stream.Stream) {
		db, err := bolt.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return db, &stream.Stream{T: db.Table(), Name: "restart"}
	}
	db, s := open()
	var last int64
	for i := range 5 {
		p, err := s.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			err = s.Void(ctx, p)
		} else {
			err = db.Transact(ctx, []table.Op{s.ClaimOp(p, fmt.Appendf(nil, "%d", i))})
		}
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	if _, err := s.Reserve(ctx); err != nil { // in memory only: lost with the process
		t.Fatal(err)
	}
	db.Close()
	db, s = open()
	defer db.Close()
	p, err := s.Reserve(ctx)
	if err != nil || p != last+1 {
		t.Fatalf("first position after restart %d, %v; want %d", p, err, last+1)
	}
	if err := db.Transact(ctx, []table.Op{s.ClaimOp(p, []byte("after"))}); err != nil {
		t.Fatal(err)
	}
	es, next, err := s.Read(ctx, 0, 0)
	if err != nil || len(es) != 5 || next != p {
		t.Fatalf("read after restart: %d entries, next %d, %v", len(es), next, err)
	}
}
