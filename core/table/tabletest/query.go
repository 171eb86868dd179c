package tabletest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// querySKs are sort keys whose bytewise UTF-8 order differs from naive
// numeric, case-insensitive or UTF-16 orders.
var querySKs = []string{
	"a", "a/1", "a/2", "a/10", "a b", "a-b", "a_b", "aa", "b", "b/1", "ba", "c",
	"0", "1", "10", "9", "09", "A", "Z", "~",
	"é", "éa", "e", "z", "Ω", "日本", "日本語", "\uff21", "😀", "\U0001F600a",
}

func (s *suite) testQuery(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")

	items := make([]table.Item, 0, len(querySKs)+2)
	for i, sk := range querySKs {
		items = append(items, table.Item{PK: pk, SK: sk, Data: []byte("d:" + sk), Num: int64(i)})
	}
	// Neighbours that must never show up: an expired item, and other partitions
	// whose keys extend or prefix this one.
	items = append(items,
		table.Item{PK: pk, SK: "b/expired", Data: []byte("gone"), TTL: now() - 60},
		dataItem(pk+"x", "a", "other"),
		dataItem(pk[:len(pk)-1], "a", "other"),
	)
	putAll(t, tb, items)

	sorted := slices.Clone(querySKs)
	sort.Strings(sorted) // bytewise
	all := func(string) bool { return true }
	prefix := func(p string) func(string) bool {
		return func(sk string) bool { return strings.HasPrefix(sk, p) }
	}
	between := func(from, to string) func(string) bool {
		return func(sk string) bool { return (from == "" || sk >= from) && (to == "" || sk <= to) }
	}
	cases := []struct {
		name string
		q    table.Query
		keep func(string) bool
	}{
		{"all", table.Query{}, all},
		{"prefix a/", table.Query{Prefix: "a/"}, prefix("a/")},
		{"prefix a", table.Query{Prefix: "a"}, prefix("a")},
		{"prefix 日本", table.Query{Prefix: "日本"}, prefix("日本")},
		{"prefix é", table.Query{Prefix: "é"}, prefix("é")},
		{"prefix none", table.Query{Prefix: "q"}, prefix("q")},
		{"prefix whole key", table.Query{Prefix: "c"}, prefix("c")},
		{"range", table.Query{From: "a/1", To: "b"}, between("a/1", "b")},
		{"range digits", table.Query{From: "1", To: "9"}, between("1", "9")},
		{"range non-ASCII", table.Query{From: "z", To: "日本"}, between("z", "日本")},
		{"range one key", table.Query{From: "c", To: "c"}, between("c", "c")},
		{"range between keys", table.Query{From: "a/3", To: "a/9"}, between("a/3", "a/9")},
		{"range absent bounds", table.Query{From: "a/0", To: "b/0"}, between("a/0", "b/0")},
		{"from only", table.Query{From: "b"}, between("b", "")},
		{"to only", table.Query{To: "a/2"}, between("", "a/2")},
		{"from past end", table.Query{From: "\U0001F601"}, between("\U0001F601", "")},
	}
	for _, tc := range cases {
		want := filter(sorted, tc.keep)
		for _, rev := range []bool{false, true} {
			for _, limit := range []int{0, 1, 3} {
				q := tc.q
				q.PK, q.Reverse, q.Limit = pk, rev, limit
				w := want
				if rev {
					w = reversed(want)
				}
				t.Run(fmt.Sprintf("%s/reverse=%v/limit=%d", tc.name, rev, limit), func(t *testing.T) {
					got, pages := collect(t, tb, q)
					if !slices.Equal(sortKeys(got), w) {
						t.Fatalf("got %q\nwant %q", sortKeys(got), w)
					}
					for _, it := range got {
						if it.PK != pk || string(it.Data) != "d:"+it.SK {
							t.Fatalf("wrong item %s", show(it))
						}
					}
					if limit > 0 && pages < (len(w)+limit-1)/limit {
						t.Fatalf("%d items in %d pages with limit %d", len(w), pages, limit)
					}
				})
			}
		}
	}

	// Items carry every attribute.
	full := table.Item{PK: s.pk(t, "full"), SK: "x", GPK: s.pk(t, "g"), GSK: "y", Data: []byte("z"), Num: 4, Version: 5, TTL: now() + 3600}
	mustPut(t, tb, full)
	got, _ := collect(t, tb, table.Query{PK: full.PK})
	if len(got) != 1 || !sameItem(got[0], full) {
		t.Fatalf("Query of one full item returned %d items (%v)", len(got), got)
	}
}

