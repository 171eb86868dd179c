package search

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// NewSearcher answers searches over idx with the room engine's rooms,
// stream head and history visibility rules.
func NewSearcher(idx *Index, rs *rooms.Service) *Searcher {
	return &Searcher{
		Index: idx,
		Head:  rs.Events.Latest,
		Rooms: func(ctx context.Context, u id.UserID) ([]id.RoomID, error) {
			ms, err := rs.UserRooms(ctx, u)
			if err != nil {
				return nil, err
			}
			out := make([]id.RoomID, 0, len(ms))
			for _, m := range ms {
				if !m.Forgotten {
					out = append(out, m.RoomID)
				}
			}
			return out, nil
		},
		Visible: func(ctx context.Context, u id.UserID, hits []Hit) ([]Hit, error) {
			return visible(ctx, rs, u, hits)
		},
	}
}

// visible applies history visibility to hits without reading their events:
// a posting carries the state group before its event, which is all that
// rooms.CanSee looks at for a message, a name or a topic.
func visible(ctx context.Context, rs *rooms.Service, u id.UserID, hits []Hit) ([]Hit, error) {
	byRoom := map[id.RoomID][]*rooms.Event{}
	for _, h := range hits {
		byRoom[h.RoomID] = append(byRoom[h.RoomID], &rooms.Event{RoomID: h.RoomID, EventID: h.EventID,
			StateBefore: h.StateGroup, Type: EventType[h.Key]})
	}
	ok := make(map[id.EventID]bool, len(hits))
	for _, evs := range byRoom {
		seen, err := rs.CanSee(ctx, u, evs)
		if err != nil {
			return nil, err
		}
		for _, ev := range seen {
			ok[ev.EventID] = true
		}
	}
	out := hits[:0:0]
	for _, h := range hits {
		if ok[h.EventID] {
			out = append(out, h)
		}
	}
	return out, nil
}
