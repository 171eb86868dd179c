// Package queuetest is the contract suite for queue.Queue implementations.
// Every engine (the SQS adapter and the embedded bbolt queue) runs it, so the
// homeserver can rely on the same behaviour from both.
//
// The suite asserts only what Amazon SQS guarantees and what both engines
// honour. Where SQS is looser than the port's documentation (stale receipts,
// receive counts after a visibility change) the checks accept either outcome;
// the comments at each check say why.
//
// On a FIFO queue SQS may hand out several messages of one group in a single
// Receive (in order), and then none of that group until they are all deleted
// or visible again; the embedded queue hands out one. The suite accepts both,
// so consumers must too: handle a batch's messages of one group in order and
// stop at the first that fails.
package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/queue"
)

// NewQueue builds a fresh, empty queue from spec and returns it with its
// dead-letter queue. The engine may change spec.Name (to make it unique) but
// must honour every other field.
type NewQueue func(t *testing.T, spec queue.Spec) (q queue.Queue, dlq queue.Queue)

// Options lists known deviations of an engine. The zero value asserts
// everything; a non-empty reason skips the matching checks with that reason,
// so the gap stays visible in the test output.
type Options struct {
	// NoGroupLock skips the checks that, on a FIFO queue, the next message of
	// a group is held back while an earlier one of that group is in flight
	// (and that a redelivered message still comes before its successors).
	// SQS guarantees this; some emulators do not implement it.
	NoGroupLock string
}

// Run runs the whole contract against newQueue.
func Run(t *testing.T, newQueue NewQueue) {
	RunWith(t, newQueue, Options{})
}

// RunWith is Run with known engine deviations skipped.
func RunWith(t *testing.T, newQueue NewQueue, opts Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newQueue NewQueue, opts Options)
	}{
		{"RoundTrip", testRoundTrip},
		{"Redelivery", testRedelivery},
		{"SetVisibilityExtends", testSetVisibilityExtends},
		{"SetVisibilityReshows", testSetVisibilityReshows},
		{"BadReceipt", testBadReceipt},
		{"StaleReceiptFIFO", testStaleReceiptFIFO},
		{"DeadLetter", testDeadLetter},
		{"BodyLimit", testBodyLimit},
		{"BinaryBody", testBinaryBody},
		{"FIFONeedsGroup", testFIFONeedsGroup},
		{"FIFOOrder", testFIFOOrder},
		{"FIFOOtherGroupsContinue", testOtherGroupsContinue},
		{"FIFOGroupLock", testGroupLock},
		{"FIFODedup", testDedup},
		{"LongPoll", testLongPoll},
		{"LongPollEmpty", testLongPollEmpty},
		{"ReceiveCancel", testReceiveCancel},
		{"LargeSend", testLargeSend},
		{"ConcurrentConsumers", testConcurrentConsumers},
	}
	subs := make([]sub, len(tests))
	for i, tc := range tests {
		subs[i] = sub{tc.name, func(t *testing.T) { tc.fn(t, newQueue, opts) }}
	}
	concurrently(t, subs...)
}

type sub struct {
	name string
	fn   func(t *testing.T)
}

// concurrently runs the subtests at the same time. Most of the suite waits
// on visibility timeouts, so it runs them all at once rather than through
// t.Parallel, which -parallel (GOMAXPROCS by default) would throttle.
func concurrently(t *testing.T, subs ...sub) {
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() { t.Run(s.name, s.fn) })
	}
	wg.Wait()
}

// forKinds runs fn as a subtest for a FIFO and a standard queue.
func forKinds(t *testing.T, fn func(t *testing.T, fifo bool)) {
	concurrently(t,
		sub{"FIFO", func(t *testing.T) { fn(t, true) }},
		sub{"Standard", func(t *testing.T) { fn(t, false) }},
	)
}

