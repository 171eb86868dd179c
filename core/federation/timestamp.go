package federation

import (
	"context"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// TimestampToEvent serves GET /_matrix/federation/v1/timestamp_to_event/{roomId}:
// the event closest to ts in the given direction that the asking server
// may see.
func (s *Service) TimestampToEvent(r *httpapi.Request) (any, error) {
	ctx := r.Ctx()
	room := id.RoomID(r.PathValue("roomId"))
	ts, d, err := rooms.TimestampQueryOf(r)
	if err != nil {
		return nil, err
	}
	if err := s.requireInRoom(ctx, room, r.Origin); err != nil {
		return nil, err
	}
	ev, err := s.Rooms.EventNearTimeFor(ctx, room, ts, d, func(ctx context.Context, evs []*rooms.Event) ([]*rooms.Event, error) {
		var out []*rooms.Event
		for _, ev := range evs {
			if ev.Rejected || ev.SoftFailed {
				continue
			}
			if ok, err := s.Rooms.ServerCanSee(ctx, r.Origin, ev); err != nil {
				return nil, err
			} else if ok {
				out = append(out, ev)
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, httpapi.NotFound("no event found from %d in that direction", ts)
	}
	return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginServerTS}, nil
}

// RemoteTimestampToEvent asks the room's other servers for the event
// closest to ts, for a room whose history this server holds only in part
// (joined over federation, not backfilled to its creation). found is false
// when the room's history here is complete or no server knew one.
func (s *Service) RemoteTimestampToEvent(ctx context.Context, room id.RoomID, ts int64, dir byte) (eid id.EventID, evTS int64, found bool, err error) {
	first, err := s.Rooms.EarliestEvent(ctx, room)
	if err != nil || first == nil || first.Seq <= 1 {
		return "", 0, false, err
	}
	fp, err := first.ToPDU()
	if err != nil || len(fp.PrevEvents) == 0 {
		return "", 0, false, err
	}
	servers, err := s.Rooms.JoinedServers(ctx, room)
	if err != nil {
		return "", 0, false, err
	}
	cands := s.candidates(append([]string{serverOf(fp.Sender)}, servers...))
	if len(cands) > backfillServers {
		cands = cands[:backfillServers]
	}
	mdir := mautrix.DirectionForward
	if dir == rooms.Backward {
		mdir = mautrix.DirectionBackward
	}
	for _, server := range cands {
		resp, err := s.Client.TimestampToEvent(ctx, server, room, time.UnixMilli(ts), mdir)
		if err != nil || resp == nil || resp.EventID == "" {
			continue
		}
		return resp.EventID, resp.Timestamp.UnixMilli(), true, nil
	}
	return "", 0, false, nil
}
