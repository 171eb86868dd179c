// Package boltqueue is a durable embedded queue.Queue for the all-in-one
// process, stored in a bbolt file shared with the table data. It has the
// semantics of SQS (see core/queue and its contract suite): at-least-once
// delivery with a visibility timeout, dead-lettering after MaxReceives
// receives, FIFO groups and deduplication.
//
// Every queue keeps its messages in the bucket "queue/<name>" (and its
// dead-letter queue in "queue/<name-dlq>"); nothing else in the file is
// touched. A Send returns only after its messages are committed, so they
// survive a crash. The receive count and visibility deadline are written with
// every Receive, so after a restart in-flight messages reappear when their
// timeout passes and a message that keeps crashing its consumer still ends up
// dead-lettered. SetVisibility changes are kept in memory only: after a
// restart the message reappears at its last received deadline, which at
// most redelivers it sooner.
//
// The index of what is receivable is kept in memory and rebuilt when the
// queue is opened, so only one Queue per spec may use a file at a time.
package boltqueue

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

// BucketPrefix starts the name of every bucket this package creates.
const BucketPrefix = "queue/"

const (
	// dedupWindow is how long a FIFO deduplication id is remembered, as in SQS.
	dedupWindow = 5 * time.Minute
	// deadLetterRetention is how long dead letters are kept (the SQS maximum).
	deadLetterRetention = 14 * 24 * time.Hour
	// prunePerTx bounds the expired deduplication ids dropped per Send.
	prunePerTx = 256
)

// ErrNoGroup is returned when a message for a FIFO queue has no group.
var ErrNoGroup = errors.New("boltqueue: message for a FIFO queue needs a group")

// Sub-buckets of a queue's bucket.
var (
	bucketMsgs     = []byte("msgs")      // seq -> record
	bucketDedup    = []byte("dedup")     // dedup id -> expiry (unix ns)
	bucketDedupExp = []byte("dedup-exp") // expiry ++ dedup id -> nothing, for pruning
)

type state uint8

const (
	stWaiting  state = iota // FIFO: behind the head of its group
	stReady                 // receivable
	stInflight              // received, hidden until visibleAt
	stBusy                  // being deleted, dead-lettered or dropped
	stGone                  // removed
)

// entry is the in-memory index entry of a stored message.
type entry struct {
	seq       uint64
	group     string
	sentAt    int64
	visibleAt int64
	nonce     uint64 // of the latest receive; 0 before the first
	count     int
	state     state
	inReady   bool // queued in the ready heap
}

// Queue is a durable queue in a bbolt file. It implements queue.Queue.
type Queue struct {
	db     *bbolt.DB
	spec   queue.Spec
	bucket []byte
	dlq    *Queue // nil on a dead-letter queue
	c      *committer

	mu       sync.Mutex
	seq      uint64 // last sequence number handed out
	entries  map[uint64]*entry
	groups   map[string][]*entry // FIFO: pending messages of a group by seq; [0] is the head
	ready    readyHeap
	inflight expiryHeap
	wake     chan struct{} // closed and replaced when something may have become receivable
	waiters  int
}

var _ queue.Queue = (*Queue)(nil)

// New opens (creating if needed) the queue described by spec and its
// dead-letter queue, spec.DeadLetterName(), in db. The dead-letter queue
// keeps messages for 14 days and has no redrive of its own.
func New(db *bbolt.DB, spec queue.Spec) (*Queue, error) {
	if spec.Name == "" {
		return nil, errors.New("boltqueue: queue needs a name")
	}
	if spec.FIFO != strings.HasSuffix(spec.Name, ".fifo") {
		return nil, fmt.Errorf("boltqueue: queue %q: FIFO queue names, and only they, end in .fifo", spec.Name)
	}
	c := &committer{db: db}
	dlq, err := open(db, c, queue.Spec{
		Name:              spec.DeadLetterName(),
		FIFO:              spec.FIFO,
		VisibilityTimeout: spec.VisibilityTimeout,
		Retention:         deadLetterRetention,
	}, nil)
	if err != nil {
		return nil, err
	}
	return open(db, c, spec, dlq)
}

