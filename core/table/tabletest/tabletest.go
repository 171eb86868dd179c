// Package tabletest is the contract suite for the table.Table port. Every
// engine runs it from its own tests:
//
//	func TestContract(t *testing.T) {
//		tabletest.Run(t, func(t *testing.T) table.Table { return openFresh(t) })
//	}
//
// The suite relies only on the semantics documented in package table. Every
// partition key (and index partition key) it writes starts with a random
// per-run string, so an engine may hand out the same underlying table to
// every subtest, and runs may share a table with other data.
package tabletest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// IndexWait bounds how long the suite polls for a write to become visible in
// the secondary index, which is eventually consistent on DynamoDB.
var IndexWait = 15 * time.Second

// Run runs the whole contract suite. newTable is called once per subtest and
// must return an empty table (or one whose other contents cannot collide
// with the suite's random partition keys).
func Run(t *testing.T, newTable func(t *testing.T) table.Table) {
	s := &suite{newTable: newTable, run: "tt" + rand.Text()[:10]}
	groups := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"PutGet", s.testPutGet},
		{"Invalid", s.testInvalid},
		{"KeyLimits", s.testKeyLimits},
		{"ItemSizeLimit", s.testItemSizeLimit},
		{"PutConditions", s.testPutConditions},
		{"DeleteConditions", s.testDeleteConditions},
		{"Add", s.testAdd},
		{"AddConcurrent", s.testAddConcurrent},
		{"GetMany", s.testGetMany},
		{"TTL", s.testTTL},
		{"Transact", s.testTransact},
		{"TransactFailures", s.testTransactFailures},
		{"TransactValidation", s.testTransactValidation},
		{"Query", s.testQuery},
		{"QueryEmpty", s.testQueryEmpty},
		{"QueryPageBytes", s.testQueryPageBytes},
		{"Index", s.testIndex},
		{"IndexUpdates", s.testIndexUpdates},
		{"OptimisticWriters", s.testOptimisticWriters},
		{"ConcurrentClaim", s.testConcurrentClaim},
		{"ConcurrentDelete", s.testConcurrentDelete},
		{"ConcurrentTransact", s.testConcurrentTransact},
		{"Sequencer", s.testSequencer},
	}
	for _, g := range groups {
		t.Run(g.name, g.fn)
	}
}

type suite struct {
	newTable func(t *testing.T) table.Table
	run      string // random prefix of every partition key
}

// pk returns a partition key private to this run and subtest.
func (s *suite) pk(t *testing.T, name string) string {
	return s.run + "/" + t.Name() + "/" + name
}

// now is the current Unix time in seconds.
func now() int64 { return time.Now().Unix() }

func ctx(t *testing.T) context.Context { return t.Context() }

// sameItem reports whether two items are equal, treating nil and empty Data
// alike (an engine need not store an empty payload).
func sameItem(a, b table.Item) bool {
	return a.PK == b.PK && a.SK == b.SK && a.GPK == b.GPK && a.GSK == b.GSK &&
		bytes.Equal(a.Data, b.Data) && a.Num == b.Num && a.Version == b.Version && a.TTL == b.TTL
}

func show(it table.Item) string {
	data := fmt.Sprintf("%q", it.Data)
	if len(it.Data) > 64 {
		data = fmt.Sprintf("%q...(%d bytes)", it.Data[:32], len(it.Data))
	}
	return fmt.Sprintf("{PK:%q SK:%q GPK:%q GSK:%q Data:%s Num:%d Version:%d TTL:%d}",
		it.PK, it.SK, it.GPK, it.GSK, data, it.Num, it.Version, it.TTL)
}

func mustPut(t *testing.T, tb table.Table, it table.Item) {
	t.Helper()
	if err := tb.Put(ctx(t), it, table.Cond{}); err != nil {
		t.Fatalf("Put %s: %v", show(it), err)
	}
}

