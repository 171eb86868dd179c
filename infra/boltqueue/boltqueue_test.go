package boltqueue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/queue/queuetest"
)

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newQueue(t testing.TB, path string, spec queue.Spec) (*bbolt.DB, *Queue) {
	t.Helper()
	db := openDB(t, path)
	q, err := New(db, spec)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db, q
}

func TestContract(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, spec queue.Spec) (queue.Queue, queue.Queue) {
		db, q := newQueue(t, filepath.Join(t.TempDir(), "q.db"), spec)
		t.Cleanup(func() { db.Close() })
		return q, q.DeadLetter()
	})
}

var fifoSpec = queue.Spec{
	Name:              "test.fifo",
	FIFO:              true,
	VisibilityTimeout: time.Second,
	MaxReceives:       3,
	Retention:         time.Hour,
}

func TestNewValidatesSpec(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "q.db"))
	defer db.Close()
	for _, spec := range []queue.Spec{
		{},
		{Name: "x.fifo"},              // standard with a FIFO name
		{Name: "x", FIFO: true},       // FIFO without the suffix
		{Name: "x.fifo.", FIFO: true}, // likewise
	} {
		if _, err := New(db, spec); err == nil {
			t.Errorf("New(%+v) succeeded", spec)
		}
	}
}

func TestBucketsArePrefixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db, q := newQueue(t, path, fifoSpec)
	defer db.Close()
	if err := q.Send(context.Background(), queue.Message{Body: []byte("x"), Group: "g"}); err != nil {
		t.Fatal(err)
	}
	var names []string
	db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
	})
	want := "queue/test-dlq.fifo,queue/test.fifo"
	if strings.Join(names, ",") != want {
		t.Fatalf("top-level buckets %v, want %s", names, want)
	}
}

func TestFIFONeedsGroup(t *testing.T) {
	db, q := newQueue(t, filepath.Join(t.TempDir(), "q.db"), fifoSpec)
	defer db.Close()
	if err := q.Send(context.Background(), queue.Message{Body: []byte("x")}); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("Send without group = %v, want ErrNoGroup", err)
	}
}

// TestLongPollBatch checks what the contract cannot (the SQS emulator lacks
// it): a long poll for a full batch returns at the first message.
func TestLongPollBatch(t *testing.T) {
	db, q := newQueue(t, filepath.Join(t.TempDir(), "q.db"), fifoSpec)
	defer db.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		q.Send(context.Background(), queue.Message{Body: []byte("x"), Group: "g"})
	}()
	start := time.Now()
	rs, err := q.Receive(context.Background(), queue.MaxBatch, 10*time.Second)
	if err != nil || len(rs) != 1 {
		t.Fatalf("Receive = %d messages, %v", len(rs), err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("long poll took %v after a send at 100ms", took)
	}
}