// DeadLetter returns the queue that messages received MaxReceives times
// without being deleted move to.
func (q *Queue) DeadLetter() *Queue { return q.dlq }

func open(db *bbolt.DB, c *committer, spec queue.Spec, dlq *Queue) (*Queue, error) {
	q := &Queue{
		db:      db,
		spec:    spec,
		bucket:  []byte(BucketPrefix + spec.Name),
		dlq:     dlq,
		c:       c,
		entries: map[uint64]*entry{},
		groups:  map[string][]*entry{},
		wake:    make(chan struct{}),
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(q.bucket)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketMsgs, bucketDedup, bucketDedupExp} {
			if _, err := b.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltqueue: create %s: %w", q.bucket, err)
	}
	now := time.Now().UnixNano()
	err = db.View(func(tx *bbolt.Tx) error {
		return q.msgs(tx).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil || len(k) != 8 {
				return fmt.Errorf("key %x: %w", k, errCorrupt)
			}
			e := &entry{
				seq:       binary.BigEndian.Uint64(k),
				group:     r.group,
				sentAt:    r.sentAt,
				visibleAt: r.visibleAt,
				nonce:     r.nonce,
				count:     int(r.count),
			}
			q.seq = max(q.seq, e.seq)
			q.entries[e.seq] = e
			q.index(e, now)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltqueue: load %s: %w", q.bucket, err)
	}
	return q, nil
}

func (q *Queue) msgs(tx *bbolt.Tx) *bbolt.Bucket {
	return tx.Bucket(q.bucket).Bucket(bucketMsgs)
}

// index adds a loaded or newly sent entry to the receivable index. The
// caller holds q.mu (or owns q exclusively).
func (q *Queue) index(e *entry, now int64) {
	if !q.spec.FIFO {
		q.release(e, now)
		return
	}
	g := q.groups[e.group]
	i := sort.Search(len(g), func(i int) bool { return g[i].seq > e.seq })
	// A send that committed late never overtakes a head that has already
	// been handed out.
	if i == 0 && len(g) > 0 && (g[0].count > 0 || g[0].state != stReady) {
		i = 1
	}
	g = append(g, nil)
	copy(g[i+1:], g[i:])
	g[i] = e
	q.groups[e.group] = g
	if i > 0 {
		e.state = stWaiting
		return
	}
	if len(g) > 1 {
		g[1].state = stWaiting
	}
	q.release(e, now)
}

// release makes e receivable, or in flight if its deadline is ahead.
func (q *Queue) release(e *entry, now int64) {
	if e.visibleAt > now {
		e.state = stInflight
		heap.Push(&q.inflight, expiry{e.visibleAt, e})
		return
	}
	e.state = stReady
	if !e.inReady {
		e.inReady = true
		heap.Push(&q.ready, e)
	}
}

// remove drops e from the index; in a FIFO queue the next message of its
// group becomes receivable.
func (q *Queue) remove(e *entry, now int64) {
	delete(q.entries, e.seq)
	e.state = stGone
	if !q.spec.FIFO {
		return
	}
	g := q.groups[e.group]
	switch i := slices.Index(g, e); {
	case i == 0: // the usual case; reslicing keeps it O(1) for long groups
		g[0] = nil
		g = g[1:]
		if len(g) > 0 {
			q.release(g[0], now)
		}
	case i > 0:
		g = slices.Delete(g, i, i+1)
	}
	if len(g) == 0 {
		delete(q.groups, e.group)
	} else {
		q.groups[e.group] = g
	}
}

// broadcast wakes waiting receivers. The caller holds q.mu.
func (q *Queue) broadcast() {
	if q.waiters > 0 {
		close(q.wake)
		q.wake = make(chan struct{})
	}
}

func newNonce() uint64 {
	for {
		if n := rand.Uint64(); n != 0 {
			return n
		}
	}
}

func newID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], rand.Uint64())
	binary.BigEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// Send stores the messages and returns once they are committed. If any body
