package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/push"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/stream"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/core/userdata"
	"github.com/cirrus-matrix/cirrus/internal/testtable"
)

// failingPuts fails its failAt-th Put (counting from 1; 0: none), as a
// worker that dies or times out half way through an event would.
type failingPuts struct {
	table.Table
	n, failAt atomic.Int64
}

var errInjected = errors.New("injected failure")

func (f *failingPuts) Put(ctx context.Context, it table.Item, c table.Cond) error {
	if f.n.Add(1) == f.failAt.Load() {
		return errInjected
	}
	return f.Table.Put(ctx, it, c)
}

// TestEvaluateRedeliveryCountsOnce: the push handler stopped by a failure
// at any of its writes, then run again (the fan-out worker retries; SQS may
// deliver twice more), leaves exactly one notification and one unread count
// per member and event, and the room in the unread-change stream.
func TestEvaluateRedeliveryCountsOnce(t *testing.T) {
	for _, engine := range testtable.Engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tb := testtable.Open(t, engine)
			key, err := signing.Generate()
			if err != nil {
				t.Fatal(err)
			}
			rs := rooms.New(tb, "cirrus.test", key, nil, nil)
			alice := id.UserID("@alice:cirrus.test")
			members := []id.UserID{"@bob:cirrus.test", "@carol:cirrus.test", "@dave:cirrus.test"}
			room, err := rs.CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Version: "10", Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range members {
				if _, err := rs.Join(ctx, room, u, ""); err != nil {
					t.Fatal(err)
				}
			}
			flaky := &failingPuts{Table: tb}
			changes := &stream.Stream{T: flaky, Name: "unread"}
			ev := &push.Evaluator{T: flaky, Rooms: rs, Rules: &push.Rules{UserData: &userdata.Service{T: tb}},
				ServerName: "cirrus.test", Changes: changes, ChangeEntry: clientsync.UnreadChangedEntry}
			// Each member costs two writes (unread marker, notification),
			// the event one more (the change entry): fail at each in turn.
			writes := 2*len(members) + 1
			for failAt := 0; failAt <= writes; failAt++ {
				t.Run(fmt.Sprint("fail at write ", failAt), func(t *testing.T) {
					body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprint("hello ", failAt)})
					eid, err := rs.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: body})
					if err != nil {
						t.Fatal(err)
					}
					e, err := rs.Event(ctx, eid)
					if err != nil {
						t.Fatal(err)
					}
					headBefore, err := changes.Latest(ctx)
					if err != nil {
						t.Fatal(err)
					}
					flaky.n.Store(0)
					flaky.failAt.Store(int64(failAt))
					err = ev.Evaluate(ctx, e)
					if failAt > 0 && !errors.Is(err, errInjected) {
						t.Fatalf("first run: %v, want the injected failure", err)
					}
					if failAt == 0 && err != nil {
						t.Fatal(err)
					}
					flaky.failAt.Store(0)
					for range 2 { // the retry, and one more redelivery
						if err := ev.Evaluate(ctx, e); err != nil {
							t.Fatal(err)
						}
					}
					for _, u := range members {
						n, h, err := push.Counts(ctx, tb, u, room, e.Seq-1, 100)
						if err != nil || n != 1 || h != 0 {
							t.Errorf("%s: counts %d/%d %v, want 1/0", u, n, h, err)
						}
						list, _, err := push.List(ctx, tb, u, 0, 100, false)
						if err != nil {
							t.Fatal(err)
						}
						got := 0
						for _, nt := range list {
							if nt.EventID == eid {
								got++
							}
						}
						if got != 1 {
							t.Errorf("%s: %d notifications of the event, want 1", u, got)
						}
					}
					if n, _, _ := push.Counts(ctx, tb, alice, room, e.Seq-1, 100); n != 0 {
						t.Errorf("the sender counted %d", n)
					}
					entries, _, err := changes.Read(ctx, headBefore, 100)
					if err != nil {
						t.Fatal(err)
					}
					found := false
					for _, en := range entries {
						var ref userdata.AccountDataRef
						if json.Unmarshal(en.Data, &ref) == nil && ref.RoomID == room {
							found = true
						}
					}
					if !found {
						t.Errorf("room missing from the unread-change stream: %d entries", len(entries))
					}
				})
			}
		})
	}
}
