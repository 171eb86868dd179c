package bolt

import (
	"context"
	"sync"
	"sync/atomic"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// sequences holds the counters Next hands numbers out of. Because bbolt's
// file lock makes this process the table's only writer, a counter can live
// in memory: callers make its numbers durable with OpPutRaise in the
// transaction that uses them, so a stream position costs no commit of its
// own (it cost an Add, one fsync'd commit, per position before).
//
// A counter is loaded on first use and kept for the life of the DB (one
// small entry per counter key: the event stream and the per-user and
// per-device streams that are written).
type sequences struct {
	mu     sync.Mutex
	m      map[string]int64 // items-bucket key -> highest number handed out or stored
	loaded atomic.Int32     // len(m), so writes skip the lock while no counter is in use
}

var _ table.Sequencer = (*DB)(nil)

// Next implements table.Sequencer: it returns one more than the highest
// number it returned for k or that any write left in k's Num. It writes
// nothing; a transaction with OpPutRaise makes the number durable.
func (d *DB) Next(ctx context.Context, k table.Key) (int64, error) {
	if err := k.Validate(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	ik := string(itemKey(k))
	s := &d.seq
	s.mu.Lock()
	if v, ok := s.m[ik]; ok {
		v++
		s.m[ik] = v
		s.mu.Unlock()
		return v, nil
	}
	s.mu.Unlock()
	// First use: read the stored Num inside a write transaction, so that
	// no commit touching k can be in flight unseen. From then on run keeps
	// the counter in step with every write to k. (If the group this joins
	// is rolled back and redone, the counter may come out too high: that
	// skips numbers, which readers of a stream void after their grace
	// period; it never repeats one.)
	err := d.Batch(func(tx *bbolt.Tx) error {
		r, found, err := buckets(tx).load([]byte(ik))
		if err != nil {
			return err
		}
		var stored int64
		if found && !r.expired(d.now()) {
			stored = r.num
		}
		s.mu.Lock()
		if _, ok := s.m[ik]; !ok {
			if s.m == nil {
				s.m = map[string]int64{}
			}
			s.m[ik] = stored
			s.loaded.Add(1)
		}
		s.mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	v := s.m[ik] + 1
	s.m[ik] = v
	s.mu.Unlock()
	return v, nil
}

// add returns stored+delta for an Add to the item at ikey, or, if Next
// hands out numbers of that counter, the highest of stored and the numbers
// handed out, plus delta (taken at once, so a concurrent Next cannot hand
// out the same number).
func (s *sequences) add(ikey []byte, stored, delta int64) int64 {
	if s.loaded.Load() == 0 {
		return stored + delta
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[string(ikey)]
	if !ok {
		return stored + delta
	}
	v = max(v, stored) + delta
	s.m[string(ikey)] = max(v, s.m[string(ikey)])
	return v
}

// wrote raises the in-memory counter of ikey (if loaded) to n: a write
// stored n in the item's Num.
func (s *sequences) wrote(ikey []byte, n int64) {
	if s.loaded.Load() == 0 {
		return
	}
	s.mu.Lock()
	if v, ok := s.m[string(ikey)]; ok && n > v {
		s.m[string(ikey)] = n
	}
	s.mu.Unlock()
}