// is too large (or a FIFO message has no group) nothing is sent. On a FIFO
// queue a message whose DedupID (or, if empty, body hash) was sent in the
// last five minutes is dropped.
func (q *Queue) Send(ctx context.Context, msgs ...queue.Message) error {
	for _, m := range msgs {
		if len(m.Body) > queue.MaxBodyBytes {
			return fmt.Errorf("%w: %d bytes", queue.ErrTooLarge, len(m.Body))
		}
		if q.spec.FIFO && m.Group == "" {
			return ErrNoGroup
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	q.mu.Lock()
	first := q.seq + 1
	q.seq += uint64(len(msgs))
	q.mu.Unlock()

	vals := make([][]byte, len(msgs))
	dedup := make([][]byte, len(msgs))
	groups := make([]string, len(msgs))
	for i, m := range msgs {
		r := record{sentAt: now, id: newID(), body: m.Body}
		if q.spec.FIFO {
			r.group = m.Group
			groups[i] = m.Group
			dedup[i] = dedupKey(m)
		}
		vals[i] = r.encode()
	}
	accepted := make([]bool, len(msgs))
	err := q.c.do(func(tx *bbolt.Tx) error {
		root := tx.Bucket(q.bucket)
		b := root.Bucket(bucketMsgs)
		for i := range vals {
			accepted[i] = false
			if q.spec.FIFO {
				dup, err := checkDedup(root, dedup[i], now)
				if err != nil || dup {
					if err != nil {
						return err
					}
					continue
				}
			}
			if err := b.Put(seqKey(first+uint64(i)), vals[i]); err != nil {
				return err
			}
			accepted[i] = true
		}
		if q.spec.FIFO {
			return pruneDedup(root, now)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltqueue: send: %w", err)
	}
	q.mu.Lock()
	for i, ok := range accepted {
		if ok {
			e := &entry{seq: first + uint64(i), group: groups[i], sentAt: now}
			q.entries[e.seq] = e
			q.index(e, now)
		}
	}
	q.broadcast()
	q.mu.Unlock()
	return nil
}

func dedupKey(m queue.Message) []byte {
	if m.DedupID != "" {
		return []byte(m.DedupID)
	}
	sum := sha256.Sum256(m.Body)
	return []byte(hex.EncodeToString(sum[:]))
}

// checkDedup reports whether id was seen within the window, and records it
// if not.
func checkDedup(root *bbolt.Bucket, id []byte, now int64) (bool, error) {
	d := root.Bucket(bucketDedup)
	if v := d.Get(id); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now {
		return true, nil
	}
	exp := now + int64(dedupWindow)
	if err := d.Put(id, binary.BigEndian.AppendUint64(nil, uint64(exp))); err != nil {
		return false, err
	}
	return false, root.Bucket(bucketDedupExp).Put(append(binary.BigEndian.AppendUint64(nil, uint64(exp)), id...), nil)
}

// pruneDedup forgets a bounded number of expired deduplication ids.
func pruneDedup(root *bbolt.Bucket, now int64) error {
	d, x := root.Bucket(bucketDedup), root.Bucket(bucketDedupExp)
	var expired [][]byte
	c := x.Cursor()
	for k, _ := c.First(); k != nil && len(expired) < prunePerTx; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k)) > now {
			break
		}
		expired = append(expired, bytes.Clone(k))
	}
	for _, k := range expired {
		id := k[8:]
		// Only if not re-sent since: then it holds a later expiry.
		if v := d.Get(id); v != nil && bytes.Equal(v, k[:8]) {
			if err := d.Delete(id); err != nil {
				return err
			}
		}
		if err := x.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// take is the work one Receive commits.
type take struct {
	picked []pick
	moves  []*entry // to the dead-letter queue
	drops  []*entry // past retention
}

type pick struct {
	e         *entry
	count     int
	nonce     uint64
	visibleAt int64
}

// takeLocked moves expired in-flight messages back to ready (or marks them
// for the dead-letter queue) and picks up to limit receivable messages.
func (q *Queue) takeLocked(now int64, limit int) take {
	var w take
	for len(q.inflight) > 0 && q.inflight[0].at <= now {
		x := heap.Pop(&q.inflight).(expiry)
		e := x.e
		if e.state != stInflight || e.visibleAt != x.at {
			continue // stale: deleted, or its visibility changed
		}
		if q.dlq != nil && q.spec.MaxReceives > 0 && e.count >= q.spec.MaxReceives {
			e.state = stBusy
			w.moves = append(w.moves, e)
			continue
		}
		q.release(e, now)
	}
	for len(w.picked) < limit && len(q.ready) > 0 {
		e := heap.Pop(&q.ready).(*entry)
		e.inReady = false
		if e.state != stReady {
			continue
		}
		if q.spec.Retention > 0 && now-e.sentAt > int64(q.spec.Retention) {
			e.state = stBusy
			w.drops = append(w.drops, e)
			continue
		}
		e.state = stInflight
		e.count++
		e.nonce = newNonce()
		e.visibleAt = now + int64(q.spec.VisibilityTimeout)
		heap.Push(&q.inflight, expiry{e.visibleAt, e})
		w.picked = append(w.picked, pick{e, e.count, e.nonce, e.visibleAt})
	}
	return w
}

// nextExpiryLocked is when the earliest in-flight message may reappear.
func (q *Queue) nextExpiryLocked() (int64, bool) {
	if len(q.inflight) == 0 {
		return 0, false
	}
	return q.inflight[0].at, true
}

// Receive returns up to limit messages (clamped to 1..queue.MaxBatch), waiting
// up to wait for the first. It returns as soon as any message is receivable:
// a Send in this process wakes it at once.
func (q *Queue) Receive(ctx context.Context, limit int, wait time.Duration) ([]queue.Received, error) {
	limit = min(max(limit, 1), queue.MaxBatch)
	deadline := time.Now().Add(wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		now := time.Now()
		q.mu.Lock()
		w := q.takeLocked(now.UnixNano(), limit)
		if len(w.picked) > 0 || len(w.moves) > 0 || len(w.drops) > 0 {
			q.mu.Unlock()
			out, err := q.commitTake(w, now.UnixNano())
			if err != nil || len(out) > 0 {
				return out, err
			}
			continue
		}
		if !now.Before(deadline) {
			q.mu.Unlock()
			return nil, nil
		}
		sleep := deadline.Sub(now)
		if at, ok := q.nextExpiryLocked(); ok {
			sleep = min(sleep, max(time.Duration(at-now.UnixNano()), time.Millisecond))
		}
		wake := q.wake
		q.waiters++
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(sleep)
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		q.mu.Lock()
		q.waiters--
		q.mu.Unlock()
	}
}

// commitTake writes the receive counts of the picked messages, moves dead
// letters and drops expired messages, then updates the index.
func (q *Queue) commitTake(w take, now int64) ([]queue.Received, error) {
	var dlqFirst uint64
	if len(w.moves) > 0 {
		q.dlq.mu.Lock()
		dlqFirst = q.dlq.seq + 1
		q.dlq.seq += uint64(len(w.moves))
		q.dlq.mu.Unlock()
	}
	var out []queue.Received
	var moved []*entry
	err := q.c.do(func(tx *bbolt.Tx) error {
		out, moved = out[:0], moved[:0]
		b := q.msgs(tx)
		for _, p := range w.picked {
			k := seqKey(p.e.seq)
			r, err := decodeRecord(b.Get(k))
			if err != nil {
				return fmt.Errorf("message %d: %w", p.e.seq, err)
			}
			if int(r.count) < p.count {
				r.count, r.nonce, r.visibleAt = uint32(p.count), p.nonce, p.visibleAt
				if err := b.Put(k, r.encode()); err != nil {
					return err
				}
			}
			out = append(out, queue.Received{
				ID:           r.id,
				Body:         bytes.Clone(r.body),
				Group:        r.group,
				Receipt:      makeReceipt(p.e.seq, p.nonce),
				ReceiveCount: p.count,
			})
		}
		for i, e := range w.moves {
			k := seqKey(e.seq)
			r, err := decodeRecord(b.Get(k))
			if err != nil {
				return fmt.Errorf("message %d: %w", e.seq, err)
			}
			r.count, r.nonce, r.visibleAt, r.sentAt = 0, 0, 0, now
			seq := dlqFirst + uint64(i)
			if err := q.dlq.msgs(tx).Put(seqKey(seq), r.encode()); err != nil {
				return err
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			moved = append(moved, &entry{seq: seq, group: r.group, sentAt: now})
		}
		for _, e := range w.drops {
			if err := b.Delete(seqKey(e.seq)); err != nil {
				return err
			}
		}
		return nil
	})
	q.mu.Lock()
	if err != nil {
		// Picked messages stay in flight and come back after the timeout;
		// the rest is retried by the next Receive.
		for _, e := range append(w.moves, w.drops...) {
			e.state = stInflight
			e.visibleAt = now
			heap.Push(&q.inflight, expiry{now, e})
		}
		q.mu.Unlock()
		return nil, fmt.Errorf("boltqueue: receive: %w", err)
	}
	for _, e := range append(w.moves, w.drops...) {
		q.remove(e, now)
	}
	if len(w.moves)+len(w.drops) > 0 {
		q.broadcast()
	}
	q.mu.Unlock()
	if len(moved) > 0 {
		q.dlq.mu.Lock()
		for _, e := range moved {
			q.dlq.entries[e.seq] = e
			q.dlq.index(e, now)
		}
		q.dlq.broadcast()
		q.dlq.mu.Unlock()
	}
	return out, nil
}

// lookup finds the entry a receipt refers to if the receipt is the latest
// one handed out for a message that is still queued. The caller holds q.mu.
func (q *Queue) lookup(receipt string) (*entry, error) {
	seq, nonce, ok := parseReceipt(receipt)
	if !ok {
		return nil, queue.ErrBadReceipt
	}
	e := q.entries[seq]
	if e == nil || nonce == 0 || e.nonce != nonce || (e.state != stInflight && e.state != stReady) {
		return nil, queue.ErrBadReceipt
	}
	return e, nil
}

// Delete removes a received message. The receipt must be the latest one
// handed out for it; otherwise, or if the message is gone, it returns
// queue.ErrBadReceipt.
func (q *Queue) Delete(ctx context.Context, receipt string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	e, err := q.lookup(receipt)
	if err != nil {
		q.mu.Unlock()
		return err
	}
	prev := e.state
	e.state = stBusy // its group stays blocked until the delete is durable
	q.mu.Unlock()

	err = q.c.do(func(tx *bbolt.Tx) error { return q.msgs(tx).Delete(seqKey(e.seq)) })

	now := time.Now().UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		if prev == stReady {
			q.release(e, now)
		} else {
			e.state = stInflight
			heap.Push(&q.inflight, expiry{e.visibleAt, e})
		}
		return fmt.Errorf("boltqueue: delete: %w", err)
	}
	q.remove(e, now)
	if q.spec.FIFO {
		q.broadcast()
	}
	return nil
}

// SetVisibility hides a received message for d from now; d <= 0 makes it
// receivable at once (or dead-letters it, if it has used up its receives).
func (q *Queue) SetVisibility(ctx context.Context, receipt string, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	e, err := q.lookup(receipt)
	if err != nil {
		return err
	}
	e.state = stInflight
	e.visibleAt = time.Now().UnixNano() + int64(max(d, 0))
	heap.Push(&q.inflight, expiry{e.visibleAt, e})
	q.broadcast() // waiters recompute their timers
	return nil
}

// readyHeap orders receivable entries by sequence number.
type readyHeap []*entry

func (h readyHeap) Len() int           { return len(h) }
func (h readyHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h readyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *readyHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *readyHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// expiry is an in-flight deadline. Entries whose deadline changed leave
// stale items behind, skipped when popped.
type expiry struct {
	at int64
	e  *entry
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = expiry{}
	*h = old[:len(old)-1]
	return x
}
