// Package searchbench builds a synthetic chat corpus in a search index and
// times queries over it: shared by the Go benchmark of core/search and the
// `make bench` harness.
package searchbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/search"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Corpus is an index of synthetic messages.
type Corpus struct {
	Index *search.Index
	Head  int64 // the newest position
	Rooms []id.RoomID
	// DF is how many messages hold each word.
	DF map[string]int
	// Queries are searches of known selectivity, by name.
	Queries []Query
}

// Query is one search of the benchmark.
type Query struct {
	Name string
	Term string
	DF   int // messages holding every word (for one-word queries)
}

// syllables make pronounceable words; 'e', 's' and 'y' are left out so
// that English stemming leaves the words alone and each stays distinct.
var (
	consonants = []string{"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z"}
	vowels     = []string{"a", "i", "o", "u"}
)

func word(i int) string {
	var b strings.Builder
	for range 3 {
		b.WriteString(consonants[i%len(consonants)])
		i /= len(consonants)
		b.WriteString(vowels[i%len(vowels)])
		i /= len(vowels)
	}
	return b.String()
}

// Build indexes n messages of 4–19 words drawn from a Zipf distribution
// over 50,000 words (as in natural text, a few words are in many messages
// and most in few), spread over nRooms rooms and 200 senders, at stream
// positions 1..n. It writes with Index.AddBulk.
func Build(ctx context.Context, t table.Table, n, nRooms int, seed uint64) (*Corpus, error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	zipf := rand.NewZipf(rng, 1.07, 2, 49_999)
	c := &Corpus{Index: &search.Index{T: t}, Head: int64(n), DF: map[string]int{}}
	for i := range nRooms {
		c.Rooms = append(c.Rooms, id.RoomID(fmt.Sprintf("!room%03d:bench", i)))
	}
	var docs []search.Doc
	for i := 1; i <= n; i++ {
		words := make([]string, 4+rng.IntN(16))
		seen := map[string]bool{}
		for j := range words {
			words[j] = word(int(zipf.Uint64()))
			if !seen[words[j]] {
				seen[words[j]] = true
				c.DF[words[j]]++
			}
		}
		docs = append(docs, search.Doc{EventID: id.EventID(fmt.Sprintf("$ev%07d", i)), RoomID: c.Rooms[rng.IntN(nRooms)],
			Sender: id.UserID(fmt.Sprintf("@user%03d:bench", rng.IntN(200))), Pos: int64(i), StateGroup: "sg",
			Key: search.KeyBody, Text: strings.Join(words, " ")})
		if len(docs) == 2000 || i == n {
			if err := c.Index.AddBulk(ctx, docs); err != nil {
				return nil, err
			}
			docs = docs[:0]
		}
	}
	// One-word queries near chosen selectivities, then AND queries.
	pick := func(target int) (string, int) {
		best, bestDF := "", 0
		for w, df := range c.DF {
			if best == "" || abs(df-target) < abs(bestDF-target) || abs(df-target) == abs(bestDF-target) && w < best {
				best, bestDF = w, df
			}
		}
		return best, bestDF
	}
	rare, rareDF := pick(10)
	mid, midDF := pick(n / 100)
	common, commonDF := pick(n / 10)
	top, topDF := pick(n)
	c.Queries = []Query{
		{Name: fmt.Sprintf("rare word (%d msgs)", rareDF), Term: rare, DF: rareDF},
		{Name: fmt.Sprintf("1%% word (%d msgs)", midDF), Term: mid, DF: midDF},
		{Name: fmt.Sprintf("10%% word (%d msgs)", commonDF), Term: common, DF: commonDF},
		{Name: fmt.Sprintf("most common word (%d msgs)", topDF), Term: top, DF: topDF},
		{Name: "two words: 10% AND 1%", Term: common + " " + mid},
		{Name: "two words: most common AND rare", Term: top + " " + rare},
	}
	return c, nil
}

func abs(x int) int { return max(x, -x) }

// Searcher answers searches over the corpus for a user in the given rooms
// (history visibility is not applied: every posting is visible).
func (c *Corpus) Searcher(rooms []id.RoomID) *search.Searcher {
	return &search.Searcher{Index: c.Index,
		Head:  func(context.Context) (int64, error) { return c.Head, nil },
		Rooms: func(context.Context, id.UserID) ([]id.RoomID, error) { return rooms, nil }}
}

// Timing is the distribution of one query's time.
type Timing struct {
	Query   string  `json:"query"`
	Order   string  `json:"order"`
	Rooms   int     `json:"rooms"`
	Results int     `json:"results"` // on the first page
	Count   int     `json:"count"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	Reads   int     `json:"postings_read"`
}

// Measure runs the first page of a search `runs` times for a user in the
// given rooms.
func (c *Corpus) Measure(ctx context.Context, rooms []id.RoomID, q Query, order string, runs int) (Timing, error) {
	s := c.Searcher(rooms)
	req := search.Request{Terms: search.QueryTerms(q.Term), Order: order, Limit: 10}
	var ds []time.Duration
	var res *search.Result
	for range runs {
		start := time.Now()
		var err error
		if res, err = s.Search(ctx, req); err != nil {
			return Timing{}, err
		}
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	return Timing{Query: q.Name, Order: order, Rooms: len(rooms), Results: len(res.Hits), Count: res.Count,
		P50: ms(0.5), P90: ms(0.9), Reads: res.Reads}, nil
}
