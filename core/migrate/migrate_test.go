package migrate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/migrate"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestUpgradeInPlace writes data in an "old" format (format 1, where a
// record keeps a display name in Data), then opens it with a release whose
// step 2 moves that field into a new item. The data must be upgraded in
// place, nothing lost, and the format recorded.
func TestUpgradeInPlace(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tb := testtable.Open(t, engine)
			v1 := []migrate.Step{{To: 1, Name: "initial", Run: func(context.Context, table.Table) error { return nil }}}
			if err := migrate.Up(ctx, tb, v1); err != nil {
				t.Fatal(err)
			}
			for _, u := range []string{"a", "b", "c"} {
				if err := tb.Put(ctx, table.Item{PK: "old#" + u, SK: "rec", Data: []byte("name-" + u)}, table.Cond{}); err != nil {
					t.Fatal(err)
				}
			}
			var runs atomic.Int32
			v2 := append(v1, migrate.Step{To: 2, Name: "split names out", Run: func(ctx context.Context, tb table.Table) error {
				runs.Add(1)
				for _, u := range []string{"a", "b", "c"} {
					it, err := tb.Get(ctx, table.Key{PK: "old#" + u, SK: "rec"})
					if errors.Is(err, table.ErrNotFound) {
						continue // already moved by an earlier (crashed) run
					}
					if err != nil {
						return err
					}
					err = tb.Transact(ctx, []table.Op{
						table.Put(table.Item{PK: "new#" + u, SK: "name", Data: it.Data}, table.Cond{}),
						table.Delete(it.Key(), table.IfExists()),
					})
					if err != nil && !errors.Is(err, table.ErrConditionFailed) {
						return err
					}
				}
				return nil
			}})
			// Several processes start at once (Lambda cold starts).
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := migrate.Up(ctx, tb, v2); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if v, err := migrate.Version(ctx, tb); err != nil || v != 2 {
				t.Fatalf("format %d %v, want 2", v, err)
			}
			for _, u := range []string{"a", "b", "c"} {
				it, err := tb.Get(ctx, table.Key{PK: "new#" + u, SK: "name"})
				if err != nil || string(it.Data) != "name-"+u {
					t.Fatalf("record %s after upgrade: %v %v", u, it, err)
				}
			}
			if runs.Load() < 1 {
				t.Fatal("the upgrade step never ran")
			}
			// Opening again does nothing; an older release refuses newer data.
			before := runs.Load()
			if err := migrate.Up(ctx, tb, v2); err != nil || runs.Load() != before {
				t.Fatalf("second start re-ran steps: %v", err)
			}
			if err := migrate.Up(ctx, tb, v1); err == nil || !strings.Contains(err.Error(), "newer") {
				t.Fatalf("old release on new data: %v", err)
			}
		})
	}
}

func TestStepsMustIncrease(t *testing.T) {
	tb := testtable.Open(t, "bolt")
	bad := []migrate.Step{{To: 2, Run: func(context.Context, table.Table) error { return nil }}, {To: 1, Run: func(context.Context, table.Table) error { return nil }}}
	if err := migrate.Up(context.Background(), tb, bad); err == nil {
		t.Fatal("out-of-order steps accepted")
	}
}
