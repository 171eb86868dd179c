package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// State groups record a room's state over time. Each state event starts a
// new group: its id is "sg:" + the event id, and it stores only what
// changed (one key) and its parent. Every snapshotEvery groups, the group
// stores the whole state instead, so reading the state at any event walks
// at most snapshotEvery items. Groups never change, so they are cached
// forever once read.
const snapshotEvery = 64

// snapshotChunk bounds the state entries per snapshot item (item ≤ 400 KB).
const snapshotChunk = 2000

type stateGroup struct {
	Prev  string            `json:"prev,omitempty"`
	Depth int               `json:"depth"`
	Delta map[string]string `json:"delta,omitempty"` // "type\x1fstate_key" → event id
	Full  bool              `json:"full,omitempty"`
	// Chunks is the number of snapshot items of a full group.
	Chunks int `json:"chunks,omitempty"`
}

func groupKey(g string) table.Key { return table.Key{PK: "sg#" + g, SK: "group"} }
func groupChunk(g string, i int) table.Key {
	return table.Key{PK: "sg#" + g, SK: fmt.Sprintf("chunk#%04d", i)}
}

func joinKey(typ, skey string) string { return typ + "\x1f" + skey }

// newStateGroup returns the group started by state event ev over parent,
// and the operations that store it.
func (s *Service) newStateGroup(ctx context.Context, ev *Event, parent string) (string, []table.Op, error) {
	g := "sg:" + string(ev.EventID)
	sg := stateGroup{Prev: parent, Delta: map[string]string{joinKey(ev.Type, *ev.StateKey): string(ev.EventID)}}
	if parent != "" {
		pg, err := s.loadGroup(ctx, parent)
		if err != nil {
			return "", nil, err
		}
		sg.Depth = pg.Depth + 1
	}
	if parent == "" || sg.Depth >= snapshotEvery {
		full := map[string]string{}
		if parent != "" {
			st, err := s.groupState(ctx, parent)
			if err != nil {
				return "", nil, err
			}
			for k, v := range st {
				full[k] = v
			}
		}
		full[joinKey(ev.Type, *ev.StateKey)] = string(ev.EventID)
		ops, err := s.fullGroupOps(ctx, g, full)
		return g, ops, err
	}
	d, _ := json.Marshal(sg)
	k := groupKey(g)
	return g, []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{})}, nil
}

// fullGroupOps stores a whole state as a snapshot group. Big snapshots are
// written at once (their chunks are immutable and harmless unused); only
// the group item is left for the caller's transaction.
func (s *Service) fullGroupOps(ctx context.Context, g string, full map[string]string) ([]table.Op, error) {
	var ops []table.Op
	sg := stateGroup{Full: true}
	chunk := map[string]string{}
	flush := func() {
		d, _ := json.Marshal(chunk)
		k := groupChunk(g, sg.Chunks)
		ops = append(ops, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}))
		sg.Chunks++
		chunk = map[string]string{}
	}
	keys := slices.Sorted(maps.Keys(full))
	for _, k := range keys {
		chunk[k] = full[k]
		if len(chunk) >= snapshotChunk {
			flush()
		}
	}
	if len(chunk) > 0 || sg.Chunks == 0 {
		flush()
	}
	if len(ops) > 4 {
		for _, op := range ops {
			if err := s.T.Put(ctx, op.Item, table.Cond{}); err != nil {
				return nil, err
			}
		}
		ops = nil
	}
	d, _ := json.Marshal(sg)
	k := groupKey(g)
	return append(ops, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{})), nil
}

func (s *Service) loadGroup(ctx context.Context, g string) (*stateGroup, error) {
	if v, ok := s.groups.Load(g); ok {
		return v.(*stateGroup), nil
	}
	it, err := s.T.Get(ctx, groupKey(g))
	if err != nil {
		return nil, fmt.Errorf("state group %s: %w", g, err)
	}
	var sg stateGroup
	if err := json.Unmarshal(it.Data, &sg); err != nil {
		return nil, err
	}
	s.groups.Store(g, &sg)
	return &sg, nil
}

