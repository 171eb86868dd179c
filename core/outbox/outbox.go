// Package outbox is the delivery loop shared by the senders that push our
// data to other parties in ordered, retried transactions: the federation
// sender (one outbox per destination server) and the application service
// sender (one per service).
//
// Each party has its outbox items in the table and wake-up messages on a
// FIFO queue whose message group is the party, so one worker at a time
// works on a party, in order. A worker handling a party's messages calls
// the sender's Step until the outbox is empty, at most MaxSteps times
// before it hands over to a fresh message (Lambda time limits, fairness).
// If a step fails, the party's failure count grows and the message is
// hidden for an exponential backoff; the sender re-sends its recorded
// transaction unchanged when it comes back, so nothing is lost or
// duplicated. Whatever a Step sends and how it records its transaction
// is the sender's business.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// MaxSteps bounds the transactions one message sends before the worker
// hands the party over to a fresh message.
const MaxSteps = 20

// Worker drains parties' outboxes. The zero values of the optional fields
// are usable defaults.
type Worker struct {
	// Kind names the sender in logs ("federation", "appservice").
	Kind string
	T    table.Table
	// Q is the sender's queue (nil: nothing is delivered).
	Q queue.Queue
	// Party reads the party a wake-up message is for ("" or false: the
	// message is not understood, or its party is gone, and is dropped).
	Party func(body []byte) (string, bool)
	// Wake makes the wake-up message for a party; dedup distinguishes
	// messages that must not be merged by the queue's deduplication.
	Wake func(party, dedup string) queue.Message
	// StateKey is where a party's failure count and backoff are kept.
	StateKey func(party string) table.Key
	// Step sends the party's next transaction; done means the outbox was
	// empty and nothing was sent. The party failing to take the
	// transaction is an error wrapped with Unreachable (the party backs
	// off); any other error fails the message, which the queue redelivers.
	Step func(ctx context.Context, party string) (done bool, err error)

	MinBackoff, MaxBackoff time.Duration // 5 s and 1 h if 0
	Log                    *slog.Logger
	Now                    func() time.Time
}

// state is a party's delivery state: its failures in a row, and while it
// backs off the receipt of its hidden message (for Nudge) and when the
// message comes back.
type state struct {
	Failures int    `json:"failures"`
	Receipt  string `json:"receipt,omitempty"`
	RetryAt  int64  `json:"retry_at,omitempty"`
}

// ErrBackoff means a party failed and its message was hidden for the
// backoff.
var ErrBackoff = errors.New("outbox: party is backing off")

// unreachable marks a delivery failure of the party itself.
type unreachable struct{ error }

func (u unreachable) Unwrap() error { return u.error }

// Unreachable wraps the error of a party that did not take a transaction
// (down, timing out, answering 5xx): the worker backs off from the party.
func Unreachable(err error) error { return unreachable{err} }

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Worker) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// Run receives and handles messages until ctx ends (the in-process worker
// of the all-in-one).
func (w *Worker) Run(ctx context.Context) {
	if w.Q == nil {
		return
	}
	for ctx.Err() == nil {
		// A short long-poll: some SQS emulators answer only at its end, and
		// a message whose backoff ends must not wait for it.
		msgs, err := w.Q.Receive(ctx, queue.MaxBatch, 2*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				w.log().Error(w.Kind+" queue receive", "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		if len(msgs) > 0 {
			// A shutdown lets the batch in hand finish (bounded): a message
			// abandoned mid-send would stay hidden for the queue's whole
			// visibility timeout.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			w.Handle(hctx, msgs)
			cancel()
		}
	}
}

// Handle processes received messages, grouped by party and each group in
// order, and returns the ids of the messages that were not completed (an
// SQS partial batch failure); those stay on the queue, hidden for their
// backoff.
func (w *Worker) Handle(ctx context.Context, msgs []queue.Received) []string {
	byParty := map[string][]queue.Received{}
	var order []string
	for _, m := range msgs {
		p, ok := w.Party(m.Body)
		if !ok || p == "" {
			_ = w.Q.Delete(ctx, m.Receipt) // not ours to understand
			continue
		}
		if _, seen := byParty[p]; !seen {
			order = append(order, p)
		}
		byParty[p] = append(byParty[p], m)
	}
	// Parties are independent: one that hangs must not hold up the others
	// (a Lambda batch has one deadline for all).
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed []string
	for _, p := range order {
		ms := byParty[p]
		wg.Go(func() {
			if err := w.drain(ctx, p, ms[0].Receipt); err != nil {
				if !errors.Is(err, ErrBackoff) {
					w.log().Error(w.Kind+" sender", "party", p, "err", err)
				}
				mu.Lock()
				for _, m := range ms {
					failed = append(failed, m.ID)
				}
				mu.Unlock()
				return
			}
			for _, m := range ms {
				if err := w.Q.Delete(ctx, m.Receipt); err != nil && !errors.Is(err, queue.ErrBadReceipt) {
					w.log().Warn(w.Kind+" queue delete", "err", err)
				}
			}
		})
	}
	wg.Wait()
	return failed
}

// drain sends a party's outbox, transaction by transaction.
func (w *Worker) drain(ctx context.Context, party, receipt string) error {
	for range MaxSteps {
		done, err := w.Step(ctx, party)
		var u unreachable
		if errors.As(err, &u) {
			return w.failed(ctx, party, receipt, u.error)
		}
		if err != nil {
			return err
		}
		if done {
			return w.succeeded(ctx, party)
		}
	}
	// More is waiting: hand over to a fresh message so this one completes.
	return w.Q.Send(ctx, w.Wake(party, fmt.Sprintf("more-%d", w.now().UnixNano())))
}

func (w *Worker) backoffFor(failures int) time.Duration {
	lo, hi := w.MinBackoff, w.MaxBackoff
	if lo <= 0 {
		lo = 5 * time.Second
	}
	if hi <= 0 {
		hi = time.Hour
	}
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// failed records a failure and hides the message for the backoff.
func (w *Worker) failed(ctx context.Context, party, receipt string, cause error) error {
	// Bookkeeping survives the request's deadline (a Lambda near its end).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	k := w.StateKey(party)
	var st state
	if it, err := w.T.Get(ctx, k); err == nil {
		_ = json.Unmarshal(it.Data, &st)
	}
	st.Failures++
	wait := w.backoffFor(st.Failures)
	st.Receipt, st.RetryAt = receipt, w.now().Add(wait).UnixMilli()
	d, _ := json.Marshal(st)
	_ = w.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d, Version: w.now().UnixNano()}, table.Cond{})
	w.log().Info(w.Kind+" party unreachable; will retry", "party", party, "failures", st.Failures, "retry_in", wait, "err", cause)
	if err := w.Q.SetVisibility(ctx, receipt, wait); err != nil {
		w.log().Warn(w.Kind+" queue visibility", "err", err)
	}
	return ErrBackoff
}

