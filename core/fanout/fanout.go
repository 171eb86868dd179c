// Package fanout is the durable, in-order consumer of the global event
// stream: everything that must happen because an event was persisted — push
// rules, notifications and unread counts, push gateway delivery, the
// federation outbox, search indexing — runs here as registered handlers,
// outside the request that persisted the event.
//
// The event stream (core/stream, rooms.Service.Events) is the source of
// truth. One cursor item records the position every handler has finished
// with. A worker reads the entries after the cursor in stream order (never
// past an open slot; slots of dead writers are voided after the grace
// period, exactly as /sync reads them), runs every handler on every event,
// and only then moves the cursor, with a conditional write: two workers can
// never both move it, and a cursor can never move past an event whose
// handlers have not all succeeded. A handler that fails stops the cursor at
// its event; the event is retried with exponential backoff. An accepted
// event therefore cannot be skipped, even if every wake-up message is lost.
//
// Handlers run at least once per event and may run more than once (a worker
// that dies after a handler succeeded but before the cursor moved, a retry
// after another handler failed, two workers racing): every handler MUST be
// idempotent — typically a write with IfNotExists keyed by the event, with
// any counter changed in the same transaction.
//
// Workers are woken by small messages on the FanoutQueue: OnPersist sends
// one per event (FIFO, one message group, so on AWS one Lambda at a time
// drains the stream and the many messages of a burst are coalesced into one
// pass). The all-in-one consumes the embedded queue in-process (Run), with a
// periodic sweep for wake-ups lost between a commit and its message.
//
// Key layout (ARCHITECTURE.md, "Key schema"):
//
//	fanout / cursor              n = last stream position fully handled, v
//	fanout / parked#<%016d pos>  an event given up after MaxAttempts failures
package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Handler is called once (at least) for every event of the stream, in
// stream order. It must be idempotent (see the package comment). Returning
// an error stops the worker at this event and retries it later with
// backoff; the handlers that succeeded on it are run again then.
type Handler func(ctx context.Context, ev *rooms.Event) error

// Defaults.
const (
	// DefaultBatch is how many stream entries one pass reads at a time.
	DefaultBatch = 100
	// DefaultMaxAttempts is how often one event is retried before it is
	// parked (recorded as fanout/parked#<pos> and passed over) so that a
	// poison event cannot stop the server's push and federation forever.
	DefaultMaxAttempts = 30
	// DefaultSweep is how often Run drains without a wake-up.
	DefaultSweep = 10 * time.Second
	// WakeGroup is the FIFO message group of every wake-up message.
	WakeGroup = "events"
)

// ErrBackoff is returned by Drain while the event at the cursor waits for
// its next retry.
var ErrBackoff = errors.New("fanout: waiting to retry a failed event")

// Worker consumes the event stream. Build it with New; register handlers
// before Run or Handle is first called.
type Worker struct {
	T table.Table
	// Stream is the global event stream.
	Stream *stream.Stream
	// Load fetches the events named by stream entries, in order, skipping
	// unknown ones (rooms.Service.EventsByID).
	Load func(ctx context.Context, ids []id.EventID) ([]*rooms.Event, error)
	// Q is the FanoutQueue (nil: no wake-up messages; Run then relies on
	// Kick and the sweep).
	Q   queue.Queue
	Log *slog.Logger
	Now func() time.Time
	// Batch, MaxAttempts and Sweep override the defaults when set.
	Batch       int
	MaxAttempts int
	Sweep       time.Duration
	// MinBackoff and MaxBackoff bound the retry delay of a failed event
	// (1 s and 5 min by default).
	MinBackoff, MaxBackoff time.Duration

	mu       sync.Mutex // serializes Drain in this process (correctness comes from the cursor's condition)
	hmu      sync.RWMutex
	handlers []named
	kick     chan struct{}
	kickOnce sync.Once
}

type named struct {
	name string
	h    Handler
}

// New builds the worker over the room engine's event stream.
func New(t table.Table, rs *rooms.Service, q queue.Queue, log *slog.Logger, now func() time.Time) *Worker {
	return &Worker{T: t, Stream: rs.Events, Load: rs.EventsByID, Q: q, Log: log, Now: now}
}

