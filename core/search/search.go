package search

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/filter"
)

// Orders of results (the spec's order_by).
const (
	OrderRank   = "rank"
	OrderRecent = "recent"
)

// Window sizes. A search ranks the newest WindowHits matches it can see
// (reading at most WindowReads postings); the next window, reached through
// next_batch, continues with older ones. Most searches on a community
// server have fewer matches than that, and then the rank order is exact.
const (
	WindowHits  = 1000
	WindowReads = 20000
)

// Group kinds of a token restricted to one group of results.
const (
	GroupRoom   = 'r'
	GroupSender = 's'
)

// Token is a next_batch: the window (stream positions below Below), the
// last result returned in it (LastPos 0: none yet), an optional group the
// pagination stays in, and a checksum of the search it belongs to.
type Token struct {
	Order     string
	Below     int64
	LastScore int64
	LastPos   int64
	GroupKind byte
	Group     string
	Sum       uint32
}

// ErrBadToken is returned for a next_batch that does not parse or belongs
// to another search.
var ErrBadToken = errors.New("search: invalid next_batch")

// String encodes the token: o_below_score_pos_sum[_g<base64 group>].
func (t Token) String() string {
	o := "k"
	if t.Order == OrderRecent {
		o = "r"
	}
	s := fmt.Sprintf("%s_%d_%d_%d_%x", o, t.Below, t.LastScore, t.LastPos, t.Sum)
	if t.GroupKind != 0 {
		s += "_" + string(t.GroupKind) + base64.RawURLEncoding.EncodeToString([]byte(t.Group))
	}
	return s
}

// ParseToken decodes a next_batch.
func ParseToken(s string) (*Token, error) {
	parts := strings.Split(s, "_")
	if len(parts) != 5 && len(parts) != 6 {
		return nil, ErrBadToken
	}
	t := &Token{}
	switch parts[0] {
	case "k":
		t.Order = OrderRank
	case "r":
		t.Order = OrderRecent
	default:
		return nil, ErrBadToken
	}
	var err error
	nums := []*int64{&t.Below, &t.LastScore, &t.LastPos}
	for i, p := range nums {
		if *p, err = strconv.ParseInt(parts[i+1], 10, 64); err != nil || *p < 0 {
			return nil, ErrBadToken
		}
	}
	if t.Below <= 0 {
		return nil, ErrBadToken
	}
	sum, err := strconv.ParseUint(parts[4], 16, 32)
	if err != nil {
		return nil, ErrBadToken
	}
	t.Sum = uint32(sum)
	if len(parts) == 6 {
		g := parts[5]
		if len(g) < 2 || (g[0] != GroupRoom && g[0] != GroupSender) {
			return nil, ErrBadToken
		}
		v, err := base64.RawURLEncoding.DecodeString(g[1:])
		if err != nil || len(v) == 0 {
			return nil, ErrBadToken
		}
		t.GroupKind, t.Group = g[0], string(v)
	}
	return t, nil
}

// checksum ties a token to the terms and order of the search that made it.
func checksum(terms []string, order string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(order))
	for _, t := range terms {
		h.Write([]byte{0})
		h.Write([]byte(t))
	}
	return h.Sum32()
}

// Request is one search of room events.
type Request struct {
	User  id.UserID
	Terms []string
	// Keys limits the fields searched (KeyBody, KeyName, KeyTopic); empty
	// searches all.
	Keys   map[string]bool
	Filter *filter.RoomEventFilter
	Order  string
	Limit  int
	From   *Token
	// Accept reports, for hits in result order, which can be returned
	// (the event still exists and is not redacted); nil accepts all.
	Accept func(ctx context.Context, hits []Hit) ([]bool, error)
}

// Result is one page of results.
type Result struct {
	Hits []Hit
	// Count estimates the results: the visible matches of the window the
	// page came from (exact unless Next moved on to another window).
	Count int
	// Next continues after this page (nil: no more results).
	Next *Token
	// GroupNext continues within each group of this page: by room and by
	// sender (set only when Next is).
	GroupNext map[byte]map[string]*Token
	// Reads is the number of postings read (for benchmarks).
	Reads int
}

// Searcher answers searches from the index.
type Searcher struct {
	Index *Index
	// Head is the newest event stream position (pins the first window, so
	// later pages rank the same events).
	Head func(ctx context.Context) (int64, error)
	// Rooms lists the rooms the user is or was in.
	Rooms func(ctx context.Context, u id.UserID) ([]id.RoomID, error)
	// Visible keeps the hits the user may see under history visibility
	// (nil: all).
	Visible func(ctx context.Context, u id.UserID, hits []Hit) ([]Hit, error)
	// WindowHits and WindowReads size a window (0: the defaults above).
	WindowHits, WindowReads int
}

// less orders hits: by score then recency for rank, by recency for recent.
func less(order string, a, b Hit) bool {
	if order == OrderRank && a.Score != b.Score {
		return a.Score > b.Score
	}
	return a.Pos > b.Pos
}

