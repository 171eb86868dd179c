package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// relation is one child → parent link, stored under the parent's partition
// (rel#<parent>, sort key <rel_type>#<seq>) so the children of one type come
// back in order with one query.
type relation struct {
	Parent  id.EventID `json:"parent"`
	RelType string     `json:"rel_type"`
	EventID id.EventID `json:"event_id"`
	Type    string     `json:"type"`
	Sender  id.UserID  `json:"sender"`
	Key     string     `json:"key,omitempty"`
	Seq     int64      `json:"seq"`
}

func (r *relation) sortKey(seq int64, e id.EventID) string {
	return fmt.Sprintf("%s#%016d", r.RelType, seq)
}

// relationOf returns the event's m.relates_to link, if it has a valid one.
func relationOf(ev *Event) *relation {
	if ev.IsState() || ev.Type == "m.room.redaction" {
		return nil
	}
	var c struct {
		RelatesTo *struct {
			RelType string     `json:"rel_type"`
			EventID id.EventID `json:"event_id"`
			Key     string     `json:"key"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType == "" || c.RelatesTo.EventID == "" {
		return nil
	}
	if strings.ContainsRune(c.RelatesTo.RelType, '#') {
		return nil
	}
	return &relation{Parent: c.RelatesTo.EventID, RelType: c.RelatesTo.RelType, EventID: ev.EventID,
		Type: ev.Type, Sender: ev.Sender, Key: c.RelatesTo.Key, Seq: ev.Seq}
}

// RelationsQuery selects children of one event.
type RelationsQuery struct {
	Parent    id.EventID
	RelType   string // "" = all
	EventType string // "" = all
	Dir       byte
	From, To  int64 // sequence bounds (exclusive), 0 = open
	Limit     int
	Recurse   bool
}

// Relations returns the children of an event, newest first for backward.
// next is the sequence to continue from, 0 at the end.
func (s *Service) Relations(ctx context.Context, rq RelationsQuery) (evs []*Event, next int64, err error) {
	var rels []relation
	var walk func(parent id.EventID, depth int) error
	walk = func(parent id.EventID, depth int) error {
		q := table.Query{PK: relPK(parent)}
		if rq.RelType != "" {
			q.Prefix = rq.RelType + "#"
		}
		for {
			page, err := s.T.Query(ctx, q)
			if err != nil {
				return err
			}
			for _, it := range page.Items {
				var r relation
				if err := json.Unmarshal(it.Data, &r); err != nil {
					return err
				}
				rels = append(rels, r)
				if rq.Recurse && depth < 3 {
					if err := walk(r.EventID, depth+1); err != nil {
						return err
					}
				}
			}
			if page.Next == "" {
				return nil
			}
			q.Cursor = page.Next
		}
	}
	if err := walk(rq.Parent, 1); err != nil {
		return nil, 0, err
	}
	// Order by sequence in the requested direction, then page.
	sortRels(rels, rq.Dir == Backward)
	var picked []relation
	for _, r := range rels {
		if rq.EventType != "" && r.Type != rq.EventType {
			continue
		}
		if rq.Dir == Backward {
			if rq.From > 0 && r.Seq >= rq.From || rq.To > 0 && r.Seq <= rq.To {
				continue
			}
		} else if rq.From > 0 && r.Seq <= rq.From || rq.To > 0 && r.Seq >= rq.To {
			continue
		}
		picked = append(picked, r)
	}
	if rq.Limit > 0 && len(picked) > rq.Limit {
		picked = picked[:rq.Limit]
		next = picked[len(picked)-1].Seq
	}
	ids := make([]id.EventID, len(picked))
	for i, r := range picked {
		ids[i] = r.EventID
	}
	evs, err = s.EventsByID(ctx, ids)
	return evs, next, err
}

func sortRels(rels []relation, desc bool) {
	sort.SliceStable(rels, func(i, j int) bool {
		if desc {
			return rels[i].Seq > rels[j].Seq
		}
		return rels[i].Seq < rels[j].Seq
	})
}

// bundledRelations computes unsigned["m.relations"] for events that have
// children: the latest valid edit, thread summaries and references.
func (s *Service) bundledRelations(ctx context.Context, evs []*Event, v Viewer) (map[id.EventID]map[string]any, error) {
	out := map[id.EventID]map[string]any{}
	for _, ev := range evs {
		if ev.relCount == 0 || ev.RedactedBy != "" {
			continue
		}
		var rels []relation
		q := table.Query{PK: relPK(ev.EventID)}
		for {
			page, err := s.T.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			for _, it := range page.Items {
				var r relation
				if err := json.Unmarshal(it.Data, &r); err == nil {
					rels = append(rels, r)
				}
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		b := map[string]any{}
		var lastEdit, lastThread id.EventID
		threadCount := 0
		participated := false
		var refs []map[string]id.EventID
		for _, r := range rels {
			switch r.RelType {
			case "m.replace":
				if r.Sender == ev.Sender && r.Type == ev.Type {
					lastEdit = r.EventID
				}
			case "m.thread":
				threadCount++
				lastThread = r.EventID
				if r.Sender == v.UserID {
					participated = true
				}
			case "m.reference":
				refs = append(refs, map[string]id.EventID{"event_id": r.EventID})
			}
		}
		if ev.Sender == v.UserID && threadCount > 0 {
			participated = true
		}
		want := []id.EventID{}
		if lastEdit != "" {
			want = append(want, lastEdit)
		}
		if lastThread != "" {
			want = append(want, lastThread)
		}
		got, err := s.EventsByID(ctx, want)
		if err != nil {
			return nil, err
		}
		for _, g := range got {
			f, err := s.Format(ctx, []*Event{g}, v)
			if err != nil || len(f) != 1 {
				continue
			}
			if g.EventID == lastEdit {
				b["m.replace"] = f[0]
			}
			if g.EventID == lastThread {
				b["m.thread"] = map[string]any{"latest_event": f[0], "count": threadCount, "current_user_participated": participated}
			}
		}
		if len(refs) > 0 {
			b["m.reference"] = map[string]any{"chunk": refs}
		}
		if len(b) > 0 {
			out[ev.EventID] = b
		}
	}
	return out, nil
}
