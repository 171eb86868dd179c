package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// TestRandomOpsKeepBucketsInStep runs random writes against the engine and a
// plain map, then checks that every item matches and that the index and TTL
// buckets hold exactly one entry per indexed or expiring item.
func TestRandomOpsKeepBucketsInStep(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1000)
	d, err := Open(filepath.Join(t.TempDir(), "db"), WithNoSync(), WithSweepInterval(0),
		WithClock(func() time.Time { return time.Unix(clock.Load(), 0) }))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[table.Key]table.Item{}
	live := func(k table.Key) *table.Item {
		if it, ok := model[k]; ok && !it.Expired(clock.Load()) {
			return &it
		}
		return nil
	}
	randKey := func() table.Key {
		return table.Key{PK: fmt.Sprintf("p%d", rng.IntN(3)), SK: fmt.Sprintf("s%d", rng.IntN(6))}
	}
	randItem := func(k table.Key) table.Item {
		it := table.Item{PK: k.PK, SK: k.SK, Version: rng.Int64N(3), Data: fmt.Appendf(nil, "%d", rng.IntN(100))}
		if rng.IntN(2) == 0 {
			it.GPK, it.GSK = fmt.Sprintf("g%d", rng.IntN(2)), fmt.Sprintf("x%d", rng.IntN(3))
		}
		if rng.IntN(3) == 0 {
			it.TTL = clock.Load() + rng.Int64N(20) - 5
		}
		return it
	}
	randCond := func() table.Cond {
		return []table.Cond{{}, table.IfNotExists(), table.IfExists(), table.IfVersion(rng.Int64N(3))}[rng.IntN(4)]
	}
	apply := func(op table.Op) {
		k := op.Target()
		switch op.Kind {
		case table.OpPut:
			model[k] = op.Item
		case table.OpDelete:
			delete(model, k)
		case table.OpAdd:
			if cur := live(k); cur != nil {
				cur.Num += op.Delta
				model[k] = *cur
			} else {
				model[k] = table.Item{PK: k.PK, SK: k.SK, Num: op.Delta}
			}
		}
	}

	for step := range 3000 {
		if step%100 == 99 {
			checkBuckets(t, d, model)
		}
		switch r := rng.IntN(10); {
		case r == 0:
			clock.Add(rng.Int64N(4))
		case r == 1:
			if _, err := d.Sweep(); err != nil {
				t.Fatal(err)
			}
			for k, it := range model {
				if it.Expired(clock.Load()) {
					delete(model, k)
				}
			}
		default:
			var ops []table.Op
			seen := map[table.Key]bool{}
			for range 1 + rng.IntN(3) {
				k := randKey()
				if seen[k] {
					continue
				}
				seen[k] = true
				switch rng.IntN(4) {
				case 0:
					ops = append(ops, table.Put(randItem(k), randCond()))
				case 1:
					ops = append(ops, table.Delete(k, randCond()))
				case 2:
					ops = append(ops, table.Add(k, rng.Int64N(5)-2, randCond()))
				case 3:
					if c := randCond(); !c.IsNone() {
						ops = append(ops, table.Check(k, c))
					}
				}
			}
			if len(ops) == 0 {
				continue
			}
			wantFail := -1
			for i, op := range ops {
				if !op.Cond.Holds(live(op.Target())) {
					wantFail = i
					break
				}
			}
			err := d.Transact(ctx, ops)
			var txe *table.TxError
			switch {
			case wantFail < 0 && err != nil:
				t.Fatalf("step %d: %v", step, err)
			case wantFail >= 0 && (!errors.As(err, &txe) || txe.Index != wantFail):
				t.Fatalf("step %d: err %v, want failure at %d", step, err, wantFail)
			case wantFail < 0:
				for _, op := range ops {
					apply(op)
				}
			}
		}
	}

	checkBuckets(t, d, model)
}

