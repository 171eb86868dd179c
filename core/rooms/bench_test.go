package rooms_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// countingTable counts the write calls the engine makes and the
// transactions that lose a race (a condition failure or conflict), so the
// benchmarks can report what each send costs besides time.
type countingTable struct {
	table.Table
	adds, puts, txs, txFails atomic.Int64
}

// Unwrap lets the stream find the engine's table.Sequencer.
func (c *countingTable) Unwrap() table.Table { return c.Table }

func (c *countingTable) Add(ctx context.Context, k table.Key, d int64) (int64, error) {
	c.adds.Add(1)
	return c.Table.Add(ctx, k, d)
}

func (c *countingTable) Put(ctx context.Context, it table.Item, cond table.Cond) error {
	c.puts.Add(1)
	return c.Table.Put(ctx, it, cond)
}

func (c *countingTable) Transact(ctx context.Context, ops []table.Op) error {
	c.txs.Add(1)
	err := c.Table.Transact(ctx, ops)
	if err != nil {
		c.txFails.Add(1)
	}
	return err
}

// benchRooms builds an engine on a fresh bbolt file (fsync on unless noSync)
// with nRooms rooms and nUsers users joined to all of them.
func benchRooms(b *testing.B, noSync bool, nRooms, nUsers int) (*rooms.Service, *countingTable, []id.RoomID, []id.UserID) {
	b.Helper()
	var opts []bolt.Option
	if noSync {
		opts = append(opts, bolt.WithNoSync())
	}
	db, err := bolt.Open(filepath.Join(b.TempDir(), "cirrus.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	ct := &countingTable{Table: db.Table()}
	key, err := signing.Generate()
	if err != nil {
		b.Fatal(err)
	}
	svc := rooms.New(ct, "bench.test", key, nil, nil)
	ctx := context.Background()
	users := make([]id.UserID, nUsers)
	for i := range users {
		users[i] = id.UserID(fmt.Sprintf("@user%02d:bench.test", i))
	}
	var rs []id.RoomID
	for range nRooms {
		r, err := svc.CreateRoom(ctx, rooms.CreateRequest{Creator: users[0], Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range users[1:] {
			if _, err := svc.Join(ctx, r, u, ""); err != nil {
				b.Fatal(err)
			}
		}
		rs = append(rs, r)
	}
	return svc, ct, rs, users
}

func reportSend(b *testing.B, ct *countingTable, before [4]int64) {
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "sends/s")
	b.ReportMetric(float64(ct.txs.Load()-before[0])/n, "tx/send")
	b.ReportMetric(float64(ct.txFails.Load()-before[1])/n, "lost-races/send")
	b.ReportMetric(float64(ct.adds.Load()-before[2]+ct.puts.Load()-before[3])/n, "other-writes/send")
}

func snapshot(ct *countingTable) [4]int64 {
	return [4]int64{ct.txs.Load(), ct.txFails.Load(), ct.adds.Load(), ct.puts.Load()}
}

// BenchmarkSend measures rooms.Service.Send on bbolt: one sender in one
// room, and 8 concurrent senders over 5 rooms (the `make bench` load), with
// fsync and without it (what the engine costs in CPU alone). Profile with
//
//	go test -run '^$' -bench Send -cpuprofile cpu.prof ./core/rooms
func BenchmarkSend(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		name := "fsync"
		if !fsync {
			name = "nosync"
		}
		b.Run("serial/"+name, func(b *testing.B) {
			svc, ct, rs, users := benchRooms(b, !fsync, 1, 1)
			ctx := context.Background()
			before := snapshot(ct)
			i := 0
			for b.Loop() {
				i++
				if _, err := svc.Send(ctx, rs[0], rooms.NewEvent{Type: "m.room.message", Sender: users[0], Content: msg("hello"),
					TxnID: fmt.Sprint(i), Device: "DEV"}); err != nil {
					b.Fatal(err)
				}
			}
			reportSend(b, ct, before)
		})
		b.Run("8senders-5rooms/"+name, func(b *testing.B) {
			svc, ct, rs, users := benchRooms(b, !fsync, 5, 20)
			ctx := context.Background()
			before := snapshot(ct)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						k := int(next.Add(1)) - 1
						if k >= b.N {
							return
						}
						u := users[k%len(users)]
						r := rs[(k/len(users))%len(rs)]
						if _, err := svc.Send(ctx, r, rooms.NewEvent{Type: "m.room.message", Sender: u, Content: msg("hello"),
							TxnID: fmt.Sprint(k), Device: "DEV"}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			reportSend(b, ct, before)
		})
	}
}
