package federation

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// The checks performed on receipt of a PDU (spec "Checks performed on
// receipt of a PDU"): a valid event of the room's version, signed by the
// sender's server; redacted if its content hash is wrong; authorized by
// its auth events, then by the state before it (rejected otherwise), and
// by the current state (soft-failed otherwise).

// maxPDUBytes is the spec's bound on an event.
const maxPDUBytes = 65536

// errRejected marks an event that was stored as rejected.
type rejectedError struct{ reason string }

func (e *rejectedError) Error() string { return "rejected: " + e.reason }

// parseEvent parses a PDU of a room version and computes its event id.
func parseEvent(rv id.RoomVersion, raw json.RawMessage) (*pdu.PDU, id.EventID, error) {
	if len(raw) > maxPDUBytes {
		return nil, "", fmt.Errorf("event is over %d bytes", maxPDUBytes)
	}
	var p pdu.PDU
	if rooms.LegacyEventFormat(rv) {
		// v1/v2: the id is in the event and references are [id, hashes]
		// pairs; rooms.ParsePDU converts (and rooms.EncodePDU restores) them.
		lp, err := rooms.ParsePDU(raw)
		if err != nil || rooms.AsV1(lp) == nil {
			return nil, "", fmt.Errorf("invalid event: not a room v%s event (event_id, reference pairs)", rv)
		}
		p = *lp
	} else if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return nil, "", fmt.Errorf("invalid event: %w", err)
	}
	if p.Type == "" || p.Sender == "" {
		return nil, "", errors.New("invalid event: no type or sender")
	}
	if _, _, err := p.Sender.Parse(); err != nil {
		return nil, "", fmt.Errorf("invalid sender %q", p.Sender)
	}
	if p.Type != "m.room.create" || !rv.RoomIDIsCreateEventID() {
		if !strings.HasPrefix(string(p.RoomID), "!") {
			return nil, "", errors.New("invalid event: no room_id")
		}
	}
	if p.AuthEvents == nil || p.PrevEvents == nil {
		return nil, "", errors.New("invalid event: auth_events and prev_events are required")
	}
	if len(p.PrevEvents) > 20 || len(p.AuthEvents) > 10 {
		return nil, "", errors.New("invalid event: too many prev_events or auth_events")
	}
	if p.Type == "m.room.member" && p.StateKey == nil {
		return nil, "", errors.New("invalid event: m.room.member without state_key")
	}
	p.Unsigned = nil
	if rooms.LegacyEventFormat(rv) {
		eid := p.InternalMeta.EventID
		if sigil, local, server := id.ParseCommonIdentifier(eid); sigil != '$' || local == "" || server == "" {
			return nil, "", fmt.Errorf("invalid event id %q", eid)
		}
		return &p, eid, nil
	}
	eid, err := p.GetEventID(rv)
	if err != nil {
		return nil, "", err
	}
	p.InternalMeta.EventID = eid
	return &p, eid, nil
}

// roomOf returns the room an event belongs to (v12 create events name it
// by their own id).
func roomOf(rv id.RoomVersion, p *pdu.PDU, eid id.EventID) id.RoomID {
	if p.Type == "m.room.create" && rv.RoomIDIsCreateEventID() {
		return id.RoomID("!" + strings.TrimPrefix(string(eid), "$"))
	}
	return p.RoomID
}

// checkEvent checks the signature of the sender's server and the content
// hash; an event whose hash is wrong is redacted (spec), one whose
// signature is wrong is refused.
func (s *Service) checkEvent(ctx context.Context, rv id.RoomVersion, p *pdu.PDU) (*pdu.PDU, error) {
	server := serverOf(p.Sender)
	// v1/v2 events are signed and hashed in their own format (v1events.go).
	if err := rooms.VerifySignature(rv, p, server, s.keyFunc(ctx)); err != nil {
		return nil, fmt.Errorf("bad signature: %w", err)
	}
	if !rooms.VerifyContentHash(p) {
		meta := p.InternalMeta
		p = p.Clone().Redact(rv)
		p.InternalMeta = meta
	}
	return p, nil
}

