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

// RelationsQuery selects children of one event. Positions are timeline
// positions as in "t<seq>" tokens: position N lies between the room's events
// N and N+1.
type RelationsQuery struct {
	Parent    id.EventID
	RelType   string // "" = all
	EventType string // "" = all
	Dir       byte
	// From is where reading starts (HasFrom; else the newest child going
	// backward, the oldest going forward); To where it stops (HasTo).
	From, To       int64
	HasFrom, HasTo bool
	Limit          int
	Recurse        bool
}

// MaxRelationDepth is how many levels of relations a recursive read
// follows (the spec asks for at least 3).
const MaxRelationDepth = 3

// Relations returns the children of an event, in the direction asked, that
// viewer u may see. next is the position to continue from; more is false
// when nothing is left.
func (s *Service) Relations(ctx context.Context, room id.RoomID, u id.UserID, rq RelationsQuery) (evs []*Event, next int64, more bool, err error) {
	rels, err := s.collectRelations(ctx, rq)
	if err != nil {
		return nil, 0, false, err
	}
	sortRels(rels, rq.Dir == Backward)
	var picked []relation
	for _, r := range rels {
		if rq.EventType != "" && r.Type != rq.EventType || rq.RelType != "" && r.RelType != rq.RelType {
			continue
		}
		if rq.Dir == Backward {
			if rq.HasFrom && r.Seq > rq.From || rq.HasTo && r.Seq <= rq.To {
				continue
			}
		} else if rq.HasFrom && r.Seq <= rq.From || rq.HasTo && r.Seq > rq.To {
			continue
		}
		picked = append(picked, r)
	}
	if rq.Limit > 0 && len(picked) > rq.Limit {
		picked = picked[:rq.Limit]
		more = true
		next = picked[len(picked)-1].Seq
		if rq.Dir == Backward {
			next--
		}
	}
	ids := make([]id.EventID, len(picked))
	for i, r := range picked {
		ids[i] = r.EventID
	}
	loaded, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, 0, false, err
	}
	same := loaded[:0]
	for _, ev := range loaded {
		if ev.RoomID == room {
			same = append(same, ev)
		}
	}
	evs, err = s.CanSee(ctx, u, same)
	return evs, next, more, err
}

// collectRelations reads the relation items under rq.Parent: one prefix
// query for a single relation type, or (recursing) every child down to
// MaxRelationDepth levels, whatever their type, as the filters apply to the
// whole set.
func (s *Service) collectRelations(ctx context.Context, rq RelationsQuery) ([]relation, error) {
	var out []relation
	seen := map[id.EventID]bool{rq.Parent: true}
	level := []id.EventID{rq.Parent}
	depth := 1
	if rq.Recurse {
		depth = MaxRelationDepth
	}
	for d := 0; d < depth && len(level) > 0; d++ {
		var nextLevel []id.EventID
		for _, parent := range level {
			q := table.Query{PK: relPK(parent)}
			if rq.RelType != "" && !rq.Recurse {
				q.Prefix = rq.RelType + "#"
			}
			for {
				page, err := s.T.Query(ctx, q)
				if err != nil {
					return nil, err
				}
				for _, it := range page.Items {
					var r relation
					if err := json.Unmarshal(it.Data, &r); err != nil {
						return nil, err
					}
					if seen[r.EventID] {
						continue
					}
					seen[r.EventID] = true
					out = append(out, r)
					nextLevel = append(nextLevel, r.EventID)
				}
				if page.Next == "" {
					break
				}
				q.Cursor = page.Next
			}
		}
		level = nextLevel
	}
	return out, nil
}

func sortRels(rels []relation, desc bool) {
	sort.SliceStable(rels, func(i, j int) bool {
		if desc {
			return rels[i].Seq > rels[j].Seq
		}
		return rels[i].Seq < rels[j].Seq
	})
}

// childRelations reads every relation item under one parent.
func (s *Service) childRelations(ctx context.Context, parent id.EventID) ([]relation, error) {
	var rels []relation
	q := table.Query{PK: relPK(parent)}
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
			return rels, nil
		}
		q.Cursor = page.Next
	}
}

// validEdit reports whether edit is a valid replacement of orig (spec
// "Validity of replacement events"): same room, sender and type, neither a
// state event, the original not itself an edit, and m.new_content present
// (which only the client can check in an encrypted edit).
func validEdit(orig, edit *Event) bool {
	if edit.RoomID != orig.RoomID || edit.Sender != orig.Sender || edit.Type != orig.Type ||
		edit.IsState() || orig.IsState() || edit.RedactedBy != "" {
		return false
	}
	if r := relationOf(orig); r != nil && r.RelType == "m.replace" {
		return false
	}
	if edit.Type == "m.room.encrypted" {
		return true
	}
	var c struct {
		NewContent json.RawMessage `json:"m.new_content"`
	}
	return json.Unmarshal(edit.Content, &c) == nil && len(c.NewContent) > 0 && c.NewContent[0] == '{'
}

// bundledRelations computes unsigned["m.relations"] (spec "Aggregations of
// child events") for the events that have children: m.replace is the most
// recent valid edit (by origin_server_ts, then event id), never for a
// redacted original, and the original's content is left as it is;
// m.thread is the latest reply (topologically), the reply count and whether
// the viewer took part; m.reference lists the referring events. State events
// and edits or annotations themselves get none.
func (s *Service) bundledRelations(ctx context.Context, evs []*Event, v Viewer) (map[id.EventID]map[string]any, error) {
	out := map[id.EventID]map[string]any{}
	for _, ev := range evs {
		if ev.relCount == 0 || ev.IsState() {
			continue
		}
		if r := relationOf(ev); r != nil && (r.RelType == "m.replace" || r.RelType == "m.annotation") {
			continue
		}
		rels, err := s.childRelations(ctx, ev.EventID)
		if err != nil {
			return nil, err
		}
		b := map[string]any{}
		var edits []id.EventID
		var lastThread id.EventID
		threadCount := 0
		participated := false
		refs := []map[string]id.EventID{}
		for _, r := range rels {
			switch r.RelType {
			case "m.replace":
				if r.Sender == ev.Sender && r.Type == ev.Type && ev.RedactedBy == "" {
					edits = append(edits, r.EventID)
				}
			case "m.thread":
				threadCount++
				lastThread = r.EventID // items sort by sequence
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
		var bestEdit *Event
		if len(edits) > 0 {
			loaded, err := s.EventsByID(ctx, edits)
			if err != nil {
				return nil, err
			}
			for _, e := range loaded {
				if !validEdit(ev, e) {
					continue
				}
				if bestEdit == nil || e.OriginServerTS > bestEdit.OriginServerTS ||
					e.OriginServerTS == bestEdit.OriginServerTS && e.EventID > bestEdit.EventID {
					bestEdit = e
				}
			}
		}
		if bestEdit != nil {
			if f, err := s.Format(ctx, []*Event{bestEdit}, v); err == nil && len(f) == 1 {
				b["m.replace"] = f[0]
			}
		}
		if lastThread != "" {
			got, err := s.EventsByID(ctx, []id.EventID{lastThread})
			if err != nil {
				return nil, err
			}
			if len(got) == 1 {
				if f, err := s.Format(ctx, got, v); err == nil && len(f) == 1 {
					b["m.thread"] = map[string]any{"latest_event": f[0], "count": threadCount, "current_user_participated": participated}
				}
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
