package search

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestQueryTerms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"running", []string{"run"}},
		{"runs", []string{"run"}},
		{"Café", []string{"cafe"}},
		{"CAFE", []string{"cafe"}},
		{"crème brûlée", []string{"creme", "brule"}},
		{"the and of", nil},      // stop words only
		{"a b 7", []string{"7"}}, // single letters dropped, digits kept
		{"Martians and men", []string{"martian", "men"}},
		{"hello,world!hello", []string{"hello", "world"}}, // punctuation splits, terms are distinct
		{"ﬁsh", []string{"fish"}},                         // compatibility forms (NFKD)
		{"Straße", []string{"strass"}},                    // case folding
		{"łódź", []string{"łodz"}},                        // accents stripped where Unicode decomposes them
		{"東京タワー", []string{"東京タワー"}},                      // no spaces: one run
		{strings.Repeat("x", MaxTermBytes+1) + " ok", []string{"ok"}},
	} {
		if got := QueryTerms(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("QueryTerms(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTermsCountsAndCaps(t *testing.T) {
	tf, n := Terms("Run, run, RUNNING! The runner runs.")
	if tf["run"] != 4 || tf["runner"] != 1 || n != 5 {
		t.Fatalf("tf %v, length %d", tf, n)
	}
	var words []string
	for i := range MaxTermsPerEvent + 50 {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	if tf, _ := Terms(strings.Join(words, " ")); len(tf) != MaxTermsPerEvent {
		t.Fatalf("%d distinct terms kept, want %d", len(tf), MaxTermsPerEvent)
	}
}

func TestHighlights(t *testing.T) {
	got := Highlights("She was Running to the café; runs daily.", map[string]bool{"run": true, "cafe": true})
	if want := []string{"Running", "café", "runs"}; !slices.Equal(got, want) {
		t.Fatalf("highlights %q, want %q", got, want)
	}
}

func TestToken(t *testing.T) {
	for _, tok := range []Token{
		{Order: OrderRank, Below: 99, LastScore: 1234567, LastPos: 42, Sum: 0xdeadbeef},
		{Order: OrderRecent, Below: 1, Sum: 1},
		{Order: OrderRank, Below: 7, LastPos: 3, GroupKind: GroupRoom, Group: "!room_with_underscores:x", Sum: 5},
		{Order: OrderRecent, Below: 7, GroupKind: GroupSender, Group: "@u:x", Sum: 5},
	} {
		got, err := ParseToken(tok.String())
		if err != nil || *got != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "x", "k_1_2_3", "z_1_0_0_1", "k_0_0_0_1", "k_1_0_-1_1", "k_1_0_0_zz", "k_1_0_0_1_q", "k_1_0_0_1_r", "k_1_0_0_1_r!!"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

var vocabulary = []string{"apple", "banana", "cherry", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}

// randomDocs makes n documents of random words, with positions that cross
// epoch boundaries, spread over rooms and senders.
func randomDocs(rng *rand.Rand, n int) []Doc {
	docs := make([]Doc, n)
	pos := int64(1<<EpochBits - n/3) // a third in epoch 0, the rest later
	for i := range docs {
		pos += 1 + rng.Int64N(3)
		if i == 2*n/3 {
			pos += 2 << EpochBits // an empty epoch in between
		}
		var words []string
		for range 1 + rng.IntN(6) {
			// Skewed: "apple" is in most documents, "juliet" in few.
			words = append(words, vocabulary[min(rng.IntN(len(vocabulary)), rng.IntN(len(vocabulary)))])
		}
		docs[i] = Doc{EventID: id.EventID(fmt.Sprintf("$e%d", i)), RoomID: id.RoomID(fmt.Sprintf("!r%d:x", i%4)),
			Sender: id.UserID(fmt.Sprintf("@u%d:x", i%3)), Pos: pos, Key: KeyBody, Text: strings.Join(words, " ")}
	}
	return docs
}

// matches is the brute-force answer: documents holding every term, newest first.
func matches(docs []Doc, terms []string) []int64 {
	var out []int64
	for _, d := range docs {
		tf, _ := Terms(d.Text)
		ok := true
		for _, t := range terms {
			ok = ok && tf[t] > 0
		}
		if ok {
			out = append(out, d.Pos)
		}
	}
	slices.Reverse(out)
	return out
}

func TestScanMatchesBruteForce(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			x := &Index{T: testtable.Open(t, engine)}
			rng := rand.New(rand.NewPCG(1, 2))
			docs := randomDocs(rng, 600)
			if err := x.AddBulk(ctx, docs[:300]); err != nil {
				t.Fatal(err)
			}
			for _, d := range docs[300:] {
				if err := x.Add(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			// Indexing again changes nothing (redelivery).
			if err := x.Add(ctx, docs[0]); err != nil {
				t.Fatal(err)
			}
			for _, q := range [][]string{{"appl"}, {"juliet"}, {"appl", "juliet"}, {"juliet", "appl", "banana"}, {"hotel", "india"}, {"zulu"}} {
				want := matches(docs, q)
				// Whole index at once, then in small windows that must
				// cover the same hits once each.
				for _, maxReads := range []int{0, 40} {
					var got []int64
					below := docs[len(docs)-1].Pos + 1
					for i := 0; i < 1000; i++ {
						w, err := x.Scan(ctx, Scan{Terms: q, Below: below, MaxReads: maxReads, MaxHits: 1 << 30})
						if err != nil {
							t.Fatal(err)
						}
						for _, h := range w.Hits {
							got = append(got, h.Pos)
						}
						if w.Next == 0 {
							break
						}
						if w.Next >= below {
							t.Fatalf("%v: no progress at %d", q, below)
						}
						below = w.Next
					}
					if !slices.Equal(got, want) {
						t.Errorf("%v (maxReads %d): %d hits, want %d", q, maxReads, len(got), len(want))
					}
				}
			}
			// Removing a document takes it out of every term.
			if err := x.Remove(ctx, docs[len(docs)-1]); err != nil {
				t.Fatal(err)
			}
			w, err := x.Scan(ctx, Scan{Terms: QueryTerms(docs[len(docs)-1].Text), Below: docs[len(docs)-1].Pos + 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range w.Hits {
				if h.EventID == docs[len(docs)-1].EventID {
					t.Fatal("removed document still found")
				}
			}
		})
	}
}

func TestSearchPagination(t *testing.T) {
	ctx := context.Background()
	x := &Index{T: testtable.Open(t, "bolt")}
	rng := rand.New(rand.NewPCG(3, 4))
	docs := randomDocs(rng, 400)
	if err := x.AddBulk(ctx, docs); err != nil {
		t.Fatal(err)
	}
	head := docs[len(docs)-1].Pos
	s := &Searcher{Index: x,
		Head: func(context.Context) (int64, error) { return head, nil },
		Rooms: func(context.Context, id.UserID) ([]id.RoomID, error) {
			return []id.RoomID{"!r0:x", "!r1:x", "!r2:x"}, nil // not !r3
		},
		WindowHits: 25, WindowReads: 60}
	terms := []string{"appl"}
	var want []int64
	for _, d := range docs {
		tf, _ := Terms(d.Text)
		if tf["appl"] > 0 && d.RoomID != "!r3:x" {
			want = append(want, d.Pos)
		}
	}
	for _, order := range []string{OrderRank, OrderRecent} {
		for _, limit := range []int{1, 7, 50} {
			var got []Hit
			var from *Token
			for i := 0; ; i++ {
				if i > 1000 {
					t.Fatal("pagination does not end")
				}
				res, err := s.Search(ctx, Request{Terms: terms, Order: order, Limit: limit, From: from})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Hits) > limit {
					t.Fatalf("page of %d, limit %d", len(res.Hits), limit)
				}
				got = append(got, res.Hits...)
				if res.Next == nil {
					break
				}
				// Tokens travel as strings.
				if from, err = ParseToken(res.Next.String()); err != nil {
					t.Fatal(err)
				}
			}
			pos := make([]int64, len(got))
			for i, h := range got {
				pos[i] = h.Pos
			}
			sorted := slices.Clone(pos)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			wantSorted := slices.Clone(want)
			slices.Sort(wantSorted)
			if !slices.Equal(sorted, wantSorted) {
				t.Fatalf("%s limit %d: %d results, want %d (every match once)", order, limit, len(got), len(want))
			}
			if order == OrderRecent && !slices.IsSortedFunc(pos, func(a, b int64) int { return int(b - a) }) {
				t.Fatalf("recent order not newest first")
			}
		}
	}
	// Rank: the first page of one window is ordered by score.
	s.WindowHits, s.WindowReads = 0, 0
	res, err := s.Search(ctx, Request{Terms: terms, Order: OrderRank, Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(res.Hits, func(a, b Hit) int { return int(b.Score - a.Score) }) || res.Count != len(want) {
		t.Fatalf("rank page unordered or count %d != %d", res.Count, len(want))
	}
	// A token from another search is refused.
	if _, err := s.Search(ctx, Request{Terms: []string{"banana"}, Order: OrderRank, Limit: 5, From: res.Next}); err != ErrBadToken {
		t.Fatalf("foreign token: %v", err)
	}
	// Group tokens continue within the group only.
	res, err = s.Search(ctx, Request{Terms: terms, Order: OrderRecent, Limit: 3})
	if err != nil || res.Next == nil {
		t.Fatal(err)
	}
	room := res.Hits[0].RoomID
	gt := res.GroupNext[GroupRoom][string(room)]
	more, err := s.Search(ctx, Request{Terms: terms, Order: OrderRecent, Limit: 10, From: gt})
	if err != nil || len(more.Hits) == 0 {
		t.Fatalf("group page: %v %v", more, err)
	}
	for _, h := range more.Hits {
		if h.RoomID != room || h.Pos >= res.Hits[0].Pos {
			t.Fatalf("group page has %s at %d", h.RoomID, h.Pos)
		}
	}
}

func TestDocOf(t *testing.T) {
	empty := ""
	member := "@u:x"
	for _, tc := range []struct {
		name    string
		ev      rooms.Event
		key     string
		text    string
		hasURL  bool
		indexed bool
	}{
		{"message", rooms.Event{Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"hello"}`)}, KeyBody, "hello", false, true},
		{"image", rooms.Event{Type: "m.room.message", Content: []byte(`{"msgtype":"m.image","body":"cat.png","url":"mxc://x/y"}`)}, KeyBody, "cat.png", true, true},
		{"name", rooms.Event{Type: "m.room.name", StateKey: &empty, Content: []byte(`{"name":"Lobby"}`)}, KeyName, "Lobby", false, true},
		{"topic with m.topic", rooms.Event{Type: "m.room.topic", StateKey: &empty, Content: []byte(`{"topic":"plain","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>html</b>"},{"body":"fallback words"}]}}`)}, KeyTopic, "plain\nfallback words", false, true},
		{"encrypted", rooms.Event{Type: "m.room.encrypted", Content: []byte(`{"ciphertext":"abc"}`)}, "", "", false, false},
		{"name with a state key", rooms.Event{Type: "m.room.name", StateKey: &member, Content: []byte(`{"name":"x"}`)}, "", "", false, false},
		{"body not a string", rooms.Event{Type: "m.room.message", Content: []byte(`{"body":5}`)}, "", "", false, false},
		{"redacted", rooms.Event{Type: "m.room.message", RedactedBy: "$r", Content: []byte(`{"body":"x"}`)}, "", "", false, false},
		{"outlier", rooms.Event{Type: "m.room.message", Outlier: true, Content: []byte(`{"body":"x"}`)}, "", "", false, false},
	} {
		ev := tc.ev
		if ev.Pos == 0 && !ev.Outlier {
			ev.Pos = 5
		}
		d, ok := DocOf(&ev)
		if ok != tc.indexed || ok && (d.Key != tc.key || d.Text != tc.text || d.HasURL != tc.hasURL || d.Pos != 5) {
			t.Errorf("%s: %+v %v", tc.name, d, ok)
		}
	}
}

func TestPostingEncoding(t *testing.T) {
	p := posting{EventID: "$e", RoomID: "!r:x", Sender: "@u:x", Key: KeyTopic, TF: 3, Len: 9, StateGroup: "sg:$s", HasURL: true}
	var got posting
	if err := decodePosting(p.encode(), &got); err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "a\x1fb", "$e\x1f!r\x1f@u\x1fq\x1f1\x1f1\x1f\x1f", "$e\x1f!r\x1f@u\x1fb\x1fx\x1f1\x1f\x1f", "$e\x1f!r\x1f@u\x1fb\x1f1\x1f1\x1f\x1f\x1fextra"} {
		if err := decodePosting([]byte(bad), &got); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

func TestForgedTokenIsClamped(t *testing.T) {
	ctx := context.Background()
	x := &Index{T: testtable.Open(t, "bolt")}
	if err := x.Add(ctx, Doc{EventID: "$a", RoomID: "!r:x", Sender: "@u:x", Pos: 3, Key: KeyBody, Text: "zebra"}); err != nil {
		t.Fatal(err)
	}
	s := &Searcher{Index: x, Head: func(context.Context) (int64, error) { return 3, nil },
		Rooms: func(context.Context, id.UserID) ([]id.RoomID, error) { return []id.RoomID{"!r:x"}, nil }}
	terms := []string{"zebra"}
	tok := &Token{Order: OrderRecent, Below: 1 << 62, Sum: checksum(terms, OrderRecent)}
	res, err := s.Search(ctx, Request{Terms: terms, Order: OrderRecent, From: tok})
	if err != nil || len(res.Hits) != 1 {
		t.Fatalf("%v %v", res, err)
	}
}
