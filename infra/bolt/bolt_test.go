package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/table/tabletest"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// open opens a fresh database in a temporary directory, closed at cleanup.
func open(t testing.TB, opts ...bolt.Option) (*bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cirrus.db")
	db, err := bolt.Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db, path
}

func TestContract(t *testing.T) {
	tabletest.Run(t, func(t *testing.T) table.Table {
		db, _ := open(t)
		return db.Table()
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cirrus.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	items := []table.Item{
		{PK: "room!1", SK: "state/m.room.name", GPK: "user@a", GSK: "0005", Data: []byte(`{"name":"x"}`), Version: 2},
		{PK: "room!1", SK: "event/0001", Data: []byte("e1"), TTL: time.Now().Unix() + 3600},
		{PK: "room!2", SK: "event/0001", GPK: "user@a", GSK: "0001", Data: []byte("e2")},
	}
	for _, it := range items {
		if err := db.Put(ctx, it, table.IfNotExists()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Add(ctx, table.Key{PK: "room!1", SK: "seq"}, 41); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	db, err = bolt.Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	for _, want := range items {
		got, err := db.Get(ctx, want.Key())
		if err != nil {
			t.Fatalf("Get %s after reopen: %v", want.Key(), err)
		}
		if got.GPK != want.GPK || got.GSK != want.GSK || string(got.Data) != string(want.Data) || got.Version != want.Version || got.TTL != want.TTL {
			t.Fatalf("after reopen got %+v, want %+v", got, want)
		}
	}
	if n, err := db.Add(ctx, table.Key{PK: "room!1", SK: "seq"}, 1); err != nil || n != 42 {
		t.Fatalf("Add after reopen: %d, %v; want 42", n, err)
	}
	page, err := db.Query(ctx, table.Query{Index: table.IndexName, PK: "user@a"})
	if err != nil || len(page.Items) != 2 || page.Items[0].PK != "room!2" || page.Items[1].PK != "room!1" {
		t.Fatalf("index after reopen: %+v, %v", page.Items, err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	_, path := open(t)
	start := time.Now()
	db2, err := bolt.Open(path)
	elapsed := time.Since(start)
	if err == nil {
		db2.Close()
		t.Fatal("second Open of an open database succeeded")
	}
	if !errors.Is(err, bolt.ErrLocked) || !strings.Contains(err.Error(), "database is locked") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: unhelpful error %q", err)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("second Open took %v", elapsed)
	}
	start = time.Now()
	if _, err := bolt.Open(path, bolt.WithLockTimeout(100*time.Millisecond)); !errors.Is(err, bolt.ErrLocked) {
		t.Fatalf("Open with a short timeout: %v", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Open with a 100ms lock timeout took %v", elapsed)
	}
}

func TestOpenBadPath(t *testing.T) {
	_, err := bolt.Open(filepath.Join(t.TempDir(), "missing-dir", "x.db"))
	if err == nil || errors.Is(err, bolt.ErrLocked) {
		t.Fatalf("Open in a missing directory: %v", err)
	}
}

func TestFileMode(t *testing.T) {
	_, path := open(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("database file mode %v is readable by others", fi.Mode().Perm())
	}
}

func TestBadCursorAndCanceledContext(t *testing.T) {
	db, _ := open(t)
	if _, err := db.Query(t.Context(), table.Query{PK: "p", Cursor: "%%%"}); !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("Query with a bad cursor: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := db.Put(ctx, table.Item{PK: "p", SK: "s"}, table.Cond{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a canceled context: %v", err)
	}
	if _, err := db.Get(ctx, table.Key{PK: "p", SK: "s"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a canceled context: %v", err)
	}
	if _, err := db.Get(t.Context(), table.Key{PK: "p", SK: "s"}); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("the canceled Put wrote: %v", err)
	}
}

// TestBinaryKeys uses keys with NUL and high bytes, which the key encoding
// must keep apart and in bytewise order.
func TestBinaryKeys(t *testing.T) {
	db, _ := open(t)
	ctx := t.Context()
	sks := []string{"a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "a\xff", "a\xff\xff", "b", "\x00", "\xff"}
	pks := []string{"p", "p\x00", "p\x00x", "\x01p", "pp"}
	for _, pk := range pks {
		for _, sk := range sks {
			it := table.Item{PK: pk, SK: sk, GPK: "g" + pk, GSK: sk, Data: []byte(pk + "|" + sk)}
			if err := db.Put(ctx, it, table.Cond{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := slices.Clone(sks)
	slices.Sort(want)
	for _, pk := range pks {
		for _, q := range []table.Query{{PK: pk}, {PK: "g" + pk, Index: table.IndexName}} {
			for _, rev := range []bool{false, true} {
				for _, limit := range []int{0, 1, 4} {
					q := q
					q.Reverse, q.Limit = rev, limit
					var got []string
					for {
						page, err := db.Query(ctx, q)
						if err != nil {
							t.Fatal(err)
						}
						for _, it := range page.Items {
							if it.PK != pk || string(it.Data) != pk+"|"+it.SK {
								t.Fatalf("%+v returned %q|%q", q, it.PK, it.SK)
							}
							got = append(got, it.SK)
						}
						if page.Next == "" {
							break
						}
						q.Cursor = page.Next
					}
					w := slices.Clone(want)
					if rev {
						slices.Reverse(w)
					}
					if !slices.Equal(got, w) {
						t.Fatalf("query %q index=%q reverse=%v limit=%d:\n got %q\nwant %q", pk, q.Index, rev, limit, got, w)
					}
				}
			}
		}
		checks := []struct {
			q    table.Query
			want []string
		}{
			{table.Query{Prefix: "a\x00"}, []string{"a\x00", "a\x00\x00", "a\x00b"}},
			{table.Query{Prefix: "a\xff"}, []string{"a\xff", "a\xff\xff"}},
			{table.Query{Prefix: "\xff"}, []string{"\xff"}},
			{table.Query{From: "a\x00", To: "a\x01"}, []string{"a\x00", "a\x00\x00", "a\x00b", "a\x01"}},
			{table.Query{From: "a\x00", To: "a\x00", Reverse: true}, []string{"a\x00"}},
			{table.Query{Prefix: "a\x00", Reverse: true}, []string{"a\x00b", "a\x00\x00", "a\x00"}},
			{table.Query{To: "a\x00", Reverse: true}, []string{"a\x00", "a", "\x00"}},
		}
		for _, c := range checks {
			for _, index := range []bool{false, true} {
				q := c.q
				q.PK = pk
				if index {
					q.PK, q.Index = "g"+pk, table.IndexName
				}
				page, err := db.Query(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, it := range page.Items {
					got = append(got, it.SK)
				}
				if !slices.Equal(got, c.want) || page.Next != "" {
					t.Fatalf("%+v: got %q (next %q), want %q", q, got, page.Next, c.want)
				}
			}
		}
	}
}

func TestTTLClockAndSweep(t *testing.T) {
	var now atomic.Int64
	now.Store(1_000_000)
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	db, _ := open(t, bolt.WithClock(clock), bolt.WithSweepInterval(0))
	ctx := t.Context()

	soon := table.Item{PK: "p", SK: "soon", GPK: "g", GSK: "1", Data: []byte("s"), TTL: 1_000_100}
	later := table.Item{PK: "p", SK: "later", GPK: "g", GSK: "2", Data: []byte("l"), TTL: 1_000_200}
	never := table.Item{PK: "p", SK: "never", GPK: "g", GSK: "3", Data: []byte("n")}
	for _, it := range []table.Item{soon, later, never} {
		if err := db.Put(ctx, it, table.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	visible := func() []string {
		t.Helper()
		var out []string
		for _, q := range []table.Query{{PK: "p"}, {PK: "g", Index: table.IndexName}} {
			page, err := db.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				out = append(out, q.Index+it.SK)
			}
		}
		for _, k := range []string{"soon", "later", "never"} {
			if _, err := db.Get(ctx, table.Key{PK: "p", SK: k}); err == nil {
				out = append(out, "get:"+k)
			}
		}
		return out
	}
	if got, want := visible(), []string{"later", "never", "soon", "gsi1soon", "gsi1later", "gsi1never", "get:soon", "get:later", "get:never"}; !slices.Equal(got, want) {
		t.Fatalf("at start: %q", got)
	}
	if n, err := db.Sweep(); err != nil || n != 0 {
		t.Fatalf("Sweep before expiry: %d, %v", n, err)
	}

	now.Store(1_000_100) // TTL <= now is expired
	if got, want := visible(), []string{"later", "never", "gsi1later", "gsi1never", "get:later", "get:never"}; !slices.Equal(got, want) {
		t.Fatalf("after the first expiry: %q", got)
	}
	// Before it is swept, the expired item can be replaced as if absent.
	if err := db.Put(ctx, table.Item{PK: "p", SK: "soon", Data: []byte("again")}, table.IfNotExists()); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Add(ctx, table.Key{PK: "p", SK: "later"}, 5); err != nil || n != 5 {
		t.Fatalf("Add before expiry: %d, %v", n, err)
	}
	now.Store(1_000_500)
	if n, err := db.Add(ctx, table.Key{PK: "p", SK: "later"}, 7); err != nil || n != 7 {
		t.Fatalf("Add to an expired item starts afresh: %d, %v", n, err)
	}
	got, err := db.Get(ctx, table.Key{PK: "p", SK: "later"})
	if err != nil || got.TTL != 0 || got.GPK != "" || got.Num != 7 {
		t.Fatalf("item re-created by Add: %+v, %v", got, err)
	}
	if err := db.Put(ctx, table.Item{PK: "p", SK: "x", TTL: 1_000_400}, table.Cond{}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Sweep(); err != nil || n != 1 {
		t.Fatalf("Sweep: %d, %v; want 1 (p|x)", n, err)
	}
	counts := bucketSizes(t, db)
	if counts["table"] != 3 || counts["table.gsi1"] != 1 || counts["table.ttl"] != 0 {
		t.Fatalf("bucket sizes after sweep: %v", counts)
	}
}

// bucketSizes counts the keys of every top-level bucket.
func bucketSizes(t *testing.T, db *bolt.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := db.Bolt().View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)]++
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestContractBoltBatch runs the suite with writes going through bbolt's own
// DB.Batch instead of the group committer.
func TestContractBoltBatch(t *testing.T) {
	tabletest.Run(t, func(t *testing.T) table.Table {
		db, _ := open(t, bolt.WithBoltBatch(time.Millisecond))
		return db.Table()
	})
}

func TestBatchFailuresAndClose(t *testing.T) {
	db, path := open(t)
	bucket := []byte("other-adapter")
	if err := db.Batch(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Many writers at once, some failing or panicking: each gets its own
	// outcome and the failures leave nothing behind.
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 48)
	for i := range errs {
		wg.Go(func() {
			errs[i] = db.Batch(func(tx *bbolt.Tx) error {
				b := tx.Bucket(bucket)
				if err := b.Put(fmt.Appendf(nil, "k%02d", i), []byte("v")); err != nil {
					return err
				}
				switch i % 8 {
				case 3:
					return boom
				case 5:
					panic("oops")
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 8 {
		case 3:
			if !errors.Is(err, boom) {
				t.Fatalf("write %d: %v, want boom", i, err)
			}
		case 5:
			if err == nil || !strings.Contains(err.Error(), "oops") {
				t.Fatalf("write %d: %v, want the panic", i, err)
			}
		default:
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
	}
	if n := bucketSizes(t, db)[string(bucket)]; n != 36 {
		t.Fatalf("bucket holds %d keys, want 36", n)
	}

	// Close while writers are busy: nobody hangs, later writes fail cleanly.
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for g := range 8 {
		writers.Go(func() {
			for i := 0; ; i++ {
				err := db.Put(t.Context(), table.Item{PK: fmt.Sprintf("w%d", g), SK: fmt.Sprint(i)}, table.Cond{})
				if err != nil {
					if !errors.Is(err, bolt.ErrClosed) && !errors.Is(err, bbolt.ErrDatabaseNotOpen) {
						t.Errorf("Put during Close: %v", err)
					}
					<-stop
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	writers.Wait()
	if err := db.Put(t.Context(), table.Item{PK: "p", SK: "s"}, table.Cond{}); !errors.Is(err, bolt.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	// And the file opens again at once.
	db2, err := bolt.Open(path, bolt.WithLockTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	db2.Close()
}

func TestBackgroundSweeper(t *testing.T) {
	db, _ := open(t, bolt.WithSweepInterval(10*time.Millisecond))
	past := time.Now().Unix() - 1
	for i := range 3 {
		it := table.Item{PK: "p", SK: fmt.Sprint(i), GPK: "g", GSK: "x", TTL: past}
		if err := db.Put(t.Context(), it, table.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	keep := table.Item{PK: "p", SK: "keep", TTL: past + 3600}
	if err := db.Put(t.Context(), keep, table.Cond{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := bucketSizes(t, db)
		if n["table"] == 1 && n["table.gsi1"] == 0 && n["table.ttl"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper did not run: %v", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := db.Get(t.Context(), keep.Key()); err != nil {
		t.Fatal(err)
	}
}
