package federation

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Limits of a transaction (spec).
const (
	MaxPDUsPerTxn = 50
	MaxEDUsPerTxn = 100
)

// txnTTL is how long a received transaction's answer is kept for retries.
const txnTTL = 24 * time.Hour

func txnKey(origin, txnID string) table.Key { return table.Key{PK: "fedtxn#" + origin, SK: txnID} }

// Send serves PUT /_matrix/federation/v1/send/{txnId}.
func (s *Service) Send(r *httpapi.Request) (any, error) {
	txnID := r.PathValue("txnId")
	if txnID == "" || len(txnID) > 255 {
		return nil, httpapi.InvalidParam("invalid transaction id")
	}
	var body struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.PDUs == nil {
		return nil, httpapi.MissingParam("pdus is required")
	}
	if body.Origin != "" && body.Origin != r.Origin {
		return nil, httpapi.Forbidden("transaction origin %q is not the requesting server %q", body.Origin, r.Origin)
	}
	if len(body.PDUs) > MaxPDUsPerTxn || len(body.EDUs) > MaxEDUsPerTxn {
		return nil, httpapi.BadJSON("a transaction carries at most %d PDUs and %d EDUs", MaxPDUsPerTxn, MaxEDUsPerTxn)
	}
	ctx := r.Ctx()
	k := txnKey(r.Origin, txnID)
	if it, err := s.T.Get(ctx, k); err == nil {
		return json.RawMessage(it.Data), nil // a retry of a transaction already processed
	} else if !errors.Is(err, table.ErrNotFound) {
		return nil, err
	}
	results := s.ProcessPDUs(ctx, r.Origin, body.PDUs)
	s.processEDUs(ctx, r.Origin, body.EDUs)
	resp, _ := json.Marshal(map[string]any{"pdus": results})
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: resp, TTL: s.now().Add(txnTTL).Unix()}, table.Cond{}); err != nil {
		return nil, err
	}
	return json.RawMessage(resp), nil
}

