package fanout_test

import (
	"context"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/fanout"
	"github.com/cirrus-matrix/cirrus/core/migrate"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestStartAtHead: a store from before the fan-out worker (format 1, events
// in the stream, no cursor) is migrated to a cursor at the stream's head, so
// its history is not replayed; a new store starts at 0; an existing cursor
// is never moved.
func TestStartAtHead(t *testing.T) {
	for _, engine := range []string{"bolt", "dynamo"} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			cursorOf := func(tb table.Table) int64 {
				t.Helper()
				it, err := tb.Get(ctx, table.Key{PK: "fanout", SK: "cursor"})
				if err != nil {
					t.Fatalf("cursor: %v", err)
				}
				return it.Num
			}

			fresh := testtable.Open(t, engine)
			if err := migrate.Up(ctx, fresh, migrate.Steps); err != nil {
				t.Fatal(err)
			}
			if got := cursorOf(fresh); got != 0 {
				t.Fatalf("new store: cursor %d, want 0", got)
			}

			old := testtable.Open(t, engine)
			if err := migrate.Up(ctx, old, migrate.Steps[:1]); err != nil { // format 1
				t.Fatal(err)
			}
			events := &stream.Stream{T: old, Name: rooms.EventsStream}
			for range 7 {
				if _, err := events.Append(ctx, func(int64) ([]byte, []table.Op, error) { return []byte(`{}`), nil, nil }); err != nil {
					t.Fatal(err)
				}
			}
			if err := migrate.Up(ctx, old, migrate.Steps); err != nil {
				t.Fatal(err)
			}
			if got := cursorOf(old); got != 7 {
				t.Fatalf("upgraded store: cursor %d, want the head 7", got)
			}
			// Running the step again (a concurrent start) changes nothing.
			if _, err := events.Append(ctx, func(int64) ([]byte, []table.Op, error) { return []byte(`{}`), nil, nil }); err != nil {
				t.Fatal(err)
			}
			if err := fanout.StartAtHead(ctx, old); err != nil {
				t.Fatal(err)
			}
			if got := cursorOf(old); got != 7 {
				t.Fatalf("second run moved the cursor to %d", got)
			}
		})
	}
}
