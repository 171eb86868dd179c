package rooms

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// NewEvent is an event a local user (or the server on their behalf) wants
// to send.
type NewEvent struct {
	Type     string
	StateKey *string
	Sender   id.UserID
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts id.EventID
	// TxnID and Device make the send idempotent per device.
	TxnID  string
	Device id.DeviceID
	// TS, if not 0, is the event's origin_server_ts instead of now (an
	// application service's timestamp massaging, ?ts=).
	TS int64
	// beforeCommit, if set, may replace the signed event before it is
	// stored (a remote invitee's server countersigns invites; remote.go).
	beforeCommit func(ctx context.Context, rv id.RoomVersion, eid id.EventID, raw []byte) ([]byte, error)
	// committed, if set, runs as soon as the event is stored, before the
	// OnPersist hooks (Send releases its room turn there).
	committed func()
	// base, if set, is the in-flight event of the room to build on instead
	// of the stored head (Send's pipelining, see inflight).
	base *inflight
	// submit, if set, runs just before the event's transaction is handed to
	// the table, with the head the room will have once it commits; the
	// function it returns runs when the transaction returned.
	submit func(ev *Event, next head) (finished func())
}

// sendTurns take turns among this process's senders into one room (striped
// by room id, so memory stays bounded). Correctness does not rest on them:
// the head's conditional write guards against every other writer, in this
// process or another. They only stop this process's own senders from
// building on the same head and losing the race to each other, each loss
// costing a whole build, signature, commit attempt and voided stream slot
// (BenchmarkSend: about 2 lost races per send with 8 senders in 5 rooms).
var sendTurns [256]chan struct{}

func init() {
	for i := range sendTurns {
		sendTurns[i] = make(chan struct{}, 1)
	}
}

