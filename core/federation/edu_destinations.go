package federation

import (
	"context"
	"slices"
	"sync"

	"maunium.net/go/mautrix/id"
)

// destCache remembers, per room, the other servers joined to it (with the
// room's server ACL applied), keyed by the room's current-state version
// (rooms.CurrentStateVersion). Every membership or ACL change moves that
// version in the event's own transaction, so an entry can never be read for
// a state it was not computed from: a server that joined is never skipped,
// whichever process persisted the join. The hot path (every event and EDU
// sent) then costs one GetItem of the room head instead of a query of the
// whole member list.
type destCache struct {
	mu sync.Mutex
	m  map[id.RoomID]destEntry
}

type destEntry struct {
	version string
	servers []string
}

// destCacheMax bounds the cache; when full it is simply emptied (a plain
// map: an LRU would be more code than the occasional refill is worth).
const destCacheMax = 4096

func (c *destCache) get(r id.RoomID, version string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[r]
	if !ok || e.version != version {
		return nil, false
	}
	return e.servers, true
}

func (c *destCache) put(r id.RoomID, version string, servers []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= destCacheMax {
		c.m = map[id.RoomID]destEntry{}
	}
	c.m[r] = destEntry{version: version, servers: servers}
}

// RoomDestinations returns the other servers with members joined to a room
// now, less those its server ACL denies, sorted: where an EDU about the
// room goes.
func (s *Service) RoomDestinations(ctx context.Context, r id.RoomID) ([]string, error) {
	ver, err := s.Rooms.CurrentStateVersion(ctx, r)
	if err != nil {
		return nil, err
	}
	if out, ok := s.dests.get(r, ver); ok {
		return out, nil
	}
	joined, err := s.Rooms.JoinedServers(ctx, r)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, d := range joined {
		if d == s.ServerName {
			continue
		}
		if ok, err := s.aclAllows(ctx, r, d); err != nil {
			return nil, err
		} else if ok {
			out = append(out, d)
		}
	}
	// Cache only what was computed within one state version: a change
	// between the two reads may have left the list half old, half new.
	if again, err := s.Rooms.CurrentStateVersion(ctx, r); err == nil && again == ver {
		s.dests.put(r, ver, out)
	}
	return out, nil
}

// UserDestinations returns the servers sharing at least one joined room
// with a local user (where their presence goes), sorted.
func (s *Service) UserDestinations(ctx context.Context, u id.UserID) ([]string, error) {
	ms, err := s.Rooms.UserRooms(ctx, u)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Membership != "join" {
			continue
		}
		ds, err := s.RoomDestinations(ctx, m.RoomID)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
