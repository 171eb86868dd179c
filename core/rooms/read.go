package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Event loads one event (M_NOT_FOUND if unknown).
func (s *Service) Event(ctx context.Context, e id.EventID) (*Event, error) {
	it, err := s.T.Get(ctx, eventKey(e))
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.NotFound("event not found")
	}
	if err != nil {
		return nil, err
	}
	return decodeEvent(it)
}

// EventsByID loads events in the order given, skipping unknown ones.
func (s *Service) EventsByID(ctx context.Context, ids []id.EventID) ([]*Event, error) {
	out := make([]*Event, 0, len(ids))
	for start := 0; start < len(ids); start += table.MaxBatchGet {
		end := min(start+table.MaxBatchGet, len(ids))
		keys := make([]table.Key, 0, end-start)
		for _, e := range ids[start:end] {
			keys = append(keys, eventKey(e))
		}
		items, err := s.T.GetMany(ctx, keys)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			ev, err := decodeEvent(it)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
	}
	return out, nil
}

// Viewer says who is reading, for unsigned.transaction_id and visibility.
type Viewer struct {
	UserID id.UserID
	Device id.DeviceID
}

// ClientEvent is an event in the client-server format.
type ClientEvent struct {
	Type           string          `json:"type"`
	Content        json.RawMessage `json:"content"`
	EventID        id.EventID      `json:"event_id"`
	Sender         id.UserID       `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         id.RoomID       `json:"room_id,omitempty"`
	StateKey       *string         `json:"state_key,omitempty"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// Format turns events into the client format: redactions applied (with
// redacted_because), unsigned age, transaction_id for the sending device,
// prev_content for state, and bundled relations.
func (s *Service) Format(ctx context.Context, evs []*Event, v Viewer) ([]ClientEvent, error) {
	var redactionIDs []id.EventID
	for _, ev := range evs {
		if ev.RedactedBy != "" {
			redactionIDs = append(redactionIDs, ev.RedactedBy)
		}
	}
	redactions := map[id.EventID]*Event{}
	if len(redactionIDs) > 0 {
		rs, err := s.EventsByID(ctx, redactionIDs)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			redactions[r.EventID] = r
		}
	}
	bundles, err := s.bundledRelations(ctx, evs, v)
	if err != nil {
		return nil, err
	}
	now := s.Now().UnixMilli()
	out := make([]ClientEvent, 0, len(evs))
	for _, ev := range evs {
		ce := ClientEvent{Type: ev.Type, Content: ev.Content, EventID: ev.EventID, Sender: ev.Sender,
			OriginServerTS: ev.OriginServerTS, RoomID: ev.RoomID, StateKey: ev.StateKey}
		if ev.Type == "m.room.redaction" {
			ce.Redacts = ev.Redacts
		}
		u := map[string]any{"age": max(now-ev.OriginServerTS, 0)}
		if ev.TxnID != "" && ev.Sender == v.UserID && id.DeviceID(ev.TxnDevice) == v.Device {
			u["transaction_id"] = ev.TxnID
		}
		if ev.Replaces != nil {
			u["prev_content"] = ev.Replaces.Content
			u["prev_sender"] = ev.Replaces.Sender
			u["replaces_state"] = ev.Replaces.EventID
		}
		if ev.RedactedBy != "" {
			ce.Content = redactContent(ev)
			if r := redactions[ev.RedactedBy]; r != nil {
				rc, err := s.Format(ctx, []*Event{r}, v)
				if err == nil && len(rc) == 1 {
					u["redacted_because"] = rc[0]
				}
			}
			delete(u, "prev_content")
		}
		// A redacted event keeps its thread and references (never its edits).
		if b := bundles[ev.EventID]; b != nil {
			u["m.relations"] = b
		}
		ce.Unsigned = u
		out = append(out, ce)
	}
	return out, nil
}

// Direction of a timeline read.
const (
	Backward = 'b'
	Forward  = 'f'
)

// TimelinePage is a page of a room's timeline.
type TimelinePage struct {
	Events []*Event
	// Next is the sequence to continue from (exclusive), 0 at the end.
	Next int64
}

// Timeline reads a room's events by sequence: backward from before `from`
// (exclusive; 0 = from the newest) or forward from after `from`, at most
// limit events, stopping at `to` (exclusive, 0 = no bound).
func (s *Service) Timeline(ctx context.Context, r id.RoomID, dir byte, from, to int64, limit int) (*TimelinePage, error) {
	q := table.Query{PK: roomPK(r), Limit: limit, Reverse: dir == Backward}
	if dir == Backward {
		q.From = "seq#"
		if to > 0 {
			q.From = seqSK(to + 1)
		}
		q.To = "seq#9999999999999999"
		if from > 0 {
			q.To = seqSK(from - 1)
		}
	} else {
		q.From = seqSK(from + 1)
		q.To = "seq#9999999999999999"
		if to > 0 {
			q.To = seqSK(to - 1)
		}
	}
	if q.From > q.To {
		return &TimelinePage{}, nil
	}
	page, err := s.T.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	ids := make([]id.EventID, len(page.Items))
	for i, it := range page.Items {
		ids[i] = id.EventID(it.Data)
	}
	evs, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	tp := &TimelinePage{Events: evs}
	if page.Next != "" && len(evs) > 0 {
		tp.Next = evs[len(evs)-1].Seq
	}
	return tp, nil
}

// LatestSeq is the room's newest sequence number.
func (s *Service) LatestSeq(ctx context.Context, r id.RoomID) (int64, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return 0, err
	}
	return h.seq, nil
}