func (s *suite) testQueryEmpty(t *testing.T) {
	tb := s.newTable(t)
	for _, q := range []table.Query{
		{PK: s.pk(t, "none")},
		{PK: s.pk(t, "none"), Reverse: true, Limit: 2},
		{PK: s.pk(t, "none"), Index: table.IndexName},
	} {
		p, err := tb.Query(ctx(t), q)
		if err != nil {
			t.Fatalf("Query %+v: %v", q, err)
		}
		if len(p.Items) != 0 || p.Next != "" {
			t.Fatalf("Query %+v of an empty partition: %d items, Next %q", q, len(p.Items), p.Next)
		}
	}
}

func (s *suite) testQueryPageBytes(t *testing.T) {
	tb := s.newTable(t)
	pk := s.pk(t, "p")
	var items []table.Item
	var want []string
	for i := range 12 {
		sk := fmt.Sprintf("big%02d", i)
		items = append(items, table.Item{PK: pk, SK: sk, Data: pad(200 * 1024)})
		want = append(want, sk)
	}
	putAll(t, tb, items)
	for _, rev := range []bool{false, true} {
		got, pages := collect(t, tb, table.Query{PK: pk, Reverse: rev})
		w := want
		if rev {
			w = reversed(want)
		}
		if !slices.Equal(sortKeys(got), w) {
			t.Fatalf("reverse=%v: got %q, want %q", rev, sortKeys(got), w)
		}
		if pages < 3 {
			t.Fatalf("reverse=%v: 12 items of 200 KiB came in %d pages, want at least 3", rev, pages)
		}
		for _, it := range got {
			if len(it.Data) != 200*1024 {
				t.Fatalf("item %s has %d bytes of data", it.SK, len(it.Data))
			}
		}
	}
	// A limit still applies below the byte cap.
	got, pages := collect(t, tb, table.Query{PK: pk, Limit: 2})
	if len(got) != 12 || pages < 6 {
		t.Fatalf("limit 2: %d items in %d pages", len(got), pages)
	}
}

// indexFixture returns items for the index tests: six in index partition gpk
// (two sharing a GSK), one in another index partition, one left out of the
// index and one expired.
func (s *suite) indexFixture(t *testing.T) (gpk string, items []table.Item) {
	gpk = s.pk(t, "owner")
	p1, p2, p3 := s.pk(t, "p1"), s.pk(t, "p2"), s.pk(t, "p3")
	in := func(pk, sk, gsk string) table.Item {
		return table.Item{PK: pk, SK: sk, GPK: gpk, GSK: gsk, Data: []byte(pk + "|" + sk), Version: 1}
	}
	items = []table.Item{
		in(p1, "x1", "b"),
		in(p1, "x2", "a"),
		in(p1, "x3", "b"),
		in(p2, "y1", "c/2"),
		in(p2, "y2", "c/1"),
		in(p3, "z9", "日"),
		{PK: p2, SK: "y3", Data: []byte("not indexed")},
		{PK: p3, SK: "z1", GPK: s.pk(t, "someone-else"), GSK: "a", Data: []byte("elsewhere")},
		{PK: p3, SK: "z2", GPK: gpk, GSK: "d", Data: []byte("expired"), TTL: now() - 60},
	}
	return gpk, items
}

// indexOrder reports whether items are exactly the wanted (GSK @SK) entries,
// in GSK order; entries with equal GSK may come in any order.
func indexOrder(want ...string) func([]table.Item) bool {
	return func(got []table.Item) bool {
		keys := indexKeys(got)
		if len(keys) != len(want) {
			return false
		}
		gsk := func(s string) string { return s[:strings.LastIndex(s, " @")] }
		for i := range keys {
			if gsk(keys[i]) != gsk(want[i]) {
				return false
			}
		}
		a, b := slices.Clone(keys), slices.Clone(want)
		slices.Sort(a)
		slices.Sort(b)
		return slices.Equal(a, b)
	}
}