// Register adds a handler under a name (for logs and the parked record).
// Handlers run in registration order. h must be idempotent.
func (w *Worker) Register(name string, h Handler) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	w.handlers = append(w.handlers, named{name, h})
}

// Handlers lists the registered handler names, in order.
func (w *Worker) Handlers() []string {
	w.hmu.RLock()
	defer w.hmu.RUnlock()
	out := make([]string, len(w.handlers))
	for i, h := range w.handlers {
		out[i] = h.name
	}
	return out
}

func (w *Worker) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Worker) batch() int {
	if w.Batch > 0 {
		return w.Batch
	}
	return DefaultBatch
}

func (w *Worker) maxAttempts() int {
	if w.MaxAttempts > 0 {
		return w.MaxAttempts
	}
	return DefaultMaxAttempts
}

// backoff is the delay before attempt n+1 of a failed event.
func (w *Worker) backoff(attempts int) time.Duration {
	lo, hi := w.MinBackoff, w.MaxBackoff
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Minute
	}
	d := lo
	for i := 1; i < attempts && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

var cursorKey = table.Key{PK: "fanout", SK: "cursor"}

func parkedKey(pos int64) table.Key {
	return table.Key{PK: "fanout", SK: "parked#" + stream.PosKey(pos)}
}

// cursorState is the cursor item's payload: the failure record of the
// event right after the cursor, if it failed.
type cursorState struct {
	FailPos  int64  `json:"fail_pos,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	RetryAt  int64  `json:"retry_at,omitempty"` // unix ms
	Handler  string `json:"handler,omitempty"`
	Err      string `json:"err,omitempty"`
}

type cursor struct {
	pos     int64
	version int64 // 0: no item yet
	st      cursorState
}

func (w *Worker) readCursor(ctx context.Context) (cursor, error) {
	it, err := w.T.Get(ctx, cursorKey)
	if errors.Is(err, table.ErrNotFound) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, err
	}
	c := cursor{pos: it.Num, version: it.Version}
	if len(it.Data) > 0 {
		_ = json.Unmarshal(it.Data, &c.st)
	}
	return c, nil
}

// errLost means another worker moved the cursor first.
var errLost = errors.New("fanout: cursor moved by another worker")

// writeCursor replaces the cursor with (pos, st) if it is still at c.
func (w *Worker) writeCursor(ctx context.Context, c *cursor, pos int64, st cursorState) error {
	cond := table.IfNotExists()
	if c.version > 0 {
		cond = table.IfVersion(c.version)
	}
	var data []byte
	if st != (cursorState{}) {
		data, _ = json.Marshal(st)
	}
	err := w.T.Put(ctx, table.Item{PK: cursorKey.PK, SK: cursorKey.SK, Num: pos, Data: data, Version: c.version + 1}, cond)
	if errors.Is(err, table.ErrConditionFailed) {
		return errLost
	}
	if err != nil {
		return err
	}
	c.pos, c.version, c.st = pos, c.version+1, st
	return nil
}

// Position is the cursor: every event at or before it has been handled.
func (w *Worker) Position(ctx context.Context) (int64, error) {
	c, err := w.readCursor(ctx)
	return c.pos, err
}

// Drain handles every committed event after the cursor, in order, until it
// has caught up with the stream. It returns ErrBackoff (or the handler's
// error) when an event failed and waits for a retry, and nil when caught
// up. Safe to call from any number of goroutines and processes.
func (w *Worker) Drain(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, err := w.readCursor(ctx)
	if err != nil {
		return err
	}
	for races := 0; ; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.st.RetryAt > 0 && w.now().UnixMilli() < c.st.RetryAt {
			return ErrBackoff
		}
		entries, next, err := w.Stream.Read(ctx, c.pos, w.batch())
		if err != nil {
			return err
		}
		if next == c.pos {
			return nil // caught up (or waiting for an open slot)
		}
		failPos, herr := w.handle(ctx, entries)
		// Everything before the failed entry is handled (void slots
		// included): move the cursor just before it.
		upTo, st := next, cursorState{}
		if herr != nil {
			upTo = failPos - 1
			st = c.st
			if st.FailPos != failPos {
				st = cursorState{FailPos: failPos}
			}
			st.Attempts++
			st.Handler, st.Err = herr.handler, truncate(herr.err.Error(), 500)
			if st.Attempts >= w.maxAttempts() {
				w.park(ctx, failPos, st)
				// Park it: pass over the event and keep going.
				upTo, st = failPos, cursorState{}
			} else {
				st.RetryAt = w.now().Add(w.backoff(st.Attempts)).UnixMilli()
			}
		}
		if upTo == c.pos && st == c.st {
			continue
		}
		if err := w.writeCursor(ctx, &c, upTo, st); err != nil {
			if errors.Is(err, errLost) && races < 100 {
				races++
				if c, err = w.readCursor(ctx); err != nil {
					return err
				}
				continue
			}
			return err
		}
		if herr != nil && st != (cursorState{}) {
			w.log().Warn("fan-out handler failed; will retry", "pos", st.FailPos, "handler", st.Handler,
				"attempt", st.Attempts, "err", herr.err)
			return herr.err
		}
	}
}

type handlerErr struct {
	handler string
	err     error
}

// handle runs the handlers over the entries in order. On a failure it
// returns the failed entry's position and the error; every entry before it
// has been handled.
func (w *Worker) handle(ctx context.Context, entries []stream.Entry) (failPos int64, herr *handlerErr) {
	if len(entries) == 0 {
		return 0, nil
	}
	ids := make([]id.EventID, 0, len(entries))
	for _, e := range entries {
		var se rooms.StreamEntry
		if json.Unmarshal(e.Data, &se) == nil && se.EventID != "" {
			ids = append(ids, se.EventID)
		}
	}
	evs, err := w.Load(ctx, ids)
	if err != nil {
		return entries[0].Pos, &handlerErr{"load", err}
	}
	byID := make(map[id.EventID]*rooms.Event, len(evs))
	for _, ev := range evs {
		byID[ev.EventID] = ev
	}
	w.hmu.RLock()
	hs := append([]named(nil), w.handlers...)
	w.hmu.RUnlock()
	for _, e := range entries {
		var se rooms.StreamEntry
		_ = json.Unmarshal(e.Data, &se)
		ev := byID[se.EventID]
		if ev != nil {
			if ev.Pos == 0 {
				ev.Pos = e.Pos
			}
			for _, h := range hs {
				if err := callHandler(ctx, h.h, ev); err != nil {
					return e.Pos, &handlerErr{h.name, err}
				}
			}
		}
	}
	return 0, nil
}

// callHandler runs h, turning a panic into an error (a bad event must not
// take the worker down).
func callHandler(ctx context.Context, h Handler, ev *rooms.Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(ctx, ev)
}

func (w *Worker) park(ctx context.Context, pos int64, st cursorState) {
	d, _ := json.Marshal(st)
	k := parkedKey(pos)
	if err := w.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}); err != nil {
		w.log().Error("fan-out: could not record a parked event", "pos", pos, "err", err)
	}
	w.log().Error("fan-out: event given up after repeated failures", "pos", pos, "handler", st.Handler,
		"attempts", st.Attempts, "err", st.Err)
}

// Parked lists the positions of parked events (for operators and tests).
func (w *Worker) Parked(ctx context.Context) ([]int64, error) {
	var out []int64
	q := table.Query{PK: "fanout", From: "parked#", To: "parked#~"}
	for {
		page, err := w.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			p, _ := strconv.ParseInt(it.SK[len("parked#"):], 10, 64)
			out = append(out, p)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type wakeMsg struct {
	Pos int64 `json:"pos"`
}

// Wake announces a newly committed event at stream position pos: one
// message on the FanoutQueue (deduplicated per position) and a kick of this
// process's Run loop.
func (w *Worker) Wake(ctx context.Context, pos int64) error {
	w.Kick()
	if w.Q == nil {
		return nil
	}
	body, _ := json.Marshal(wakeMsg{Pos: pos})
	return w.Q.Send(ctx, queue.Message{Body: body, Group: WakeGroup, DedupID: "pos-" + strconv.FormatInt(pos, 10)})
}

// WakeSweep queues a wake-up that names no event (a scheduled sweep): the
// queue's consumer then drains whatever the stream holds past the cursor,
// in order, as for any wake-up. At most one per minute is kept by the
// queue's deduplication.
func (w *Worker) WakeSweep(ctx context.Context) error {
	if w.Q == nil {
		w.Kick()
		return nil
	}
	body, _ := json.Marshal(wakeMsg{})
	minute := strconv.FormatInt(w.now().Unix()/60, 10)
	return w.Q.Send(ctx, queue.Message{Body: body, Group: WakeGroup, DedupID: "sweep-" + minute})
}

// OnPersist is the room engine hook: it sends the wake-up for ev (errors
// are logged; the periodic sweep and the next event's wake-up cover a lost
// message).
func (w *Worker) OnPersist(ev *rooms.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Wake(ctx, ev.Pos); err != nil {
		w.log().Warn("fan-out wake-up not sent", "event", ev.EventID, "err", err)
	}
}

func (w *Worker) kickChan() chan struct{} {
	w.kickOnce.Do(func() { w.kick = make(chan struct{}, 1) })
	return w.kick
}

// Kick wakes this process's Run loop at once (without waiting for the
// queue).
func (w *Worker) Kick() {
	select {
	case w.kickChan() <- struct{}{}:
	default:
	}
}

// Run is the in-process worker (the all-in-one): it drains on every kick,
// every queue message and every Sweep, until ctx ends. Queue messages are
// deleted once the stream is drained past them.
func (w *Worker) Run(ctx context.Context) {
	kick := w.kickChan()
	sweep := w.Sweep
	if sweep <= 0 {
		sweep = DefaultSweep
	}
	msgs := make(chan []queue.Received)
	if w.Q != nil {
		go func() {
			for ctx.Err() == nil {
				ms, err := w.Q.Receive(ctx, queue.MaxBatch, 2*time.Second)
				if err != nil {
					if ctx.Err() == nil {
						w.log().Error("fan-out queue receive", "err", err)
						sleep(ctx, time.Second)
					}
					continue
				}
				if len(ms) > 0 {
					select {
					case msgs <- ms:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		var got []queue.Received
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		case got = <-msgs:
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		err := w.Drain(dctx)
		cancel()
		wait := sweep
		var bo cursor
		if err != nil {
			if !errors.Is(err, ErrBackoff) && ctx.Err() == nil {
				w.log().Debug("fan-out drain", "err", err)
			}
			// Come back when the failed event's retry is due.
			if bo, _ = w.readCursor(ctx); bo.st.RetryAt > 0 {
				wait = min(sweep, max(time.Until(time.UnixMilli(bo.st.RetryAt)), 10*time.Millisecond))
			} else {
				wait = min(sweep, time.Second)
			}
		}
		for _, m := range got {
			// The stream, not the message, is the work: a message is
			// done once a drain has run after it arrived.
			if err == nil {
				_ = w.Q.Delete(context.WithoutCancel(ctx), m.Receipt)
			} else {
				_ = w.Q.SetVisibility(context.WithoutCancel(ctx), m.Receipt, wait)
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Handle is the queue-triggered worker (the FanoutWorker Lambda): it
// drains the stream once for the whole batch and returns the ids of the
// messages to report as failed (all of them when the drain stopped at a
// failing event; they are hidden until its retry is due, so SQS redelivers
// them then). Messages of a successful drain are left for the caller to
// acknowledge (Lambda deletes a batch's messages that are not reported).
func (w *Worker) Handle(ctx context.Context, msgs []queue.Received) []string {
	if len(msgs) == 0 {
		return nil
	}
	err := w.Drain(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrBackoff) {
		w.log().Warn("fan-out drain", "err", err)
	}
	wait := time.Second
	if c, cerr := w.readCursor(ctx); cerr == nil && c.st.RetryAt > 0 {
		wait = max(time.Until(time.UnixMilli(c.st.RetryAt)), time.Second)
	}
	wait = min(wait, 12*time.Hour) // SQS's limit on a message's visibility
	failed := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if w.Q != nil {
			_ = w.Q.SetVisibility(ctx, m.Receipt, wait)
		}
		failed = append(failed, m.ID)
	}
	return failed
}
