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

// TestPipelinedSends: on the embedded engine one service's senders into a
// room build on each other's in-flight events (Send's pipelining). With
// messages, state events, thread replies and redactions mixed, every
// acknowledged event must be stored once, the room's sequence dense, the
// DAG linear, stream order equal to room order with no gap, current state
// the last state event's, and the thread index one entry per thread.
func TestPipelinedSends(t *testing.T) {
	ctx := context.Background()
	tb := testtable.Open(t, "bolt")
	svc := newEngines(t, tb, 1)[0]
	alice := id.UserID("@alice:cirrus.test")
	room, err := svc.CreateRoom(ctx, rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var roots []id.EventID
	for i := range 2 {
		r, err := svc.Send(ctx, room, rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg(fmt.Sprint("root ", i))})
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r)
	}
	before, _ := svc.LatestSeq(ctx, room)
	_, startPos, err := svc.Events.Read(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	const writers, each = 8, 20
	var (
		mu      sync.Mutex
		acked   = map[id.EventID]bool{}
		replies int
		wg      sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			var mine []id.EventID
			for i := range each {
				ne := rooms.NewEvent{Type: "m.room.message", Sender: alice, Content: msg(fmt.Sprintf("%d-%d", w, i)),
					TxnID: fmt.Sprintf("t%d-%d", w, i), Device: "DEV"}
				reply := false
				switch {
				case i%7 == 3:
					topic := ""
					ne.Type, ne.StateKey = "m.room.topic", &topic
					ne.Content, _ = json.Marshal(map[string]string{"topic": fmt.Sprintf("%d-%d", w, i)})
				case i%7 == 5:
					ne.Content = threadReply(roots[(w+i)%len(roots)], fmt.Sprintf("reply %d-%d", w, i))
					reply = true
				case i%7 == 6 && len(mine) > 0:
					ne.Type, ne.Redacts = "m.room.redaction", mine[len(mine)-1]
					ne.Content = json.RawMessage(`{}`)
				}
				eid, err := svc.Send(ctx, room, ne)
				if err != nil {
					t.Error(err)
					return
				}
				if ne.Type == "m.room.message" && !reply {
					mine = append(mine, eid)
				}
				mu.Lock()
				if acked[eid] {
					t.Errorf("event %s acknowledged twice", eid)
				}
				acked[eid] = true
				if reply {
					replies++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	last, _ := svc.LatestSeq(ctx, room)
	if last-before != writers*each {
		t.Fatalf("room grew by %d events, want %d", last-before, writers*each)
	}
	page, err := svc.Timeline(ctx, room, rooms.Forward, 0, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[id.EventID]bool{}
	var prevID id.EventID
	var prevPos int64
	var lastTopic *rooms.Event
	for i, ev := range page.Events {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		var p struct {
			Prev []id.EventID `json:"prev_events"`
		}
		_ = json.Unmarshal(ev.PDU, &p)
		if i > 0 && (len(p.Prev) != 1 || p.Prev[0] != prevID) {
			t.Fatalf("event %d: prev_events %v, want [%s] (DAG not linear)", i, p.Prev, prevID)
		}
		if ev.Pos <= prevPos {
			t.Fatalf("event %d: stream position %d not after %d", i, ev.Pos, prevPos)
		}
		if ev.Type == "m.room.topic" {
			lastTopic = ev
		}
		prevID, prevPos = ev.EventID, ev.Pos
		seen[ev.EventID] = true
	}
	for eid := range acked {
		if !seen[eid] {
			t.Fatalf("acknowledged event %s missing from the timeline", eid)
		}
	}
	// The stream holds the new events in room order, with nothing skipped.
	entries, _, err := svc.Events.Read(ctx, startPos, 0)
	if err != nil {
		t.Fatal(err)
	}
	fresh := page.Events[before:]
	if len(entries) != len(fresh) {
		t.Fatalf("stream has %d new entries, room %d", len(entries), len(fresh))
	}
	for i, e := range entries {
		var se rooms.StreamEntry
		if err := json.Unmarshal(e.Data, &se); err != nil || se.EventID != fresh[i].EventID || e.Pos != fresh[i].Pos {
			t.Fatalf("stream entry %d: %s at %d, room has %s at %d", i, se.EventID, e.Pos, fresh[i].EventID, fresh[i].Pos)
		}
	}
	cur, err := svc.CurrentStateEvent(ctx, room, "m.room.topic", "")
	if err != nil || lastTopic == nil || cur.EventID != lastTopic.EventID {
		t.Fatalf("current topic %v (%v), last topic event %v", cur, err, lastTopic)
	}
	v := rooms.Viewer{UserID: alice}
	got, _, _, err := svc.Threads(ctx, rooms.ThreadsQuery{Room: room, Limit: 10}, v)
	if err != nil || len(got) != len(roots) {
		t.Fatalf("threads: %d roots, %v", len(got), err)
	}
	total := 0
	for _, root := range got {
		rs, _, _, err := svc.Relations(ctx, room, alice, rooms.RelationsQuery{Parent: root.EventID, RelType: "m.thread", Dir: rooms.Backward, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		total += len(rs)
	}
	if total != replies {
		t.Fatalf("%d thread replies indexed, %d sent", total, replies)
	}
}
