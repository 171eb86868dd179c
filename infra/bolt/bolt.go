// Package bolt is the embedded engine: it implements table.Table on one
// bbolt file, for running Cirrus as a single process.
//
// *DB implements table.Table itself (Table returns the same value typed as
// the port). Other embedded adapters, such as the queue, keep their own
// buckets in the same file through Bolt.
//
// Writes go through a group committer (see Batch): one goroutine takes every
// write waiting at that moment and applies them all in one bbolt transaction,
// so concurrent writers share one fsync while a lone writer never waits for
// a timer. Reads run in read-only transactions and never wait for writers.
// Expired items are hidden on read and deleted by a background sweeper.
package bolt

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("bolt: database is locked by another process")

// Option changes how Open sets up the database.
type Option func(*options)

type options struct {
	lockTimeout time.Duration
	noSync      bool
	boltBatch   time.Duration // > 0: use bbolt's DB.Batch with this delay
	sweepEvery  time.Duration
	clock       func() time.Time
}

// WithLockTimeout sets how long Open waits for the file lock (default 1s).
func WithLockTimeout(d time.Duration) Option { return func(o *options) { o.lockTimeout = d } }

// WithNoSync skips fsync on commit: much faster, but a crash may lose or
// corrupt recent writes. For tests and throwaway data only.
func WithNoSync() Option { return func(o *options) { o.noSync = true } }

// WithBoltBatch routes writes through bbolt's own DB.Batch, which waits up to
// maxDelay for writes to join a transaction, instead of the group committer.
// Meant for comparing the two; the committer was faster in every measurement.
func WithBoltBatch(maxDelay time.Duration) Option {
	return func(o *options) { o.boltBatch = max(maxDelay, time.Microsecond) }
}

// WithSweepInterval sets how often expired items are deleted (default one
// minute); zero or less turns the background sweeper off.
func WithSweepInterval(d time.Duration) Option { return func(o *options) { o.sweepEvery = d } }

// WithClock replaces the clock that decides TTL expiry (for tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// DB is an open bbolt file holding the table. It implements table.Table and
// is safe for concurrent use.
type DB struct {
	db       *bbolt.DB
	clock    func() time.Time
	reqs     chan writeReq // to the committer; unbuffered
	useBatch bool          // WithBoltBatch
	seq      sequences     // in-memory counters of Next (sequence.go)

	stop      chan struct{}  // closed by Close
	workers   sync.WaitGroup // committer and sweeper
	closeOnce sync.Once
	closeErr  error
}

var _ table.Table = (*DB)(nil)

// Open opens or creates the bbolt file at path (mode 0600; the directory
// must exist). If another process (or another DB in this one) has the file
// open, Open fails with ErrLocked after the lock timeout.
func Open(path string, opts ...Option) (*DB, error) {
	o := options{
		lockTimeout: time.Second,
		sweepEvery:  time.Minute,
		clock:       time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:         o.lockTimeout,
		NoSync:          o.noSync,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: 64 << 20,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (gave up after %v)", ErrLocked, path, o.lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	err = bdb.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketItems, bucketIndex, bucketTTL} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("bolt: init %s: %w", path, err)
	}
	d := &DB{db: bdb, clock: o.clock, stop: make(chan struct{}), reqs: make(chan writeReq)}
	if o.boltBatch > 0 {
		d.useBatch, bdb.MaxBatchDelay = true, o.boltBatch
	} else {
		d.workers.Go(d.commitLoop)
	}
	if o.sweepEvery > 0 {
		d.workers.Go(func() { d.sweepLoop(o.sweepEvery) })
	}
	return d, nil
}

// Close stops the committer and the sweeper and closes the file. Writes
// already taken by the committer finish; later ones fail with ErrClosed.
// Calling Close again returns the first result.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.workers.Wait()
		d.closeErr = d.db.Close()
	})
	return d.closeErr
}

// Bolt returns the underlying bbolt database, for adapters that keep their
// own buckets in the same file. They must not touch the table's buckets
// ("table", "table.gsi1", "table.ttl").
func (d *DB) Bolt() *bbolt.DB { return d.db }

