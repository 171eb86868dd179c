package tabletest

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// testSequencer checks table.Sequencer and OpPutRaise on engines that have
// them, and that the others refuse OpPutRaise without writing anything.
func (s *suite) testSequencer(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)
	slot := func(sk string) table.Item { return table.Item{PK: pk, SK: sk, Data: []byte("x")} }
	counter := table.Key{PK: pk, SK: "counter"}

	seq, ok := table.SequencerOf(tb)
	if !ok {
		err := tb.Transact(c, []table.Op{table.PutRaise(slot("a"), table.IfNotExists(), counter, 1)})
		if !errors.Is(err, table.ErrInvalid) {
			t.Fatalf("PutRaise on an engine without Sequencer: %v, want ErrInvalid", err)
		}
		wantMissing(t, tb, slot("a").Key())
		wantMissing(t, tb, counter)
		return
	}
	next := func(k table.Key, want int64) {
		t.Helper()
		got, err := seq.Next(c, k)
		if err != nil || got != want {
			t.Fatalf("Next %s = %d, %v; want %d", k, got, err, want)
		}
	}
	tx := func(ops ...table.Op) error { t.Helper(); return tb.Transact(c, ops) }

	// A fresh counter starts at 1; Next writes nothing.
	next(counter, 1)
	next(counter, 2)
	wantMissing(t, tb, counter)

	// PutRaise writes the item and raises the counter, never lowering it.
	if err := tx(table.PutRaise(slot("2"), table.IfNotExists(), counter, 2)); err != nil {
		t.Fatal(err)
	}
	wantItem(t, tb, slot("2"))
	wantItem(t, tb, table.Item{PK: pk, SK: "counter", Num: 2})
	if err := tx(table.PutRaise(slot("1"), table.IfNotExists(), counter, 1)); err != nil {
		t.Fatal(err)
	}
	wantItem(t, tb, table.Item{PK: pk, SK: "counter", Num: 2})

	// A failed condition writes neither the item nor the counter.
	var txe *table.TxError
	err := tx(table.Put(slot("other"), table.Cond{}), table.PutRaise(slot("2"), table.IfNotExists(), counter, 9))
	if !errors.As(err, &txe) || txe.Index != 1 {
		t.Fatalf("PutRaise on a taken slot: %v, want TxError{1}", err)
	}
	wantMissing(t, tb, slot("other").Key())
	wantItem(t, tb, table.Item{PK: pk, SK: "counter", Num: 2})

	// Several PutRaise of one transaction may raise one counter; the
	// highest wins. Raising keeps the counter's other attributes.
	rich := table.Item{PK: pk, SK: "rich", Data: []byte("keep"), Version: 3, Num: 5}
	mustPut(t, tb, rich)
	if err := tx(table.PutRaise(slot("6"), table.IfNotExists(), rich.Key(), 7),
		table.PutRaise(slot("7"), table.IfNotExists(), rich.Key(), 6)); err != nil {
		t.Fatal(err)
	}
	rich.Num = 7
	wantItem(t, tb, rich)

	// A counter's first Next counts on from the stored Num, and every write
	// to it afterwards (PutRaise, Put, Add) moves Next along.
	next(rich.Key(), 8)
	if err := tx(table.PutRaise(slot("x"), table.Cond{}, rich.Key(), 100)); err != nil {
		t.Fatal(err)
	}
	next(rich.Key(), 101)
	mustPut(t, tb, table.Item{PK: pk, SK: "rich", Num: 200})
	next(rich.Key(), 201)
	// Add counts on from the highest number Next handed out (201, stored 200).
	if got, err := tb.Add(c, rich.Key(), 1); err != nil || got != 202 {
		t.Fatalf("Add after Next: %d, %v; want 202", got, err)
	}
	next(rich.Key(), 203)

	// Invalid uses.
	for name, op := range map[string]table.Op{
		"raises itself": table.PutRaise(slot("self"), table.Cond{}, slot("self").Key(), 1),
		"empty counter": table.PutRaise(slot("e"), table.Cond{}, table.Key{PK: pk}, 1),
	} {
		if err := tx(op); !errors.Is(err, table.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := seq.Next(c, table.Key{PK: pk}); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("Next on an invalid key: %v, want ErrInvalid", err)
	}

	// Concurrent Next and Add never hand out a number twice, and each
	// caller's numbers increase.
	k := table.Key{PK: pk, SK: "busy"}
	const workers, each = 8, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen []int64
	)
	for w := range workers {
		wg.Go(func() {
			last := int64(0)
			for i := range each {
				var n int64
				var err error
				if (w+i)%5 == 0 {
					n, err = tb.Add(c, k, 1)
				} else {
					n, err = seq.Next(c, k)
				}
				if err != nil {
					t.Errorf("w%d: %v", w, err)
					return
				}
				if n <= last {
					t.Errorf("w%d: %d after %d", w, n, last)
				}
				last = n
				mu.Lock()
				seen = append(seen, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seen)
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			t.Fatalf("number %d handed out twice", seen[i])
		}
	}
}