// takeTurn waits for the room's turn (or ctx) and returns its release.
func takeTurn(ctx context.Context, roomID id.RoomID) (func(), error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(roomID))
	turn := sendTurns[h.Sum32()%uint32(len(sendTurns))]
	select {
	case turn <- struct{}{}:
		return sync.OnceFunc(func() { <-turn }), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// inflight is a local event whose transaction is being committed. On an
// engine one process owns (table.Sequencer: the embedded one, where
// concurrent transactions share a group commit), Send pipelines a room's
// events: it hands the room's turn to the next sender as soon as the
// event's transaction is built, and that sender builds on the head the room
// will have (next) instead of reading the stored one, so several events of
// one room can be committed in one group commit instead of one commit
// after another. The head's conditional write (IfVersion) still decides:
// if the event it built on fails, or the two commit in the wrong order, its
// own transaction fails and it retries on the stored head once the event
// it built on has finished. The head's version alone cannot tell: another
// writer's event may have taken the same version if the in-flight one
// failed, so the transaction also checks that the in-flight event exists.
//
// Only what an in-flight event cannot change may be read while building on
// it: a state event changes current state, and relations and redactions
// read other events (which may be the in-flight one), so those wait for it.
type inflight struct {
	event id.EventID    // the event
	next  head          // the room's head once it commits (seq included)
	state bool          // a state event: the next event must wait for it
	done  chan struct{} // closed when its transaction has returned
}

// inflights maps inflightKey to the room's latest *inflight.
var inflights sync.Map

type inflightKey struct {
	s    *Service
	room id.RoomID
}

// canBuildOnInflight reports whether ne reads nothing an in-flight
// message event of its room may write: no redaction, no relation (its
// parent or thread root may be that event). Conservative: content that
// merely mentions m.relates_to waits too.
func canBuildOnInflight(ne *NewEvent) bool {
	return ne.Redacts == "" && ne.Type != "m.room.redaction" && !bytes.Contains(ne.Content, []byte("m.relates_to"))
}

// pipelines reports whether Send may pipeline this service's rooms.
func (s *Service) pipelines() bool {
	_, ok := table.SequencerOf(s.T)
	return ok
}

// maxAttempts bounds retries when other writers keep winning the room head.
const maxAttempts = 50

// Send builds, authorizes and persists a local event, returning its id. A
// repeated (Device, TxnID) returns the first event's id without storing
// anything.
func (s *Service) Send(ctx context.Context, roomID id.RoomID, ne NewEvent) (id.EventID, error) {
	// No read of the transaction id first: the event's transaction claims it
	// with IfNotExists, so a repeat is caught there (trySend then returns the
	// first event). That saves a read on every send; only repeats pay more.
	pipeline := s.pipelines()
	key := inflightKey{s, roomID}
	var waitFor chan struct{} // the in-flight event a failed attempt built on
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if waitFor != nil {
			select {
			case <-waitFor:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			waitFor = nil
		}
		release, err := takeTurn(ctx, roomID)
		if err != nil {
			return "", err
		}
		ne.committed = release
		ne.base, ne.submit = nil, nil
		if pipeline {
			if v, ok := inflights.Load(key); ok {
				p := v.(*inflight)
				if !p.state && canBuildOnInflight(&ne) {
					ne.base = p
				} else {
					select { // holding the turn: nothing else of ours can start
					case <-p.done:
					case <-ctx.Done():
						release()
						return "", ctx.Err()
					}
				}
			}
			ne.submit = func(ev *Event, next head) func() {
				p := &inflight{event: ev.EventID, next: next, state: ev.IsState(), done: make(chan struct{})}
				inflights.Store(key, p)
				release()
				return func() {
					inflights.CompareAndDelete(key, p)
					close(p.done)
				}
			}
		}
		ev, err := s.trySend(ctx, roomID, ne, nil)
		release()
		if err == errRetry {
			if ne.base != nil {
				waitFor = ne.base.done
			}
			backoff(attempt)
			continue
		}
		if err != nil {
			// A repeat whose first attempt succeeded may no longer pass
			// auth (the sender left since): the first answer still stands.
			if ne.TxnID != "" {
				if prev, lerr := s.lookupTxn(ctx, ne.Sender, ne.Device, roomID, ne.TxnID); lerr == nil && prev != "" {
					return prev, nil
				}
			}
			return "", err
		}
		return ev.EventID, nil
	}
	busy := httpapi.LimitExceeded(100)
	busy.Message = "room is too busy, try again"
	return "", busy
}

var errRetry = errors.New("rooms: lost a race, retry")

func backoff(attempt int) {
	if attempt < 2 {
		return
	}
	var b [1]byte
	_, _ = rand.Read(b[:])
	time.Sleep(time.Duration(int(b[0])%(attempt*2)+1) * time.Millisecond)
}

func (s *Service) lookupTxn(ctx context.Context, u id.UserID, dev id.DeviceID, r id.RoomID, txn string) (id.EventID, error) {
	it, err := s.T.Get(ctx, txnKey(u, dev, r, txn))
	if errors.Is(err, table.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return id.EventID(it.Data), nil
}

// createSpec is set when the event is a room's m.room.create (no head yet).
type createSpec struct {
	roomID  id.RoomID
	version id.RoomVersion
}

// trySend does one attempt: read head and state, build, authorize, commit.
func (s *Service) trySend(ctx context.Context, roomID id.RoomID, ne NewEvent, create *createSpec) (*Event, error) {
	var h *head
	var err error
	switch {
	case create != nil:
		h = &head{RoomVersion: create.version}
	case ne.base != nil:
		base := ne.base.next
		h = &base
	default:
		if h, err = s.getHead(ctx, roomID); err != nil {
			return nil, err
		}
	}
	rv := h.RoomVersion
	p := &pdu.PDU{
		Type:           ne.Type,
		StateKey:       ne.StateKey,
		Sender:         ne.Sender,
		Content:        []byte(ne.Content),
		OriginServerTS: cmp.Or(ne.TS, s.Now().UnixMilli()),
		Depth:          h.Depth + 1,
		PrevEvents:     capPrevEvents(h.Extremities), // all extremities, at most 10 (remote.go)
		AuthEvents:     []id.EventID{},
	}
	if p.PrevEvents == nil {
		p.PrevEvents = []id.EventID{}
	}
	if !(create != nil && rv.RoomIDIsCreateEventID()) {
		p.RoomID = roomID
	}
	if ne.Redacts != "" && !rv.RedactsInContent() {
		r := ne.Redacts
		p.Redacts = &r
	}
	// Current state the event needs: its auth events (plus the create event,
	// which v12 checks by room id) and the state it replaces.
	keys := p.AuthEventSelection(rv)
	if !keys.Has(pdu.StateKey{Type: "m.room.create"}) {
		keys.Add("m.room.create", "")
	}
	if ne.StateKey != nil {
		keys.Add(ne.Type, *ne.StateKey)
	}
	var current map[pdu.StateKey]*stateEntry
	if create == nil {
		if current, err = s.currentStateFor(ctx, roomID, keys); err != nil {
			return nil, err
		}
	}
	var authPDUs []*pdu.PDU
	for _, k := range p.AuthEventSelection(rv) {
		se := current[k]
		if se == nil {
			continue
		}
		ap, err := parsePDU(se.PDU)
		if err != nil {
			return nil, err
		}
		ap.InternalMeta.EventID = se.EventID
		authPDUs = append(authPDUs, ap)
		p.AuthEvents = append(p.AuthEvents, se.EventID)
	}
	raw, eid, err := s.sealEvent(ctx, rv, p) // v1events.go: v1/v2 ids are chosen, v3+ hashed
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxEventBytes {
		return nil, httpapi.TooLarge("event is %d bytes of canonical JSON (max %d)", len(raw), MaxEventBytes)
	}
	if create != nil && rv.RoomIDIsCreateEventID() {
		roomID = id.RoomID("!" + string(eid[1:]))
	}
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, 0, len(ids))
		for _, want := range ids {
			for _, ap := range authPDUs {
				if ap.InternalMeta.EventID == want {
					out = append(out, ap)
				}
			}
		}
		return out, nil
	}
	precomputed := authPDUs
	if precomputed == nil {
		precomputed = []*pdu.PDU{}
	}
	if rv.RoomIDIsCreateEventID() {
		// v12: the create event is found through the room id, not auth_events.
		var without []*pdu.PDU
		for _, ap := range authPDUs {
			if ap.Type != "m.room.create" {
				without = append(without, ap)
			}
		}
		precomputed = without
		if precomputed == nil {
			precomputed = []*pdu.PDU{}
		}
		if cs := current[pdu.StateKey{Type: "m.room.create"}]; cs != nil {
			cp, err := parsePDU(cs.PDU)
			if err != nil {
				return nil, err
			}
			cp.InternalMeta.EventID = cs.EventID
			authPDUs = append(authPDUs, cp)
		}
	}
	if err := eventauth.Authorize(rv, p, precomputed, getEvents, s.noRemoteKeys); err != nil {
		return nil, httpapi.Forbidden("%s", authMessage(err))
	}
	if ne.beforeCommit != nil {
		if raw, err = ne.beforeCommit(ctx, rv, eid, raw); err != nil {
			return nil, err
		}
	}

	ev := &Event{RoomID: roomID, RoomVersion: rv, EventID: eid, PDU: raw, Seq: h.seq + 1,
		StateBefore: h.StateGroup, TxnID: ne.TxnID, TxnDevice: string(ne.Device)}
	if err := ev.parse(); err != nil {
		return nil, err
	}
	if ne.StateKey != nil {
		if prev := current[pdu.StateKey{Type: ne.Type, StateKey: *ne.StateKey}]; prev != nil {
			pp, err := parsePDU(prev.PDU)
			if err == nil {
				ev.Replaces = &PrevState{EventID: prev.EventID, Sender: pp.Sender, Content: json.RawMessage(pp.Content)}
			}
		}
	}
	// Reserve the stream position only now, after reading the head: any
	// event that commits after us read the head after we committed, so it
	// reserves a higher position. Room order and stream order agree. On the
	// embedded engine the position comes from memory and is made durable by
	// the event's own transaction (one commit per event, not two).
	pos, err := s.Events.Reserve(ctx)
	if err != nil {
		return nil, err
	}
	ev.Pos = pos
	ops, err := s.commitOps(ctx, ev, h, create != nil)
	if err != nil {
		_ = s.Events.Void(ctx, pos)
		return nil, err
	}
	if ne.base != nil {
		// Built on an in-flight event: it must be the one that set the
		// head's version (see inflight).
		ops = append(ops, table.Check(eventKey(ne.base.event), table.IfExists()))
	}
	if ne.submit != nil {
		finished := ne.submit(ev, nextHead(h, ev))
		err = s.T.Transact(ctx, ops)
		finished()
	} else {
		err = s.T.Transact(ctx, ops)
	}
	var txe *table.TxError
	switch {
	case err == nil:
	case errors.As(err, &txe):
		_ = s.Events.Void(ctx, pos)
		op := ops[txe.Index]
		switch {
		case op.Target() == headKey(roomID) || s.Events.IsClaimOp(op):
			return nil, errRetry
		case ne.base != nil && op.Target() == eventKey(ne.base.event):
			return nil, errRetry // the in-flight event we built on was not stored
		case op.Target() == eventKey(eid):
			return nil, errRetry // identical event already stored (same ts): rebuild
		case ne.TxnID != "" && op.Target() == txnKey(ne.Sender, ne.Device, roomID, ne.TxnID):
			prev, err := s.lookupTxn(ctx, ne.Sender, ne.Device, roomID, ne.TxnID)
			if err != nil {
				return nil, err
			}
			ev.EventID = prev
			return ev, nil
		case create != nil:
			return nil, httpapi.Forbidden("room already exists")
		}
		return nil, err
	case errors.Is(err, table.ErrConflict):
		_ = s.Events.Void(ctx, pos)
		return nil, errRetry
	default:
		_ = s.Events.Void(ctx, pos)
		return nil, err
	}
	if ne.committed != nil {
		ne.committed()
	}
	if s.OnPersist != nil {
		s.OnPersist(ev)
	}
	return ev, nil
}

