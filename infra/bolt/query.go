package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// A cursor is the tail of the last returned bbolt key after the partition
// prefix (the SK for the table, esc(GSK) 00 01 part(PK) SK for the index),
// base64url-encoded. The query it came from supplies the partition.

func encodeCursor(tail []byte) string { return base64.RawURLEncoding.EncodeToString(tail) }

func decodeCursor(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%w: bad cursor", table.ErrInvalid)
	}
	return b, nil
}

// after returns the smallest byte string greater than every string that
// starts with p, or nil if there is none (p is all FF bytes).
func after(p []byte) []byte {
	b := bytes.Clone(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}

// Query returns one page of a partition of the table or of the index.
func (d *DB) Query(ctx context.Context, q table.Query) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, err
	}
	if err := q.Validate(); err != nil {
		return table.Page{}, err
	}
	var cursor []byte
	if q.Cursor != "" {
		var err error
		if cursor, err = decodeCursor(q.Cursor); err != nil {
			return table.Page{}, err
		}
	}
	var page table.Page
	err := d.db.View(func(tx *bbolt.Tx) error {
		s := scan{q: q, now: d.now(), items: tx.Bucket(bucketItems), pp: partPrefix(q.PK)}
		if q.Index == "" {
			s.b = s.items
		} else {
			s.b, s.index = tx.Bucket(bucketIndex), true
		}
		var err error
		page, err = s.run(cursor)
		return err
	})
	return page, err
}

// scan walks one partition of the items or index bucket.
type scan struct {
	q     table.Query
	now   int64
	b     *bbolt.Bucket // bucket walked
	items *bbolt.Bucket // where the items live
	index bool
	pp    []byte // partition prefix
}

// bound turns a sort-key bound into the matching key tail in the walked bucket.
func (s *scan) bound(sk string) []byte {
	if s.index {
		return appendEscaped(nil, sk)
	}
	return []byte(sk)
}

// start positions c on the first candidate key.
func (s *scan) start(c *bbolt.Cursor, cursor []byte) (k, v []byte) {
	q := s.q
	join := func(tail []byte) []byte { return append(bytes.Clone(s.pp), tail...) }
	if !q.Reverse {
		switch {
		case cursor != nil:
			k, v = c.Seek(join(cursor))
			if k != nil && bytes.Equal(k, join(cursor)) {
				k, v = c.Next()
			}
			return k, v
		case q.Prefix != "":
			return c.Seek(join(s.bound(q.Prefix)))
		case q.From != "":
			return c.Seek(join(s.bound(q.From)))
		}
		return c.Seek(s.pp)
	}
	// Reverse: seek to the first key past the range, then step back.
	var past []byte
	switch {
	case cursor != nil:
		past = join(cursor)
	case q.Prefix != "":
		past = after(join(s.bound(q.Prefix)))
	case q.To != "" && s.index:
		past = append(join(s.bound(q.To)), 0, 2) // above every entry with GSK == To
	case q.To != "":
		past = append(join(s.bound(q.To)), 0)
	default:
		past = after(s.pp)
	}
	if past == nil {
		return c.Last()
	}
	if k, _ = c.Seek(past); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// sortKey extracts the sort key (SK or GSK) and the items-bucket key from a
// key of the walked bucket that starts with the partition prefix.
func (s *scan) sortKey(k []byte) (sk string, ikey []byte, err error) {
	tail := k[len(s.pp):]
	if !s.index {
		return string(tail), k, nil
	}
	return splitIndexTail(tail)
}

// where tells how a sort key relates to the query's range.
type where int

const (
	inRange where = iota
	before        // not yet reached in the walking direction: skip
	beyond        // past the range in the walking direction: stop
)

func (s *scan) place(sk string) where {
	q := s.q
	low, high := false, false // below the range, above the range
	switch {
	case q.Prefix != "":
		if !strings.HasPrefix(sk, q.Prefix) {
			low, high = sk < q.Prefix, sk > q.Prefix
		}
	default:
		low = q.From != "" && sk < q.From
		high = q.To != "" && sk > q.To
	}
	switch {
	case !low && !high:
		return inRange
	case low && q.Reverse, high && !q.Reverse:
		return beyond
	}
	return before
}

func (s *scan) run(cursor []byte) (table.Page, error) {
	var page table.Page
	c := s.b.Cursor()
	step := c.Next
	if s.q.Reverse {
		step = c.Prev
	}
	size := 0
	var lastTail []byte
	for k, v := s.start(c, cursor); k != nil && bytes.HasPrefix(k, s.pp); k, v = step() {
		sk, ikey, err := s.sortKey(k)
		if err != nil {
			return page, err
		}
		switch s.place(sk) {
		case before:
			continue
		case beyond:
			return page, nil
		}
		if s.index {
			if v = s.items.Get(ikey); v == nil {
				continue // cannot happen: entries are written with their items
			}
		}
		r, err := decodeValue(v)
		if err != nil {
			return page, err
		}
		if r.expired(s.now) {
			continue
		}
		key, err := splitItemKey(ikey)
		if err != nil {
			return page, err
		}
		it := r.item(key)
		n := table.ItemSize(it)
		if (s.q.Limit > 0 && len(page.Items) == s.q.Limit) || (len(page.Items) > 0 && size+n > table.MaxPageBytes) {
			page.Next = encodeCursor(lastTail)
			return page, nil
		}
		page.Items = append(page.Items, it)
		size += n
		lastTail = append(lastTail[:0], k[len(s.pp):]...)
	}
	return page, nil
}
