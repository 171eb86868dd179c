package search

import (
	"context"
	"fmt"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Hit is an event that holds every term of a search.
type Hit struct {
	EventID    id.EventID
	RoomID     id.RoomID
	Sender     id.UserID
	Key        string
	Pos        int64
	StateGroup string
	HasURL     bool
	// Score is the rank ×1e6, as an integer so that pagination tokens
	// carry it exactly.
	Score int64
}

// Rank is the score as the API's `rank` number.
func (h Hit) Rank() float64 { return float64(h.Score) / 1e6 }

// Ranking: the term-frequency part of BM25 (k1 = 1.2, b = 0.75) summed over
// the query's terms, with a fixed average length (a chat message is about
// a dozen indexed words). Scores depend on the event alone, not on the rest
// of the index, so a result's rank never changes between two pages.
const (
	bm25K1     = 1.2
	bm25B      = 0.75
	bm25AvgLen = 12.0
)

func termScore(tf, length int) float64 {
	f := float64(tf)
	return f * (bm25K1 + 1) / (f + bm25K1*(1-bm25B+bm25B*float64(length)/bm25AvgLen))
}

// Scan asks for one window of hits.
type Scan struct {
	Terms []string
	// Below bounds the window: only events at stream positions < Below.
	// Required: a first window starts above the event stream's head, and
	// the walk down visits each epoch under it.
	Below int64
	// Keep decides which hits count (rooms, filter); nil keeps all.
	Keep func(*Hit) bool
	// MaxHits ends the window after this many kept hits (default 1000).
	MaxHits int
	// MaxReads ends the window after this many postings were read, summed
	// over the terms (default 20000): a bound on one request's cost however
	// common the words are.
	MaxReads int
}

// Window is the result of a Scan: hits newest first.
type Window struct {
	Hits []Hit
	// Next is set when the scan stopped before the end of the index: the
	// next window is Scan{Below: Next}. Everything at or above Next was
	// decided in this one.
	Next int64
	// Reads is the number of postings read (for benchmarks).
	Reads int
}

// Postings per table query: a term's first query reads firstPage, a query
// after a seek seekPage (the leading term may jump again soon), and each
// following page of the same query four times more, up to maxPage.
const (
	firstPage = 100
	seekPage  = 16
	maxPage   = 1000
)

// cursor walks one term's postings from the newest down, epoch by epoch.
type cursor struct {
	t     table.Table
	term  string
	buf   []posting
	i     int
	epoch int64  // the epoch being read (or to read next when next == "")
	upper int64  // the next fresh query reads positions ≤ upper
	next  string // the table's cursor within the current query
	fresh bool   // the next read starts a query (at epoch, ≤ upper)
	limit int    // page size of the next read
	done  bool
	reads *int
}

func newCursor(t table.Table, term string, upper int64, reads *int) *cursor {
	return &cursor{t: t, term: term, epoch: epochOf(upper), upper: upper, fresh: true, limit: firstPage, reads: reads}
}

// head returns the current posting, or nil when the term has no more.
func (c *cursor) head(ctx context.Context) (*posting, error) {
	for c.i >= len(c.buf) {
		if c.done {
			return nil, nil
		}
		q := table.Query{PK: postingPK(c.term, c.epoch), Reverse: true, Limit: c.limit}
		c.limit = min(c.limit*4, maxPage)
		if c.fresh {
			q.To = postingSK(c.upper)
		} else {
			q.To, q.Cursor = postingSK(c.upper), c.next
		}
		page, err := c.t.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		*c.reads += len(page.Items)
		c.buf, c.i = c.buf[:0], 0
		for _, it := range page.Items {
			var p posting
			err := decodePosting(it.Data, &p)
			if err == nil {
				p.pos, err = strconv.ParseInt(it.SK, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("search: posting %s: %w", it.Key(), err)
			}
			c.buf = append(c.buf, p)
		}
		if page.Next != "" {
			c.next, c.fresh = page.Next, false
			continue
		}
		// This epoch is done: the older one next, read from its top.
		if c.epoch == 0 {
			c.done = true
			continue
		}
		c.epoch--
		c.upper = c.epoch<<EpochBits | (1<<EpochBits - 1)
		c.next, c.fresh = "", true
	}
	return &c.buf[c.i], nil
}

// seek moves to the newest posting at or below pos. Within the buffered
// page it steps; past it, it starts a new query at pos, so a common word
// is jumped over, not read, when a rarer one leads.
func (c *cursor) seek(pos int64) {
	for c.i < len(c.buf) && c.buf[c.i].pos > pos {
		c.i++
	}
	if c.i == len(c.buf) && !c.done {
		c.buf, c.i = c.buf[:0], 0
		c.epoch, c.upper, c.next, c.fresh, c.limit = epochOf(pos), pos, "", true, seekPage
	}
}

// Scan finds the events holding every term (an AND of the terms), newest
// first, by walking each term's postings in step: the term whose head is
// oldest leads and the others seek to it. It stops at the end of the
// index, at MaxHits kept hits or after MaxReads postings.
func (x *Index) Scan(ctx context.Context, s Scan) (Window, error) {
	if len(s.Terms) == 0 {
		return Window{}, nil
	}
	maxHits, maxReads := s.MaxHits, s.MaxReads
	if maxHits <= 0 {
		maxHits = 1000
	}
	if maxReads <= 0 {
		maxReads = 20000
	}
	if s.Below <= 0 {
		return Window{}, fmt.Errorf("search: a scan needs an upper bound")
	}
	upper := s.Below - 1
	var w Window
	cs := make([]*cursor, len(s.Terms))
	for i, t := range s.Terms {
		cs[i] = newCursor(x.T, t, upper, &w.Reads)
	}
	heads := make([]*posting, len(cs))
	for {
		lo, hi := int64(1<<62), int64(-1)
		for i, c := range cs {
			p, err := c.head(ctx)
			if err != nil {
				return Window{}, err
			}
			if p == nil {
				return w, nil // one term has no older postings: nothing older matches
			}
			heads[i] = p
			lo, hi = min(lo, p.pos), max(hi, p.pos)
		}
		// Out of budget: stop, once this window has decided something (so
		// the next one starts lower).
		if (len(w.Hits) >= maxHits || w.Reads >= maxReads) && hi+1 < s.Below {
			w.Next = hi + 1
			return w, nil
		}
		if lo != hi {
			for _, c := range cs {
				c.seek(lo)
			}
			continue
		}
		p := heads[0]
		h := Hit{EventID: p.EventID, RoomID: p.RoomID, Sender: p.Sender, Key: p.Key, Pos: p.pos,
			StateGroup: p.StateGroup, HasURL: p.HasURL}
		score := 0.0
		for _, hp := range heads {
			score += termScore(hp.TF, hp.Len)
		}
		h.Score = int64(score*1e6 + 0.5)
		if s.Keep == nil || s.Keep(&h) {
			w.Hits = append(w.Hits, h)
		}
		for _, c := range cs {
			c.i++
		}
	}
}
