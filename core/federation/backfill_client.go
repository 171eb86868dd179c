package federation

import (
	"context"
	"slices"
	"strings"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// Backfill from the client's side: a /messages request that reaches the
// start of our copy of a room joined over federation asks servers in the
// room for the events before it (GET /backfill), checks them and stores
// them as history below the earliest event (rooms.PersistBackfilled).

// backfillServers is how many servers one backfill tries, and
// backfillWait how long a client's request waits for them in all.
const (
	backfillServers = 4
	backfillWait    = 15 * time.Second
)

// fetchBackfill asks one server for up to limit events before from: each
// is checked (signature, hash, auth against its auth events, fetched when
// unknown) and returned oldest first.
func (s *Service) fetchBackfill(ctx context.Context, server string, rv id.RoomVersion, room id.RoomID, from []id.EventID, limit int) ([]rooms.Outlier, error) {
	if len(from) == 0 {
		return nil, nil
	}
	resp, err := s.Client.Backfill(ctx, &mfed.ReqBackfill{ServerName: server, RoomID: room, Limit: limit, BackfillFrom: from})
	if err != nil {
		return nil, err
	}
	batch := map[id.EventID]*pdu.PDU{}
	for _, raw := range resp.PDUs {
		p, eid, err := parseEvent(rv, raw)
		if err != nil || roomOf(rv, p, eid) != room {
			continue
		}
		if p, err = s.checkEvent(ctx, rv, p); err != nil {
			continue
		}
		batch[eid] = p
	}
	get := s.eventGetter(ctx, batch)
	var out []rooms.Outlier
	for _, p := range authOrder(batch) {
		if err := s.ensureAuthEvents(ctx, server, rv, room, p, p.InternalMeta.EventID); err != nil {
			continue
		}
		if err := eventauth.Authorize(rv, p, nil, get, s.keyFunc(ctx)); err != nil {
			continue
		}
		out = append(out, rooms.Outlier{EventID: p.InternalMeta.EventID, PDU: p})
	}
	slices.SortStableFunc(out, func(a, b rooms.Outlier) int {
		switch {
		case a.PDU.Depth < b.PDU.Depth:
			return -1
		case a.PDU.Depth > b.PDU.Depth:
			return 1
		}
		return strings.Compare(string(a.EventID), string(b.EventID))
	})
	return out, nil
}

// BackfillRoom fetches up to limit events older than the earliest event of
// our copy of a room from servers in it (several are tried) and stores them
// in the timeline below it. It returns how many were stored: 0 when the
// room's history here is complete (the earliest event's prev events are all
// in the timeline, or it has none) or no server had more.
func (s *Service) BackfillRoom(ctx context.Context, room id.RoomID, limit int) (int, error) {
	rv, err := s.Rooms.RoomVersion(ctx, room)
	if err != nil {
		return 0, err
	}
	first, err := s.Rooms.EarliestEvent(ctx, room)
	if err != nil || first == nil || first.Seq <= 1 {
		return 0, err // rooms created here start at sequence 1 with their create event
	}
	fp, err := first.ToPDU()
	if err != nil {
		return 0, err
	}
	held, err := s.Rooms.InTimeline(ctx, fp.PrevEvents)
	if err != nil {
		return 0, err
	}
	var from []id.EventID
	for _, e := range fp.PrevEvents {
		if !held[e] {
			from = append(from, e)
		}
	}
	if len(from) == 0 {
		return 0, nil
	}
	joined, err := s.Rooms.JoinedServers(ctx, room)
	if err != nil {
		return 0, err
	}
	// The earliest event's server surely has what came before it.
	order := []string{serverOf(fp.Sender)}
	if _, sv, ok := strings.Cut(string(room), ":"); ok {
		order = append(order, sv)
	}
	order = append(order, joined...)
	cands := s.candidates(order)
	if len(cands) > backfillServers {
		cands = cands[:backfillServers]
	}
	limit = min(max(limit, 1), 100)
	fctx, cancel := context.WithTimeout(ctx, backfillWait)
	defer cancel()
	for _, server := range cands {
		got, err := s.fetchBackfill(fctx, server, rv, room, from, limit)
		if err != nil {
			s.Log.Info("backfill failed", "room", room, "via", server, "err", err)
			continue
		}
		if len(got) == 0 {
			continue
		}
		// The state before the oldest of them, from the same server: each
		// event's state follows from it (a failure leaves them the
		// earliest event's state, as good as this server knows).
		base, err := s.stateBeforeRemote(fctx, server, rv, room, got[0].EventID)
		if err != nil {
			s.Log.Info("backfill: state before the oldest event", "room", room, "via", server, "err", err)
			base = nil
		}
		slices.Reverse(got) // newest first: each goes just below the previous one
		stored, err := s.Rooms.PersistBackfilled(ctx, room, rv, got, base)
		if err != nil {
			return len(stored), err
		}
		if len(stored) > 0 {
			return len(stored), nil
		}
	}
	return 0, nil
}