// spec returns a test spec. Short visibility timeouts keep redelivery tests
// fast; tests that must not see redelivery use a long one.
func spec(fifo bool, visibility time.Duration, maxReceives int) queue.Spec {
	s := queue.Spec{
		Name:              "contract",
		FIFO:              fifo,
		VisibilityTimeout: visibility,
		MaxReceives:       maxReceives,
		Retention:         time.Hour,
	}
	if fifo {
		s.Name += ".fifo"
	}
	return s
}

const long = 60 * time.Second // a visibility timeout no test outlasts

// ctxT is the context for calls that are not about cancellation; the test
// binary's own timeout bounds a hung engine.
func ctxT(*testing.T) context.Context { return context.Background() }

func msg(body, group string) queue.Message {
	return queue.Message{Body: []byte(body), Group: group}
}

func send(t *testing.T, q queue.Queue, msgs ...queue.Message) {
	t.Helper()
	if err := q.Send(ctxT(t), msgs...); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// collect receives until it has n messages or timeout passes. It short-polls
// (wait 0) with a small pause: long polls for max > 1 are not prompt on every
// engine (see testLongPoll), and this helper must not depend on them.
func collect(t *testing.T, q queue.Queue, n int, timeout time.Duration) []queue.Received {
	t.Helper()
	var got []queue.Received
	deadline := time.Now().Add(timeout)
	for len(got) < n && time.Now().Before(deadline) {
		rs, err := q.Receive(ctxT(t), min(queue.MaxBatch, n-len(got)), 0)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if len(rs) > n-len(got) {
			t.Fatalf("Receive(max=%d) returned %d messages", n-len(got), len(rs))
		}
		got = append(got, rs...)
		if len(rs) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if len(got) < n {
		t.Fatalf("received %d of %d messages within %v", len(got), n, timeout)
	}
	return got
}

// collectOne waits for exactly one message.
func collectOne(t *testing.T, q queue.Queue, timeout time.Duration) queue.Received {
	t.Helper()
	return collect(t, q, 1, timeout)[0]
}

// expectNone polls for d and fails if any message is delivered.
func expectNone(t *testing.T, q queue.Queue, d time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		rs, err := q.Receive(ctxT(t), queue.MaxBatch, 0)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if len(rs) > 0 {
			t.Fatalf("%s: got %q (receive count %d)", why, rs[0].Body, rs[0].ReceiveCount)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func del(t *testing.T, q queue.Queue, r queue.Received) {
	t.Helper()
	if err := q.Delete(ctxT(t), r.Receipt); err != nil {
		t.Fatalf("Delete(%q): %v", r.Body, err)
	}
}

func bodies(rs []queue.Received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Body)
	}
	return out
}

func testRoundTrip(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, _ := newQueue(t, spec(fifo, time.Second, 5))
		// Three groups: a FIFO queue may hold back the rest of a group
		// until its first message is deleted.
		groupOf := map[string]string{"one": "g1", "two": "g2", "three": "g3"}
		send(t, q, msg("one", "g1"), msg("two", "g2"), msg("three", "g3"))
		got := collect(t, q, 3, 10*time.Second)
		gotBodies := bodies(got)
		sort.Strings(gotBodies)
		if want := []string{"one", "three", "two"}; strings.Join(gotBodies, ",") != strings.Join(want, ",") {
			t.Fatalf("bodies = %v, want %v", gotBodies, want)
		}
		ids := map[string]bool{}
		for _, r := range got {
			if r.ID == "" || r.Receipt == "" {
				t.Errorf("message %q has empty ID or receipt: %+v", r.Body, r)
			}
			if ids[r.ID] {
				t.Errorf("duplicate ID %q", r.ID)
			}
			ids[r.ID] = true
			if r.ReceiveCount != 1 {
				t.Errorf("first delivery of %q has ReceiveCount %d, want 1", r.Body, r.ReceiveCount)
			}
			if fifo && r.Group != groupOf[string(r.Body)] {
				t.Errorf("Group of %q = %q, want %q", r.Body, r.Group, groupOf[string(r.Body)])
			}
		}
		for _, r := range got {
			del(t, q, r)
		}
		// Deleted messages never come back, not even after the
		// visibility timeout.
		time.Sleep(1500 * time.Millisecond)
		expectNone(t, q, time.Second, "deleted message redelivered")
	})
}

