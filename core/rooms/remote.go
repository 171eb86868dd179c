package rooms

// Events from other servers. The local send path (persist.go) builds each
// event on top of the room head; events from other servers arrive with
// their own prev_events, so a room can have several forward extremities
// and its current state is then the resolution of their states. This file
// persists such events with the same transaction pattern as local sends
// (room head IfVersion + stream slot claim), stores outliers (events known
// only as auth chain or state, with no timeline position), and answers the
// questions federation asks of the room graph (auth chains, state at an
// event, walking back through prev_events, servers in a room).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// StateMap is a room state: (type, state_key) → event id.
type StateMap = map[pdu.StateKey]id.EventID

// ResolveFunc is state resolution: the state sets of several forward
// extremities (or prev events) in, one state out. fetch returns PDUs with
// InternalMeta.EventID and InternalMeta.Rejected set.
type ResolveFunc func(ctx context.Context, rv id.RoomVersion, stateSets []map[pdu.StateKey]id.EventID,
	fetch func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error)) (map[pdu.StateKey]id.EventID, error)

// Remote is what the engine needs from federation for memberships it cannot
// complete alone.
type Remote interface {
	// JoinRemote joins a local user to a room this server is not in,
	// through one of servers; content is the member event content wanted.
	JoinRemote(ctx context.Context, r id.RoomID, u id.UserID, servers []string, content map[string]any) (id.EventID, error)
	// LeaveRemote rejects an invite (or withdraws a knock) for a room this
	// server is not in.
	LeaveRemote(ctx context.Context, r id.RoomID, u id.UserID, reason string) error
	// SignInvite has the invitee's server countersign an invite event built
	// here; it returns the event as signed by both (same event id).
	SignInvite(ctx context.Context, rv id.RoomVersion, r id.RoomID, eventID id.EventID, raw []byte) ([]byte, error)
	// QueryAlias asks an alias's server which room it names and which
	// servers are in it.
	QueryAlias(ctx context.Context, a id.RoomAlias) (id.RoomID, []string, error)
}

// maxPrevEvents caps prev_events of new events (the spec allows 20 for
// received events; creators should stay well below).
const maxPrevEvents = 10

// capPrevEvents returns the prev_events for a new local event: every
// forward extremity, at most maxPrevEvents of them.
func capPrevEvents(ext []id.EventID) []id.EventID {
	if len(ext) > maxPrevEvents {
		return slices.Clone(ext[:maxPrevEvents])
	}
	return ext
}

// nextExtremities is the extremity set after ev: ev replaces its prev
// events, the others stay.
func nextExtremities(ext []id.EventID, ev *Event) []id.EventID {
	var f struct {
		Prev []id.EventID `json:"prev_events"`
	}
	if err := json.Unmarshal(ev.PDU, &f); err != nil {
		// v1/v2 references are [id, hashes] pairs (v1events.go).
		if p, err := parsePDU(ev.PDU); err == nil {
			f.Prev = p.PrevEvents
		}
	}
	out := []id.EventID{ev.EventID}
	for _, e := range ext {
		if e != ev.EventID && !slices.Contains(f.Prev, e) {
			out = append(out, e)
		}
	}
	return out
}

// ErrNoState is returned when an event's state is unknown (an outlier).
var ErrNoState = errors.New("rooms: state at event is unknown")

// ToPDU parses the stored PDU, with InternalMeta (event id, rejected) set.
func (e *Event) ToPDU() (*pdu.PDU, error) {
	p, err := parsePDU(e.PDU)
	if err != nil {
		return nil, err
	}
	p.InternalMeta.EventID = e.EventID
	p.InternalMeta.Rejected = e.Rejected
	return p, nil
}

// HasRoom reports whether this server holds a room (its head exists).
func (s *Service) HasRoom(ctx context.Context, r id.RoomID) (bool, error) {
	_, err := s.getHead(ctx, r)
	if errors.Is(err, ErrNoRoom) {
		return false, nil
	}
	return err == nil, err
}

// Extremities returns a room's forward extremities and greatest depth.
func (s *Service) Extremities(ctx context.Context, r id.RoomID) ([]id.EventID, int64, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	return h.Extremities, h.Depth, nil
}

func toStateMap(st map[string]string) StateMap {
	out := make(StateMap, len(st))
	for k, v := range st {
		typ, skey := splitJoined(k)
		out[pdu.StateKey{Type: typ, StateKey: skey}] = id.EventID(v)
	}
	return out
}

func fromStateMap(st StateMap) map[string]string {
	out := make(map[string]string, len(st))
	for k, v := range st {
		out[joinKey(k.Type, k.StateKey)] = string(v)
	}
	return out
}

// CurrentStateIDs returns the room's current state as ids.
func (s *Service) CurrentStateIDs(ctx context.Context, r id.RoomID) (StateMap, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return nil, err
	}
	st, err := s.groupState(ctx, h.StateGroup)
	if err != nil {
		return nil, err
	}
	return toStateMap(st), nil
}

// StateAfter returns the state after an event (the state before it for
// messages and rejected events).
func (s *Service) StateAfter(ctx context.Context, ev *Event) (StateMap, string, error) {
	if ev.Outlier {
		return nil, "", ErrNoState
	}
	g := ev.StateBefore
	if ev.StateAfter != "" && !ev.Rejected {
		g = ev.StateAfter
	}
	st, err := s.groupState(ctx, g)
	if err != nil {
		return nil, "", err
	}
	return toStateMap(st), g, nil
}

