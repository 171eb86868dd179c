package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Items the engine keeps beside each event, written in the event's own
// transaction, so the room head's IfVersion guards them exactly as it guards
// the timeline (a writer that read stale index items loses the head race):
//
//	room#<!r> / ts#<%016d origin_server_ts>#<%016d seq> → event id
//	    the room's time index: /timestamp_to_event is one range query
//	room#<!r> / throot#<$root> → Num = seq of the thread's latest event
//	room#<!r> / thrseq#<%016d seq> → root id
//	    thread roots by latest activity: /threads is one reverse range query;
//	    a reply moves its thread from its old thrseq item to a new one
//
// A redaction also removes the redacted event's relation item, so redacted
// children drop out of /relations and bundled aggregations.
func tsSK(ts, seq int64) string           { return fmt.Sprintf("ts#%016d#%016d", max(ts, 0), seq) }
func threadRootSK(root id.EventID) string { return "throot#" + string(root) }
func threadSeqSK(seq int64) string        { return fmt.Sprintf("thrseq#%016d", seq) }

// indexOps returns the index writes that go with persisting ev.
func (s *Service) indexOps(ctx context.Context, ev *Event) ([]table.Op, error) {
	pk := roomPK(ev.RoomID)
	ops := []table.Op{table.Put(table.Item{PK: pk, SK: tsSK(ev.OriginServerTS, ev.Seq), Data: []byte(ev.EventID), Num: ev.Seq}, table.Cond{})}
	if rel := relationOf(ev); rel != nil && rel.RelType == "m.thread" {
		root, err := s.Event(ctx, rel.Parent)
		if err == nil && root.RoomID == ev.RoomID && !root.IsState() && relationOf(root) == nil {
			ptr := table.Key{PK: pk, SK: threadRootSK(root.EventID)}
			cur, err := s.T.Get(ctx, ptr)
			switch {
			case err == nil && cur.Num >= ev.Seq:
				// A reply committed after we read the head: ours would lose
				// the head race anyway, so rebuild on the new head now.
				return nil, errRetry
			case err == nil:
				ops = append(ops, table.Delete(table.Key{PK: pk, SK: threadSeqSK(cur.Num)}, table.Cond{}))
			case !errors.Is(err, table.ErrNotFound):
				return nil, err
			}
			ops = append(ops,
				table.Put(table.Item{PK: pk, SK: ptr.SK, Num: ev.Seq, Data: []byte(root.EventID)}, table.Cond{}),
				table.Put(table.Item{PK: pk, SK: threadSeqSK(ev.Seq), Data: []byte(root.EventID), Num: ev.Seq}, table.Cond{}))
		}
	}
	if ev.Type == "m.room.redaction" && ev.Redacts != "" {
		target, err := s.Event(ctx, ev.Redacts)
		if err == nil && target.RoomID == ev.RoomID {
			if rel := relationOf(target); rel != nil {
				ops = append(ops, table.Delete(table.Key{PK: relPK(rel.Parent), SK: rel.sortKey(target.Seq, target.EventID)}, table.Cond{}))
			}
		}
	}
	return ops, nil
}

// EventNearTime finds the event closest to ts that u may see: the first at
// or after ts (dir Forward) or the last at or before it (Backward), by
// origin_server_ts. It reads the room's time index, so the cost is one
// range query plus the events it has to skip for visibility (nil if none).
func (s *Service) EventNearTime(ctx context.Context, u id.UserID, r id.RoomID, ts int64, dir byte) (*Event, error) {
	return s.EventNearTimeFor(ctx, r, ts, dir, func(ctx context.Context, evs []*Event) ([]*Event, error) {
		return s.CanSee(ctx, u, evs)
	})
}

