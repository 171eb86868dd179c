package tabletest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// txFixture is the state the transaction tests start from.
type txFixture struct {
	victim  table.Item // to be deleted
	guard   table.Item // checked, Version 2
	counter table.Item // Num 10, with Data that Add must keep
}

func (s *suite) txSetup(t *testing.T, tb table.Table, pk string) txFixture {
	t.Helper()
	f := txFixture{
		victim:  dataItem(pk, "victim", "v"),
		guard:   table.Item{PK: pk, SK: "guard", Data: []byte("g"), Version: 2},
		counter: table.Item{PK: pk, SK: "counter", Data: []byte("c"), Num: 10},
	}
	putAll(t, tb, []table.Item{f.victim, f.guard, f.counter})
	return f
}

func (s *suite) testTransact(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	f := s.txSetup(t, tb, pk)

	fresh := table.Item{PK: pk, SK: "fresh", GPK: s.pk(t, "g"), GSK: "1", Data: []byte("f"), Version: 1}
	ops := []table.Op{
		table.Put(fresh, table.IfNotExists()),
		table.Delete(f.victim.Key(), table.IfExists()),
		table.Check(f.guard.Key(), table.IfVersion(2)),
		table.Add(f.counter.Key(), 5, table.Cond{}),
		table.Add(table.Key{PK: pk, SK: "new-counter"}, 7, table.IfNotExists()),
		table.Delete(table.Key{PK: pk, SK: "never-existed"}, table.Cond{}),
	}
	if err := tb.Transact(ctx(t), ops); err != nil {
		t.Fatalf("Transact: %v", err)
	}
	wantItem(t, tb, fresh)
	wantMissing(t, tb, f.victim.Key())
	wantItem(t, tb, f.guard)
	f.counter.Num = 15
	wantItem(t, tb, f.counter)
	wantItem(t, tb, table.Item{PK: pk, SK: "new-counter", Num: 7})

	// A Put with a version condition, like an optimistic update.
	next := f.guard
	next.Version, next.Data = 3, []byte("g3")
	if err := tb.Transact(ctx(t), []table.Op{table.Put(next, table.IfVersion(2))}); err != nil {
		t.Fatalf("Transact Put IfVersion: %v", err)
	}
	wantItem(t, tb, next)

	// Operations on several partitions.
	a, b := dataItem(s.pk(t, "a"), "x", "a"), dataItem(s.pk(t, "b"), "x", "b")
	if err := tb.Transact(ctx(t), []table.Op{table.Put(a, table.Cond{}), table.Put(b, table.Cond{})}); err != nil {
		t.Fatalf("Transact across partitions: %v", err)
	}
	wantItem(t, tb, a)
	wantItem(t, tb, b)
}

