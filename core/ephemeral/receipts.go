package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Receipt types.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
	// ThreadMain is the thread id of the main timeline.
	ThreadMain = "main"
)

// Receipts live in the room's partition, one item per (type, thread, user):
//
//	room#<!r> / rcpt#<type>\x1f<thread>\x1f<user>   d = Receipt, n = stream position
func receiptKey(r id.RoomID, typ, thread string, u id.UserID) table.Key {
	return table.Key{PK: roomPK(r), SK: "rcpt#" + typ + "\x1f" + thread + "\x1f" + string(u)}
}

// Receipt is one user's receipt of one type (and thread) in a room. It is
// also the receipts stream's entry.
type Receipt struct {
	RoomID   id.RoomID  `json:"room_id"`
	UserID   id.UserID  `json:"user_id"`
	Type     string     `json:"type"`
	ThreadID string     `json:"thread_id,omitempty"`
	EventID  id.EventID `json:"event_id"`
	TS       int64      `json:"ts"`
	// Seq is the event's place in the room's timeline (receipts only move
	// forward).
	Seq int64 `json:"seq"`
}

// Private reports whether only the receipt's owner may see it.
func (r *Receipt) Private() bool { return r.Type == ReceiptReadPrivate }

// PutReceipt moves u's receipt of type typ (in thread, "" = unthreaded) to
// the event at room sequence seq. A receipt never moves backwards: one for an
// earlier (or the same) event is accepted and ignored.
func (s *Service) PutReceipt(ctx context.Context, r id.RoomID, u id.UserID, typ, thread string, ev id.EventID, seq int64) error {
	return s.putReceipt(ctx, Receipt{RoomID: r, UserID: u, Type: typ, ThreadID: thread, EventID: ev, Seq: seq})
}

// putReceipt stores a receipt (TS zero: now).
func (s *Service) putReceipt(ctx context.Context, in Receipt) error {
	r, u, typ, thread, seq := in.RoomID, in.UserID, in.Type, in.ThreadID, in.Seq
	k := receiptKey(r, typ, thread, u)
	for attempt := 0; attempt < 20; attempt++ {
		cond := table.IfNotExists()
		var version int64
		it, err := s.T.Get(ctx, k)
		switch {
		case errors.Is(err, table.ErrNotFound):
		case err != nil:
			return err
		default:
			var cur Receipt
			if err := json.Unmarshal(it.Data, &cur); err != nil {
				return err
			}
			if cur.Seq >= seq {
				return nil
			}
			cond, version = table.IfVersion(it.Version), it.Version
		}
		rc := in
		if rc.TS == 0 {
			rc.TS = s.Now().UnixMilli()
		}
		d, _ := json.Marshal(rc)
		_, err = s.Receipts.Append(ctx, func(pos int64) ([]byte, []table.Op, error) {
			return d, []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d, Num: pos, Version: version + 1}, cond)}, nil
		})
		var txe *table.TxError
		if errors.As(err, &txe) {
			continue
		}
		if err != nil {
			return err
		}
		s.notify(s.Receipts.Name)
		s.localReceipt(ctx, rc)
		if s.OnReceipt != nil {
			s.OnReceipt(ctx, rc)
		}
		return nil
	}
	return httpapi.LimitExceeded(100).With("error", "receipts are changing too fast")
}

// RoomReceipts returns every receipt in a room (for initial syncs).
func (s *Service) RoomReceipts(ctx context.Context, r id.RoomID) ([]Receipt, error) {
	q := table.Query{PK: roomPK(r), Prefix: "rcpt#"}
	var out []Receipt
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var rc Receipt
			if err := json.Unmarshal(it.Data, &rc); err != nil {
				return nil, err
			}
			out = append(out, rc)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// ReadUpTo returns, per room, the room sequence up to which u has read the
// main timeline: the furthest of their m.read and m.read.private receipts,
// unthreaded or for the main thread (0 when there is none).
func (s *Service) ReadUpTo(ctx context.Context, u id.UserID, rooms []id.RoomID) (map[id.RoomID]Receipt, error) {
	var keys []table.Key
	for _, r := range rooms {
		for _, typ := range []string{ReceiptRead, ReceiptReadPrivate} {
			for _, th := range []string{"", ThreadMain} {
				keys = append(keys, receiptKey(r, typ, th, u))
			}
		}
	}
	items, err := s.T.GetMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := map[id.RoomID]Receipt{}
	for _, it := range items {
		var rc Receipt
		if err := json.Unmarshal(it.Data, &rc); err != nil {
			return nil, err
		}
		if cur, ok := out[rc.RoomID]; !ok || rc.Seq > cur.Seq {
			out[rc.RoomID] = rc
		}
	}
	return out, nil
}

// ReceiptContent builds an m.receipt event's content from receipts (later
// ones win for the same user, type and thread).
func ReceiptContent(rs []Receipt) map[id.EventID]map[string]map[id.UserID]map[string]any {
	type slot struct {
		u        id.UserID
		typ, thr string
	}
	last := map[slot]Receipt{}
	var order []slot
	for _, r := range rs {
		k := slot{r.UserID, r.Type, r.ThreadID}
		if _, seen := last[k]; !seen {
			order = append(order, k)
		}
		last[k] = r
	}
	out := map[id.EventID]map[string]map[id.UserID]map[string]any{}
	for _, k := range order {
		r := last[k]
		byType := out[r.EventID]
		if byType == nil {
			byType = map[string]map[id.UserID]map[string]any{}
			out[r.EventID] = byType
		}
		users := byType[r.Type]
		if users == nil {
			users = map[id.UserID]map[string]any{}
			byType[r.Type] = users
		}
		info := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			info["thread_id"] = r.ThreadID
		}
		users[r.UserID] = info
	}
	return out
}

// ValidThreadID reports whether a receipt's thread_id is acceptable: "main"
// or an event id.
func ValidThreadID(t string) bool {
	return t == ThreadMain || strings.HasPrefix(t, "$") && len(t) > 1 && len(t) <= 255
}