// putAll writes items with a few concurrent unconditional Puts.
func putAll(t *testing.T, tb table.Table, items []table.Item) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan table.Item)
	)
	for range 8 {
		wg.Go(func() {
			for it := range next {
				if err := tb.Put(ctx(t), it, table.Cond{}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("Put %s|%s: %w", it.PK, it.SK, err))
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
}

// wantItem fails unless Get returns exactly want.
func wantItem(t *testing.T, tb table.Table, want table.Item) {
	t.Helper()
	got, err := tb.Get(ctx(t), want.Key())
	if err != nil {
		t.Fatalf("Get %s: %v (want %s)", want.Key(), err, show(want))
	}
	if !sameItem(got, want) {
		t.Fatalf("Get %s:\n got %s\nwant %s", want.Key(), show(got), show(want))
	}
}

// wantMissing fails unless Get returns ErrNotFound.
func wantMissing(t *testing.T, tb table.Table, k table.Key) {
	t.Helper()
	got, err := tb.Get(ctx(t), k)
	if err == nil {
		t.Fatalf("Get %s: found %s, want ErrNotFound", k, show(got))
	}
	if !isErr(err, table.ErrNotFound) {
		t.Fatalf("Get %s: err %v, want ErrNotFound", k, err)
	}
}

// wantState checks the item at k: missing when want is nil, else equal to *want.
func wantState(t *testing.T, tb table.Table, k table.Key, want *table.Item) {
	t.Helper()
	if want == nil {
		wantMissing(t, tb, k)
	} else {
		wantItem(t, tb, *want)
	}
}

// collect runs q page by page until Next is empty and returns all items and
// the number of pages. It checks that no page exceeds q.Limit.
func collect(t *testing.T, tb table.Table, q table.Query) ([]table.Item, int) {
	t.Helper()
	var all []table.Item
	pages := 0
	for {
		p, err := tb.Query(ctx(t), q)
		if err != nil {
			t.Fatalf("Query %+v (page %d): %v", q, pages+1, err)
		}
		pages++
		if q.Limit > 0 && len(p.Items) > q.Limit {
			t.Fatalf("Query %+v: page of %d items over limit %d", q, len(p.Items), q.Limit)
		}
		all = append(all, p.Items...)
		if p.Next == "" {
			return all, pages
		}
		if p.Next == q.Cursor {
			t.Fatalf("Query %+v: Next cursor did not advance", q)
		}
		if pages > 10000 {
			t.Fatalf("Query %+v: more than %d pages", q, pages)
		}
		q.Cursor = p.Next
	}
}

func sortKeys(items []table.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.SK
	}
	return out
}

func indexKeys(items []table.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.GSK + " @" + it.SK
	}
	return out
}

// eventually retries check until it reports success or IndexWait passes.
func eventually(t *testing.T, what string, check func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(IndexWait)
	for {
		ok, detail := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so within %v: %s", what, IndexWait, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// indexQuery polls an index query until it returns items whose (GSK, SK)
// sequence is acceptable to match, and returns them.
func indexQuery(t *testing.T, tb table.Table, q table.Query, what string, match func([]table.Item) bool) []table.Item {
	t.Helper()
	var got []table.Item
	eventually(t, what, func() (bool, string) {
		got, _ = collect(t, tb, q)
		return match(got), fmt.Sprintf("index returned %q", indexKeys(got))
	})
	return got
}

// dataItem builds an item with Data set to a string.
func dataItem(pk, sk, data string) table.Item {
	return table.Item{PK: pk, SK: sk, Data: []byte(data)}
}

func keyList(pk string, sks ...string) []table.Key {
	out := make([]table.Key, len(sks))
	for i, sk := range sks {
		out[i] = table.Key{PK: pk, SK: sk}
	}
	return out
}

func filter(sks []string, keep func(string) bool) []string {
	var out []string
	for _, s := range sks {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

func reversed(sks []string) []string {
	out := slices.Clone(sks)
	slices.Reverse(out)
	return out
}

func pad(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }

func long(n int) string { return strings.Repeat("k", n) }
