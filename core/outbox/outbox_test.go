package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi time.Duration
		want   []time.Duration // for failures 1, 2, …
	}{
		{"doubling up to the cap", time.Second, 30 * time.Second, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}},
		{"defaults", 0, 0, []time.Duration{5 * time.Second, 10 * time.Second}},
		{"cap below the start", time.Minute, time.Second, []time.Duration{time.Second, time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &Worker{MinBackoff: tc.lo, MaxBackoff: tc.hi}
			for i, want := range tc.want {
				if got := w.backoffFor(i + 1); got != want {
					t.Errorf("failure %d: %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

// fakeQueue records what the worker does with messages.
type fakeQueue struct {
	mu       sync.Mutex
	sent     []queue.Message
	deleted  []string
	hidden   map[string]time.Duration
	received []queue.Received
}

func (q *fakeQueue) Send(_ context.Context, m ...queue.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = append(q.sent, m...)
	return nil
}

func (q *fakeQueue) Receive(context.Context, int, time.Duration) ([]queue.Received, error) {
	return nil, nil
}

func (q *fakeQueue) Delete(_ context.Context, receipt string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = append(q.deleted, receipt)
	return nil
}

func (q *fakeQueue) SetVisibility(_ context.Context, receipt string, d time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.hidden[receipt] = d
	return nil
}

func TestHandle(t *testing.T) {
	ctx := context.Background()
	tbl := testtable.Open(t, "bolt")
	q := &fakeQueue{hidden: map[string]time.Duration{}}
	var mu sync.Mutex
	outboxes := map[string]int{"up": 3, "down": 2, "many": MaxSteps + 5, "broken": 1}
	w := &Worker{Kind: "test", T: tbl, Q: q, MinBackoff: time.Second, MaxBackoff: time.Minute,
		Party: func(b []byte) (string, bool) { return string(b), string(b) != "gone" },
		Wake:  func(p, dedup string) queue.Message { return queue.Message{Body: []byte(p), Group: p, DedupID: dedup} },
		StateKey: func(p string) table.Key {
			return table.Key{PK: "party#" + p, SK: "state"}
		},
		Step: func(_ context.Context, p string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case p == "down":
				return false, Unreachable(errors.New("connection refused"))
			case p == "broken":
				return false, errors.New("table unavailable")
			case outboxes[p] == 0:
				return true, nil
			}
			outboxes[p]--
			return false, nil
		},
	}
	msgs := []queue.Received{
		{ID: "1", Receipt: "r1", Body: []byte("up")},
		{ID: "2", Receipt: "r2", Body: []byte("down")},
		{ID: "3", Receipt: "r3", Body: []byte("up")},
		{ID: "4", Receipt: "r4", Body: []byte("gone")},
		{ID: "5", Receipt: "r5", Body: []byte("many")},
		{ID: "6", Receipt: "r6", Body: []byte("broken")},
	}
	failed := w.Handle(ctx, msgs)
	want := map[string]bool{"2": true, "6": true}
	if len(failed) != len(want) {
		t.Fatalf("failed = %v, want the unreachable and the broken party's", failed)
	}
	for _, id := range failed {
		if !want[id] {
			t.Fatalf("failed = %v", failed)
		}
	}
	if outboxes["up"] != 0 || outboxes["many"] != 5 {
		t.Fatalf("outboxes after the batch: %v", outboxes)
	}
	// The unreachable party backs off; the broken one is left to the
	// queue's redelivery, without a failure recorded.
	if q.hidden["r2"] != time.Second || len(q.hidden) != 1 {
		t.Fatalf("visibility changes: %v", q.hidden)
	}
	it, err := tbl.Get(ctx, table.Key{PK: "party#down", SK: "state"})
	if err != nil {
		t.Fatal(err)
	}
	var st state
	_ = json.Unmarshal(it.Data, &st)
	if st.Failures != 1 || st.Receipt != "r2" {
		t.Fatalf("state of the unreachable party: %+v", st)
	}
	if _, err := tbl.Get(ctx, table.Key{PK: "party#broken", SK: "state"}); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("a storage error counted as the party's failure: %v", err)
	}
	// The party with more than MaxSteps transactions was handed over to a
	// fresh message; completed and unknown messages were deleted.
	if len(q.sent) != 1 || string(q.sent[0].Body) != "many" {
		t.Fatalf("messages sent: %v", q.sent)
	}
	deleted := map[string]bool{}
	for _, r := range q.deleted {
		deleted[r] = true
	}
	for _, r := range []string{"r1", "r3", "r4", "r5"} {
		if !deleted[r] {
			t.Fatalf("receipt %s not deleted: %v", r, q.deleted)
		}
	}

	// A second failure doubles the backoff; a nudge brings the message back
	// at once, once.
	w.Handle(ctx, []queue.Received{{ID: "7", Receipt: "r7", Body: []byte("down")}})
	if q.hidden["r7"] != 2*time.Second {
		t.Fatalf("second backoff: %v", q.hidden)
	}
	w.Nudge(ctx, "down")
	w.Nudge(ctx, "down")
	if q.hidden["r7"] != 0 {
		t.Fatalf("nudge did not bring the message back: %v", q.hidden)
	}
	// Success clears the failures.
	mu.Lock()
	outboxes["down"] = 0
	mu.Unlock()
	w.Step = func(context.Context, string) (bool, error) { return true, nil }
	w.Handle(ctx, []queue.Received{{ID: "8", Receipt: "r8", Body: []byte("down")}})
	if _, err := tbl.Get(ctx, table.Key{PK: "party#down", SK: "state"}); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("state after success: %v", err)
	}
}
