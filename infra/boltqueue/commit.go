package boltqueue

import (
	"sync"

	"go.etcd.io/bbolt"
)

// committer is group commit for queue writes: calls that arrive while a
// transaction is being written are queued and then written together in the
// next one, so concurrent callers share an fsync. Unlike bbolt's DB.Batch it
// adds no delay when there is no contention: a lone call commits at once.
type committer struct {
	db      *bbolt.DB
	mu      sync.Mutex
	pending []*op
	busy    bool // a leader is committing
}

type op struct {
	fn   func(*bbolt.Tx) error
	done chan opResult
}

type opResult struct {
	err  error
	lead bool // the caller is now the leader and commits the pending ops
}

// do runs fn in a write transaction, possibly shared with other calls, and
// returns once that transaction is committed. fn must only report real
// failures as errors, and be safe to run again: when a shared transaction
// fails, each of its functions is retried in a transaction of its own.
func (c *committer) do(fn func(*bbolt.Tx) error) error {
	o := &op{fn: fn, done: make(chan opResult, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, o)
	if c.busy {
		c.mu.Unlock()
		r := <-o.done
		if !r.lead {
			return r.err
		}
		c.mu.Lock()
	} else {
		c.busy = true
	}
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()

	c.commit(batch)

	c.mu.Lock()
	if len(c.pending) > 0 {
		c.pending[0].done <- opResult{lead: true} // hand over; busy stays set
	} else {
		c.busy = false
	}
	c.mu.Unlock()
	return (<-o.done).err
}

func (c *committer) commit(batch []*op) {
	err := c.db.Update(func(tx *bbolt.Tx) error {
		for _, o := range batch {
			if err := o.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		for _, o := range batch {
			o.done <- opResult{err: c.db.Update(o.fn)}
		}
		return
	}
	for _, o := range batch {
		o.done <- opResult{err: err}
	}
}