// eventGetter returns the event lookup eventauth wants: the batch being
// imported first, then the store; aligned with the ids asked, nil for
// unknown ones (and nothing for a single unknown id).
func (s *Service) eventGetter(ctx context.Context, batch map[id.EventID]*pdu.PDU) func([]id.EventID) ([]*pdu.PDU, error) {
	return func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, len(ids))
		var want []id.EventID
		for i, e := range ids {
			if p := batch[e]; p != nil {
				out[i] = p
			} else {
				want = append(want, e)
			}
		}
		if len(want) > 0 {
			got, err := s.Rooms.FetchPDUs(ctx, want)
			if err != nil {
				return nil, err
			}
			byID := map[id.EventID]*pdu.PDU{}
			for _, p := range got {
				byID[p.InternalMeta.EventID] = p
			}
			for i, e := range ids {
				if out[i] == nil {
					out[i] = byID[e]
				}
			}
		}
		if len(ids) == 1 && out[0] == nil {
			return nil, nil
		}
		return out, nil
	}
}

// authAgainst authorizes an event against a state (rules 5 and 6 of the
// checks on receipt): its auth events are taken from that state.
func (s *Service) authAgainst(ctx context.Context, rv id.RoomVersion, p *pdu.PDU, st rooms.StateMap) error {
	keys := p.AuthEventSelection(rv)
	var ids []id.EventID
	for _, k := range keys {
		if e := st[k]; e != "" {
			ids = append(ids, e)
		}
	}
	got, err := s.Rooms.FetchPDUs(ctx, ids)
	if err != nil {
		return err
	}
	pre := make([]*pdu.PDU, 0, len(got))
	for _, g := range got {
		if g.InternalMeta.Rejected {
			continue
		}
		pre = append(pre, g)
	}
	if rv.RoomIDIsCreateEventID() {
		// The create event comes from the room id, not the state.
		pre = slices.DeleteFunc(pre, func(g *pdu.PDU) bool { return g.Type == "m.room.create" })
	}
	return eventauth.Authorize(rv, p, pre, s.eventGetter(ctx, nil), s.keyFunc(ctx))
}

// importEvents checks events fetched from another server (auth chains,
// state) and stores them as outliers: signature (bad ones are dropped),
// hash (redacted), room, and authorization against their own auth events
// in auth order (failures are stored as rejected). It returns the events
// kept by id.
func (s *Service) importEvents(ctx context.Context, rv id.RoomVersion, room id.RoomID, raws []json.RawMessage) (map[id.EventID]*pdu.PDU, error) {
	batch := map[id.EventID]*pdu.PDU{}
	for _, raw := range raws {
		p, eid, err := parseEvent(rv, raw)
		if err != nil {
			s.Log.Debug("dropping fetched event", "err", err)
			continue
		}
		if roomOf(rv, p, eid) != room {
			continue
		}
		if _, dup := batch[eid]; dup {
			continue
		}
		if p, err = s.checkEvent(ctx, rv, p); err != nil {
			s.Log.Info("dropping fetched event", "event_id", eid, "err", err)
			continue
		}
		batch[eid] = p
	}
	order := authOrder(batch)
	get := s.eventGetter(ctx, batch)
	var outliers []rooms.Outlier
	for _, p := range order {
		if err := eventauth.Authorize(rv, p, nil, get, s.keyFunc(ctx)); err != nil {
			s.Log.Info("fetched event fails authorization", "event_id", p.InternalMeta.EventID, "err", err)
			p.InternalMeta.Rejected = true
		}
		outliers = append(outliers, rooms.Outlier{EventID: p.InternalMeta.EventID, PDU: p, Rejected: p.InternalMeta.Rejected})
	}
	if err := s.Rooms.PersistOutliers(ctx, room, rv, outliers); err != nil {
		return nil, err
	}
	return batch, nil
}

// authOrder sorts events so each comes after the auth events of the same
// batch it names (then by depth, then id).
func authOrder(batch map[id.EventID]*pdu.PDU) []*pdu.PDU {
	ids := make([]id.EventID, 0, len(batch))
	for e := range batch {
		ids = append(ids, e)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := batch[ids[i]], batch[ids[j]]
		if a.Depth != b.Depth {
			return a.Depth < b.Depth
		}
		return ids[i] < ids[j]
	})
	done := map[id.EventID]bool{}
	var out []*pdu.PDU
	var visit func(e id.EventID, depth int)
	visit = func(e id.EventID, depth int) {
		p := batch[e]
		if p == nil || done[e] || depth > 1000 {
			return
		}
		done[e] = true
		for _, a := range p.AuthEvents {
			visit(a, depth+1)
		}
		out = append(out, p)
	}
	for _, e := range ids {
		visit(e, 0)
	}
	return out
}