func testRedelivery(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, _ := newQueue(t, spec(fifo, time.Second, 5))
		send(t, q, msg("again", "g"))
		first := collectOne(t, q, 10*time.Second)
		start := time.Now()
		// Hidden while in flight.
		expectNone(t, q, 300*time.Millisecond, "in-flight message delivered twice")
		second := collectOne(t, q, 10*time.Second)
		if waited := time.Since(start); waited < 500*time.Millisecond {
			t.Errorf("redelivered after %v, before the 1s visibility timeout", waited)
		}
		if second.ID != first.ID || !bytes.Equal(second.Body, first.Body) {
			t.Fatalf("redelivered %q/%q, want %q/%q", second.ID, second.Body, first.ID, first.Body)
		}
		if second.ReceiveCount != 2 {
			t.Errorf("ReceiveCount = %d on second delivery, want 2", second.ReceiveCount)
		}
		if second.Receipt == first.Receipt {
			t.Errorf("second delivery reused the receipt")
		}
		del(t, q, second)
		time.Sleep(1500 * time.Millisecond)
		expectNone(t, q, 500*time.Millisecond, "deleted message redelivered")
	})
}

func testSetVisibilityExtends(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, time.Second, 10))
	send(t, q, msg("extend", "g"))
	r := collectOne(t, q, 10*time.Second)
	if err := q.SetVisibility(ctxT(t), r.Receipt, 3*time.Second); err != nil {
		t.Fatalf("SetVisibility: %v", err)
	}
	// Past the queue's own 1s timeout the message stays hidden.
	expectNone(t, q, 1800*time.Millisecond, "message visible before the extended timeout")
	again := collectOne(t, q, 10*time.Second)
	if again.ID != r.ID {
		t.Fatalf("got %q, want the extended message", again.Body)
	}
	// SQS does not count a visibility change as a receive, but some
	// emulators do; only require that the count went up.
	if again.ReceiveCount < 2 {
		t.Errorf("ReceiveCount = %d after redelivery, want >= 2", again.ReceiveCount)
	}
	del(t, q, again)
}

// testSetVisibilityReshows: SetVisibility(0) and a short d make an in-flight
// message receivable again long before the queue's own timeout. MaxReceives
// is kept high because local-aws-sqs counts a visibility change as a receive
// (SQS does not): there, SetVisibility(0) on a message one receive short of
// MaxReceives dead-letters it at once instead of showing it again.
func testSetVisibilityReshows(t *testing.T, newQueue NewQueue, _ Options) {
	var subs []sub
	for _, d := range []time.Duration{0, time.Second} {
		subs = append(subs, sub{fmt.Sprint(d), func(t *testing.T) {
			q, _ := newQueue(t, spec(true, long, 10))
			send(t, q, msg("reshow", "g"))
			r := collectOne(t, q, 10*time.Second)
			start := time.Now()
			if err := q.SetVisibility(ctxT(t), r.Receipt, d); err != nil {
				t.Fatalf("SetVisibility(%v): %v", d, err)
			}
			// Far sooner than the queue's own timeout.
			again := collectOne(t, q, d+10*time.Second)
			if waited := time.Since(start); d > 0 && waited < d/2 {
				t.Errorf("visible again after %v, want about %v", waited, d)
			}
			if again.ID != r.ID || again.ReceiveCount < 2 {
				t.Fatalf("got %q count %d, want the same message again", again.Body, again.ReceiveCount)
			}
			del(t, q, again)
		}})
	}
	concurrently(t, subs...)
}