// checkBuckets checks that the stored items are exactly model and that the
// index and TTL buckets hold exactly their entries.
func checkBuckets(t *testing.T, d *DB, model map[table.Key]table.Item) {
	t.Helper()
	wantIndex, wantTTL := 0, 0
	err := d.db.View(func(tx *bbolt.Tx) error {
		b := buckets(tx)
		for k, want := range model {
			ikey := itemKey(k)
			r, ok, err := b.load(ikey)
			if err != nil || !ok {
				return fmt.Errorf("%s: missing (%v)", k, err)
			}
			if got := r.item(k); got.GPK != want.GPK || got.GSK != want.GSK || got.Num != want.Num ||
				got.Version != want.Version || got.TTL != want.TTL || !bytes.Equal(got.Data, want.Data) {
				return fmt.Errorf("%s: got %+v, want %+v", k, got, want)
			}
			if want.GPK != "" {
				wantIndex++
				if b.index.Get(indexKey(want.GPK, want.GSK, ikey)) == nil {
					return fmt.Errorf("%s: no index entry", k)
				}
			}
			if want.TTL != 0 {
				wantTTL++
				if b.ttl.Get(ttlKey(want.TTL, ikey)) == nil {
					return fmt.Errorf("%s: no ttl entry", k)
				}
			}
		}
		for name, want := range map[*bbolt.Bucket]int{b.items: len(model), b.index: wantIndex, b.ttl: wantTTL} {
			if n := name.Stats().KeyN; n != want {
				return fmt.Errorf("bucket holds %d keys, want %d", n, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBatchIsolation mixes failing and succeeding transactions from many
// goroutines so that they share batches: a failed one must leave nothing
// behind and must not disturb the others.
func TestBatchIsolation(t *testing.T) {
	t.Run("committer", func(t *testing.T) { testBatchIsolation(t) })
	t.Run("bbolt batch", func(t *testing.T) { testBatchIsolation(t, WithBoltBatch(5*time.Millisecond)) })
}

func testBatchIsolation(t *testing.T, opts ...Option) {
	d, err := Open(filepath.Join(t.TempDir(), "db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				k := table.Key{PK: fmt.Sprintf("g%d", g), SK: fmt.Sprintf("%02d", i)}
				ops := []table.Op{
					table.Put(table.Item{PK: k.PK, SK: k.SK, GPK: "all", GSK: k.String()}, table.Cond{}),
					table.Add(table.Key{PK: "counters", SK: k.PK}, 1, table.Cond{}),
				}
				fail := i%3 == 0
				if fail {
					ops = append(ops, table.Check(table.Key{PK: "nobody", SK: k.String()}, table.IfExists()))
				}
				err := d.Transact(ctx, ops)
				var txe *table.TxError
				if fail && (!errors.As(err, &txe) || txe.Index != 2) || !fail && err != nil {
					t.Errorf("%s fail=%v: %v", k, fail, err)
				}
			}
		})
	}
	wg.Wait()
	for g := range 16 {
		for i := range 20 {
			_, err := d.Get(ctx, table.Key{PK: fmt.Sprintf("g%d", g), SK: fmt.Sprintf("%02d", i)})
			if (i%3 == 0) != errors.Is(err, table.ErrNotFound) {
				t.Fatalf("g%d/%02d: %v", g, i, err)
			}
		}
		c, err := d.Get(ctx, table.Key{PK: "counters", SK: fmt.Sprintf("g%d", g)})
		if err != nil || c.Num != 13 {
			t.Fatalf("counter g%d: %+v, %v; want 13", g, c, err)
		}
	}
	page, err := d.Query(ctx, table.Query{Index: table.IndexName, PK: "all"})
	if err != nil || len(page.Items) != 16*13 {
		t.Fatalf("index holds %d items (%v), want %d", len(page.Items), err, 16*13)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	it := table.Item{PK: "p\x00", SK: "s\xff", GPK: "g", GSK: "a\x00\x00b\x00", Data: []byte{0, 1}, Num: -1 << 62, Version: 1 << 62, TTL: -5}
	r, err := decodeValue(encodeValue(&it))
	if err != nil {
		t.Fatal(err)
	}
	ikey := itemKey(it.Key())
	k, err := splitItemKey(ikey)
	if err != nil || k != it.Key() {
		t.Fatalf("splitItemKey: %v, %v", k, err)
	}
	if got := r.item(k); got.GPK != it.GPK || got.GSK != it.GSK || !bytes.Equal(got.Data, it.Data) ||
		got.Num != it.Num || got.Version != it.Version || got.TTL != it.TTL {
		t.Fatalf("round trip: %+v", got)
	}
	xk := indexKey(it.GPK, it.GSK, ikey)
	gsk, rest, err := splitIndexTail(xk[len(partPrefix(it.GPK)):])
	if err != nil || gsk != it.GSK || !bytes.Equal(rest, ikey) {
		t.Fatalf("splitIndexTail: %q %q %v", gsk, rest, err)
	}
	if ttlOf(ttlKey(-5, ikey)) != -5 || bytes.Compare(ttlKey(-5, nil), ttlKey(3, nil)) >= 0 {
		t.Fatal("ttl keys do not order signed times")
	}
	for _, bad := range [][]byte{nil, {2}, {formatV1, 5, 'a'}} {
		if _, err := decodeValue(bad); err == nil {
			t.Fatalf("decodeValue(%q) succeeded", bad)
		}
	}
}