func (s *suite) testTransactFailures(t *testing.T) {
	tb := s.newTable(t)
	cases := []struct {
		name    string
		failing func(f txFixture, pk string) []table.Op // ops to place at indexes 3 and on
		want    int                                     // expected TxError.Index
	}{
		{"check version", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Check(f.guard.Key(), table.IfVersion(9))}
		}, 3},
		{"check not exists", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Check(f.guard.Key(), table.IfNotExists())}
		}, 3},
		{"put not exists", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Put(dataItem(pk, "guard", "clobber"), table.IfNotExists())}
		}, 3},
		{"delete missing if exists", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Delete(table.Key{PK: pk, SK: "ghost"}, table.IfExists())}
		}, 3},
		{"add if exists on missing", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Add(table.Key{PK: pk, SK: "ghost"}, 1, table.IfExists())}
		}, 3},
		{"add if version", func(f txFixture, pk string) []table.Op {
			return []table.Op{table.Add(f.guard.Key(), 1, table.IfVersion(1))}
		}, 3},
		{"first of two failures", func(f txFixture, pk string) []table.Op {
			return []table.Op{
				table.Put(dataItem(pk, "other", "o"), table.Cond{}),
				table.Check(f.guard.Key(), table.IfVersion(5)),
				table.Put(dataItem(pk, "ghost", "x"), table.IfExists()),
			}
		}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pk := s.pk(t, "p")
			f := s.txSetup(t, tb, pk)
			ops := []table.Op{
				table.Put(dataItem(pk, "fresh", "f"), table.IfNotExists()),
				table.Delete(f.victim.Key(), table.IfExists()),
				table.Add(f.counter.Key(), 5, table.IfExists()),
			}
			ops = append(ops, tc.failing(f, pk)...)
			err := tb.Transact(ctx(t), ops)
			if !isErr(err, table.ErrConditionFailed) {
				t.Fatalf("Transact: err %v, want ErrConditionFailed", err)
			}
			var txe *table.TxError
			if !errors.As(err, &txe) {
				t.Fatalf("Transact: err %v (%T) is not a *table.TxError", err, err)
			}
			if txe.Index != tc.want {
				t.Fatalf("TxError.Index = %d, want %d", txe.Index, tc.want)
			}
			// Nothing was applied.
			wantMissing(t, tb, table.Key{PK: pk, SK: "fresh"})
			wantMissing(t, tb, table.Key{PK: pk, SK: "other"})
			wantMissing(t, tb, table.Key{PK: pk, SK: "ghost"})
			wantItem(t, tb, f.victim)
			wantItem(t, tb, f.guard)
			wantItem(t, tb, f.counter)
		})
	}
}

func (s *suite) testTransactValidation(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)

	puts := func(n int, size int) []table.Op {
		ops := make([]table.Op, n)
		for i := range ops {
			ops[i] = table.Put(table.Item{PK: pk, SK: fmt.Sprintf("bulk%03d", i), Data: pad(size)}, table.Cond{})
		}
		return ops
	}
	huge := table.Item{PK: pk, SK: "huge", Data: pad(table.MaxItemSize)}
	cases := []struct {
		name string
		ops  []table.Op
		want error
	}{
		{"no ops", nil, table.ErrInvalid},
		{"101 ops", puts(table.MaxTxItems+1, 1), table.ErrInvalid},
		{"same key twice", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Check(table.Key{PK: pk, SK: "bulk000"}, table.IfNotExists()),
		}, table.ErrInvalid},
		{"put and delete same key", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Delete(table.Key{PK: pk, SK: "bulk000"}, table.Cond{}),
		}, table.ErrInvalid},
		{"check without condition", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Check(table.Key{PK: pk, SK: "bulk001"}, table.Cond{}),
		}, table.ErrInvalid},
		{"invalid item", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Put(table.Item{PK: pk, SK: "bulk001", GSK: "g"}, table.Cond{}),
		}, table.ErrInvalid},
		{"empty key", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Delete(table.Key{PK: pk}, table.Cond{}),
		}, table.ErrInvalid},
		{"item too large", []table.Op{
			table.Put(dataItem(pk, "bulk000", "a"), table.Cond{}),
			table.Put(huge, table.Cond{}),
		}, table.ErrTooLarge},
		{"transaction too large", puts(11, 390*1024), table.ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tb.Transact(c, tc.ops)
			if !isErr(err, tc.want) {
				t.Fatalf("Transact: err %v, want %v", err, tc.want)
			}
			var txe *table.TxError
			if errors.As(err, &txe) {
				t.Fatalf("validation error %v is a TxError", err)
			}
			wantMissing(t, tb, table.Key{PK: pk, SK: "bulk000"})
		})
	}

	// Exactly MaxTxItems operations are fine.
	if err := tb.Transact(c, puts(table.MaxTxItems, 10)); err != nil {
		t.Fatalf("Transact of %d puts: %v", table.MaxTxItems, err)
	}
	items, _ := collect(t, tb, table.Query{PK: pk})
	if len(items) != table.MaxTxItems {
		t.Fatalf("after a %d-op transaction the partition holds %d items", table.MaxTxItems, len(items))
	}
}