func testBadReceipt(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		ctx := ctxT(t)
		q, _ := newQueue(t, spec(fifo, long, 5))
		for _, receipt := range []string{"not-a-receipt", "AAAA", strings.Repeat("x", 64)} {
			if err := q.Delete(ctx, receipt); !errors.Is(err, queue.ErrBadReceipt) {
				t.Errorf("Delete(%q) = %v, want ErrBadReceipt", receipt, err)
			}
			if err := q.SetVisibility(ctx, receipt, time.Second); !errors.Is(err, queue.ErrBadReceipt) {
				t.Errorf("SetVisibility(%q) = %v, want ErrBadReceipt", receipt, err)
			}
		}
		send(t, q, msg("gone", "g"))
		r := collectOne(t, q, 10*time.Second)
		del(t, q, r)
		// Changing the visibility of a deleted message fails everywhere.
		if err := q.SetVisibility(ctx, r.Receipt, 0); !errors.Is(err, queue.ErrBadReceipt) {
			t.Errorf("SetVisibility after Delete = %v, want ErrBadReceipt", err)
		}
		// Deleting twice: SQS accepts a repeated delete with the same
		// receipt (and may accept it long after), so either outcome is
		// allowed, but nothing may come back.
		if err := q.Delete(ctx, r.Receipt); err != nil && !errors.Is(err, queue.ErrBadReceipt) {
			t.Errorf("second Delete = %v, want nil or ErrBadReceipt", err)
		}
		expectNone(t, q, 500*time.Millisecond, "deleted message delivered")
	})
}

// testStaleReceiptFIFO checks that once a message is received again, the
// older receipt no longer works. SQS guarantees that only on FIFO queues (a
// standard queue may accept the old receipt and ignore it), so this runs on
// FIFO only — the kind Cirrus uses.
func testStaleReceiptFIFO(t *testing.T, newQueue NewQueue, _ Options) {
	ctx := ctxT(t)
	q, _ := newQueue(t, spec(true, time.Second, 10))
	send(t, q, msg("stale", "g"))
	first := collectOne(t, q, 10*time.Second)
	second := collectOne(t, q, 10*time.Second)
	if second.ID != first.ID {
		t.Fatalf("got %q, want a redelivery", second.Body)
	}
	if err := q.SetVisibility(ctx, second.Receipt, long); err != nil {
		t.Fatalf("SetVisibility(new receipt): %v", err)
	}
	if err := q.Delete(ctx, first.Receipt); !errors.Is(err, queue.ErrBadReceipt) {
		t.Errorf("Delete(stale receipt) = %v, want ErrBadReceipt", err)
	}
	if err := q.SetVisibility(ctx, first.Receipt, 0); !errors.Is(err, queue.ErrBadReceipt) {
		t.Errorf("SetVisibility(stale receipt) = %v, want ErrBadReceipt", err)
	}
	// The stale calls changed nothing: the message is still hidden, and the
	// current receipt deletes it.
	expectNone(t, q, 300*time.Millisecond, "stale receipt changed visibility")
	del(t, q, second)
}

func testDeadLetter(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, dlq := newQueue(t, spec(fifo, time.Second, 2))
		send(t, q, msg("poison", "g"), msg("fine", "h"))
		counts := []int{}
		deadline := time.Now().Add(20 * time.Second)
		var dead []queue.Received
		for time.Now().Before(deadline) && len(dead) == 0 {
			rs, err := q.Receive(ctxT(t), queue.MaxBatch, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if string(r.Body) == "fine" {
					del(t, q, r)
					continue
				}
				counts = append(counts, r.ReceiveCount) // never deleted
			}
			dead, err = dlq.Receive(ctxT(t), queue.MaxBatch, 0)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(dead) != 1 || string(dead[0].Body) != "poison" {
			t.Fatalf("dead-letter queue holds %q, want [poison]", bodies(dead))
		}
		if fifo && dead[0].Group != "g" {
			t.Errorf("dead letter Group = %q, want g", dead[0].Group)
		}
		if fmt.Sprint(counts) != "[1 2]" {
			t.Errorf("source delivered the poison message with counts %v, want [1 2] (MaxReceives 2)", counts)
		}
		del(t, dlq, dead[0])
		expectNone(t, q, 1500*time.Millisecond, "dead-lettered message still in source")
		expectNone(t, dlq, 0, "dead-letter queue not empty")
	})
}