// StateBefore returns the state before an event.
func (s *Service) StateBefore(ctx context.Context, ev *Event) (StateMap, error) {
	if ev.Outlier {
		return nil, ErrNoState
	}
	st, err := s.groupState(ctx, ev.StateBefore)
	if err != nil {
		return nil, err
	}
	return toStateMap(st), nil
}

// FetchPDUs loads events as PDUs (unknown ids are left out): the fetch
// function for state resolution and event authorization.
func (s *Service) FetchPDUs(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	evs, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*pdu.PDU, 0, len(evs))
	for _, ev := range evs {
		p, err := ev.ToPDU()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ResolveState resolves several state sets into one (identical sets need
// no resolution). pending are events taking part that are not stored yet
// (the event being persisted): resolution must see them.
func (s *Service) ResolveState(ctx context.Context, rv id.RoomVersion, sets []StateMap, pending ...*pdu.PDU) (StateMap, error) {
	if len(sets) == 0 {
		return StateMap{}, nil
	}
	same := true
	for _, st := range sets[1:] {
		if !maps.Equal(st, sets[0]) {
			same = false
			break
		}
	}
	if same {
		return sets[0], nil
	}
	if s.Resolve == nil {
		return nil, fmt.Errorf("rooms: state resolution is not available")
	}
	in := make([]map[pdu.StateKey]id.EventID, len(sets))
	copy(in, sets)
	fetch := s.FetchPDUs
	if len(pending) > 0 {
		fetch = func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
			var out []*pdu.PDU
			var rest []id.EventID
			for _, e := range ids {
				found := false
				for _, p := range pending {
					if p.InternalMeta.EventID == e {
						out, found = append(out, p), true
						break
					}
				}
				if !found {
					rest = append(rest, e)
				}
			}
			stored, err := s.FetchPDUs(ctx, rest)
			return append(out, stored...), err
		}
	}
	out, err := s.Resolve(ctx, rv, in, fetch)
	s.Log.Debug("resolved state", "sets", len(sets), "err", err)
	return out, err
}

// MissingPrevError lists prev events this server does not hold (or holds
// only as outliers, without state).
type MissingPrevError struct{ Missing []id.EventID }

func (e *MissingPrevError) Error() string {
	return fmt.Sprintf("rooms: %d prev events unknown", len(e.Missing))
}

// StateBeforePrevs computes the state before an event from its prev events:
// the state after the one prev event, or the resolution of the states after
// each. known supplies the state after prev events this server does not
// hold (fetched from another server). group is set when an existing state
// group holds exactly that state.
func (s *Service) StateBeforePrevs(ctx context.Context, rv id.RoomVersion, prevs []id.EventID, known map[id.EventID]StateMap) (StateMap, string, error) {
	evs, err := s.EventsByID(ctx, prevs)
	if err != nil {
		return nil, "", err
	}
	byID := map[id.EventID]*Event{}
	for _, ev := range evs {
		byID[ev.EventID] = ev
	}
	var sets []StateMap
	var groups []string
	var missing []id.EventID
	for _, pid := range prevs {
		if st, ok := known[pid]; ok {
			sets, groups = append(sets, st), append(groups, "")
			continue
		}
		ev := byID[pid]
		if ev == nil || ev.Outlier {
			missing = append(missing, pid)
			continue
		}
		st, g, err := s.StateAfter(ctx, ev)
		if err != nil {
			return nil, "", err
		}
		sets, groups = append(sets, st), append(groups, g)
	}
	if len(missing) > 0 {
		return nil, "", &MissingPrevError{Missing: missing}
	}
	if len(sets) == 0 {
		return StateMap{}, "", nil
	}
	allSame := true
	for i := range sets[1:] {
		if groups[i+1] == "" || groups[i+1] != groups[0] {
			if !maps.Equal(sets[i+1], sets[0]) {
				allSame = false
				break
			}
		}
	}
	if allSame {
		return sets[0], groups[0], nil
	}
	st, err := s.ResolveState(ctx, rv, sets)
	if err != nil {
		return nil, "", err
	}
	for i, g := range groups {
		if g != "" && maps.Equal(st, sets[i]) {
			return st, g, nil
		}
	}
	return st, "", nil
}

// groupFromState returns a state group holding exactly st: parent itself
// when nothing changed, a delta over parent when st only adds or replaces
// keys, else a full snapshot named g.
func (s *Service) groupFromState(ctx context.Context, g, parent string, st StateMap) (string, []table.Op, error) {
	want := fromStateMap(st)
	if parent != "" {
		pst, err := s.groupState(ctx, parent)
		if err != nil {
			return "", nil, err
		}
		if maps.Equal(pst, want) {
			return parent, nil, nil
		}
		delta := map[string]string{}
		deleted := false
		for k := range pst {
			if _, ok := want[k]; !ok {
				deleted = true
				break
			}
		}
		for k, v := range want {
			if pst[k] != v {
				delta[k] = v
			}
		}
		pg, err := s.loadGroup(ctx, parent)
		if err != nil {
			return "", nil, err
		}
		if !deleted && pg.Depth+1 < snapshotEvery && len(delta) <= snapshotChunk/4 {
			d, _ := json.Marshal(stateGroup{Prev: parent, Depth: pg.Depth + 1, Delta: delta})
			k := groupKey(g)
			return g, []table.Op{table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{})}, nil
		}
	}
	ops, err := s.fullGroupOps(ctx, g, want)
	return g, ops, err
}

