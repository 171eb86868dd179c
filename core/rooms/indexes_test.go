package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

func threadReply(root id.EventID, body string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	return b
}

// TestThreadIndexUnderConcurrency: writers on several engine instances reply
// in a few threads at once. The thread index must end with exactly one
// entry per thread, at its latest reply, and the summaries must count every
// reply: the index moves in the replies' own transactions, guarded by the
// room head.
func TestThreadIndexUnderConcurrency(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			svcs := newEngines(t, testtable.Open(t, engine), 3)
			alice := id.UserID("@alice:cirrus.test")
			room, err := svcs[0].CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			var roots []id.EventID
			for i := range 3 {
				r, err := svcs[0].Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg(fmt.Sprintf("root %d", i))})
				if err != nil {
					t.Fatal(err)
				}
				roots = append(roots, r)
			}
			const writers, each = 6, 5
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						root := roots[(w+i)%len(roots)]
						if _, err := svcs[w%len(svcs)].Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: threadReply(root, fmt.Sprintf("%d/%d", w, i))}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			v := rooms.Viewer{UserID: alice}
			got, _, more, err := svcs[1].Threads(ctx, rooms.ThreadsQuery{Room: room, Limit: 10}, v)
			if err != nil || more || len(got) != len(roots) {
				t.Fatalf("threads: %d roots (more %v) %v", len(got), more, err)
			}
			// Most recently active first: compare with each thread's last reply.
			var prevLatest int64 = 1 << 62
			total := 0
			for _, root := range got {
				replies, _, _, err := svcs[2].Relations(ctx, room, alice, rooms.RelationsQuery{Parent: root.EventID, RelType: "m.thread", Dir: rooms.Backward, Limit: 100})
				if err != nil || len(replies) == 0 {
					t.Fatalf("replies of %s: %v", root.EventID, err)
				}
				if replies[0].Seq >= prevLatest {
					t.Fatalf("threads out of order: latest %d after %d", replies[0].Seq, prevLatest)
				}
				prevLatest = replies[0].Seq
				total += len(replies)
				f, err := svcs[2].Format(ctx, []*rooms.Event{root}, v)
				if err != nil {
					t.Fatal(err)
				}
				th := f[0].Unsigned["m.relations"].(map[string]any)["m.thread"].(map[string]any)
				if th["count"] != len(replies) || th["latest_event"].(rooms.ClientEvent).EventID != replies[0].EventID {
					t.Fatalf("summary of %s: %v, replies %d", root.EventID, th, len(replies))
				}
			}
			if total != writers*each {
				t.Fatalf("%d replies indexed, %d sent", total, writers*each)
			}
			// The time index finds the first reply by its timestamp.
			first, _, _, err := svcs[0].Relations(ctx, room, alice, rooms.RelationsQuery{Parent: got[len(got)-1].EventID, RelType: "m.thread", Dir: rooms.Forward, Limit: 1})
			if err != nil || len(first) != 1 {
				t.Fatal(err)
			}
			near, err := svcs[0].EventNearTime(ctx, alice, room, first[0].OriginServerTS, rooms.Forward)
			if err != nil || near == nil || near.OriginServerTS != first[0].OriginServerTS {
				t.Fatalf("event near %d: %+v %v", first[0].OriginServerTS, near, err)
			}
		})
	}
}