func testBodyLimit(t *testing.T, newQueue NewQueue, _ Options) {
	ctx := ctxT(t)
	q, _ := newQueue(t, spec(true, long, 5))
	exact := bytes.Repeat([]byte("a"), queue.MaxBodyBytes)
	exact[0], exact[len(exact)-1] = '<', '>'
	over := bytes.Repeat([]byte("b"), queue.MaxBodyBytes+1)
	tests := []struct {
		name string
		msgs []queue.Message
	}{
		{"single", []queue.Message{{Body: over, Group: "g"}}},
		{"inBatch", []queue.Message{msg("small", "g"), {Body: over, Group: "g"}}},
	}
	for _, tc := range tests {
		if err := q.Send(ctx, tc.msgs...); !errors.Is(err, queue.ErrTooLarge) {
			t.Errorf("%s: Send(%d bytes) = %v, want ErrTooLarge", tc.name, len(over), err)
		}
	}
	// A send with an oversized message is refused as a whole.
	expectNone(t, q, 300*time.Millisecond, "part of a refused send delivered")
	send(t, q, queue.Message{Body: exact, Group: "g"})
	r := collectOne(t, q, 10*time.Second)
	if !bytes.Equal(r.Body, exact) {
		t.Fatalf("body of %d bytes came back as %d bytes", len(exact), len(r.Body))
	}
	del(t, q, r)
}

// testBinaryBody checks that bodies are opaque bytes: not valid UTF-8 and
// holding control characters SQS refuses in message text.
func testBinaryBody(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	want := [][]byte{all, {0xff, 0xfe, 0x00}, []byte("plain {\"json\": \"\u2603\"}"), []byte("base64:AAAA"), {}}
	for _, b := range want {
		send(t, q, queue.Message{Body: b, Group: "g", DedupID: fmt.Sprintf("%x", len(b))})
	}
	for _, b := range want {
		r := collectOne(t, q, 10*time.Second)
		if !bytes.Equal(r.Body, b) {
			t.Errorf("body %q came back as %q", b, r.Body)
		}
		del(t, q, r)
	}
}

func testFIFONeedsGroup(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	if err := q.Send(ctxT(t), msg("grouped", "g"), msg("no group", "")); err == nil {
		t.Fatal("Send of a FIFO message without a group succeeded")
	}
	expectNone(t, q, 300*time.Millisecond, "part of a refused send delivered")
}

func testFIFOOrder(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	const groups, perGroup = 5, 30
	var msgs []queue.Message
	for i := range perGroup {
		for g := range groups {
			msgs = append(msgs, msg(fmt.Sprintf("g%d-%03d", g, i), fmt.Sprintf("g%d", g)))
		}
	}
	// Several sends of uneven size, some above MaxBatch.
	for _, n := range []int{1, 3, 10, 17, 40} {
		send(t, q, msgs[:n]...)
		msgs = msgs[n:]
	}
	send(t, q, msgs...)
	next := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for total := 0; total < groups*perGroup; {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages", total, groups*perGroup)
		}
		rs, err := q.Receive(ctxT(t), queue.MaxBatch, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			want := fmt.Sprintf("%s-%03d", r.Group, next[r.Group])
			if string(r.Body) != want {
				t.Fatalf("group %s delivered %q, want %q", r.Group, r.Body, want)
			}
			next[r.Group]++
			total++
			del(t, q, r)
		}
	}
	expectNone(t, q, 300*time.Millisecond, "extra message")
}

