package rooms

// History fetched from other servers after a join (backfill). A room joined
// over federation starts its sequence at JoinedSeqBase, so older events found
// later can take the sequences below the earliest one: /messages tokens
// (t<seq>) keep their order and a client paginating backwards simply finds
// more events below its token. Backfilled events are historical: they have
// a place in the timeline but no stream position (sync does not announce
// them as new), they are not forward extremities and never change the
// current state, and nothing is sent or pushed for them.

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// JoinedSeqBase is the first room sequence of a room joined over federation;
// the sequences below it are kept for backfilled history.
const JoinedSeqBase int64 = 1 << 40

// EarliestEvent returns the room's oldest timeline event (nil for an empty
// timeline).
func (s *Service) EarliestEvent(ctx context.Context, r id.RoomID) (*Event, error) {
	page, err := s.T.Query(ctx, table.Query{PK: roomPK(r), From: "seq#", To: "seq#9999999999999999", Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(page.Items) == 0 {
		return nil, nil
	}
	return s.Event(ctx, id.EventID(page.Items[0].Data))
}

// InTimeline reports which of the given events this server holds with a
// place in the timeline (not as outliers, not rejected or soft-failed).
func (s *Service) InTimeline(ctx context.Context, ids []id.EventID) (map[id.EventID]bool, error) {
	evs, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := map[id.EventID]bool{}
	for _, ev := range evs {
		if !ev.Outlier && !ev.Rejected && !ev.SoftFailed && ev.Seq != 0 {
			out[ev.EventID] = true
		}
	}
	return out, nil
}

// PersistBackfilled stores events older than the room's earliest timeline
// event, given newest first (each already checked by federation): each gets
// the sequence just below the current earliest one. base is the state
// before the oldest of them (from the server they came from): each event's
// state is base plus the state events of the batch older than it, which is
// exact for a linear history. Without base (nil) their state is taken to
// be the state before the earliest event, the oldest state this server
// knows. Events already in the timeline are skipped. It returns the events
// stored, newest first.
func (s *Service) PersistBackfilled(ctx context.Context, r id.RoomID, rv id.RoomVersion, evs []Outlier, base StateMap) ([]*Event, error) {
	oldestFirst := slices.Clone(evs)
	slices.Reverse(oldestFirst)
	states, err := s.historyStates(ctx, oldestFirst, base)
	if err != nil {
		return nil, err
	}
	var out []*Event
	for i, o := range evs {
		raw, err := storedPDU(o.PDU)
		if err != nil {
			continue
		}
		var stored *Event
		for attempt := 0; attempt < maxAttempts && stored == nil; attempt++ {
			ev, done, err := s.tryBackfillOne(ctx, r, rv, o.EventID, raw, states(len(evs)-1-i))
			if err == errRetry {
				backoff(attempt)
				continue
			}
			if err != nil {
				return out, err
			}
			if done {
				break // held already, or no room below the earliest event
			}
			stored = ev
		}
		if stored != nil {
			out = append(out, stored)
		}
	}
	return out, nil
}

// historyStates writes the state group of base (the state before the
// oldest of evs, given oldest first) and returns, for the event at index
// i, its state group parent and state: base plus the accepted state
// events of evs older than it, exact for a linear history. Without base
// it returns a function answering nil (the events then take the state the
// caller has for them).
func (s *Service) historyStates(ctx context.Context, evs []Outlier, base StateMap) (func(i int) *backfillState, error) {
	if base == nil || len(evs) == 0 {
		return func(int) *backfillState { return nil }, nil
	}
	// One snapshot of base; the events' groups are deltas over it (state
	// only grows or is replaced going forward, so they stay deltas).
	g, ops, err := s.groupFromState(ctx, "sg:k:"+string(evs[0].EventID), "", base)
	if err != nil {
		return nil, err
	}
	for chunk := range slices.Chunk(ops, table.MaxTxItems) {
		if err := s.T.Transact(ctx, chunk); err != nil {
			return nil, err
		}
	}
	// changes[i]: the state events older than evs[i] in the batch.
	changes := make([]map[pdu.StateKey]id.EventID, len(evs))
	cum := map[pdu.StateKey]id.EventID{}
	for i, o := range evs {
		changes[i] = maps.Clone(cum)
		if p := o.PDU; p.StateKey != nil && !o.Rejected {
			cum[pdu.StateKey{Type: p.Type, StateKey: *p.StateKey}] = o.EventID
		}
	}
	return func(i int) *backfillState {
		if len(changes[i]) == 0 {
			return &backfillState{base: g} // base itself: no map to build
		}
		st := maps.Clone(base)
		maps.Copy(st, changes[i])
		return &backfillState{base: g, state: st}
	}, nil
}

// historyGroup returns the state group for one history event's state (st
// nil: fallback, with no operations).
func (s *Service) historyGroup(ctx context.Context, eid id.EventID, st *backfillState, fallback string) (string, []table.Op, error) {
	switch {
	case st == nil:
		return fallback, nil, nil
	case st.state == nil:
		return st.base, nil, nil
	}
	return s.groupFromState(ctx, "sg:k:"+string(eid), st.base, st.state)
}

// backfillState is the state before one history event: the full state, to
// be stored as a group over base (nil: base itself).
type backfillState struct {
	base  string
	state StateMap
}

// tryBackfillOne places one event below the earliest. done without an
// event means there is nothing to do for it. st, if set, is the event's
// state (else it takes the earliest event's).
func (s *Service) tryBackfillOne(ctx context.Context, r id.RoomID, rv id.RoomVersion, eid id.EventID, raw []byte, st *backfillState) (*Event, bool, error) {
	cond, ver := table.IfNotExists(), int64(1)
	it, err := s.T.Get(ctx, eventKey(eid))
	switch {
	case err == nil:
		old, err := decodeEvent(it)
		if err != nil {
			return nil, false, err
		}
		if !old.Outlier {
			return nil, true, nil
		}
		cond, ver = table.IfVersion(it.Version), it.Version+1
	case !errors.Is(err, table.ErrNotFound):
		return nil, false, err
	}
	first, err := s.EarliestEvent(ctx, r)
	if err != nil {
		return nil, false, err
	}
	if first == nil || first.Seq <= 1 {
		return nil, true, nil // no sequence left below (a room created here)
	}
	ev := &Event{RoomID: r, RoomVersion: rv, EventID: eid, PDU: raw, Seq: first.Seq - 1, StateBefore: first.StateBefore}
	if err := ev.parse(); err != nil {
		return nil, true, nil
	}
	var gops []table.Op
	if ev.StateBefore, gops, err = s.historyGroup(ctx, eid, st, first.StateBefore); err != nil {
		return nil, false, err
	}
	d, _ := json.Marshal(ev)
	ek := eventKey(eid)
	pk := roomPK(r)
	ops := append([]table.Op{
		table.Put(table.Item{PK: ek.PK, SK: ek.SK, Data: d, Version: ver}, cond),
		table.Put(table.Item{PK: pk, SK: seqSK(ev.Seq), Data: []byte(eid)}, table.IfNotExists()),
		table.Put(table.Item{PK: pk, SK: tsSK(ev.OriginServerTS, ev.Seq), Data: []byte(eid), Num: ev.Seq}, table.Cond{}),
	}, gops...)
	if rel := relationOf(ev); rel != nil && rel.RelType != "m.thread" && !s.otherRoom(ctx, rel.Parent, r) {
		rd, _ := json.Marshal(rel)
		ops = append(ops, table.Put(table.Item{PK: relPK(rel.Parent), SK: rel.sortKey(ev.Seq, eid), Data: rd}, table.IfNotExists()))
		if _, err := s.T.Get(ctx, eventKey(rel.Parent)); err == nil {
			ops = append(ops, table.Add(eventKey(rel.Parent), 1, table.IfExists()))
		}
	}
	if err := s.T.Transact(ctx, ops); err != nil {
		var txe *table.TxError
		if errors.As(err, &txe) || errors.Is(err, table.ErrConflict) || errors.Is(err, table.ErrConditionFailed) {
			return nil, false, errRetry // another writer took the sequence or the event
		}
		return nil, false, err
	}
	return ev, false, nil
}