// storedPDU is the PDU as kept: canonical JSON without unsigned (which is
// the sender's business, not part of the signed event).
func storedPDU(p *pdu.PDU) ([]byte, error) {
	c := *p
	c.Unsigned = nil
	raw, err := EncodePDU(&c) // v1events.go: v1/v2 events keep their format
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxEventBytes {
		return nil, httpapi.TooLarge("event is %d bytes (max %d)", len(raw), MaxEventBytes)
	}
	return raw, nil
}

// Outlier is an event to keep without a place in the timeline.
type Outlier struct {
	EventID  id.EventID
	PDU      *pdu.PDU
	Rejected bool
}

// PersistOutliers stores events as outliers (ones already stored are left
// as they are).
func (s *Service) PersistOutliers(ctx context.Context, r id.RoomID, rv id.RoomVersion, evs []Outlier) error {
	var ids []id.EventID
	for _, o := range evs {
		ids = append(ids, o.EventID)
	}
	have, err := s.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	known := map[id.EventID]bool{}
	for _, ev := range have {
		known[ev.EventID] = true
	}
	var batch []table.Op
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.T.Transact(ctx, batch)
		if errors.Is(err, table.ErrConditionFailed) || errors.Is(err, table.ErrConflict) {
			// Someone stored some of them meanwhile: one at a time.
			for _, op := range batch {
				if err := s.T.Put(ctx, op.Item, op.Cond); err != nil && !errors.Is(err, table.ErrConditionFailed) {
					return err
				}
			}
			err = nil
		}
		batch = batch[:0]
		return err
	}
	for _, o := range evs {
		if known[o.EventID] {
			continue
		}
		known[o.EventID] = true
		raw, err := storedPDU(o.PDU)
		if err != nil {
			return err
		}
		ev := &Event{RoomID: r, RoomVersion: rv, EventID: o.EventID, PDU: raw, Outlier: true, Rejected: o.Rejected}
		if o.PDU.Type == "m.room.create" && o.PDU.RoomID == "" {
			ev.RoomID = r
		}
		d, _ := json.Marshal(ev)
		k := eventKey(o.EventID)
		batch = append(batch, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d, Version: 1}, table.IfNotExists()))
		if len(batch) >= 25 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// RemoteEvent is an event from another server, checked by federation, to
// persist.
type RemoteEvent struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	PDU         *pdu.PDU
	// StateBefore is the state before the event; BeforeGroup, if set, is
	// an existing state group holding exactly that state.
	StateBefore StateMap
	BeforeGroup string
	// Rejected events fail authorization; SoftFailed ones fail it only
	// against the current state. Both are stored but stay out of the
	// timeline, the current state and the forward extremities.
	Rejected   bool
	SoftFailed bool
	// ResetExtremities makes this event the room's only forward extremity
	// and its state the current state (rejoining a room whose copy here is
	// stale: the join's state comes from the resident server).
	ResetExtremities bool
}

// PersistRemote stores an event from another server. A timeline event
// becomes a forward extremity in place of its prev events, and the room's
// current state becomes the state after it (or, with several extremities,
// the resolution of theirs). Storing an event already held (not as an
// outlier) returns the stored one.
func (s *Service) PersistRemote(ctx context.Context, re RemoteEvent) (*Event, error) {
	raw, err := storedPDU(re.PDU)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ev, err := s.tryPersistRemote(ctx, re, raw)
		if err == errRetry {
			backoff(attempt)
			continue
		}
		return ev, err
	}
	return nil, httpapi.LimitExceeded(100).With("error", "room is too busy, try again")
}