// ensureAuthEvents fetches the auth chain of an event from origin when some
// of its auth events are unknown here.
func (s *Service) ensureAuthEvents(ctx context.Context, origin string, rv id.RoomVersion, room id.RoomID, p *pdu.PDU, eid id.EventID) error {
	want := slices.Clone(p.AuthEvents)
	if rv.RoomIDIsCreateEventID() && p.Type != "m.room.create" {
		want = append(want, id.EventID("$"+strings.TrimPrefix(string(room), "!")))
	}
	missing, err := s.missingEvents(ctx, want)
	if err != nil || len(missing) == 0 {
		return err
	}
	resp, err := s.Client.GetEventAuthChain(ctx, origin, room, eid)
	if err != nil {
		return fmt.Errorf("fetching the auth chain from %s: %w", origin, err)
	}
	if _, err := s.importEvents(ctx, rv, room, resp.AuthChain); err != nil {
		return err
	}
	if missing, err = s.missingEvents(ctx, want); err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("auth events %v are unknown", missing)
	}
	return nil
}

// missingEvents returns the ids not stored here.
func (s *Service) missingEvents(ctx context.Context, ids []id.EventID) ([]id.EventID, error) {
	have, err := s.Rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	known := map[id.EventID]bool{}
	for _, ev := range have {
		known[ev.EventID] = true
	}
	var out []id.EventID
	for _, e := range ids {
		if !known[e] {
			out = append(out, e)
		}
	}
	return out, nil
}

// maxMissing bounds the events fetched with /get_missing_events at a time.
const maxMissing = 20

// stateBefore computes the state before an event from its prev events,
// fetching what is missing from origin: first the missing events
// themselves (/get_missing_events, each then received like any PDU), then
// for gaps that remain, the state at the missing prev events (/state_ids).
func (s *Service) stateBefore(ctx context.Context, origin string, rv id.RoomVersion, room id.RoomID, p *pdu.PDU, eid id.EventID, fetchMissing bool) (rooms.StateMap, string, error) {
	st, g, err := s.Rooms.StateBeforePrevs(ctx, rv, p.PrevEvents, nil)
	var mpe *rooms.MissingPrevError
	if !errors.As(err, &mpe) || !fetchMissing {
		return st, g, err
	}
	ext, _, err := s.Rooms.Extremities(ctx, room)
	if err != nil {
		return nil, "", err
	}
	resp, err := s.Client.GetMissingEvents(ctx, &mfed.ReqGetMissingEvents{ServerName: origin, RoomID: room, EarliestEvents: ext,
		LatestEvents: []id.EventID{eid}, Limit: maxMissing})
	if err == nil {
		var got []*pdu.PDU
		for _, raw := range resp.Events {
			mp, mid, err := parseEvent(rv, raw)
			if err != nil || roomOf(rv, mp, mid) != room {
				continue
			}
			got = append(got, mp)
		}
		sort.SliceStable(got, func(i, j int) bool { return got[i].Depth < got[j].Depth })
		for _, mp := range got {
			if err := s.receivePDU(ctx, origin, rv, mp, mp.InternalMeta.EventID, false); err != nil {
				s.Log.Info("missing event not accepted", "event_id", mp.InternalMeta.EventID, "err", err)
			}
		}
	} else {
		s.Log.Info("get_missing_events failed", "origin", origin, "room", room, "err", err)
	}
	st, g, err = s.Rooms.StateBeforePrevs(ctx, rv, p.PrevEvents, nil)
	if !errors.As(err, &mpe) {
		return st, g, err
	}
	known := map[id.EventID]rooms.StateMap{}
	for _, m := range mpe.Missing {
		ms, err := s.stateAtRemote(ctx, origin, rv, room, m)
		if err != nil {
			return nil, "", fmt.Errorf("state at %s: %w", m, err)
		}
		known[m] = ms
	}
	return s.Rooms.StateBeforePrevs(ctx, rv, p.PrevEvents, known)
}