// keep builds the window's hit filter from the request.
func (r *Request) keep(rooms map[id.RoomID]bool) func(*Hit) bool {
	f := r.Filter
	return func(h *Hit) bool {
		if !rooms[h.RoomID] || len(r.Keys) > 0 && !r.Keys[h.Key] {
			return false
		}
		if r.From != nil && r.From.GroupKind == GroupRoom && string(h.RoomID) != r.From.Group ||
			r.From != nil && r.From.GroupKind == GroupSender && string(h.Sender) != r.From.Group {
			return false
		}
		if f == nil {
			return true
		}
		if !f.EventFilter.Match(EventType[h.Key], h.Sender) || !filter.MatchRoom(f.Rooms, f.NotRooms, h.RoomID) {
			return false
		}
		return f.ContainsURL == nil || *f.ContainsURL == h.HasURL
	}
}

// maxWindows bounds the windows one request scans while its page is not
// full (each is at most WindowReads postings).
const maxWindows = 3

// Search returns one page of results.
func (s *Searcher) Search(ctx context.Context, r Request) (*Result, error) {
	sum := checksum(r.Terms, r.Order)
	if r.From != nil && (r.From.Sum != sum || r.From.Order != r.Order) {
		return nil, ErrBadToken
	}
	if r.Limit <= 0 {
		r.Limit = 10
	}
	res := &Result{}
	if len(r.Terms) == 0 {
		return res, nil
	}
	ids, err := s.Rooms(ctx, r.User)
	if err != nil {
		return nil, err
	}
	rooms := make(map[id.RoomID]bool, len(ids))
	for _, x := range ids {
		rooms[x] = true
	}
	if len(rooms) == 0 {
		return res, nil
	}
	head, err := s.Head(ctx)
	if err != nil {
		return nil, err
	}
	// A first page pins its window at the stream head; a token cannot
	// point above it (the walk down visits every epoch under its top).
	below := head + 1
	if r.From != nil {
		below = min(r.From.Below, below)
	}
	from := r.From
	keep := r.keep(rooms)
	lastBelow := below
	finalFrom := 0 // index in res.Hits of the first hit of the last window read
	for win := 0; win < maxWindows && below > 0; win++ {
		w, err := s.Index.Scan(ctx, Scan{Terms: r.Terms, Below: below, Keep: keep,
			MaxHits: cmp.Or(s.WindowHits, WindowHits), MaxReads: cmp.Or(s.WindowReads, WindowReads)})
		if err != nil {
			return nil, err
		}
		res.Reads += w.Reads
		hits := w.Hits
		if s.Visible != nil && len(hits) > 0 {
			if hits, err = s.Visible(ctx, r.User, hits); err != nil {
				return nil, err
			}
		}
		if win == 0 {
			res.Count = len(hits)
		}
		sort.SliceStable(hits, func(i, j int) bool { return less(r.Order, hits[i], hits[j]) })
		if from != nil && from.LastPos > 0 {
			mark := Hit{Score: from.LastScore, Pos: from.LastPos}
			k := sort.Search(len(hits), func(i int) bool { return less(r.Order, mark, hits[i]) })
			hits = hits[k:]
		}
		from = nil
		finalFrom = len(res.Hits)
		// Fill the page in order, skipping what can no longer be returned.
		used := 0
		for used < len(hits) && len(res.Hits) < r.Limit {
			n := min(len(hits)-used, r.Limit-len(res.Hits)+2)
			batch := hits[used : used+n]
			ok := make([]bool, len(batch))
			if r.Accept != nil {
				if ok, err = r.Accept(ctx, batch); err != nil {
					return nil, err
				}
			} else {
				for i := range ok {
					ok[i] = true
				}
			}
			for i, h := range batch {
				used++
				if ok[i] {
					res.Hits = append(res.Hits, h)
					if len(res.Hits) == r.Limit {
						break
					}
				}
			}
		}
		lastBelow = below
		if used < len(hits) {
			// The page is full inside this window.
			last := res.Hits[len(res.Hits)-1]
			res.Next = &Token{Order: r.Order, Below: below, LastScore: last.Score, LastPos: last.Pos, Sum: sum}
			break
		}
		if w.Next == 0 {
			break // the index is exhausted
		}
		below = w.Next
		if len(res.Hits) == r.Limit {
			res.Next = &Token{Order: r.Order, Below: below, Sum: sum}
			break
		}
	}
	if res.Next == nil && below > 0 && len(res.Hits) < r.Limit && lastBelow != below {
		// Stopped after maxWindows with the page not full: go on next time.
		res.Next = &Token{Order: r.Order, Below: below, Sum: sum}
	}
	if res.Next != nil {
		if r.From != nil {
			res.Next.GroupKind, res.Next.Group = r.From.GroupKind, r.From.Group
		}
		res.GroupNext = map[byte]map[string]*Token{GroupRoom: {}, GroupSender: {}}
		for i, h := range res.Hits {
			// Within the group, continue after its last hit of the window
			// the page ends in, or from that window's top if it has none.
			for kind, val := range map[byte]string{GroupRoom: string(h.RoomID), GroupSender: string(h.Sender)} {
				t := &Token{Order: r.Order, Below: res.Next.Below, LastScore: h.Score, LastPos: h.Pos, GroupKind: kind, Group: val, Sum: sum}
				if res.Next.LastPos == 0 || i < finalFrom {
					t.LastScore, t.LastPos = 0, 0
				}
				res.GroupNext[kind][val] = t
			}
		}
	}
	return res, nil
}