func (s *Service) tryPersistRemote(ctx context.Context, re RemoteEvent, raw []byte) (*Event, error) {
	var outlierVersion int64
	it, err := s.T.Get(ctx, eventKey(re.EventID))
	switch {
	case err == nil:
		old, err := decodeEvent(it)
		if err != nil {
			return nil, err
		}
		if !old.Outlier {
			return old, nil
		}
		outlierVersion = it.Version
	case !errors.Is(err, table.ErrNotFound):
		return nil, err
	}
	h, err := s.getHead(ctx, re.RoomID)
	if err != nil {
		return nil, err
	}
	ev := &Event{RoomID: re.RoomID, RoomVersion: re.RoomVersion, EventID: re.EventID, PDU: raw,
		Rejected: re.Rejected, SoftFailed: re.SoftFailed}
	if err := ev.parse(); err != nil {
		return nil, err
	}
	var ops []table.Op
	before := re.BeforeGroup
	if before == "" {
		g, gops, err := s.groupFromState(ctx, "sg:b:"+string(re.EventID), h.StateGroup, re.StateBefore)
		if err != nil {
			return nil, err
		}
		before, ops = g, gops
	}
	ev.StateBefore = before
	if ev.IsState() {
		if prev := re.StateBefore[pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey}]; prev != "" {
			if pe, err := s.Event(ctx, prev); err == nil {
				ev.Replaces = &PrevState{EventID: prev, Sender: pe.Sender, Content: pe.Content}
			}
		}
	}
	eventCond := table.IfNotExists()
	eventVersion := int64(1)
	if outlierVersion != 0 {
		eventCond, eventVersion = table.IfVersion(outlierVersion), outlierVersion+1
	}

	if re.Rejected || re.SoftFailed {
		if re.SoftFailed && ev.IsState() {
			// Later events may name it as a prev event: keep its state.
			g, gops, err := s.newStateGroup(ctx, ev, before)
			if err != nil {
				return nil, err
			}
			ev.StateAfter = g
			ops = append(ops, gops...)
		}
		d, _ := json.Marshal(ev)
		k := eventKey(ev.EventID)
		ops = append(ops, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d, Version: eventVersion}, eventCond))
		if err := s.T.Transact(ctx, ops); err != nil {
			if errors.Is(err, table.ErrConditionFailed) || errors.Is(err, table.ErrConflict) {
				return nil, errRetry
			}
			return nil, err
		}
		return ev, nil
	}

	// A timeline event: build it like a local one on a head whose state is
	// the event's state before, then put the real head and the change of
	// current state in place of what commitOps assumed.
	ev.Seq = h.seq + 1
	pos, err := s.Events.Allocate(ctx)
	if err != nil {
		return nil, err
	}
	ev.Pos = pos
	fail := func(err error) (*Event, error) {
		_ = s.Events.Void(ctx, pos)
		return nil, err
	}
	fake := *h
	fake.StateGroup = before
	cops, err := s.commitOps(ctx, ev, &fake, false)
	if err != nil {
		return fail(err)
	}
	after := before
	afterState := re.StateBefore
	if ev.StateAfter != "" {
		after = ev.StateAfter
		afterState = maps.Clone(re.StateBefore)
		afterState[pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = ev.EventID
	}
	newExt := nextExtremities(h.Extremities, ev)
	if re.ResetExtremities {
		newExt = []id.EventID{ev.EventID}
	}
	if len(newExt) > 20 {
		// Keep the newest; the oldest ones are long merged in practice.
		newExt = newExt[:20]
	}
	curGroup, curState := after, afterState
	if len(newExt) > 1 {
		sets := []StateMap{afterState}
		others, err := s.EventsByID(ctx, newExt[1:])
		if err != nil {
			return fail(err)
		}
		for _, o := range others {
			st, _, err := s.StateAfter(ctx, o)
			if err != nil {
				return fail(err)
			}
			sets = append(sets, st)
		}
		self := re.PDU.Clone()
		self.InternalMeta.EventID = re.EventID
		resolved, err := s.ResolveState(ctx, re.RoomVersion, sets, self)
		if err != nil {
			return fail(err)
		}
		if !maps.Equal(resolved, afterState) {
			g, gops, err := s.groupFromState(ctx, "sg:c:"+string(ev.EventID), h.StateGroup, resolved)
			if err != nil {
				return fail(err)
			}
			curGroup, curState = g, resolved
			ops = append(ops, gops...)
		}
	}
	diff, err := s.currentStateDiff(ctx, ev, h.StateGroup, curState)
	if err != nil {
		return fail(err)
	}

	nh := head{RoomVersion: h.RoomVersion, Extremities: newExt, Depth: max(h.Depth, re.PDU.Depth),
		StateGroup: curGroup, LastPos: pos}
	hd, _ := json.Marshal(nh)
	hk := headKey(ev.RoomID)
	ops = append(ops, table.Put(table.Item{PK: hk.PK, SK: hk.SK, Data: hd, Version: ev.Seq}, table.IfVersion(h.seq)))
	for _, op := range cops {
		t := op.Target()
		switch {
		case t == hk:
			continue // replaced above
		case t.PK == roomPK(ev.RoomID) && strings.HasPrefix(t.SK, "state#"):
			continue // the state diff below covers it
		case strings.HasPrefix(t.PK, "user#") && t.SK == "mship#"+string(ev.RoomID):
			continue
		case t == eventKey(ev.EventID):
			op.Cond = eventCond
			op.Item.Version = eventVersion
			d, _ := json.Marshal(ev) // StateAfter is known now
			op.Item.Data = d
		}
		ops = append(ops, op)
	}
	if len(ops)+len(diff) > table.MaxTxItems {
		// A large state change (a resolution over a long fork): write the
		// current-state items that do not fit first. Readers may see the new
		// state a moment early; a lost head race rewrites it on retry.
		room := table.MaxTxItems - len(ops)
		for _, op := range diff[max(room, 0):] {
			if err := s.T.Transact(ctx, []table.Op{op}); err != nil {
				return fail(err)
			}
		}
		diff = diff[:max(room, 0)]
	}
	ops = append(ops, diff...)
	if err := s.T.Transact(ctx, ops); err != nil {
		_ = s.Events.Void(ctx, pos)
		var txe *table.TxError
		if errors.As(err, &txe) || errors.Is(err, table.ErrConflict) {
			return nil, errRetry
		}
		return nil, err
	}
	if s.OnPersist != nil {
		s.OnPersist(ev)
	}
	return ev, nil
}