// pduResult is one entry of a transaction's answer.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// ProcessPDUs receives a transaction's PDUs (parents before children) and
// returns the per-event results.
func (s *Service) ProcessPDUs(ctx context.Context, origin string, raws []json.RawMessage) map[id.EventID]pduResult {
	results := map[id.EventID]pduResult{}
	type parsed struct {
		p   *pdu.PDU
		rv  id.RoomVersion
		eid id.EventID
	}
	var todo []parsed
	for _, raw := range raws {
		var peek struct {
			RoomID  id.RoomID  `json:"room_id"`
			EventID id.EventID `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &peek)
		rv, err := s.Rooms.RoomVersion(ctx, peek.RoomID)
		if err != nil {
			// Unknown room (or not a PDU): name it by the id it carries
			// (room versions 1 and 2) or else would have in a current room
			// version.
			eid := peek.EventID
			if eid == "" {
				if _, computed, perr := parseEvent(rooms.DefaultVersion, raw); perr == nil {
					eid = computed
				}
			}
			if eid != "" {
				results[eid] = pduResult{Error: "unknown room " + string(peek.RoomID)}
			}
			continue
		}
		p, eid, err := parseEvent(rv, raw)
		if err != nil {
			s.Log.Info("dropping invalid PDU", "origin", origin, "err", err)
			continue
		}
		todo = append(todo, parsed{p, rv, eid})
	}
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].p.Depth < todo[j].p.Depth })
	for _, t := range todo {
		if err := s.receivePDU(ctx, origin, t.rv, t.p, t.eid, true); err != nil {
			results[t.eid] = pduResult{Error: err.Error()}
			continue
		}
		results[t.eid] = pduResult{}
	}
	return results
}

// requireInRoom checks that origin may ask about a room: the room is known,
// the server's ACL allows it, and it has a joined member.
func (s *Service) requireInRoom(ctx context.Context, room id.RoomID, origin string) error {
	if ok, err := s.Rooms.HasRoom(ctx, room); err != nil {
		return err
	} else if !ok {
		return httpapi.NotFound("unknown room")
	}
	if err := s.checkACL(ctx, room, origin); err != nil {
		return err
	}
	servers, err := s.Rooms.JoinedServers(ctx, room)
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv == origin {
			return nil
		}
	}
	return httpapi.Forbidden("server %s is not in room %s", origin, room)
}

// pduFor is the PDU we hand to a server: redacted if it may not see it.
func (s *Service) pduFor(ctx context.Context, origin string, ev *rooms.Event) (json.RawMessage, error) {
	ok, err := s.Rooms.ServerCanSee(ctx, origin, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return ev.RedactedPDU()
	}
	return json.RawMessage(ev.PDU), nil
}

func (s *Service) txnEnvelope(pdus []json.RawMessage) map[string]any {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return map[string]any{"origin": s.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": pdus}
}

// GetEvent serves GET /_matrix/federation/v1/event/{eventId}.
func (s *Service) GetEvent(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	ev, err := s.Rooms.Event(ctx, id.EventID(r.PathValue("eventId")))
	if err != nil {
		return nil, err
	}
	if err := s.requireInRoom(ctx, ev.RoomID, r.Origin); err != nil {
		return nil, err
	}
	ok, err := s.Rooms.ServerCanSee(ctx, r.Origin, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.Forbidden("server may not see this event")
	}
	return s.txnEnvelope([]json.RawMessage{ev.PDU}), nil
}

// stateAt loads the state before an event of a room, for /state and
// /state_ids.
func (s *Service) stateAt(r *httpapi.Request) ([]*rooms.Event, []*rooms.Event, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	eid := id.EventID(r.URL.Query().Get("event_id"))
	if eid == "" {
		return nil, nil, httpapi.MissingParam("event_id is required")
	}
	if err := s.requireInRoom(ctx, room, r.Origin); err != nil {
		return nil, nil, err
	}
	ev, err := s.Rooms.Event(ctx, eid)
	if err != nil || ev.RoomID != room {
		return nil, nil, httpapi.NotFound("event not found in this room")
	}
	if ok, err := s.Rooms.ServerCanSee(ctx, r.Origin, ev); err != nil {
		return nil, nil, err
	} else if !ok {
		return nil, nil, httpapi.Forbidden("You do not have permission to access the state at the requested event.")
	}
	st, err := s.Rooms.StateBefore(ctx, ev)
	if errors.Is(err, rooms.ErrNoState) {
		return nil, nil, httpapi.NotFound("the state at this event is not known here")
	}
	if err != nil {
		return nil, nil, err
	}
	ids := make([]id.EventID, 0, len(st))
	for _, e := range st {
		ids = append(ids, e)
	}
	state, err := s.Rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	chain, err := s.Rooms.AuthChain(ctx, state)
	if err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

func rawPDUs(evs []*rooms.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.PDU)
	}
	return out
}

func eventIDs(evs []*rooms.Event) []id.EventID {
	out := make([]id.EventID, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.EventID)
	}
	return out
}

// GetState serves GET /_matrix/federation/v1/state/{roomId}.
func (s *Service) GetState(r *httpapi.Request) (any, error) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": rawPDUs(state), "auth_chain": rawPDUs(chain)}, nil
}

// GetStateIDs serves GET /_matrix/federation/v1/state_ids/{roomId}.
func (s *Service) GetStateIDs(r *httpapi.Request) (any, error) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
}

// GetEventAuth serves GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}.
func (s *Service) GetEventAuth(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	if err := s.requireInRoom(ctx, room, r.Origin); err != nil {
		return nil, err
	}
	ev, err := s.Rooms.Event(ctx, id.EventID(r.PathValue("eventId")))
	if err != nil || ev.RoomID != room {
		return nil, httpapi.NotFound("event not found in this room")
	}
	chain, err := s.Rooms.AuthChain(ctx, []*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": rawPDUs(chain)}, nil
}

// Backfill serves GET /_matrix/federation/v1/backfill/{roomId}.
func (s *Service) Backfill(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	if err := s.requireInRoom(ctx, room, r.Origin); err != nil {
		return nil, err
	}
	limit, err := r.QueryInt("limit", 10, 1, 1000)
	if err != nil {
		return nil, err
	}
	limit = min(limit, 100)
	var from []id.EventID
	for _, v := range r.URL.Query()["v"] {
		from = append(from, id.EventID(v))
	}
	if len(from) == 0 {
		return nil, httpapi.MissingParam("v is required")
	}
	evs, err := s.Rooms.WalkBack(ctx, room, from, true, nil, int(limit), 0)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, ev := range evs {
		if ev.Rejected {
			continue
		}
		raw, err := s.pduFor(ctx, r.Origin, ev)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return s.txnEnvelope(out), nil
}

// GetMissingEvents serves POST /_matrix/federation/v1/get_missing_events/{roomId}.
func (s *Service) GetMissingEvents(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	var body struct {
		Earliest []id.EventID `json:"earliest_events"`
		Latest   []id.EventID `json:"latest_events"`
		Limit    int          `json:"limit"`
		MinDepth int64        `json:"min_depth"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if err := s.requireInRoom(ctx, room, r.Origin); err != nil {
		return nil, err
	}
	if body.Limit <= 0 {
		body.Limit = 10
	}
	stop := map[id.EventID]bool{}
	for _, e := range body.Earliest {
		stop[e] = true
	}
	evs, err := s.Rooms.WalkBack(ctx, room, body.Latest, false, stop, min(body.Limit, 100), body.MinDepth)
	if err != nil {
		return nil, err
	}
	// Oldest first, as a server replaying them wants.
	out := make([]json.RawMessage, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Rejected {
			continue
		}
		raw, err := s.pduFor(ctx, r.Origin, evs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return map[string]any{"events": out}, nil
}

// Version serves GET /_matrix/federation/v1/version.
func (s *Service) Version(*httpapi.Request) (any, error) {
	return map[string]any{"server": map[string]string{"name": "Cirrus", "version": "0.1"}}, nil
}

// ServerKeys serves GET /_matrix/key/v2/server.
func (s *Service) ServerKeys(r *httpapi.Request) (any, error) {
	return s.ownKeys(r.Ctx())
}

// ownKeys is our key response, with our retired keys (keys.go).
func (s *Service) ownKeys(ctx context.Context) (json.RawMessage, error) {
	old, err := OwnOldKeys(ctx, s.T)
	if err != nil {
		return nil, err
	}
	return OwnKeysWithOld(s.ServerName, s.Key, old, s.now())
}

// keysOf returns a server's key response, ours or fetched (cached), with
// our notary signature added.
func (s *Service) keysOf(ctx context.Context, server string, minValid time.Time) (json.RawMessage, error) {
	if server == s.ServerName {
		return s.ownKeys(ctx)
	}
	resp, err := s.Keys.LoadKeys(ctx, server, time.Minute)
	if err != nil {
		return nil, err
	}
	if resp == nil || resp.ValidUntilTS.Before(minValid) {
		fctx := withKeysFor(ctx, server)
		fresh, err := s.Client.ServerKeys(fctx, server)
		if err == nil {
			err = s.Keys.StoreKeys(fctx, fresh)
		}
		if err != nil {
			_ = s.Keys.StoreFetchError(ctx, server, err)
			if resp == nil {
				return nil, err
			}
		} else {
			resp = fresh
		}
	}
	return addSignature(resp.Raw, s.ServerName, s.Key)
}

// QueryKeys serves POST /_matrix/key/v2/query (the notary).
func (s *Service) QueryKeys(r *httpapi.Request) (any, error) {
	var body struct {
		ServerKeys map[string]map[id.KeyID]struct {
			MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if len(body.ServerKeys) > 100 {
		return nil, httpapi.BadJSON("at most 100 servers per query")
	}
	out := []json.RawMessage{}
	for server, keys := range body.ServerKeys {
		if !validServerName(server) {
			continue
		}
		var minValid int64
		for _, c := range keys {
			minValid = max(minValid, c.MinimumValidUntilTS)
		}
		raw, err := s.keysOf(r.Ctx(), server, time.UnixMilli(minValid))
		if err != nil {
			s.Log.Info("notary: no keys", "server", server, "err", err)
			continue
		}
		out = append(out, raw)
	}
	return map[string]any{"server_keys": out}, nil
}

// QueryServerKeys serves GET /_matrix/key/v2/query/{serverName}.
func (s *Service) QueryServerKeys(r *httpapi.Request) (any, error) {
	server := r.PathValue("serverName")
	if !validServerName(server) {
		return nil, httpapi.InvalidParam("invalid server name")
	}
	minValid, err := r.QueryInt("minimum_valid_until_ts", 0, 0, 1<<62)
	if err != nil {
		return nil, err
	}
	out := []json.RawMessage{}
	if raw, err := s.keysOf(r.Ctx(), server, time.UnixMilli(minValid)); err == nil {
		out = append(out, raw)
	} else {
		s.Log.Info("notary: no keys", "server", server, "err", err)
	}
	return map[string]any{"server_keys": out}, nil
}

func validServerName(s string) bool { return id.ValidateServerName(s) && len(s) <= 255 }

// QueryDirectory serves GET /_matrix/federation/v1/query/directory.
func (s *Service) QueryDirectory(r *httpapi.Request) (any, error) {
	a := id.RoomAlias(r.URL.Query().Get("room_alias"))
	if a == "" {
		return nil, httpapi.MissingParam("room_alias is required")
	}
	if !strings.HasSuffix(string(a), ":"+s.ServerName) {
		return nil, httpapi.NotFound("room alias %s is not on this server", a)
	}
	room, err := s.Rooms.ResolveAlias(r.Ctx(), a)
	if err != nil {
		return nil, err
	}
	servers, err := s.Rooms.JoinedServers(r.Ctx(), room)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": room, "servers": serversFirst(s.ServerName, servers)}, nil
}

// serversFirst puts first at the head of the list.
func serversFirst(first string, servers []string) []string {
	out := []string{first}
	for _, sv := range servers {
		if sv != first {
			out = append(out, sv)
		}
	}
	return out
}

// QueryProfile serves GET /_matrix/federation/v1/query/profile.
func (s *Service) QueryProfile(r *httpapi.Request) (any, error) {
	u := id.UserID(r.URL.Query().Get("user_id"))
	if u == "" {
		return nil, httpapi.MissingParam("user_id is required")
	}
	if !s.isLocal(u) {
		return nil, httpapi.InvalidParam("user %s is not on this server", u)
	}
	if s.Profile == nil {
		return nil, httpapi.NotFound("profile not found")
	}
	p, err := s.Profile(r.Ctx(), u)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, httpapi.NotFound("profile not found")
	}
	if f := r.URL.Query().Get("field"); f != "" {
		v, ok := p[f]
		if !ok {
			return nil, httpapi.NotFound("profile field not found")
		}
		return map[string]any{f: v}, nil
	}
	return p, nil
}