func testOtherGroupsContinue(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	send(t, q, msg("a1", "a"), msg("a2", "a"), msg("b1", "b"), msg("c1", "c"))
	a1 := collectOne(t, q, 10*time.Second)
	if string(a1.Body) != "a1" {
		t.Fatalf("first delivery %q, want a1", a1.Body)
	}
	// With a1 in flight and unacknowledged, the other groups still flow.
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !(seen["b1"] && seen["c1"]) && time.Now().Before(deadline) {
		rs, err := q.Receive(ctxT(t), queue.MaxBatch, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			seen[string(r.Body)] = true
			if r.Group != "a" {
				del(t, q, r)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !seen["b1"] || !seen["c1"] {
		t.Fatalf("other groups blocked behind an in-flight message: saw %v", seen)
	}
}

func testGroupLock(t *testing.T, newQueue NewQueue, opts Options) {
	if opts.NoGroupLock != "" {
		t.Skip(opts.NoGroupLock)
	}
	q, _ := newQueue(t, spec(true, 2*time.Second, 10))
	send(t, q, msg("a1", "a"), msg("a2", "a"), msg("a3", "a"), msg("b1", "b"))
	// Receive one at a time: SQS may hand out several messages of one group
	// in a single batch, in order, but none once one is in flight.
	a1 := collectOne(t, q, 10*time.Second)
	if string(a1.Body) != "a1" {
		t.Fatalf("first delivery %q, want a1", a1.Body)
	}
	b1 := collectOne(t, q, 10*time.Second)
	if string(b1.Body) != "b1" {
		t.Fatalf("second delivery %q, want b1 (a2 must wait for a1)", b1.Body)
	}
	del(t, q, b1)
	// a1 is neither deleted nor visible: group a is blocked.
	expectNone(t, q, time.Second, "group a delivered past its in-flight head")
	// After the timeout a1 comes back before a2.
	again := collectOne(t, q, 10*time.Second)
	if string(again.Body) != "a1" || again.ReceiveCount != 2 {
		t.Fatalf("after the timeout got %q (count %d), want a1 again", again.Body, again.ReceiveCount)
	}
	del(t, q, again)
	a2 := collectOne(t, q, 10*time.Second)
	if string(a2.Body) != "a2" {
		t.Fatalf("after deleting a1 got %q, want a2", a2.Body)
	}
	expectNone(t, q, 500*time.Millisecond, "a3 delivered while a2 in flight")
	del(t, q, a2)
	if a3 := collectOne(t, q, 10*time.Second); string(a3.Body) != "a3" {
		t.Fatalf("got %q, want a3", a3.Body)
	}
}

func testDedup(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	// Same DedupID (in one batch and across sends) delivers once, whatever
	// the body and group; an empty DedupID dedups by body. Repeats are only
	// checked while the first copy is still queued: past that, the five
	// minute window is not honoured by every emulator.
	send(t, q,
		queue.Message{Body: []byte("x1"), Group: "g", DedupID: "x"},
		queue.Message{Body: []byte("x2"), Group: "g", DedupID: "x"},
		msg("same body", "g"),
		queue.Message{Body: []byte("y"), Group: "g", DedupID: "y"},
	)
	send(t, q,
		queue.Message{Body: []byte("x3"), Group: "h", DedupID: "x"},
		msg("same body", "g"),
		queue.Message{Body: []byte("same body"), Group: "g", DedupID: "other"},
	)
	var got []string
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		rs, err := q.Receive(ctxT(t), queue.MaxBatch, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			got = append(got, string(r.Body))
			del(t, q, r)
		}
		if len(rs) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if want := "x1,same body,y,same body"; strings.Join(got, ",") != want {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}

func testLongPoll(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, _ := newQueue(t, spec(fifo, long, 5))
		type result struct {
			rs  []queue.Received
			err error
			at  time.Duration
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			// max 1: the emulator's long poll only ends early once it
			// has max messages; SQS and the embedded queue end at the
			// first.
			rs, err := q.Receive(ctxT(t), 1, 15*time.Second)
			done <- result{rs, err, time.Since(start)}
		}()
		time.Sleep(300 * time.Millisecond)
		send(t, q, msg("wake", "g"))
		res := <-done
		if res.err != nil {
			t.Fatalf("Receive: %v", res.err)
		}
		if len(res.rs) != 1 || string(res.rs[0].Body) != "wake" {
			t.Fatalf("long poll returned %q, want [wake]", bodies(res.rs))
		}
		if res.at > 5*time.Second {
			t.Errorf("long poll returned %v after start, want soon after the send at 300ms", res.at)
		}
	})
}

func testLongPollEmpty(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	start := time.Now()
	rs, err := q.Receive(ctxT(t), queue.MaxBatch, 2*time.Second)
	took := time.Since(start)
	if err != nil || len(rs) != 0 {
		t.Fatalf("Receive on empty queue = %q, %v; want nothing", bodies(rs), err)
	}
	if took < time.Second || took > 6*time.Second {
		t.Errorf("Receive(wait=2s) on an empty queue took %v", took)
	}
}

func testReceiveCancel(t *testing.T, newQueue NewQueue, _ Options) {
	q, _ := newQueue(t, spec(true, long, 5))
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	rs, err := q.Receive(ctx, 1, 15*time.Second)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cancelled Receive returned after %v", took)
	}
	if err == nil && len(rs) > 0 {
		t.Fatalf("cancelled Receive on an empty queue returned %q", bodies(rs))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled Receive = %v, want context.DeadlineExceeded", err)
	}
}

func testLargeSend(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, _ := newQueue(t, spec(fifo, long, 5))
		const n = 3*queue.MaxBatch + 7
		var msgs []queue.Message
		for i := range n {
			msgs = append(msgs, msg(fmt.Sprintf("m%03d", i), fmt.Sprintf("g%d", i%4)))
		}
		// Bodies big enough that the batch exceeds SQS's per-request
		// payload limit unless the adapter splits it.
		for i := range 6 {
			msgs[i].Body = append(bytes.Repeat([]byte{'.'}, 200*1024), msgs[i].Body...)
		}
		send(t, q, msgs...)
		seen := map[string]bool{}
		deadline := time.Now().Add(20 * time.Second)
		for len(seen) < n && time.Now().Before(deadline) {
			rs, err := q.Receive(ctxT(t), 3, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) > 3 {
				t.Fatalf("Receive(max=3) returned %d", len(rs))
			}
			for _, r := range rs {
				b := string(bytes.TrimLeft(r.Body, "."))
				if seen[b] {
					t.Fatalf("%s delivered twice", b)
				}
				seen[b] = true
				del(t, q, r)
			}
			if len(rs) == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if len(seen) != n {
			t.Fatalf("received %d of %d", len(seen), n)
		}
	})
}