// currentStateDiff returns the writes that turn the current state of group
// old into want: changed and new state items, removed ones, and the
// membership index of local users whose membership changed. ev (being
// persisted) may be one of the new state events.
func (s *Service) currentStateDiff(ctx context.Context, ev *Event, old string, want StateMap) ([]table.Op, error) {
	oldState, err := s.groupState(ctx, old)
	if err != nil {
		return nil, err
	}
	var changed []id.EventID
	var changedKeys []pdu.StateKey
	for k, v := range want {
		if oldState[joinKey(k.Type, k.StateKey)] != string(v) {
			changedKeys = append(changedKeys, k)
			if v != ev.EventID {
				changed = append(changed, v)
			}
		}
	}
	loaded, err := s.EventsByID(ctx, changed)
	if err != nil {
		return nil, err
	}
	byID := map[id.EventID]*Event{ev.EventID: ev}
	for _, e := range loaded {
		byID[e.EventID] = e
	}
	var ops []table.Op
	sort.Slice(changedKeys, func(i, j int) bool {
		return joinKey(changedKeys[i].Type, changedKeys[i].StateKey) < joinKey(changedKeys[j].Type, changedKeys[j].StateKey)
	})
	for _, k := range changedKeys {
		se := byID[want[k]]
		if se == nil {
			return nil, fmt.Errorf("rooms: state event %s is not stored", want[k])
		}
		entry := stateEntry{EventID: se.EventID, PDU: se.PDU, Membership: se.Membership()}
		d, _ := json.Marshal(entry)
		sk := stateKey(ev.RoomID, k.Type, k.StateKey)
		ops = append(ops, table.Put(table.Item{PK: sk.PK, SK: sk.SK, Data: d}, table.Cond{}))
		if k.Type == "m.room.member" && s.isLocal(id.UserID(k.StateKey)) {
			ops = append(ops, table.Put(membershipItem(id.UserID(k.StateKey), MembershipRecord{RoomID: ev.RoomID, Membership: se.Membership(), EventID: se.EventID, Pos: ev.Pos}), table.Cond{}))
		}
	}
	for k := range oldState {
		typ, skey := splitJoined(k)
		if _, ok := want[pdu.StateKey{Type: typ, StateKey: skey}]; !ok {
			ops = append(ops, table.Delete(stateKey(ev.RoomID, typ, skey), table.Cond{}))
		}
	}
	return ops, nil
}

// JoinedRoom is a room joined through another server: the state before the
// join (every event of it and of its auth chain already stored as
// outliers), the join event, and recent history to place before it.
type JoinedRoom struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	State       StateMap
	Join        *pdu.PDU
	JoinID      id.EventID
	// History is older events, oldest first; they get timeline positions
	// before the join. HistoryBase is the state before the oldest of them:
	// each takes it plus the history's state events before it (nil: their
	// state is taken to be the join's).
	History     []Outlier
	HistoryBase StateMap
}

// ErrRoomExists is returned by CreateJoinedRoom when the room's head was
// created meanwhile (another local user joined at the same time).
var ErrRoomExists = errors.New("rooms: room already held")

// CreateJoinedRoom creates this server's copy of a room joined remotely.
func (s *Service) CreateJoinedRoom(ctx context.Context, jr JoinedRoom) (*Event, error) {
	if ok, err := s.HasRoom(ctx, jr.RoomID); err != nil {
		return nil, err
	} else if ok {
		return nil, ErrRoomExists
	}
	before, gops, err := s.groupFromState(ctx, "sg:j:"+string(jr.JoinID), "", jr.State)
	if err != nil {
		return nil, err
	}
	if len(gops) > 0 {
		if err := s.T.Transact(ctx, gops); err != nil {
			return nil, err
		}
	}
	// Current state items first: nobody reads this room before its head exists.
	var ids []id.EventID
	for _, e := range jr.State {
		ids = append(ids, e)
	}
	stEvents, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	if len(stEvents) != len(ids) {
		return nil, fmt.Errorf("rooms: %d of %d state events stored", len(stEvents), len(ids))
	}
	var batch []table.Op
	for _, se := range stEvents {
		if se.StateKey == nil {
			continue
		}
		d, _ := json.Marshal(stateEntry{EventID: se.EventID, PDU: se.PDU, Membership: se.Membership()})
		k := stateKey(jr.RoomID, se.Type, *se.StateKey)
		batch = append(batch, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}))
		if len(batch) == 25 {
			if err := s.T.Transact(ctx, batch); err != nil {
				return nil, err
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := s.T.Transact(ctx, batch); err != nil {
			return nil, err
		}
	}
	// History, each event in its own small transaction while the head does
	// not exist yet.
	var persisted []*Event
	seq := JoinedSeqBase // the sequences below are for backfill (backfill.go)
	states, err := s.historyStates(ctx, jr.History, jr.HistoryBase)
	if err != nil {
		return nil, err
	}
	for i, o := range jr.History {
		raw, err := storedPDU(o.PDU)
		if err != nil {
			continue
		}
		ev := &Event{RoomID: jr.RoomID, RoomVersion: jr.RoomVersion, EventID: o.EventID, PDU: raw, Seq: seq + 1}
		if ev.parse() != nil {
			continue
		}
		g, gops, err := s.historyGroup(ctx, o.EventID, states(i), before)
		if err != nil {
			return nil, err
		}
		ev.StateBefore = g
		cond, ver := table.IfNotExists(), int64(1)
		if it, err := s.T.Get(ctx, eventKey(o.EventID)); err == nil {
			old, err := decodeEvent(it)
			if err != nil || !old.Outlier {
				continue
			}
			cond, ver = table.IfVersion(it.Version), it.Version+1
		}
		pos, err := s.Events.Allocate(ctx)
		if err != nil {
			return nil, err
		}
		ev.Pos = pos
		d, _ := json.Marshal(ev)
		ek := eventKey(ev.EventID)
		entry, _ := json.Marshal(StreamEntry{RoomID: ev.RoomID, EventID: ev.EventID, Type: ev.Type, StateKey: ev.StateKey, Sender: ev.Sender})
		err = s.T.Transact(ctx, append([]table.Op{
			table.Check(headKey(jr.RoomID), table.IfNotExists()),
			table.Put(table.Item{PK: ek.PK, SK: ek.SK, Data: d, Version: ver}, cond),
			table.Put(table.Item{PK: roomPK(ev.RoomID), SK: seqSK(ev.Seq), Data: []byte(ev.EventID), Num: ev.Pos}, table.IfNotExists()),
			s.Events.ClaimOp(pos, entry),
		}, gops...))
		if err != nil {
			_ = s.Events.Void(ctx, pos)
			var txe *table.TxError
			if errors.As(err, &txe) && txe.Index == 0 {
				return nil, ErrRoomExists
			}
			if errors.As(err, &txe) && txe.Index == 2 {
				return nil, ErrRoomExists // another joiner is writing this room's history
			}
			continue
		}
		seq++
		persisted = append(persisted, ev)
	}
	raw, err := storedPDU(jr.Join)
	if err != nil {
		return nil, err
	}
	ev := &Event{RoomID: jr.RoomID, RoomVersion: jr.RoomVersion, EventID: jr.JoinID, PDU: raw, Seq: seq + 1, StateBefore: before}
	if err := ev.parse(); err != nil {
		return nil, err
	}
	if prev := jr.State[pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey}]; prev != "" {
		if pe, err := s.Event(ctx, prev); err == nil {
			ev.Replaces = &PrevState{EventID: prev, Sender: pe.Sender, Content: pe.Content}
		}
	}
	pos, err := s.Events.Allocate(ctx)
	if err != nil {
		return nil, err
	}
	ev.Pos = pos
	h := &head{RoomVersion: jr.RoomVersion, Depth: jr.Join.Depth - 1, StateGroup: before, seq: seq}
	ops, err := s.commitOps(ctx, ev, h, true)
	if err != nil {
		_ = s.Events.Void(ctx, pos)
		return nil, err
	}
	if err := s.T.Transact(ctx, ops); err != nil {
		_ = s.Events.Void(ctx, pos)
		var txe *table.TxError
		if errors.As(err, &txe) && ops[txe.Index].Target() == headKey(jr.RoomID) {
			return nil, ErrRoomExists
		}
		return nil, err
	}
	if s.OnPersist != nil {
		for _, p := range persisted {
			s.OnPersist(p)
		}
		s.OnPersist(ev)
	}
	return ev, nil
}

