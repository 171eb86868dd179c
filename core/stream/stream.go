// Package stream gives the server totally ordered streams (the event
// stream that incremental /sync reads) on top of the table port, safe with
// many concurrent writers on many machines.
//
// A writer allocates a position with one atomic Add (or, on an engine one
// process owns, from memory: see Reserve) and then claims the position's
// slot with IfNotExists in the same transaction that stores what the
// position stands for. Because allocation and commit are separate, a
// reader can find a gap: a position allocated but not yet committed. It never
// reads past a gap (so it cannot skip an event that commits late); if the gap
// stays open longer than Grace — its writer crashed — the reader fills the slot
// with a void entry using IfNotExists. Exactly one of the writer and the
// reader wins the slot; a writer that loses gets table.ErrConditionFailed for
// its claim and must retry with a new position.
package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// DefaultGrace is how long a gap may stay open before readers void it.
const DefaultGrace = 5 * time.Second

// Stream is one named stream.
type Stream struct {
	T    table.Table
	Name string
	// Grace is how long a reader waits for an allocated slot to be committed
	// (DefaultGrace if zero).
	Grace time.Duration
	Now   func() time.Time
}

// Entry is one committed position.
type Entry struct {
	Pos  int64
	Data []byte
}

const voidMark = 1

func (s *Stream) pk() string         { return "stream#" + s.Name }
func (s *Stream) counter() table.Key { return table.Key{PK: "counter#" + s.Name, SK: "counter"} }

// CounterKey is the key of the item whose Num is the last allocated
// position (for readers that watch several streams with one GetMany).
func (s *Stream) CounterKey() table.Key { return s.counter() }

// PosKey is the fixed-width sort key of a position (sorts like the number).
func PosKey(p int64) string { return fmt.Sprintf("%016d", p) }

func (s *Stream) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Stream) grace() time.Duration {
	if s.Grace > 0 {
		return s.Grace
	}
	return DefaultGrace
}

// Allocate reserves the next position with a durable Add on the counter
// item (so CounterKey's Num moves at once). The caller must then commit
// ClaimOp for it, or Void it. Reserve is cheaper where the engine allows.
func (s *Stream) Allocate(ctx context.Context) (int64, error) {
	return s.T.Add(ctx, s.counter(), 1)
}

// Reserve reserves the next position like Allocate. On an engine that one
// process owns (a table.Sequencer: the embedded one) the position comes
// from memory and nothing is written: ClaimOp (or Void) makes it durable,
// raising the counter item in the same transaction, so an entry costs one
// commit instead of two. The counter item then moves when the entry
// commits, not when its position is reserved. Elsewhere it is Allocate.
// Positions from Reserve and Allocate never collide and both increase in
// the order they are handed out.
func (s *Stream) Reserve(ctx context.Context) (int64, error) {
	if seq, ok := table.SequencerOf(s.T); ok {
		return seq.Next(ctx, s.counter())
	}
	return s.Allocate(ctx)
}

// sequenced reports whether ClaimOp and Void must raise the counter
// themselves (the engine hands positions out of memory).
func (s *Stream) sequenced() bool {
	_, ok := table.SequencerOf(s.T)
	return ok
}

// Latest is the highest position allocated so far (some may still be in
// flight), or on an engine where Reserve counts in memory, at least the
// highest position committed or voided.
func (s *Stream) Latest(ctx context.Context) (int64, error) {
	it, err := s.T.Get(ctx, s.counter())
	if errors.Is(err, table.ErrNotFound) {
		return 0, nil
	}
	return it.Num, err
}

// ClaimOp is the transaction operation that commits data at position p. It
// fails (as a condition failure) if a reader has voided the slot. On an
// engine where Reserve counts in memory it also raises the counter item to
// p (table.OpPutRaise), so the counter is always at least every stored
// position: watchers see the entry, sync tokens up to it are valid, and a
// restarted process counts on from there.
func (s *Stream) ClaimOp(p int64, data []byte) table.Op {
	return s.slotOp(table.Item{PK: s.pk(), SK: PosKey(p), Data: data, Num: s.now().UnixMilli()}, p)
}

func (s *Stream) slotOp(it table.Item, p int64) table.Op {
	if s.sequenced() {
		return table.PutRaise(it, table.IfNotExists(), s.counter(), p)
	}
	return table.Put(it, table.IfNotExists())
}

// IsClaimOp reports whether op is the claim of a stream slot (so a writer can
// tell from a *table.TxError that it lost its slot).
func (s *Stream) IsClaimOp(op table.Op) bool {
	return (op.Kind == table.OpPut || op.Kind == table.OpPutRaise) && op.Item.PK == s.pk()
}

// Void gives up position p (a writer that will not use it calls this, so
// readers need not wait for the grace period).
func (s *Stream) Void(ctx context.Context, p int64) error {
	it := table.Item{PK: s.pk(), SK: PosKey(p), Version: voidMark, Num: s.now().UnixMilli()}
	var err error
	if s.sequenced() {
		// The void raises the counter like a claim: a reader's token may
		// point at it.
		err = s.T.Transact(ctx, []table.Op{s.slotOp(it, p)})
	} else {
		err = s.T.Put(ctx, it, table.IfNotExists())
	}
	if errors.Is(err, table.ErrConditionFailed) {
		return nil
	}
	return err
}

// Read returns the committed entries after position `after`, in order, up
// to limit of them (0 = one table page), never past an open gap. next is the
// position to read after next time (it covers void entries too).
func (s *Stream) Read(ctx context.Context, after int64, limit int) (entries []Entry, next int64, err error) {
	next = after
	for attempt := 0; ; attempt++ {
		q := table.Query{PK: s.pk(), From: PosKey(next + 1), Limit: limit}
		if limit > 0 {
			q.Limit = limit - len(entries) + 1
		}
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, after, err
		}
		gapAt := int64(0)
		for _, it := range page.Items {
			p, err := strconv.ParseInt(it.SK, 10, 64)
			if err != nil {
				return nil, after, fmt.Errorf("stream %s: bad position %q", s.Name, it.SK)
			}
			if p != next+1 {
				gapAt = next + 1
				if s.now().Sub(time.UnixMilli(it.Num)) < s.grace() {
					return entries, next, nil // a writer may still be committing: wait for it
				}
				break
			}
			next = p
			if it.Version != voidMark {
				entries = append(entries, Entry{Pos: p, Data: it.Data})
				if limit > 0 && len(entries) >= limit {
					return entries, next, nil
				}
			}
		}
		if gapAt == 0 {
			if page.Next == "" || (limit > 0 && len(entries) >= limit) {
				return entries, next, nil
			}
			continue
		}
		// The gap has outlived the grace period: its writer is gone. Void
		// it (if the writer commits first, the void fails and we read its
		// entry on the next pass).
		if err := s.Void(ctx, gapAt); err != nil {
			return entries, next, err
		}
		if attempt > 1000 {
			return entries, next, fmt.Errorf("stream %s: too many gaps after %d", s.Name, next)
		}
	}
}