// groupState returns the whole state of a group ("type\x1fkey" → event id).
// The result is shared: do not modify it.
func (s *Service) groupState(ctx context.Context, g string) (map[string]string, error) {
	if g == "" {
		return map[string]string{}, nil
	}
	sg, err := s.loadGroup(ctx, g)
	if err != nil {
		return nil, err
	}
	if st, ok := s.resolved.Load(g); ok {
		return st.(map[string]string), nil
	}
	var st map[string]string
	if sg.Full {
		st = map[string]string{}
		keys := make([]table.Key, sg.Chunks)
		for i := range keys {
			keys[i] = groupChunk(g, i)
		}
		items, err := s.T.GetMany(ctx, keys)
		if err != nil {
			return nil, err
		}
		if len(items) != sg.Chunks {
			return nil, fmt.Errorf("state group %s: %d of %d chunks", g, len(items), sg.Chunks)
		}
		for _, it := range items {
			var part map[string]string
			if err := json.Unmarshal(it.Data, &part); err != nil {
				return nil, err
			}
			for k, v := range part {
				st[k] = v
			}
		}
	} else {
		parent, err := s.groupState(ctx, sg.Prev)
		if err != nil {
			return nil, err
		}
		st = make(map[string]string, len(parent)+len(sg.Delta))
		for k, v := range parent {
			st[k] = v
		}
		for k, v := range sg.Delta {
			st[k] = v
		}
	}
	// Groups never change, so whichever goroutine resolves one first
	// publishes it; later ones share that map.
	if prev, loaded := s.resolved.LoadOrStore(g, st); loaded {
		st = prev.(map[string]string)
	}
	return st, nil
}

// StateIDsAt returns the state before (or, with after, including) an event
// as (type, state_key) → event id.
func (s *Service) StateIDsAt(ctx context.Context, ev *Event, after bool) (map[pdu.StateKey]id.EventID, error) {
	g := ev.StateBefore
	if after && ev.StateAfter != "" {
		g = ev.StateAfter
	}
	st, err := s.groupState(ctx, g)
	if err != nil {
		return nil, err
	}
	out := make(map[pdu.StateKey]id.EventID, len(st))
	for k, v := range st {
		typ, skey := splitJoined(k)
		out[pdu.StateKey{Type: typ, StateKey: skey}] = id.EventID(v)
	}
	return out, nil
}

func splitJoined(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == 0x1f {
			return k[:i], k[i+1:]
		}
	}
	return k, ""
}

// currentStateFor reads the current state entries for the given keys.
func (s *Service) currentStateFor(ctx context.Context, r id.RoomID, keys pdu.AuthEventSelection) (map[pdu.StateKey]*stateEntry, error) {
	tk := make([]table.Key, len(keys))
	for i, k := range keys {
		tk[i] = stateKey(r, k.Type, k.StateKey)
	}
	items, err := s.T.GetMany(ctx, tk)
	if err != nil {
		return nil, err
	}
	out := make(map[pdu.StateKey]*stateEntry, len(items))
	for _, it := range items {
		var se stateEntry
		if err := json.Unmarshal(it.Data, &se); err != nil {
			return nil, err
		}
		typ, skey := splitStateSK(it.SK)
		out[pdu.StateKey{Type: typ, StateKey: skey}] = &se
	}
	return out, nil
}

// CurrentState returns a room's current state events, optionally only one type.
func (s *Service) CurrentState(ctx context.Context, r id.RoomID, typ string) ([]*Event, error) {
	prefix := "state#"
	if typ != "" {
		prefix += typ + "\x1f"
	}
	q := table.Query{PK: roomPK(r), Prefix: prefix}
	var ids []id.EventID
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var se stateEntry
			if err := json.Unmarshal(it.Data, &se); err != nil {
				return nil, err
			}
			ids = append(ids, se.EventID)
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	return s.EventsByID(ctx, ids)
}

// CurrentStateEvent returns one current state event (nil if unset).
func (s *Service) CurrentStateEvent(ctx context.Context, r id.RoomID, typ, skey string) (*Event, error) {
	it, err := s.T.Get(ctx, stateKey(r, typ, skey))
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var se stateEntry
	if err := json.Unmarshal(it.Data, &se); err != nil {
		return nil, err
	}
	return s.Event(ctx, se.EventID)
}

// Membership returns a user's current membership in a room ("" if none).
func (s *Service) Membership(ctx context.Context, r id.RoomID, u id.UserID) (string, error) {
	it, err := s.T.Get(ctx, stateKey(r, "m.room.member", string(u)))
	if errors.Is(err, table.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var se stateEntry
	if err := json.Unmarshal(it.Data, &se); err != nil {
		return "", err
	}
	return se.Membership, nil
}

// UserRooms lists a local user's memberships (all kinds).
func (s *Service) UserRooms(ctx context.Context, u id.UserID) ([]MembershipRecord, error) {
	q := table.Query{PK: "user#" + string(u), Prefix: "mship#"}
	var out []MembershipRecord
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var m MembershipRecord
			if err := json.Unmarshal(it.Data, &m); err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}
