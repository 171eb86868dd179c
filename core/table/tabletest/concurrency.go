package tabletest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// testOptimisticWriters has writers race read-modify-write cycles guarded by
// IfVersion; no increment may be lost.
func (s *suite) testOptimisticWriters(t *testing.T) {
	tb := s.newTable(t)
	k := table.Key{PK: s.pk(t, "p"), SK: "doc"}
	mustPut(t, tb, table.Item{PK: k.PK, SK: k.SK, Data: []byte("0"), Version: 1})

	const writers, each = 8, 3
	var wins, conflicts atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for done := 0; done < each; {
				cur, err := tb.Get(ctx(t), k)
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				next := cur
				next.Version = cur.Version + 1
				next.Num = cur.Num + 1
				next.Data = fmt.Appendf(nil, "%d", next.Num)
				err = tb.Put(ctx(t), next, table.IfVersion(cur.Version))
				switch {
				case err == nil:
					wins.Add(1)
					done++
				case isErr(err, table.ErrConditionFailed):
					conflicts.Add(1)
				default:
					t.Errorf("Put: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = writers * each
	if wins.Load() != total {
		t.Fatalf("%d successful writes, want %d", wins.Load(), total)
	}
	wantItem(t, tb, table.Item{PK: k.PK, SK: k.SK, Data: fmt.Appendf(nil, "%d", total), Num: total, Version: 1 + total})
	t.Logf("%d conflicts", conflicts.Load())
}

// testConcurrentClaim has many writers create the same item IfNotExists:
// exactly one wins and its data is what is stored.
func (s *suite) testConcurrentClaim(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	for round := range 3 {
		k := table.Key{PK: pk, SK: fmt.Sprintf("claim%d", round)}
		const n = 16
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
		)
		for i := range n {
			wg.Go(func() {
				err := tb.Put(ctx(t), table.Item{PK: k.PK, SK: k.SK, Data: fmt.Appendf(nil, "%d", i)}, table.IfNotExists())
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, i)
					mu.Unlock()
				case !isErr(err, table.ErrConditionFailed):
					t.Errorf("Put: %v", err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %v, want exactly 1", round, len(winners), winners)
		}
		wantItem(t, tb, table.Item{PK: k.PK, SK: k.SK, Data: fmt.Appendf(nil, "%d", winners[0])})
	}
}

// testConcurrentDelete has many writers delete the same item IfExists:
// exactly one succeeds.
func (s *suite) testConcurrentDelete(t *testing.T) {
	tb := s.newTable(t)
	k := table.Key{PK: s.pk(t, "p"), SK: "token"}
	mustPut(t, tb, dataItem(k.PK, k.SK, "t"))
	const n = 16
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			err := tb.Delete(ctx(t), k, table.IfExists())
			switch {
			case err == nil:
				wins.Add(1)
			case !isErr(err, table.ErrConditionFailed):
				t.Errorf("Delete: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d deletes succeeded, want exactly 1", wins.Load())
	}
	wantMissing(t, tb, k)
}

// testConcurrentTransact runs transactions that bump two counters together
// from many goroutines; the counters must stay equal and complete. A
// transaction that reports ErrConflict wrote nothing and is retried.
func (s *suite) testConcurrentTransact(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	a, b := table.Key{PK: pk, SK: "a"}, table.Key{PK: s.pk(t, "q"), SK: "b"}
	gate := dataItem(pk, "gate", "open")
	mustPut(t, tb, gate)

	const workers, each = 8, 5
	var wg sync.WaitGroup
	var retries atomic.Int64
	for range workers {
		wg.Go(func() {
			for range each {
				ops := []table.Op{
					table.Add(a, 1, table.Cond{}),
					table.Check(gate.Key(), table.IfExists()),
					table.Add(b, 1, table.Cond{}),
				}
				for {
					err := tb.Transact(ctx(t), ops)
					if isErr(err, table.ErrConflict) && retries.Add(1) < 1000 {
						continue
					}
					if err != nil {
						t.Errorf("Transact: %v", err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = workers * each
	wantItem(t, tb, table.Item{PK: a.PK, SK: a.SK, Num: total})
	wantItem(t, tb, table.Item{PK: b.PK, SK: b.SK, Num: total})
	t.Logf("%d conflict retries", retries.Load())
}