func TestRetention(t *testing.T) {
	spec := fifoSpec
	spec.Retention = 300 * time.Millisecond
	db, q := newQueue(t, filepath.Join(t.TempDir(), "q.db"), spec)
	defer db.Close()
	ctx := context.Background()
	if err := q.Send(ctx, queue.Message{Body: []byte("old"), Group: "g"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := q.Send(ctx, queue.Message{Body: []byte("new"), Group: "g"}); err != nil {
		t.Fatal(err)
	}
	rs, err := q.Receive(ctx, queue.MaxBatch, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "new" {
		t.Fatalf("Receive = %v, %v; want only the message within retention", rs, err)
	}
}

// TestRestart closes and reopens the file: unacknowledged messages, receive
// counts, group order and the deduplication window survive.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	db, q := newQueue(t, path, fifoSpec)
	err := q.Send(ctx,
		queue.Message{Body: []byte("a1"), Group: "a", DedupID: "a1"},
		queue.Message{Body: []byte("a2"), Group: "a"},
		queue.Message{Body: []byte("b1"), Group: "b"},
	)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := q.Receive(ctx, 1, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "a1" {
		t.Fatalf("Receive = %v, %v", rs, err)
	}
	db.Close()

	db, q = newQueue(t, path, fifoSpec)
	defer db.Close()
	// a1 is still in flight (its deadline was stored), so group a waits.
	rs, err = q.Receive(ctx, queue.MaxBatch, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "b1" {
		t.Fatalf("after reopen got %v, %v; want only b1", rs, err)
	}
	if err := q.Delete(ctx, rs[0].Receipt); err != nil {
		t.Fatal(err)
	}
	// The dedup id is remembered.
	if err := q.Send(ctx, queue.Message{Body: []byte("a1 again"), Group: "c", DedupID: "a1"}); err != nil {
		t.Fatal(err)
	}
	rs, err = q.Receive(ctx, 1, 3*time.Second)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "a1" || rs[0].ReceiveCount != 2 {
		t.Fatalf("after the timeout got %+v, %v; want a1 with count 2", rs, err)
	}
	if err := q.Delete(ctx, rs[0].Receipt); err != nil {
		t.Fatal(err)
	}
	rs, err = q.Receive(ctx, queue.MaxBatch, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "a2" {
		t.Fatalf("got %v, %v; want a2 (and not the deduplicated resend)", rs, err)
	}
}

// TestDeadLetterAfterRestart: the receive count is durable, so a message
// whose consumer keeps crashing the process is still dead-lettered.
func TestDeadLetterAfterRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	spec := fifoSpec
	spec.VisibilityTimeout = 100 * time.Millisecond
	spec.MaxReceives = 2
	db, q := newQueue(t, path, spec)
	if err := q.Send(ctx, queue.Message{Body: []byte("poison"), Group: "g"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= spec.MaxReceives; i++ {
		rs, err := q.Receive(ctx, 1, time.Second)
		if err != nil || len(rs) != 1 || rs[0].ReceiveCount != i {
			t.Fatalf("receive %d: %+v, %v", i, rs, err)
		}
		db.Close() // "crash" while handling it
		db, q = newQueue(t, path, spec)
	}
	defer db.Close()
	time.Sleep(150 * time.Millisecond)
	if rs, err := q.Receive(ctx, 1, 0); err != nil || len(rs) != 0 {
		t.Fatalf("source delivered %+v, %v after MaxReceives", rs, err)
	}
	rs, err := q.DeadLetter().Receive(ctx, 1, 0)
	if err != nil || len(rs) != 1 || string(rs[0].Body) != "poison" {
		t.Fatalf("dead-letter queue: %+v, %v", rs, err)
	}
}

const crashEnv = "BOLTQUEUE_CRASH_CHILD"

// TestCrashChild is the child of TestCrash: it sends from several
// goroutines, printing each message once Send has returned, and receives
// some without deleting them, until the parent kills it with SIGKILL.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestCrash")
	}
	spec := fifoSpec
	spec.VisibilityTimeout = 500 * time.Millisecond
	spec.MaxReceives = 0
	db, q := newQueue(t, path, spec)
	defer db.Close()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				body := fmt.Sprintf("w%d-%d", w, i)
				if err := q.Send(ctx, queue.Message{Body: []byte(body), Group: fmt.Sprint("g", i%3)}); err != nil {
					fmt.Fprintln(os.Stderr, "send:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(out, "sent", body)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	for { // in flight at the crash
		if _, err := q.Receive(ctx, queue.MaxBatch, time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "receive:", err)
			os.Exit(2)
		}
	}
}

// TestCrash kills a process that is sending (SIGKILL, no cleanup) and checks
// that every message whose Send had returned is delivered after reopening.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "q.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(acked) < 3000 {
		if body, ok := strings.CutPrefix(sc.Text(), "sent "); ok {
			acked[body] = true
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill landed are acknowledged too.
	for sc.Scan() {
		if body, ok := strings.CutPrefix(sc.Text(), "sent "); ok {
			acked[body] = true
		}
	}
	cmd.Wait()
	if len(acked) < 100 {
		t.Fatalf("child acknowledged only %d messages", len(acked))
	}

	spec := fifoSpec
	spec.MaxReceives = 0
	db, q := newQueue(t, path, spec)
	defer db.Close()
	got := map[string]bool{}
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		rs, err := q.Receive(ctx, queue.MaxBatch, 700*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 && len(got) >= len(acked) {
			break
		}
		for _, r := range rs {
			if got[string(r.Body)] {
				t.Fatalf("%s delivered twice", r.Body)
			}
			got[string(r.Body)] = true
			if err := q.Delete(ctx, r.Receipt); err != nil {
				t.Fatal(err)
			}
		}
	}
	missing := 0
	for b := range acked {
		if !got[b] {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged message %s lost", b)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", missing, len(acked))
	}
	// Anything beyond the acknowledged ones must have been sent by the
	// child (committed but killed before it printed).
	for b := range got {
		w, i, ok := strings.Cut(strings.TrimPrefix(b, "w"), "-")
		if _, err := strconv.Atoi(i); !ok || err != nil || len(w) != 1 {
			t.Errorf("unexpected message %q", b)
		}
	}
	t.Logf("child acknowledged %d messages before SIGKILL; %d delivered after reopening", len(acked), len(got))
}

func benchQueue(b *testing.B) *Queue {
	db, q := newQueue(b, filepath.Join(b.TempDir(), "q.db"), queue.Spec{
		Name: "bench.fifo", FIFO: true, VisibilityTimeout: time.Minute, MaxReceives: 5, Retention: time.Hour,
	})
	b.Cleanup(func() { db.Close() })
	return q
}

func benchMsg(i int) queue.Message {
	return queue.Message{Body: []byte(fmt.Sprintf(`{"event":"$%d","room":"!r:example.org"}`, i)), Group: fmt.Sprint("room", i%64)}
}

// BenchmarkSend: one message per Send, one sender: an fsync each.
func BenchmarkSend(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := q.Send(ctx, benchMsg(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendParallel: one message per Send from many goroutines, which
// share commits.
func BenchmarkSendParallel(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := q.Send(ctx, benchMsg(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSendBatch10 reports per message, sent ten per Send.
func BenchmarkSendBatch10(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	msgs := make([]queue.Message, 10)
	for i := 0; b.Loop(); i++ {
		if i%10 == 0 {
			for j := range msgs {
				msgs[j] = benchMsg(i + j)
			}
			if err := q.Send(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReceiveDelete: per message, consumers receive batches and delete
// each message, with 64 groups backlogged.
func BenchmarkReceiveDelete(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	n := b.N
	for i := 0; i < n; i += 500 {
		msgs := make([]queue.Message, 0, 500)
		for j := i; j < min(n, i+500); j++ {
			msgs = append(msgs, benchMsg(j))
		}
		if err := q.Send(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var mu sync.Mutex
	left := n
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := left <= 0
				mu.Unlock()
				if done {
					return
				}
				rs, err := q.Receive(ctx, queue.MaxBatch, 50*time.Millisecond)
				if err != nil {
					b.Error(err)
					return
				}
				for _, r := range rs {
					if err := q.Delete(ctx, r.Receipt); err != nil {
						b.Error(err)
						return
					}
				}
				mu.Lock()
				left -= len(rs)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
