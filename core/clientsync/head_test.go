package clientsync

import (
	"context"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// TestHeadAndCheckpoint: the head of a stream stops before a slot still
// being written, and the checkpoint lets later heads read only the tail.
func TestHeadAndCheckpoint(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			tb := testtable.Open(t, engine)
			ctx := context.Background()
			s := &Service{T: tb}
			st := &stream.Stream{T: tb, Name: "test", Grace: time.Hour}
			appendN := func(n int) {
				for range n {
					if _, err := st.Append(ctx, func(int64) ([]byte, []table.Op, error) { return []byte("x"), nil, nil }); err != nil {
						t.Fatal(err)
					}
				}
			}
			appendN(300)
			h, err := s.head(ctx, st)
			if err != nil || h != 300 {
				t.Fatalf("head %d %v", h, err)
			}
			mark, err := tb.Get(ctx, markKey(st))
			if err != nil || mark.Num != 300 {
				t.Fatalf("checkpoint %+v %v", mark, err)
			}
			// A slot allocated but not committed: the head stops before it.
			p, err := st.Allocate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			appendN(5)
			if h, _ := s.head(ctx, st); h != p-1 {
				t.Fatalf("head %d passed the open slot %d", h, p)
			}
			if err := tb.Transact(ctx, []table.Op{st.ClaimOp(p, []byte("late"))}); err != nil {
				t.Fatal(err)
			}
			if h, _ := s.head(ctx, st); h != p+5 {
				t.Fatalf("head %d after the slot committed, want %d", h, p+5)
			}
			// A checkpoint never moves back.
			s.moveMark(ctx, st, 10)
			if m, _ := tb.Get(ctx, markKey(st)); m.Num != 300 {
				t.Fatalf("checkpoint moved back to %d", m.Num)
			}
			// A reader whose scan crosses a multiple of markEvery moves it.
			appendN(300)
			s.crossedMark(ctx, st, 500, 505) // no multiple crossed
			if m, _ := tb.Get(ctx, markKey(st)); m.Num != 300 {
				t.Fatalf("checkpoint moved without crossing: %d", m.Num)
			}
			s.crossedMark(ctx, st, p+5, 606)
			if m, _ := tb.Get(ctx, markKey(st)); m.Num != 606 {
				t.Fatalf("checkpoint after crossing: %d", m.Num)
			}
		})
	}
}