// StoreStrayMembership records a membership event of a local user in a
// room this server does not hold (an invite from another server, or the
// rejection of one): the event as an outlier, the user's membership index,
// and a stream entry so /sync sees it.
func (s *Service) StoreStrayMembership(ctx context.Context, r id.RoomID, rv id.RoomVersion, eventID id.EventID, p *pdu.PDU, keepUnsigned bool) (*Event, error) {
	var raw []byte
	var err error
	if keepUnsigned {
		raw, err = EncodePDU(p)
	} else {
		raw, err = storedPDU(p)
	}
	if err != nil {
		return nil, err
	}
	ev := &Event{RoomID: r, RoomVersion: rv, EventID: eventID, PDU: raw, Outlier: true}
	if err := ev.parse(); err != nil {
		return nil, err
	}
	if ev.Type != "m.room.member" || ev.StateKey == nil || !s.isLocal(id.UserID(*ev.StateKey)) {
		return nil, httpapi.BadJSON("not a membership event of a local user")
	}
	for attempt := 0; attempt < 5; attempt++ {
		pos, err := s.Events.Allocate(ctx)
		if err != nil {
			return nil, err
		}
		ev.Pos = pos
		d, _ := json.Marshal(ev)
		ek := eventKey(eventID)
		entry, _ := json.Marshal(StreamEntry{RoomID: r, EventID: eventID, Type: ev.Type, StateKey: ev.StateKey, Sender: ev.Sender})
		err = s.T.Transact(ctx, []table.Op{
			table.Put(table.Item{PK: ek.PK, SK: ek.SK, Data: d, Version: 1}, table.IfNotExists()),
			table.Put(membershipItem(id.UserID(*ev.StateKey), MembershipRecord{RoomID: r, Membership: ev.Membership(), EventID: eventID, Pos: pos}), table.Cond{}),
			s.Events.ClaimOp(pos, entry),
		})
		if err == nil {
			if s.OnPersist != nil {
				s.OnPersist(ev)
			}
			return ev, nil
		}
		_ = s.Events.Void(ctx, pos)
		var txe *table.TxError
		if errors.As(err, &txe) && txe.Index == 0 {
			return s.Event(ctx, eventID) // already stored
		}
		if !errors.Is(err, table.ErrConditionFailed) && !errors.Is(err, table.ErrConflict) {
			return nil, err
		}
	}
	return nil, httpapi.LimitExceeded(100)
}