func testConcurrentConsumers(t *testing.T, newQueue NewQueue, _ Options) {
	forKinds(t, func(t *testing.T, fifo bool) {
		q, _ := newQueue(t, spec(fifo, long, 5))
		const n, consumers = 120, 8
		var msgs []queue.Message
		for i := range n {
			msgs = append(msgs, msg(fmt.Sprintf("m%03d", i), fmt.Sprintf("g%d", i%12)))
		}
		send(t, q, msgs...)
		var (
			mu    sync.Mutex
			count = map[string]int{}
			total int
			wg    sync.WaitGroup
		)
		ctx, cancel := context.WithTimeout(ctxT(t), 30*time.Second)
		defer cancel()
		for range consumers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					rs, err := q.Receive(ctx, queue.MaxBatch, time.Second)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("Receive: %v", err)
						}
						return
					}
					mu.Lock()
					for _, r := range rs {
						count[string(r.Body)]++
						total++
					}
					done := total >= n
					mu.Unlock()
					for _, r := range rs {
						// Not ctx: another consumer may cancel it.
						if err := q.Delete(ctxT(t), r.Receipt); err != nil {
							t.Errorf("Delete: %v", err)
						}
					}
					if done {
						cancel()
					}
				}
			}()
		}
		wg.Wait()
		if len(count) != n {
			t.Errorf("received %d distinct messages, want %d", len(count), n)
		}
		for b, c := range count {
			if c != 1 {
				t.Errorf("%s delivered %d times while in flight", b, c)
			}
		}
	})
}