// EventNearTimeFor is EventNearTime with the visibility check given (keep
// returns the events the asker may see): federation asks for a server.
func (s *Service) EventNearTimeFor(ctx context.Context, r id.RoomID, ts int64, dir byte, keep func(context.Context, []*Event) ([]*Event, error)) (*Event, error) {
	q := table.Query{PK: roomPK(r), Limit: 50}
	if dir == Forward {
		q.From, q.To = tsSK(ts, 0), "ts#9999999999999999#9999999999999999"
	} else {
		q.From, q.To, q.Reverse = "ts#", tsSK(ts, 9999999999999999), true
	}
	if ts < 0 {
		if dir == Backward {
			return nil, nil
		}
		q.From = "ts#"
	}
	for scanned := 0; scanned < 1000; {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		ids := make([]id.EventID, len(page.Items))
		for i, it := range page.Items {
			ids[i] = id.EventID(it.Data)
		}
		scanned += len(ids)
		evs, err := s.EventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		if vis, err := keep(ctx, evs); err != nil {
			return nil, err
		} else if len(vis) > 0 {
			return vis[0], nil
		}
		if page.Next == "" {
			return nil, nil
		}
		q.Cursor = page.Next
	}
	return nil, nil
}

// ThreadsQuery selects thread roots of one room.
type ThreadsQuery struct {
	Room id.RoomID
	// Before, when HasBefore, keeps threads whose latest event has a sequence
	// at most Before (a "t<seq>" token).
	Before    int64
	HasBefore bool
	// Participated keeps only threads the viewer started or replied in.
	Participated bool
	Limit        int
}

// Threads lists thread roots, the most recently active first. next is the
// position to continue from; more is false at the end.
func (s *Service) Threads(ctx context.Context, tq ThreadsQuery, v Viewer) (roots []*Event, next int64, more bool, err error) {
	q := table.Query{PK: roomPK(tq.Room), From: "thrseq#", To: "thrseq#9999999999999999", Reverse: true}
	if tq.HasBefore {
		if tq.Before < 1 {
			return nil, 0, false, nil
		}
		q.To = threadSeqSK(tq.Before)
	}
	for len(roots) < tq.Limit {
		q.Limit = tq.Limit - len(roots)
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, 0, false, err
		}
		ids := make([]id.EventID, len(page.Items))
		latest := map[id.EventID]int64{}
		for i, it := range page.Items {
			ids[i] = id.EventID(it.Data)
			latest[ids[i]] = it.Num
			next = it.Num - 1
		}
		evs, err := s.EventsByID(ctx, ids)
		if err != nil {
			return nil, 0, false, err
		}
		vis, err := s.CanSee(ctx, v.UserID, evs)
		if err != nil {
			return nil, 0, false, err
		}
		for _, root := range vis {
			if tq.Participated {
				ok, err := s.participated(ctx, root, v.UserID)
				if err != nil {
					return nil, 0, false, err
				}
				if !ok {
					continue
				}
			}
			roots = append(roots, root)
		}
		if page.Next == "" {
			return roots, next, false, nil
		}
		q.Cursor = page.Next
	}
	return roots, next, true, nil
}

// participated reports whether u sent the thread root or a reply in it.
func (s *Service) participated(ctx context.Context, root *Event, u id.UserID) (bool, error) {
	if root.Sender == u {
		return true, nil
	}
	q := table.Query{PK: relPK(root.EventID), Prefix: "m.thread#"}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return false, err
		}
		for _, it := range page.Items {
			var r relation
			if json.Unmarshal(it.Data, &r) == nil && r.Sender == u {
				return true, nil
			}
		}
		if page.Next == "" {
			return false, nil
		}
		q.Cursor = page.Next
	}
}

// otherRoom reports whether parent is a known event of another room than
// r: relations across rooms are invalid and are not recorded.
func (s *Service) otherRoom(ctx context.Context, parent id.EventID, r id.RoomID) bool {
	p, err := s.Event(ctx, parent)
	return err == nil && p.RoomID != r
}

// TimestampQueryOf reads a timestamp_to_event request's ts and dir (the
// same parameters in the client-server and server-server APIs).
func TimestampQueryOf(r *httpapi.Request) (ts int64, dir byte, err error) {
	q := r.URL.Query()
	if !q.Has("ts") {
		return 0, 0, httpapi.MissingParam("ts is required")
	}
	if ts, err = strconv.ParseInt(q.Get("ts"), 10, 64); err != nil {
		return 0, 0, httpapi.InvalidParam("ts must be an integer (milliseconds since the Unix epoch)")
	}
	switch q.Get("dir") {
	case "f":
		return ts, Forward, nil
	case "b":
		return ts, Backward, nil
	case "":
		return 0, 0, httpapi.MissingParam("dir is required")
	}
	return 0, 0, httpapi.InvalidParam("dir must be f or b")
}
