package bolt_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

var benchData = []byte(`{"type":"m.room.message","content":{"body":"hello there","msgtype":"m.text"},"sender":"@a:b"}`)

func reportRate(b *testing.B, unit string) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

// BenchmarkPut measures one goroutine writing small items, each its own
// durable commit.
func BenchmarkPut(b *testing.B) {
	db, _ := open(b)
	ctx := b.Context()
	for i := 0; b.Loop(); i++ {
		it := table.Item{PK: "room!bench", SK: fmt.Sprintf("ev/%09d", i), GPK: "user@x", GSK: fmt.Sprintf("%09d", i), Data: benchData}
		if err := db.Put(ctx, it, table.IfNotExists()); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, "writes/s")
}

// BenchmarkPutParallel measures 4 and 16 goroutines writing small items,
// with the group committer and, for comparison, with bbolt's DB.Batch.
func BenchmarkPutParallel(b *testing.B) {
	modes := []struct {
		name string
		opts []bolt.Option
	}{
		{"committer", nil},
		{"boltbatch-200us", []bolt.Option{bolt.WithBoltBatch(200 * time.Microsecond)}},
	}
	for _, par := range []int{2, 8} {
		for _, m := range modes {
			b.Run(fmt.Sprintf("g%d/%s", 2*par, m.name), func(b *testing.B) {
				db, _ := open(b, m.opts...)
				ctx := b.Context()
				var seq atomic.Int64
				b.SetParallelism(par)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := seq.Add(1)
						it := table.Item{PK: fmt.Sprintf("room!%d", i%64), SK: fmt.Sprintf("ev/%09d", i), Data: benchData}
						if err := db.Put(ctx, it, table.IfNotExists()); err != nil {
							b.Fatal(err)
						}
					}
				})
				reportRate(b, "writes/s")
			})
		}
	}
}

// BenchmarkTransactParallel measures 16 goroutines each appending an event
// and bumping its room's stream counter in one transaction.
func BenchmarkTransactParallel(b *testing.B) {
	db, _ := open(b)
	ctx := b.Context()
	var seq atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			room := fmt.Sprintf("room!%d", i%64)
			ops := []table.Op{
				table.Put(table.Item{PK: room, SK: fmt.Sprintf("ev/%09d", i), GPK: "user@x", GSK: fmt.Sprintf("%09d", i), Data: benchData}, table.IfNotExists()),
				table.Add(table.Key{PK: room, SK: "stream"}, 1, table.Cond{}),
			}
			if err := db.Transact(ctx, ops); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportRate(b, "tx/s")
}

func seedRoom(b *testing.B, tb table.Table, n int) {
	ctx := b.Context()
	for start := 0; start < n; start += table.MaxTxItems {
		var ops []table.Op
		for i := start; i < min(n, start+table.MaxTxItems); i++ {
			ops = append(ops, table.Put(table.Item{PK: "room!bench", SK: fmt.Sprintf("ev/%09d", i), Data: benchData}, table.Cond{}))
		}
		if err := tb.Transact(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetParallel measures concurrent point reads.
func BenchmarkGetParallel(b *testing.B) {
	db, _ := open(b)
	seedRoom(b, db, 10000)
	ctx := b.Context()
	var seq atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := table.Key{PK: "room!bench", SK: fmt.Sprintf("ev/%09d", seq.Add(1)%10000)}
			if _, err := db.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
	})
	reportRate(b, "reads/s")
}

// BenchmarkQuery measures reading pages of 50 items in reverse.
func BenchmarkQuery(b *testing.B) {
	db, _ := open(b)
	seedRoom(b, db, 10000)
	ctx := b.Context()
	for i := 0; b.Loop(); i++ {
		page, err := db.Query(ctx, table.Query{PK: "room!bench", To: fmt.Sprintf("ev/%09d", (i*97)%10000), Reverse: true, Limit: 50})
		if err != nil {
			b.Fatal(err)
		}
		if len(page.Items) == 0 {
			b.Fatal("empty page")
		}
	}
	reportRate(b, "pages/s")
}