// stateAtRemote asks origin for the state after an event this server
// lacks: the state before it plus the event itself if it is an accepted
// state event.
func (s *Service) stateAtRemote(ctx context.Context, origin string, rv id.RoomVersion, room id.RoomID, eventID id.EventID) (rooms.StateMap, error) {
	st, err := s.stateBeforeRemote(ctx, origin, rv, room, eventID)
	if err != nil {
		return nil, err
	}
	ev, err := s.Client.GetEvent(ctx, origin, eventID)
	if err != nil || len(ev.PDUs) != 1 {
		return nil, fmt.Errorf("fetching %s: %v", eventID, err)
	}
	imported, err := s.importEvents(ctx, rv, room, ev.PDUs)
	if err != nil {
		return nil, err
	}
	if p := imported[eventID]; p != nil && p.StateKey != nil && !p.InternalMeta.Rejected {
		st[pdu.StateKey{Type: p.Type, StateKey: *p.StateKey}] = eventID
	}
	return st, nil
}

// stateBeforeRemote asks origin for the state before an event (/state_ids,
// fetching the events this server lacks with /state).
func (s *Service) stateBeforeRemote(ctx context.Context, origin string, rv id.RoomVersion, room id.RoomID, eventID id.EventID) (rooms.StateMap, error) {
	ids, err := s.Client.GetStateIDs(ctx, origin, room, eventID)
	if err != nil {
		return nil, err
	}
	all := append(slices.Clone(ids.PDUs), ids.AuthChain...)
	missing, err := s.missingEvents(ctx, all)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		full, err := s.Client.GetState(ctx, origin, room, eventID)
		if err != nil {
			return nil, err
		}
		if _, err := s.importEvents(ctx, rv, room, append(full.AuthChain, full.PDUs...)); err != nil {
			return nil, err
		}
	}
	stEvents, err := s.Rooms.EventsByID(ctx, ids.PDUs)
	if err != nil {
		return nil, err
	}
	st := rooms.StateMap{}
	for _, se := range stEvents {
		if se.StateKey != nil && !se.Rejected && se.RoomID == room {
			st[pdu.StateKey{Type: se.Type, StateKey: *se.StateKey}] = se.EventID
		}
	}
	return st, nil
}

// receivePDU runs the checks on receipt for one PDU of a known room and
// persists it. A rejected event is stored as such and reported as an
// error; a soft-failed one is stored and reported as accepted.
func (s *Service) receivePDU(ctx context.Context, origin string, rv id.RoomVersion, p *pdu.PDU, eid id.EventID, fetchMissing bool) error {
	room := roomOf(rv, p, eid)
	if ev, err := s.Rooms.Event(ctx, eid); err == nil && !ev.Outlier {
		if ev.Rejected {
			return &rejectedError{"previously rejected"}
		}
		return nil
	}
	if ok, err := s.aclAllows(ctx, room, origin); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("server %s is denied by the room's server ACL", origin)
	}
	if origin != serverOf(p.Sender) {
		if ok, err := s.aclAllows(ctx, room, serverOf(p.Sender)); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("server %s is denied by the room's server ACL", serverOf(p.Sender))
		}
	}
	p, err := s.checkEvent(ctx, rv, p)
	if err != nil {
		return err
	}
	if err := s.ensureAuthEvents(ctx, origin, rv, room, p, eid); err != nil {
		return err
	}
	authErr := eventauth.Authorize(rv, p, nil, s.eventGetter(ctx, nil), s.keyFunc(ctx))
	st, group, err := s.stateBefore(ctx, origin, rv, room, p, eid, fetchMissing)
	if err != nil {
		return err
	}
	re := rooms.RemoteEvent{RoomID: room, RoomVersion: rv, EventID: eid, PDU: p, StateBefore: st, BeforeGroup: group}
	if authErr == nil {
		authErr = s.authAgainst(ctx, rv, p, st)
	}
	if authErr != nil {
		re.Rejected = true
		if _, err := s.Rooms.PersistRemote(ctx, re); err != nil {
			return err
		}
		return &rejectedError{authMessage(authErr)}
	}
	cur, err := s.Rooms.CurrentStateIDs(ctx, room)
	if err != nil {
		return err
	}
	if err := s.authAgainst(ctx, rv, p, cur); err != nil {
		re.SoftFailed = true
		s.Log.Info("soft-failed event", "event_id", eid, "room", room, "err", err)
	}
	_, err = s.Rooms.PersistRemote(ctx, re)
	return err
}

func authMessage(err error) string {
	var afe eventauth.AuthFailError
	if errors.As(err, &afe) && afe.Message != "" {
		return afe.Message
	}
	return err.Error()
}