func (s *suite) testIndex(t *testing.T) {
	tb := s.newTable(t)
	gpk, items := s.indexFixture(t)
	putAll(t, tb, items)
	byKey := map[table.Key]table.Item{}
	for _, it := range items {
		byKey[it.Key()] = it
	}

	q := table.Query{Index: table.IndexName, PK: gpk}
	got := indexQuery(t, tb, q, "index holds the fixture",
		indexOrder("a @x2", "b @x1", "b @x3", "c/1 @y2", "c/2 @y1", "日 @z9"))
	for _, it := range got {
		if want := byKey[it.Key()]; !sameItem(it, want) {
			t.Fatalf("index returned\n %s\nwant %s", show(it), show(want))
		}
	}

	cases := []struct {
		name string
		q    table.Query
		want []string
	}{
		{"prefix", table.Query{Prefix: "c/"}, []string{"c/1 @y2", "c/2 @y1"}},
		{"range", table.Query{From: "b", To: "c/1"}, []string{"b @x1", "b @x3", "c/1 @y2"}},
		{"from", table.Query{From: "c/2"}, []string{"c/2 @y1", "日 @z9"}},
		{"to", table.Query{To: "b"}, []string{"a @x2", "b @x1", "b @x3"}},
		{"reverse", table.Query{Reverse: true}, []string{"日 @z9", "c/2 @y1", "c/1 @y2", "b @x1", "b @x3", "a @x2"}},
		{"reverse range", table.Query{Reverse: true, From: "a", To: "b"}, []string{"b @x1", "b @x3", "a @x2"}},
		{"limit 1", table.Query{Limit: 1}, []string{"a @x2", "b @x1", "b @x3", "c/1 @y2", "c/2 @y1", "日 @z9"}},
		{"limit 1 reverse", table.Query{Limit: 1, Reverse: true}, []string{"日 @z9", "c/2 @y1", "c/1 @y2", "b @x1", "b @x3", "a @x2"}},
		{"limit 2 prefix", table.Query{Limit: 2, Prefix: "b"}, []string{"b @x1", "b @x3"}},
		{"other owner", table.Query{PK: s.pk(t, "someone-else")}, []string{"a @z1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Index = table.IndexName
			if q.PK == "" {
				q.PK = gpk
			}
			indexQuery(t, tb, q, tc.name, indexOrder(tc.want...))
		})
	}

	// The table's own partitions are unaffected by the index.
	rows, _ := collect(t, tb, table.Query{PK: s.pk(t, "p2")})
	if !slices.Equal(sortKeys(rows), []string{"y1", "y2", "y3"}) {
		t.Fatalf("table query of p2: %q", sortKeys(rows))
	}
	// An index partition key is not a table partition key.
	rows, _ = collect(t, tb, table.Query{PK: gpk})
	if len(rows) != 0 {
		t.Fatalf("table query by an index key returned %q", sortKeys(rows))
	}
}

func (s *suite) testIndexUpdates(t *testing.T) {
	tb := s.newTable(t)
	gpk, items := s.indexFixture(t)
	putAll(t, tb, items)
	q := table.Query{Index: table.IndexName, PK: gpk}
	indexQuery(t, tb, q, "index holds the fixture",
		indexOrder("a @x2", "b @x1", "b @x3", "c/1 @y2", "c/2 @y1", "日 @z9"))

	c := ctx(t)
	x1, x2, y1 := items[0], items[1], items[3]
	x1.GPK, x1.GSK = "", "" // leaves the index
	y1.GSK = "0"            // moves to the front
	if err := tb.Put(c, x1, table.Cond{}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Put(c, y1, table.IfVersion(1)); err != nil {
		t.Fatal(err)
	}
	if err := tb.Delete(c, x2.Key(), table.Cond{}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Transact(c, []table.Op{table.Put(table.Item{PK: s.pk(t, "p4"), SK: "w", GPK: gpk, GSK: "c/0"}, table.Cond{})}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Add(c, items[5].Key(), 1); err != nil { // Add keeps the index key
		t.Fatal(err)
	}
	// The expired item comes back to life with a new TTL.
	z2 := items[8]
	z2.TTL = 0
	if err := tb.Put(c, z2, table.IfNotExists()); err != nil {
		t.Fatal(err)
	}
	order := indexOrder("0 @y1", "b @x3", "c/0 @w", "c/1 @y2", "d @z2", "日 @z9")
	indexQuery(t, tb, q, "index follows updates", func(got []table.Item) bool {
		return order(got) && got[len(got)-1].Num == 1 && sameItem(got[0], y1)
	})
}