// commitOps builds the one transaction that persists an event.
func (s *Service) commitOps(ctx context.Context, ev *Event, h *head, isCreate bool) ([]table.Op, error) {
	var extra []table.Op
	if ev.IsState() {
		g, gops, err := s.newStateGroup(ctx, ev, h.StateGroup)
		if err != nil {
			return nil, err
		}
		ev.StateAfter = g
		extra = append(extra, gops...)
		se := stateEntry{EventID: ev.EventID, PDU: ev.PDU, Membership: ev.Membership()}
		sd, _ := json.Marshal(se)
		k := stateKey(ev.RoomID, ev.Type, *ev.StateKey)
		extra = append(extra, table.Put(table.Item{PK: k.PK, SK: k.SK, Data: sd}, table.Cond{}))
		if ev.Type == "m.room.member" && s.isLocal(id.UserID(*ev.StateKey)) {
			extra = append(extra, table.Put(membershipItem(id.UserID(*ev.StateKey), MembershipRecord{RoomID: ev.RoomID, Membership: ev.Membership(), EventID: ev.EventID, Pos: ev.Pos}), table.Cond{}))
		}
	}
	nh := nextHead(h, ev)
	evData, _ := json.Marshal(ev)
	hd, _ := json.Marshal(nh)
	headCond := table.IfVersion(h.seq)
	if isCreate {
		headCond = table.IfNotExists()
	}
	entry, _ := json.Marshal(StreamEntry{RoomID: ev.RoomID, EventID: ev.EventID, Type: ev.Type, StateKey: ev.StateKey, Sender: ev.Sender})
	hk := headKey(ev.RoomID)
	ek := eventKey(ev.EventID)
	ops := []table.Op{
		table.Put(table.Item{PK: hk.PK, SK: hk.SK, Data: hd, Version: ev.Seq}, headCond),
		table.Put(table.Item{PK: ek.PK, SK: ek.SK, Data: evData, Version: 1}, table.IfNotExists()),
		table.Put(table.Item{PK: roomPK(ev.RoomID), SK: seqSK(ev.Seq), Data: []byte(ev.EventID), Num: ev.Pos}, table.IfNotExists()),
		s.Events.ClaimOp(ev.Pos, entry),
	}
	ops = append(ops, extra...)
	if ev.TxnID != "" {
		tk := txnKey(ev.Sender, id.DeviceID(ev.TxnDevice), ev.RoomID, ev.TxnID)
		ops = append(ops, table.Put(table.Item{PK: tk.PK, SK: tk.SK, Data: []byte(ev.EventID),
			TTL: s.Now().Add(24 * time.Hour).Unix()}, table.IfNotExists()))
	}
	if rel := relationOf(ev); rel != nil && !s.otherRoom(ctx, rel.Parent, ev.RoomID) {
		rd, _ := json.Marshal(rel)
		ops = append(ops, table.Put(table.Item{PK: relPK(rel.Parent), SK: rel.sortKey(ev.Seq, ev.EventID), Data: rd, Num: ev.Pos}, table.Cond{}))
		// Count the parent's children on its item, so reads bundle relations
		// only for events that have some (a missing parent is skipped).
		if _, err := s.T.Get(ctx, eventKey(rel.Parent)); err == nil && rel.Parent != ev.Redacts {
			ops = append(ops, table.Add(eventKey(rel.Parent), 1, table.IfExists()))
		}
	}
	if ev.Type == "m.room.redaction" && ev.Redacts != "" {
		if op, ok := s.redactOp(ctx, ev); ok {
			ops = append(ops, op)
		}
	}
	more, err := s.indexOps(ctx, ev) // time, thread and relation indexes (indexes.go)
	if err != nil {
		return nil, err
	}
	ops = append(ops, more...)
	return ops, nil
}

