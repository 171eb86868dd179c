package tabletest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
)

var isErr = errors.Is

func (s *suite) testPutGet(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	gpk := s.pk(t, "g")

	full := table.Item{
		PK: pk, SK: "full", GPK: gpk, GSK: "gsk",
		Data: []byte{0, 1, 2, 0xfe, 0xff, 'x', '{', '"'},
		Num:  -7, Version: 3, TTL: now() + 3600,
	}
	mustPut(t, tb, full)
	wantItem(t, tb, full)

	minimal := table.Item{PK: pk, SK: "minimal"}
	mustPut(t, tb, minimal)
	wantItem(t, tb, minimal)

	big := table.Item{PK: pk, SK: "bignums", Num: math.MaxInt64, Version: math.MinInt64 + 1, TTL: now() + 10*365*24*3600}
	mustPut(t, tb, big)
	wantItem(t, tb, big)

	empty := table.Item{PK: pk, SK: "empty-data", Data: []byte{}}
	mustPut(t, tb, empty)
	wantItem(t, tb, empty)

	// Odd but valid key characters.
	odd := dataItem(pk+" é|#:日本", "sk with spaces|#😀", "odd")
	mustPut(t, tb, odd)
	wantItem(t, tb, odd)

	// Put replaces the whole item: attributes it lacks are gone.
	repl := dataItem(pk, "full", "replaced")
	mustPut(t, tb, repl)
	wantItem(t, tb, repl)

	// A returned item is the caller's to keep: changing it changes nothing.
	got, err := tb.Get(ctx(t), repl.Key())
	if err != nil {
		t.Fatal(err)
	}
	got.Data[0] = 'X'
	wantItem(t, tb, repl)

	// Missing items, in a known and in an unknown partition.
	wantMissing(t, tb, table.Key{PK: pk, SK: "nope"})
	wantMissing(t, tb, table.Key{PK: s.pk(t, "nowhere"), SK: "full"})

	// The same sort key in another partition is another item.
	other := dataItem(s.pk(t, "q"), "full", "other partition")
	mustPut(t, tb, other)
	wantItem(t, tb, other)
	wantItem(t, tb, repl)

	// Delete without a condition, then Get is ErrNotFound.
	if err := tb.Delete(ctx(t), repl.Key(), table.Cond{}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, tb, repl.Key())
	wantItem(t, tb, other)

	// Deleting a missing item with no condition succeeds.
	if err := tb.Delete(ctx(t), table.Key{PK: pk, SK: "never-existed"}, table.Cond{}); err != nil {
		t.Fatalf("Delete of a missing item: %v", err)
	}
	if err := tb.Delete(ctx(t), repl.Key(), table.Cond{}); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func (s *suite) testInvalid(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)

	puts := []struct {
		name string
		it   table.Item
		want error
	}{
		{"empty PK", table.Item{SK: "a"}, table.ErrInvalid},
		{"empty SK", table.Item{PK: pk}, table.ErrInvalid},
		{"GSK without GPK", table.Item{PK: pk, SK: "a", GSK: "g"}, table.ErrInvalid},
		{"GPK without GSK", table.Item{PK: pk, SK: "a", GPK: s.pk(t, "g")}, table.ErrInvalid},
		{"PK too long", table.Item{PK: pk + long(table.MaxKeyBytes), SK: "a"}, table.ErrTooLarge},
		{"SK too long", table.Item{PK: pk, SK: long(table.MaxKeyBytes + 1)}, table.ErrTooLarge},
		{"GPK too long", table.Item{PK: pk, SK: "a", GPK: pk + long(table.MaxKeyBytes), GSK: "g"}, table.ErrTooLarge},
		{"GSK too long", table.Item{PK: pk, SK: "a", GPK: s.pk(t, "g"), GSK: long(table.MaxKeyBytes + 1)}, table.ErrTooLarge},
	}
	for _, tc := range puts {
		t.Run("Put "+tc.name, func(t *testing.T) {
			err := tb.Put(c, tc.it, table.Cond{})
			if !isErr(err, tc.want) {
				t.Fatalf("Put: err %v, want %v", err, tc.want)
			}
			if err := tb.Transact(c, []table.Op{table.Put(tc.it, table.Cond{})}); !isErr(err, tc.want) {
				t.Fatalf("Transact Put: err %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := tb.Get(c, table.Key{PK: pk}); !isErr(err, table.ErrInvalid) {
		t.Errorf("Get with empty SK: err %v, want ErrInvalid", err)
	}
	if _, err := tb.Get(c, table.Key{SK: "a"}); !isErr(err, table.ErrInvalid) {
		t.Errorf("Get with empty PK: err %v, want ErrInvalid", err)
	}
	if err := tb.Delete(c, table.Key{PK: pk}, table.Cond{}); !isErr(err, table.ErrInvalid) {
		t.Errorf("Delete with empty SK: err %v, want ErrInvalid", err)
	}
	if _, err := tb.Add(c, table.Key{SK: "a"}, 1); !isErr(err, table.ErrInvalid) {
		t.Errorf("Add with empty PK: err %v, want ErrInvalid", err)
	}
	if _, err := tb.GetMany(c, []table.Key{{PK: pk, SK: "a"}, {PK: pk}}); !isErr(err, table.ErrInvalid) {
		t.Errorf("GetMany with an empty SK: err %v, want ErrInvalid", err)
	}

	queries := []struct {
		name string
		q    table.Query
	}{
		{"no PK", table.Query{}},
		{"unknown index", table.Query{PK: pk, Index: "gsi2"}},
		{"prefix and from", table.Query{PK: pk, Prefix: "a", From: "a"}},
		{"prefix and to", table.Query{PK: pk, Prefix: "a", To: "b"}},
		{"from after to", table.Query{PK: pk, From: "b", To: "a"}},
		{"negative limit", table.Query{PK: pk, Limit: -1}},
	}
	for _, tc := range queries {
		if _, err := tb.Query(c, tc.q); !isErr(err, table.ErrInvalid) {
			t.Errorf("Query %s: err %v, want ErrInvalid", tc.name, err)
		}
	}
	// Nothing above was written.
	if items, _ := collect(t, tb, table.Query{PK: pk}); len(items) != 0 {
		t.Errorf("invalid writes left items %q", sortKeys(items))
	}
}

func (s *suite) testKeyLimits(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	longPK := pk + long(table.MaxKeyBytes-len(pk))
	it := table.Item{PK: longPK, SK: long(table.MaxKeyBytes), GPK: s.pk(t, "g"), GSK: long(table.MaxKeyBytes)}
	mustPut(t, tb, it)
	wantItem(t, tb, it)
	items, _ := collect(t, tb, table.Query{PK: longPK})
	if len(items) != 1 || !sameItem(items[0], it) {
		t.Fatalf("Query of a %d-byte partition: got %d items", len(longPK), len(items))
	}
}

// sized returns an item whose ItemSize is exactly n.
func sized(t *testing.T, it table.Item, n int) table.Item {
	t.Helper()
	it.Data = []byte{'x'}
	overhead := table.ItemSize(it) - 1
	it.Data = pad(n - overhead)
	if got := table.ItemSize(it); got != n {
		t.Fatalf("sized: ItemSize %d, want %d", got, n)
	}
	return it
}

func (s *suite) testItemSizeLimit(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	gpk := s.pk(t, "g")
	c := ctx(t)

	bases := []table.Item{
		{PK: pk, SK: "plain"},
		{PK: pk, SK: "indexed", GPK: gpk, GSK: "gsk", Num: 12345, Version: 7, TTL: now() + 3600},
	}
	for _, base := range bases {
		t.Run(base.SK, func(t *testing.T) {
			atMax := sized(t, base, table.MaxItemSize)
			mustPut(t, tb, atMax)
			wantItem(t, tb, atMax)

			over := sized(t, base, table.MaxItemSize+1)
			over.SK += "-over"
			if err := tb.Put(c, over, table.Cond{}); !isErr(err, table.ErrTooLarge) {
				t.Fatalf("Put of %d bytes: err %v, want ErrTooLarge", table.ItemSize(over), err)
			}
			wantMissing(t, tb, over.Key())
			if err := tb.Transact(c, []table.Op{table.Put(over, table.Cond{})}); !isErr(err, table.ErrTooLarge) {
				t.Fatalf("Transact Put of %d bytes: err %v, want ErrTooLarge", table.ItemSize(over), err)
			}
			wantMissing(t, tb, over.Key())

			// Overwriting the item at the limit with one over it leaves it as it was.
			over.SK = atMax.SK
			if err := tb.Put(c, over, table.Cond{}); !isErr(err, table.ErrTooLarge) {
				t.Fatalf("overwrite with %d bytes: err %v, want ErrTooLarge", table.ItemSize(over), err)
			}
			wantItem(t, tb, atMax)
		})
	}
}

// condCase is one condition checked against one prior state of an item.
type condCase struct {
	state string // "missing", "v3", "v0", "expired"
	cond  table.Cond
	ok    bool
}

var condCases = []condCase{
	{"missing", table.Cond{}, true},
	{"missing", table.IfNotExists(), true},
	{"missing", table.IfExists(), false},
	{"missing", table.IfVersion(0), false},
	{"missing", table.IfVersion(3), false},
	{"v3", table.Cond{}, true},
	{"v3", table.IfNotExists(), false},
	{"v3", table.IfExists(), true},
	{"v3", table.IfVersion(3), true},
	{"v3", table.IfVersion(4), false},
	{"v3", table.IfVersion(0), false},
	{"v0", table.IfVersion(0), true},
	{"v0", table.IfVersion(1), false},
	{"v0", table.IfExists(), true},
	{"expired", table.Cond{}, true},
	{"expired", table.IfNotExists(), true},
	{"expired", table.IfExists(), false},
	{"expired", table.IfVersion(3), false},
}

// condSetup writes the prior state for a condCase and returns what Get should
// show for it (nil when the item is missing or expired).
func condSetup(t *testing.T, tb table.Table, k table.Key, state string) *table.Item {
	t.Helper()
	var it table.Item
	switch state {
	case "missing":
		return nil
	case "v3":
		it = table.Item{PK: k.PK, SK: k.SK, Data: []byte("old"), Version: 3, Num: 9}
	case "v0":
		it = table.Item{PK: k.PK, SK: k.SK, Data: []byte("old")}
	case "expired":
		it = table.Item{PK: k.PK, SK: k.SK, Data: []byte("old"), Version: 3, TTL: now() - 60}
	default:
		t.Fatalf("unknown state %q", state)
	}
	mustPut(t, tb, it)
	if state == "expired" {
		wantMissing(t, tb, k)
		return nil
	}
	return &it
}

func (c condCase) name(i int) string {
	verb := "fails"
	if c.ok {
		verb = "holds"
	}
	return fmt.Sprintf("%02d %s %s %s", i, c.state, c.cond, verb)
}

func (s *suite) testPutConditions(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	for i, tc := range condCases {
		t.Run(tc.name(i), func(t *testing.T) {
			k := table.Key{PK: pk, SK: fmt.Sprintf("put%02d", i)}
			before := condSetup(t, tb, k, tc.state)
			next := table.Item{PK: k.PK, SK: k.SK, Data: []byte("new"), Version: 4}
			err := tb.Put(ctx(t), next, tc.cond)
			if tc.ok {
				if err != nil {
					t.Fatalf("Put: %v", err)
				}
				wantItem(t, tb, next)
				return
			}
			if !isErr(err, table.ErrConditionFailed) {
				t.Fatalf("Put: err %v, want ErrConditionFailed", err)
			}
			wantState(t, tb, k, before)
		})
	}
}

func (s *suite) testDeleteConditions(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	for i, tc := range condCases {
		t.Run(tc.name(i), func(t *testing.T) {
			k := table.Key{PK: pk, SK: fmt.Sprintf("del%02d", i)}
			before := condSetup(t, tb, k, tc.state)
			err := tb.Delete(ctx(t), k, tc.cond)
			if tc.ok {
				if err != nil {
					t.Fatalf("Delete: %v", err)
				}
				wantMissing(t, tb, k)
				return
			}
			if !isErr(err, table.ErrConditionFailed) {
				t.Fatalf("Delete: err %v, want ErrConditionFailed", err)
			}
			wantState(t, tb, k, before)
		})
	}
}

func (s *suite) testAdd(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)

	k := table.Key{PK: pk, SK: "counter"}
	steps := []struct{ delta, want int64 }{{5, 5}, {3, 8}, {-10, -2}, {1 << 40, 1<<40 - 2}}
	for _, st := range steps {
		got, err := tb.Add(c, k, st.delta)
		if err != nil {
			t.Fatalf("Add %d: %v", st.delta, err)
		}
		if got != st.want {
			t.Fatalf("Add %d returned %d, want %d", st.delta, got, st.want)
		}
	}
	// A created counter has no attributes besides its key and Num.
	wantItem(t, tb, table.Item{PK: pk, SK: "counter", Num: 1<<40 - 2})

	// Add keeps every other attribute of an existing item.
	rich := table.Item{PK: pk, SK: "rich", GPK: s.pk(t, "g"), GSK: "x", Data: []byte("keep me"), Num: 100, Version: 6, TTL: now() + 3600}
	mustPut(t, tb, rich)
	got, err := tb.Add(c, rich.Key(), -1)
	if err != nil {
		t.Fatalf("Add to an existing item: %v", err)
	}
	if got != 99 {
		t.Fatalf("Add returned %d, want 99", got)
	}
	rich.Num = 99
	wantItem(t, tb, rich)

	// An item whose Num was never set counts from zero.
	plain := dataItem(pk, "plain", "p")
	mustPut(t, tb, plain)
	if got, err := tb.Add(c, plain.Key(), 2); err != nil || got != 2 {
		t.Fatalf("Add to an item without Num: got %d, %v; want 2", got, err)
	}
	plain.Num = 2
	wantItem(t, tb, plain)
}

func (s *suite) testAddConcurrent(t *testing.T) {
	tb := s.newTable(t)
	k := table.Key{PK: s.pk(t, "p"), SK: "hits"}
	const workers, each = 16, 25
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen []int64
	)
	for range workers {
		wg.Go(func() {
			for range each {
				n, err := tb.Add(ctx(t), k, 1)
				if err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				mu.Lock()
				seen = append(seen, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.Sort(seen)
	for i, n := range seen {
		if n != int64(i+1) {
			t.Fatalf("Add results are not exactly 1..%d: position %d holds %d", workers*each, i, n)
		}
	}
	wantItem(t, tb, table.Item{PK: k.PK, SK: k.SK, Num: workers * each})
}

func (s *suite) testGetMany(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)

	// 150 keys, every fifth one missing, one expired, plus keys elsewhere.
	var (
		items []table.Item
		keys  []table.Key
		want  []table.Item
	)
	for i := range 150 {
		it := table.Item{PK: pk, SK: fmt.Sprintf("k%03d", i), Data: fmt.Appendf(nil, "v%d", i), Num: int64(i)}
		switch {
		case i%5 == 0:
		case i == 7:
			it.TTL = now() - 60
			items = append(items, it)
		default:
			items = append(items, it)
			want = append(want, it)
		}
		keys = append(keys, it.Key())
	}
	putAll(t, tb, items)
	// Ask in a scrambled order; results must follow it.
	slices.Reverse(keys)
	slices.Reverse(want)
	keys = append(keys[:20:20], append([]table.Key{{PK: s.pk(t, "elsewhere"), SK: "k001"}}, keys[20:]...)...)

	got, err := tb.GetMany(c, keys)
	if err != nil {
		t.Fatalf("GetMany of %d keys: %v", len(keys), err)
	}
	if len(got) != len(want) {
		t.Fatalf("GetMany returned %d items, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameItem(got[i], want[i]) {
			t.Fatalf("GetMany item %d:\n got %s\nwant %s", i, show(got[i]), show(want[i]))
		}
	}

	got, err = tb.GetMany(c, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetMany of no keys: %d items, %v", len(got), err)
	}
	got, err = tb.GetMany(c, keyList(pk, "k000", "k005"))
	if err != nil || len(got) != 0 {
		t.Fatalf("GetMany of missing keys: %d items, %v", len(got), err)
	}
	got, err = tb.GetMany(c, keyList(pk, "k003", "k001", "k002"))
	if err != nil || len(got) != 3 || got[0].SK != "k003" || got[1].SK != "k001" || got[2].SK != "k002" {
		t.Fatalf("GetMany of 3 keys: %q, %v", sortKeys(got), err)
	}
}

func (s *suite) testTTL(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	c := ctx(t)

	live := table.Item{PK: pk, SK: "live", Data: []byte("l"), TTL: now() + 3600}
	dead := table.Item{PK: pk, SK: "dead", Data: []byte("d"), TTL: now() - 60}
	putAll(t, tb, []table.Item{live, dead})

	wantItem(t, tb, live)
	wantMissing(t, tb, dead.Key())
	got, err := tb.GetMany(c, []table.Key{dead.Key(), live.Key()})
	if err != nil || len(got) != 1 || !sameItem(got[0], live) {
		t.Fatalf("GetMany: %q, %v; want only the live item", sortKeys(got), err)
	}
	items, _ := collect(t, tb, table.Query{PK: pk})
	if len(items) != 1 || !sameItem(items[0], live) {
		t.Fatalf("Query: %q; want only the live item", sortKeys(items))
	}
	items, _ = collect(t, tb, table.Query{PK: pk, Reverse: true, Limit: 1})
	if len(items) != 1 || !sameItem(items[0], live) {
		t.Fatalf("reverse Query: %q; want only the live item", sortKeys(items))
	}

	// An expired item counts as missing for conditions.
	if err := tb.Delete(c, dead.Key(), table.IfExists()); !isErr(err, table.ErrConditionFailed) {
		t.Fatalf("Delete IfExists of an expired item: err %v, want ErrConditionFailed", err)
	}
	if err := tb.Transact(c, []table.Op{table.Check(dead.Key(), table.IfNotExists()), table.Put(dataItem(pk, "tx", "t"), table.Cond{})}); err != nil {
		t.Fatalf("Transact Check IfNotExists of an expired item: %v", err)
	}
	reborn := dataItem(pk, "dead", "reborn")
	if err := tb.Put(c, reborn, table.IfNotExists()); err != nil {
		t.Fatalf("Put IfNotExists over an expired item: %v", err)
	}
	wantItem(t, tb, reborn)

	// Giving a live item a past TTL hides it; a zero TTL never expires.
	live.TTL = now() - 1
	mustPut(t, tb, live)
	wantMissing(t, tb, live.Key())
	live.TTL = 0
	mustPut(t, tb, live)
	wantItem(t, tb, live)
}