// succeeded clears a party's failures.
func (w *Worker) succeeded(ctx context.Context, party string) error {
	err := w.T.Delete(ctx, w.StateKey(party), table.Cond{})
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	return err
}

// Nudge retries a party at once if it is backing off (it just talked to
// us, so it is up). Of concurrent nudges only one wins.
func (w *Worker) Nudge(ctx context.Context, party string) {
	if w.Q == nil {
		return
	}
	it, err := w.T.Get(ctx, w.StateKey(party))
	if err != nil {
		return
	}
	var st state
	if json.Unmarshal(it.Data, &st) != nil || st.Receipt == "" || st.RetryAt <= w.now().UnixMilli() {
		return
	}
	cleared := st
	cleared.Receipt, cleared.RetryAt = "", 0
	d, _ := json.Marshal(cleared)
	if err := w.T.Put(ctx, table.Item{PK: it.PK, SK: it.SK, Data: d, Version: it.Version + 1}, table.IfVersion(it.Version)); err != nil {
		return
	}
	_ = w.Q.SetVisibility(ctx, st.Receipt, 0)
}

// Complete removes a delivered transaction from a party's partition pk:
// its outbox items (sks), then the transaction item itself (SK "txn") if
// it is still the one sent (version ver). A crash in between leaves the
// transaction to be sent once more under the same id, which receivers
// answer from their memory of it.
func Complete(ctx context.Context, t table.Table, pk string, sks []string, ver int64) error {
	for chunk := range slices.Chunk(sks, table.MaxTxItems) {
		ops := make([]table.Op, len(chunk))
		for i, sk := range chunk {
			ops[i] = table.Delete(table.Key{PK: pk, SK: sk}, table.Cond{})
		}
		if err := t.Transact(ctx, ops); err != nil {
			return err
		}
	}
	err := t.Delete(ctx, table.Key{PK: pk, SK: "txn"}, table.IfVersion(ver))
	if err != nil && !errors.Is(err, table.ErrConditionFailed) {
		return err
	}
	return nil
}

// Live reads up to limit outbox items of a party under prefix. Expired
// items (typing notices, say) are hidden by the table but still count
// against a page's limit until the store deletes them, so a page may come
// back short or empty with more behind it: it reads on until enough or
// the end.
func Live(ctx context.Context, t table.Table, pk, prefix string, limit int) ([]table.Item, error) {
	q := table.Query{PK: pk, Prefix: prefix, Limit: limit}
	var out []table.Item
	for {
		page, err := t.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if len(out) >= limit || page.Next == "" {
			return out[:min(len(out), limit)], nil
		}
		q.Cursor, q.Limit = page.Next, limit-len(out)
	}
}

// Contents reads the data of a transaction's outbox items that are still
// live, in order (the ones that expired since it was formed drop out).
func Contents(ctx context.Context, t table.Table, pk string, sks []string) ([]json.RawMessage, error) {
	if len(sks) == 0 {
		return nil, nil
	}
	keys := make([]table.Key, len(sks))
	for i, sk := range sks {
		keys[i] = table.Key{PK: pk, SK: sk}
	}
	items, err := t.GetMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		out[i] = it.Data
	}
	return out, nil
}