// nextHead is the room's head once ev (built on h, its state group after
// set if it is a state event) is stored.
func nextHead(h *head, ev *Event) head {
	nh := *h
	nh.Extremities = nextExtremities(h.Extremities, ev) // remote.go
	nh.Depth = h.Depth + 1
	nh.LastPos = ev.Pos
	if ev.IsState() {
		nh.StateGroup = ev.StateAfter
	}
	nh.seq = ev.Seq
	return nh
}

// StreamEntry is what the global event stream records per position.
type StreamEntry struct {
	RoomID   id.RoomID  `json:"room_id"`
	EventID  id.EventID `json:"event_id"`
	Type     string     `json:"type"`
	StateKey *string    `json:"state_key,omitempty"`
	Sender   id.UserID  `json:"sender"`
}

// redactOp marks the redaction's target as redacted (if it is in this room).
func (s *Service) redactOp(ctx context.Context, red *Event) (table.Op, bool) {
	it, err := s.T.Get(ctx, eventKey(red.Redacts))
	if err != nil {
		return table.Op{}, false
	}
	target, err := decodeEvent(it)
	if err != nil || target.RoomID != red.RoomID || target.RedactedBy != "" {
		return table.Op{}, false
	}
	target.RedactedBy = red.EventID
	d, _ := json.Marshal(target)
	it.Data = d
	it.Version++
	return table.Put(it, table.IfVersion(it.Version-1)), true
}

func parsePDU(raw []byte) (*pdu.PDU, error) {
	return ParsePDU(raw) // v1events.go: any room version's format
}

// noRemoteKeys is the key lookup for local authorization, which never needs
// a remote server's key (third-party invites are not supported).
func (s *Service) noRemoteKeys(serverName string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if serverName == s.ServerName && keyID == s.Key.ID {
		return s.Key.Pub, time.Now().Add(24 * time.Hour), nil
	}
	return "", time.Time{}, fmt.Errorf("no key for %s %s", serverName, keyID)
}

func authMessage(err error) string {
	var afe eventauth.AuthFailError
	if errors.As(err, &afe) {
		return afe.Message
	}
	return err.Error()
}

// randomRoomID makes a room id for room versions before 12.
func (s *Service) randomRoomID() id.RoomID {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return id.RoomID("!" + base64.RawURLEncoding.EncodeToString(b[:]) + ":" + s.ServerName)
}