// Table returns d as the storage port.
func (d *DB) Table() table.Table { return d }

func (d *DB) now() int64 { return d.clock().Unix() }

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("bolt: database closed")

// maxGroup bounds how many writes the committer puts in one transaction.
const maxGroup = 512

type writeReq struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

// Batch runs fn in a read-write transaction that it may share with other
// concurrent writes; it returns once that transaction is durably committed.
// Like bbolt's DB.Batch, fn may run more than once (a shared transaction is
// rolled back and redone if one of its functions fails), so fn must reset
// any state it reports through its closure on every run. fn should return an
// error only for real failures: a failing fn is taken out of the group and
// run alone, and its error is returned. Adapters sharing the file through
// Bolt use this to get the same group commit.
func (d *DB) Batch(fn func(*bbolt.Tx) error) error {
	if d.useBatch {
		return d.db.Batch(fn)
	}
	r := writeReq{fn: fn, done: make(chan error, 1)}
	select {
	case d.reqs <- r:
		return <-r.done
	case <-d.stop:
		return ErrClosed
	}
}

// commitLoop is the group committer. It blocks for one write, then takes
// every writer already waiting (the channel is unbuffered, so a waiting
// writer is one blocked in Batch) and commits them together. While it is
// committing, new writers queue up for the next group.
func (d *DB) commitLoop() {
	group := make([]writeReq, 0, maxGroup)
	for {
		select {
		case r := <-d.reqs:
			group = append(group[:0], r)
		case <-d.stop:
			return
		}
	take:
		for len(group) < maxGroup {
			select {
			case r := <-d.reqs:
				group = append(group, r)
			default:
				break take
			}
		}
		d.commit(group)
	}
}

// commit applies a group in one transaction. If a function fails, the
// transaction is rolled back, that function is run alone for its caller, and
// the rest are tried again together.
func (d *DB) commit(group []writeReq) {
	for len(group) > 0 {
		failed := -1
		err := d.db.Update(func(tx *bbolt.Tx) error {
			for i, r := range group {
				if err := safeCall(r.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, r := range group {
				r.done <- err
			}
			return
		}
		r := group[failed]
		group = append(group[:failed], group[failed+1:]...)
		r.done <- d.db.Update(func(tx *bbolt.Tx) error { return safeCall(r.fn, tx) })
	}
}

// safeCall turns a panic in fn into an error, so that one bad write cannot
// take the committer down.
func safeCall(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bolt: write panicked: %v", p)
		}
	}()
	return fn(tx)
}

// sweepLoop deletes expired items every interval until Close.
func (d *DB) sweepLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.Sweep()
		}
	}
}

// sweepChunk bounds the deletions of one sweeping transaction so that it
// never holds the writer lock for long.
const sweepChunk = 500

// Sweep deletes the items whose TTL has passed and returns how many it
// deleted. The background sweeper calls it; reads never depend on it.
func (d *DB) Sweep() (int, error) {
	total := 0
	for {
		var deleted, seen int
		err := d.db.Update(func(tx *bbolt.Tx) error {
			deleted, seen = 0, 0
			now := d.now()
			b := buckets(tx)
			var due [][]byte
			c := b.ttl.Cursor()
			for k, _ := c.First(); k != nil && len(due) < sweepChunk; k, _ = c.Next() {
				if len(k) < 8 || ttlOf(k) > now {
					break
				}
				due = append(due, append([]byte(nil), k...))
			}
			seen = len(due)
			for _, tk := range due {
				ikey := tk[8:]
				var r record
				if v := b.items.Get(ikey); v != nil {
					var err error
					if r, err = decodeValue(v); err != nil {
						return err
					}
				}
				if r.ttl != ttlOf(tk) || !r.expired(now) {
					// Stale entry: the item is gone or has another TTL now.
					if err := b.ttl.Delete(tk); err != nil {
						return err
					}
					continue
				}
				if err := b.remove(ikey, &r); err != nil {
					return err
				}
				deleted++
			}
			return nil
		})
		total += deleted
		if err != nil || seen < sweepChunk {
			return total, err
		}
	}
}