// MembershipOf returns a local user's membership record for a room (nil if
// none).
func (s *Service) MembershipOf(ctx context.Context, u id.UserID, r id.RoomID) (*MembershipRecord, error) {
	it, err := s.T.Get(ctx, membershipKey(u, r))
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m MembershipRecord
	if err := json.Unmarshal(it.Data, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Template is an unsigned event built on the current room head for another
// server to complete (make_join, make_leave).
type Template struct {
	PDU         *pdu.PDU
	RoomVersion id.RoomVersion
	// Auth are the auth events chosen (with the create event for v12).
	Auth []*pdu.PDU
}

// BuildTemplate builds an event on the room's current head and state
// without signing or storing it.
func (s *Service) BuildTemplate(ctx context.Context, r id.RoomID, ne NewEvent) (*Template, error) {
	h, err := s.getHead(ctx, r)
	if err != nil {
		return nil, err
	}
	rv := h.RoomVersion
	p := &pdu.PDU{Type: ne.Type, StateKey: ne.StateKey, Sender: ne.Sender, Content: []byte(ne.Content),
		OriginServerTS: s.Now().UnixMilli(), Depth: h.Depth + 1, PrevEvents: slices.Clone(capPrevEvents(h.Extremities)),
		AuthEvents: []id.EventID{}, RoomID: r}
	keys := p.AuthEventSelection(rv)
	keys.Add("m.room.create", "")
	current, err := s.currentStateFor(ctx, r, keys)
	if err != nil {
		return nil, err
	}
	t := &Template{PDU: p, RoomVersion: rv}
	for _, k := range keys {
		se := current[k]
		if se == nil {
			continue
		}
		ap, err := parsePDU(se.PDU)
		if err != nil {
			return nil, err
		}
		ap.InternalMeta.EventID = se.EventID
		t.Auth = append(t.Auth, ap)
		if k.Type == "m.room.create" && rv.RoomIDIsCreateEventID() {
			continue // v12: the room id stands for it
		}
		p.AuthEvents = append(p.AuthEvents, se.EventID)
	}
	if LegacyEventFormat(rv) {
		// v1/v2 (v1events.go): the template carries an event id (the joining
		// server picks its own) and reference pairs.
		if err := s.legacyForm(ctx, rv, p, NewLegacyEventID(s.ServerName)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// AuthChain returns the auth chain of the given events (their auth events,
// theirs, and so on; not the events themselves unless reachable).
func (s *Service) AuthChain(ctx context.Context, of []*Event) ([]*Event, error) {
	seen := map[id.EventID]bool{}
	var out []*Event
	var frontier []id.EventID
	add := func(ev *Event) error {
		p, err := parsePDU(ev.PDU)
		if err != nil {
			return err
		}
		for _, a := range p.AuthEvents {
			if !seen[a] {
				seen[a] = true
				frontier = append(frontier, a)
			}
		}
		if ev.RoomVersion.RoomIDIsCreateEventID() && ev.Type != "m.room.create" {
			c := id.EventID("$" + strings.TrimPrefix(string(ev.RoomID), "!"))
			if !seen[c] {
				seen[c] = true
				frontier = append(frontier, c)
			}
		}
		return nil
	}
	for _, ev := range of {
		if err := add(ev); err != nil {
			return nil, err
		}
	}
	for len(frontier) > 0 {
		next := frontier
		frontier = nil
		evs, err := s.EventsByID(ctx, next)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			out = append(out, ev)
			if err := add(ev); err != nil {
				return nil, err
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return depthOf(out[i]) < depthOf(out[j]) })
	return out, nil
}

func depthOf(ev *Event) int64 {
	var f struct {
		Depth int64 `json:"depth"`
	}
	_ = json.Unmarshal(ev.PDU, &f)
	return f.Depth
}

// WalkBack walks the room graph backwards from the given events through
// prev_events, deepest first: /backfill (include the starting events) and
// /get_missing_events (stop at known events, do not include the starting
// ones). Events at or below minDepth are not returned.
func (s *Service) WalkBack(ctx context.Context, r id.RoomID, from []id.EventID, includeFrom bool, stop map[id.EventID]bool, limit int, minDepth int64) ([]*Event, error) {
	type item struct {
		ev    *Event
		depth int64
	}
	seen := map[id.EventID]bool{}
	var queue []item
	push := func(ids []id.EventID) error {
		var want []id.EventID
		for _, e := range ids {
			if !seen[e] && !stop[e] {
				seen[e] = true
				want = append(want, e)
			}
		}
		evs, err := s.EventsByID(ctx, want)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.RoomID == r {
				queue = append(queue, item{ev, depthOf(ev)})
			}
		}
		sort.SliceStable(queue, func(i, j int) bool { return queue[i].depth > queue[j].depth })
		return nil
	}
	var out []*Event
	if includeFrom {
		if err := push(from); err != nil {
			return nil, err
		}
	} else {
		for _, e := range from {
			seen[e] = true
		}
		starts, err := s.EventsByID(ctx, from)
		if err != nil {
			return nil, err
		}
		for _, ev := range starts {
			p, err := parsePDU(ev.PDU)
			if err != nil {
				return nil, err
			}
			if err := push(p.PrevEvents); err != nil {
				return nil, err
			}
		}
	}
	for len(queue) > 0 && len(out) < limit {
		it := queue[0]
		queue = queue[1:]
		if it.depth <= minDepth && minDepth > 0 {
			continue
		}
		out = append(out, it.ev)
		p, err := parsePDU(it.ev.PDU)
		if err != nil {
			return nil, err
		}
		if err := push(p.PrevEvents); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// JoinedServers lists the servers with at least one joined member in the
// room's current state.
func (s *Service) JoinedServers(ctx context.Context, r id.RoomID) ([]string, error) {
	q := table.Query{PK: roomPK(r), Prefix: stateSK("m.room.member", "")}
	set := map[string]bool{}
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
			if se.Membership != "join" {
				continue
			}
			_, skey := splitStateSK(it.SK)
			if _, server, err := id.UserID(skey).Parse(); err == nil {
				set[server] = true
			}
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	return slices.Sorted(maps.Keys(set)), nil
}

// ServerCanSee reports whether a server may see an event under the room's
// history visibility at that event: world_readable and shared history is
// open to any server in the room; invited and joined history only to
// servers with a member invited or joined (or joined) at that point.
func (s *Service) ServerCanSee(ctx context.Context, server string, ev *Event) (bool, error) {
	if ev.Outlier {
		return true, nil // auth and state events: needed to check the room at all
	}
	st, err := s.groupState(ctx, ev.StateBefore)
	if err != nil {
		return false, err
	}
	vis := "shared"
	if e := st[joinKey("m.room.history_visibility", "")]; e != "" {
		if hv, err := s.Event(ctx, id.EventID(e)); err == nil {
			var c struct {
				V string `json:"history_visibility"`
			}
			_ = json.Unmarshal(hv.Content, &c)
			if c.V != "" {
				vis = c.V
			}
		}
	}
	if vis == "world_readable" || vis == "shared" {
		return true, nil
	}
	var ids []id.EventID
	suffix := ":" + server
	for k, v := range st {
		if strings.HasPrefix(k, "m.room.member\x1f") && strings.HasSuffix(k, suffix) {
			ids = append(ids, id.EventID(v))
		}
	}
	evs, err := s.EventsByID(ctx, ids)
	if err != nil {
		return false, err
	}
	for _, m := range evs {
		switch m.Membership() {
		case "join":
			return true, nil
		case "invite":
			if vis == "invited" {
				return true, nil
			}
		}
	}
	return false, nil
}

// RedactedPDU returns the event's PDU redacted (for servers that may not
// see it).
func (e *Event) RedactedPDU() (json.RawMessage, error) {
	p, err := parsePDU(e.PDU)
	if err != nil {
		return nil, err
	}
	return EncodePDU(p.Redact(e.RoomVersion)) // v1/v2 events keep their format
}

// --- Memberships that need another server (called from membership.go). ---

// needsRemoteJoin reports whether joining r needs another server: the room
// is not held here, or no local user is in it any more (our copy is stale).
func (s *Service) needsRemoteJoin(ctx context.Context, r id.RoomID) (bool, error) {
	if s.Remote == nil {
		return false, nil
	}
	held, err := s.HasRoom(ctx, r)
	if err != nil || !held {
		return !held, err
	}
	servers, err := s.JoinedServers(ctx, r)
	if err != nil {
		return false, err
	}
	if slices.Contains(servers, s.ServerName) {
		return false, nil
	}
	for _, sv := range servers {
		if sv != s.ServerName {
			return true, nil
		}
	}
	return false, nil
}

// joinRemote joins through other servers: those given, the server of a
// pending invite, the servers of our stale copy, the room id's server.
func (s *Service) joinRemote(ctx context.Context, r id.RoomID, u id.UserID, reason string, servers []string) (id.EventID, error) {
	servers = slices.Clone(servers)
	if m, err := s.MembershipOf(ctx, u, r); err == nil && m != nil && m.EventID != "" && (m.Membership == "invite" || m.Membership == "knock") {
		if ev, err := s.Event(ctx, m.EventID); err == nil {
			if _, server, err := ev.Sender.Parse(); err == nil {
				servers = append(servers, server)
			}
		}
	}
	if held, _ := s.HasRoom(ctx, r); held {
		if more, err := s.JoinedServers(ctx, r); err == nil {
			servers = append(servers, more...)
		}
	}
	if _, server, ok := strings.Cut(string(r), ":"); ok {
		servers = append(servers, server)
	}
	c := withReason(s.profileContent(ctx, u, "join"), reason)
	return s.Remote.JoinRemote(ctx, r, u, servers, c)
}

// inviteRemote invites a user of another server: the invite is built and
// authorized here, countersigned by the invitee's server, then stored and
// sent to the room like any event.
func (s *Service) inviteRemote(ctx context.Context, r id.RoomID, sender, target id.UserID, c map[string]any) error {
	k := string(target)
	_, err := s.Send(ctx, r, NewEvent{Type: "m.room.member", StateKey: &k, Sender: sender, Content: content(c),
		beforeCommit: func(ctx context.Context, rv id.RoomVersion, eid id.EventID, raw []byte) ([]byte, error) {
			return s.Remote.SignInvite(ctx, rv, r, eid, raw)
		}})
	return err
}

// RestrictedJoinAuthoriser returns a local user who may vouch for u's join
// of a restricted room ("" if none can, or the rule is not restricted).
func (s *Service) RestrictedJoinAuthoriser(ctx context.Context, r id.RoomID, u id.UserID) (id.UserID, error) {
	return s.restrictedJoinAuthoriser(ctx, r, u)
}

// ResolveAliasServers resolves a room alias, asking its server when it is
// not ours; servers are where the room can be joined.
func (s *Service) ResolveAliasServers(ctx context.Context, a id.RoomAlias) (id.RoomID, []string, error) {
	if _, server := splitAlias(a); server == s.ServerName || s.Remote == nil {
		r, err := s.ResolveAlias(ctx, a)
		return r, nil, err
	}
	return s.Remote.QueryAlias(ctx, a)
}
